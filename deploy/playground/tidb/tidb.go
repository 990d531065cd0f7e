package tidb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pingcap/tidb/pkg/config"
	"github.com/pingcap/tidb/pkg/domain"
	"github.com/pingcap/tidb/pkg/kv"
	"github.com/pingcap/tidb/pkg/server"
	"github.com/pingcap/tidb/pkg/session"
	"github.com/pingcap/tidb/pkg/sessionctx/variable"
	"github.com/pingcap/tidb/pkg/store/mockstore/mockstorage"
	"github.com/tikv/client-go/v2/tikv"
	tikvutil "github.com/tikv/client-go/v2/util"
	pd "github.com/tikv/pd/client"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Config configures the in-process TiDB.
type Config struct {
	// Host is the address the SQL and status ports listen on; "" means 127.0.0.1.
	Host string
	// SQLPort is the MySQL protocol port and StatusPort the status HTTP port;
	// 0 picks a free one (see Server.SQLAddr, Server.StatusAddr).
	SQLPort, StatusPort int
	// PDAddr is the PD port (host:port). Required.
	PDAddr string
	// Dir holds TiDB's own files: its log, slow log and temporary spill files.
	// TiDB's data lives in the KV store. Required.
	Dir string
	// Logger receives this package's messages (TiDB's own go to <Dir>/tidb.log);
	// nil means slog.Default().
	Logger *slog.Logger
	// ExtraStatusHandlers are served on the status port next to TiDB's status API,
	// keyed by http.ServeMux pattern (e.g. "/fault/"). "/" is TiDB's.
	ExtraStatusHandlers map[string]http.Handler
}

// Validate reports the first missing or bad field.
func (c Config) Validate() error {
	if c.PDAddr == "" {
		return errors.New("tidb: Config.PDAddr is required")
	}
	if _, _, err := net.SplitHostPort(c.PDAddr); err != nil {
		return fmt.Errorf("tidb: Config.PDAddr %q: %w", c.PDAddr, err)
	}
	if c.Dir == "" {
		return errors.New("tidb: Config.Dir is required")
	}
	for name, port := range map[string]int{"SQLPort": c.SQLPort, "StatusPort": c.StatusPort} {
		if port < 0 || port > 65535 {
			return fmt.Errorf("tidb: Config.%s %d out of range", name, port)
		}
	}
	if c.SQLPort != 0 && c.SQLPort == c.StatusPort {
		return errors.New("tidb: Config.SQLPort and StatusPort are the same")
	}
	for pattern, h := range c.ExtraStatusHandlers {
		if pattern == "/" || pattern == "" {
			return fmt.Errorf("tidb: Config.ExtraStatusHandlers: pattern %q would hide TiDB's status API", pattern)
		}
		if h == nil {
			return fmt.Errorf("tidb: Config.ExtraStatusHandlers[%q] is nil", pattern)
		}
	}
	return nil
}

// Timeouts of the PD client; the values tidb-server uses by default.
const (
	pdGRPCKeepaliveTime    = 10 * time.Second
	pdGRPCKeepaliveTimeout = 3 * time.Second
)

// Shutdown bounds: idle client connections are closed at once, connections in a
// transaction get drainWait to finish it.
const (
	drainWait   = 2 * time.Second
	cancelWait  = time.Second
	runExitWait = 5 * time.Second
)

// Server is a running TiDB.
type Server struct {
	log      *slog.Logger
	storage  kv.Storage
	pdCancel context.CancelFunc
	dom      *domain.Domain
	svr      *server.Server
	runErr   chan error
	status   *statusFront

	sqlAddr, statusAddr string
	// keepActive: an abandoned bootstrap still holds TiDB's globals.
	keepActive bool

	closeOnce sync.Once
	closeErr  error
}

