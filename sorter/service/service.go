// Package service serves tidestream.v1.SorterService: for each pipeline it
// subscribes to the assigned PullerService, writes the raw events into the
// process's sort engine, and streams them to the encoder in (commit ts, start
// ts, key) order up to the pipeline's resolved ts.
//
// It is responsible for epochs (fencing zombies), for the upstream
// subscription and its retries, and for pacing the downstream stream. It is
// not responsible for ordering or spilling (package engine) nor for choosing
// which puller serves a pipeline (the coordinator; Config.PullerAddr here).
//
// Goroutines: each pipeline has one upstream goroutine (puller stream ->
// engine) and at most one downstream stream (the gRPC handler goroutine of
// Subscribe: engine -> encoder). A hot pipeline therefore cannot starve an
// idle one: their work happens on different goroutines, and every engine read
// is bounded by Config.BatchBytes so no reader holds the engine for long.
package service

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
	"github.com/tidestream/tidestream/sorter/engine"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Config configures a Service.
type Config struct {
	// PullerAddr is the PullerService a pipeline pulls from when its
	// request's route names none (a `cdc server` pulls from itself). A
	// route's puller_addr wins. Dialed without TLS, one connection per
	// address, shared by the pipelines routed there.
	PullerAddr string
	// Upstream, when set, stands for PullerAddr's connection, whether a
	// route names no puller or names PullerAddr: for tests, for a caller
	// that owns the connection (TLS, tracing interceptors), and for a
	// process that runs the puller too and calls it in process.
	Upstream tidestreamv1.PullerServiceClient
	// Engine is the process's sort engine, shared by all pipelines. The
	// caller opens and closes it.
	Engine *engine.Engine
	Logger *slog.Logger
	Meter  metric.Meter

	// BatchBytes caps one SortedBatch and one engine read. A single commit
	// ts larger than this is still sent whole, split over several batches
	// that carry no resolved ts.
	BatchBytes int
	// RetryBackoff and MaxRetryBackoff pace re-subscribing to the puller
	// after a transient failure (doubling from the first to the second).
	RetryBackoff    time.Duration
	MaxRetryBackoff time.Duration
	// IdleTimeout is how long a pipeline keeps pulling with no encoder
	// subscribed before its upstream stops and its data is dropped. A
	// reconnecting encoder (same epoch) within it resumes without re-pulling.
	IdleTimeout time.Duration
}

// Defaults.
const (
	// 1 MiB keeps a batch well under gRPC's default 4 MiB receive limit and
	// amortises framing over thousands of typical rows.
	DefaultBatchBytes      = 1 << 20
	DefaultRetryBackoff    = 50 * time.Millisecond
	DefaultMaxRetryBackoff = 5 * time.Second
	DefaultIdleTimeout     = time.Minute
)

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.Engine == nil:
		return errors.New("sorter service: Config.Engine is required")
	case c.BatchBytes < 0:
		return fmt.Errorf("sorter service: BatchBytes %d < 0", c.BatchBytes)
	case c.RetryBackoff < 0 || c.MaxRetryBackoff < 0 || c.IdleTimeout < 0:
		return errors.New("sorter service: durations must not be negative")
	}
	return nil
}

// Errors that end a pipeline's run; they are the causes of its context.
var (
	// ErrSuperseded ends the streams of a pipeline subscribed again with a
	// newer epoch (the stream contract's sentinel).
	ErrSuperseded = contract.ErrSuperseded
	// ErrReplaced ends a downstream stream when another subscriber of the
	// same epoch arrives: one encoder owns a pipeline at a time, and a
	// reconnect usually means the old stream is already dead.
	ErrReplaced = contract.ErrReplaced
	// ErrClosed ends everything when the service closes.
	ErrClosed = errors.New("sorter service: closed")

	errIdle = errors.New("sorter service: no subscriber within the idle timeout")
)

// Service implements tidestreamv1.SorterServiceServer.
type Service struct {
	tidestreamv1.UnimplementedSorterServiceServer

	cfg Config
	log *slog.Logger
	up  tidestreamv1.PullerServiceClient // Config.Upstream

	conns contract.Conns // to the pullers routes name

	ctx    context.Context // service lifetime; parent of every upstream run
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup // upstream goroutines

	closeOnce sync.Once

	mu     sync.Mutex
	pipes  map[engine.PipelineID]*pipeState
	closed bool

	m metrics
}

