// Package node assembles one tidestream process: the roles it runs (Role),
// the etcd it keeps state in (embedded or external), its member
// registration, its gRPC and status servers, telemetry and readiness.
// `cdc server`, `cdc coordinator`, `cdc puller`, `cdc sorter`, `cdc encoder` and `cdc producer` are thin
// flag layers over Serve, which restarts the process in place when its etcd
// session is lost; the in-process test runner calls Start and Run directly.
//
// It is not responsible for what a role does, only for starting the roles
// in order, publishing readiness once they are up, and stopping them in the
// right order.
package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
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
	"github.com/tidestream/tidestream/coordinator/member"
	"github.com/tidestream/tidestream/coordinator/store"
	"github.com/tidestream/tidestream/coordinator/upstream"
	"github.com/tidestream/tidestream/producer/runner"
	"github.com/tidestream/tidestream/proto/contract/local"
	"github.com/tidestream/tidestream/puller/service"
	"github.com/tidestream/tidestream/services/runtime/health"
	"github.com/tidestream/tidestream/services/runtime/logging"
	"github.com/tidestream/tidestream/services/runtime/server"
	"github.com/tidestream/tidestream/services/runtime/telemetry"
	"github.com/tidestream/tidestream/sorter/engine"
)

// Config is the configuration of one process.
type Config struct {
	// Roles run by this process: coordinator, puller, sorter, encoder,
	// producer.
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
	// PD is the default upstream: of changefeeds created without --pd
	// (coordinator role) and of subscriptions whose route names no PD
	// (puller role; encoder role for its schema snapshots). Only processes
	// with one of those roles take the flag.
	PD []string
	// ClusterID separates tidestream clusters sharing an etcd.
	ClusterID string
	// MemberID identifies this process; default a new UUID per start, as
	// TiCDC's capture id: a restarted process is a new member, and so is
	// each restart in place after a lost session (Serve).
	MemberID string
	// LocalStreams connects the stages this process runs in process: a
	// route naming this process's own address is served by a direct call
	// (proto/contract/local), not over loopback gRPC. Default on.
	LocalStreams bool
	// SessionTTL is the etcd session (lease) TTL. Default 10 s, TiCDC's
	// capture session TTL: keep-alives go every TTL/3, so the process may
	// stall up to about the TTL (CPU starvation with thousands of pipelines
	// on a few busy cores) before it loses the session and restarts in
	// place; the price is owner failover after a kill -9 of up to the TTL
	// and the fraction of a second etcd takes to reap an expired lease.
	SessionTTL time.Duration
	// Version is the binary's version.
	Version string

	// Per-role settings; each is read, flagged and validated only when
	// its role is in Roles.
	Coordinator CoordinatorConfig
	Puller      PullerConfig
	Sorter      SorterConfig
	Encoder     EncoderConfig
	Producer    ProducerConfig
}

// Roles.
const (
	RoleCoordinator = "coordinator"
	RolePuller      = "puller"
	RoleSorter      = "sorter"
	RoleEncoder     = "encoder"
	RoleProducer    = "producer"
)

// DefaultConfig returns the defaults of `cdc server`.
func DefaultConfig() Config {
	cc := coordinator.DefaultConfig()
	return Config{
		Roles:        []string{RoleCoordinator},
		Addr:         "127.0.0.1:8300",
		StatusAddr:   "127.0.0.1:8301",
		DataDir:      "cdc-data",
		ClusterID:    cc.ClusterID,
		SessionTTL:   10 * time.Second,
		LocalStreams: true,
		Coordinator:  CoordinatorConfig{GCTTL: cc.GCTTL},
		Puller:       PullerConfig{MemoryQuota: service.DefaultMemoryQuota, PrewriteMemory: DefaultPrewriteMemory},
		Sorter:       SorterConfig{MemoryQuota: engine.DefaultMemoryQuota},
		Producer:     ProducerConfig{ProgressInterval: runner.DefaultInterval},
	}
}