// Start connects to PD and the KV port, bootstraps the cluster if it is new,
// and serves MySQL and the status API. It returns once the SQL port accepts
// connections. ctx bounds the start only.
func Start(ctx context.Context, cfg Config) (s *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if !active.CompareAndSwap(false, true) {
		return nil, errors.New("tidb: a TiDB server is already running in this process (TiDB's state is process-global)")
	}
	began := time.Now()
	s = &Server{log: cfg.Logger.With("component", "tidb"), runErr: make(chan error, 1)}
	statusLis, err := listenStatus(net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.StatusPort)))
	if err != nil {
		active.Store(false)
		return nil, err
	}
	// The failing return has already set the named result s to nil; the
	// cleanup works on the server it started (a taken SQL port used to
	// panic here and hide the bind error).
	self := s
	defer func() {
		if err != nil {
			if self.status == nil {
				statusLis.Close()
			}
			self.shutdown()
			s = nil
		}
	}()

	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("tidb: create dir: %w", err)
	}
	tc, err := tidbConfig(cfg)
	if err != nil {
		return nil, err
	}
	if err := installGlobals(tc); err != nil {
		return nil, err
	}

	s.storage, s.pdCancel, err = openStorage(ctx, cfg.PDAddr, tc, s.log)
	if err != nil {
		return nil, err
	}
	s.log.Debug("connected to PD", "elapsed", time.Since(began))

	// BootstrapSession has no context and retries on its own for minutes.
	type bootResult struct {
		dom *domain.Domain
		err error
	}
	boot := make(chan bootResult, 1)
	storage := s.storage
	go func() {
		dom, err := session.BootstrapSession(storage)
		boot <- bootResult{dom, err}
	}()
	select {
	case r := <-boot:
		if r.err != nil {
			return nil, fmt.Errorf("tidb: bootstrap: %w", r.err)
		}
		s.dom = r.dom
	case <-ctx.Done():
		// Closing the storage under the bootstrap makes it give up sooner. It keeps
		// TiDB's globals until it has, so the next Start waits its turn.
		s.storage, s.keepActive = nil, true
		pdCancel := s.pdCancel
		go func() {
			defer active.Store(false)
			storage.Close()
			if r := <-boot; r.dom != nil {
				r.dom.Close()
			}
			pdCancel()
		}()
		return nil, fmt.Errorf("tidb: bootstrap: %w", ctx.Err())
	}
	s.log.Debug("bootstrapped", "elapsed", time.Since(began))

	s.svr, err = server.NewServer(tc, server.NewTiDBDriver(s.storage))
	if err != nil {
		return nil, fmt.Errorf("tidb: new server: %w", err)
	}
	s.svr.SetDomain(s.dom)
	go s.dom.ExpensiveQueryHandle().SetSessionManager(s.svr).Run()
	go s.dom.MemoryUsageAlarmHandle().SetSessionManager(s.svr).Run()
	go s.dom.ServerMemoryLimitHandle().SetSessionManager(s.svr).Run()
	s.dom.InfoSyncer().SetSessionManager(s.svr)

	// RunInGoTestChan closes once Run has its listeners (status, then SQL).
	server.RunInGoTest = true
	listening := make(chan struct{})
	server.RunInGoTestChan = listening
	svr := s.svr
	go func() { s.runErr <- svr.Run(s.dom) }()
	select {
	case <-listening:
	case err := <-s.runErr:
		s.runErr <- err
		return nil, fmt.Errorf("tidb: serve: %w", err)
	case <-ctx.Done():
		return nil, fmt.Errorf("tidb: waiting for the SQL port: %w", ctx.Err())
	}
	s.sqlAddr = svr.ListenAddr().String()
	variable.SetSysVar(variable.Port, strconv.Itoa(svr.ListenAddr().(*net.TCPAddr).Port))
	s.status = serveStatus(statusLis, svr.StatusListenerAddr().String(), cfg.ExtraStatusHandlers, s.log)
	s.statusAddr = statusLis.Addr().String()
	s.log.Info("TiDB ready", "sql", s.sqlAddr, "status", s.statusAddr, "startup", time.Since(began).Round(time.Millisecond))
	return s, nil
}

