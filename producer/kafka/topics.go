package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// topicState is what the producer knows about one topic. partitions is
// fixed for the state's lifetime: a changed count gets a new state, after
// the old one has drained (see load).
type topicState struct {
	name       string
	id         [16]byte // topic id (Kafka 2.8+), zero when the broker has none
	partitions int32
	// recordLimit is the largest len(key)+len(value)+RecordOverhead
	// accepted; batchMax the kgo batch cap for the topic.
	recordLimit atomic.Int64
	batchMax    int32

	// stale makes the next Produce to the topic read its metadata again.
	// A failed record's promise sets it (the topic may have been deleted,
	// recreated or repartitioned), and so does refreshTimer every
	// MetadataRefresh — a timer rather than a clock read per record.
	stale        atomic.Bool
	refreshTimer *time.Timer // guarded by the topic's load lock (Producer.loading)
	// inflight counts records handed to kgo and not yet acked or failed.
	inflight atomic.Int64

	// gate is read-held by Produce around handing a record to kgo and
	// write-held once by load to retire the state; after that no record
	// is produced with the old partition count.
	gate    sync.RWMutex
	retired atomic.Bool
}

// metadataWait bounds how long EnsureTopic waits for a created topic to
// show up in metadata (TiCDC: CreateTopicAndWaitUntilVisible).
const metadataWait = 10 * time.Second

// visiblePoll is how often created topics not yet in metadata are polled.
const visiblePoll = 50 * time.Millisecond

// topicMeta is what one metadata request says about one topic. found is
// false when the broker says the topic does not exist (or, just created,
// not yet); replicas is partition 0's replica count; id is zero when the
// broker has none (before Kafka 2.8).
type topicMeta struct {
	partitions int32
	replicas   int
	id         [16]byte
	found      bool
	err        error
}

// partitionCount reads the topic's partition count with a fresh metadata
// request (kadm's helpers answer from kgo's metadata cache, which may
// still say "unknown" just after a create), shared with concurrent calls
// for other topics.
func (p *Producer) partitionCount(ctx context.Context, topic string) (n int32, replicas int, found bool, err error) {
	m, err := p.describeTopic(ctx, topic)
	return m.partitions, m.replicas, m.found, err
}

// describeTopic is partitionCount plus the topic id.
func (p *Producer) describeTopic(ctx context.Context, topic string) (topicMeta, error) {
	m, err := p.meta.get(ctx, topic)
	if err != nil {
		return topicMeta{}, fmt.Errorf("kafka: reading metadata of topic %q: %w", topic, err)
	}
	return m, m.err
}

// describeTopics reads the metadata of topics with one request; a topic
// missing from the answer is not found.
func (p *Producer) describeTopics(ctx context.Context, topics []string) map[string]topicMeta {
	req := kmsg.NewPtrMetadataRequest()
	for _, topic := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(topic)
		req.Topics = append(req.Topics, rt)
	}
	// The request's default is true from v4 on: a broker with
	// auto.create.topics.enable would create the topic with its own
	// defaults, bypassing auto-create-topic and partition-num.
	req.AllowAutoTopicCreation = false
	out := make(map[string]topicMeta, len(topics))
	resp, err := req.RequestWith(ctx, p.cl)
	if err != nil {
		for _, topic := range topics {
			out[topic] = topicMeta{err: fmt.Errorf("kafka: reading metadata of topic %q: %w", topic, err)}
		}
		return out
	}
	for _, t := range resp.Topics {
		if t.Topic != nil {
			out[*t.Topic] = topicMetaOf(&t)
		}
	}
	return out
}

func topicMetaOf(t *kmsg.MetadataResponseTopic) topicMeta {
	switch err := kerr.ErrorForCode(t.ErrorCode); {
	case err == nil:
	case errors.Is(err, kerr.UnknownTopicOrPartition):
		return topicMeta{}
	case errors.Is(err, kerr.LeaderNotAvailable) && len(t.Partitions) == 0:
		// Just created, not yet visible.
		return topicMeta{}
	case errors.Is(err, kerr.LeaderNotAvailable):
	default:
		return topicMeta{err: fmt.Errorf("kafka: reading metadata of topic %q: %w", *t.Topic, err)}
	}
	m := topicMeta{partitions: int32(len(t.Partitions)), id: t.TopicID, found: len(t.Partitions) > 0}
	for _, pt := range t.Partitions {
		if pt.Partition == 0 {
			m.replicas = len(pt.Replicas)
		}
	}
	return m
}

