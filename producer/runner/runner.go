// Package runner runs a producer member's pipelines: it follows the
// assignments that name the member, starts and stops a pipeline.Pipeline for
// each, and once per interval writes every pipeline's progress in one
// batched call fenced on the assignments (DESIGN.md §8). A pipeline whose
// fence failed belongs to a newer epoch or another producer: it is stopped
// at once. One that cannot start, or fails while running for a reason
// that can clear (Kafka failed records after its own retries), is started
// again under the same epoch, from its checkpoint, with backoff; its error
// is in its progress meanwhile. After a write, each pipeline's encoder is
// told the checkpoint.
//
// It is not responsible for where progress is stored (Config.WriteProgress:
// etcd, through the coordinator's store, in the role) nor for Kafka
// (Config.Sink).
package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidestream/tidestream/producer/kafka"
	"github.com/tidestream/tidestream/producer/pipeline"
	"github.com/tidestream/tidestream/proto/contract"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// Assignment is one stored assignment: the record, and the token its
// progress writes are fenced on (opaque here; the store's).
type Assignment struct {
	Key    string
	Record *tidestreamv1.PipelineAssignment
	Fence  any
}

// Update is a change of the member's assignments: Assignment nil means the
// key was deleted (the pipeline moved away or stopped).
type Update struct {
	Key        string
	Assignment *Assignment
}

// Progress is one pipeline's progress, to be written under its fence.
type Progress struct {
	Assignment *Assignment
	Status     *tidestreamv1.PipelineStatus
}

// Config configures a Runner.
type Config struct {
	// Member is this producer's member id, recorded in progress.
	Member string
	// Addr is this process's address, recorded in errors it reports.
	Addr string
	// Watch lists the member's assignments (every one as an Update) and
	// then delivers their changes, until ctx ends or it fails; Runner
	// calls it again after a failure, so a re-list must deliver the full
	// set again (reset: Runner stops the pipelines a re-list does not
	// name).
	Watch func(ctx context.Context, reset func(), fn func([]Update)) error
	// WriteProgress writes progress fenced on each assignment and returns
	// those whose fence failed.
	WriteProgress func(ctx context.Context, p []Progress) (fenced []Progress, err error)
	// Sink returns the Kafka sink of a changefeed, shared by its
	// pipelines; release is called when the changefeed's last pipeline
	// here stops.
	Sink func(ctx context.Context, namespace, changefeed string) (sink pipeline.Sink, release func(), err error)
	// Encoder returns the client of an encoder address (shared
	// connections are the caller's).
	Encoder func(addr string) (tidestreamv1.EncoderServiceClient, error)
	// Interval paces progress writes.
	Interval time.Duration
	Logger   *slog.Logger
}

// DefaultInterval is how often progress is written: TiCDC's processors
// report about every 500 ms as well; lower buys checkpoint lag with etcd
// writes.
const DefaultInterval = 500 * time.Millisecond

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.Member == "":
		return errors.New("runner: Config.Member is required")
	case c.Watch == nil || c.WriteProgress == nil || c.Sink == nil || c.Encoder == nil:
		return errors.New("runner: Config.Watch, WriteProgress, Sink and Encoder are required")
	case c.Interval < 0:
		return errors.New("runner: Interval must not be negative")
	}
	return nil
}

// Runner runs one member's pipelines.
type Runner struct {
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	pipes map[string]*running // by assignment key
	sinks map[[2]string]*sinkRef
	wg    sync.WaitGroup
	// acking is set while a wave of acknowledgements runs (ackWG).
	acking atomic.Bool
	ackWG  sync.WaitGroup
}

type running struct {
	a   *Assignment
	p   *pipeline.Pipeline // nil until it starts; err says why not yet (r.mu)
	err error
	// failedAt is the checkpoint the pipeline had when err happened: err
	// stays its error, across restarts, until it gets past it (r.mu). A
	// pipeline that fails at the same record on every restart must show
	// its error all the time, not only between a failure and the restart.
	failedAt uint64
	fatal    bool // p ended for a reason no retry fixes (r.mu)
	cancel   context.CancelFunc
	done     chan struct{}
	acked    uint64
}

// sinkRef is a changefeed's shared sink. ready is closed once the build
// ended: then sink and release, or err, are set and never change.
type sinkRef struct {
	ready   chan struct{}
	sink    pipeline.Sink
	release func()
	err     error
	// builderStopped: err is the building pipeline's context ending.
	builderStopped bool
	refs           int // r.mu
}

// New returns a Runner for cfg.
func New(cfg Config) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Runner{cfg: cfg, log: cfg.Logger.With("component", "producer"), pipes: map[string]*running{}, sinks: map[[2]string]*sinkRef{}}, nil
}

