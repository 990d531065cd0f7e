// Package service serves PullerService.Subscribe: one stream per pipeline,
// carrying the raw committed events of the pipeline's spans and the pipeline's
// resolved ts (the minimum over its spans).
//
// Backpressure is the gRPC stream: events are sent as they come and a slow
// subscriber blocks Send, which blocks the span's sink, which blocks the
// region workers, which stops reading from TiKV. A process-wide byte quota
// bounds what is batched in memory between the span pullers and Send; the time
// spent waiting for it or for Send is a metric, the first place to look when
// lag grows.
//
// Epochs fence zombies: a Subscribe with a newer epoch for a pipeline ends the
// stream of the older one, and an older epoch is refused. Request checks,
// the epoch table, batch caps and what each failure means for the pipeline
// come from the stream contract (proto/contract), shared by every stage.
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
	"github.com/tidestream/tidestream/puller/kvclient"
	"github.com/tidestream/tidestream/puller/matcher"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Puller pulls one span; *kvclient.Client implements it.
type Puller interface {
	Subscribe(ctx context.Context, span kvclient.Span, startTs uint64, sink kvclient.Sink) error
}

// Upstream is the change data of one upstream TiDB cluster.
type Upstream interface {
	Puller
	// GCSafePoint bounds from_ts from below: a subscription from below it
	// would read a history TiKV's GC has already thinned, and TiKV would
	// not say so (spec §2.12). 0 disables the check.
	GCSafePoint(ctx context.Context) (uint64, error)
}

// Upstreams returns the upstream cluster a request reads, named by the PD
// addresses of its route; none means the process's default upstream. An
// error wrapping kvclient.ErrFatal (no such upstream can be reached, ever)
// fails the pipeline; any other is transient.
type Upstreams func(pdAddrs []string) (Upstream, error)

// Fixed serves one upstream whatever a route names: p, with gc as its GC
// safepoint bound (nil: no check). For a process bound to one cluster, and
// for tests.
func Fixed(p Puller, gc func(context.Context) (uint64, error)) Upstreams {
	up := fixedUpstream{Puller: p, gc: gc}
	return func([]string) (Upstream, error) { return up, nil }
}

type fixedUpstream struct {
	Puller
	gc func(context.Context) (uint64, error)
}

func (f fixedUpstream) GCSafePoint(ctx context.Context) (uint64, error) {
	if f.gc == nil {
		return 0, nil
	}
	return f.gc(ctx)
}

// Config configures a Service.
type Config struct {
	// Upstreams picks the cluster each request's route names. Required.
	Upstreams Upstreams
	// MemoryQuota bounds the event bytes held between the span pullers and
	// the gRPC streams of all pipelines of this process.
	MemoryQuota int64
	// BatchBytes and BatchEvents make a PullerBatch go out early;
	// FlushInterval bounds how long a partial batch waits. Whatever they
	// say, no batch passes contract.MaxBatchBytes (bar one event larger
	// than that, alone).
	BatchBytes    int
	BatchEvents   int
	FlushInterval time.Duration
	Logger        *slog.Logger
	Meter         metric.Meter
}

// Defaults.
const (
	DefaultMemoryQuota   = 256 << 20
	DefaultBatchBytes    = 1 << 20
	DefaultBatchEvents   = 4096
	DefaultFlushInterval = 5 * time.Millisecond
)

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.Upstreams == nil:
		return errors.New("puller service: Config.Upstreams is required")
	case c.MemoryQuota < 0:
		return fmt.Errorf("puller service: MemoryQuota %d < 0", c.MemoryQuota)
	case c.BatchBytes < 0 || c.BatchEvents < 0 || c.FlushInterval < 0:
		return errors.New("puller service: batch limits must not be negative")
	case c.BatchBytes > contract.MaxBatchBytes:
		return fmt.Errorf("puller service: BatchBytes %d above the stream contract's %d", c.BatchBytes, contract.MaxBatchBytes)
	}
	return nil
}

// Service implements tidestreamv1.PullerServiceServer.
type Service struct {
	tidestreamv1.UnimplementedPullerServiceServer

	cfg      Config
	log      *slog.Logger
	quota    *semaphore.Weighted
	epochs   *contract.Registry
	stopping atomic.Bool

	blocked metric.Float64Counter
	events  metric.Int64Counter
	streams metric.Int64UpDownCounter
}

