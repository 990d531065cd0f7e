package kvclient

import (
	"bytes"
	"container/heap"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pingcap/kvproto/pkg/cdcpb"
	"github.com/pingcap/kvproto/pkg/errorpb"
	"github.com/tikv/client-go/v2/util/codec"
)

func TestParseVersion(t *testing.T) {
	min, _ := parseVersion(MinStoreVersion)
	for _, tc := range []struct {
		in      string
		want    semver
		tooOld  bool
		wantErr bool
	}{
		{in: "8.5.0", want: semver{8, 5, 0}},
		{in: "v7.5.1-alpha+abc", want: semver{7, 5, 1}},
		{in: "7.5.0", want: semver{7, 5, 0}},
		{in: "7.4.9", want: semver{7, 4, 9}, tooOld: true},
		{in: "6.10.0", want: semver{6, 10, 0}, tooOld: true},
		{in: "10.0.0", want: semver{10, 0, 0}},
		{in: "", wantErr: true},
		{in: "8.5", wantErr: true},
		{in: "8.x.0", wantErr: true},
	} {
		got, err := parseVersion(tc.in)
		if (err != nil) != tc.wantErr {
			t.Fatalf("parseVersion(%q) err = %v, want error %v", tc.in, err, tc.wantErr)
		}
		if err != nil {
			continue
		}
		if got != tc.want {
			t.Errorf("parseVersion(%q) = %v, want %v", tc.in, got, tc.want)
		}
		if got.less(min) != tc.tooOld {
			t.Errorf("%q below %s = %v, want %v", tc.in, MinStoreVersion, got.less(min), tc.tooOld)
		}
	}
}

func TestBackoffBounds(t *testing.T) {
	if d := rangeBackoff(0); d != 0 {
		t.Fatalf("attempt 0: %v, want 0", d)
	}
	for attempt := 1; attempt < 40; attempt++ {
		ceil := min(rangeBackoffBase<<min(attempt-1, 16), rangeBackoffMax)
		for range 50 {
			d := rangeBackoff(attempt)
			if d < ceil/2 || d > ceil {
				t.Fatalf("attempt %d: %v outside [%v, %v]", attempt, d, ceil/2, ceil)
			}
		}
	}
	if d := expBackoff(100, storeBackoffBase, storeBackoffMax); d > storeBackoffMax {
		t.Fatalf("store backoff %v above max", d)
	}
}

func TestEnds(t *testing.T) {
	a, b := []byte("a"), []byte("b")
	for _, tc := range []struct {
		x, y []byte
		cmp  int
		min  []byte
	}{
		{a, b, -1, a}, {b, a, 1, a}, {a, a, 0, a},
		{nil, a, 1, a}, {a, nil, -1, a}, {nil, nil, 0, nil},
	} {
		if got := cmpEnd(tc.x, tc.y); got != tc.cmp {
			t.Errorf("cmpEnd(%q, %q) = %d, want %d", tc.x, tc.y, got, tc.cmp)
		}
		if got := minEnd(tc.x, tc.y); !bytes.Equal(got, tc.min) {
			t.Errorf("minEnd(%q, %q) = %q, want %q", tc.x, tc.y, got, tc.min)
		}
	}
}

func TestRawRange(t *testing.T) {
	start, end := []byte("t\x80\x00\x00\x00\x00\x00\x00\x2a_r"), []byte("t\x80\x00\x00\x00\x00\x00\x00\x2a_s")
	rs, re, err := rawRange(codec.EncodeBytes(nil, start), codec.EncodeBytes(nil, end))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rs, start) || !bytes.Equal(re, end) {
		t.Fatalf("rawRange = %x, %x; want %x, %x", rs, re, start, end)
	}
	if rs, re, err := rawRange(nil, nil); err != nil || rs != nil || re != nil {
		t.Fatalf("unbounded: %x %x %v", rs, re, err)
	}
	if _, _, err := rawRange([]byte{1, 2, 3}, nil); err == nil {
		t.Fatal("want an error for a key that is not memcomparable")
	}
}

func TestErrKind(t *testing.T) {
	for want, e := range map[string]*cdcpb.Error{
		"not_leader":          {NotLeader: &errorpb.NotLeader{}},
		"region_not_found":    {RegionNotFound: &errorpb.RegionNotFound{}},
		"epoch_not_match":     {EpochNotMatch: &errorpb.EpochNotMatch{}},
		"duplicate_request":   {DuplicateRequest: &cdcpb.DuplicateRequest{}},
		"compatibility":       {Compatibility: &cdcpb.Compatibility{}},
		"cluster_id_mismatch": {ClusterIdMismatch: &cdcpb.ClusterIDMismatch{}},
		"server_is_busy":      {ServerIsBusy: &errorpb.ServerIsBusy{}},
		"congested":           {Congested: &cdcpb.Congested{}},
		"unknown":             {},
	} {
		if got := errKind(e); got != want {
			t.Errorf("errKind(%v) = %s, want %s", e, got, want)
		}
	}
}

