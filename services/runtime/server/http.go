package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/tidestream/tidestream/services/runtime/health"
	"github.com/tidestream/tidestream/services/runtime/logging"
)

// HTTPConfig configures an HTTPServer.
type HTTPConfig struct {
	// Addr is the host:port to listen on; port 0 picks a free port.
	// Default 127.0.0.1:8300: the status server exposes pprof, so binding
	// every interface must be an explicit choice (--status-addr=:8300 in
	// the Kubernetes manifests, where probes come from the node).
	Addr string
	// ReadHeaderTimeout bounds how long a client may take to send request
	// headers, so idle or slow-loris connections cannot pin goroutines.
	// Allowed (0, 5m]; default 10s.
	ReadHeaderTimeout time.Duration
	// DrainTimeout bounds graceful shutdown; connections still busy after
	// it are closed. Allowed [0, 10m]; default 10s, which leaves most of
	// Kubernetes' default 30s grace period for the gRPC drain and etcd
	// cleanup that run alongside.
	DrainTimeout time.Duration
	// EnablePprof mounts net/http/pprof under /debug/pprof/ on the status
	// mux. Default true: a CPU profile from the live process is the fastest
	// way to explain lag, and the default Addr is loopback-only.
	EnablePprof bool
}

// DefaultHTTPConfig returns the status server defaults.
func DefaultHTTPConfig() HTTPConfig {
	return HTTPConfig{
		Addr:              "127.0.0.1:8300",
		ReadHeaderTimeout: 10 * time.Second,
		DrainTimeout:      10 * time.Second,
		EnablePprof:       true,
	}
}

// AddFlags registers --status-addr, --status-drain-timeout and --pprof.
func (c *HTTPConfig) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Addr, "status-addr", c.Addr, "host:port of the status HTTP server (/metrics, /healthz, /readyz, /debug/pprof)")
	fs.DurationVar(&c.DrainTimeout, "status-drain-timeout", c.DrainTimeout, "how long the status server waits for in-flight requests on shutdown")
	fs.BoolVar(&c.EnablePprof, "pprof", c.EnablePprof, "serve net/http/pprof under /debug/pprof/ on the status address")
}

// Validate reports the first invalid field.
func (c HTTPConfig) Validate() error {
	if err := validateAddr(c.Addr); err != nil {
		return fmt.Errorf("server: HTTPConfig.Addr: %w", err)
	}
	if c.ReadHeaderTimeout <= 0 || c.ReadHeaderTimeout > 5*time.Minute {
		return fmt.Errorf("server: HTTPConfig.ReadHeaderTimeout %v out of range (0, 5m]", c.ReadHeaderTimeout)
	}
	if c.DrainTimeout < 0 || c.DrainTimeout > 10*time.Minute {
		return fmt.Errorf("server: HTTPConfig.DrainTimeout %v out of range [0, 10m]", c.DrainTimeout)
	}
	return nil
}

