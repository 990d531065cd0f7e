package runner

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tidestream/tidestream/producer/kafka"
	"github.com/tidestream/tidestream/producer/pipeline"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"))
}

// encoder streams one record per ts up to a resolved ts that advances by
// itself, and records when its streams end and what it was acked.
type encoder struct {
	tidestreamv1.UnimplementedEncoderServiceServer
	mu    sync.Mutex
	open  map[int64]int // open streams by pipeline
	ended chan int64
	acks  map[int64]uint64
	froms []uint64 // from_ts of every subscription
}

func (e *encoder) Subscribe(req *tidestreamv1.SubscribeRequest, st grpc.ServerStreamingServer[tidestreamv1.EncodedBatch]) error {
	id := req.GetPipelineId()
	e.mu.Lock()
	e.open[id]++
	e.froms = append(e.froms, req.GetFromTs())
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.open[id]--
		e.mu.Unlock()
		e.ended <- id
	}()
	ts := req.GetFromTs()
	for {
		ts++
		b := &tidestreamv1.EncodedBatch{Records: []*tidestreamv1.EncodedRecord{{Topic: "t", Key: []byte("k"), CommitTs: ts}}, ResolvedTs: ts}
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

func (e *encoder) Ack(_ context.Context, p *tidestreamv1.PipelineProgress) (*tidestreamv1.AckResponse, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.acks[p.GetPipelineId()] = max(e.acks[p.GetPipelineId()], p.GetCheckpointTs())
	return &tidestreamv1.AckResponse{}, nil
}

type ackSink struct{}

func (ackSink) Produce(_ context.Context, _ *tidestreamv1.EncodedRecord, done func(error)) error {
	done(nil)
	return nil
}

// store is the fake etcd: the current epoch of each assignment key is its
// fence; progress lands only under the current one.
type store struct {
	mu       sync.Mutex
	epochs   map[string]uint64
	progress map[string]*tidestreamv1.PipelineStatus
	updates  chan []Update
}

func (s *store) write(_ context.Context, ps []Progress) ([]Progress, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var fenced []Progress
	for _, p := range ps {
		if s.epochs[p.Assignment.Key] != p.Assignment.Fence.(uint64) {
			fenced = append(fenced, p)
			continue
		}
		s.progress[p.Assignment.Key] = p.Status
	}
	return fenced, nil
}

func (s *store) checkpoint(key string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.progress[key].GetCheckpointTs()
}

func assignment(id int64, epoch uint64, encoderAddr string) *Assignment {
	key := "p1/default/cf/" + string(rune('0'+id))
	return &Assignment{Key: key, Fence: epoch, Record: &tidestreamv1.PipelineAssignment{
		Namespace: "default", ChangefeedId: "cf", PipelineId: id, Epoch: epoch, StartTs: 1000,
		Spans: []*tidestreamv1.Span{{StartKey: []byte("a")}}, Route: &tidestreamv1.Route{EncoderAddr: encoderAddr}, ProducerMember: "p1"}}
}

func setup(t *testing.T) (*encoder, *store, string, func() error) {
	t.Helper()
	return setupWith(t, nil)
}

func setupWith(t *testing.T, tweak func(*Config)) (*encoder, *store, string, func() error) {
	t.Helper()
	enc := &encoder{open: map[int64]int{}, ended: make(chan int64, 16), acks: map[int64]uint64{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	g := grpc.NewServer()
	tidestreamv1.RegisterEncoderServiceServer(g, enc)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	st := &store{epochs: map[string]uint64{}, progress: map[string]*tidestreamv1.PipelineStatus{}, updates: make(chan []Update, 16)}
	cfg := Config{
		Member: "p1",
		Watch: func(ctx context.Context, reset func(), fn func([]Update)) error {
			for {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case us := <-st.updates:
					fn(us)
				}
			}
		},
		WriteProgress: st.write,
		Sink: func(context.Context, string, string) (pipeline.Sink, func(), error) {
			return ackSink{}, nil, nil
		},
		Encoder: func(string) (tidestreamv1.EncoderServiceClient, error) {
			return tidestreamv1.NewEncoderServiceClient(cc), nil
		},
		Interval: 20 * time.Millisecond,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	r, err := New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return enc, st, lis.Addr().String(), stop
}

func (s *store) assign(a *Assignment) {
	s.mu.Lock()
	s.epochs[a.Key] = a.Fence.(uint64)
	s.mu.Unlock()
	s.updates <- []Update{{Key: a.Key, Assignment: a}}
}

// An assignment runs: its checkpoint is written and moves, and the encoder
// is told it.
func TestAssignmentRunsAndReportsProgress(t *testing.T) {
	enc, st, addr, stop := setup(t)
	a := assignment(1, 1, addr)
	st.assign(a)
	require.Eventually(t, func() bool { return st.checkpoint(a.Key) > 1010 }, 10*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool {
		enc.mu.Lock()
		defer enc.mu.Unlock()
		return enc.acks[1] > 1010
	}, 10*time.Second, 5*time.Millisecond, "the encoder is acked the checkpoint")
	require.NoError(t, stop())
	require.Eventually(t, func() bool {
		enc.mu.Lock()
		defer enc.mu.Unlock()
		return enc.open[1] == 0
	}, 10*time.Second, time.Millisecond, "stopping the runner ends the stream")
}

// The fence: once the assignment moved to a new epoch elsewhere, this
// producer's next progress write is refused and it stops the pipeline
// within a second, and its progress never lands again.
func TestFencedPipelineStopsWithinASecond(t *testing.T) {
	enc, st, addr, _ := setup(t)
	a := assignment(2, 1, addr)
	st.assign(a)
	require.Eventually(t, func() bool { return st.checkpoint(a.Key) > 1000 }, 10*time.Second, 5*time.Millisecond)

	// The owner moves the pipeline (epoch 2) to another producer: this one
	// hears nothing through its watch, only the fence.
	st.mu.Lock()
	st.epochs[a.Key] = 2
	frozen := st.progress[a.Key].GetCheckpointTs()
	st.mu.Unlock()
	fencedAt := time.Now()
	select {
	case id := <-enc.ended:
		require.EqualValues(t, 2, id)
		require.Less(t, time.Since(fencedAt), time.Second, "stopped within 1 s of the fence moving")
	case <-time.After(5 * time.Second):
		t.Fatal("the fenced pipeline still runs")
	}
	time.Sleep(100 * time.Millisecond) // several intervals: nothing may land
	require.Equal(t, frozen, st.checkpoint(a.Key))
}

// A deleted assignment stops its pipeline; a new epoch replaces it.
func TestAssignmentChangesStopAndReplacePipelines(t *testing.T) {
	enc, st, addr, _ := setup(t)
	a := assignment(3, 1, addr)
	st.assign(a)
	require.Eventually(t, func() bool { return st.checkpoint(a.Key) > 1000 }, 10*time.Second, 5*time.Millisecond)
	b := assignment(3, 2, addr)
	st.assign(b)
	require.EqualValues(t, 3, <-enc.ended, "epoch 1's stream ended")
	require.Eventually(t, func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.progress[b.Key].GetEpoch() == 2
	}, 10*time.Second, 5*time.Millisecond)
	st.updates <- []Update{{Key: b.Key}}
	require.EqualValues(t, 3, <-enc.ended, "deleted: stopped")
}

// A pipeline whose sink cannot be made yet (Kafka unreachable) reports why
// in its progress and starts once it can, at the same epoch.
func TestPipelineRetriesItsStart(t *testing.T) {
	enc, st, addr, _ := setupWith(t, func(c *Config) {
		var calls atomic.Int32
		c.Sink = func(context.Context, string, string) (pipeline.Sink, func(), error) {
			if calls.Add(1) <= 2 {
				return nil, nil, errors.New("dial 127.0.0.1:9092: connection refused")
			}
			return ackSink{}, nil, nil
		}
	})
	a := assignment(4, 1, addr)
	st.assign(a)
	require.Eventually(t, func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return strings.Contains(st.progress[a.Key].GetError().GetMessage(), "connection refused")
	}, 10*time.Second, time.Millisecond, "the start failure is the pipeline's error")
	require.Eventually(t, func() bool { return st.checkpoint(a.Key) > 1005 }, 10*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.progress[a.Key].GetError() == nil
	}, 10*time.Second, 5*time.Millisecond, "cleared once it runs")
	enc.mu.Lock()
	defer enc.mu.Unlock()
	require.Equal(t, 1, enc.open[4], "one stream, at epoch 1")
}