// New builds a Service; it dials the puller lazily (gRPC connects on first
// use), so a puller that is not up yet is retried like any outage.
func New(cfg Config) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.BatchBytes == 0 {
		cfg.BatchBytes = DefaultBatchBytes
	}
	if cfg.RetryBackoff == 0 {
		cfg.RetryBackoff = DefaultRetryBackoff
	}
	if cfg.MaxRetryBackoff == 0 {
		cfg.MaxRetryBackoff = DefaultMaxRetryBackoff
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Meter == nil {
		cfg.Meter = noop.NewMeterProvider().Meter("sorter")
	}
	s := &Service{cfg: cfg, log: cfg.Logger.With("component", "sorter"), up: cfg.Upstream,
		pipes: make(map[engine.PipelineID]*pipeState)}
	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	if err := s.m.init(s); err != nil {
		return nil, err
	}
	return s, nil
}

// puller returns the client of the puller a route names, or of the default
// one, dialing on first use.
func (s *Service) puller(route *tidestreamv1.Route) (tidestreamv1.PullerServiceClient, error) {
	addr := route.GetPullerAddr()
	if s.up != nil && (addr == "" || addr == s.cfg.PullerAddr) {
		return s.up, nil
	}
	if addr == "" {
		addr = s.cfg.PullerAddr
	}
	if addr == "" {
		return nil, contract.Status(contract.Fatal, codes.InvalidArgument,
			"sorter: bad SubscribeRequest: route.puller_addr is required (this sorter has no default puller)")
	}
	cc, err := s.conns.Get(addr)
	if errors.Is(err, contract.ErrConnsClosed) {
		return nil, contract.Status(contract.Transient, codes.Unavailable, "%v", ErrClosed)
	}
	if err != nil {
		return nil, contract.Status(contract.Fatal, codes.InvalidArgument, "sorter: route.puller_addr %q: %v", addr, err)
	}
	return tidestreamv1.NewPullerServiceClient(cc), nil
}

// Register adds the service to a gRPC server.
func (s *Service) Register(g *grpc.Server) { tidestreamv1.RegisterSorterServiceServer(g, s) }

// Close stops every pipeline's upstream, ends open streams with UNAVAILABLE
// and closes the puller connection. Safe to call more than once. Pipeline data stays in the engine (the
// caller closes it); the next process rebuilds from the encoder's from_ts.
func (s *Service) Close() { s.closeOnce.Do(s.close) }

func (s *Service) close() {
	s.mu.Lock()
	s.closed = true
	for _, st := range s.pipes {
		st.stopIdleTimer()
	}
	s.mu.Unlock()
	s.cancel(ErrClosed)
	s.wg.Wait()
	_ = s.conns.Close()
	s.m.close()
}

// pipeState is one pipeline at one epoch.
type pipeState struct {
	id    engine.PipelineID
	epoch uint64
	// spans and route are those of the request that built the engine
	// pipeline; a same-epoch reconnect keeps them (Service.mu).
	spans []*tidestreamv1.Span
	route *tidestreamv1.Route

	// Guarded by Service.mu.
	pipe      *engine.Pipeline // nil once dropped for idleness
	run       *upRun           // the current upstream run; nil when none ran yet
	subs      int              // open downstream streams (0 or 1, briefly 2 while one replaces another)
	downGen   uint64
	downStop  context.CancelCauseFunc
	idleTimer *time.Timer

	// low: events with commit ts <= low are not needed by anyone (the
	// request's from_ts, raised by acks). Guarded by lowMu.
	lowMu sync.Mutex
	low   uint64

	wakeMu sync.Mutex
	wake   chan struct{} // closed and replaced whenever the resolved ts advances

	sentResolved atomic.Uint64 // highest resolved ts sent downstream
}

// upRun is one run of a pipeline's upstream goroutine.
type upRun struct {
	cancel context.CancelCauseFunc
	done   chan struct{}
	err    error // why it ended; read after done is closed
}

func (r *upRun) finished() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

func (st *pipeState) wakeCh() chan struct{} {
	st.wakeMu.Lock()
	defer st.wakeMu.Unlock()
	return st.wake
}

func (st *pipeState) kick() {
	st.wakeMu.Lock()
	close(st.wake)
	st.wake = make(chan struct{})
	st.wakeMu.Unlock()
}

