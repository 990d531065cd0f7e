package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tidestream/tidestream/proto/contract"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
	"github.com/tidestream/tidestream/sorter/engine"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakePuller is a PullerService whose streams are produced by gen; it
// records every request it served.
type fakePuller struct {
	tidestreamv1.UnimplementedPullerServiceServer
	gen func(ctx context.Context, n int, req *tidestreamv1.SubscribeRequest, send func(*tidestreamv1.PullerBatch) error) error

	mu   sync.Mutex
	reqs []*tidestreamv1.SubscribeRequest
}

func (f *fakePuller) Subscribe(req *tidestreamv1.SubscribeRequest, st grpc.ServerStreamingServer[tidestreamv1.PullerBatch]) error {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	n := len(f.reqs)
	f.mu.Unlock()
	return f.gen(st.Context(), n, req, st.Send)
}

func (f *fakePuller) requests() []*tidestreamv1.SubscribeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reqs)
}

// serveBufconn serves register's services on an in-memory listener and
// returns a client connection to it.
func serveBufconn(t testing.TB, register func(*grpc.Server)) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	g := grpc.NewServer()
	register(g)
	served := make(chan struct{})
	go func() { defer close(served); _ = g.Serve(lis) }()
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { cc.Close(); g.Stop(); <-served })
	return cc
}

type rig struct {
	eng    *engine.Engine
	svc    *Service
	client tidestreamv1.SorterServiceClient
	puller *fakePuller
}

func newRig(t testing.TB, fp *fakePuller, quota int64, tune func(*Config)) *rig {
	t.Helper()
	return newRigKnobs(t, fp, quota, nil, tune)
}

func newRigKnobs(t testing.TB, fp *fakePuller, quota int64, knobs *engine.TestingKnobs, tune func(*Config)) *rig {
	t.Helper()
	eng, err := engine.Open(engine.Config{Dir: t.TempDir(), MemoryQuota: quota, CompactInterval: 100 * time.Millisecond, Knobs: knobs})
	require.NoError(t, err)
	up := serveBufconn(t, func(g *grpc.Server) { tidestreamv1.RegisterPullerServiceServer(g, fp) })
	cfg := Config{Upstream: tidestreamv1.NewPullerServiceClient(up), Engine: eng,
		RetryBackoff: 5 * time.Millisecond, MaxRetryBackoff: 50 * time.Millisecond}
	if tune != nil {
		tune(&cfg)
	}
	svc, err := New(cfg)
	require.NoError(t, err)
	down := serveBufconn(t, svc.Register)
	// Cleanups run last-in first-out: the downstream server stops, then the
	// service, then the engine.
	t.Cleanup(func() { require.NoError(t, eng.Close()) })
	t.Cleanup(svc.Close)
	return &rig{eng: eng, svc: svc, client: tidestreamv1.NewSorterServiceClient(down), puller: fp}
}

func subReq(pipeline int64, epoch, from uint64) *tidestreamv1.SubscribeRequest {
	return &tidestreamv1.SubscribeRequest{ChangefeedId: "cf", PipelineId: pipeline, Epoch: epoch, FromTs: from,
		Spans: []*tidestreamv1.Span{{StartKey: []byte("t"), EndKey: []byte("u")}}}
}

// history is a deterministic set of committed events spread over regions.
type history struct {
	events []*tidestreamv1.RawKVEvent // sorted by (commit, start, key)
	steps  []uint64                   // resolved ts checkpoints, increasing
}

func newHistory(seed uint64, from uint64, n, regions int) *history {
	r := rand.New(rand.NewPCG(seed, 1))
	h := &history{}
	seen := map[string]bool{}
	for len(h.events) < n {
		commit := from + 1 + uint64(r.IntN(n/2+1))
		region := r.IntN(regions)
		key := fmt.Appendf(nil, "t%02d_%06d", region, r.IntN(n))
		id := fmt.Sprintf("%s@%d", key, commit)
		if seen[id] {
			continue
		}
		seen[id] = true
		h.events = append(h.events, &tidestreamv1.RawKVEvent{Key: key, Value: fmt.Appendf(nil, "v%d", len(h.events)),
			Op: tidestreamv1.OpType_OP_TYPE_PUT, StartTs: commit - 1 - uint64(r.IntN(3)), CommitTs: commit, RegionId: uint64(region + 1)})
	}
	slices.SortFunc(h.events, cmpEvent)
	last := h.events[len(h.events)-1].CommitTs
	for ts := from; ts < last; {
		ts += 1 + uint64(r.IntN(40))
		h.steps = append(h.steps, min(ts, last))
	}
	return h
}