func validateAddr(addr string) error {
	if addr == "" {
		return errors.New("must not be empty (host:port, port 0 for any free port)")
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	return nil
}

// StatusRoutes are the handlers NewStatusMux mounts. Nil fields are left
// out, so a tool that has no metrics can still serve health.
type StatusRoutes struct {
	// Metrics is mounted on /metrics (telemetry.Telemetry.Handler).
	Metrics http.Handler
	// Health provides /healthz, /readyz and /livez.
	Health *health.Checker
	// Pprof mounts net/http/pprof on /debug/pprof/.
	Pprof bool
}

// NewStatusMux returns a mux serving r. It is a plain *http.ServeMux so
// main can add role-specific endpoints next to the standard ones.
func NewStatusMux(r StatusRoutes) *http.ServeMux {
	mux := http.NewServeMux()
	if r.Metrics != nil {
		mux.Handle("GET /metrics", r.Metrics)
	}
	if r.Health != nil {
		mux.Handle("GET /healthz", r.Health.HealthzHandler())
		mux.Handle("GET /readyz", r.Health.ReadyzHandler())
		mux.Handle("GET /livez", r.Health.LivezHandler())
	}
	if r.Pprof {
		// Registered on our mux by hand: importing net/http/pprof also
		// registers on http.DefaultServeMux, which nothing in tidestream
		// serves, so that side effect stays unreachable.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// HTTPServer is an http.Server with a Listen/Run lifecycle.
type HTTPServer struct {
	cfg    HTTPConfig
	logger *slog.Logger
	srv    *http.Server

	lc lifecycle
}

// NewHTTPServer validates cfg and builds a server for handler. It does not
// listen; call Listen (to learn the port) or Run.
func NewHTTPServer(cfg HTTPConfig, handler http.Handler, logger *slog.Logger) (*HTTPServer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if handler == nil {
		return nil, errors.New("server: NewHTTPServer: nil handler")
	}
	logger = logging.Component(logger, "status-server")
	return &HTTPServer{
		cfg:    cfg,
		logger: logger,
		srv: &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: cfg.ReadHeaderTimeout,
			// No WriteTimeout: /debug/pprof/profile and /trace stream for
			// as long as the operator asked (30s by default), and a write
			// timeout would cut them off.
			IdleTimeout: 2 * time.Minute,
			ErrorLog:    slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		},
	}, nil
}

// Listen binds cfg.Addr and returns the bound address. Calling it is
// optional; Run listens if it has not been called.
func (s *HTTPServer) Listen() (net.Addr, error) {
	return s.lc.listen(s.cfg.Addr)
}

// Addr returns the bound address, or nil before Listen.
func (s *HTTPServer) Addr() net.Addr { return s.lc.addr() }

// Run serves until ctx is cancelled, then stops accepting, waits up to
// DrainTimeout for in-flight requests and closes whatever is left. It
// returns nil after a cancellation-driven stop and an error if listening or
// serving fails. Run may be called once.
func (s *HTTPServer) Run(ctx context.Context) error {
	lis, err := s.lc.start(s.cfg.Addr)
	if err != nil {
		return err
	}
	s.logger.Info("status server listening", "addr", lis.Addr().String())

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := s.srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("server: status http on %s: %w", lis.Addr(), err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		// A fresh context: ctx is already cancelled and would make
		// Shutdown skip the drain entirely.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.DrainTimeout)
		defer cancel()
		if err := s.srv.Shutdown(dctx); err != nil {
			s.logger.Warn("status server drain timed out, closing remaining connections",
				"drain_timeout", s.cfg.DrainTimeout)
			_ = s.srv.Close()
		}
		return nil
	})
	err = g.Wait()
	// Serve closes the listener itself, except when Shutdown won the race
	// and Serve was never entered.
	_ = lis.Close()
	s.logger.Info("status server stopped")
	return err
}

// lifecycle guards the listen-then-run-once sequence shared by both servers.
type lifecycle struct {
	mu      sync.Mutex
	lis     net.Listener
	started bool
}

func (l *lifecycle) listen(addr string) (net.Addr, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lis != nil {
		return nil, fmt.Errorf("server: already listening on %s", l.lis.Addr())
	}
	if l.started {
		return nil, errors.New("server: Listen after Run")
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("server: listen on %s: %w", addr, err)
	}
	l.lis = lis
	return lis.Addr(), nil
}

func (l *lifecycle) addr() net.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lis == nil {
		return nil
	}
	return l.lis.Addr()
}

// start returns the listener to serve on, listening first if needed, and
// refuses a second Run: http.Server and grpc.Server cannot be restarted.
func (l *lifecycle) start(addr string) (net.Listener, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.started {
		return nil, errors.New("server: Run called twice")
	}
	l.started = true
	if l.lis == nil {
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("server: listen on %s: %w", addr, err)
		}
		l.lis = lis
	}
	return l.lis, nil
}
