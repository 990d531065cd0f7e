package runner

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tidestream/tidestream/producer/internal/faultnet"
	"github.com/tidestream/tidestream/producer/kafka"
	"github.com/tidestream/tidestream/producer/pipeline"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// The faults run against one pipeline of 64 keys into 6 partitions on 3
// brokers. Record i has commit ts base+i and key i%64, so a key's versions
// are its records in ts order.
const (
	faultTopic = "tidb_db_orders"
	faultKeys  = 64
	faultBase  = 1000
	// outage is how long every broker is unreachable: longer than the
	// client's own retries (max-retry 5) cover, so records fail and the
	// pipeline must restart from its checkpoint.
	outage = 20 * time.Second
)

// genEncoder streams records base+from+1 … base+limit, a batch of up to 50
// per send, each batch resolved at its last record, the limit raised by
// the test; a subscription from an earlier ts sends again what follows it.
type genEncoder struct {
	tidestreamv1.UnimplementedEncoderServiceServer
	limit      atomic.Int64
	subscribes atomic.Int32
}

func (e *genEncoder) Subscribe(req *tidestreamv1.SubscribeRequest, st grpc.ServerStreamingServer[tidestreamv1.EncodedBatch]) error {
	e.subscribes.Add(1)
	next := int64(req.GetFromTs()) - faultBase + 1
	for {
		limit := e.limit.Load()
		if next > limit {
			select {
			case <-st.Context().Done():
				return nil
			case <-time.After(2 * time.Millisecond):
			}
			continue
		}
		b := &tidestreamv1.EncodedBatch{}
		for ; next <= limit && len(b.Records) < 50; next++ {
			k := next % faultKeys
			b.Records = append(b.Records, &tidestreamv1.EncodedRecord{
				Topic: faultTopic, Key: fmt.Appendf(nil, "key-%02d", k), Value: strconv.AppendInt(nil, faultBase+next, 10),
				PartitionHash: uint64(k) * 0x9e3779b97f4a7c15, CommitTs: uint64(faultBase + next),
			})
		}
		b.ResolvedTs = uint64(faultBase + next - 1)
		if err := st.Send(b); err != nil {
			return nil
		}
	}
}

func (e *genEncoder) Ack(context.Context, *tidestreamv1.PipelineProgress) (*tidestreamv1.AckResponse, error) {
	return &tidestreamv1.AckResponse{}, nil
}

// brokerLog reads what the brokers hold, over connections an outage
// spares (they come from 127.0.0.2), so it can judge every checkpoint
// write while the producer is cut off.
type brokerLog struct {
	cl  *kgo.Client
	adm *kadm.Client

	mu         sync.Mutex
	seen       map[int64]int // commit ts → copies read
	contiguous int64         // every ts in (base, contiguous] is held
	records    []*kgo.Record
}

func newBrokerLog(t *testing.T, brokers []string) *brokerLog {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.Dialer(d.DialContext),
		kgo.ConsumeTopics(faultTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(50*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return &brokerLog{cl: cl, adm: kadm.NewClient(cl), seen: map[int64]int{}, contiguous: faultBase}
}

// sync reads up to the partitions' end offsets as of now: afterwards,
// every record Kafka acknowledged before the call has been seen.
func (l *brokerLog) sync(ctx context.Context) (int64, error) {
	ends, err := l.adm.ListEndOffsets(ctx, faultTopic)
	if err != nil {
		return 0, err
	}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) { want[o.Partition] = o.Offset })
	l.mu.Lock()
	defer l.mu.Unlock()
	read := map[int32]int64{}
	for _, r := range l.records {
		read[r.Partition] = max(read[r.Partition], r.Offset+1)
	}
	for {
		behind := false
		for p, o := range want {
			if read[p] < o {
				behind = true
			}
		}
		if !behind {
			return l.contiguous, nil
		}
		fs := l.cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		fs.EachRecord(func(r *kgo.Record) {
			l.records = append(l.records, r)
			read[r.Partition] = max(read[r.Partition], r.Offset+1)
			ts, _ := strconv.ParseInt(string(r.Value), 10, 64)
			l.seen[ts]++
		})
		for l.seen[l.contiguous+1] > 0 {
			l.contiguous++
		}
	}
}