// failSink fails the records of one commit ts with err, acks the rest.
type failSink struct {
	ts  uint64
	err error
}

func (s failSink) Produce(_ context.Context, rec *tidestreamv1.EncodedRecord, done func(error)) error {
	if rec.GetCommitTs() == s.ts {
		done(s.err)
	} else {
		done(nil)
	}
	return nil
}

// A record Kafka failed after the client's own retries restarts the
// pipeline here, from its checkpoint and at the same epoch, the failure
// its error until it runs again; a failure no retry fixes (a record over
// the broker's limit) leaves it failed for the owner, its error kept.
func TestFailedPipelineRestartsFromItsCheckpoint(t *testing.T) {
	for _, tc := range []struct {
		name    string
		err     error
		restart bool
	}{
		{"retryable", &kafka.BrokerError{Topic: "t", Err: kerr.NotLeaderForPartition}, true},
		{"fatal", &kafka.BrokerError{Topic: "t", Err: kerr.MessageTooLarge}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sinks atomic.Int32
			enc, st, addr, _ := setupWith(t, func(c *Config) {
				c.Sink = func(context.Context, string, string) (pipeline.Sink, func(), error) {
					if sinks.Add(1) == 1 {
						return failSink{ts: 1010, err: tc.err}, nil, nil
					}
					return ackSink{}, nil, nil
				}
			})
			a := assignment(5, 1, addr)
			st.assign(a)
			var failedAt uint64
			require.Eventually(t, func() bool {
				st.mu.Lock()
				defer st.mu.Unlock()
				failedAt = st.progress[a.Key].GetCheckpointTs()
				return strings.Contains(st.progress[a.Key].GetError().GetMessage(), "commit ts 1010")
			}, 10*time.Second, time.Millisecond, "the failure is the pipeline's error")
			require.Equal(t, uint64(1009), failedAt, "the checkpoint stops below the failed record")
			if !tc.restart {
				time.Sleep(300 * time.Millisecond) // longer than the first restart backoff
				enc.mu.Lock()
				defer enc.mu.Unlock()
				require.Equal(t, []uint64{1000}, enc.froms, "not restarted")
				require.Equal(t, uint64(1009), st.checkpoint(a.Key))
				st.mu.Lock()
				defer st.mu.Unlock()
				require.True(t, st.progress[a.Key].GetFatal(), "marked for the owner to fail the changefeed")
				return
			}
			require.Eventually(t, func() bool { return st.checkpoint(a.Key) > 1020 }, 10*time.Second, 5*time.Millisecond)
			require.Eventually(t, func() bool {
				st.mu.Lock()
				defer st.mu.Unlock()
				return st.progress[a.Key].GetError() == nil
			}, 10*time.Second, 5*time.Millisecond, "cleared once it runs again")
			enc.mu.Lock()
			defer enc.mu.Unlock()
			require.Equal(t, []uint64{1000, 1009}, enc.froms, "restarted once, from the checkpoint")
			require.Equal(t, uint64(1), st.progress[a.Key].GetEpoch(), "same epoch")
			require.False(t, st.progress[a.Key].GetFatal())
		})
	}
}