func cmpEvent(a, b *tidestreamv1.RawKVEvent) int {
	if c := compareU(a.CommitTs, b.CommitTs); c != 0 {
		return c
	}
	if c := compareU(a.StartTs, b.StartTs); c != 0 {
		return c
	}
	return bytes.Compare(a.Key, b.Key)
}

func compareU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// stream plays the history after from as a puller would: per resolved step,
// the step's events plus some of the next step's (events may run ahead of
// the resolved ts, never behind it), shuffled across regions and cut into
// random batches; the resolved ts rides on the last batch or its own.
// failAfter > 0 ends the stream with UNAVAILABLE after that many batches.
func (h *history) stream(ctx context.Context, seed uint64, from uint64, failAfter int, send func(*tidestreamv1.PullerBatch) error) error {
	r := rand.New(rand.NewPCG(seed, 2))
	sent := map[*tidestreamv1.RawKVEvent]bool{}
	batches := 0
	i := 0 // first event of the current step
	for _, step := range h.steps {
		if step <= from {
			continue
		}
		var pool []*tidestreamv1.RawKVEvent
		for ; i < len(h.events) && h.events[i].CommitTs <= step; i++ {
			if e := h.events[i]; e.CommitTs > from && !sent[e] {
				pool = append(pool, e)
			}
		}
		for j := i; j < len(h.events) && j < i+20; j++ {
			if e := h.events[j]; e.CommitTs > from && !sent[e] && r.IntN(3) == 0 {
				pool = append(pool, e)
			}
		}
		r.Shuffle(len(pool), func(a, b int) { pool[a], pool[b] = pool[b], pool[a] })
		for len(pool) > 0 {
			k := min(len(pool), 1+r.IntN(8))
			b := &tidestreamv1.PullerBatch{Events: pool[:k]}
			for _, e := range pool[:k] {
				sent[e] = true
			}
			pool = pool[k:]
			if len(pool) == 0 && r.IntN(2) == 0 {
				b.ResolvedTs = step
			}
			if err := send(b); err != nil {
				return err
			}
			if batches++; failAfter > 0 && batches >= failAfter {
				return status.Error(codes.Unavailable, "fake puller: injected failure")
			}
		}
		if err := send(&tidestreamv1.PullerBatch{ResolvedTs: step}); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return nil
}

// consumer checks a sorter stream as an encoder would rely on it.
type consumer struct {
	t        testing.TB
	resolved uint64
	last     *tidestreamv1.RawKVEvent
	got      []*tidestreamv1.RawKVEvent
}

func (c *consumer) take(b *tidestreamv1.SortedBatch) {
	c.t.Helper()
	for _, e := range b.Events {
		require.Greater(c.t, e.CommitTs, c.resolved, "event at or below a resolved ts already sent")
		if c.last != nil {
			require.Equal(c.t, -1, cmpEvent(c.last, e), "out of order or duplicate: %v then %v", c.last, e)
		}
		c.last = e
		c.got = append(c.got, e)
	}
	if b.ResolvedTs != 0 {
		require.Greater(c.t, b.ResolvedTs, c.resolved, "resolved ts must advance")
		c.resolved = b.ResolvedTs
	}
}

func (c *consumer) until(st grpc.ServerStreamingClient[tidestreamv1.SortedBatch], ts uint64) {
	c.t.Helper()
	for c.resolved < ts {
		b, err := st.Recv()
		require.NoError(c.t, err)
		c.take(b)
	}
}

func requireSameEvents(t testing.TB, want, got []*tidestreamv1.RawKVEvent) {
	t.Helper()
	require.Equal(t, len(want), len(got), "event count")
	for i := range want {
		require.Equal(t, want[i].Key, got[i].Key, "event %d", i)
		require.Equal(t, want[i].CommitTs, got[i].CommitTs, "event %d", i)
		require.Equal(t, want[i].StartTs, got[i].StartTs, "event %d", i)
		require.Equal(t, want[i].Value, got[i].Value, "event %d", i)
	}
}

func after(evs []*tidestreamv1.RawKVEvent, from uint64) []*tidestreamv1.RawKVEvent {
	var out []*tidestreamv1.RawKVEvent
	for _, e := range evs {
		if e.CommitTs > from {
			out = append(out, e)
		}
	}
	return out
}

// Random interleavings from several regions come out ordered, exactly once,
// never past the resolved ts, whatever the batch boundaries — with and
// without upstream failures in the middle.
func TestRandomInterleavingsAreSorted(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		for _, failEvery := range []int{0, 7} {
			t.Run(fmt.Sprintf("seed%d/fail%d", seed, failEvery), func(t *testing.T) {
				const from = 1000
				h := newHistory(seed, from, 3000, 5)
				fp := &fakePuller{}
				fp.gen = func(ctx context.Context, n int, req *tidestreamv1.SubscribeRequest, send func(*tidestreamv1.PullerBatch) error) error {
					fail := 0
					if failEvery > 0 && n <= 20 {
						fail = failEvery + n // vary the cut point per attempt
					}
					return h.stream(ctx, seed*100+uint64(n), req.FromTs, fail, send)
				}
				rg := newRig(t, fp, 16<<20, func(c *Config) { c.BatchBytes = 512 })
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				st, err := rg.client.Subscribe(ctx, subReq(1, 1, from))
				require.NoError(t, err)
				c := &consumer{t: t}
				c.until(st, h.steps[len(h.steps)-1])
				requireSameEvents(t, after(h.events, from), c.got)
				if failEvery > 0 {
					// The retries replayed events above the resolved ts that
					// were already written; the engine stored each once.
					ps := rg.eng.Stats().Pipelines
					require.Len(t, ps, 1)
					require.Greater(t, ps[0].EventsIn, int64(len(c.got)), "no event was written twice, so the retry path was not exercised")
					reqs := fp.requests()
					require.Greater(t, len(reqs), 1, "the failure was retried")
					for i := 1; i < len(reqs); i++ {
						require.GreaterOrEqual(t, reqs[i].FromTs, reqs[i-1].FromTs, "retries resume from the resolved ts")
						require.Equal(t, subReq(1, 1, 0).Spans[0].StartKey, reqs[i].Spans[0].StartKey, "spans forwarded")
					}
				}
			})
		}
	}
}