func (st *pipeState) lowTs() uint64 {
	st.lowMu.Lock()
	defer st.lowMu.Unlock()
	return st.low
}

func (st *pipeState) stopIdleTimer() {
	if st.idleTimer != nil {
		st.idleTimer.Stop()
		st.idleTimer = nil
	}
}

func pipelineID(ns, cf string, p int64) engine.PipelineID {
	if ns == "" {
		ns = "default"
	}
	return engine.PipelineID{Namespace: ns, Changefeed: cf, Pipeline: p}
}

// Subscribe streams the pipeline's events in order up to its resolved ts
// until the encoder goes away, a newer epoch or subscriber replaces it, or
// the upstream fails for good.
func (s *Service) Subscribe(req *tidestreamv1.SubscribeRequest, stream grpc.ServerStreamingServer[tidestreamv1.SortedBatch]) error {
	// The spans are required too: they are forwarded to the puller.
	if err := contract.Validate("sorter", req); err != nil {
		return err
	}
	ctx, stop := context.WithCancelCause(stream.Context())
	defer stop(nil)
	st, gen, err := s.attach(req, stop)
	if err != nil {
		return err
	}
	defer s.detach(st, gen)
	err = s.serve(ctx, st, req.GetFromTs(), stream)
	if err == nil {
		return nil
	}
	// A superseded or replaced stream's owner must stop, not retry (it used
	// to get ABORTED, which reads as a restart).
	key := contract.PipelineKey{Namespace: req.GetNamespace(), Changefeed: req.GetChangefeedId(), Pipeline: req.GetPipelineId()}
	if fenced := contract.EndedBy("sorter", key, req.GetEpoch(), context.Cause(ctx)); fenced != nil {
		return fenced
	}
	if stream.Context().Err() != nil {
		return nil // the encoder went away
	}
	return toStatus(err)
}

// attach finds or creates the pipeline's state for req's epoch, makes sure
// an upstream run is going, and registers the caller as its one downstream.
func (s *Service) attach(req *tidestreamv1.SubscribeRequest, stop context.CancelCauseFunc) (*pipeState, uint64, error) {
	id := pipelineID(req.GetNamespace(), req.GetChangefeedId(), req.GetPipelineId())
	epoch := req.GetEpoch()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, 0, contract.Status(contract.Transient, codes.Unavailable, "%v", ErrClosed)
	}
	st := s.pipes[id]
	switch {
	case st != nil && epoch < st.epoch:
		return nil, 0, contract.Status(contract.Fenced, codes.FailedPrecondition, "sorter: pipeline %d: epoch %d is older than the current %d", id.Pipeline, epoch, st.epoch)
	case st != nil && epoch > st.epoch:
		s.stopLocked(st, ErrSuperseded)
		st = nil
	}
	if st == nil {
		st = &pipeState{id: id, epoch: epoch, spans: req.GetSpans(), route: req.GetRoute(), low: req.GetFromTs(), wake: make(chan struct{})}
		s.pipes[id] = st
	} else if req.GetFromTs() < st.lowTs() && st.pipe != nil {
		// Same epoch, but the encoder asks for history it already acked and
		// we deleted: only a restart with a new epoch can rebuild it.
		return nil, 0, contract.Status(contract.Restart, codes.OutOfRange, "sorter: pipeline %d epoch %d: from_ts %d is below the acknowledged %d", id.Pipeline, epoch, req.GetFromTs(), st.lowTs())
	}
	if st.pipe == nil {
		// A new pipeline, or one dropped for idleness: (re)build it from the
		// request's from_ts. The engine discards an older epoch's data.
		p, err := s.cfg.Engine.Pipeline(id, epoch)
		if err != nil {
			if errors.Is(err, engine.ErrStaleEpoch) {
				return nil, 0, contract.Status(contract.Fenced, codes.FailedPrecondition, "sorter: pipeline %d: %v", id.Pipeline, err)
			}
			return nil, 0, contract.Status(contract.Restart, codes.Internal, "sorter: open pipeline %d epoch %d: %v", id.Pipeline, epoch, err)
		}
		st.pipe = p
		st.lowMu.Lock()
		st.low = req.GetFromTs()
		st.lowMu.Unlock()
		st.spans, st.route = req.GetSpans(), req.GetRoute()
	}
	if st.run == nil || st.run.finished() {
		// First subscriber, or the last run failed and the encoder retried:
		// what the engine holds stays valid, resume from its resolved ts.
		s.startUpstream(st)
	}
	st.stopIdleTimer()
	if st.downStop != nil {
		st.downStop(ErrReplaced)
	}
	st.downGen++
	st.downStop = stop
	st.subs++
	return st, st.downGen, nil
}

