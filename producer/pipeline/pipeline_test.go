package pipeline

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tidestream/tidestream/producer/kafka"
	"github.com/tidestream/tidestream/proto/contract"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"))
}

// The checkpoint never passes a record Kafka has not acknowledged, however
// the acknowledgements interleave, and reaches the resolved ts once all
// are in.
func TestTrackerCheckpointNeverPassesAnUnackedRecord(t *testing.T) {
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 1))
		tr := newTracker(100)
		var inflight []uint64
		ts := uint64(100)
		for step := 0; step < 300; step++ {
			switch rng.IntN(4) {
			case 0, 1:
				ts += uint64(rng.IntN(3)) // several records may share a ts
				if ts == 100 {
					ts++
				}
				tr.add(ts)
				inflight = append(inflight, ts)
			case 2:
				if len(inflight) > 0 {
					i := rng.IntN(len(inflight))
					require.NoError(t, tr.done(inflight[i]))
					inflight = slices.Delete(inflight, i, i+1)
				}
			case 3:
				tr.resolve(ts) // everything added so far is at or below ts
			}
			cp, res := tr.checkpoint()
			require.LessOrEqual(t, cp, res)
			for _, f := range inflight {
				require.Less(t, cp, f, "seed %d step %d: checkpoint %d passes unacked %d", seed, step, cp, f)
			}
			require.Equal(t, len(inflight), tr.inFlight())
		}
		for _, f := range inflight {
			require.NoError(t, tr.done(f))
		}
		cp, res := tr.checkpoint()
		require.Equal(t, res, cp)
	}
	require.ErrorIs(t, newTracker(1).done(5), errNotInFlight)
}

// A re-subscription sends again what followed the last resolved ts; those
// records may sit below records still in flight and must be counted too.
func TestTrackerTakesRecordsAgainAfterAResubscription(t *testing.T) {
	tr := newTracker(10)
	tr.add(11)
	tr.add(13)
	tr.add(12) // sent again after a retry, below 13
	cp, _ := tr.checkpoint()
	require.EqualValues(t, 10, cp)
	tr.resolve(20)
	require.NoError(t, tr.done(11))
	require.NoError(t, tr.done(13))
	cp, _ = tr.checkpoint()
	require.EqualValues(t, 11, cp, "12 is still in flight")
	require.NoError(t, tr.done(12))
	cp, _ = tr.checkpoint()
	require.EqualValues(t, 20, cp)
}

// fakeEncoder serves scripted streams.
type fakeEncoder struct {
	tidestreamv1.UnimplementedEncoderServiceServer
	script func(n int, req *tidestreamv1.SubscribeRequest, st grpc.ServerStreamingServer[tidestreamv1.EncodedBatch]) error

	mu   sync.Mutex
	reqs []*tidestreamv1.SubscribeRequest
	acks []uint64
}

func (f *fakeEncoder) Subscribe(req *tidestreamv1.SubscribeRequest, st grpc.ServerStreamingServer[tidestreamv1.EncodedBatch]) error {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	n := len(f.reqs)
	f.mu.Unlock()
	return f.script(n, req, st)
}

func (f *fakeEncoder) Ack(_ context.Context, p *tidestreamv1.PipelineProgress) (*tidestreamv1.AckResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.acks = append(f.acks, p.GetCheckpointTs())
	return &tidestreamv1.AckResponse{}, nil
}

func encoderClient(t *testing.T, f *fakeEncoder) tidestreamv1.EncoderServiceClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	g := grpc.NewServer()
	tidestreamv1.RegisterEncoderServiceServer(g, f)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), append(contract.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	return tidestreamv1.NewEncoderServiceClient(cc)
}

// heldSink keeps every record until the test acknowledges it.
type heldSink struct {
	mu   sync.Mutex
	held []held
	got  chan struct{}
}

type held struct {
	rec  *tidestreamv1.EncodedRecord
	done func(error)
}

func newHeldSink() *heldSink { return &heldSink{got: make(chan struct{}, 1024)} }

func (s *heldSink) Produce(_ context.Context, rec *tidestreamv1.EncodedRecord, done func(error)) error {
	s.mu.Lock()
	s.held = append(s.held, held{rec, done})
	s.mu.Unlock()
	s.got <- struct{}{}
	return nil
}

func (s *heldSink) take(i int) held {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.held[i]
	s.held = slices.Delete(s.held, i, i+1)
	return h
}

func (s *heldSink) minHeld() (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.held) == 0 {
		return 0, false
	}
	m := s.held[0].rec.GetCommitTs()
	for _, h := range s.held {
		m = min(m, h.rec.GetCommitTs())
	}
	return m, true
}

func assignment() *tidestreamv1.PipelineAssignment {
	return &tidestreamv1.PipelineAssignment{Namespace: "default", ChangefeedId: "cf", PipelineId: 7, Epoch: 3, StartTs: 100,
		Spans: []*tidestreamv1.Span{{StartKey: []byte("a"), EndKey: []byte("b")}}, Route: &tidestreamv1.Route{EncoderAddr: "e"}}
}