const stage = "puller"

// ErrStopping ends the streams of a puller that is shutting down; the
// subscriber retries in place, on this process's successor or another one.
var ErrStopping = errors.New("puller service: shutting down")

// New builds a Service.
func New(cfg Config) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MemoryQuota == 0 {
		cfg.MemoryQuota = DefaultMemoryQuota
	}
	if cfg.BatchBytes == 0 {
		cfg.BatchBytes = DefaultBatchBytes
	}
	if cfg.BatchEvents == 0 {
		cfg.BatchEvents = DefaultBatchEvents
	}
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Meter == nil {
		cfg.Meter = noop.NewMeterProvider().Meter("puller")
	}
	s := &Service{cfg: cfg, log: cfg.Logger, quota: semaphore.NewWeighted(cfg.MemoryQuota), epochs: contract.NewRegistry(0)}
	var err error
	if s.blocked, err = cfg.Meter.Float64Counter("tidestream.puller.blocked",
		metric.WithUnit("s"), metric.WithDescription("time spent waiting for the memory quota or for the subscriber")); err != nil {
		return nil, err
	}
	if s.events, err = cfg.Meter.Int64Counter("tidestream.puller.events",
		metric.WithDescription("committed events sent to subscribers")); err != nil {
		return nil, err
	}
	if s.streams, err = cfg.Meter.Int64UpDownCounter("tidestream.puller.streams",
		metric.WithDescription("open PullerService.Subscribe streams")); err != nil {
		return nil, err
	}
	return s, nil
}

// Register adds the service to a gRPC server.
func (s *Service) Register(g *grpc.Server) { tidestreamv1.RegisterPullerServiceServer(g, s) }

// Stop ends every open stream with a transient status and refuses new ones,
// so that a graceful server stop is not held by streams that would only end
// when their subscribers go away. Safe to call more than once.
func (s *Service) Stop() {
	s.stopping.Store(true)
	s.epochs.EndAll(ErrStopping)
}

// Subscribe streams the pipeline's events and resolved ts until the client
// goes away, a newer epoch supersedes it, the service stops, or a span fails.
func (s *Service) Subscribe(req *tidestreamv1.SubscribeRequest, stream grpc.ServerStreamingServer[tidestreamv1.PullerBatch]) error {
	if err := contract.Validate(stage, req); err != nil {
		return err
	}
	if s.stopping.Load() {
		return contract.Status(contract.Transient, codes.Unavailable, "%v", ErrStopping)
	}
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	key := contract.PipelineKey{Namespace: req.GetNamespace(), Changefeed: req.GetChangefeedId(), Pipeline: req.GetPipelineId()}
	claim, err := s.epochs.Claim(stage, key, req.GetEpoch(), cancel)
	if err != nil {
		return err
	}
	defer claim.Release()
	if s.stopping.Load() { // Stop ran between the check above and the claim
		return contract.Status(contract.Transient, codes.Unavailable, "%v", ErrStopping)
	}
	pdAddrs := req.GetRoute().GetPdAddrs()
	up, err := s.cfg.Upstreams(pdAddrs)
	if err != nil {
		return toStatus(fmt.Errorf("upstream PD %v: %w", pdAddrs, err))
	}
	sp, err := up.GCSafePoint(ctx)
	if err != nil {
		if errors.Is(err, kvclient.ErrFatal) {
			return toStatus(err)
		}
		return contract.Status(contract.Transient, codes.Unavailable, "puller: read GC safepoint: %v", err)
	}
	if req.GetFromTs() < sp {
		return contract.Status(contract.Fatal, codes.OutOfRange, "puller: from_ts %d is below the GC safepoint %d: the history is gone", req.GetFromTs(), sp)
	}
	s.streams.Add(ctx, 1)
	defer s.streams.Add(context.WithoutCancel(ctx), -1)

	out := newBatcher(s, stream, len(req.GetSpans()), req.GetFromTs())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return out.run(gctx) })
	for i, sp := range req.GetSpans() {
		sink := &spanSink{b: out, idx: i}
		g.Go(func() error {
			return up.Subscribe(gctx, kvclient.Span{Start: sp.GetStartKey(), End: sp.GetEndKey()}, req.GetFromTs(), sink)
		})
	}
	err = g.Wait()
	if fenced := contract.EndedBy(stage, key, req.GetEpoch(), context.Cause(ctx)); fenced != nil {
		return fenced
	}
	if errors.Is(context.Cause(ctx), ErrStopping) {
		return contract.Status(contract.Transient, codes.Unavailable, "%v", ErrStopping)
	}
	if stream.Context().Err() != nil {
		return nil // the subscriber went away
	}
	return toStatus(err)
}