// Run follows the assignments and writes progress until ctx ends, then
// stops every pipeline and writes their progress a last time.
func (r *Runner) Run(ctx context.Context) error {
	defer r.stopAll()
	defer r.ackWG.Wait()
	var watchWG sync.WaitGroup
	watchWG.Go(func() { r.watch(ctx) })
	defer watchWG.Wait()
	tick := time.NewTicker(r.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			// What was acknowledged until now still counts.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.Interval+time.Second)
			r.writeProgress(fctx)
			cancel()
			return nil
		case <-tick.C:
			r.writeProgress(ctx)
		}
	}
}

func (r *Runner) watch(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		listed := map[string]bool{}
		resetting := false
		err := r.cfg.Watch(ctx, func() { resetting, listed = true, map[string]bool{} }, func(us []Update) {
			for _, u := range us {
				if resetting && u.Assignment != nil {
					listed[u.Key] = true
				}
				r.apply(ctx, u)
			}
			if resetting {
				// The list is complete: what it did not name is gone.
				r.mu.Lock()
				var gone []string
				for k := range r.pipes {
					if !listed[k] {
						gone = append(gone, k)
					}
				}
				r.mu.Unlock()
				for _, k := range gone {
					r.apply(ctx, Update{Key: k})
				}
				resetting = false
			}
		})
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("assignment watch failed; listing again", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// apply starts, replaces or stops the pipeline of one assignment key.
func (r *Runner) apply(ctx context.Context, u Update) {
	r.mu.Lock()
	cur := r.pipes[u.Key]
	r.mu.Unlock()
	if cur != nil {
		if u.Assignment != nil && u.Assignment.Record.GetEpoch() == cur.a.Record.GetEpoch() {
			// Rewritten without a new epoch (placement details, a lower
			// target ts): keep running under the new fence.
			r.mu.Lock()
			cur.a = u.Assignment
			p := cur.p
			r.mu.Unlock()
			if p != nil && !p.SetTarget(u.Assignment.Record.GetTargetTs()) {
				r.log.Warn("assignment raised its target ts without a new epoch; kept the lower one",
					"changefeed", u.Assignment.Record.GetChangefeedId(), "pipeline", u.Assignment.Record.GetPipelineId())
			}
			return
		}
		r.stop(u.Key, cur)
	}
	if u.Assignment != nil {
		r.start(ctx, u.Assignment)
	}
}

func (r *Runner) start(ctx context.Context, a *Assignment) {
	run := &running{a: a, done: make(chan struct{})}
	pctx, cancel := context.WithCancel(ctx)
	run.cancel = cancel
	r.mu.Lock()
	r.pipes[a.Key] = run
	r.mu.Unlock()
	r.wg.Go(func() {
		defer close(run.done)
		r.supervise(pctx, run, a.Record)
	})
}

// supervise runs one assignment until ctx ends, it is fenced, or it fails
// for a reason only an operator can fix (the owner then marks the
// changefeed failed). Everything else keeps the epoch and is retried here
// with backoff, the error in the pipeline's progress meanwhile:
//   - a pipeline that cannot start (Kafka unreachable, bad credentials,
//     an encoder address that does not parse) produced nothing, so it
//     simply tries again;
//   - a pipeline that failed while running (Kafka failed records after its
//     own retries: an outage longer than max-retry covers) starts again
//     from its checkpoint, re-producing what followed it — at-least-once,
//     as a restarted TiCDC table sink — rather than wait for the owner.
func (r *Runner) supervise(ctx context.Context, run *running, rec *tidestreamv1.PipelineAssignment) {
	backoff := startBackoff
	for {
		// The record may have been rewritten under the same epoch
		// meanwhile; its target ts is the one to honour.
		r.mu.Lock()
		if t := run.a.Record.GetTargetTs(); t != rec.GetTargetTs() {
			rec = proto.CloneOf(rec)
			rec.TargetTs = t
		}
		r.mu.Unlock()
		p, err := r.open(ctx, rec)
		if err == nil {
			r.mu.Lock()
			run.p = p                               // run.err stays until it gets past run.failedAt (writeProgress)
			p.SetTarget(run.a.Record.GetTargetTs()) // a rewrite while it opened
			r.mu.Unlock()
			err = r.runPipeline(ctx, rec, p)
			if ctx.Err() != nil || err == nil || errors.Is(err, pipeline.ErrFenced) {
				return
			}
			if !Restartable(err) {
				r.mu.Lock()
				run.fatal = true
				r.mu.Unlock()
				return
			}
			from := p.Status().Checkpoint
			if from > rec.GetStartTs() {
				backoff = startBackoff // it got somewhere since the last start
			}
			rec = proto.CloneOf(rec)
			rec.StartTs = from
			r.log.Warn("pipeline failed; restarting it from its checkpoint", "changefeed", rec.GetChangefeedId(),
				"pipeline", rec.GetPipelineId(), "checkpoint", from, "backoff", backoff, "err", err)
		} else {
			r.log.Warn("pipeline could not start; retrying", "changefeed", rec.GetChangefeedId(),
				"pipeline", rec.GetPipelineId(), "backoff", backoff, "err", err)
		}
		r.mu.Lock()
		run.err, run.failedAt = err, rec.GetStartTs()
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxStartBackoff)
	}
}

// Restartable tells whether a pipeline that ended with err may start again
// from its checkpoint under the same epoch: not when the encoder said the
// failure is fatal (an undecodable row, a schema the registry refused) nor
// when Kafka's is (credentials, ACLs, a record over the limit).
func Restartable(err error) bool {
	switch contract.Classify(err) {
	case contract.Fatal, contract.Fenced:
		return false
	case contract.Restart:
		// Not a stream status: Kafka's, or local.
		return kafka.Classify(err) != kafka.Fatal
	}
	return true
}

// Pacing of a pipeline's start attempts.
const (
	startBackoff    = 100 * time.Millisecond
	maxStartBackoff = 30 * time.Second
)

// open builds a pipeline: its encoder client and its changefeed's sink.
func (r *Runner) open(ctx context.Context, rec *tidestreamv1.PipelineAssignment) (*pipeline.Pipeline, error) {
	enc, err := r.cfg.Encoder(rec.GetRoute().GetEncoderAddr())
	if err != nil {
		return nil, fmt.Errorf("encoder %q: %w", rec.GetRoute().GetEncoderAddr(), err)
	}
	sink, err := r.sink(ctx, rec.GetNamespace(), rec.GetChangefeedId())
	if err != nil {
		return nil, err
	}
	p, err := pipeline.New(pipeline.Config{Assignment: rec, Encoder: enc, Sink: sink, Logger: r.log})
	if err != nil {
		r.unsink(rec.GetNamespace(), rec.GetChangefeedId())
		return nil, err
	}
	return p, nil
}

func (r *Runner) runPipeline(ctx context.Context, rec *tidestreamv1.PipelineAssignment, p *pipeline.Pipeline) error {
	defer r.unsink(rec.GetNamespace(), rec.GetChangefeedId())
	err := p.Run(ctx)
	if errors.Is(err, pipeline.ErrFenced) {
		r.log.Info("pipeline fenced by a newer epoch; stopped", "changefeed", rec.GetChangefeedId(), "pipeline", rec.GetPipelineId())
	} else if err != nil && ctx.Err() == nil && !Restartable(err) {
		r.log.Warn("pipeline failed; waiting for the owner", "changefeed", rec.GetChangefeedId(), "pipeline", rec.GetPipelineId(), "err", err)
	}
	return err
}

func (r *Runner) stop(key string, run *running) {
	run.cancel()
	<-run.done
	r.mu.Lock()
	if r.pipes[key] == run {
		delete(r.pipes, key)
	}
	r.mu.Unlock()
}

func (r *Runner) stopAll() {
	r.mu.Lock()
	all := make(map[string]*running, len(r.pipes))
	for k, v := range r.pipes {
		all[k] = v
	}
	r.mu.Unlock()
	for k, run := range all {
		r.stop(k, run)
	}
	r.wg.Wait()
}

// sink returns the changefeed's shared Kafka sink, building it on first
// use. One pipeline builds it while the others of the changefeed wait for
// that build: a changefeed's pipelines start together, and each building
// its own client (and checking the default topic) before one was cached
// made 120–233 Kafka clients at once at 10,000 tables.
func (r *Runner) sink(ctx context.Context, ns, cf string) (pipeline.Sink, error) {
	k := [2]string{ns, cf}
	r.mu.Lock()
	for s := r.sinks[k]; s != nil; s = r.sinks[k] {
		s.refs++
		r.mu.Unlock()
		select {
		case <-s.ready:
		case <-ctx.Done():
			r.unref(k, s)
			return nil, context.Cause(ctx)
		}
		switch {
		case s.err == nil:
			return s.sink, nil
		case !s.builderStopped:
			return nil, s.err // the builder dropped the entry; no ref to give back
		}
		// The builder's pipeline was stopped mid-build: its error is not
		// this pipeline's. Build (or wait for a build) again.
		r.mu.Lock()
	}
	s := &sinkRef{ready: make(chan struct{}), refs: 1}
	r.sinks[k] = s
	r.mu.Unlock()

	sink, release, err := r.cfg.Sink(ctx, ns, cf)
	r.mu.Lock()
	if err != nil {
		s.err = fmt.Errorf("kafka sink of changefeed %s/%s: %w", ns, cf, err)
		s.builderStopped = ctx.Err() != nil
		if r.sinks[k] == s {
			delete(r.sinks, k) // the next start tries again
		}
	} else {
		s.sink, s.release = sink, release
	}
	r.mu.Unlock()
	close(s.ready)
	if err != nil {
		return nil, s.err
	}
	return sink, nil
}

func (r *Runner) unsink(ns, cf string) {
	k := [2]string{ns, cf}
	r.mu.Lock()
	s := r.sinks[k]
	r.mu.Unlock()
	if s != nil {
		r.unref(k, s)
	}
}

// unref gives back one reference to s and closes its sink with the last.
func (r *Runner) unref(k [2]string, s *sinkRef) {
	r.mu.Lock()
	s.refs--
	last := s.refs == 0
	if last && r.sinks[k] == s {
		delete(r.sinks, k)
	}
	r.mu.Unlock()
	if last && s.release != nil {
		s.release()
	}
}

// writeProgress writes every pipeline's progress in one call, stops the
// fenced ones, and acknowledges the written checkpoints to the encoders.
func (r *Runner) writeProgress(ctx context.Context) {
	r.mu.Lock()
	var batch []Progress
	byAssignment := map[*Assignment]*running{}
	started := map[*Assignment]*pipeline.Pipeline{} // run.p as read under r.mu
	for _, run := range r.pipes {
		st := &tidestreamv1.PipelineStatus{Epoch: run.a.Record.GetEpoch(), ProducerMember: r.cfg.Member}
		var err error
		if run.p != nil {
			// Between a failure and the restart, the failed pipeline's
			// checkpoint: acks of what it had in flight still count.
			s := run.p.Status()
			st.CheckpointTs, st.ResolvedTs, st.Rows, err = s.Checkpoint, s.Resolved, s.Rows, s.Err
			if run.err != nil && s.Checkpoint > run.failedAt {
				run.err = nil // running again, and past where it failed
			}
		} else {
			st.CheckpointTs, st.ResolvedTs = run.a.Record.GetStartTs(), run.a.Record.GetStartTs()
		}
		if run.err != nil {
			err = run.err // why it is not running now, or keeps failing
		}
		st.Fatal = run.fatal
		if err != nil {
			st.Error = &tidestreamv1.RunningError{Time: timestamppb.Now(), Addr: r.cfg.Addr, Message: err.Error()}
		}
		batch = append(batch, Progress{Assignment: run.a, Status: st})
		byAssignment[run.a] = run
		started[run.a] = run.p
	}
	r.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	fenced, err := r.cfg.WriteProgress(ctx, batch)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("progress write failed; retrying next interval", "pipelines", len(batch), "err", err)
		}
		return
	}
	lost := map[*Assignment]bool{}
	for _, f := range fenced {
		lost[f.Assignment] = true
		run := byAssignment[f.Assignment]
		rec := f.Assignment.Record
		r.log.Info("progress write fenced: the pipeline belongs to a newer epoch or another producer; stopping it",
			"changefeed", rec.GetChangefeedId(), "pipeline", rec.GetPipelineId(), "epoch", rec.GetEpoch())
		r.stop(f.Assignment.Key, run)
	}
	// Acknowledgements go to the encoders aside, many at once: one RPC
	// after another held the next progress write back by one round trip
	// per pipeline (10k pipelines: one checkpoint move every few seconds
	// at best). A wave still running skips this one; its checkpoints are
	// acknowledged by the next, as acks are cumulative.
	if !r.acking.CompareAndSwap(false, true) {
		return
	}
	var acks []func(context.Context)
	for _, p := range batch {
		run, pipe := byAssignment[p.Assignment], started[p.Assignment]
		if lost[p.Assignment] || pipe == nil || p.Status.GetCheckpointTs() <= run.acked {
			continue
		}
		cp := p.Status.GetCheckpointTs()
		run.acked = cp
		acks = append(acks, func(ctx context.Context) { pipe.Acked(ctx, cp) })
	}
	if len(acks) == 0 {
		r.acking.Store(false)
		return
	}
	r.ackWG.Go(func() {
		defer r.acking.Store(false)
		sem := make(chan struct{}, ackConcurrency)
		var wg sync.WaitGroup
		for _, ack := range acks {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				ack(ctx)
			})
		}
		wg.Wait()
	})
}

// ackConcurrency bounds the acknowledgements in flight at once.
const ackConcurrency = 64