// TestFaultsNeverLoseARecordNorPassTheCheckpoint drives a real runner, a
// real Kafka producer and kfake through produce errors before the write
// (NOT_LEADER_FOR_PARTITION, REQUEST_TIMED_OUT), a timeout after the
// write, responses lost after the write, and a 20 s outage of every
// broker. Each checkpoint the runner writes is checked, when it is
// written, against what the brokers hold; at the end every record is in
// Kafka, each key's versions in commit order in one partition (copies a
// restart sends again come after the first, never before).
func TestFaultsNeverLoseARecordNorPassTheCheckpoint(t *testing.T) {
	if testing.Short() {
		t.Skip("a 20 s outage")
	}
	// TiCDC's max-retry: the client rides the outage out, holding
	// every record, and the pipeline shows the stall meanwhile.
	t.Run("client retries through", func(t *testing.T) { runFaults(t, kafka.DefaultMaxRetry, outage, false) })
	// max-retry 0: the outage fails records, so the runner restarts the
	// pipeline from its checkpoint, producing again what followed it.
	t.Run("pipeline restarts", func(t *testing.T) { runFaults(t, 0, 5*time.Second, true) })
}

func runFaults(t *testing.T, maxRetry int32, outage time.Duration, restart bool) {
	fn := &faultnet.Net{Spared: func(a net.Addr) bool {
		ta, ok := a.(*net.TCPAddr)
		return ok && ta.IP.Equal(net.IPv4(127, 0, 0, 2))
	}}
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.ListenFn(fn.Listen))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	require.NoError(t, c.CreateTopic(faultTopic, 6, nil))
	brokers := c.ListenAddrs()
	blog := newBrokerLog(t, brokers)

	enc := &genEncoder{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	g := grpc.NewServer()
	tidestreamv1.RegisterEncoderServiceServer(g, enc)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })

	// The store checks each write against the brokers before taking it.
	var (
		mu         sync.Mutex
		written    uint64
		checks     int
		duringDown int
		down       atomic.Bool
		errWrites  int
		errSeen    []string // the first
		lastErr    string
	)
	write := func(ctx context.Context, ps []Progress) ([]Progress, error) {
		for _, p := range ps {
			cp := p.Status.GetCheckpointTs()
			held, err := blog.sync(ctx)
			if err != nil {
				return nil, err
			}
			mu.Lock()
			checks++
			if down.Load() {
				duringDown++
			}
			if int64(cp) > held {
				t.Errorf("checkpoint %d written while Kafka holds every record only up to %d", cp, held)
			}
			written = max(written, cp)
			lastErr = p.Status.GetError().GetMessage()
			if lastErr != "" {
				errWrites++
				if len(errSeen) < 1 {
					errSeen = append(errSeen, lastErr)
				}
			}
			mu.Unlock()
		}
		return nil, nil
	}
	checkpoint := func() uint64 {
		mu.Lock()
		defer mu.Unlock()
		return written
	}

	s := &tidestreamv1.KafkaSink{
		Brokers: brokers, Topic: faultTopic, ReplicationFactor: 1, MaxMessageBytes: kafka.DefaultMaxMessageBytes,
		MaxRetry: maxRetry, Compression: "none", RequiredAcks: -1,
		DialTimeout: durationpb.New(time.Second), ReadTimeout: durationpb.New(10 * time.Second), WriteTimeout: durationpb.New(10 * time.Second),
		Tls: &tidestreamv1.TLSConfig{}, Sasl: &tidestreamv1.SASLConfig{},
	}
	var sinks atomic.Int32
	r, err := New(Config{
		Member: "p1",
		Watch: func(ctx context.Context, reset func(), fn func([]Update)) error {
			reset()
			fn([]Update{{Key: "a", Assignment: &Assignment{Key: "a", Fence: uint64(1), Record: &tidestreamv1.PipelineAssignment{
				Namespace: "default", ChangefeedId: "cf", PipelineId: 1, Epoch: 1, StartTs: faultBase,
				Spans: []*tidestreamv1.Span{{StartKey: []byte("a")}}, ProducerMember: "p1"}}}})
			<-ctx.Done()
			return ctx.Err()
		},
		WriteProgress: write,
		Sink: func(ctx context.Context, _, _ string) (pipeline.Sink, func(), error) {
			sinks.Add(1)
			cfg, err := kafka.FromSink(s)
			if err != nil {
				return nil, nil, err
			}
			p, err := kafka.New(cfg)
			if err != nil {
				return nil, nil, err
			}
			if err := p.CheckDefaultTopic(ctx); err != nil {
				p.Close()
				return nil, nil, err
			}
			return p, p.Close, nil
		},
		Encoder: func(string) (tidestreamv1.EncoderServiceClient, error) {
			return tidestreamv1.NewEncoderServiceClient(cc), nil
		},
		Interval: 50 * time.Millisecond,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()

	// Records arrive at about 4,000/s for as long as the faults run.
	stopGen := make(chan struct{})
	var genWG sync.WaitGroup
	genWG.Go(func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopGen:
				return
			case <-tick.C:
				enc.limit.Add(40)
			}
		}
	})
	defer func() {
		select {
		case <-stopGen:
		default:
			close(stopGen)
		}
		genWG.Wait()
	}()
	advance := func(what string, by uint64) {
		t.Helper()
		target := checkpoint() + by
		require.Eventually(t, func() bool { return checkpoint() >= target }, 90*time.Second, 10*time.Millisecond,
			"%s: checkpoint stuck at %d, want %d", what, checkpoint(), target)
	}

	advance("start", 2000)
	notLeader := faultnet.FailProduce(c, kerr.NotLeaderForPartition, 3)
	timedOut := faultnet.FailProduce(c, kerr.RequestTimedOut, 3)
	advance("NOT_LEADER / REQUEST_TIMED_OUT before the write", 2000)
	require.Equal(t, int32(3), notLeader.Load())
	require.Equal(t, int32(3), timedOut.Load())

	h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.RequestTimedOut, Count: 3})
	advance("REQUEST_TIMED_OUT after the write", 2000)
	require.EqualValues(t, 3, h.Hits())

	fn.DropProduceResponses(2)
	advance("responses lost after the write", 2000)
	require.Equal(t, 2, fn.Dropped())

	down.Store(true)
	fn.Down()
	downAt := checkpoint()
	// The fault itself: every broker gone for 20 s. Past the first second
	// (acks already on their way) nothing can be acknowledged.
	time.Sleep(time.Second)
	frozen := checkpoint()
	time.Sleep(outage - time.Second)
	require.Equal(t, frozen, checkpoint(), "the outage cut the producer off")
	fn.Up()
	down.Store(false)
	advance("after the outage", 4000)

	close(stopGen)
	genWG.Wait()
	last := uint64(faultBase + enc.limit.Load())
	require.Eventually(t, func() bool { return checkpoint() >= last }, 90*time.Second, 10*time.Millisecond, "checkpoint reaches the last record")

	// Every record is in Kafka; each key's versions, first copies, in
	// commit order within one partition.
	held, err := blog.sync(ctx)
	require.NoError(t, err)
	require.GreaterOrEqual(t, held, int64(last), "every record held")
	blog.mu.Lock()
	defer blog.mu.Unlock()
	first := map[int64]bool{}
	lastTs := map[string]int64{}
	part := map[string]int32{}
	dups := 0
	for _, rec := range partitionOrder(blog.records) {
		ts, err := strconv.ParseInt(string(rec.Value), 10, 64)
		require.NoError(t, err)
		k := string(rec.Key)
		if p, ok := part[k]; ok {
			require.Equal(t, p, rec.Partition, "key %s moved partition", k)
		}
		part[k] = rec.Partition
		if first[ts] {
			dups++
			continue
		}
		first[ts] = true
		require.Greater(t, ts, lastTs[k], "key %s: version at ts %d first arrives after the one at ts %d", k, ts, lastTs[k])
		lastTs[k] = ts
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d records, %d copies sent again; %d checkpoint writes checked against the brokers (%d during the outage, from checkpoint %d); "+
		"%d subscriptions, %d Kafka clients; %d writes with an error, the first: %q",
		last-faultBase, dups, checks, duringDown, downAt, enc.subscribes.Load(), sinks.Load(), errWrites, errSeen)
	if restart {
		require.Greater(t, enc.subscribes.Load(), int32(1), "the pipeline restarted")
	} else {
		require.Equal(t, int32(1), enc.subscribes.Load(), "the client rode the outage out")
		require.Zero(t, dups)
	}
	require.NotEmpty(t, errSeen, "the outage shows as the pipeline's error")
	require.Empty(t, lastErr, "and clears once it recovers")
	require.Positive(t, duringDown, "writes were checked while the brokers were down")
}

// partitionOrder returns the records per partition in offset order.
func partitionOrder(rs []*kgo.Record) []*kgo.Record {
	by := map[int32][]*kgo.Record{}
	for _, r := range rs {
		by[r.Partition] = append(by[r.Partition], r)
	}
	var out []*kgo.Record
	for p := range int32(6) {
		out = append(out, by[p]...)
	}
	return out
}
