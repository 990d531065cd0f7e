package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"

	"github.com/tidestream/tidestream/coordinator"
	"github.com/tidestream/tidestream/coordinator/member"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
	"github.com/tidestream/tidestream/puller/service"
	"github.com/tidestream/tidestream/puller/spill"
	"github.com/tidestream/tidestream/services/runtime/logging"
	"github.com/tidestream/tidestream/sorter/engine"
	sorter "github.com/tidestream/tidestream/sorter/service"
)

// Role is one part of a process: the coordinator or a stage. The process
// builds the roles its config names, registers their services on its one
// gRPC server, runs them on its one member registration, and stops them in
// order: readiness drops, Stop ends their streams, Run returns, Close
// releases.
type Role interface {
	// Name is the role's name, as in the member record.
	Name() string
	// Register adds the role's gRPC services.
	Register(s *grpc.Server)
	// Run serves until ctx ends; an error stops the process. It calls
	// env.Ready once the role serves.
	Run(ctx context.Context, env Env) error
	// Stop ends the role's open streams at once, as shutdown begins, so a
	// graceful server stop does not wait for them. Idempotent.
	Stop()
	// Close releases what the role holds, after Run returned or when it
	// never ran. Idempotent.
	Close() error
}

// Env is what the process gives a running role.
type Env struct {
	// Reg is the process's member registration: only the coordinator
	// campaigns on it.
	Reg *member.Registration
	// Ready turns the role's services SERVING (the process's overall
	// status follows once every role is ready). Idempotent.
	Ready func()
}

// roleSpec is what the process knows of a role before building it: its
// flags and their validation, the gRPC services its readiness is reported
// under, and how to build it. A process registers the flags of its roles
// only, so `cdc sorter --gc-ttl` is an unknown flag rather than one silently
// ignored.
type roleSpec struct {
	name     string
	services []string
	addFlags func(c *Config, fs *pflag.FlagSet)
	validate func(c *Config) error
	build    func(n *Node) (Role, error)
}

// roleSpecs lists the roles a process can run, in start order.
func roleSpecs() []roleSpec {
	return []roleSpec{
		{
			name:     RoleCoordinator,
			services: []string{"tidestream.v1.ChangefeedService", "tidestream.v1.ClusterService"},
			addFlags: func(c *Config, fs *pflag.FlagSet) { c.Coordinator.AddFlags(fs) },
			validate: func(c *Config) error { return c.Coordinator.Validate() },
			build:    newCoordinatorRole,
		},
		{
			name:     RolePuller,
			services: []string{"tidestream.v1.PullerService"},
			addFlags: func(c *Config, fs *pflag.FlagSet) { c.Puller.AddFlags(fs) },
			validate: func(c *Config) error { return c.Puller.Validate() },
			build:    newPullerRole,
		},
		{
			name:     RoleSorter,
			services: []string{"tidestream.v1.SorterService"},
			addFlags: func(c *Config, fs *pflag.FlagSet) { c.Sorter.AddFlags(fs) },
			validate: func(c *Config) error { return c.Sorter.Validate() },
			build:    newSorterRole,
		},
		{
			name:     RoleEncoder,
			services: []string{"tidestream.v1.EncoderService"},
			addFlags: func(c *Config, fs *pflag.FlagSet) { c.Encoder.AddFlags(fs) },
			validate: func(c *Config) error { return c.Encoder.Validate() },
			build:    newEncoderRole,
		},
		{
			name:     RoleProducer,
			services: nil,
			addFlags: func(c *Config, fs *pflag.FlagSet) { c.Producer.AddFlags(fs) },
			validate: func(c *Config) error { return c.Producer.Validate() },
			build:    newProducerRole,
		},
	}
}

// CoordinatorConfig configures the coordinator role.
type CoordinatorConfig struct {
	// GCTTL is TiCDC's gc-ttl: how long the upstream keeps data for a
	// changefeed whose checkpoint stops moving.
	GCTTL time.Duration
}

// AddFlags registers the coordinator role's flags.
func (c *CoordinatorConfig) AddFlags(fs *pflag.FlagSet) {
	fs.DurationVar(&c.GCTTL, "gc-ttl", c.GCTTL, "how long upstream data is kept for a changefeed that stops progressing")
}