// AddFlags registers on fs the process flags and the flags of the roles in
// c.Roles (set Roles first).
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", c.Addr, "host:port of the gRPC server (control API and stage streams)")
	fs.StringVar(&c.AdvertiseAddr, "advertise-addr", c.AdvertiseAddr, "address other processes use to reach --addr (default: --addr)")
	fs.StringVar(&c.StatusAddr, "status-addr", c.StatusAddr, "host:port of the status HTTP server (/metrics, /healthz, /readyz)")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory for local state (embedded etcd, sorter spill)")
	fs.StringSliceVar(&c.Etcd, "etcd", c.Etcd, "external etcd endpoints, comma-separated (default: embedded etcd in --data-dir)")
	fs.StringVar(&c.ClusterID, "cluster-id", c.ClusterID, "tidestream cluster id (separates clusters sharing one etcd)")
	fs.StringVar(&c.MemberID, "member-id", c.MemberID, "member id (default: a new UUID per start, and per restart after a lost etcd session)")
	fs.BoolVar(&c.LocalStreams, "local-streams", c.LocalStreams, "stages this process runs pass messages to each other in process rather than over loopback gRPC")
	fs.DurationVar(&c.SessionTTL, "session-ttl", c.SessionTTL, "etcd session TTL: a dead process's keys expire (and ownership passes on) this long after it died; a process stalled this long loses its session and restarts in place")
	if c.usesPD() {
		fs.StringSliceVar(&c.PD, "pd", c.PD, "default upstream PD endpoints, for changefeeds created without --pd and routes that name none")
	}
	for _, spec := range roleSpecs() {
		if slices.Contains(c.Roles, spec.name) {
			spec.addFlags(c, fs)
		}
	}
}

func (c *Config) usesPD() bool {
	return slices.Contains(c.Roles, RoleCoordinator) || slices.Contains(c.Roles, RolePuller) || slices.Contains(c.Roles, RoleEncoder)
}

// Validate checks the config; errors name the flag.
func (c *Config) Validate() error {
	_, err := c.validate(roleSpecs())
	return err
}

// validate checks the config against the role table specs and returns the
// specs of c.Roles, in that order.
func (c *Config) validate(specs []roleSpec) ([]roleSpec, error) {
	if len(c.Roles) == 0 {
		return nil, errors.New("roles: a process runs at least one role")
	}
	var names []string
	for _, spec := range specs {
		names = append(names, spec.name)
	}
	var mine []roleSpec
	for i, r := range c.Roles {
		j := slices.Index(names, r)
		if j < 0 {
			return nil, fmt.Errorf("roles: %q is not available yet (available: %s)", r, strings.Join(names, ", "))
		}
		if slices.Index(c.Roles, r) != i {
			return nil, fmt.Errorf("roles: %q is named twice", r)
		}
		if err := specs[j].validate(c); err != nil {
			return nil, err
		}
		mine = append(mine, specs[j])
	}
	if len(c.Etcd) == 0 && !slices.Contains(c.Roles, RoleCoordinator) {
		// An embedded etcd holds the cluster's state only for the process
		// that owns it; a stage process alone must join a cluster.
		return nil, fmt.Errorf("--etcd is required for a %s process: it registers in the cluster's etcd", strings.Join(c.Roles, "+"))
	}
	if c.SessionTTL < 2*time.Second || c.SessionTTL > 5*time.Minute {
		return nil, fmt.Errorf("--session-ttl %s: must be within [2s, 5m]", c.SessionTTL)
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return nil, fmt.Errorf("--addr %q: %w", c.Addr, err)
	}
	if _, _, err := net.SplitHostPort(c.StatusAddr); err != nil {
		return nil, fmt.Errorf("--status-addr %q: %w", c.StatusAddr, err)
	}
	if c.DataDir == "" {
		return nil, errors.New("--data-dir must not be empty")
	}
	for _, e := range c.Etcd {
		if !strings.HasPrefix(e, "http://") && !strings.HasPrefix(e, "https://") {
			return nil, fmt.Errorf("--etcd %q: want http://host:port", e)
		}
	}
	return mine, nil
}