func records(from, to uint64) []*tidestreamv1.EncodedRecord {
	var out []*tidestreamv1.EncodedRecord
	for ts := from; ts <= to; ts++ {
		out = append(out, &tidestreamv1.EncodedRecord{Topic: "t", Key: []byte{byte(ts)}, Value: []byte("v"), CommitTs: ts})
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	require.Eventually(t, cond, 10*time.Second, time.Millisecond, what)
}

// Records are acknowledged in random order while the checkpoint is read
// after each: it never reaches a record still held, and ends at the
// resolved ts.
func TestCheckpointFollowsAcknowledgements(t *testing.T) {
	f := &fakeEncoder{script: func(_ int, _ *tidestreamv1.SubscribeRequest, st grpc.ServerStreamingServer[tidestreamv1.EncodedBatch]) error {
		if err := st.Send(&tidestreamv1.EncodedBatch{Records: records(101, 150), ResolvedTs: 150}); err != nil {
			return err
		}
		if err := st.Send(&tidestreamv1.EncodedBatch{Records: records(151, 200), ResolvedTs: 210}); err != nil {
			return err
		}
		<-st.Context().Done()
		return nil
	}}
	sink := newHeldSink()
	p, err := New(Config{Assignment: assignment(), Encoder: encoderClient(t, f), Sink: sink})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	for range 100 {
		<-sink.got
	}
	waitFor(t, "resolved 210 received", func() bool { return p.Status().Resolved == 210 })
	rng := rand.New(rand.NewPCG(1, 2))
	for range 100 {
		sink.mu.Lock()
		n := len(sink.held)
		sink.mu.Unlock()
		h := sink.take(rng.IntN(n))
		h.done(nil)
		cp := p.Status().Checkpoint
		if m, ok := sink.minHeld(); ok {
			require.Less(t, cp, m, "checkpoint passed an unacknowledged record")
		} else {
			require.EqualValues(t, 210, cp)
		}
	}
	cancel()
	require.NoError(t, <-done)
	require.NoError(t, p.Status().Err)

	f.mu.Lock()
	req := f.reqs[0]
	f.mu.Unlock()
	require.EqualValues(t, 100, req.GetFromTs())
	require.EqualValues(t, 3, req.GetEpoch())
	require.Equal(t, "e", req.GetRoute().GetEncoderAddr(), "the route goes on to the encoder")
}

// A record Kafka refused for good ends the pipeline with the reason; the
// checkpoint stays below it.
func TestAFailedRecordFailsThePipeline(t *testing.T) {
	f := &fakeEncoder{script: func(_ int, _ *tidestreamv1.SubscribeRequest, st grpc.ServerStreamingServer[tidestreamv1.EncodedBatch]) error {
		if err := st.Send(&tidestreamv1.EncodedBatch{Records: records(101, 103), ResolvedTs: 103}); err != nil {
			return err
		}
		<-st.Context().Done()
		return nil
	}}
	sink := newHeldSink()
	p, err := New(Config{Assignment: assignment(), Encoder: encoderClient(t, f), Sink: sink})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	for range 3 {
		<-sink.got
	}
	sink.take(0).done(nil)
	sink.take(0).done(errors.New("MESSAGE_TOO_LARGE"))
	err = <-done
	require.ErrorContains(t, err, "commit ts 102")
	require.ErrorContains(t, err, "MESSAGE_TOO_LARGE")
	st := p.Status()
	require.EqualValues(t, 101, st.Checkpoint)
	require.Error(t, st.Err)
	sink.take(0).done(nil) // a late ack after Run returned is still counted
	require.EqualValues(t, 101, p.Status().Checkpoint, "102 never made it")
}

// A transient break resumes from the last resolved ts; a fenced stream
// stops the pipeline; an encoder warning is the pipeline's error until
// data flows again.
func TestStreamOutcomes(t *testing.T) {
	warned := make(chan struct{})
	release := make(chan struct{})
	f := &fakeEncoder{script: func(n int, req *tidestreamv1.SubscribeRequest, st grpc.ServerStreamingServer[tidestreamv1.EncodedBatch]) error {
		switch n {
		case 1:
			if err := st.Send(&tidestreamv1.EncodedBatch{Records: records(101, 102), ResolvedTs: 102}); err != nil {
				return err
			}
			if err := st.Send(&tidestreamv1.EncodedBatch{Records: records(103, 103)}); err != nil {
				return err
			}
			return contract.Status(contract.Transient, codes.Unavailable, "encoder restarting")
		case 2:
			if req.GetFromTs() != 102 {
				return contract.Status(contract.Fatal, codes.InvalidArgument, "resumed from %d", req.GetFromTs())
			}
			if err := st.Send(&tidestreamv1.EncodedBatch{Warning: "schema registry: 503"}); err != nil {
				return err
			}
			close(warned)
			<-release
			if err := st.Send(&tidestreamv1.EncodedBatch{Records: records(103, 104), ResolvedTs: 104}); err != nil {
				return err
			}
			return contract.Status(contract.Fenced, codes.FailedPrecondition, "epoch 4 took over")
		}
		return nil
	}}
	sink := newHeldSink()
	p, err := New(Config{Assignment: assignment(), Encoder: encoderClient(t, f), Sink: sink, RetryBackoff: time.Millisecond})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	<-warned
	waitFor(t, "the warning is the pipeline's error", func() bool {
		err := p.Status().Err
		return err != nil && err.Error() == "encoder: schema registry: 503"
	})
	close(release)
	require.ErrorIs(t, <-done, ErrFenced)
	require.NoError(t, p.Status().Err, "data flowed after the warning")
	sink.mu.Lock()
	n := len(sink.held)
	sink.mu.Unlock()
	require.Equal(t, 5, n, "103 was produced twice: at-least-once across the retry")
}

// Acked tells the encoder the checkpoint written.
func TestAckedReachesTheEncoder(t *testing.T) {
	f := &fakeEncoder{script: func(int, *tidestreamv1.SubscribeRequest, grpc.ServerStreamingServer[tidestreamv1.EncodedBatch]) error {
		return nil
	}}
	p, err := New(Config{Assignment: assignment(), Encoder: encoderClient(t, f), Sink: newHeldSink()})
	require.NoError(t, err)
	p.Acked(context.Background(), 150)
	f.mu.Lock()
	defer f.mu.Unlock()
	require.Equal(t, []uint64{150}, f.acks)
}

// The Kafka producer satisfies Sink.
var _ Sink = (*kafka.Producer)(nil)

// TiCDC's target ts: records committed after it are not produced, and the
// checkpoint stops at it.
func TestTargetTs(t *testing.T) {
	f := &fakeEncoder{script: func(_ int, _ *tidestreamv1.SubscribeRequest, st grpc.ServerStreamingServer[tidestreamv1.EncodedBatch]) error {
		if err := st.Send(&tidestreamv1.EncodedBatch{Records: records(101, 200), ResolvedTs: 300}); err != nil {
			return err
		}
		<-st.Context().Done()
		return nil
	}}
	a := assignment()
	a.TargetTs = 150
	sink := &countSink{}
	p, err := New(Config{Assignment: a, Encoder: encoderClient(t, f), Sink: sink})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	waitFor(t, "checkpoint at the target", func() bool { return p.Status().Checkpoint == 150 })
	cancel()
	require.NoError(t, <-done)
	require.EqualValues(t, 150, p.Status().Resolved, "resolved stops at the target too")
	sink.mu.Lock()
	defer sink.mu.Unlock()
	require.Equal(t, 50, sink.n, "records 101..150 only")
	require.EqualValues(t, 150, sink.maxTs)
	require.EqualValues(t, 50, p.Status().Rows, "rows count what was produced")
}

// countSink acknowledges every record at once and counts them.
type countSink struct {
	mu    sync.Mutex
	n     int
	maxTs uint64
}

func (s *countSink) Produce(_ context.Context, rec *tidestreamv1.EncodedRecord, done func(error)) error {
	s.mu.Lock()
	s.n++
	s.maxTs = max(s.maxTs, rec.GetCommitTs())
	s.mu.Unlock()
	done(nil)
	return nil
}

// A target lowered while the pipeline runs (the owner splits its table
// anew) holds from the next batch on; one that would raise it is refused.
func TestSetTargetWhileRunning(t *testing.T) {
	second := make(chan struct{})
	f := &fakeEncoder{script: func(_ int, _ *tidestreamv1.SubscribeRequest, st grpc.ServerStreamingServer[tidestreamv1.EncodedBatch]) error {
		if err := st.Send(&tidestreamv1.EncodedBatch{Records: records(101, 120), ResolvedTs: 120}); err != nil {
			return err
		}
		<-second
		if err := st.Send(&tidestreamv1.EncodedBatch{Records: records(121, 200), ResolvedTs: 300}); err != nil {
			return err
		}
		<-st.Context().Done()
		return nil
	}}
	sink := &countSink{}
	p, err := New(Config{Assignment: assignment(), Encoder: encoderClient(t, f), Sink: sink})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	waitFor(t, "first batch produced", func() bool { return p.Status().Checkpoint == 120 })
	require.True(t, p.SetTarget(150))
	require.False(t, p.SetTarget(0), "lifting the target needs a restart")
	require.False(t, p.SetTarget(160), "so does raising it")
	require.True(t, p.SetTarget(150), "the same target is no change")
	close(second)
	waitFor(t, "checkpoint at the new target", func() bool { return p.Status().Checkpoint == 150 })
	cancel()
	require.NoError(t, <-done)
	sink.mu.Lock()
	defer sink.mu.Unlock()
	require.Equal(t, 50, sink.n, "records 101..150 only")
	require.EqualValues(t, 150, sink.maxTs)
	require.EqualValues(t, 50, p.Status().Rows, "rows count what was produced")
}
