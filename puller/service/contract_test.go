package service

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tidestream/tidestream/proto/contract"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
	"github.com/tidestream/tidestream/puller/kvclient"
	"github.com/tidestream/tidestream/puller/matcher"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// A commit at or below a resolved ts already sent means rows the subscriber
// considers complete may be missing: the pipeline must restart from its
// checkpoint. Mapped to UNAVAILABLE it was retried in place from the
// subscriber's resolved ts, at or above that commit, and never asked for
// again (issue 10, defect 1).
func TestProtocolViolationRestartsThePipeline(t *testing.T) {
	violation := fmt.Errorf("%w: region 7: %w", kvclient.ErrProtocol, matcher.ErrCommitBelowResolved)
	for _, tc := range []struct {
		err  error
		want contract.Outcome
	}{
		{violation, contract.Restart},
		{fmt.Errorf("store too old: %w", kvclient.ErrFatal), contract.Fatal},
		{kvclient.ErrClosed, contract.Transient},
		{errors.New("connection reset"), contract.Transient},
	} {
		c := startService(t, Config{Upstreams: Fixed(&fakePuller{fail: tc.err}, nil)})
		st, err := c.Subscribe(context.Background(), req(1, "a"))
		if err != nil {
			t.Fatal(err)
		}
		_, err = st.Recv()
		if got := contract.Classify(err); got != tc.want {
			t.Errorf("%v: the subscriber sees %v (%v), want %v", tc.err, got, err, tc.want)
		}
	}
}