// Node is a started process; Run blocks until it stops.
type Node struct {
	cfg Config
	log *slog.Logger

	embedded *etcdembed.Server
	etcd     *clientv3.Client
	keys     store.Keys
	tel      *telemetry.Telemetry
	checker  *health.Checker
	grpcSrv  *server.GRPCServer
	httpSrv  *server.HTTPServer
	coord    *coordinator.Coordinator // nil without the coordinator role
	specs    []roleSpec               // of the roles in cfg.Roles, in the role table's order
	roles    []Role                   // built from specs, same order
	addr     net.Addr
	status   net.Addr
	advert   string

	// lease is the session lease of Run's registration, for Serve to
	// revoke if that session is lost; lostLease is the previous
	// incarnation's, revoked before registering (revokeLost).
	lease     clientv3.LeaseID
	lostLease clientv3.LeaseID

	// local connects this process's stages (Config.LocalStreams); nil
	// when off. Its streams end before the roles close.
	local *local.Streams
}

// Start brings up etcd, binds both listeners and builds the roles; it
// returns with nothing serving yet, so bind and configuration errors are
// reported before Run. Close releases what Start acquired if Run is never
// called.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (*Node, error) {
	return start(ctx, cfg, log, roleSpecs())
}

// start is Start with the role table as a parameter, so tests can add a
// role.
func start(ctx context.Context, cfg Config, log *slog.Logger, specs []roleSpec) (_ *Node, err error) {
	mine, err := cfg.validate(specs)
	if err != nil {
		return nil, err
	}
	// Built in the role table's order, whatever order --roles names them
	// in: a stage that pulls from another this process runs is connected
	// to it in process (localClients), so that one must exist first.
	slices.SortStableFunc(mine, func(a, b roleSpec) int {
		return cmp.Compare(slices.IndexFunc(specs, func(s roleSpec) bool { return s.name == a.name }),
			slices.IndexFunc(specs, func(s roleSpec) bool { return s.name == b.name }))
	})
	log = logging.OrDiscard(log)
	if cfg.MemberID == "" {
		cfg.MemberID = uuid.NewString()
	}
	n := &Node{cfg: cfg, log: log}
	if cfg.LocalStreams {
		n.local = local.New()
	}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if n.keys, err = store.NewKeys(cfg.ClusterID); err != nil {
		return nil, fmt.Errorf("--cluster-id: %w", err)
	}
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

	var names []string
	n.specs = mine
	for _, spec := range mine {
		names = append(names, spec.services...)
	}
	n.checker = health.New(log, names...)
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
	// Bound before the roles are built: the member record and a sorter's
	// default puller are this process's advertised address.
	if n.addr, err = n.grpcSrv.Listen(); err != nil {
		return nil, fmt.Errorf("--addr %s: %w", cfg.Addr, err)
	}
	if n.status, err = n.httpSrv.Listen(); err != nil {
		return nil, fmt.Errorf("--status-addr %s: %w", cfg.StatusAddr, err)
	}
	n.advert = cfg.AdvertiseAddr
	if n.advert == "" {
		n.advert = n.addr.String()
	}
	for _, spec := range n.specs {
		r, err := spec.build(n)
		if err != nil {
			return nil, fmt.Errorf("%s role: %w", spec.name, err)
		}
		n.roles = append(n.roles, r)
		r.Register(n.grpcSrv.Server())
	}
	return n, nil
}

func (n *Node) hasRole(name string) bool { return slices.Contains(n.cfg.Roles, name) }

