package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

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
	refreshTimer *time.Timer // guarded by Producer.loadMu
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

// partitionCount reads the topic's partition count with a fresh metadata
// request (kadm's helpers answer from kgo's metadata cache, which may
// still say "unknown" just after a create). found is false when the broker
// says the topic does not exist; replicas is partition 0's replica count.
func (p *Producer) partitionCount(ctx context.Context, topic string) (n int32, replicas int, found bool, err error) {
	n, replicas, _, found, err = p.describeTopic(ctx, topic)
	return n, replicas, found, err
}

// describeTopic is partitionCount plus the topic id.
func (p *Producer) describeTopic(ctx context.Context, topic string) (n int32, replicas int, id [16]byte, found bool, err error) {
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	// The request's default is true from v4 on: a broker with
	// auto.create.topics.enable would create the topic with its own
	// defaults, bypassing auto-create-topic and partition-num.
	req.AllowAutoTopicCreation = false
	resp, err := req.RequestWith(ctx, p.cl)
	if err != nil {
		return 0, 0, id, false, fmt.Errorf("kafka: reading metadata of topic %q: %w", topic, err)
	}
	for _, t := range resp.Topics {
		if t.Topic == nil || *t.Topic != topic {
			continue
		}
		switch err := kerr.ErrorForCode(t.ErrorCode); {
		case err == nil:
		case errors.Is(err, kerr.UnknownTopicOrPartition):
			return 0, 0, id, false, nil
		case errors.Is(err, kerr.LeaderNotAvailable) && len(t.Partitions) == 0:
			// Just created, not yet visible.
			return 0, 0, id, false, nil
		case errors.Is(err, kerr.LeaderNotAvailable):
		default:
			return 0, 0, id, false, fmt.Errorf("kafka: reading metadata of topic %q: %w", topic, err)
		}
		for _, pt := range t.Partitions {
			if pt.Partition == 0 {
				replicas = len(pt.Replicas)
			}
		}
		return int32(len(t.Partitions)), replicas, t.TopicID, len(t.Partitions) > 0, nil
	}
	return 0, 0, id, false, nil
}

// EnsureTopic returns the topic's partition count, creating the topic when
// it does not exist and auto-create-topic is true — with partition-num
// partitions (DefaultPartitionNum when unset) and replication-factor, as
// TiCDC creates per-table topics on their first row. With
// auto-create-topic false a missing topic is a *TopicNotFoundError naming
// it. Errors from the broker keep its code and message.
func (p *Producer) EnsureTopic(ctx context.Context, topic string) (int32, error) {
	n, _, found, err := p.partitionCount(ctx, topic)
	if err != nil {
		return 0, err
	}
	if found {
		return n, nil
	}
	if !p.cfg.AutoCreateTopic {
		return 0, &TopicNotFoundError{Topic: topic}
	}
	parts := p.cfg.PartitionNum
	if parts == 0 {
		parts = DefaultPartitionNum
	}
	resp, err := p.adm.CreateTopic(ctx, parts, p.cfg.ReplicationFactor, nil, topic)
	switch {
	case err == nil:
		p.log.Info("created topic", "topic", topic, "partitions", parts, "replication_factor", p.cfg.ReplicationFactor)
	case errors.Is(err, kerr.TopicAlreadyExists):
		// Another producer of the changefeed created it first.
	default:
		if resp.ErrMessage != "" {
			err = fmt.Errorf("%w: %s", err, resp.ErrMessage)
		}
		return 0, fmt.Errorf("kafka: creating topic %q with %d partitions and replication factor %d: %w", topic, parts, p.cfg.ReplicationFactor, err)
	}
	wait, cancel := context.WithTimeout(ctx, metadataWait)
	defer cancel()
	for {
		n, _, found, err := p.partitionCount(wait, topic)
		if err == nil && found {
			return n, nil
		}
		select {
		case <-wait.Done():
			if err == nil {
				err = wait.Err()
			}
			return 0, fmt.Errorf("kafka: topic %q created but not visible in metadata: %w", topic, err)
		case <-time.After(50 * time.Millisecond):
		}
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

// topicConfig reads one config value of a topic.
func (p *Producer) topicConfig(ctx context.Context, topic, key string) (string, error) {
	rcs, err := p.adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return "", err
	}
	rc, err := rcs.On(topic, nil)
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
// allowed) and publishes them. Loads are serialised; one that finds a
// different partition count than the published state retires the old
// state and waits until every record produced with it is acknowledged
// before publishing the new one. Otherwise a key's older version, still in
// flight to partition hash%old, could be overtaken by its newer version
// sent to partition hash%new, and a consumer would apply them out of
// order. Records of other topics keep flowing meanwhile.
func (p *Producer) load(ctx context.Context, topic string) (*topicState, error) {
	p.loadMu.Lock()
	defer p.loadMu.Unlock()
	if st := p.lookup(topic); st != nil {
		return st, nil // loaded by the call we waited for
	}
	if _, err := p.EnsureTopic(ctx, topic); err != nil {
		return nil, err
	}
	n, _, id, found, err := p.describeTopic(ctx, topic)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("kafka: topic %q disappeared while loading it", topic)
	}
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
