package service

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tidestream/tidestream/encoder/schema"
	"github.com/tidestream/tidestream/proto/contract"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

const stage = "encoder"

// ErrClosed ends every stream when the service stops.
var ErrClosed = errors.New("encoder service: closed")

// Service implements tidestreamv1.EncoderServiceServer.
type Service struct {
	tidestreamv1.UnimplementedEncoderServiceServer

	cfg     Config
	log     *slog.Logger
	epochs  *contract.Registry
	workers chan struct{} // a token per encoding goroutine

	ctx    context.Context // service lifetime: parent of the DDL streams
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup // DDL followers; Add only under mu with closed false

	conns contract.Conns // to the sorters routes name

	mu       sync.Mutex
	feeds    map[feedKey]*feed
	pipes    map[contract.PipelineKey]*pipe
	closed   bool
	ddlSeq   uint64
	ddlEpoch uint64

	skipMu     sync.Mutex
	skipLogged map[[2]int64]bool // (table id, version) already warned about

	stopping atomic.Bool
	m        metrics
}

// New builds a Service. It dials sorters lazily, on the first pipeline
// routed to each.
func New(cfg Config) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.fill()
	if cfg.Meter == nil {
		cfg.Meter = noop.NewMeterProvider().Meter(stage)
	}
	s := &Service{
		cfg: cfg, log: cfg.Logger.With("component", stage), epochs: contract.NewRegistry(0),
		workers: make(chan struct{}, cfg.Workers),
		feeds:   make(map[feedKey]*feed), pipes: make(map[contract.PipelineKey]*pipe), skipLogged: make(map[[2]int64]bool),
	}
	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	if err := s.m.init(s); err != nil {
		return nil, err
	}
	return s, nil
}

// Register adds the service to a gRPC server.
func (s *Service) Register(g *grpc.Server) { tidestreamv1.RegisterEncoderServiceServer(g, s) }

// Stop ends every open stream with UNAVAILABLE, so a graceful server stop
// does not wait for them. Idempotent.
func (s *Service) Stop() {
	s.stopping.Store(true)
	s.epochs.EndAll(ErrClosed)
}

// Close stops the streams and the DDL followers, waits for them, and closes
// the sorter connections and registry clients. Idempotent.
func (s *Service) Close() {
	s.Stop()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	feeds := make([]*feed, 0, len(s.feeds))
	for _, f := range s.feeds {
		feeds = append(feeds, f)
	}
	s.mu.Unlock()
	s.cancel(ErrClosed)
	s.wg.Wait()
	for _, f := range feeds {
		f.mu.Lock()
		for _, hi := range f.histories {
			if hi.idle != nil {
				hi.idle.Stop()
			}
		}
		f.closeLocked()
		f.mu.Unlock()
	}
	_ = s.conns.Close()
	s.m.close()
}

// sorter returns the client of the sorter a route names, or of the default.
func (s *Service) sorter(route *tidestreamv1.Route) (tidestreamv1.SorterServiceClient, error) {
	addr := route.GetSorterAddr()
	if s.cfg.Upstream != nil && (addr == "" || addr == s.cfg.SorterAddr) {
		return s.cfg.Upstream, nil
	}
	if addr == "" {
		addr = s.cfg.SorterAddr
	}
	if addr == "" {
		return nil, contract.Status(contract.Fatal, codes.InvalidArgument,
			"encoder: bad SubscribeRequest: route.sorter_addr is required (this encoder has no default sorter)")
	}
	cc, err := s.conns.Get(addr)
	if errors.Is(err, contract.ErrConnsClosed) {
		return nil, contract.Status(contract.Transient, codes.Unavailable, "%v", ErrClosed)
	}
	if err != nil {
		return nil, contract.Status(contract.Fatal, codes.InvalidArgument, "encoder: route.sorter_addr %q: %v", addr, err)
	}
	return tidestreamv1.NewSorterServiceClient(cc), nil
}

