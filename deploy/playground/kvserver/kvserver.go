// Package kvserver serves the playground's TiKV gRPC port: the tikvpb.Tikv service
// (unistore's *tikv.Server) plus whatever else the caller registers on the same
// port (the change-data emulator's cdcpb.ChangeData), with the transport settings a
// TiKV has and a fault switch that makes the store look down.
//
// It is responsible for the listener, the gRPC server options, the interceptor
// chain and the unavailability window. It is not responsible for what the services
// do: requests go unchanged to the registered implementations.
package kvserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"sync"
	"time"

	"github.com/pingcap/kvproto/pkg/tikvpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

const (
	// TiKV does not limit what it receives; client-go sends whole prewrite batches.
	maxRecvMsgSize = math.MaxInt32
	// TiKV's default send limit is 10 MiB, but TiKV caps its responses (coprocessor
	// paging, batch sizes) and unistore does not: its BatchCommands handler packs every
	// ready response into one message. A higher limit avoids stream failures a real
	// TiKV would not have.
	maxSendMsgSize = 64 << 20

	// client-go and TiCDC-style clients ping every 10 s (3 s timeout) even between
	// RPCs; grpc-go's default enforcement (5 min, no pings without streams) would
	// answer those pings with GOAWAY "too_many_pings".
	keepaliveMinPingInterval = time.Second
	// The server side pings idle clients like TiKV (grpc-keepalive-time/-timeout).
	keepaliveTime    = 10 * time.Second
	keepaliveTimeout = 3 * time.Second

	// closeGrace bounds GracefulStop: in-flight unary RPCs get this long to finish.
	closeGrace = 5 * time.Second
	// abortGrace is how long an aborted stream's handler gets to return by itself
	// (it watches its context) before the RPC is ended without it.
	abortGrace = 200 * time.Millisecond
	// fenceWait bounds the wait for a send in progress when a stream is ended
	// without its handler; a send blocked longer is on a client that stopped reading.
	fenceWait = time.Second
)

// Errors the fault switch and shutdown answer with.
var (
	errUnavailable = status.Error(codes.Unavailable, "store unavailable (fault injection)")
	errClosing     = status.Error(codes.Unavailable, "store is shutting down")
)

// Config configures a Server.
type Config struct {
	// Addr is the host:port to listen on (e.g. 127.0.0.1:20160); port 0 picks one.
	Addr string
	// KV serves the tikvpb.Tikv service: the unistore *tikv.Server
	// (store.Store.Server). Required.
	KV tikvpb.TikvServer
	// Register adds further services to the same gRPC server before it serves
	// (e.g. cdcpb.ChangeData). kvserver itself registers tikvpb.Tikv and
	// grpc.health.v1.Health.
	Register []func(*grpc.Server)
	// Unary and Stream are interceptors for every service on the port. They run
	// after kvserver's own, so a call rejected by the fault switch never reaches them,
	// and they see the stream kvserver wraps (its context ends on a fault).
	Unary  []grpc.UnaryServerInterceptor
	Stream []grpc.StreamServerInterceptor
	// Logger receives the server's own messages; nil means slog.Default().
	Logger *slog.Logger
}

// Validate reports the first missing or bad field.
func (c Config) Validate() error {
	if c.Addr == "" {
		return errors.New("kvserver: Config.Addr is required")
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("kvserver: Config.Addr %q: %w", c.Addr, err)
	}
	if c.KV == nil {
		return errors.New("kvserver: Config.KV is required")
	}
	for i, r := range c.Register {
		if r == nil {
			return fmt.Errorf("kvserver: Config.Register[%d] is nil", i)
		}
	}
	return nil
}

// Server is a running TiKV gRPC port.
type Server struct {
	log    *slog.Logger
	lis    net.Listener
	grpc   *grpc.Server
	health *health.Server

	serveDone chan struct{}
	serveErr  error // set before serveDone closes

	mu      sync.Mutex
	until   time.Time // end of the unavailability window; zero when none
	closing bool
	streams map[*trackedStream]struct{}

	closeOnce sync.Once
	closeErr  error
}

// Start listens on cfg.Addr and serves in the background; the port accepts
// connections when Start returns.
func Start(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{
		log:       log.With("component", "kvserver"),
		serveDone: make(chan struct{}),
		streams:   make(map[*trackedStream]struct{}),
	}
	unary := append([]grpc.UnaryServerInterceptor{s.unaryInterceptor}, cfg.Unary...)
	stream := append([]grpc.StreamServerInterceptor{s.streamInterceptor}, cfg.Stream...)
	s.grpc = grpc.NewServer(
		grpc.MaxRecvMsgSize(maxRecvMsgSize),
		grpc.MaxSendMsgSize(maxSendMsgSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             keepaliveMinPingInterval,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    keepaliveTime,
			Timeout: keepaliveTimeout,
		}),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
	)
	tikvpb.RegisterTikvServer(s.grpc, cfg.KV)
	// TiKV serves gRPC health checks, and client-go relies on them: after a failed
	// RPC it probes the store's health service and treats any error, Unimplemented
	// included, as "unreachable" until a probe succeeds. During an unavailability
	// window the probe fails like every other call.
	s.health = health.NewServer()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	for _, r := range cfg.Register {
		r(s.grpc)
	}

	lis, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("kvserver: listen on %s: %w", cfg.Addr, err)
	}
	s.lis = lis
	go func() {
		defer close(s.serveDone)
		s.serveErr = s.grpc.Serve(lis)
	}()
	s.log.Info("serving", "addr", s.Addr())
	return s, nil
}

// Addr is the address the server listens on (host:port, the actual port).
func (s *Server) Addr() string { return s.lis.Addr().String() }