// Writing the same events again (a replay above the resolved ts after an
// upstream retry) does not duplicate them: the engine's key is the event's
// identity.
func TestRewriteIsIdempotent(t *testing.T) {
	eng, err := engine.Open(engine.Config{Dir: t.TempDir(), MemoryQuota: 16 << 20})
	require.NoError(t, err)
	defer eng.Close()
	p, err := eng.Pipeline(engine.PipelineID{Namespace: "default", Changefeed: "cf", Pipeline: 1}, 1)
	require.NoError(t, err)
	h := newHistory(9, 100, 500, 3)
	require.NoError(t, p.Write(h.events))
	require.NoError(t, p.Write(h.events[100:300]))
	p.Resolve(h.events[len(h.events)-1].CommitTs)
	var got []*tidestreamv1.RawKVEvent
	_, err = p.Read(100, p.Resolved(), 1<<30, func(ev *tidestreamv1.RawKVEvent) error { got = append(got, ev); return nil })
	require.NoError(t, err)
	requireSameEvents(t, h.events, got)
}

// endless emits batches with increasing commit ts and a resolved ts each,
// forever; payload bytes per event. It counts what it sent.
func endless(perBatch, payload int, sent *atomic.Int64) func(ctx context.Context, _ int, req *tidestreamv1.SubscribeRequest, send func(*tidestreamv1.PullerBatch) error) error {
	return func(ctx context.Context, _ int, req *tidestreamv1.SubscribeRequest, send func(*tidestreamv1.PullerBatch) error) error {
		ts := req.FromTs
		val := bytes.Repeat([]byte("x"), payload)
		for ctx.Err() == nil {
			b := &tidestreamv1.PullerBatch{}
			for range perBatch {
				ts += 2
				b.Events = append(b.Events, &tidestreamv1.RawKVEvent{Key: fmt.Appendf(nil, "k%d", ts), Value: val,
					Op: tidestreamv1.OpType_OP_TYPE_PUT, StartTs: ts - 1, CommitTs: ts})
			}
			b.ResolvedTs = ts
			if err := send(b); err != nil {
				return err
			}
			if sent != nil {
				sent.Add(int64(perBatch))
			}
		}
		return nil
	}
}