// detach unregisters a downstream; the last one out arms the idle timer.
func (s *Service) detach(st *pipeState, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st.subs--
	if st.downGen == gen {
		st.downStop = nil
	}
	if st.subs > 0 || s.closed || s.pipes[st.id] != st {
		return
	}
	st.stopIdleTimer()
	st.idleTimer = time.AfterFunc(s.cfg.IdleTimeout, func() { s.expire(st, gen) })
}

// expire stops an unsubscribed pipeline's upstream and drops its data. A
// Subscribe racing with it either finds the pipeline alive or finds it
// dropped and rebuilds it from its own from_ts.
func (s *Service) expire(st *pipeState, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.pipes[st.id] != st || st.subs > 0 || st.downGen != gen || st.pipe == nil {
		return
	}
	s.log.Info("pipeline idle: stopping upstream and dropping its data", "pipeline", st.id.Pipeline, "epoch", st.epoch)
	s.stopLocked(st, errIdle)
	// The entry stays, with its epoch, so an older epoch is still refused.
}

// stopLocked ends st's upstream run and downstream and drops its data.
//
// It does not wait for the upstream goroutine: that goroutine may sit in
// an engine write stalled on the disk, and Service.mu is held here, so
// waiting would stall every Subscribe and Ack of the process behind one
// pipeline. Not waiting is safe because the goroutine can do no harm once
// cancelled: the engine fences its handle (a newer epoch's Pipeline call, or
// DropPipeline here), so a write it has in flight fails and lands nowhere
// anyone reads, and the next attach starts a new run on a new handle.
// Close still waits for every run.
func (s *Service) stopLocked(st *pipeState, cause error) {
	st.stopIdleTimer()
	if st.downStop != nil {
		st.downStop(cause)
		st.downStop = nil
	}
	if st.run != nil {
		st.run.cancel(cause)
		st.run = nil
	}
	if st.pipe != nil && !errors.Is(cause, ErrSuperseded) {
		// A newer epoch fences and resets the data itself when it opens
		// the pipeline.
		if err := s.cfg.Engine.DropPipeline(st.id); err != nil {
			s.log.Warn("drop pipeline", "pipeline", st.id.Pipeline, "epoch", st.epoch, "err", err)
		}
	}
	st.pipe = nil
}

func (s *Service) startUpstream(st *pipeState) {
	ctx, cancel := context.WithCancelCause(s.ctx)
	run := &upRun{cancel: cancel, done: make(chan struct{})}
	st.run = run
	pipe := st.pipe
	spans, route := st.spans, st.route
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(run.done)
		defer cancel(nil)
		run.err = s.pull(ctx, st, pipe, spans, route)
		if ctx.Err() == nil {
			s.log.Warn("pipeline upstream failed", "pipeline", st.id.Pipeline, "epoch", st.epoch, "err", run.err)
		}
		st.kick() // wake the downstream to see the failure
	}()
}

// pull keeps an upstream subscription going, writing what arrives into the
// engine. It retries transient failures from the engine's resolved ts.
//
// Why a retry loses nothing and duplicates nothing: the puller promised that
// every event with commit ts <= resolved was sent before the resolved ts, and
// those were written before Resolve, so re-subscribing from the resolved ts
// misses nothing. Events above it may arrive a second time; the engine keys
// an event by (commit ts, start ts, key), so writing it again overwrites the
// identical entry instead of adding one (TestUpstreamRetry checks this).
func (s *Service) pull(ctx context.Context, st *pipeState, pipe *engine.Pipeline, spans []*tidestreamv1.Span, route *tidestreamv1.Route) error {
	backoff := s.cfg.RetryBackoff
	for {
		from := max(st.lowTs(), pipe.Resolved())
		progressed, err := s.pullOnce(ctx, st, pipe, spans, route, from)
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if contract.Classify(err) != contract.Transient {
			return err
		}
		if progressed {
			backoff = s.cfg.RetryBackoff
		}
		s.m.retries.Add(ctx, 1)
		s.log.Info("puller stream ended; re-subscribing", "pipeline", st.id.Pipeline, "epoch", st.epoch, "from", from, "backoff", backoff, "err", err)
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, s.cfg.MaxRetryBackoff)
	}
}