// Validate checks the coordinator role's flags.
func (c CoordinatorConfig) Validate() error {
	if c.GCTTL < 5*time.Minute {
		return fmt.Errorf("--gc-ttl %s: must be at least 5m (PD's GC runs every few minutes)", c.GCTTL)
	}
	return nil
}

// PullerConfig configures the puller role.
type PullerConfig struct {
	// MemoryQuota bounds the event bytes the role holds between TiKV and
	// its subscribers.
	MemoryQuota int64
	// PrewriteMemory bounds the bytes of open transactions' PREWRITEs the
	// role holds in memory until their COMMIT; beyond it they wait on
	// disk under the data dir.
	PrewriteMemory int64
}

// AddFlags registers the puller role's flags.
func (c *PullerConfig) AddFlags(fs *pflag.FlagSet) {
	fs.Int64Var(&c.MemoryQuota, "puller-memory-quota", c.MemoryQuota, "bytes of change events the puller role may hold in memory for its subscribers")
	fs.Int64Var(&c.PrewriteMemory, "puller-prewrite-memory", c.PrewriteMemory, "bytes of uncommitted transactions' writes the puller role may hold in memory until they commit; beyond it they wait on disk in --data-dir")
}

// Validate checks the puller role's flags.
func (c PullerConfig) Validate() error {
	if c.MemoryQuota <= 0 {
		return fmt.Errorf("--puller-memory-quota %d: must be positive", c.MemoryQuota)
	}
	if c.PrewriteMemory < 0 {
		return fmt.Errorf("--puller-prewrite-memory %d: must not be negative (0 keeps every uncommitted write on disk)", c.PrewriteMemory)
	}
	return nil
}

// SorterConfig configures the sorter role.
type SorterConfig struct {
	// MemoryQuota bounds the role's pebble memory (memtables, block cache,
	// iterators); beyond it events live on disk under the data dir.
	MemoryQuota int64
}

// AddFlags registers the sorter role's flags.
func (c *SorterConfig) AddFlags(fs *pflag.FlagSet) {
	fs.Int64Var(&c.MemoryQuota, "sorter-memory-quota", c.MemoryQuota, "bytes of memory the sorter role's pebble may use; beyond it events spill to --data-dir")
}

// Validate checks the sorter role's flags.
func (c SorterConfig) Validate() error {
	// Twice the engine's floor: below it the four memtables are too small
	// to hold one large transaction's batch without stalling.
	if c.MemoryQuota < 16<<20 {
		return fmt.Errorf("--sorter-memory-quota %d: must be at least 16 MiB", c.MemoryQuota)
	}
	return nil
}

// coordinatorRole is the control API and the owner campaign.
type coordinatorRole struct {
	c      *coordinator.Coordinator
	tables *upstreamTables
}

func newCoordinatorRole(n *Node) (Role, error) {
	cc := coordinator.DefaultConfig()
	cc.Etcd = n.etcd
	cc.ClusterID = n.cfg.ClusterID
	cc.Addr = n.advert
	cc.Version = n.cfg.Version
	cc.GCTTL = n.cfg.Coordinator.GCTTL
	cc.DefaultPDAddrs = n.cfg.PD
	cc.OpenUpstream = OpenUpstream(n.log)
	tables := &upstreamTables{}
	cc.IneligibleTables = tables.list
	cc.PipelineTables = tables.pipelines
	cc.SchemaVersion = tables.schemaVersion
	cc.TablesBetween = tables.between
	cc.Regions = tables.regions
	cc.Logger = n.log
	c, err := coordinator.New(cc)
	if err != nil {
		return nil, err
	}
	n.coord = c
	return coordinatorRole{c: c, tables: tables}, nil
}

func (r coordinatorRole) Name() string            { return RoleCoordinator }
func (r coordinatorRole) Register(s *grpc.Server) { r.c.RegisterServices(s) }

