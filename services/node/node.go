// Package node assembles one tidestream process: the roles it runs, the
// etcd it keeps state in (embedded or external), its gRPC and status
// servers, telemetry and readiness. `cdc server` and `cdc coordinator` are
// thin flag layers over Run; the in-process test runner calls Run directly.
//
// It is not responsible for what a role does, only for starting the roles
// in order, publishing readiness once they are up, and stopping them in the
// right order.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"

	"github.com/tidestream/tidestream/coordinator"
	"github.com/tidestream/tidestream/coordinator/control"
	"github.com/tidestream/tidestream/coordinator/etcdembed"
	"github.com/tidestream/tidestream/coordinator/upstream"
	"github.com/tidestream/tidestream/puller/service"
	"github.com/tidestream/tidestream/services/runtime/health"
	"github.com/tidestream/tidestream/services/runtime/logging"
	"github.com/tidestream/tidestream/services/runtime/server"
	"github.com/tidestream/tidestream/services/runtime/telemetry"
	"github.com/tidestream/tidestream/sorter/engine"
	sorter "github.com/tidestream/tidestream/sorter/service"
)

// Config is the configuration of one process.
type Config struct {
	// Roles run by this process: coordinator, puller.
	Roles []string
	// Addr is where the gRPC server (control API, stage streams) listens.
	// Default 127.0.0.1:8300, the address TiCDC users pass as --server.
	Addr string
	// AdvertiseAddr is the address other processes use to reach Addr;
	// default Addr as bound.
	AdvertiseAddr string
	// StatusAddr serves /metrics, /healthz, /readyz, /debug/pprof.
	StatusAddr string
	// DataDir holds the embedded etcd's data (and later the sorter's).
	DataDir string
	// Etcd lists external etcd endpoints; empty runs an embedded etcd
	// under DataDir.
	Etcd []string
	// PD is the default upstream for changefeeds created without --pd.
	PD []string
	// ClusterID separates tidestream clusters sharing an etcd.
	ClusterID string
	// MemberID identifies this process; default a new UUID per start, as
	// TiCDC's capture id: a restarted process is a new member.
	MemberID string
	// SessionTTL is the etcd session (lease) TTL.
	SessionTTL time.Duration
	// GCTTL is TiCDC's gc-ttl.
	GCTTL time.Duration
	// Version is the binary's version.
	Version string
	// PullerMemoryQuota bounds the event bytes the puller role holds
	// between TiKV and its subscribers.
	PullerMemoryQuota int64
	// SorterMemoryQuota bounds the sorter role's pebble memory (memtables,
	// block cache, iterators); beyond it events live on disk under DataDir.
	SorterMemoryQuota int64
}

// Roles.
const (
	RoleCoordinator = "coordinator"
	RolePuller      = "puller"
	RoleSorter      = "sorter"
)

// DefaultConfig returns the defaults of `cdc server`.
func DefaultConfig() Config {
	cc := coordinator.DefaultConfig()
	return Config{
		Roles:             []string{RoleCoordinator},
		PullerMemoryQuota: service.DefaultMemoryQuota,
		SorterMemoryQuota: engine.DefaultMemoryQuota,
		Addr:              "127.0.0.1:8300",
		StatusAddr:        "127.0.0.1:8301",
		DataDir:           "cdc-data",
		ClusterID:         cc.ClusterID,
		SessionTTL:        cc.SessionTTL,
		GCTTL:             cc.GCTTL,
	}
}

// AddFlags registers the process flags on fs.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", c.Addr, "host:port of the gRPC server (control API and stage streams)")
	fs.StringVar(&c.AdvertiseAddr, "advertise-addr", c.AdvertiseAddr, "address other processes use to reach --addr (default: --addr)")
	fs.StringVar(&c.StatusAddr, "status-addr", c.StatusAddr, "host:port of the status HTTP server (/metrics, /healthz, /readyz)")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory for local state (embedded etcd, sorter spill)")
	fs.StringSliceVar(&c.Etcd, "etcd", c.Etcd, "external etcd endpoints, comma-separated (default: embedded etcd in --data-dir)")
	fs.StringSliceVar(&c.PD, "pd", c.PD, "default upstream PD endpoints for changefeeds created without --pd")
	fs.StringVar(&c.ClusterID, "cluster-id", c.ClusterID, "tidestream cluster id (separates clusters sharing one etcd)")
	fs.StringVar(&c.MemberID, "member-id", c.MemberID, "member id (default: a new UUID per start)")
	fs.DurationVar(&c.SessionTTL, "session-ttl", c.SessionTTL, "etcd session TTL: how fast a dead process's ownership is taken over")
	fs.DurationVar(&c.GCTTL, "gc-ttl", c.GCTTL, "how long upstream data is kept for a changefeed that stops progressing")
	fs.Int64Var(&c.PullerMemoryQuota, "puller-memory-quota", c.PullerMemoryQuota, "bytes of change events the puller role may hold in memory for its subscribers")
	fs.Int64Var(&c.SorterMemoryQuota, "sorter-memory-quota", c.SorterMemoryQuota, "bytes of memory the sorter role's pebble may use; beyond it events spill to --data-dir")
}