// createTopics creates topics with one request, each with partition-num
// partitions and replication-factor; each topic's answer is nil or the
// broker's error with its message.
func (p *Producer) createTopics(ctx context.Context, topics []string) map[string]error {
	out := make(map[string]error, len(topics))
	rs, err := p.adm.CreateTopics(ctx, p.partitionNum(), p.cfg.ReplicationFactor, nil, topics...)
	for _, topic := range topics {
		r, ok := rs[topic]
		switch {
		case err != nil:
			out[topic] = err
		case !ok:
			out[topic] = errors.New("requested topic was not part of create topic response")
		case r.Err != nil && r.ErrMessage != "":
			out[topic] = fmt.Errorf("%w: %s", r.Err, r.ErrMessage)
		default:
			out[topic] = r.Err
		}
	}
	return out
}

// topicConfigs is one topic's answer to DescribeConfigs.
type topicConfigs struct {
	rc  kadm.ResourceConfig
	err error
}

// describeTopicConfigs reads the configs of topics with one request. kadm
// turns one topic's authorization failure into the whole request's error;
// then each topic is asked alone, so that it fails only that topic.
func (p *Producer) describeTopicConfigs(ctx context.Context, topics []string) map[string]topicConfigs {
	out := make(map[string]topicConfigs, len(topics))
	rcs, err := p.adm.DescribeTopicConfigs(ctx, topics...)
	if _, auth := errors.AsType[*kadm.AuthError](err); auth && len(topics) > 1 {
		for _, topic := range topics {
			out[topic] = p.describeTopicConfigs(ctx, []string{topic})[topic]
		}
		return out
	}
	for _, topic := range topics {
		rc, rerr := rcs.On(topic, nil)
		switch {
		case rerr != nil && err != nil:
			rerr = err // not answered: its shard failed
		case rerr == nil:
			rerr = rc.Err
		}
		out[topic] = topicConfigs{rc: rc, err: rerr}
	}
	return out
}

func (p *Producer) partitionNum() int32 {
	if p.cfg.PartitionNum == 0 {
		return DefaultPartitionNum
	}
	return p.cfg.PartitionNum
}

// EnsureTopic returns the topic's partition count, creating the topic when
// it does not exist and auto-create-topic is true — with partition-num
// partitions (DefaultPartitionNum when unset) and replication-factor, as
// TiCDC creates per-table topics on their first row. With
// auto-create-topic false a missing topic is a *TopicNotFoundError naming
// it. Errors from the broker keep its code and message. Concurrent calls
// share their metadata and CreateTopics requests (see batcher); each gets
// its own answer, and a caller whose ctx ends leaves the others' requests
// running.
func (p *Producer) EnsureTopic(ctx context.Context, topic string) (int32, error) {
	m, err := p.ensureTopic(ctx, topic)
	return m.partitions, err
}

// ensureTopic is EnsureTopic returning the topic's metadata.
func (p *Producer) ensureTopic(ctx context.Context, topic string) (topicMeta, error) {
	m, err := p.describeTopic(ctx, topic)
	if err != nil {
		return topicMeta{}, err
	}
	if m.found {
		return m, nil
	}
	if !p.cfg.AutoCreateTopic {
		return topicMeta{}, &TopicNotFoundError{Topic: topic}
	}
	parts := p.partitionNum()
	cerr, err := p.create.get(ctx, topic)
	if err == nil {
		err = cerr
	}
	switch {
	case err == nil:
		p.log.Info("created topic", "topic", topic, "partitions", parts, "replication_factor", p.cfg.ReplicationFactor)
	case errors.Is(err, kerr.TopicAlreadyExists):
		// Another producer of the changefeed created it first.
	default:
		return topicMeta{}, fmt.Errorf("kafka: creating topic %q with %d partitions and replication factor %d: %w", topic, parts, p.cfg.ReplicationFactor, err)
	}
	// Wait until visible: every waiting topic is polled with one metadata
	// request per tick (p.visible paces them).
	wait, cancel := context.WithTimeout(ctx, metadataWait)
	defer cancel()
	var last error
	for {
		m, err := p.visible.get(wait, topic)
		if err != nil {
			if last == nil {
				last = err
			}
			return topicMeta{}, fmt.Errorf("kafka: topic %q created but not visible in metadata: %w", topic, last)
		}
		if m.err == nil && m.found {
			return m, nil
		}
		last = m.err
	}
}