func (s *Service) pullOnce(ctx context.Context, st *pipeState, pipe *engine.Pipeline, spans []*tidestreamv1.Span, route *tidestreamv1.Route, from uint64) (progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The route goes on unchanged: the puller reads the upstream cluster it
	// names.
	req := &tidestreamv1.SubscribeRequest{ChangefeedId: st.id.Changefeed, Namespace: st.id.Namespace,
		PipelineId: st.id.Pipeline, Epoch: st.epoch, FromTs: from, Spans: spans, Route: route}
	if req.Namespace == "default" {
		req.Namespace = ""
	}
	up, err := s.puller(route)
	if err != nil {
		return false, err
	}
	stream, err := up.Subscribe(ctx, req)
	if err != nil {
		return false, upstreamError{err}
	}
	for {
		b, err := stream.Recv()
		if err != nil {
			return progressed, upstreamError{err}
		}
		evs := b.GetEvents()
		if len(evs) > 0 {
			// The puller promised every event at or below a resolved ts it
			// sent came before it, and a retry asks from that resolved ts,
			// so such an event is a broken promise upstream: the encoder
			// may already have read past it. Dropping it (as this once did,
			// counting it only) loses it; the pipeline restarts from its
			// checkpoint instead.
			resolved := pipe.Resolved()
			if bad := firstResolved(evs, resolved); bad != nil {
				s.m.violations.Add(ctx, 1)
				return progressed, contract.Status(contract.Restart, codes.DataLoss,
					"sorter: pipeline %d epoch %d: the puller sent an event committed at %d (key %x) after resolved ts %d",
					st.id.Pipeline, st.epoch, bad.GetCommitTs(), bad.GetKey(), resolved)
			}
			if err := pipe.Write(evs); err != nil {
				return progressed, fmt.Errorf("sorter service: write pipeline %d: %w", st.id.Pipeline, err)
			}
			s.m.eventsIn.Add(ctx, int64(len(evs)))
			progressed = true
		}
		if ts := b.GetResolvedTs(); ts > pipe.Resolved() {
			pipe.Resolve(ts)
			progressed = true
			st.kick()
		}
	}
}

// firstResolved returns the first event committed at or below resolved.
func firstResolved(evs []*tidestreamv1.RawKVEvent, resolved uint64) *tidestreamv1.RawKVEvent {
	for _, e := range evs {
		if e.GetCommitTs() <= resolved {
			return e
		}
	}
	return nil
}

// serve is the downstream loop: read (after, resolved] from the engine in
// bounded chunks, send them, then the resolved ts; wait for the next one.
func (s *Service) serve(ctx context.Context, st *pipeState, from uint64, stream grpc.ServerStreamingServer[tidestreamv1.SortedBatch]) error {
	s.mu.Lock()
	pipe, run := st.pipe, st.run
	s.mu.Unlock()
	after := from
	batch := &tidestreamv1.SortedBatch{}
	size := 0
	send := func(resolved uint64) error {
		batch.ResolvedTs = resolved
		began := time.Now()
		err := stream.Send(batch)
		s.m.blocked.Add(ctx, time.Since(began).Seconds())
		if err != nil {
			return fmt.Errorf("sorter service: send: %w", err)
		}
		s.m.eventsOut.Add(ctx, int64(len(batch.Events)))
		if resolved > 0 {
			if resolved > st.sentResolved.Load() {
				st.sentResolved.Store(resolved)
			}
		}
		// A fresh batch: the sent one's slice may still be referenced by
		// the transport's encoder in theory; never reuse it.
		batch = &tidestreamv1.SortedBatch{}
		size = 0
		return nil
	}
	for {
		wake := st.wakeCh()
		r := pipe.Resolved()
		if r <= after {
			select {
			case <-ctx.Done():
				return context.Cause(ctx)
			case <-s.ctx.Done():
				return contract.Status(contract.Transient, codes.Unavailable, "%v", ErrClosed)
			case <-run.done:
				if run.err == nil || errors.Is(run.err, ErrReplaced) {
					return contract.Status(contract.Transient, codes.Unavailable, "sorter: upstream stopped")
				}
				return run.err
			case <-wake:
			}
			continue
		}
		// Bounded reads: each Read returns after about BatchBytes, so the
		// engine iterator is released between batches and other pipelines'
		// readers interleave. The callback sends a full batch itself only
		// inside one huge commit ts, which Read never splits.
		for after < r {
			next, err := pipe.Read(after, r, s.cfg.BatchBytes, func(ev *tidestreamv1.RawKVEvent) error {
				batch.Events = append(batch.Events, ev)
				size += eventBytes(ev)
				if size >= s.cfg.BatchBytes {
					return send(0)
				}
				return nil
			})
			if err != nil {
				if ctx.Err() != nil {
					return context.Cause(ctx)
				}
				return err
			}
			if next <= after {
				return fmt.Errorf("sorter service: engine read of pipeline %d made no progress past %d", st.id.Pipeline, after)
			}
			after = next
			// Everything with commit ts <= next is sent with this batch:
			// Read never splits a commit ts, so next is a valid resolved ts.
			if err := send(after); err != nil {
				return err
			}
		}
	}
}