// toStatus tells the subscriber what a span failure means (the contract's
// outcomes). A protocol violation (a commit at or below a resolved ts already
// sent) means rows below the subscriber's resolved ts may be missing, so the
// pipeline must restart from its checkpoint: retried in place from its
// resolved ts, it would never ask for them again. Other failures leave the
// resolved-ts promise intact, so retrying in place loses nothing.
func toStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, kvclient.ErrFatal):
		return contract.Status(contract.Fatal, codes.FailedPrecondition, "puller: %v", err)
	case errors.Is(err, kvclient.ErrProtocol):
		return contract.Status(contract.Restart, codes.Aborted, "puller: %v", err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return contract.Status(contract.Transient, codes.Canceled, "puller: %v", err)
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return contract.Status(contract.Transient, codes.Unavailable, "puller: %v", err)
}

// spanSink adapts one span's puller output to the pipeline's batcher.
type spanSink struct {
	b   *batcher
	idx int
}

func (k *spanSink) Events(ctx context.Context, evs []matcher.Event) error { return k.b.add(ctx, evs) }
func (k *spanSink) Resolved(ctx context.Context, ts uint64) error {
	return k.b.resolved(ctx, k.idx, ts)
}

// batcher turns the spans' callbacks into PullerBatch messages on one stream.
// Events are charged to the process quota when added and released once sent.
//
// A batch never passes contract.MaxBatchBytes: while Send blocks, the next
// batch fills up to the cap and then add waits for the flusher to take it.
// Without the cap a slow subscriber let one batch grow to the whole quota and
// go out as one message the subscriber refuses (RESOURCE_EXHAUSTED), forever.
type batcher struct {
	s      *Service
	stream grpc.ServerStreamingServer[tidestreamv1.PullerBatch]

	mu       sync.Mutex
	batch    []*tidestreamv1.RawKVEvent
	bytes    int64
	spanTs   []uint64
	sentTs   uint64 // resolved ts last sent
	kick     chan struct{}
	opened   chan struct{} // an empty batch got events: the flush timer starts
	taken    chan struct{} // closed when the flusher takes the open batch
	inflight int64         // quota charged for the events in batch
}

func newBatcher(s *Service, stream grpc.ServerStreamingServer[tidestreamv1.PullerBatch], spans int, from uint64) *batcher {
	b := &batcher{s: s, stream: stream, spanTs: make([]uint64, spans), sentTs: from,
		kick: make(chan struct{}, 1), opened: make(chan struct{}, 1), taken: make(chan struct{})}
	for i := range b.spanTs {
		b.spanTs[i] = from
	}
	return b
}

func eventBytes(e *matcher.Event) int64 {
	return int64(len(e.Key) + len(e.Value) + len(e.OldValue) + 48)
}

