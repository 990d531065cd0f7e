// Package pipeline runs one table pipeline on a producer: it subscribes to
// the encoder its assignment names, hands every record to Kafka, and keeps
// the pipeline's checkpoint — the highest ts at or below which Kafka has
// acknowledged every record — for its member to write under the fence.
//
// It is responsible for the encoder stream (retries in place on transient
// failures, stops on fenced or fatal ones), for counting records in and
// acknowledgements out, and for the pipeline's error while it fails. It is
// not responsible for Kafka's client (the Sink) nor for writing progress
// (the member batches every pipeline's into one etcd transaction).
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidestream/tidestream/proto/contract"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// Sink is where a pipeline's records go: the Kafka producer of its
// changefeed.
type Sink interface {
	// Produce hands rec to Kafka. Unless it returns an error (the record
	// was not sent), done is called once: with nil when Kafka acknowledged
	// the record, or with the error that failed it for good (the client
	// retried what can be retried). Produce may block while the client's
	// buffer is full: that is the pipeline's backpressure. *kafka.Producer
	// is one.
	Produce(ctx context.Context, rec *tidestreamv1.EncodedRecord, done func(error)) error
}

// Staller is a Sink that can tell its records are stuck (*kafka.Producer:
// an outage its client is riding out); the pipeline reports it as its
// error meanwhile.
type Staller interface {
	Stalled() error
}

// Config configures a Pipeline.
type Config struct {
	Assignment *tidestreamv1.PipelineAssignment
	// Encoder is the client of the encoder the assignment's route names.
	Encoder tidestreamv1.EncoderServiceClient
	Sink    Sink
	// RetryBackoff and MaxRetryBackoff pace re-subscribing after a
	// transient failure.
	RetryBackoff, MaxRetryBackoff time.Duration
	Logger                        *slog.Logger
}

// Validate names the first bad field.
func (c Config) Validate() error {
	a := c.Assignment
	switch {
	case a == nil:
		return errors.New("pipeline: Config.Assignment is required")
	case a.GetChangefeedId() == "" || a.GetEpoch() == 0 || len(a.GetSpans()) == 0:
		return fmt.Errorf("pipeline %d: assignment needs a changefeed, a positive epoch and spans", a.GetPipelineId())
	case c.Encoder == nil:
		return fmt.Errorf("pipeline %d: Config.Encoder is required", a.GetPipelineId())
	case c.Sink == nil:
		return fmt.Errorf("pipeline %d: Config.Sink is required", a.GetPipelineId())
	case c.RetryBackoff < 0 || c.MaxRetryBackoff < 0:
		return fmt.Errorf("pipeline %d: durations must not be negative", a.GetPipelineId())
	}
	return nil
}

// Defaults.
const (
	DefaultRetryBackoff    = 100 * time.Millisecond
	DefaultMaxRetryBackoff = 5 * time.Second
)

// Errors that end Run.
var (
	// ErrFenced: a newer epoch owns the pipeline; this producer must stop
	// it and not retry.
	ErrFenced = errors.New("pipeline: fenced by a newer epoch")
)

// Pipeline is one assignment running.
type Pipeline struct {
	cfg Config
	log *slog.Logger
	t   *tracker
	// target is the assignment's target ts (0: none), lowered by
	// SetTarget while the pipeline runs.
	target atomic.Uint64
	// rows counts the records handed to Kafka (the table's write traffic,
	// for the owner's write-key-threshold).
	rows atomic.Uint64

	mu      sync.Mutex
	lastErr error // shown in the progress record while set
	warning string
}

