package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/tidestream/tidestream/proto/contract"
	"github.com/tidestream/tidestream/services/runtime/health"
	"github.com/tidestream/tidestream/services/runtime/logging"
)

// GRPCConfig configures a GRPCServer.
type GRPCConfig struct {
	// Addr is the host:port to listen on; port 0 picks a free port.
	// Default 127.0.0.1:8301 (loopback, like the status server: `cdc
	// server` needs no more; split roles set --grpc-addr=:8301).
	Addr string
	// MaxRecvMsgSize is the largest message the server accepts, in bytes.
	// Internal streams carry one batch per message and a single TiDB row
	// may be several MiB (txn-entry-size-limit defaults to 6 MiB), so
	// gRPC's own 4 MiB default would reject legitimate batches. Allowed
	// [1 MiB, 1 GiB]; default the stream contract's MaxMessageBytes
	// (256 MiB), which every batch a stage sends keeps under. A smaller
	// value can refuse a legitimate single large row.
	MaxRecvMsgSize int
	// DrainTimeout bounds GracefulStop. Subscribe streams are long-lived
	// and end only when the stage cancels them, so without a bound a drain
	// could wait forever. Allowed [0, 10m]; default 15s.
	DrainTimeout time.Duration
	// KeepaliveMinTime is the shortest client ping interval tolerated
	// (enforcement policy). gRPC's default of 5 minutes makes the server
	// answer the 30s pings of DefaultClientKeepalive with GOAWAY
	// "too_many_pings", which kills every stream on the connection.
	// Allowed [1s, 5m]; default 10s, a third of the clients' interval so
	// jitter never trips it.
	KeepaliveMinTime time.Duration
	// KeepaliveTime is how long a connection may be idle before the server
	// pings it. A downstream pod that disappears without closing its TCP
	// connection (node loss) otherwise holds its stream, and the sorter's
	// memory budget behind it, until the kernel's TCP keepalive notices
	// after about two hours. Allowed [1s, 2h]; default 30s.
	KeepaliveTime time.Duration
	// KeepaliveTimeout is how long the server waits for a ping ack before
	// closing the connection. Allowed [1s, 5m]; default 10s, so a dead peer
	// is detected within about 40s.
	KeepaliveTimeout time.Duration
}

// DefaultGRPCConfig returns the gRPC server defaults.
func DefaultGRPCConfig() GRPCConfig {
	return GRPCConfig{
		Addr:             "127.0.0.1:8301",
		MaxRecvMsgSize:   contract.MaxMessageBytes,
		DrainTimeout:     15 * time.Second,
		KeepaliveMinTime: 10 * time.Second,
		KeepaliveTime:    30 * time.Second,
		KeepaliveTimeout: 10 * time.Second,
	}
}

// AddFlags registers --grpc-addr, --grpc-max-recv-msg-size and
// --grpc-drain-timeout. Keepalive settings are not flags: they must match
// the clients, which are built from the same defaults.
func (c *GRPCConfig) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Addr, "grpc-addr", c.Addr, "host:port of the gRPC server")
	fs.IntVar(&c.MaxRecvMsgSize, "grpc-max-recv-msg-size", c.MaxRecvMsgSize, "largest gRPC message accepted, in bytes")
	fs.DurationVar(&c.DrainTimeout, "grpc-drain-timeout", c.DrainTimeout, "how long in-flight RPCs may run on shutdown before the server stops hard")
}

// Validate reports the first invalid field.
func (c GRPCConfig) Validate() error {
	if err := validateAddr(c.Addr); err != nil {
		return fmt.Errorf("server: GRPCConfig.Addr: %w", err)
	}
	if c.MaxRecvMsgSize < 1<<20 || c.MaxRecvMsgSize > 1<<30 {
		return fmt.Errorf("server: GRPCConfig.MaxRecvMsgSize %d out of range [1048576 (1 MiB), 1073741824 (1 GiB)]", c.MaxRecvMsgSize)
	}
	for _, d := range []struct {
		name     string
		v        time.Duration
		min, max time.Duration
		rng      string
	}{
		{"DrainTimeout", c.DrainTimeout, 0, 10 * time.Minute, "[0, 10m]"},
		{"KeepaliveMinTime", c.KeepaliveMinTime, time.Second, 5 * time.Minute, "[1s, 5m]"},
		{"KeepaliveTime", c.KeepaliveTime, time.Second, 2 * time.Hour, "[1s, 2h]"},
		{"KeepaliveTimeout", c.KeepaliveTimeout, time.Second, 5 * time.Minute, "[1s, 5m]"},
	} {
		if d.v < d.min || d.v > d.max {
			return fmt.Errorf("server: GRPCConfig.%s %v out of range %s", d.name, d.v, d.rng)
		}
	}
	return nil
}