func TestFatalSurvivesWrapping(t *testing.T) {
	err := fmt.Errorf("pipeline 7: %w", fmt.Errorf("%w: region 3: cluster_id_mismatch", ErrFatal))
	if !IsFatal(err) {
		t.Fatal("wrapped ErrFatal not recognised")
	}
	if IsFatal(fmt.Errorf("x: %w", ErrProtocol)) || IsFatal(errors.New("kvclient: fatal")) {
		t.Fatal("non-fatal error recognised as fatal")
	}
	if err := (Span{Start: []byte("b"), End: []byte("a")}).validate(); !IsFatal(err) {
		t.Fatalf("bad span: %v, want fatal", err)
	}
	if err := (Span{Start: []byte("a")}).validate(); err != nil {
		t.Fatalf("unbounded span: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{PDAddrs: []string{"127.0.0.1:1"}}.withDefaults()
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	if ok.StreamsPerStore != DefaultStreamsPerStore || ok.RegionScanLimit != DefaultRegionScanLimit ||
		ok.ResolveLockAfter != DefaultResolveLockAfter || ok.Logger == nil {
		t.Fatalf("defaults not applied: %+v", ok)
	}
	for _, bad := range []Config{
		{},
		{PDAddrs: ok.PDAddrs, StreamsPerStore: -1},
		{PDAddrs: ok.PDAddrs, StreamsPerStore: 1000},
		{PDAddrs: ok.PDAddrs, RegionScanLimit: -2},
		{PDAddrs: ok.PDAddrs, ResolveLockAfter: time.Millisecond},
	} {
		if err := bad.withDefaults().Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", bad)
		}
	}
}

func TestGogoCodecRoundTrip(t *testing.T) {
	in := &cdcpb.ChangeDataEvent{Events: []*cdcpb.Event{{
		RegionId: 5, RequestId: 7,
		Event: &cdcpb.Event_Entries_{Entries: &cdcpb.Event_Entries{Entries: []*cdcpb.Event_Row{
			{StartTs: 1, CommitTs: 2, Type: cdcpb.Event_COMMITTED, OpType: cdcpb.Event_Row_PUT, Key: []byte("k"), Value: []byte("v")},
		}}},
	}}}
	b, err := gogoCodec{}.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out cdcpb.ChangeDataEvent
	if err := (gogoCodec{}).Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	row := out.Events[0].GetEntries().Entries[0]
	if out.Events[0].RegionId != 5 || string(row.Key) != "k" || row.CommitTs != 2 {
		t.Fatalf("round trip: %v", &out)
	}
	if _, err := (gogoCodec{}).Marshal(struct{}{}); err == nil {
		t.Fatal("want an error for a non-proto value")
	}
}

func TestRetryHeapOrder(t *testing.T) {
	var h retryHeap
	now := time.Now()
	for _, d := range []int{5, 1, 4, 2, 3} {
		heap.Push(&h, retryItem{at: now.Add(time.Duration(d) * time.Millisecond), task: rangeTask{attempt: d}})
	}
	for want := 1; want <= 5; want++ {
		if got := heap.Pop(&h).(retryItem).task.attempt; got != want {
			t.Fatalf("pop %d: got %d", want, got)
		}
	}
}

func TestStuckCheckInterval(t *testing.T) {
	if d := stuckCheckInterval(20 * time.Second); d != 2*time.Second {
		t.Fatalf("20s: %v", d)
	}
	if d := stuckCheckInterval(time.Second); d != 250*time.Millisecond {
		t.Fatalf("1s: %v", d)
	}
	if d := stuckCheckInterval(100 * time.Millisecond); d != 50*time.Millisecond {
		t.Fatalf("100ms: %v", d)
	}
}

func TestSpreadUsesEveryStream(t *testing.T) {
	// Region ids with a stride of 2, as PD hands them out.
	const streams = 4
	var used [streams]int
	for id := uint64(2); id < 2+2*400; id += 2 {
		used[spread(id)%streams]++
	}
	for i, n := range used {
		if n < 50 {
			t.Fatalf("stream %d got %d of 400 regions: %v", i, n, used)
		}
	}
}