func eventBytes(e *tidestreamv1.RawKVEvent) int {
	return len(e.GetKey()) + len(e.GetValue()) + len(e.GetOldValue()) + 32
}

// Ack lets the engine delete what the encoder no longer needs.
func (s *Service) Ack(ctx context.Context, p *tidestreamv1.PipelineProgress) (*tidestreamv1.AckResponse, error) {
	id := pipelineID(p.GetNamespace(), p.GetChangefeedId(), p.GetPipelineId())
	s.mu.Lock()
	st := s.pipes[id]
	var pipe *engine.Pipeline
	if st != nil {
		pipe = st.pipe
	}
	s.mu.Unlock()
	switch {
	case st == nil || pipe == nil:
		return nil, status.Errorf(codes.NotFound, "sorter: pipeline %d is not served here", id.Pipeline)
	case p.GetEpoch() < st.epoch:
		return nil, status.Errorf(codes.FailedPrecondition, "sorter: pipeline %d: ack for epoch %d, current is %d", id.Pipeline, p.GetEpoch(), st.epoch)
	case p.GetEpoch() > st.epoch:
		return nil, status.Errorf(codes.NotFound, "sorter: pipeline %d: epoch %d is not served here (have %d)", id.Pipeline, p.GetEpoch(), st.epoch)
	}
	// Never delete past what was actually sent: an ack beyond it would be a
	// bug upstream of us, and obeying it would lose rows.
	ts := min(p.GetCheckpointTs(), st.sentResolved.Load())
	st.lowMu.Lock()
	defer st.lowMu.Unlock()
	if ts <= st.low {
		return &tidestreamv1.AckResponse{}, nil
	}
	if err := pipe.Ack(ts); err != nil {
		return nil, toStatus(fmt.Errorf("sorter service: ack pipeline %d at %d: %w", id.Pipeline, ts, err))
	}
	st.low = ts
	return &tidestreamv1.AckResponse{}, nil
}

// upstreamError marks a failure of the puller stream, so that toStatus
// relays it as the upstream's (its outcome, its code) and tells it apart
// from the sorter's own statuses.
type upstreamError struct{ err error }

func (e upstreamError) Error() string { return e.err.Error() }
func (e upstreamError) Unwrap() error { return e.err }

// toStatus maps an error to the stream status, with the contract's outcome:
// an upstream failure is relayed with its own outcome (a refusal by the
// puller is a refusal of this pipeline), a stale engine epoch is fenced, a
// closing or idle sorter is transient, and any other local failure (the
// engine) restarts the pipeline.
func toStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, engine.ErrStaleEpoch), errors.Is(err, ErrSuperseded), errors.Is(err, ErrReplaced):
		return contract.Status(contract.Fenced, codes.FailedPrecondition, "sorter: %v", err)
	case errors.Is(err, ErrClosed), errors.Is(err, errIdle), errors.Is(err, engine.ErrClosed):
		return contract.Status(contract.Transient, codes.Unavailable, "sorter: %v", err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return contract.Status(contract.Transient, codes.Canceled, "sorter: %v", err)
	}
	if ue := (upstreamError{}); errors.As(err, &ue) {
		return contract.Relay("sorter", ue.err)
	}
	if _, ok := status.FromError(err); ok {
		return err // the sorter's own status
	}
	return contract.Status(contract.Restart, codes.Internal, "sorter: %v", err)
}
