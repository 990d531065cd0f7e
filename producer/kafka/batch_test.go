package kafka

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// requestLog counts the requests of some keys the cluster handles, and the
// topics of each, without answering them.
type requestLog struct {
	mu     sync.Mutex
	topics map[kmsg.Key][]int // per request
}

func logRequests(c *kfake.Cluster, keys ...kmsg.Key) *requestLog {
	l := &requestLog{topics: map[kmsg.Key][]int{}}
	for _, k := range keys {
		c.ControlKey(int16(k), func(kr kmsg.Request) (kmsg.Response, error, bool) {
			n := 0
			switch r := kr.(type) {
			case *kmsg.MetadataRequest:
				n = len(r.Topics)
			case *kmsg.CreateTopicsRequest:
				n = len(r.Topics)
			case *kmsg.DescribeConfigsRequest:
				n = len(r.Resources)
			}
			l.mu.Lock()
			l.topics[k] = append(l.topics[k], n)
			l.mu.Unlock()
			return nil, nil, false
		})
	}
	return l
}

// count returns how many requests of key were seen and the most topics
// one of them carried.
func (l *requestLog) count(k kmsg.Key) (n, most int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, t := range l.topics[k] {
		most = max(most, t)
	}
	return len(l.topics[k]), most
}

// holdFirstMetadata holds the first metadata request for topics named
// tidb_… (not kgo's own) until every one of n calls is either in it or
// queued behind it in p.meta.
func holdFirstMetadata(c *kfake.Cluster, p *Producer, n int) {
	var held atomic.Bool
	c.ControlKey(int16(kmsg.Metadata), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		req := kr.(*kmsg.MetadataRequest)
		if len(req.Topics) == 0 || req.Topics[0].Topic == nil || !strings.HasPrefix(*req.Topics[0].Topic, "tidb_") || held.Swap(true) {
			return nil, nil, false
		}
		c.DropControl()
		in := len(req.Topics)
		c.SleepControl(func() {
			for deadline := time.Now().Add(10 * time.Second); queued(p.meta)+in < n && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
		})
		return nil, nil, false
	})
}

// queued is how many topics wait in b's queue.
func queued[R any](b *batcher[R]) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue)
}

// ensureAll calls EnsureTopic for every topic concurrently and returns
// each call's answer.
func ensureAll(ctx context.Context, p *Producer, topics []string) ([]int32, []error) {
	ns := make([]int32, len(topics))
	errs := make([]error, len(topics))
	var wg sync.WaitGroup
	for i, topic := range topics {
		wg.Go(func() { ns[i], errs[i] = p.EnsureTopic(ctx, topic) })
	}
	wg.Wait()
	return ns, errs
}

// TestEnsureTopicsCoalesced: 500 concurrent EnsureTopic calls for new
// topics all get their topic with partition-num partitions, from a
// handful of metadata and CreateTopics requests.
func TestEnsureTopicsCoalesced(t *testing.T) {
	const n = 500
	c := newCluster(t, kfake.NumBrokers(1))
	s := sink(c.ListenAddrs(), "ticdc-meta")
	s.PartitionNum = 5
	p := newProducer(t, s)
	log := logRequests(c, kmsg.Metadata, kmsg.CreateTopics)
	topics := make([]string, n)
	for i := range topics {
		topics[i] = fmt.Sprintf("tidb_db_t%03d", i)
	}

	start := time.Now()
	ns, errs := ensureAll(ctxT(t), p, topics)
	took := time.Since(start)
	for i, topic := range topics {
		require.NoError(t, errs[i], topic)
		require.Equal(t, int32(5), ns[i], topic)
		require.Len(t, c.PartitionInfos(topic), 5, topic)
	}
	metas, mostMeta := log.count(kmsg.Metadata)
	creates, mostCreate := log.count(kmsg.CreateTopics)
	t.Logf("%d topics in %v (%.0f topics/s): %d metadata requests (up to %d topics), %d CreateTopics requests (up to %d topics)",
		n, took.Round(time.Millisecond), n/took.Seconds(), metas, mostMeta, creates, mostCreate)
	require.LessOrEqual(t, creates, n/10)
	require.LessOrEqual(t, metas, n/10) // kgo's own metadata requests included
	require.LessOrEqual(t, max(mostMeta, mostCreate), batchTopics)

	// Existing topics: metadata only, still shared.
	before, _ := log.count(kmsg.Metadata)
	ns, errs = ensureAll(ctxT(t), p, topics)
	for i := range topics {
		require.NoError(t, errs[i])
		require.Equal(t, int32(5), ns[i])
	}
	after, _ := log.count(kmsg.Metadata)
	require.LessOrEqual(t, after-before, n/10)
	again, _ := log.count(kmsg.CreateTopics)
	require.Equal(t, creates, again, "nothing created twice")
}