func TestEpochFencing(t *testing.T) {
	fp := &fakePuller{gen: endless(10, 10, nil)}
	rg := newRig(t, fp, 16<<20, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	old, err := rg.client.Subscribe(ctx, subReq(1, 2, 100))
	require.NoError(t, err)
	(&consumer{t: t}).until(old, 200)

	// An older epoch is refused, on Subscribe and on Ack.
	older, err := rg.client.Subscribe(ctx, subReq(1, 1, 100))
	require.NoError(t, err)
	_, err = older.Recv()
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)

	// A newer epoch supersedes the running stream and starts over from its
	// own from_ts.
	newer, err := rg.client.Subscribe(ctx, subReq(1, 3, 5000))
	require.NoError(t, err)
	c := &consumer{t: t}
	c.until(newer, 5200)
	require.Greater(t, c.got[0].CommitTs, uint64(5000))
	for {
		_, err := old.Recv()
		if err != nil {
			require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
			break
		}
	}
	var epochs []uint64
	for _, r := range fp.requests() {
		epochs = append(epochs, r.Epoch)
	}
	require.Equal(t, []uint64{2, 3}, epochs, "the upstream is subscribed once per epoch, with the encoder's epoch")

	_, err = rg.client.Ack(ctx, &tidestreamv1.PipelineProgress{ChangefeedId: "cf", PipelineId: 1, Epoch: 2, CheckpointTs: 5100})
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	_, err = rg.client.Ack(ctx, &tidestreamv1.PipelineProgress{ChangefeedId: "cf", PipelineId: 1, Epoch: 3, CheckpointTs: 5100})
	require.NoError(t, err)
	_, err = rg.client.Ack(ctx, &tidestreamv1.PipelineProgress{ChangefeedId: "cf", PipelineId: 9, Epoch: 3, CheckpointTs: 5100})
	require.Equal(t, codes.NotFound, status.Code(err), "%v", err)

	// The same epoch again (an encoder reconnecting) reuses the running
	// upstream; asking below what was acked is out of range.
	again, err := rg.client.Subscribe(ctx, subReq(1, 3, 5100))
	require.NoError(t, err)
	c2 := &consumer{t: t}
	c2.until(again, 5400)
	require.Greater(t, c2.got[0].CommitTs, uint64(5100))
	require.Len(t, fp.requests(), 2, "no new upstream subscription for the same epoch")
	below, err := rg.client.Subscribe(ctx, subReq(1, 3, 5000))
	require.NoError(t, err)
	_, err = below.Recv()
	require.Equal(t, codes.OutOfRange, status.Code(err), "%v", err)
}