// Run is ready once the coordinator campaigns: before that a client could
// create a changefeed no owner will ever see.
func (r coordinatorRole) Run(ctx context.Context, env Env) error {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-r.c.Ready():
			env.Ready()
		case <-stop:
		}
	})
	defer wg.Wait()
	defer close(stop)
	return r.c.Run(ctx, env.Reg)
}
func (r coordinatorRole) Stop() {}
func (r coordinatorRole) Close() error {
	// Schema reads outlive their request only by client-go's backoff.
	r.tables.Close()
	return nil
}

// pullerRole serves PullerService from the upstream clusters its requests'
// routes name.
type pullerRole struct {
	ups   *upstreams
	svc   *service.Service
	spill *spill.Store
}

// DefaultPrewriteMemory is --puller-prewrite-memory's default: far more
// than the transactions in flight of an OLTP load hold, so only a large
// transaction meets the disk.
const DefaultPrewriteMemory = 64 << 20

func newPullerRole(n *Node) (Role, error) {
	log := logging.Component(n.log, "puller")
	meter := n.tel.MeterProvider.Meter("tidestream/puller")
	sp, err := spill.Open(spill.Config{Dir: filepath.Join(n.cfg.DataDir, "puller-spill"), Budget: n.cfg.Puller.PrewriteMemory, Logger: log, Meter: meter})
	if err != nil {
		return nil, fmt.Errorf("puller: %w", err)
	}
	r := &pullerRole{ups: newUpstreams(n.cfg.PD, sp, log, meter), spill: sp}
	svc, err := service.New(service.Config{Upstreams: r.ups.get, MemoryQuota: n.cfg.Puller.MemoryQuota, Logger: log, Meter: meter})
	if err != nil {
		_ = sp.Close()
		return nil, err
	}
	r.svc = svc
	return r, nil
}

func (r *pullerRole) Name() string            { return RolePuller }
func (r *pullerRole) Register(s *grpc.Server) { r.svc.Register(s) }

// Run is ready at once: the puller connects to an upstream on the first
// subscription that names it.
func (r *pullerRole) Run(ctx context.Context, env Env) error {
	env.Ready()
	<-ctx.Done()
	return nil
}
func (r *pullerRole) Stop() { r.svc.Stop() }
func (r *pullerRole) Close() error {
	r.svc.Stop()
	return errors.Join(r.ups.Close(), r.spill.Close())
}

// sorterRole serves SorterService, pulling from the pullers routes name.
type sorterRole struct {
	db  *engine.Engine
	svc *sorter.Service
}

func newSorterRole(n *Node) (Role, error) {
	log := logging.Component(n.log, "sorter")
	meter := n.tel.MeterProvider.Meter("tidestream/sorter")
	// A request whose route names no puller pulls from this process when
	// it runs the puller role too (`cdc server`); a sorter alone refuses
	// it, rather than dial itself.
	var defaultPuller string
	if n.hasRole(RolePuller) {
		defaultPuller = n.advert
	}
	db, err := engine.Open(engine.Config{
		Dir: filepath.Join(n.cfg.DataDir, "sorter"), MemoryQuota: n.cfg.Sorter.MemoryQuota, Logger: log, Meter: meter,
	})
	if err != nil {
		return nil, fmt.Errorf("sorter: %w", err)
	}
	var up tidestreamv1.PullerServiceClient
	if p := n.role(RolePuller); p != nil && n.local != nil {
		up = n.local.Puller(p.(*pullerRole).svc)
	}
	svc, err := sorter.New(sorter.Config{PullerAddr: defaultPuller, Upstream: up, Engine: db, Logger: log, Meter: meter})
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	return &sorterRole{db: db, svc: svc}, nil
}

func (r *sorterRole) Name() string            { return RoleSorter }
func (r *sorterRole) Register(s *grpc.Server) { r.svc.Register(s) }

// Run is ready at once: the sorter dials a puller on the first
// subscription routed to it.
func (r *sorterRole) Run(ctx context.Context, env Env) error {
	env.Ready()
	<-ctx.Done()
	return nil
}
func (r *sorterRole) Stop() { r.svc.Close() }
func (r *sorterRole) Close() error {
	r.svc.Close()
	if r.db == nil {
		return nil
	}
	err := r.db.Close()
	r.db = nil
	return err
}
