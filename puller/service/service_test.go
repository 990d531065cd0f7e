package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tidestream/tidestream/proto/contract"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
	"github.com/tidestream/tidestream/puller/kvclient"
	"github.com/tidestream/tidestream/puller/matcher"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
)

// fakePuller emits, per span, events with increasing commit ts and a resolved
// ts after each event; it records how far each span got.
type fakePuller struct {
	perSpan int
	mu      sync.Mutex
	sent    map[string]int
	fail    error
}

func (f *fakePuller) Subscribe(ctx context.Context, span kvclient.Span, startTs uint64, sink kvclient.Sink) error {
	if f.fail != nil {
		return f.fail
	}
	for i := 1; i <= f.perSpan; i++ {
		ts := startTs + uint64(i)*10
		ev := matcher.Event{Key: append(append([]byte(nil), span.Start...), byte(i)), Value: []byte("v"), Op: matcher.OpPut, StartTs: ts - 1, CommitTs: ts}
		if err := sink.Events(ctx, []matcher.Event{ev}); err != nil {
			return err
		}
		if err := sink.Resolved(ctx, ts); err != nil {
			return err
		}
		f.mu.Lock()
		f.sent[string(span.Start)] = i
		f.mu.Unlock()
	}
	<-ctx.Done()
	return nil
}

func startService(t *testing.T, cfg Config) tidestreamv1.PullerServiceClient {
	t.Helper()
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, svc)
}

// serve runs svc on an in-memory listener and returns a client of it.
func serve(t *testing.T, svc *Service) tidestreamv1.PullerServiceClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	g := grpc.NewServer()
	svc.Register(g)
	go func() { _ = g.Serve(lis) }()
	// The subscriber dials as stages dial each other.
	cc, err := grpc.NewClient("passthrough:///bufnet", append(contract.DialOptions(),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close(); g.Stop() })
	return tidestreamv1.NewPullerServiceClient(cc)
}

// opened subscribes and waits for the first batch.
func opened(ctx context.Context, t *testing.T, c tidestreamv1.PullerServiceClient, r *tidestreamv1.SubscribeRequest) grpc.ServerStreamingClient[tidestreamv1.PullerBatch] {
	t.Helper()
	st, err := c.Subscribe(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	return st
}

// endOf reads st until it ends and returns how.
func endOf(st grpc.ServerStreamingClient[tidestreamv1.PullerBatch]) error {
	for {
		if _, err := st.Recv(); err != nil {
			return err
		}
	}
}

func req(epoch uint64, spans ...string) *tidestreamv1.SubscribeRequest {
	r := &tidestreamv1.SubscribeRequest{ChangefeedId: "cf", PipelineId: 7, Epoch: epoch, FromTs: 100}
	for _, s := range spans {
		r.Spans = append(r.Spans, &tidestreamv1.Span{StartKey: []byte(s), EndKey: []byte(s + "~")})
	}
	return r
}

func TestResolvedTsIsTheMinimumAndNeverPassesAnEvent(t *testing.T) {
	fp := &fakePuller{perSpan: 50, sent: map[string]int{}}
	c := startService(t, Config{Upstreams: Fixed(fp, nil), BatchEvents: 7})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := c.Subscribe(ctx, req(1, "a", "b", "c"))
	if err != nil {
		t.Fatal(err)
	}
	var lastResolved uint64
	seen := map[string]bool{}
	for len(seen) < 150 || lastResolved < 600 {
		b, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range b.Events {
			if e.CommitTs <= lastResolved {
				t.Fatalf("event at %d after resolved ts %d", e.CommitTs, lastResolved)
			}
			seen[fmt.Sprintf("%s@%d", e.Key, e.CommitTs)] = true
		}
		if b.ResolvedTs != 0 {
			if b.ResolvedTs <= lastResolved {
				t.Fatalf("resolved ts went from %d to %d", lastResolved, b.ResolvedTs)
			}
			lastResolved = b.ResolvedTs
		}
	}
	if lastResolved != 600 {
		t.Fatalf("final resolved %d, want 600 (min over spans)", lastResolved)
	}
}

func TestEpochFencing(t *testing.T) {
	fp := &fakePuller{perSpan: 1, sent: map[string]int{}}
	c := startService(t, Config{Upstreams: Fixed(fp, nil)})
	ctx := context.Background()
	old := opened(ctx, t, c, req(2, "a"))
	// An older epoch is refused.
	older, err := c.Subscribe(ctx, req(1, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := older.Recv(); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("older epoch: %v", err)
	}
	// A newer one supersedes the running stream.
	opened(ctx, t, c, req(3, "a"))
	if err := endOf(old); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("superseded stream: %v", err)
	}
}

func TestBadRequestsAndFailures(t *testing.T) {
	fp := &fakePuller{perSpan: 1, sent: map[string]int{}}
	c := startService(t, Config{Upstreams: Fixed(fp, func(context.Context) (uint64, error) { return 150, nil })})
	ctx := context.Background()
	for name, r := range map[string]*tidestreamv1.SubscribeRequest{
		"no spans":     req(1),
		"no epoch":     req(0, "a"),
		"no feed":      {PipelineId: 1, Epoch: 1, Spans: []*tidestreamv1.Span{{StartKey: []byte("a")}}},
		"inverted":     {ChangefeedId: "cf", Epoch: 1, Spans: []*tidestreamv1.Span{{StartKey: []byte("b"), EndKey: []byte("a")}}},
		"below the gc": req(1, "a"),
	} {
		st, err := c.Subscribe(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		_, err = st.Recv()
		want := codes.InvalidArgument
		if name == "below the gc" {
			want = codes.OutOfRange
		}
		if status.Code(err) != want {
			t.Errorf("%s: got %v, want %v", name, err, want)
		}
	}

	fatal := &fakePuller{fail: fmt.Errorf("store too old: %w", kvclient.ErrFatal)}
	c = startService(t, Config{Upstreams: Fixed(fatal, nil)})
	st, _ := c.Subscribe(ctx, req(1, "a"))
	if _, err := st.Recv(); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("fatal puller error: %v", err)
	}
	flaky := &fakePuller{fail: errors.New("connection reset")}
	c = startService(t, Config{Upstreams: Fixed(flaky, nil)})
	st, _ = c.Subscribe(ctx, req(1, "a"))
	if _, err := st.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("transient puller error: %v", err)
	}
}

// A subscriber that does not read stalls the span pullers once the quota is
// used: nothing is buffered without bound.
func TestSlowSubscriberBlocksThePuller(t *testing.T) {
	fp := &fakePuller{perSpan: 100000, sent: map[string]int{}}
	c := startService(t, Config{Upstreams: Fixed(fp, nil), MemoryQuota: 64 << 10})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := c.Subscribe(ctx, req(1, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	progress := func() int {
		fp.mu.Lock()
		defer fp.mu.Unlock()
		return fp.sent["a"]
	}
	// Let it run into the limits (quota + gRPC windows), then check it stopped.
	var last int
	deadline := time.Now().Add(10 * time.Second)
	for {
		time.Sleep(200 * time.Millisecond)
		p := progress()
		if p == last {
			break
		}
		last = p
		if time.Now().After(deadline) {
			t.Fatalf("puller kept going (%d events) while nobody read", p)
		}
	}
	if last >= 100000 {
		t.Fatal("everything was buffered")
	}
	t.Logf("stalled after %d events with a 64 KiB quota", last)
}