func TestUpstreamRefusalEndsTheStream(t *testing.T) {
	fp := &fakePuller{gen: func(context.Context, int, *tidestreamv1.SubscribeRequest, func(*tidestreamv1.PullerBatch) error) error {
		return status.Error(codes.OutOfRange, "below the GC safepoint")
	}}
	rg := newRig(t, fp, 16<<20, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := rg.client.Subscribe(ctx, subReq(1, 1, 100))
	require.NoError(t, err)
	_, err = st.Recv()
	require.Equal(t, codes.OutOfRange, status.Code(err), "%v", err)
	require.Len(t, fp.requests(), 1, "a refusal is not retried")

	bad, err := rg.client.Subscribe(ctx, &tidestreamv1.SubscribeRequest{ChangefeedId: "cf", Epoch: 1})
	require.NoError(t, err)
	_, err = bad.Recv()
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
}

// A hot pipeline (large batches, a reader that keeps up as fast as it can)
// must not hold back an idle pipeline's resolved ts.
func TestHotPipelineDoesNotStarveIdleOnes(t *testing.T) {
	var hotSent atomic.Int64
	hot := endless(500, 1024, &hotSent)
	idle := func(ctx context.Context, _ int, req *tidestreamv1.SubscribeRequest, send func(*tidestreamv1.PullerBatch) error) error {
		// Resolved ts is the wall clock (TSO layout), every 10 ms.
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case now := <-tick.C:
				if err := send(&tidestreamv1.PullerBatch{ResolvedTs: uint64(now.UnixMilli()) << 18}); err != nil {
					return err
				}
			}
		}
	}
	fp := &fakePuller{gen: func(ctx context.Context, n int, req *tidestreamv1.SubscribeRequest, send func(*tidestreamv1.PullerBatch) error) error {
		if req.PipelineId == 1 {
			return hot(ctx, n, req, send)
		}
		return idle(ctx, n, req, send)
	}}
	rg := newRig(t, fp, 64<<20, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	hotStream, err := rg.client.Subscribe(ctx, subReq(1, 1, 100))
	require.NoError(t, err)
	var hotGot atomic.Int64
	hotDone := make(chan error, 1)
	go func() {
		for {
			b, err := hotStream.Recv()
			if err != nil {
				hotDone <- err
				return
			}
			hotGot.Add(int64(len(b.Events)))
		}
	}()
	// Let the hot pipeline get going first.
	require.Eventually(t, func() bool { return hotGot.Load() > 10000 }, 20*time.Second, 10*time.Millisecond)

	const idlePipes = 4
	var wg sync.WaitGroup
	lags := make([][]time.Duration, idlePipes)
	errs := make([]error, idlePipes)
	window := 2 * time.Second
	for i := range idlePipes {
		wg.Go(func() {
			st, err := rg.client.Subscribe(ctx, subReq(int64(10+i), 1, uint64(time.Now().UnixMilli())<<18))
			if err != nil {
				errs[i] = err
				return
			}
			end := time.Now().Add(window)
			for time.Now().Before(end) {
				b, err := st.Recv()
				if err != nil {
					errs[i] = err
					return
				}
				if b.ResolvedTs != 0 {
					lags[i] = append(lags[i], time.Since(physical(b.ResolvedTs)))
				}
			}
		})
	}
	before := hotGot.Load()
	wg.Wait()
	hotDuring := hotGot.Load() - before
	for i := range idlePipes {
		require.NoError(t, errs[i])
		require.NotEmpty(t, lags[i], "idle pipeline %d received no resolved ts", i)
		slices.Sort(lags[i])
		p99 := lags[i][len(lags[i])*99/100]
		t.Logf("idle pipeline %d: %d resolved ts in %s, lag p50 %s p99 %s max %s", i, len(lags[i]), window,
			lags[i][len(lags[i])/2], p99, lags[i][len(lags[i])-1])
		require.Greater(t, len(lags[i]), 20, "idle pipeline %d: resolved ts advanced too rarely", i)
		require.Less(t, p99, 500*time.Millisecond, "idle pipeline %d: resolved ts lags behind the hot one", i)
	}
	t.Logf("hot pipeline: %d events (1 KiB) sorted and delivered during the window, %d pulled in total", hotDuring, hotSent.Load())
	require.Greater(t, hotDuring, int64(1000), "the hot pipeline kept flowing")
	cancel()
	err = <-hotDone
	require.True(t, status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled), "%v", err)
}