// nextDDLPipeline names a new history's DDL pipeline. The epoch is the
// clock's, kept increasing: a restarted process that kept its member id
// (--member-id) must supersede its predecessor's stream on the sorter, not
// be fenced by it.
func (s *Service) nextDDLPipeline() (int64, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ddlSeq++
	s.ddlEpoch = max(s.ddlEpoch+1, uint64(time.Now().UnixNano()))
	return ddlPipelineID(s.cfg.MemberID, s.ddlSeq), s.ddlEpoch
}

// Subscribe streams a pipeline's rows as encoded records until the producer
// goes away, a newer epoch or subscriber replaces it, or the pipeline fails.
func (s *Service) Subscribe(req *tidestreamv1.SubscribeRequest, stream grpc.ServerStreamingServer[tidestreamv1.EncodedBatch]) error {
	if err := contract.Validate(stage, req); err != nil {
		return err
	}
	if req.GetPipelineId() < 0 {
		return contract.Status(contract.Fatal, codes.InvalidArgument, "encoder: bad SubscribeRequest: pipeline_id %d: negative ids are DDL pipelines", req.GetPipelineId())
	}
	if s.stopping.Load() {
		return contract.Status(contract.Transient, codes.Unavailable, "%v", ErrClosed)
	}
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	ns := nsOf(req.GetNamespace())
	key := contract.PipelineKey{Namespace: ns, Changefeed: req.GetChangefeedId(), Pipeline: req.GetPipelineId()}
	claim, err := s.epochs.Claim(stage, key, req.GetEpoch(), cancel)
	if err != nil {
		return err
	}
	defer claim.Release()
	if s.stopping.Load() { // Stop ran between the check above and the claim
		return contract.Status(contract.Transient, codes.Unavailable, "%v", ErrClosed)
	}

	p := &pipe{s: s, key: key, epoch: req.GetEpoch(), req: req}
	p.acked.Store(req.GetFromTs())
	for attempt := 1; ; attempt++ {
		f, err := s.feed(ctx, ns, req.GetChangefeedId())
		if err != nil {
			return s.status(ctx, stream, key, req.GetEpoch(), err)
		}
		hi, err := f.attach(ctx, p, req.GetFromTs(), req.GetRoute())
		if errors.Is(err, errFeedClosed) && attempt < 3 {
			continue
		}
		if err != nil {
			return s.status(ctx, stream, key, req.GetEpoch(), err)
		}
		p.f, p.hi = f, hi
		break
	}
	defer p.f.detach(p.hi, p)
	// A failed history fails its pipelines even when no row is waiting on it.
	stopLink := context.AfterFunc(p.hi.ctx, func() { cancel(context.Cause(p.hi.ctx)) })
	defer stopLink()

	s.mu.Lock()
	s.pipes[key] = p
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.pipes[key] == p {
			delete(s.pipes, key)
		}
		s.mu.Unlock()
	}()
	s.m.streams.Add(ctx, 1)
	defer s.m.streams.Add(context.WithoutCancel(ctx), -1)

	err = p.run(ctx, stream)
	return s.status(ctx, stream, key, req.GetEpoch(), err)
}

// status maps how a stream ended to what the producer gets.
func (s *Service) status(ctx context.Context, stream grpc.ServerStreamingServer[tidestreamv1.EncodedBatch], key contract.PipelineKey, epoch uint64, err error) error {
	if fenced := contract.EndedBy(stage, key, epoch, context.Cause(ctx)); fenced != nil {
		return fenced
	}
	if stream.Context().Err() != nil {
		return nil // the producer went away
	}
	if cause := context.Cause(ctx); cause != nil && err != nil && ctx.Err() != nil {
		err = cause
	}
	return toStatus(err)
}