// New returns a pipeline for cfg; Run starts it.
func New(cfg Config) (*Pipeline, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.RetryBackoff == 0 {
		cfg.RetryBackoff = DefaultRetryBackoff
	}
	if cfg.MaxRetryBackoff == 0 {
		cfg.MaxRetryBackoff = DefaultMaxRetryBackoff
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a := cfg.Assignment
	p := &Pipeline{
		cfg: cfg, t: newTracker(a.GetStartTs()),
		log: cfg.Logger.With("changefeed", a.GetChangefeedId(), "pipeline", a.GetPipelineId(), "epoch", a.GetEpoch(),
			"table", a.GetSchemaName()+"."+a.GetTableName()),
	}
	p.target.Store(a.GetTargetTs())
	return p, nil
}

// SetTarget lowers the pipeline's target ts while it runs (the owner
// stops a table's pipelines at a ts when it splits the table anew): from
// the next batch on nothing committed after ts is produced, and the
// checkpoint stops at ts. It returns false, changing nothing, when ts
// would raise the target: records above the old one were dropped, so only
// a restart from the checkpoint may raise it.
func (p *Pipeline) SetTarget(ts uint64) bool {
	for {
		cur := p.target.Load()
		if cur != 0 && (ts == 0 || ts > cur) {
			return cur == ts
		}
		if p.target.CompareAndSwap(cur, ts) {
			return true
		}
	}
}

// Status is what the member writes as the pipeline's progress.
type Status struct {
	Checkpoint, Resolved uint64
	// Rows is how many records the pipeline handed to Kafka so far.
	Rows uint64
	// Err is the reason the pipeline is failing or stalled, nil when it
	// runs normally.
	Err error
}

// Status reports the pipeline's progress now.
func (p *Pipeline) Status() Status {
	cp, res := p.t.checkpoint()
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.lastErr
	if err == nil && p.warning != "" {
		err = errors.New(p.warning)
	}
	if s, ok := p.cfg.Sink.(Staller); ok && err == nil {
		err = s.Stalled()
	}
	return Status{Checkpoint: cp, Resolved: res, Rows: p.rows.Load(), Err: err}
}

func (p *Pipeline) setErr(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastErr = err
}

func (p *Pipeline) setWarning(w string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.warning = w
}

// Run pulls the encoder stream and produces its records until ctx ends
// (nil), a newer epoch fences the pipeline (ErrFenced), or a failure the
// chain cannot retry in place (a record Kafka failed, a fatal or restart
// status from the encoder) ends it. Its member then starts it again from
// its checkpoint unless the failure is one no retry fixes, which waits for
// the owner (runner.Restartable). Records handed to Kafka
// before Run returns may still be acknowledged afterwards; Status counts
// them.
func (p *Pipeline) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	backoff := p.cfg.RetryBackoff
	for {
		progressed, err := p.runOnce(ctx, cancel)
		if ctx.Err() != nil {
			if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
				p.setErr(cause)
				return cause
			}
			return nil
		}
		switch contract.Classify(err) {
		case contract.Transient:
		case contract.Fenced:
			return fmt.Errorf("%w: %v", ErrFenced, err)
		default:
			p.setErr(err)
			p.log.Warn("pipeline failed", "err", err)
			return err
		}
		if progressed {
			backoff = p.cfg.RetryBackoff
			p.setErr(nil)
		} else {
			p.setErr(err)
		}
		p.log.Info("encoder stream ended; re-subscribing", "backoff", backoff, "err", err)
		select {
		case <-ctx.Done():
			continue
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, p.cfg.MaxRetryBackoff)
	}
}

// runOnce is one subscription. It resumes after the last resolved ts
// received: everything at or below it was handed to Kafka already.
// Records after it are sent again and produced again — at-least-once, in
// order per key, since a key's records keep their partition.
func (p *Pipeline) runOnce(ctx context.Context, fail context.CancelCauseFunc) (progressed bool, err error) {
	a := p.cfg.Assignment
	_, from := p.t.checkpoint()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := p.cfg.Encoder.Subscribe(sctx, &tidestreamv1.SubscribeRequest{
		ChangefeedId: a.GetChangefeedId(), Namespace: a.GetNamespace(), PipelineId: a.GetPipelineId(),
		Epoch: a.GetEpoch(), FromTs: from, Spans: a.GetSpans(), Route: a.GetRoute(), TableId: a.GetTableId(),
	})
	if err != nil {
		return false, err
	}
	for {
		b, err := stream.Recv()
		if err != nil {
			return progressed, err
		}
		if w := b.GetWarning(); w != "" {
			p.setWarning("encoder: " + w)
			continue
		}
		p.setWarning("")
		target := p.target.Load()
		for _, rec := range b.GetRecords() {
			ts := rec.GetCommitTs()
			if target != 0 && ts > target {
				// TiCDC's target-ts: nothing committed after it is
				// replicated; the changefeed finishes there.
				continue
			}
			failed := func(err error) {
				// Never skipped: the checkpoint stays below the record,
				// and the pipeline starts again there.
				fail(fmt.Errorf("pipeline %d: record of %s at commit ts %d: %w", a.GetPipelineId(), rec.GetTopic(), ts, err))
			}
			p.t.add(ts)
			p.rows.Add(1)
			err := p.cfg.Sink.Produce(ctx, rec, func(err error) {
				if err == nil {
					err = p.t.done(ts)
				}
				if err != nil {
					failed(err)
				}
			})
			if err != nil {
				if ctx.Err() != nil {
					return progressed, context.Cause(ctx)
				}
				failed(err)
				return progressed, context.Cause(ctx)
			}
		}
		if r := b.GetResolvedTs(); r > 0 {
			if target != 0 {
				r = min(r, target)
			}
			p.t.resolve(r)
			progressed = true
		}
	}
}

// Acked tells the encoder the checkpoint the member wrote, so that it and
// the sorter release what is no longer needed. Best effort: a lost ack
// costs disk upstream, never data.
func (p *Pipeline) Acked(ctx context.Context, checkpoint uint64) {
	a := p.cfg.Assignment
	_, err := p.cfg.Encoder.Ack(ctx, &tidestreamv1.PipelineProgress{
		ChangefeedId: a.GetChangefeedId(), Namespace: a.GetNamespace(), PipelineId: a.GetPipelineId(),
		Epoch: a.GetEpoch(), CheckpointTs: checkpoint,
	})
	if err != nil && ctx.Err() == nil {
		p.log.Debug("ack to encoder", "checkpoint", checkpoint, "err", err)
	}
}
