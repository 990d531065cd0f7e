package node

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/tidestream/tidestream/coordinator/etcdembed"
	"github.com/tidestream/tidestream/coordinator/store"
	"github.com/tidestream/tidestream/producer/pipeline"
	"github.com/tidestream/tidestream/producer/runner"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// Issue 12, the one fence (DESIGN §8, KEYS.md): with its assignment moved to
// epoch + 1 while its watch hears nothing (a partitioned, zombie producer),
// the old producer's next checkpoint write fails its compare on the
// assignment key's mod revision and it stops the pipeline within 1 s;
// nothing it writes lands after the move. Real etcd, the real store, and
// the runner configured as the producer role configures it; only Kafka and
// the encoder are fakes.
func TestProducerFenceStopsPipelineWithinASecond(t *testing.T) {
	cli := startEtcd(t)
	for _, tc := range []struct {
		name string
		to   string // the member the owner moves the pipeline to, at epoch 2
	}{
		{name: "new epoch on the same producer", to: "p1"},
		{name: "moved to another producer", to: "p2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A cluster prefix of its own: the other case's keys stay
			// out of this producer's listing.
			keys, err := store.NewKeys("fence-" + tc.to)
			require.NoError(t, err)
			runFenceScenario(t, cli, store.New(cli, keys), tc.to)
		})
	}
}

// fenceInterval is the producer's progress interval here: the lowest
// --producer-progress-interval allows.
const fenceInterval = 50 * time.Millisecond

func runFenceScenario(t *testing.T, cli *clientv3.Client, st *store.Store, to string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	owner := ownerFence(ctx, t, cli, st)
	enc := startFakeEncoder(t)

	// The producer role's runner, with a Kafka that acks at once, the fake
	// encoder, a watch that can be partitioned and a probe on the fenced
	// writes.
	cfg := producerRunnerConfig(st, "p1", "127.0.0.1:1", fenceInterval, enc.client,
		slog.New(slog.NewTextHandler(t.Output(), nil)))
	cfg.Sink = func(context.Context, string, string) (pipeline.Sink, func(), error) { return ackSink{}, nil, nil }
	var partitioned atomic.Bool
	watch := cfg.Watch
	cfg.Watch = func(ctx context.Context, reset func(), fn func([]runner.Update)) error {
		// The real list and watch run on; while partitioned, this
		// producer hears none of it.
		return watch(ctx, func() {
			if !partitioned.Load() {
				reset()
			}
		}, func(us []runner.Update) {
			if !partitioned.Load() {
				fn(us)
			}
		})
	}
	var fencedWrites atomic.Int32
	write := cfg.WriteProgress
	cfg.WriteProgress = func(ctx context.Context, ps []runner.Progress) ([]runner.Progress, error) {
		fenced, err := write(ctx, ps)
		fencedWrites.Add(int32(len(fenced)))
		return fenced, err
	}
	r, err := runner.New(cfg)
	require.NoError(t, err)
	rctx, rcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	defer func() {
		rcancel()
		require.NoError(t, <-done)
	}()

	// The owner assigns the pipeline to p1 at epoch 1.
	a := &tidestreamv1.PipelineAssignment{
		Namespace: "default", ChangefeedId: "cf", PipelineId: 7, Epoch: 1, StartTs: 1000, ProducerMember: "p1",
		Spans: []*tidestreamv1.Span{{StartKey: []byte("a"), EndKey: []byte("b")}},
		Route: &tidestreamv1.Route{EncoderAddr: enc.addr},
	}
	require.NoError(t, st.Assign(ctx, owner, a, ""))
	progressKey := st.Keys().Progress("default", "cf", 7)
	progress := func() (status *tidestreamv1.PipelineStatus, modRev int64) {
		t.Helper()
		resp, err := cli.Get(ctx, progressKey)
		require.NoError(t, err)
		if len(resp.Kvs) == 0 {
			return nil, 0
		}
		ps, err := st.PipelineProgress(ctx, "default", "cf")
		require.NoError(t, err)
		return ps[7], resp.Kvs[0].ModRevision
	}

	// Its checkpoint moves in etcd, written by p1 at epoch 1, more than once.
	var firstRev int64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		s, rev := progress()
		if firstRev == 0 && s.GetCheckpointTs() > 1000 {
			firstRev = rev
		}
		if firstRev != 0 && rev > firstRev {
			require.EqualValues(t, 1, s.GetEpoch())
			require.Equal(t, "p1", s.GetProducerMember())
			break
		}
		require.True(t, time.Now().Before(deadline), "p1's checkpoint does not move in etcd")
	}
	require.Zero(t, fencedWrites.Load())
	require.EqualValues(t, 1, enc.subscribes.Load(), "one stream so far")
	require.Empty(t, enc.ended, "and it still runs")

	// p1's watch goes deaf; the owner moves the pipeline to epoch 2.
	partitioned.Store(true)
	moved := proto.CloneOf(a)
	moved.Epoch, moved.ProducerMember = 2, to
	movedAt := time.Now()
	require.NoError(t, st.Assign(ctx, owner, moved, "p1"))
	ka, err := cli.Get(ctx, st.Keys().Assignment(to, "default", "cf", 7))
	require.NoError(t, err)
	require.Len(t, ka.Kvs, 1)
	moveRev := ka.Kvs[0].ModRevision
	if to != "p1" {
		gone, err := cli.Get(ctx, st.Keys().Assignment("p1", "default", "cf", 7))
		require.NoError(t, err)
		require.Empty(t, gone.Kvs, "the move deletes p1's key in the same transaction")
	}

	// The old pipeline's encoder stream ends within 1 s of the move, and
	// the fence ended it: the watch told p1 nothing.
	select {
	case end := <-enc.ended:
		took := end.at.Sub(movedAt)
		t.Logf("epoch %d stream ended %s after the move", end.epoch, took.Round(time.Millisecond))
		require.EqualValues(t, 1, end.epoch)
		require.Less(t, took, time.Second, "the fenced pipeline stops within 1 s")
	case <-time.After(5 * time.Second):
		_, rev := progress()
		t.Fatalf("the old pipeline still streams 5 s after the move (fenced writes: %d; progress key at rev %d, the move at %d)",
			fencedWrites.Load(), rev, moveRev)
	}
	require.Positive(t, fencedWrites.Load(), "stopped by the fence, not by the watch")

	// Nothing p1 writes lands after the move: over several intervals the
	// progress key keeps the revision of p1's last epoch-1 write, and p1
	// does not subscribe again.
	frozen, frozenRev := progress()
	require.Less(t, frozenRev, moveRev, "a progress write from p1 landed after the move")
	for deadline := time.Now().Add(6 * fenceInterval); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		s, rev := progress()
		require.Equal(t, frozenRev, rev, "a progress write from p1 landed after the move")
		require.Equal(t, frozen.GetCheckpointTs(), s.GetCheckpointTs())
		require.Zero(t, enc.open.Load(), "p1 subscribed again")
	}
	require.EqualValues(t, 1, enc.subscribes.Load(), "one stream in all, at epoch 1")
}