// role is the built role named name, or nil (not run, or not built yet:
// roles are built in the role table's order).
func (n *Node) role(name string) Role {
	for _, r := range n.roles {
		if r.Name() == name {
			return r
		}
	}
	return nil
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

// Run registers the process as a member (its roles, its advertised
// address) on one etcd session, runs every role on it, and serves until ctx
// is cancelled or a role fails or the session is lost. The stop is ordered:
// readiness drops, the roles' streams end (Stop), the roles return (the
// coordinator resigns), then the member registration is revoked, so a
// successor owner takes over only after this one resigned. It releases
// everything Start acquired before returning; after a lost session (an
// error wrapping member.ErrSessionLost) Serve starts the process again.
func (n *Node) Run(ctx context.Context) error {
	defer n.Close()
	if n.lostLease != 0 {
		n.revokeLost(ctx)
	}
	reg, err := member.Register(ctx, n.etcd, n.keys, member.Config{
		ID: n.cfg.MemberID, Addr: n.advert, Roles: n.cfg.Roles, Version: n.cfg.Version,
		TTL: n.cfg.SessionTTL, Logger: n.log,
		// Its own embedded etcd: a key with its id is its own, from a run
		// killed before the lease expired (a restart after kill -9).
		TakeOver: n.embedded != nil,
	})
	if err != nil {
		return err
	}
	defer reg.Close()
	n.lease = reg.Session().Lease()

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return n.grpcSrv.Run(gctx) })
	g.Go(func() error { return n.httpSrv.Run(gctx) })
	rolesDone := make(chan struct{})
	readyRoles := make(chan string, len(n.roles))
	g.Go(func() error {
		defer close(rolesDone)
		rg, rctx := errgroup.WithContext(gctx)
		for i, r := range n.roles {
			var once sync.Once
			env := Env{Reg: reg, Ready: func() {
				once.Do(func() {
					for _, svc := range n.specs[i].services {
						_ = n.checker.SetServiceStatus(svc, true) // a known name; ignored once draining
					}
					readyRoles <- r.Name()
				})
			}}
			rg.Go(func() error {
				if err := r.Run(rctx, env); err != nil {
					return fmt.Errorf("%s role: %w", r.Name(), err)
				}
				return nil
			})
		}
		return rg.Wait()
	})
	// The registration outlives the roles: revoking it first would hand
	// ownership on while this coordinator still acts.
	g.Go(func() error {
		<-rolesDone
		return reg.Run(gctx)
	})
	g.Go(func() error {
		select {
		case <-reg.Session().Done():
			if ctx.Err() == nil {
				return fmt.Errorf("node: %w", member.ErrSessionLost)
			}
		case <-gctx.Done():
		}
		return nil
	})
	g.Go(func() error {
		// Each role's services turn SERVING as that role says it serves
		// (Env.Ready); the process is ready, overall and on /readyz, once
		// every role is.
		for ready := 0; ready < len(n.roles) && gctx.Err() == nil; {
			select {
			case name := <-readyRoles:
				ready++
				n.log.Info("role ready", "role", name)
			case <-gctx.Done():
			}
		}
		if gctx.Err() == nil {
			n.checker.SetReady()
			n.log.Info("tidestream ready", "addr", n.addr.String(), "advertise", n.advert, "status_addr", n.status.String(),
				"member", n.cfg.MemberID, "roles", n.cfg.Roles)
		}
		<-gctx.Done()
		// First thing on stop: stop being advertised, so load balancers
		// and clients move away before anything closes.
		n.checker.Drain()
		// Then end the stage streams: they end only when their stage says
		// so, and the graceful stop running beside this would otherwise
		// wait for them until its drain deadline. Subscribers get a
		// transient status and retry elsewhere.
		for _, r := range n.roles {
			r.Stop()
		}
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
	err = g.Wait()
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		err = nil
	}
	return err
}

// Close releases the roles, the etcd client, telemetry and embedded etcd, in
// the reverse order of Start. Safe to call more than once.
func (n *Node) Close() {
	for i := len(n.roles) - 1; i >= 0; i-- {
		n.roles[i].Stop()
	}
	// The in-process streams end, and their handlers return, before any
	// role releases what those handlers use: what a gRPC server's Stop
	// (WaitForHandlers) does for the streams that come over the network.
	if n.local != nil {
		n.local.Close()
	}
	for i := len(n.roles) - 1; i >= 0; i-- {
		r := n.roles[i]
		if err := r.Close(); err != nil {
			n.log.Warn("close role", "role", r.Name(), "err", err)
		}
	}
	n.roles = nil
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