// GRPCServer is a grpc.Server with the health service registered and a
// Listen/Run lifecycle. It implements grpc.ServiceRegistrar, so generated
// RegisterXxxServer functions accept it directly.
type GRPCServer struct {
	cfg     GRPCConfig
	logger  *slog.Logger
	checker *health.Checker
	srv     *grpc.Server

	lc lifecycle
}

// NewGRPCServer validates cfg and builds a server with checker's health
// service registered. opts are appended after ours, so main can add
// credentials and the otelgrpc stats handler, or override a default.
// Server reflection is deliberately not registered: it would let anyone who
// reaches the port enumerate the control API.
func NewGRPCServer(cfg GRPCConfig, checker *health.Checker, logger *slog.Logger, opts ...grpc.ServerOption) (*GRPCServer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if checker == nil {
		return nil, errors.New("server: NewGRPCServer: nil health checker (every role must publish readiness)")
	}
	base := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime: cfg.KeepaliveMinTime,
			// Clients keep pinging while they have no active stream, e.g.
			// a downstream stage between pipeline restarts; without this
			// those pings count as abuse and the connection is dropped.
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    cfg.KeepaliveTime,
			Timeout: cfg.KeepaliveTimeout,
			// MaxConnectionAge stays infinite: forcing reconnects would
			// restart every long-lived Subscribe stream on the connection.
		}),
		// Stop (the hard stop after DrainTimeout) then waits for handlers
		// to return, so Run does not return while a handler may still use
		// resources main is about to close (pebble, Kafka client).
		// Handlers must honour their context for this to terminate.
		grpc.WaitForHandlers(true),
	}
	s := &GRPCServer{
		cfg:     cfg,
		logger:  logging.Component(logger, "grpc-server"),
		checker: checker,
		srv:     grpc.NewServer(append(base, opts...)...),
	}
	checker.Register(s.srv)
	return s, nil
}

// RegisterService implements grpc.ServiceRegistrar. Register every service
// before Run.
func (s *GRPCServer) RegisterService(desc *grpc.ServiceDesc, impl any) {
	s.srv.RegisterService(desc, impl)
}

// Server returns the underlying grpc.Server, for APIs that need the
// concrete type.
func (s *GRPCServer) Server() *grpc.Server { return s.srv }

// Listen binds cfg.Addr and returns the bound address. Calling it is
// optional; Run listens if it has not been called. A listener opened by
// Listen is closed by Run, so call Run afterwards.
func (s *GRPCServer) Listen() (net.Addr, error) {
	return s.lc.listen(s.cfg.Addr)
}

// Addr returns the bound address, or nil before Listen.
func (s *GRPCServer) Addr() net.Addr { return s.lc.addr() }

// Run serves until ctx is cancelled. Then it drains the health checker (so
// watchers stop routing here), stops accepting, lets in-flight RPCs finish
// for up to DrainTimeout and cancels whatever is left. It returns nil after
// a cancellation-driven stop and an error if listening or serving fails.
// Run may be called once.
func (s *GRPCServer) Run(ctx context.Context) error {
	lis, err := s.lc.start(s.cfg.Addr)
	if err != nil {
		return err
	}
	s.logger.Info("grpc server listening", "addr", lis.Addr().String())

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		err := s.srv.Serve(lis)
		// ErrServerStopped: ctx was cancelled before Serve was entered.
		if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("server: grpc on %s: %w", lis.Addr(), err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		s.stop()
		return nil
	})
	err = g.Wait()
	s.logger.Info("grpc server stopped")
	return err
}

func (s *GRPCServer) stop() {
	// Main should already have drained on SIGTERM; doing it again is free
	// and covers a stop caused by another component failing.
	s.checker.Drain()
	// GracefulStop sends GOAWAY and waits for every RPC, including
	// Subscribe streams that only end when their stage's context ends.
	// The timer turns that into a bounded wait: Stop closes the transports,
	// which cancels the handlers' contexts and unblocks GracefulStop.
	hardDone := make(chan struct{})
	hard := time.AfterFunc(s.cfg.DrainTimeout, func() {
		defer close(hardDone)
		s.logger.Warn("grpc drain timed out, cancelling remaining RPCs", "drain_timeout", s.cfg.DrainTimeout)
		s.srv.Stop()
	})
	s.srv.GracefulStop()
	if !hard.Stop() {
		// The timer fired: wait for Stop to finish so that Run never
		// returns while the timer's goroutine still touches the server.
		<-hardDone
	}
}

// DefaultClientKeepalive returns client keepalive parameters that the
// default server enforcement policy accepts: the stream contract's, which
// every stage dials with (contract.DialOptions). A client pinging more often
// than KeepaliveMinTime is sent GOAWAY and loses every stream on the
// connection.
func DefaultClientKeepalive() keepalive.ClientParameters { return contract.ClientKeepalive() }