// slowFailSink fails the record at ts a while after it was handed over,
// on every run: the pipeline restarts and fails again at the same place.
type slowFailSink struct {
	ts  uint64
	err error
}

func (s slowFailSink) Produce(_ context.Context, rec *tidestreamv1.EncodedRecord, done func(error)) error {
	if rec.GetCommitTs() == s.ts {
		time.AfterFunc(150*time.Millisecond, func() { done(s.err) })
	} else {
		done(nil)
	}
	return nil
}

// A pipeline that fails at the same record every time it restarts shows
// its error all along, not only between a failure and the next start (a
// restart that takes long to fail again, as a huge batch, looked healthy
// meanwhile, and so did the changefeed).
func TestPipelineFailingOnEveryRestartShowsItsError(t *testing.T) {
	enc, st, addr, _ := setupWith(t, func(c *Config) {
		c.Sink = func(context.Context, string, string) (pipeline.Sink, func(), error) {
			return slowFailSink{ts: 1010, err: &kafka.BrokerError{Topic: "t", Err: kerr.NotLeaderForPartition}}, nil, nil
		}
	})
	a := assignment(6, 1, addr)
	st.assign(a)
	require.Eventually(t, func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.progress[a.Key].GetError() != nil
	}, 10*time.Second, time.Millisecond, "the first failure shows")
	// Sample the progress through several restarts.
	deadline := time.Now().Add(10 * time.Second)
	for {
		enc.mu.Lock()
		restarts := len(enc.froms) - 1
		enc.mu.Unlock()
		if restarts >= 3 {
			break
		}
		require.True(t, time.Now().Before(deadline), "3 restarts within 10s")
		st.mu.Lock()
		p := st.progress[a.Key]
		st.mu.Unlock()
		require.NotNil(t, p.GetError(), "no progress write without the error while it keeps failing (after %d restarts)", restarts)
		require.Contains(t, p.GetError().GetMessage(), "NOT_LEADER")
		require.Equal(t, uint64(1009), p.GetCheckpointTs())
		time.Sleep(5 * time.Millisecond) // sampling pace; the check is on every sample
	}
}