// TestEnsureTopicsRefusedTopicFailsAlone: topics the broker refuses in a
// shared CreateTopics request (a policy, an invalid name) fail their own
// callers with the broker's code; the others are created.
func TestEnsureTopicsRefusedTopicFailsAlone(t *testing.T) {
	const n = 50
	c := newCluster(t, kfake.NumBrokers(1))
	p := newProducer(t, sink(c.ListenAddrs(), "ticdc-meta"))
	// Kafka refuses a name that collides with an existing one in . vs _.
	const invalid = "tidb_db_clash"
	require.NoError(t, c.CreateTopic("tidb.db.clash", 1, nil))
	// A policy refuses one topic of the first CreateTopics request that
	// carries many.
	refused := make(chan string, 1)
	c.ControlKey(int16(kmsg.CreateTopics), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		req := kr.(*kmsg.CreateTopicsRequest)
		if len(req.Topics) < 10 {
			c.KeepControl()
			return nil, nil, false
		}
		c.DropControl()
		topic := req.Topics[len(req.Topics)/2].Topic
		if topic == invalid {
			topic = req.Topics[0].Topic
		}
		c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.CreateTopics}, Topic: topic, Err: kerr.PolicyViolation})
		refused <- topic
		return nil, nil, false
	})
	topics := []string{invalid}
	for i := range n - 1 {
		topics = append(topics, fmt.Sprintf("tidb_db_t%02d", i))
	}
	// Everyone queues behind the first metadata request, so that most
	// CreateTopics in one request.
	holdFirstMetadata(c, p, n)
	log := logRequests(c, kmsg.CreateTopics)

	ns, errs := ensureAll(ctxT(t), p, topics)

	victim := <-refused
	for i, topic := range topics {
		switch topic {
		case victim:
			require.ErrorIs(t, errs[i], kerr.PolicyViolation)
			require.ErrorContains(t, errs[i], fmt.Sprintf("kafka: creating topic %q with 3 partitions and replication factor 1: ", victim))
			require.Equal(t, Fatal, Classify(errs[i]))
			require.Nil(t, c.TopicInfo(victim))
		case invalid:
			require.ErrorIs(t, errs[i], kerr.InvalidTopicException)
			require.ErrorContains(t, errs[i], fmt.Sprintf("creating topic %q", invalid))
		default:
			require.NoError(t, errs[i], topic)
			require.Equal(t, int32(DefaultPartitionNum), ns[i])
		}
	}
	creates, _ := log.count(kmsg.CreateTopics)
	require.LessOrEqual(t, creates, n/10)
}

