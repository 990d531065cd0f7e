package cdcemu_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pingcap/kvproto/pkg/cdcpb"
	"github.com/pingcap/kvproto/pkg/kvrpcpb"
)

// The tests in this file cover what real TiKV sends that a client built from
// an idealised reading of the protocol does not expect (spec §0 corrections).

// events returns the events received for request id req, in order.
func (f *feed) eventsFor(req uint64) []*cdcpb.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*cdcpb.Event
	for _, ev := range f.events {
		if ev.RequestId == req {
			out = append(out, ev)
		}
	}
	return out
}

func rowsOf(evs []*cdcpb.Event) []*cdcpb.Event_Row {
	var out []*cdcpb.Event_Row
	for _, ev := range evs {
		out = append(out, ev.GetEntries().GetEntries()...)
	}
	return out
}

func countType(rows []*cdcpb.Event_Row, tp cdcpb.Event_LogType) int {
	n := 0
	for _, r := range rows {
		if r.Type == tp {
			n++
		}
	}
	return n
}

// eventWith returns the Entries event of req that holds a row of type tp for
// key committed at commitTs (0: any), or nil.
func (f *feed) eventWith(req uint64, tp cdcpb.Event_LogType, key string, commitTs uint64) *cdcpb.Event {
	for _, ev := range f.eventsFor(req) {
		for _, r := range find(ev.GetEntries().GetEntries(), tp, key) {
			if commitTs == 0 || r.CommitTs == commitTs {
				return ev
			}
		}
	}
	return nil
}

func (e *env) waitInitialized(f *feed, reqs ...uint64) {
	e.t.Helper()
	for _, req := range reqs {
		eventually(e.t, fmt.Sprintf("INITIALIZED of request %d", req), func() bool {
			return countType(rowsOf(f.eventsFor(req)), cdcpb.Event_INITIALIZED) == 1
		})
	}
}

// TestLockRecordRows: committing a key that was only locked (Op_Lock) makes
// TiKV send a degenerate UNKNOWN row — empty key, zero timestamps — in that
// command's Event, to the downstreams whose observed range covers the whole
// region (flagged when the region's lock scan finished, so only those present
// then) or starts at the smallest key; 2PC and 1PC alike (spec §2.5).
func TestLockRecordRows(t *testing.T) {
	e := newEnv(t, 20*time.Millisecond)
	if _, err := e.emu.Split([]byte("t")); err != nil {
		t.Fatal(err)
	}
	e.put("tk", "v0")
	regionB, _ := e.region([]byte("tk")) // ["t", +inf)
	regionA, _ := e.region([]byte("a"))  // [-inf, "t")

	f := e.openFeed("stream-multiplexing")
	// 1 creates region B's observer and covers the region: it gets the rows.
	f.send(e.registerReq(regionB, 1, 0, []byte("t"), nil))
	e.waitInitialized(f, 1)
	// 2 covers part of the region; 3 covers all of it but joined a live
	// observer, so TiKV never flagged it; 5 starts at the smallest key.
	f.send(e.registerReq(regionB, 2, 0, []byte("tj"), []byte("tz")))
	f.send(e.registerReq(regionB, 3, 0, []byte("s"), nil))
	f.send(e.registerReq(regionB, 5, 0, nil, nil))
	f.send(e.registerReq(regionA, 4, 0, nil, []byte("t")))
	e.waitInitialized(f, 2, 3, 4, 5)

	// 2PC: write tk, only lock tl.
	start := e.ts()
	e.prewrite(start, []mut{{key: []byte("tk"), val: []byte("v1")}, {key: []byte("tl"), lock: true}}, nil)
	commit := e.ts()
	e.commit(start, commit, []byte("tk"), []byte("tl"))
	// 1PC: the same shape.
	onePC := e.ts()
	resp := e.prewrite(onePC, []mut{{key: []byte("tk"), val: []byte("v2")}, {key: []byte("tm"), lock: true}},
		func(r *kvrpcpb.PrewriteRequest) { r.TryOnePc = true })
	if resp.OnePcCommitTs == 0 {
		t.Fatal("1PC not taken")
	}
	// A lock-only key in region A, which only request 4 observes.
	as := e.ts()
	e.prewrite(as, []mut{{key: []byte("a2"), val: []byte("x")}, {key: []byte("a1"), lock: true}}, nil)
	e.commit(as, e.ts(), []byte("a2"), []byte("a1"))

	for _, req := range []uint64{1, 5} {
		eventually(t, fmt.Sprintf("request %d sees both commits", req), func() bool {
			return f.eventWith(req, cdcpb.Event_COMMIT, "tk", commit) != nil && f.eventWith(req, cdcpb.Event_COMMITTED, "tk", resp.OnePcCommitTs) != nil
		})
		// The degenerate row travels in the Event of the command that
		// committed the Lock record.
		for _, ev := range []*cdcpb.Event{f.eventWith(req, cdcpb.Event_COMMIT, "tk", commit), f.eventWith(req, cdcpb.Event_COMMITTED, "tk", resp.OnePcCommitTs)} {
			rows := ev.GetEntries().GetEntries()
			if len(rows) != 2 || countType(rows, cdcpb.Event_UNKNOWN) != 1 {
				t.Fatalf("request %d: event %v, want the tk row and one UNKNOWN row", req, ev)
			}
			for _, r := range rows {
				if r.Type == cdcpb.Event_UNKNOWN && (len(r.Key) != 0 || r.StartTs != 0 || r.CommitTs != 0 || r.OpType != cdcpb.Event_Row_UNKNOWN || len(r.Value) != 0) {
					t.Fatalf("request %d: UNKNOWN row %v is not the empty row", req, r)
				}
			}
		}
	}
	eventually(t, "request 4 sees region A's lock record", func() bool {
		return f.eventWith(4, cdcpb.Event_COMMIT, "a2", 0) != nil
	})
	if got := countType(f.eventWith(4, cdcpb.Event_COMMIT, "a2", 0).GetEntries().GetEntries(), cdcpb.Event_UNKNOWN); got != 1 {
		t.Fatalf("request 4: %d UNKNOWN rows with the a2 commit, want 1", got)
	}
	eventually(t, "request 2 sees both commits", func() bool {
		return f.eventWith(2, cdcpb.Event_COMMIT, "tk", commit) != nil && f.eventWith(2, cdcpb.Event_COMMITTED, "tk", resp.OnePcCommitTs) != nil
	})
	// The rows are queued in apply order on one stream: once request 5 has
	// the 1PC commit, 2 and 3 would have had their rows too.
	for _, req := range []uint64{2, 3} {
		if n := countType(rowsOf(f.eventsFor(req)), cdcpb.Event_UNKNOWN); n != 0 {
			t.Fatalf("request %d got %d UNKNOWN rows; its range does not cover the region from the start", req, n)
		}
	}
	if got := e.emu.Snapshot().UnknownRows; got != 5 {
		t.Fatalf("UnknownRows = %d, want 5 (requests 1 and 5 twice, request 4 once)", got)
	}
	// Lock records never enter a lock set: resolved ts passes them.
	eventually(t, "resolved ts past the commits", func() bool { return f.maxResolved(regionB.Id) > resp.OnePcCommitTs })
}

