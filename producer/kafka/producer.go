package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// Producer writes encoded records to Kafka. It is safe for concurrent use;
// per-key order holds for the records of one goroutine (one table
// pipeline), which is all the design promises.
type Producer struct {
	cfg     Config
	log     *slog.Logger
	cl      *kgo.Client
	adm     *kadm.Client
	refresh time.Duration

	// topics maps a topic name to its *topicState; written only under
	// the topic's load lock, read lock-free on every Produce (sync.Map:
	// read-mostly, and 100k tables make copy-on-write maps quadratic).
	topics sync.Map
	// Metadata loads (first record of a topic, every MetadataRefresh,
	// after a failure) are serialised per topic (loading: topic →
	// *sync.Mutex), not across topics: a load is several round trips, and
	// one lock for all made a changefeed over 1,000 new tables create
	// about 3 topics a second. Each load read-holds loadMu; Close
	// write-holds it to wait for them.
	loading sync.Map
	loadMu  sync.RWMutex

	// Coalesced topic requests (batch.go): metadata reads, CreateTopics,
	// the wait until created topics are visible (one metadata request per
	// tick for all of them) and topic DescribeConfigs. Their requests run
	// on batchCtx, cancelled by Close.
	meta     *batcher[topicMeta]
	create   *batcher[error]
	visible  *batcher[topicMeta]
	configs  *batcher[topicConfigs]
	batchCtx context.Context
	stop     context.CancelFunc

	closed atomic.Bool

	// Stall watch. The hot path only counts acknowledgements; Stalled,
	// polled by the pipelines every progress interval, notes when the
	// count last moved (or nothing was buffered) and compares.
	acked      atomic.Uint64
	connErr    atomic.Pointer[error]
	stallAfter time.Duration
	stallMu    sync.Mutex
	seenAcked  uint64
	movedAt    time.Time
}

// New validates cfg and builds the franz-go client. It does no I/O: call
// CheckDefaultTopic next so that configuration errors fail fast.
func New(cfg Config) (*Producer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	log = log.With("component", "kafka-producer")
	p := &Producer{cfg: cfg, log: log}
	p.refresh = cfg.MetadataRefresh
	if cfg.MetadataRefresh == 0 {
		p.refresh = DefaultMetadataRefresh
	}
	p.stallAfter = cfg.StallAfter
	if p.stallAfter == 0 {
		p.stallAfter = DefaultStallAfter
	}
	opts, err := cfg.kgoOpts(p.batchMaxBytes)
	if err != nil {
		return nil, err
	}
	opts = append(opts, kgo.WithHooks(connHook{p}))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, configErr("kafka", "%v", err)
	}
	p.cl, p.adm = cl, kadm.NewClient(cl)
	p.batchCtx, p.stop = context.WithCancel(context.Background())
	p.meta = newBatcher(p.batchCtx, 0, p.describeTopics)
	p.create = newBatcher(p.batchCtx, 0, p.createTopics)
	p.visible = newBatcher(p.batchCtx, visiblePoll, p.describeTopics)
	p.configs = newBatcher(p.batchCtx, 0, p.describeTopicConfigs)
	if cfg.KafkaVersion != "" && cfg.maxVersions() == nil {
		log.Warn("kafka-version is not a release franz-go knows; request versions are negotiated with the brokers instead",
			"kafka_version", cfg.KafkaVersion)
	}
	if !cfg.Idempotent() {
		log.Warn("required-acks is not -1: the idempotent producer is off (Kafka requires acks=all for it), so a retried produce can duplicate records; order still holds with one request in flight per broker",
			"required_acks", cfg.RequiredAcks)
	}
	log.Info("kafka producer configured",
		"brokers", cfg.Brokers, "client_id", cl.OptValue(kgo.ClientID), "required_acks", cfg.RequiredAcks,
		"idempotent", cfg.Idempotent(), "compression", cfg.Compression, "max_message_bytes", cfg.MaxMessageBytes,
		"max_retry", cfg.MaxRetry, "kafka_version", cfg.KafkaVersion, "tls", cfg.TLS.Enabled, "sasl", cfg.SASL.Mechanism)
	return p, nil
}