// CheckDefaultTopic validates the sink URI's default topic the way TiCDC
// does when its sink starts (spec §6.1, §6.2, §6.4); call it before
// producing so that configuration errors (authentication, ACLs, a missing
// topic) fail the changefeed at once instead of as failed records:
//
//   - the topic exists: partition-num must not exceed its partition count
//     (smaller is allowed with a warning: TiCDC would use only the first
//     partition-num partitions; Avro writes nothing to this topic);
//   - it does not exist: created with partition-num (default 3) and
//     replication-factor if auto-create-topic, else TopicNotFoundError;
//   - with required-acks=-1, the replication factor (the topic's, or
//     replication-factor for a new one) must be at least
//     min.insync.replicas (the topic's, or the broker's), else no write
//     could ever be acknowledged; skipped when the config is not visible
//     (e.g. Confluent Cloud);
//   - max-message-bytes is clamped to the topic's max.message.bytes
//     minus MessageOverhead (a warning says so).
func (p *Producer) CheckDefaultTopic(ctx context.Context) error {
	topic := p.cfg.Topic
	n, replicas, found, err := p.partitionCount(ctx, topic)
	if err != nil {
		return err
	}
	if found {
		if pn := p.cfg.PartitionNum; pn > n {
			return configErr("partition-num", "%d is greater than the %d partitions of topic %q", pn, n, topic)
		} else if pn > 0 && pn < n {
			p.log.Warn("partition-num is smaller than the topic's partition count; TiCDC would use only the first partition-num partitions of the default topic",
				"topic", topic, "partition_num", pn, "partitions", n)
		}
	} else if !p.cfg.AutoCreateTopic {
		return &TopicNotFoundError{Topic: topic}
	}
	if p.cfg.RequiredAcks == -1 {
		rf := int(p.cfg.ReplicationFactor)
		if found {
			rf = replicas
		}
		minISR, ok := p.minInsyncReplicas(ctx, topic, found)
		if ok && rf < minISR {
			return configErr("replication-factor", "%d is smaller than min.insync.replicas %d of topic %q: with required-acks=-1 no write could be acknowledged", rf, minISR, topic)
		}
	}
	if !found {
		if _, err := p.EnsureTopic(ctx, topic); err != nil {
			return err
		}
	}
	st, err := p.load(ctx, topic)
	if err != nil {
		return err
	}
	if lim := st.recordLimit.Load(); lim < int64(p.cfg.MaxMessageBytes) {
		p.log.Warn("max-message-bytes is larger than the topic allows; records are limited to the topic's max.message.bytes minus the overhead",
			"topic", topic, "max_message_bytes", p.cfg.MaxMessageBytes, "limit", lim)
	}
	return nil
}

// minInsyncReplicas reads min.insync.replicas of the topic (exists) or of
// a broker; ok is false when it cannot be read.
func (p *Producer) minInsyncReplicas(ctx context.Context, topic string, exists bool) (int, bool) {
	var v string
	var err error
	if exists {
		v, err = p.topicConfig(ctx, topic, "min.insync.replicas")
	} else {
		v, err = p.brokerConfig(ctx, "min.insync.replicas")
	}
	if err != nil {
		p.log.Warn("cannot read min.insync.replicas; replication-factor not checked against it", "topic", topic, "err", err)
		return 0, false
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, false
	}
	return n, true
}

// topicConfig reads one config value of a topic, with one request shared
// with concurrent calls for other topics.
func (p *Producer) topicConfig(ctx context.Context, topic, key string) (string, error) {
	r, err := p.configs.get(ctx, topic)
	if err != nil {
		return "", err
	}
	if r.err != nil {
		return "", r.err
	}
	for _, c := range r.rc.Configs {
		if c.Key == key && c.Value != nil {
			return *c.Value, nil
		}
	}
	return "", fmt.Errorf("kafka: topic %q has no %s", topic, key)
}

// brokerConfig reads one config value of the first broker in metadata.
func (p *Producer) brokerConfig(ctx context.Context, key string) (string, error) {
	brokers, err := p.adm.ListBrokers(ctx)
	if err != nil {
		return "", err
	}
	if len(brokers) == 0 {
		return "", errors.New("kafka: no brokers in metadata")
	}
	id := brokers[0].NodeID
	rcs, err := p.adm.DescribeBrokerConfigs(ctx, id)
	if err != nil {
		return "", err
	}
	rc, err := rcs.On(strconv.Itoa(int(id)), nil)
	if err != nil {
		return "", err
	}
	if rc.Err != nil {
		return "", rc.Err
	}
	for _, c := range rc.Configs {
		if c.Key == key && c.Value != nil {
			return *c.Value, nil
		}
	}
	return "", fmt.Errorf("kafka: broker %d has no %s", id, key)
}