// A same-epoch re-subscribe replaces the running stream; when the replaced
// handler returns, its release must not remove its successor's entry, or an
// older epoch is accepted next to the live one (issue 10, defect 2).
func TestReplacedStreamKeepsOlderEpochsOut(t *testing.T) {
	fp := &fakePuller{perSpan: 1, sent: map[string]int{}}
	c := startService(t, Config{Upstreams: Fixed(fp, nil)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := opened(ctx, t, c, req(2, "a"))
	opened(ctx, t, c, req(2, "a"))
	// The replaced stream ends fenced; its handler has returned (and
	// released) once its status arrives.
	if err := endOf(first); contract.Classify(err) != contract.Fenced {
		t.Fatalf("replaced stream ended with %v, want FENCED", err)
	}
	older, err := c.Subscribe(ctx, req(1, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := older.Recv(); contract.Classify(err) != contract.Fenced || status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("older epoch after the replaced stream's release: %v, want FENCED", err)
	}
}

// bigPuller sends large events as fast as the service takes them.
type bigPuller struct{ events, size int }

func (p bigPuller) Subscribe(ctx context.Context, span kvclient.Span, startTs uint64, sink kvclient.Sink) error {
	val := make([]byte, p.size)
	const perCall = 64
	for i := 0; i < p.events; i += perCall {
		evs := make([]matcher.Event, 0, perCall)
		for j := i; j < min(i+perCall, p.events); j++ {
			evs = append(evs, matcher.Event{Key: fmt.Appendf(nil, "k%08d", j), Value: val, Op: matcher.OpPut, StartTs: startTs + 1, CommitTs: startTs + 2})
		}
		if err := sink.Events(ctx, evs); err != nil {
			return err
		}
	}
	if err := sink.Resolved(ctx, startTs+2); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// While the subscriber does not read, the next batch fills only up to the
// contract's cap: no message the subscriber would refuse is ever built, and
// everything arrives once it reads again (issue 10, defect 3).
func TestBatchesStayUnderTheCapWhileSendBlocks(t *testing.T) {
	const events, size = 3000, 64 << 10 // 192 MiB in all, under the quota below
	c := startService(t, Config{Upstreams: Fixed(bigPuller{events: events, size: size}, nil), MemoryQuota: 512 << 20})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := c.Subscribe(ctx, req(1, "a"))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // a subscriber that stalls: what piles up is the point
	got, largest := 0, 0
	for got < events {
		b, err := st.Recv()
		if err != nil {
			t.Fatalf("after %d events: %v", got, err)
		}
		got += len(b.Events)
		largest = max(largest, proto.Size(b))
	}
	t.Logf("%d events, largest message %d bytes (cap %d)", got, largest, contract.MaxBatchBytes)
	if largest > contract.MaxBatchBytes+size {
		t.Fatalf("a message of %d bytes passed the cap %d", largest, contract.MaxBatchBytes)
	}
}

// Stop ends open streams at once with a transient status and refuses new
// ones, so a graceful server stop is not held until its deadline by streams
// that end only when their subscribers go away (issue 10, defect 6).
func TestStopEndsStreamsPromptly(t *testing.T) {
	fp := &fakePuller{perSpan: 1, sent: map[string]int{}}
	svc, err := New(Config{Upstreams: Fixed(fp, nil)})
	if err != nil {
		t.Fatal(err)
	}
	c := serve(t, svc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st := opened(ctx, t, c, req(1, "a"))
	began := time.Now()
	svc.Stop()
	if err := endOf(st); contract.Classify(err) != contract.Transient || time.Since(began) > time.Second {
		t.Fatalf("after Stop the stream ended with %v after %v, want TRANSIENT at once", err, time.Since(began))
	}
	again, err := c.Subscribe(ctx, req(2, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := again.Recv(); contract.Classify(err) != contract.Transient {
		t.Fatalf("Subscribe after Stop: %v, want TRANSIENT", err)
	}
	svc.Stop() // idempotent
}

// Each request reads the upstream cluster its route names by PD addresses
// (none: the default), and the GC safepoint check is that upstream's.
func TestRequestsReadTheUpstreamTheirRouteNames(t *testing.T) {
	def, a, b := &fakePuller{perSpan: 1, sent: map[string]int{}}, &fakePuller{perSpan: 1, sent: map[string]int{}}, &fakePuller{perSpan: 1, sent: map[string]int{}}
	upstreams := map[string]Upstream{
		"":             fixedUpstream{Puller: def},
		"pd-a:2379":    fixedUpstream{Puller: a},
		"pd-b:2379":    fixedUpstream{Puller: b, gc: func(context.Context) (uint64, error) { return 150, nil }},
		"pd-gone:2379": nil,
	}
	c := startService(t, Config{Upstreams: func(pd []string) (Upstream, error) {
		key := ""
		if len(pd) > 0 {
			key = pd[0]
		}
		up, ok := upstreams[key]
		if !ok || up == nil {
			return nil, fmt.Errorf("no cluster at %v: %w", pd, kvclient.ErrFatal)
		}
		return up, nil
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	subscribe := func(pd string, span string) error {
		r := req(1, span)
		r.PipelineId = int64(len(span))
		if pd != "" {
			r.Route = &tidestreamv1.Route{PdAddrs: []string{pd}}
		}
		st, err := c.Subscribe(ctx, r)
		if err != nil {
			return err
		}
		_, err = st.Recv()
		return err
	}
	require.NoError(t, subscribe("", "d"))
	require.NoError(t, subscribe("pd-a:2379", "aa"))
	err := subscribe("pd-b:2379", "bbb") // from_ts 100 is below b's safepoint
	require.Equal(t, contract.Fatal, contract.Classify(err), "%v", err)
	require.Equal(t, codes.OutOfRange, status.Code(err), "%v", err)
	err = subscribe("pd-gone:2379", "gggg")
	require.Equal(t, contract.Fatal, contract.Classify(err), "%v", err)
	for name, fp := range map[string]*fakePuller{"default": def, "a": a, "b": b} {
		fp.mu.Lock()
		got := len(fp.sent)
		fp.mu.Unlock()
		want := 1
		if name == "b" {
			want = 0
		}
		require.Equal(t, want, got, "spans pulled from upstream %s", name)
	}
}