// openStorage builds TiDB's kv.Storage the way TiDB's tikv driver does (PD client,
// API V1 codec, client-go RPC client) but without the driver's etcd and PD HTTP
// dependencies; see the package comment.
//
// The returned cancel func ends the PD client's context; call it after closing
// the storage.
func openStorage(ctx context.Context, pdAddr string, tc *config.Config, log *slog.Logger) (_ kv.Storage, _ context.CancelFunc, err error) {
	calls := pdCallLog{log: log}
	ka := keepalive.ClientParameters{Time: pdGRPCKeepaliveTime, Timeout: pdGRPCKeepaliveTimeout}
	// The PD client lives as long as the context it is created with, so that
	// cannot be ctx; ctx only bounds its first connection.
	pdCtx, pdCancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, pdCancel)
	pdCli, err := pd.NewClientWithContext(pdCtx, []string{pdAddr}, pd.SecurityOption{},
		pd.WithGRPCDialOptions(
			grpc.WithKeepaliveParams(ka),
			grpc.WithChainUnaryInterceptor(calls.unary),
			grpc.WithChainStreamInterceptor(calls.stream),
		),
		pd.WithCustomTimeoutOption(time.Duration(tc.PDClient.PDServerTimeout)*time.Second),
	)
	defer func() {
		if err != nil {
			pdCancel()
		}
	}()
	if !stop() {
		if err == nil {
			pdCli.Close()
		}
		return nil, nil, fmt.Errorf("tidb: connect to PD at %s: %w", pdAddr, ctx.Err())
	}
	if err != nil {
		return nil, nil, fmt.Errorf("tidb: connect to PD at %s: %w", pdAddr, err)
	}
	intercepted := tikvutil.InterceptedPDClient{Client: pdCli}
	codecPD := tikv.NewCodecPDClient(tikv.ModeTxn, intercepted)
	rpc := tikv.NewRPCClient(tikv.WithCodec(codecPD.GetCodec()))
	uuid := fmt.Sprintf("tikv-%d", pdCli.GetClusterID(ctx))
	// The safe point lives in memory: no GC worker runs (mockstorage does not start
	// one), so nothing but client-go's own check reads it.
	kvStore, err := tikv.NewKVStore(uuid, codecPD, tikv.NewMockSafePointKV(), rpc)
	if err != nil {
		rpc.Close()
		pdCli.Close()
		return nil, nil, fmt.Errorf("tidb: client-go store: %w", err)
	}
	storage, err := mockstorage.NewMockStorage(kvStore)
	if err != nil {
		kvStore.Close()
		return nil, nil, fmt.Errorf("tidb: wrap store: %w", err)
	}
	return storage, pdCancel, nil
}

// SQLAddr is the MySQL protocol address (host:port).
func (s *Server) SQLAddr() string { return s.sqlAddr }

// StatusAddr is the status HTTP address (host:port).
func (s *Server) StatusAddr() string { return s.statusAddr }

// Close stops the SQL and status servers, closes client connections, the domain
// and the storage. It is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.shutdown() })
	return s.closeErr
}

// shutdown releases whatever Start got to, in reverse: status front, SQL server
// (listeners, then connections), domain, storage.
func (s *Server) shutdown() error {
	if !s.keepActive {
		defer active.Store(false)
	}
	var errs []error
	if s.status != nil {
		if err := s.status.close(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.svr != nil {
		s.svr.Close()
		s.svr.DrainClients(drainWait, cancelWait)
		s.svr.KillSysProcesses()
		select {
		case err := <-s.runErr:
			if err != nil && !isClosedListener(err) {
				errs = append(errs, fmt.Errorf("tidb: serve: %w", err))
			}
		case <-time.After(runExitWait):
			errs = append(errs, errors.New("tidb: SQL server did not stop"))
		}
	}
	if s.dom != nil {
		s.dom.Close()
	}
	if s.storage != nil {
		if err := s.storage.Close(); err != nil {
			errs = append(errs, fmt.Errorf("tidb: close storage: %w", err))
		}
		s.pdCancel()
	}
	return errors.Join(errs...)
}

func isClosedListener(err error) bool {
	return errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "use of closed network connection")
}