func (b *batcher) poke() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// add appends evs to the open batch, as many at a time as fit under the cap,
// waiting for the flusher whenever the batch is full.
func (b *batcher) add(ctx context.Context, evs []matcher.Event) error {
	for len(evs) > 0 {
		b.mu.Lock()
		open, taken := b.bytes, b.taken
		b.mu.Unlock()
		n, size := 0, int64(0)
		for n < len(evs) && contract.Fits(int(open+size), int(eventBytes(&evs[n]))) {
			size += eventBytes(&evs[n])
			n++
		}
		if n == 0 {
			b.poke()
			select {
			case <-taken:
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		// A chunk bigger than the whole quota would wait forever; let it
		// through alone (it is one event over the cap, or a quota set
		// below the cap).
		w := min(size, b.s.cfg.MemoryQuota)
		began := time.Now()
		if err := b.s.quota.Acquire(ctx, w); err != nil {
			return err
		}
		if d := time.Since(began); d > time.Millisecond {
			b.s.blocked.Add(ctx, d.Seconds())
		}
		b.mu.Lock()
		if b.bytes != open && !contract.Fits(int(b.bytes), int(size)) {
			// Another span filled the batch meanwhile: measure again.
			b.mu.Unlock()
			b.s.quota.Release(w)
			continue
		}
		opened := len(b.batch) == 0
		for i := range evs[:n] {
			e := &evs[i]
			b.batch = append(b.batch, &tidestreamv1.RawKVEvent{
				Key: e.Key, Value: e.Value, OldValue: e.OldValue, Op: opOf(e.Op),
				StartTs: e.StartTs, CommitTs: e.CommitTs,
			})
		}
		b.bytes += size
		b.inflight += w
		full := len(b.batch) >= b.s.cfg.BatchEvents || b.bytes >= int64(b.s.cfg.BatchBytes)
		b.mu.Unlock()
		if full {
			b.poke()
		} else if opened {
			select {
			case b.opened <- struct{}{}:
			default:
			}
		}
		evs = evs[n:]
	}
	return nil
}

func opOf(op matcher.Op) tidestreamv1.OpType {
	if op == matcher.OpDelete {
		return tidestreamv1.OpType_OP_TYPE_DELETE
	}
	return tidestreamv1.OpType_OP_TYPE_PUT
}

// resolved records span idx's resolved ts. The pipeline's resolved ts is sent
// with the next batch once the minimum over spans advances; the span's events
// up to ts were added before this call, so they are in that batch or earlier.
func (b *batcher) resolved(ctx context.Context, idx int, ts uint64) error {
	b.mu.Lock()
	if ts > b.spanTs[idx] {
		b.spanTs[idx] = ts
	}
	b.mu.Unlock()
	b.poke()
	return nil
}

// run sends batches: at once when kicked (a full batch, a resolved ts),
// else FlushInterval after a partial batch opened. The timer runs only
// while a partial batch waits: an idle subscription costs no wake-ups (a
// ticker per subscription woke 10k idle ones 200 times a second each).
func (b *batcher) run(ctx context.Context) error {
	t := time.NewTimer(time.Hour)
	t.Stop()
	armed := false
	defer t.Stop()
	defer b.releaseAll()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-b.opened:
			if !armed {
				t.Reset(b.s.cfg.FlushInterval)
				armed = true
			}
			continue
		case <-t.C:
			armed = false
		case <-b.kick:
		}
		if err := b.flush(ctx); err != nil {
			return err
		}
	}
}

func (b *batcher) flush(ctx context.Context) error {
	b.mu.Lock()
	minTs := b.spanTs[0]
	for _, ts := range b.spanTs[1:] {
		minTs = min(minTs, ts)
	}
	msg := &tidestreamv1.PullerBatch{Events: b.batch}
	if minTs > b.sentTs {
		msg.ResolvedTs = minTs
	}
	charged := b.inflight
	if len(b.batch) > 0 {
		close(b.taken)
		b.taken = make(chan struct{})
	}
	b.batch, b.bytes, b.inflight = nil, 0, 0
	b.mu.Unlock()
	if len(msg.Events) == 0 && msg.ResolvedTs == 0 {
		return nil
	}
	began := time.Now()
	err := b.stream.Send(msg)
	if d := time.Since(began); d > time.Millisecond {
		b.s.blocked.Add(ctx, d.Seconds())
	}
	b.s.quota.Release(charged)
	if err != nil {
		return fmt.Errorf("puller service: send: %w", err)
	}
	b.s.events.Add(ctx, int64(len(msg.Events)))
	if msg.ResolvedTs != 0 {
		b.mu.Lock()
		b.sentTs = msg.ResolvedTs
		b.mu.Unlock()
	}
	return nil
}

func (b *batcher) releaseAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.inflight > 0 {
		b.s.quota.Release(b.inflight)
		b.inflight = 0
	}
	b.batch = nil
}