// Produce sends rec asynchronously to partition
// rec.PartitionHash % (partition count of rec.Topic), an unsigned 64-bit
// modulo, creating the topic first if needed and allowed.
//
// If Produce returns an error (a record over the limit, a topic that
// cannot be read or created, ctx done, the producer closed), the record
// was not sent and onAck is never called. Otherwise onAck is called exactly
// once, from a franz-go goroutine, with nil when Kafka acknowledged the
// record or the failure (a *BrokerError; see Classify). onAck must not
// block or call back into the Producer: it records and signals. Records of
// one partition are acknowledged in the order they were produced, and a
// failed record fails every later buffered record of its partition too
// (franz-go keeps partitions gapless), so "restart from the checkpoint" is
// the only sound reaction to a failure.
//
// Produce blocks while the client's buffer (MaxBufferedRecords /
// MaxBufferedBytes) is full, until ctx is done.
func (p *Producer) Produce(ctx context.Context, rec *tidestreamv1.EncodedRecord, onAck func(error)) error {
	if p.closed.Load() {
		return ErrClosed
	}
	topic := rec.GetTopic()
	if topic == "" {
		return configErr("topic", "record without a topic")
	}
	value := rec.GetValue()
	if rec.GetTombstone() {
		value = nil // a null value: what delete.on.null consumers expect
	} else if value == nil {
		value = []byte{} // an empty value is not a tombstone
	}
	for {
		st := p.lookup(topic)
		if st == nil {
			var err error
			if st, err = p.load(ctx, topic); err != nil {
				return err
			}
		}
		size := len(rec.GetKey()) + len(value) + RecordOverhead
		if limit := st.recordLimit.Load(); int64(size) > limit {
			return &RecordTooLargeError{Topic: topic, Key: rec.GetKey(), Size: size, Limit: int(limit), CommitTs: rec.GetCommitTs()}
		}
		partition := int32(rec.GetPartitionHash() % uint64(st.partitions))
		r := &kgo.Record{Topic: topic, Key: rec.GetKey(), Value: value, Partition: partition}

		st.gate.RLock()
		if st.retired.Load() {
			// The partition count changed between lookup and here.
			st.gate.RUnlock()
			continue
		}
		st.inflight.Add(1)
		p.cl.Produce(ctx, r, func(r *kgo.Record, err error) {
			// Promise: record and signal only (STYLE §5).
			if err != nil {
				st.stale.Store(true)
				err = &BrokerError{Topic: r.Topic, Partition: r.Partition, Err: err}
			} else {
				p.acked.Add(1)
			}
			st.inflight.Add(-1)
			onAck(err)
		})
		st.gate.RUnlock()
		return nil
	}
}

// StallError reports records waiting on Kafka with none acknowledged for
// longer than Config.StallAfter: the brokers are unreachable or refuse to
// take them, while the client keeps retrying (an outage it outlasts costs
// nothing else). It wraps the last error a broker connection saw, if any.
type StallError struct {
	For      time.Duration
	InFlight int64 // records the client holds
	Err      error // last connection error; nil if none was seen
}

func (e *StallError) Error() string {
	msg := fmt.Sprintf("kafka: no record acknowledged for %s with %d in flight", e.For.Round(time.Second), e.InFlight)
	if e.Err != nil {
		return msg + "; last broker error: " + e.Err.Error()
	}
	return msg
}

func (e *StallError) Unwrap() error { return e.Err }

// Stalled returns a *StallError while records wait on Kafka and none has
// been acknowledged for Config.StallAfter, nil otherwise. Pipelines report
// it as their error so that an outage shows while it lasts. It is meant to
// be polled (every progress interval): a stall is measured from the last
// call that saw an acknowledgement or an empty buffer.
func (p *Producer) Stalled() error {
	n := p.cl.BufferedProduceRecords()
	acked := p.acked.Load()
	now := time.Now()
	p.stallMu.Lock()
	defer p.stallMu.Unlock()
	if n == 0 || acked != p.seenAcked || p.movedAt.IsZero() {
		p.seenAcked, p.movedAt = acked, now
		return nil
	}
	waited := now.Sub(p.movedAt)
	if waited < p.stallAfter {
		return nil
	}
	e := &StallError{For: waited, InFlight: n}
	if err := p.connErr.Load(); err != nil {
		e.Err = *err
	}
	return e
}

// connHook notes the last error of a broker connection (dial, TLS, SASL,
// reads and writes) for Stalled.
type connHook struct{ p *Producer }

var (
	_ kgo.HookBrokerConnect = connHook{}
	_ kgo.HookBrokerWrite   = connHook{}
	_ kgo.HookBrokerRead    = connHook{}
)

func (h connHook) note(meta kgo.BrokerMetadata, err error) {
	if err == nil || errors.Is(err, context.Canceled) {
		return
	}
	err = fmt.Errorf("broker %d at %s: %w", meta.NodeID, net.JoinHostPort(meta.Host, strconv.Itoa(int(meta.Port))), err)
	h.p.connErr.Store(&err)
}

func (h connHook) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	h.note(meta, err)
}

func (h connHook) OnBrokerWrite(meta kgo.BrokerMetadata, _ int16, _ int, _, _ time.Duration, err error) {
	h.note(meta, err)
}

func (h connHook) OnBrokerRead(meta kgo.BrokerMetadata, _ int16, _ int, _, _ time.Duration, err error) {
	h.note(meta, err)
}

// Flush blocks until every record produced so far is acknowledged or
// failed (their onAck callbacks have run), or ctx is done.
func (p *Producer) Flush(ctx context.Context) error {
	if p.closed.Load() {
		return ErrClosed
	}
	return p.cl.Flush(ctx)
}

// Close stops the client. It does not wait for delivery: records still
// buffered fail (their onAck gets kgo.ErrClientClosed); call Flush first
// for a graceful stop.
func (p *Producer) Close() {
	if p.closed.Swap(true) {
		return
	}
	p.cl.Close()
	// After the client, whose failed requests answer whoever is queued.
	p.stop()
	p.meta.close()
	p.create.close()
	p.visible.close()
	p.configs.close()
	// After the client: a load blocked on a request or a drain returns
	// once the client fails them.
	p.loadMu.Lock()
	defer p.loadMu.Unlock()
	p.topics.Range(func(_, v any) bool {
		v.(*topicState).stopRefresh()
		return true
	})
}

// Config returns the validated configuration.
func (p *Producer) Config() Config { return p.cfg }