// startEtcd starts a real etcd in-process, as coordinator/internal/etcdtest
// does (internal to the coordinator module), and returns a client; both
// end with the test.
func startEtcd(t *testing.T) *clientv3.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := etcdembed.Start(ctx, etcdembed.DefaultConfig(t.TempDir()))
	require.NoError(t, err)
	t.Cleanup(srv.Close)
	cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints(), DialTimeout: 5 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// ownerFence campaigns as the owner does, so assignments are written with
// the store's fenced Assign.
func ownerFence(ctx context.Context, t *testing.T, cli *clientv3.Client, st *store.Store) store.Fence {
	t.Helper()
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	require.NoError(t, err)
	t.Cleanup(func() { _ = sess.Close() })
	el := concurrency.NewElection(sess, st.Keys().OwnerPrefix())
	require.NoError(t, el.Campaign(ctx, "owner"))
	return store.Fence{Key: el.Key(), Rev: el.Rev()}
}

type ackSink struct{}

func (ackSink) Produce(_ context.Context, _ *tidestreamv1.EncodedRecord, done func(error)) error {
	done(nil)
	return nil
}

// fakeEncoder serves EncoderService on loopback: each stream sends one
// record per ts after the request's from ts, its resolved ts advancing
// with it, and reports when it ends.
type fakeEncoder struct {
	tidestreamv1.UnimplementedEncoderServiceServer
	addr       string
	cc         *grpc.ClientConn
	open       atomic.Int32
	subscribes atomic.Int32
	ended      chan streamEnd
}

type streamEnd struct {
	epoch uint64
	at    time.Time
}

func startFakeEncoder(t *testing.T) *fakeEncoder {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	e := &fakeEncoder{addr: lis.Addr().String(), ended: make(chan streamEnd, 16)}
	g := grpc.NewServer()
	tidestreamv1.RegisterEncoderServiceServer(g, e)
	var wg sync.WaitGroup
	wg.Go(func() { _ = g.Serve(lis) })
	t.Cleanup(func() {
		g.Stop()
		wg.Wait()
	})
	e.cc, err = grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.cc.Close() })
	return e
}

// client is the runner's Encoder: the fake, whatever the route says.
func (e *fakeEncoder) client(string) (tidestreamv1.EncoderServiceClient, error) {
	return tidestreamv1.NewEncoderServiceClient(e.cc), nil
}

func (e *fakeEncoder) Subscribe(req *tidestreamv1.SubscribeRequest, st grpc.ServerStreamingServer[tidestreamv1.EncodedBatch]) error {
	e.subscribes.Add(1)
	e.open.Add(1)
	defer func() {
		e.open.Add(-1)
		e.ended <- streamEnd{epoch: req.GetEpoch(), at: time.Now()}
	}()
	ts := req.GetFromTs()
	for {
		ts++
		b := &tidestreamv1.EncodedBatch{
			Records:    []*tidestreamv1.EncodedRecord{{Topic: "t", Key: []byte("k"), CommitTs: ts}},
			ResolvedTs: ts,
		}
		if err := st.Send(b); err != nil {
			return nil
		}
		select {
		case <-st.Context().Done():
			return nil
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (e *fakeEncoder) Ack(context.Context, *tidestreamv1.PipelineProgress) (*tidestreamv1.AckResponse, error) {
	return &tidestreamv1.AckResponse{}, nil
}