// toStatus maps an error to the stream's status with the contract's outcome.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if he := (historyError{}); errors.As(err, &he) {
		// A DDL stream fenced or restarted is the history's trouble, not a
		// sign that this pipeline's producer is a zombie: restart it.
		switch o := contract.Classify(he.err); o {
		case contract.Fatal:
			return contract.Relay(stage, he.err)
		case contract.Transient:
			return contract.Status(contract.Transient, codes.Unavailable, "encoder: %v", err)
		default:
			return contract.Status(contract.Restart, codes.Aborted, "encoder: %v", err)
		}
	}
	switch {
	case errors.Is(err, ErrClosed), errors.Is(err, errHistoryIdle):
		return contract.Status(contract.Transient, codes.Unavailable, "encoder: %v", err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return contract.Status(contract.Transient, codes.Canceled, "encoder: %v", err)
	}
	if ue := (upstreamError{}); errors.As(err, &ue) {
		return contract.Relay(stage, ue.err)
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return contract.Status(contract.Restart, codes.Internal, "encoder: %v", err)
}

// Ack records the producer's checkpoint: schema versions below every
// pipeline's checkpoint are released, and the sorter the pipeline pulls
// from is told it may delete what is acknowledged. An ack never reaches past
// what was sent.
func (s *Service) Ack(ctx context.Context, pr *tidestreamv1.PipelineProgress) (*tidestreamv1.AckResponse, error) {
	key := contract.PipelineKey{Namespace: nsOf(pr.GetNamespace()), Changefeed: pr.GetChangefeedId(), Pipeline: pr.GetPipelineId()}
	s.mu.Lock()
	p := s.pipes[key]
	s.mu.Unlock()
	switch {
	case p == nil:
		return nil, status.Errorf(codes.NotFound, "encoder: pipeline %d of %s/%s is not served here", key.Pipeline, key.Namespace, key.Changefeed)
	case pr.GetEpoch() < p.epoch:
		return nil, status.Errorf(codes.FailedPrecondition, "encoder: pipeline %d: ack for epoch %d, current is %d", key.Pipeline, pr.GetEpoch(), p.epoch)
	case pr.GetEpoch() > p.epoch:
		return nil, status.Errorf(codes.NotFound, "encoder: pipeline %d: epoch %d is not served here (have %d)", key.Pipeline, pr.GetEpoch(), p.epoch)
	}
	ts := min(pr.GetCheckpointTs(), p.sentResolved.Load())
	for {
		cur := p.acked.Load()
		if ts <= cur {
			return &tidestreamv1.AckResponse{}, nil
		}
		if p.acked.CompareAndSwap(cur, ts) {
			break
		}
	}
	p.f.forget(p.hi)
	up, err := s.sorter(p.req.GetRoute())
	if err != nil {
		return nil, err
	}
	fwd := &tidestreamv1.PipelineProgress{ChangefeedId: pr.GetChangefeedId(), Namespace: pr.GetNamespace(),
		PipelineId: pr.GetPipelineId(), Epoch: p.epoch, CheckpointTs: ts}
	if _, err := up.Ack(ctx, fwd); err != nil {
		// A lost ack costs the sorter disk until the next one, never data.
		s.log.Debug("relay ack to sorter", "pipeline", key.Pipeline, "ts", ts, "err", err)
	}
	return &tidestreamv1.AckResponse{}, nil
}

// skipped warns once per table version whose rows are not replicated.
func (s *Service) skipped(key contract.PipelineKey, v *schema.Version) {
	k := [2]int64{v.Table.ID, v.Table.Version}
	s.skipMu.Lock()
	seen := s.skipLogged[k]
	s.skipLogged[k] = true
	s.skipMu.Unlock()
	if !seen {
		s.log.Warn("rows of a table version that is not replicated are skipped", "changefeed", key.Changefeed, "pipeline", key.Pipeline,
			"table", v.Table.Schema+"."+v.Table.Name, "reason", v.Eligibility.String(), "ddl", v.DDL)
	}
}