// TestTSOErrorRoundsReReport: a round without a TSO advances nothing and
// re-reports every Normal downstream's current resolved ts — 0 before its
// first advance (spec §2.8 step 1).
func TestTSOErrorRoundsReReport(t *testing.T) {
	e := newEnv(t, -1) // manual rounds
	r, _ := e.region([]byte("t"))
	f := e.openFeed("stream-multiplexing")
	f.send(e.registerReq(r, 1, 0, nil, nil))
	e.waitInitialized(f, 1)
	eventually(t, "downstream normal", func() bool {
		subs := e.emu.Snapshot().Subscriptions
		return len(subs) == 1 && subs[0].State == "normal"
	})
	ctx := context.Background()
	nextRTS := func(after int) *cdcpb.ResolvedTs {
		t.Helper()
		var got *cdcpb.ResolvedTs
		eventually(t, "a resolved ts", func() bool {
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.rts) > after {
				got = f.rts[after]
				return true
			}
			return false
		})
		return got
	}

	e.emu.FailTSO(time.Hour)
	if err := e.emu.Tick(ctx); err == nil {
		t.Fatal("Tick without a TSO reported no error")
	}
	if rt := nextRTS(0); rt.Ts != 0 || len(rt.Regions) != 1 || rt.Regions[0] != r.Id {
		t.Fatalf("first round without TSO sent %v, want ts 0 for region %d", rt, r.Id)
	}
	e.emu.FailTSO(0)
	if err := e.emu.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	advanced := nextRTS(1).Ts
	if advanced == 0 {
		t.Fatal("round with a TSO did not advance")
	}
	e.emu.FailTSO(time.Hour)
	_ = e.emu.Tick(ctx)
	if rt := nextRTS(2); rt.Ts != advanced {
		t.Fatalf("round without TSO sent %d, want the current %d again", rt.Ts, advanced)
	}
	if n := e.emu.Snapshot().TSOErrors; n != 2 {
		t.Fatalf("TSOErrors = %d, want 2", n)
	}
}