// TestEnsureTopicsCancelledCaller: a caller whose context ends while its
// topic's CreateTopics request is in flight returns at once; the request
// goes on for the other callers in it.
func TestEnsureTopicsCancelledCaller(t *testing.T) {
	const n = 20
	c := newCluster(t, kfake.NumBrokers(1))
	p := newProducer(t, sink(c.ListenAddrs(), "ticdc-meta"))
	holdFirstMetadata(c, p, n)
	inFlight := make(chan []string, 1)
	release := make(chan struct{})
	c.ControlKey(int16(kmsg.CreateTopics), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		req := kr.(*kmsg.CreateTopicsRequest)
		if len(req.Topics) < 2 {
			c.KeepControl()
			return nil, nil, false
		}
		c.DropControl()
		var topics []string
		for _, rt := range req.Topics {
			topics = append(topics, rt.Topic)
		}
		inFlight <- topics
		c.SleepControl(func() { <-release })
		return nil, nil, false
	})

	ctx := ctxT(t)
	cancels := map[string]context.CancelFunc{}
	type answer struct {
		topic string
		n     int32
		err   error
	}
	answers := make(chan answer, n)
	var wg sync.WaitGroup
	for i := range n {
		topic := fmt.Sprintf("tidb_db_t%02d", i)
		cctx, cancel := context.WithCancel(ctx)
		cancels[topic] = cancel
		wg.Go(func() {
			n, err := p.EnsureTopic(cctx, topic)
			answers <- answer{topic, n, err}
		})
	}
	defer func() {
		for _, cancel := range cancels {
			cancel()
		}
	}()

	shared := <-inFlight
	victim := shared[0]
	cancels[victim]()
	var got []answer
	timeout := time.After(10 * time.Second)
	for victimDone := false; !victimDone; {
		select {
		case a := <-answers:
			if a.topic == victim {
				require.ErrorIs(t, a.err, context.Canceled)
				victimDone = true
			} else {
				require.NotContains(t, shared, a.topic, "answered while its request is held")
				got = append(got, a)
			}
		case <-timeout:
			t.Fatal("the cancelled caller still waits for the shared request")
		}
	}
	close(release)
	wg.Wait()
	close(answers)
	for a := range answers {
		got = append(got, a)
	}
	require.Len(t, got, n-1)
	for _, a := range got {
		require.NoError(t, a.err, a.topic)
		require.Equal(t, int32(DefaultPartitionNum), a.n)
	}
	require.NotNil(t, c.TopicInfo(victim), "the shared request completed")
	t.Logf("cancelled %s of %d topics in its CreateTopics request", victim, len(shared))
}

// TestBatcher: requests carry at most max topics, one in flight; every
// caller gets its own topic's answer, callers of one topic share it, and a
// caller that leaves neither fails nor blocks the others, and its topic is
// not requested.
func TestBatcher(t *testing.T) {
	base, stop := context.WithCancel(context.Background())
	defer stop()
	var inFlight atomic.Int32
	var mu sync.Mutex
	var sizes []int
	requested := map[string]bool{}
	gate := make(chan struct{})
	b := newBatcher(base, 0, func(ctx context.Context, topics []string) map[string]string {
		if inFlight.Add(1) > 1 {
			t.Error("two requests in flight")
		}
		defer inFlight.Add(-1)
		mu.Lock()
		sizes = append(sizes, len(topics))
		for _, topic := range topics {
			requested[topic] = true
		}
		mu.Unlock()
		<-gate
		out := map[string]string{}
		for _, topic := range topics {
			out[topic] = "answer " + topic
		}
		return out
	})
	b.max = 100
	waiters := func() int {
		b.mu.Lock()
		defer b.mu.Unlock()
		n := 0
		for _, ws := range b.queue {
			n += len(ws)
		}
		return n
	}

	const n = 1000
	ctx := ctxT(t)
	leave, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	errs := make(chan error, 2*n+1)
	call := func(ctx context.Context, topic string, wantCancel bool) {
		got, err := b.get(ctx, topic)
		switch {
		case wantCancel:
			if !errors.Is(err, context.Canceled) {
				errs <- fmt.Errorf("%s: %v, want canceled", topic, err)
			}
		case err != nil || got != "answer "+topic:
			errs <- fmt.Errorf("%s: %q, %v", topic, got, err)
		}
	}
	// The first request holds the runner; everything after queues.
	wg.Go(func() { call(ctx, "first", false) })
	require.Eventually(t, func() bool { return inFlight.Load() == 1 }, 10*time.Second, time.Millisecond)
	for i := range n {
		topic := fmt.Sprintf("t%d", i)
		for range 2 { // two callers per topic
			if i == n-1 {
				wg.Go(func() { call(leave, topic, true) })
			} else {
				wg.Go(func() { call(ctx, topic, false) })
			}
		}
	}
	require.Eventually(t, func() bool { return waiters() == 2*n }, 10*time.Second, time.Millisecond)
	require.Equal(t, n, queued(b))
	cancel()
	require.Eventually(t, func() bool { return queued(b) == n-1 }, 10*time.Second, time.Millisecond)
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	require.Equal(t, []int{1, 100, 100, 100, 100, 100, 100, 100, 100, 100, 99}, sizes)
	require.False(t, requested[fmt.Sprintf("t%d", n-1)], "the topic whose callers left")

	b.close()
	_, err := b.get(ctx, "late")
	require.ErrorIs(t, err, ErrClosed)
}