// Validate checks the config; errors name the flag.
func (c *Config) Validate() error {
	for _, r := range c.Roles {
		if r != RoleCoordinator && r != RolePuller && r != RoleSorter {
			return fmt.Errorf("roles: %q is not available yet (available: %s, %s, %s)", r, RoleCoordinator, RolePuller, RoleSorter)
		}
	}
	if c.SorterMemoryQuota < 16<<20 {
		return fmt.Errorf("--sorter-memory-quota %d: must be at least 16 MiB", c.SorterMemoryQuota)
	}
	if c.PullerMemoryQuota <= 0 {
		return fmt.Errorf("--puller-memory-quota %d: must be positive", c.PullerMemoryQuota)
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("--addr %q: %w", c.Addr, err)
	}
	if _, _, err := net.SplitHostPort(c.StatusAddr); err != nil {
		return fmt.Errorf("--status-addr %q: %w", c.StatusAddr, err)
	}
	if c.DataDir == "" {
		return errors.New("--data-dir must not be empty")
	}
	for _, e := range c.Etcd {
		if !strings.HasPrefix(e, "http://") && !strings.HasPrefix(e, "https://") {
			return fmt.Errorf("--etcd %q: want http://host:port", e)
		}
	}
	return nil
}

// Node is a started process; Run blocks until it stops.
type Node struct {
	cfg Config
	log *slog.Logger

	embedded  *etcdembed.Server
	etcd      *clientv3.Client
	tel       *telemetry.Telemetry
	checker   *health.Checker
	grpcSrv   *server.GRPCServer
	httpSrv   *server.HTTPServer
	coord     *coordinator.Coordinator
	puller    *upstreams
	pullerSvc *service.Service
	sorter    *sorter.Service
	sorterDB  *engine.Engine
	addr      net.Addr
	status    net.Addr
}

// Start brings up etcd, binds both listeners and builds the roles; it
// returns with nothing serving yet, so bind and configuration errors are
// reported before Run. Close releases what Start acquired if Run is never
// called.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log = logging.OrDiscard(log)
	if cfg.MemberID == "" {
		cfg.MemberID = uuid.NewString()
	}
	n := &Node{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	endpoints := cfg.Etcd
	if len(endpoints) == 0 {
		ec := etcdembed.DefaultConfig(filepath.Join(cfg.DataDir, "etcd"))
		ec.Logger = log
		if n.embedded, err = etcdembed.Start(ctx, ec); err != nil {
			return nil, err
		}
		endpoints = n.embedded.Endpoints()
	}
	if n.etcd, err = clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Context:     context.WithoutCancel(ctx),
		// The etcd client logs through zap; bridge it into our log so
		// its retries show up in the same format and place.
		Logger: zap.New(logging.NewZapCore(logging.Component(log, "etcd-client"), zapcore.WarnLevel)),
	}); err != nil {
		return nil, fmt.Errorf("--etcd %v: %w", endpoints, err)
	}
	if n.tel, err = telemetry.New(telemetry.Config{ServiceName: "tidestream", ServiceInstanceID: cfg.MemberID}, log); err != nil {
		return nil, err
	}
	n.checker = health.New(log, "tidestream.v1.ChangefeedService", "tidestream.v1.ClusterService")

	gc := server.DefaultGRPCConfig()
	gc.Addr = cfg.Addr
	if n.grpcSrv, err = server.NewGRPCServer(gc, n.checker, log); err != nil {
		return nil, err
	}
	hc := server.DefaultHTTPConfig()
	hc.Addr = cfg.StatusAddr
	mux := server.NewStatusMux(server.StatusRoutes{Metrics: n.tel.Handler, Health: n.checker, Pprof: hc.EnablePprof})
	if n.httpSrv, err = server.NewHTTPServer(hc, mux, log); err != nil {
		return nil, err
	}
	if n.addr, err = n.grpcSrv.Listen(); err != nil {
		return nil, fmt.Errorf("--addr %s: %w", cfg.Addr, err)
	}
	if n.status, err = n.httpSrv.Listen(); err != nil {
		return nil, fmt.Errorf("--status-addr %s: %w", cfg.StatusAddr, err)
	}
	advertise := cfg.AdvertiseAddr
	if advertise == "" {
		advertise = n.addr.String()
	}
	cc := coordinator.DefaultConfig()
	cc.Etcd = n.etcd
	cc.ClusterID = cfg.ClusterID
	cc.MemberID = cfg.MemberID
	cc.Addr = advertise
	cc.Roles = cfg.Roles
	cc.Version = cfg.Version
	cc.SessionTTL = cfg.SessionTTL
	cc.GCTTL = cfg.GCTTL
	cc.DefaultPDAddrs = cfg.PD
	cc.OpenUpstream = OpenUpstream(log)
	cc.Logger = log
	if n.coord, err = coordinator.New(cc); err != nil {
		return nil, err
	}
	n.coord.RegisterServices(n.grpcSrv.Server())
	if slices.Contains(cfg.Roles, RolePuller) {
		n.puller = newUpstreams(cfg.PD, logging.Component(log, "puller"), n.tel.MeterProvider.Meter("tidestream/puller"))
		if n.pullerSvc, err = service.New(service.Config{
			Upstreams: n.puller.get, MemoryQuota: cfg.PullerMemoryQuota,
			Logger: logging.Component(log, "puller"), Meter: n.tel.MeterProvider.Meter("tidestream/puller"),
		}); err != nil {
			return nil, err
		}
		n.pullerSvc.Register(n.grpcSrv.Server())
	}
	if slices.Contains(cfg.Roles, RoleSorter) {
		// The sorter's puller is this process's own PullerService until the
		// coordinator assigns pipelines across processes.
		if n.sorterDB, err = engine.Open(engine.Config{
			Dir: filepath.Join(cfg.DataDir, "sorter"), MemoryQuota: cfg.SorterMemoryQuota,
			Logger: logging.Component(log, "sorter"), Meter: n.tel.MeterProvider.Meter("tidestream/sorter"),
		}); err != nil {
			return nil, fmt.Errorf("sorter: %w", err)
		}
		if n.sorter, err = sorter.New(sorter.Config{
			PullerAddr: advertise, Engine: n.sorterDB,
			Logger: logging.Component(log, "sorter"), Meter: n.tel.MeterProvider.Meter("tidestream/sorter"),
		}); err != nil {
			return nil, err
		}
		n.sorter.Register(n.grpcSrv.Server())
	}
	return n, nil
}