// With no subscriber for IdleTimeout, a pipeline stops pulling and its data
// is dropped; a later subscriber of the same epoch rebuilds it.
func TestIdlePipelineIsDropped(t *testing.T) {
	fp := &fakePuller{gen: endless(10, 10, nil)}
	rg := newRig(t, fp, 16<<20, func(c *Config) { c.IdleTimeout = 100 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sctx, scancel := context.WithCancel(ctx)
	st, err := rg.client.Subscribe(sctx, subReq(1, 1, 100))
	require.NoError(t, err)
	(&consumer{t: t}).until(st, 300)
	scancel()
	require.Eventually(t, func() bool { return len(rg.eng.Stats().Pipelines) == 0 }, 10*time.Second, 10*time.Millisecond,
		"the idle pipeline's data is dropped")
	st2, err := rg.client.Subscribe(ctx, subReq(1, 1, 100))
	require.NoError(t, err)
	c := &consumer{t: t}
	c.until(st2, 300)
	require.Equal(t, uint64(102), c.got[0].CommitTs, "rebuilt from the request's from_ts")
	require.Len(t, fp.requests(), 2)
}

// Closing the service ends open streams with UNAVAILABLE, which an encoder
// retries (against this process after a restart, or another one).
func TestCloseEndsStreamsWithUnavailable(t *testing.T) {
	fp := &fakePuller{gen: endless(10, 10, nil)}
	rg := newRig(t, fp, 16<<20, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := rg.client.Subscribe(ctx, subReq(1, 1, 100))
	require.NoError(t, err)
	(&consumer{t: t}).until(st, 300)
	rg.svc.Close()
	for {
		if _, err := st.Recv(); err != nil {
			require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
			break
		}
	}
	again, err := rg.client.Subscribe(ctx, subReq(1, 1, 100))
	require.NoError(t, err)
	_, err = again.Recv()
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
}

// One commit ts far larger than a batch (a big transaction) is streamed in
// several batches, none of which carries a resolved ts until the whole group
// is out.
func TestHugeCommitTsIsStreamedInPieces(t *testing.T) {
	const rows = 20000
	fp := &fakePuller{gen: func(ctx context.Context, _ int, req *tidestreamv1.SubscribeRequest, send func(*tidestreamv1.PullerBatch) error) error {
		for lo := 0; lo < rows; lo += 1000 {
			b := &tidestreamv1.PullerBatch{}
			for i := lo; i < lo+1000; i++ {
				b.Events = append(b.Events, &tidestreamv1.RawKVEvent{Key: fmt.Appendf(nil, "k%06d", rows-i), Value: []byte("0123456789"),
					Op: tidestreamv1.OpType_OP_TYPE_PUT, StartTs: 150, CommitTs: 200})
			}
			if err := send(b); err != nil {
				return err
			}
		}
		if err := send(&tidestreamv1.PullerBatch{ResolvedTs: 200}); err != nil {
			return err
		}
		<-ctx.Done()
		return nil
	}}
	rg := newRig(t, fp, 16<<20, func(c *Config) { c.BatchBytes = 16 << 10 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := rg.client.Subscribe(ctx, subReq(1, 1, 100))
	require.NoError(t, err)
	c := &consumer{t: t}
	batches := 0
	for c.resolved < 200 {
		b, err := st.Recv()
		require.NoError(t, err)
		if b.ResolvedTs != 0 {
			require.Len(t, c.got, rows-len(b.Events), "a resolved ts came before the whole commit ts was sent")
		}
		require.Less(t, len(b.Events)*(7+10), 2*16<<10, "batch far over BatchBytes")
		c.take(b)
		batches++
	}
	require.Len(t, c.got, rows)
	require.Greater(t, batches, 10)
}

// An upstream that reports a lost promise (RESTART) is not retried in place
// from the sorter's resolved ts, which may be above the rows it lost: the
// stream ends with the same outcome, for the pipeline to restart from its
// checkpoint (issue 10, defect 1 as the sorter sees it: ABORTED used to be
// retried in place).
func TestUpstreamRestartIsNotRetriedInPlace(t *testing.T) {
	fp := &fakePuller{gen: func(ctx context.Context, n int, req *tidestreamv1.SubscribeRequest, send func(*tidestreamv1.PullerBatch) error) error {
		if err := send(&tidestreamv1.PullerBatch{ResolvedTs: req.FromTs + 100}); err != nil {
			return err
		}
		return contract.Status(contract.Restart, codes.Aborted, "puller: commit ts not above the region's resolved ts")
	}}
	rg := newRig(t, fp, 16<<20, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := rg.client.Subscribe(ctx, subReq(1, 1, 100))
	require.NoError(t, err)
	for {
		_, err = st.Recv()
		if err != nil {
			break
		}
	}
	require.Equal(t, contract.Restart, contract.Classify(err), "%v", err)
	require.Equal(t, codes.Aborted, status.Code(err), "%v", err)
	require.Len(t, fp.requests(), 1, "a restart is not retried in place")
}

// An event at or below a resolved ts the puller already sent breaks the
// stream contract: the sorter fails the pipeline with RESTART instead of
// dropping the event and counting it (issue 10, defect 4).
func TestEventBelowResolvedFailsThePipeline(t *testing.T) {
	fp := &fakePuller{gen: func(ctx context.Context, n int, req *tidestreamv1.SubscribeRequest, send func(*tidestreamv1.PullerBatch) error) error {
		for _, b := range []*tidestreamv1.PullerBatch{
			{Events: []*tidestreamv1.RawKVEvent{{Key: []byte("t1"), Op: tidestreamv1.OpType_OP_TYPE_PUT, StartTs: 149, CommitTs: 150}}, ResolvedTs: 200},
			{Events: []*tidestreamv1.RawKVEvent{{Key: []byte("t2"), Op: tidestreamv1.OpType_OP_TYPE_PUT, StartTs: 179, CommitTs: 180}}},
		} {
			if err := send(b); err != nil {
				return err
			}
		}
		<-ctx.Done()
		return nil
	}}
	rg := newRig(t, fp, 16<<20, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := rg.client.Subscribe(ctx, subReq(1, 1, 100))
	require.NoError(t, err)
	c := &consumer{t: t}
	for {
		b, err := st.Recv()
		if err != nil {
			require.Equal(t, contract.Restart, contract.Classify(err), "%v", err)
			require.Contains(t, status.Convert(err).Message(), "committed at 180")
			break
		}
		c.take(b)
	}
	require.Len(t, c.got, 1, "the event before the breach was delivered")
	require.Len(t, fp.requests(), 1, "a breach is not retried in place")
}

// TestStalledPipelineBlocksNoOtherSubscribe stands pipeline 1's engine
// write still, as a pebble write stall would, and supersedes it with a
// newer epoch: the service used to wait for that pipeline's upstream
// goroutine under the service-wide lock, so every other Subscribe and Ack
// of the process waited for one slow pipeline's disk.
func TestStalledPipelineBlocksNoOtherSubscribe(t *testing.T) {
	stalled := engine.PipelineID{Namespace: "default", Changefeed: "cf", Pipeline: 1}
	entered, release := make(chan struct{}), make(chan struct{})
	var enterOnce, releaseOnce sync.Once
	knobs := &engine.TestingKnobs{BeforeCommit: func(id engine.PipelineID) {
		if id != stalled {
			return
		}
		first := false
		enterOnce.Do(func() { first = true; close(entered) })
		if first {
			<-release
		}
	}}
	fp := &fakePuller{gen: endless(10, 10, nil)}
	rg := newRigKnobs(t, fp, 16<<20, knobs, nil)
	// Registered after the rig's cleanups, so it runs before them.
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	old, err := rg.client.Subscribe(ctx, subReq(1, 1, 100))
	require.NoError(t, err)
	select {
	case <-entered:
	case <-ctx.Done():
		t.Fatal("pipeline 1 never wrote")
	}

	// Each of these must finish while pipeline 1's first write is stalled.
	within := func(what string, f func(ctx context.Context) error) {
		t.Helper()
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
		defer wcancel()
		err := f(wctx)
		if wctx.Err() != nil {
			t.Fatalf("%s blocked behind pipeline 1's stalled write: %v", what, err)
		}
		require.NoError(t, err, what)
	}
	within("a newer epoch of the stalled pipeline", func(ctx context.Context) error {
		st, err := rg.client.Subscribe(ctx, subReq(1, 2, 100))
		if err == nil {
			_, err = st.Recv()
		}
		return err
	})
	within("another pipeline's stream", func(ctx context.Context) error {
		st, err := rg.client.Subscribe(ctx, subReq(2, 1, 100))
		if err != nil {
			return err
		}
		for {
			b, err := st.Recv()
			if err != nil {
				return err
			}
			if b.ResolvedTs > 200 {
				return nil
			}
		}
	})
	within("another pipeline's ack", func(ctx context.Context) error {
		_, err := rg.client.Ack(ctx, &tidestreamv1.PipelineProgress{ChangefeedId: "cf", PipelineId: 2, Epoch: 1, CheckpointTs: 150})
		return err
	})
	_, err = old.Recv()
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "the superseded stream is fenced: %v", err)
}