// SetUnavailable makes the store look down for d: every RPC that starts in the
// window (unary or stream, on any service of the port) fails with
// codes.Unavailable, and every stream open now is ended with that code (its
// handler's context ends, and no message the client sends on it from now on is
// handed to the handler). Requests a stream handler already received may still
// be applied while their responses are lost, as with a TiKV that dies mid-request
// (TiDB then reports an async-commit / 1PC result as undetermined). A later call
// replaces the window; d <= 0 ends it.
func (s *Server) SetUnavailable(d time.Duration) {
	s.mu.Lock()
	if d <= 0 {
		s.until = time.Time{}
		s.mu.Unlock()
		s.log.Info("unavailability window cleared")
		return
	}
	s.until = time.Now().Add(d)
	open := make([]*trackedStream, 0, len(s.streams))
	for ts := range s.streams {
		open = append(open, ts)
	}
	s.mu.Unlock()
	for _, ts := range open {
		ts.abort(errUnavailable)
	}
	s.log.Info("store unavailable (fault injection)", "for", d, "streams_ended", len(open))
}

// Unavailable reports whether the store is in an unavailability window now, and
// when that window ends.
func (s *Server) Unavailable() (bool, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.until.IsZero() || !time.Now().Before(s.until) {
		return false, time.Time{}
	}
	return true, s.until
}

// Close ends open streams, lets in-flight unary RPCs finish for a bounded time and
// then stops the server. It is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closing = true
		open := make([]*trackedStream, 0, len(s.streams))
		for ts := range s.streams {
			open = append(open, ts)
		}
		s.mu.Unlock()
		s.health.Shutdown()
		// Streams (BatchCommands above all) stay open as long as their clients
		// want, so GracefulStop would always run into its bound without this.
		for _, ts := range open {
			ts.abort(errClosing)
		}
		stopped := make(chan struct{})
		go func() {
			s.grpc.GracefulStop()
			close(stopped)
		}()
		t := time.NewTimer(closeGrace)
		defer t.Stop()
		select {
		case <-stopped:
		case <-t.C:
			s.log.Warn("graceful stop timed out; stopping", "after", closeGrace)
			s.grpc.Stop()
			<-stopped
		}
		<-s.serveDone
		if s.serveErr != nil && !errors.Is(s.serveErr, grpc.ErrServerStopped) {
			s.closeErr = fmt.Errorf("kvserver: serve: %w", s.serveErr)
		}
	})
	return s.closeErr
}

// rejectNewLocked returns the error a call starting now gets, or nil. s.mu is held.
func (s *Server) rejectNewLocked() error {
	if s.closing {
		return errClosing
	}
	if !s.until.IsZero() && time.Now().Before(s.until) {
		return errUnavailable
	}
	return nil
}

func (s *Server) unaryInterceptor(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	s.mu.Lock()
	err := s.rejectNewLocked()
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// streamInterceptor runs the handler on a tracked stream so that a fault can end
// the stream even when the handler does not watch its context: unistore's
// BatchCommands, for one, sits in Recv until the client sends or the transport
// ends the stream, and only the RPC returning ends it.
func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	ts := &trackedStream{
		ServerStream: ss,
		ctx:          ctx,
		aborted:      make(chan struct{}),
		fenced:       make(chan struct{}),
		sendSem:      make(chan struct{}, 1),
	}
	s.mu.Lock()
	if err := s.rejectNewLocked(); err != nil {
		s.mu.Unlock()
		return err
	}
	s.streams[ts] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.streams, ts)
		s.mu.Unlock()
	}()

	done := make(chan error, 1)
	go func() { done <- handler(srv, ts) }()
	select {
	case err := <-done:
		return err
	case <-ts.aborted:
	}
	cancel()
	t := time.NewTimer(abortGrace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		// The handler goes on until the transport ends the stream (after this
		// returns); its later sends fail instead of racing the status write.
		ts.fence()
	}
	return ts.abortErr
}

// trackedStream is a server stream that a fault can end: on abort its context is
// cancelled and it delivers no further messages; once fenced its sends fail
// without touching the transport.
type trackedStream struct {
	grpc.ServerStream
	ctx context.Context

	abortOnce sync.Once
	abortErr  error // set before aborted closes
	aborted   chan struct{}

	fenceOnce sync.Once
	fenced    chan struct{}
	sendSem   chan struct{} // held for the duration of a send
}

func (t *trackedStream) Context() context.Context { return t.ctx }

func (t *trackedStream) abort(err error) {
	t.abortOnce.Do(func() {
		t.abortErr = err
		close(t.aborted)
	})
}

// fence stops further sends and waits (bounded) for one in progress, so that the
// stream's status can be written without a concurrent send.
func (t *trackedStream) fence() {
	t.fenceOnce.Do(func() {
		close(t.fenced)
		w := time.NewTimer(fenceWait)
		defer w.Stop()
		select {
		case t.sendSem <- struct{}{}: // never released: no send goes through again
		case <-w.C:
		}
	})
}

// RecvMsg hands the handler nothing more once the stream is aborted: a request
// the client sent before it learnt of the fault must not be executed after the
// store went "down" (the client sees the stream fail, as with a dead TiKV).
func (t *trackedStream) RecvMsg(m any) error {
	err := t.ServerStream.RecvMsg(m)
	select {
	case <-t.aborted:
		return t.abortErr
	default:
		return err
	}
}

func (t *trackedStream) SendMsg(m any) error {
	select {
	case t.sendSem <- struct{}{}:
	case <-t.fenced:
		return t.abortErr
	}
	defer func() { <-t.sendSem }()
	select {
	case <-t.fenced:
		return t.abortErr
	default:
	}
	return t.ServerStream.SendMsg(m)
}