// TestRegisterRejectionKeepsLiveSubscription: a second Register for a live
// key gets duplicate_request, and the live subscription keeps delivering rows
// and resolved ts; so does one that hears an injected register-time error
// (spec §2.10).
func TestRegisterRejectionKeepsLiveSubscription(t *testing.T) {
	e := newEnv(t, 20*time.Millisecond)
	r, _ := e.region([]byte("t"))
	f := e.openFeed("stream-multiplexing")
	req := e.registerReq(r, 9, 0, nil, nil)
	f.send(req)
	e.waitInitialized(f, 9)

	f.send(req) // the same key again
	eventually(t, "duplicate_request", func() bool { return len(f.errors()) == 1 })
	if f.errors()[0].GetError().GetDuplicateRequest() == nil {
		t.Fatalf("want duplicate_request, got %v", f.errors()[0])
	}
	c1 := e.put("tx", "after-duplicate")
	eventually(t, "row after the rejection", func() bool { return len(find(f.rows(), cdcpb.Event_COMMIT, "tx")) == 1 })
	eventually(t, "resolved ts after the rejection", func() bool { return f.maxResolved(r.Id) >= c1 })

	for _, kind := range []string{"server_is_busy", "duplicate_request", "cluster_id_mismatch", "compatibility"} {
		n, err := e.emu.InjectError(kind, 0, 0)
		if err != nil || n != 1 {
			t.Fatalf("inject %s: %d %v", kind, n, err)
		}
	}
	eventually(t, "injected rejections", func() bool { return len(f.errors()) == 5 })
	c2 := e.put("ty", "after-injected")
	eventually(t, "row after injected rejections", func() bool { return len(find(f.rows(), cdcpb.Event_COMMIT, "ty")) == 1 })
	eventually(t, "resolved ts after injected rejections", func() bool { return f.maxResolved(r.Id) >= c2 })
	st := e.emu.Snapshot()
	if st.DuplicateRegisters != 1 {
		t.Fatalf("DuplicateRegisters = %d, want 1 (injected ones are not a client's)", st.DuplicateRegisters)
	}
	if len(st.Subscriptions) != 1 || st.Subscriptions[0].RequestID != 9 {
		t.Fatalf("live subscriptions %v, want request 9 only", st.Subscriptions)
	}
}

// TestDeregisterDropsQueuedScanRows: a Deregister answers region_not_found
// after the realtime rows queued before it, and the subscription's queued scan
// rows — INITIALIZED included — are never sent (spec §2.11).
func TestDeregisterDropsQueuedScanRows(t *testing.T) {
	e := newEnv(t, 20*time.Millisecond)
	for i := range 50 {
		e.put(fmt.Sprintf("ts%02d", i), "scanned")
	}
	r, _ := e.region([]byte("t"))
	f := e.openFeed("stream-multiplexing")
	// Hold every message long enough that the scan output is still queued
	// when the Deregister arrives.
	e.emu.DelayEvents(500 * time.Millisecond)
	f.send(e.registerReq(r, 4, 0, nil, nil))
	// ScanRows is counted as the scan starts queueing its rows.
	eventually(t, "scan queued", func() bool { return e.emu.Snapshot().ScanRows == 50 })
	e.put("tz", "realtime") // queued behind the scan, ahead of the Deregister
	f.send(&cdcpb.ChangeDataRequest{RequestId: 4, RegionId: r.Id,
		Request: &cdcpb.ChangeDataRequest_Deregister_{Deregister: &cdcpb.ChangeDataRequest_Deregister{}}})
	eventually(t, "region_not_found", func() bool { return len(f.errors()) == 1 })
	if f.errors()[0].GetError().GetRegionNotFound() == nil {
		t.Fatalf("deregister answered %v", f.errors()[0])
	}
	e.emu.DelayEvents(0)
	rows := f.rows()
	if n := countType(rows, cdcpb.Event_INITIALIZED); n != 0 {
		t.Fatalf("INITIALIZED sent after the Deregister")
	}
	if n := countType(rows, cdcpb.Event_COMMITTED); n != 0 {
		t.Fatalf("%d scan rows sent after the Deregister", n)
	}
	if len(find(rows, cdcpb.Event_COMMIT, "tz")) != 1 {
		t.Fatalf("realtime row queued before the Deregister was not delivered: %v", rows)
	}
	// And it came before the Error.
	evs := f.eventsFor(4)
	if evs[len(evs)-1].GetError() == nil {
		t.Fatalf("last event %v, want the Error", evs[len(evs)-1])
	}
}

// TestRealtimeEventNotSplit: one applied command's rows reach a downstream as
// one Event however large (spec §1.5); only scan output is packed by size.
func TestRealtimeEventNotSplit(t *testing.T) {
	e := newEnv(t, 20*time.Millisecond)
	r, _ := e.region([]byte("t"))
	f := e.openFeed("stream-multiplexing")
	f.send(e.registerReq(r, 1, 0, nil, nil))
	e.waitInitialized(f, 1)

	const keys, valueSize = 80, 100 << 10 // 8 MiB in one command
	muts := make([]mut, keys)
	for i := range muts {
		muts[i] = mut{key: fmt.Appendf(nil, "tbig%03d", i), val: bytes.Repeat([]byte{'v'}, valueSize)}
	}
	start := e.ts()
	e.prewrite(start, muts, nil)
	eventually(t, "the prewrites", func() bool { return countType(f.rows(), cdcpb.Event_PREWRITE) == keys })
	var prewrites []*cdcpb.Event
	for _, ev := range f.eventsFor(1) {
		if countType(ev.GetEntries().GetEntries(), cdcpb.Event_PREWRITE) > 0 {
			prewrites = append(prewrites, ev)
		}
	}
	if len(prewrites) != 1 {
		t.Fatalf("one prewrite command came as %d Events, want 1", len(prewrites))
	}
	if size := prewrites[0].Size(); size < keys*valueSize {
		t.Fatalf("the Event is %d bytes, want at least %d", size, keys*valueSize)
	}
}