// OpenUpstream connects to an upstream's PD with the real pd client.
func OpenUpstream(log *slog.Logger) control.UpstreamOpener {
	return func(ctx context.Context, pdAddrs []string) (control.Upstream, error) {
		cfg := upstream.DefaultConfig()
		cfg.PDAddrs = pdAddrs
		cfg.Logger = log
		return upstream.Open(ctx, cfg)
	}
}

// Addr is the bound gRPC address.
func (n *Node) Addr() net.Addr { return n.addr }

// StatusAddr is the bound status address.
func (n *Node) StatusAddr() net.Addr { return n.status }

// Coordinator exposes the coordinator role (tests).
func (n *Node) Coordinator() *coordinator.Coordinator { return n.coord }

// Run serves until ctx is cancelled (graceful: readiness drops first, the
// owner resigns, in-flight RPCs finish, then etcd closes) or a role fails.
// It releases everything Start acquired before returning.
func (n *Node) Run(ctx context.Context) error {
	defer n.Close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return n.grpcSrv.Run(gctx) })
	g.Go(func() error { return n.httpSrv.Run(gctx) })
	g.Go(func() error { return n.coord.Run(gctx) })
	g.Go(func() error {
		// Ready only once the member is registered: before that a client
		// could create a changefeed no owner will ever see.
		select {
		case <-n.coord.Ready():
			n.checker.SetReady()
			n.log.Info("tidestream ready", "addr", n.addr.String(), "status_addr", n.status.String(), "member", n.cfg.MemberID, "roles", n.cfg.Roles)
		case <-gctx.Done():
		}
		<-gctx.Done()
		// First thing on stop: stop being advertised, so load balancers
		// and clients move away before anything closes.
		n.checker.Drain()
		// Then end the stage streams: they end only when their stage says
		// so, and the graceful stop running beside this would otherwise
		// wait for them until its drain deadline. Subscribers get a
		// transient status and retry elsewhere.
		n.stopStages()
		return nil
	})
	if n.embedded != nil {
		g.Go(func() error {
			select {
			case err := <-n.embedded.Err():
				return fmt.Errorf("embedded etcd: %w", err)
			case <-gctx.Done():
				return nil
			}
		})
	}
	err := g.Wait()
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		err = nil
	}
	return err
}

// stopStages ends every open stage stream; both calls are idempotent, and
// Close makes them again for a Node that never ran.
func (n *Node) stopStages() {
	if n.sorter != nil {
		n.sorter.Close()
	}
	if n.pullerSvc != nil {
		n.pullerSvc.Stop()
	}
}

// Close releases the etcd client, telemetry and embedded etcd, in the
// reverse order of Start. Safe to call more than once.
func (n *Node) Close() {
	n.stopStages()
	if n.sorter != nil {
		n.sorter.Close()
		n.sorter = nil
	}
	if n.sorterDB != nil {
		if err := n.sorterDB.Close(); err != nil {
			n.log.Warn("close sorter engine", "err", err)
		}
		n.sorterDB = nil
	}
	if n.puller != nil {
		if err := n.puller.Close(); err != nil {
			n.log.Warn("close puller", "err", err)
		}
		n.puller = nil
	}
	if n.etcd != nil {
		_ = n.etcd.Close()
		n.etcd = nil
	}
	if n.tel != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = n.tel.Shutdown(ctx)
		cancel()
		n.tel = nil
	}
	if n.embedded != nil {
		n.embedded.Close()
		n.embedded = nil
	}
}

// EnsureDataDir creates the data dir with owner-only permissions: it holds
// etcd's data, which includes sink credentials.
func EnsureDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("--data-dir %s: %w", dir, err)
	}
	return nil
}