// lookup returns the cached state of topic if it is usable as is.
func (p *Producer) lookup(topic string) *topicState {
	v, ok := p.topics.Load(topic)
	if !ok {
		return nil
	}
	st := v.(*topicState)
	if st.retired.Load() || st.stale.Load() {
		return nil
	}
	return st
}

// load reads the topic's partition count and limit (creating the topic if
// allowed) and publishes them. Loads of one topic are serialised; one that finds a
// different partition count than the published state retires the old
// state and waits until every record produced with it is acknowledged
// before publishing the new one. Otherwise a key's older version, still in
// flight to partition hash%old, could be overtaken by its newer version
// sent to partition hash%new, and a consumer would apply them out of
// order. Records of other topics keep flowing meanwhile.
func (p *Producer) load(ctx context.Context, topic string) (*topicState, error) {
	p.loadMu.RLock()
	defer p.loadMu.RUnlock()
	mu, _ := p.loading.LoadOrStore(topic, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	if st := p.lookup(topic); st != nil {
		return st, nil // loaded by the call we waited for
	}
	m, err := p.ensureTopic(ctx, topic)
	if err != nil {
		return nil, err
	}
	n, id := m.partitions, m.id
	topicMax := 0
	if v, err := p.topicConfig(ctx, topic, "max.message.bytes"); err == nil {
		topicMax, _ = strconv.Atoi(v)
	} else {
		p.log.Warn("cannot read max.message.bytes of topic; using max-message-bytes as is", "topic", topic, "err", err)
	}
	limit := int64(p.cfg.MaxMessageBytes)
	if topicMax > MessageOverhead {
		limit = min(limit, int64(topicMax-MessageOverhead))
	}
	batchMax := batchCap(limit)

	var old *topicState
	if v, ok := p.topics.Load(topic); ok {
		old = v.(*topicState)
	}
	recreated := old != nil && old.id != id
	if old != nil && !old.retired.Load() && old.partitions == n && !recreated {
		old.recordLimit.Store(limit)
		old.stale.Store(false)
		old.refreshTimer.Reset(p.refresh)
		return old, nil
	}
	if old != nil {
		if !old.retired.Load() {
			p.log.Warn("topic changed (partition count, or deleted and recreated); draining records in flight before producing again",
				"topic", topic, "old_partitions", old.partitions, "partitions", n, "recreated", recreated)
			old.gate.Lock()
			old.retired.Store(true)
			old.gate.Unlock()
		}
		// Also after an earlier load that retired old and then gave up.
		for old.inflight.Load() > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(5 * time.Millisecond): // a rare event; polling keeps promises lock-free
			}
		}
		switch {
		case recreated:
			// kgo still holds the old topic id and would answer every
			// record with UNKNOWN_TOPIC_ID until its metadata ages out;
			// purging makes it load the topic afresh. Nothing of the old
			// topic is in flight any more (drained above).
			p.cl.PurgeTopicsFromProducing(topic)
		case n > old.partitions:
			p.awaitClientPartitions(ctx, topic, n)
		}
	}
	st := &topicState{name: topic, id: id, partitions: n, batchMax: batchMax}
	st.recordLimit.Store(limit)
	st.refreshTimer = time.AfterFunc(p.refresh, func() { st.stale.Store(true) })
	if old != nil {
		old.stopRefresh()
	}
	p.topics.Store(topic, st)
	return st, nil
}

// batchMaxBytes is kgo's per-topic batch cap: the topic's record limit
// plus framing, so a record that passes the limit always fits a batch and
// a batch never exceeds the topic's max.message.bytes.
func (p *Producer) batchMaxBytes(topic string) int32 {
	if v, ok := p.topics.Load(topic); ok {
		return v.(*topicState).batchMax
	}
	return batchCap(int64(p.cfg.MaxMessageBytes))
}

// awaitClientPartitions waits (bounded) until kgo's own metadata knows
// partition n-1 of topic: with the manual partitioner kgo fails a record
// for a partition it has not loaded yet. If the wait runs out the records
// fail (Retryable) and the pipeline restarts, which also ends the wait.
func (p *Producer) awaitClientPartitions(ctx context.Context, topic string, n int32) {
	wait, cancel := context.WithTimeout(ctx, metadataWait)
	defer cancel()
	for {
		p.cl.ForceMetadataRefresh()
		if leader, _, _ := p.cl.PartitionLeader(topic, n-1); leader >= 0 {
			return
		}
		select {
		case <-wait.Done():
			p.log.Warn("client metadata does not show the new partitions yet", "topic", topic, "partitions", n)
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (st *topicState) stopRefresh() {
	if st.refreshTimer != nil {
		st.refreshTimer.Stop()
	}
}