// TestDescribeTopicConfigsAuthFailsAlone: kadm fails a whole
// DescribeConfigs request for one topic's authorization error; the other
// topics of the request still get their configs.
func TestDescribeTopicConfigsAuthFailsAlone(t *testing.T) {
	c := newCluster(t, kfake.NumBrokers(1))
	p := newProducer(t, sink(c.ListenAddrs(), "ticdc-meta"))
	topics := []string{"tidb_db_a", "tidb_db_secret", "tidb_db_b"}
	for _, topic := range topics {
		require.NoError(t, c.CreateTopic(topic, 1, map[string]string{"max.message.bytes": "4096"}))
	}
	h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.DescribeConfigs}, Resource: "tidb_db_secret", Err: kerr.TopicAuthorizationFailed, Count: -1})
	defer h.Remove()

	rs := p.describeTopicConfigs(ctxT(t), topics)
	require.ErrorIs(t, rs["tidb_db_secret"].err, kerr.TopicAuthorizationFailed)
	for _, topic := range []string{"tidb_db_a", "tidb_db_b"} {
		require.NoError(t, rs[topic].err, topic)
		v, err := p.topicConfig(ctxT(t), topic, "max.message.bytes")
		require.NoError(t, err)
		require.Equal(t, "4096", v)
	}
}

// TestEnsureTopicsWaitUntilVisible: created topics that metadata does not
// show yet (LEADER_NOT_AVAILABLE without partitions) are polled together,
// one metadata request per tick for all of them.
func TestEnsureTopicsWaitUntilVisible(t *testing.T) {
	const n, hide = 100, 3
	c := newCluster(t, kfake.NumBrokers(1))
	p := newProducer(t, sink(c.ListenAddrs(), "ticdc-meta"))
	holdFirstMetadata(c, p, n)
	var mu sync.Mutex
	created := map[string]bool{}
	c.ControlKey(int16(kmsg.CreateTopics), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		mu.Lock()
		defer mu.Unlock()
		for _, rt := range kr.(*kmsg.CreateTopicsRequest).Topics {
			created[rt.Topic] = true
		}
		return nil, nil, false
	})
	var hidden, polls atomic.Int32
	c.ControlKey(int16(kmsg.Metadata), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kr.(*kmsg.MetadataRequest)
		mu.Lock()
		all := len(created) > 0 && len(req.Topics) > 0
		for _, rt := range req.Topics {
			all = all && rt.Topic != nil && created[*rt.Topic]
		}
		mu.Unlock()
		if !all {
			return nil, nil, false
		}
		polls.Add(1)
		if hidden.Add(1) > hide {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.MetadataResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewMetadataResponseTopic()
			st.Topic = rt.Topic
			st.ErrorCode = kerr.LeaderNotAvailable.Code
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	topics := make([]string, n)
	for i := range topics {
		topics[i] = fmt.Sprintf("tidb_db_t%03d", i)
	}

	start := time.Now()
	ns, errs := ensureAll(ctxT(t), p, topics)
	for i, topic := range topics {
		require.NoError(t, errs[i], topic)
		require.Equal(t, int32(DefaultPartitionNum), ns[i])
	}
	require.GreaterOrEqual(t, time.Since(start), hide*visiblePoll-visiblePoll/2, "polled every visiblePoll")
	require.LessOrEqual(t, int(polls.Load()), 2*(hide+1), "one request per tick for all waiting topics")
	t.Logf("%d topics visible after %d polls in %v", n, polls.Load(), time.Since(start).Round(time.Millisecond))
}
