package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
	"github.com/tidestream/tidestream/coordinator/changefeed"
	"github.com/tidestream/tidestream/coordinator/control"
	"github.com/tidestream/tidestream/coordinator/member"
	"github.com/tidestream/tidestream/coordinator/owner"
	"github.com/tidestream/tidestream/coordinator/scheduler"
	"github.com/tidestream/tidestream/coordinator/store"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// Config configures the coordinator role. The member identity (id, roles,
// session TTL) is the process's: see member.Config.
type Config struct {
	// Etcd is the client of the cluster's etcd; owned by the caller.
	Etcd *clientv3.Client
	// ClusterID separates tidestream clusters sharing one etcd.
	ClusterID string
	// Addr is the advertised address of this process's gRPC server.
	Addr string
	// Version of the binary.
	Version string
	// GCTTL is how long the upstream keeps data for a changefeed that stops
	// making progress (TiCDC's gc-ttl, default 24 h).
	GCTTL time.Duration
	// GCInterval is how often the owner refreshes the service GC
	// safepoint. Default 1 min: far below GCTTL, and PD's GC runs every
	// 10 min, so a minute's staleness costs nothing.
	GCInterval time.Duration
	// OpenUpstream connects to an upstream PD.
	OpenUpstream control.UpstreamOpener
	// IneligibleTables reads an upstream's schema for the table
	// eligibility check at create.
	IneligibleTables control.IneligibleTableLister
	// PipelineTables reads the tables a changefeed replicates, for the
	// owner's placement of its pipelines.
	PipelineTables scheduler.TableLister
	// SchemaVersion, when set, makes the owner follow tables that DDL
	// creates and drops after a changefeed's checkpoint.
	SchemaVersion scheduler.SchemaVersion
	// TablesBetween goes with SchemaVersion (scheduler.Config).
	TablesBetween func(ctx context.Context, cf *store.Changefeed, from, to uint64) ([]scheduler.Table, error)
	// Regions, with SchemaVersion, lets the owner split hot tables
	// (scheduler.Config.Regions).
	Regions scheduler.RegionLister
	// ScheduleInterval paces the owner's placement and progress rounds
	// (scheduler.DefaultInterval when 0).
	ScheduleInterval time.Duration
	// DefaultPDAddrs is the upstream for changefeeds created without --pd.
	DefaultPDAddrs []string
	Logger         *slog.Logger
	Knobs          Knobs
}

// Knobs are test hooks.
type Knobs struct {
	// OnElected is called when this coordinator becomes owner.
	OnElected func(store.Fence)
}

// DefaultConfig returns the defaults for the fields that have them.
func DefaultConfig() Config {
	return Config{
		ClusterID:  "default",
		GCTTL:      24 * time.Hour,
		GCInterval: time.Minute,
	}
}

// Validate checks the config; errors name the flag-facing field.
func (c *Config) Validate() error {
	switch {
	case c.Etcd == nil:
		return errors.New("coordinator: Etcd client must be set")
	case c.Addr == "":
		return errors.New("coordinator: Addr must be set")
	case c.OpenUpstream == nil:
		return errors.New("coordinator: OpenUpstream must be set")
	case c.IneligibleTables == nil:
		return errors.New("coordinator: IneligibleTables must be set")
	case c.PipelineTables == nil:
		return errors.New("coordinator: PipelineTables must be set")
	case c.ScheduleInterval < 0:
		return fmt.Errorf("coordinator: schedule interval must not be negative, got %s", c.ScheduleInterval)
	case c.GCTTL < 5*time.Minute:
		return fmt.Errorf("coordinator: gc-ttl must be at least 5m, got %s", c.GCTTL)
	case c.GCInterval <= 0 || c.GCInterval >= c.GCTTL:
		return fmt.Errorf("coordinator: gc interval must be positive and below gc-ttl, got %s", c.GCInterval)
	}
	return nil
}

// Coordinator is the coordinator role of one process.
type Coordinator struct {
	cfg     Config
	log     *slog.Logger
	store   *store.Store
	cfSrv   *control.ChangefeedServer
	cluster *control.ClusterServer

	isOwner atomic.Bool
	ready   chan struct{}
	once    sync.Once
}

// New builds a coordinator; nothing runs until Run.
func New(cfg Config) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	keys, err := store.NewKeys(cfg.ClusterID)
	if err != nil {
		return nil, err
	}
	st := store.New(cfg.Etcd, keys)
	cfSrv, err := control.NewChangefeedServer(control.Config{
		Store:            st,
		OpenUpstream:     cfg.OpenUpstream,
		IneligibleTables: cfg.IneligibleTables,
		Addr:             cfg.Addr,
		Version:          cfg.Version,
		ClusterID:        cfg.ClusterID,
		DefaultPDAddrs:   cfg.DefaultPDAddrs,
		Logger:           log,
	})
	if err != nil {
		return nil, err
	}
	return &Coordinator{
		cfg:     cfg,
		log:     log.With("component", "coordinator"),
		store:   st,
		cfSrv:   cfSrv,
		cluster: control.NewClusterServer(st),
		ready:   make(chan struct{}),
	}, nil
}

// RegisterServices adds the control API to a gRPC server.
func (c *Coordinator) RegisterServices(s grpc.ServiceRegistrar) {
	pb.RegisterChangefeedServiceServer(s, c.cfSrv)
	pb.RegisterClusterServiceServer(s, c.cluster)
}

// Ready is closed once the member is registered and campaigning.
func (c *Coordinator) Ready() <-chan struct{} { return c.ready }

// IsOwner reports whether this coordinator is the owner now.
func (c *Coordinator) IsOwner() bool { return c.isOwner.Load() }

// Store exposes the etcd store (for tests and tools).
func (c *Coordinator) Store() *store.Store { return c.store }

// Run campaigns on the process's member registration and runs the owner
// duty while owner. The registration (its etcd session and member key) is
// the process's: every role of the process shares it, and only this role
// campaigns. Run returns nil when ctx is cancelled, after resigning, and an
// error wrapping member.ErrSessionLost if the session expired: the process
// must then stop, since another coordinator may already act in its place.
// It neither holds nor closes the registration; the process revokes it once
// every role has returned, so a successor takes over only after this one
// resigned.
func (c *Coordinator) Run(ctx context.Context, reg *member.Registration) error {
	if reg == nil {
		return errors.New("coordinator: Run needs the process's member registration")
	}
	elector, err := owner.New(owner.Config{
		Session:  reg.Session(),
		Keys:     c.store.Keys(),
		MemberID: reg.ID(),
		Logger:   c.log,
		Knobs:    owner.Knobs{OnElected: c.cfg.Knobs.OnElected},
	})
	if err != nil {
		return err
	}
	c.once.Do(func() { close(c.ready) })

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return elector.Run(gctx, c.ownerDuty) })
	g.Go(func() error {
		// Watch the session independently of the election so a lost
		// session cancels everything even while the duty is busy.
		select {
		case <-reg.Session().Done():
			if ctx.Err() == nil {
				return fmt.Errorf("coordinator: %w", member.ErrSessionLost)
			}
		case <-gctx.Done():
		}
		return nil
	})
	return g.Wait()
}

// ownerDuty runs while this coordinator is the owner: the pipeline
// scheduler, and the tick that keeps GC safepoints and finishes changefeeds.
func (c *Coordinator) ownerDuty(ctx context.Context, fence store.Fence) error {
	c.isOwner.Store(true)
	defer c.isOwner.Store(false)
	sched, err := scheduler.New(scheduler.Config{Store: c.store, Tables: c.cfg.PipelineTables, SchemaVersion: c.cfg.SchemaVersion, TablesBetween: c.cfg.TablesBetween, Regions: c.cfg.Regions, Interval: c.cfg.ScheduleInterval, Logger: c.log})
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return sched.Run(gctx, fence) })
	g.Go(func() error { return c.tickLoop(gctx, fence) })
	return g.Wait()
}

// tickLoop refreshes GC safepoints and finishes changefeeds every
// GCInterval.
func (c *Coordinator) tickLoop(ctx context.Context, fence store.Fence) error {
	ups := map[string]control.Upstream{}
	defer func() {
		for _, u := range ups {
			u.Close()
		}
	}()
	tick := time.NewTicker(c.cfg.GCInterval)
	defer tick.Stop()
	for {
		if err := c.tick(ctx, fence, ups); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, cdcerr.ErrNotOwner) {
				// Deposed while the session still looked alive: stop acting
				// at once and let the elector decide what comes next.
				return err
			}
			c.log.Warn("owner tick failed; retrying next interval", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// errTargetMoved aborts a status decision the fresh read no longer
// supports (the target ts changed, the checkpoint moved on, the changefeed
// stopped since the owner listed it); the next tick decides again.
var errTargetMoved = errors.New("coordinator: target ts changed since read")

// tick refreshes the service GC safepoint of every upstream to the minimum
// checkpoint of its live changefeeds and finishes changefeeds whose
// checkpoint reached their target ts.
func (c *Coordinator) tick(ctx context.Context, fence store.Fence, ups map[string]control.Upstream) error {
	cfs, err := c.store.List(ctx, "")
	if err != nil {
		return err
	}
	minCkpt := map[string]uint64{}
	addrs := map[string][]string{}
	var errs []error
	for _, cf := range cfs {
		st := cf.Status.State
		if st == pb.ChangefeedState_CHANGEFEED_STATE_FINISHED || st == pb.ChangefeedState_CHANGEFEED_STATE_REMOVED {
			continue
		}
		if cf.Info.TargetTs != 0 && cf.Status.CheckpointTs >= cf.Info.TargetTs && st == pb.ChangefeedState_CHANGEFEED_STATE_NORMAL {
			// Status only: a user's info write in between must not make
			// this retry. The decision is re-made on the fresh read, since
			// a pause, update and resume may have landed since the list.
			_, err := c.store.UpdateStatus(ctx, cf.Info.Namespace, cf.Info.Id, fence, func(cf *store.Changefeed) error {
				if cf.Info.TargetTs == 0 || cf.Status.CheckpointTs < cf.Info.TargetTs {
					return errTargetMoved
				}
				if err := changefeed.CheckTransition(cf.Status.State, pb.ChangefeedState_CHANGEFEED_STATE_FINISHED); err != nil {
					return err
				}
				cf.Status.State = pb.ChangefeedState_CHANGEFEED_STATE_FINISHED
				return nil
			})
			if err != nil && !errors.Is(err, errTargetMoved) {
				errs = append(errs, err)
			}
			continue
		}
		key := strings.Join(cf.Info.PdAddrs, ",")
		addrs[key] = cf.Info.PdAddrs
		if m, ok := minCkpt[key]; !ok || cf.Status.CheckpointTs < m {
			minCkpt[key] = cf.Status.CheckpointTs
		}
	}
	// An upstream this owner kept a safepoint on whose last live
	// changefeed went (removed, finished): drop the safepoint rather than
	// hold its GC back for gc-ttl, as TiCDC does.
	for key, up := range ups {
		if _, live := minCkpt[key]; live {
			continue
		}
		if _, err := up.UpdateServiceGCSafePoint(ctx, "tidestream-"+c.cfg.ClusterID, 0, 0); err != nil {
			errs = append(errs, fmt.Errorf("upstream %s: remove service GC safepoint: %w", key, err))
			continue
		}
		c.log.Info("service GC safepoint removed: no live changefeed on the upstream", "upstream", key)
		up.Close()
		delete(ups, key)
	}
	for key, ts := range minCkpt {
		up, ok := ups[key]
		if !ok {
			if up, err = c.cfg.OpenUpstream(ctx, addrs[key]); err != nil {
				errs = append(errs, fmt.Errorf("upstream %s: %w", key, err))
				continue
			}
			ups[key] = up
		}
		minSP, err := up.UpdateServiceGCSafePoint(ctx, "tidestream-"+c.cfg.ClusterID, c.cfg.GCTTL, ts)
		if err != nil {
			errs = append(errs, fmt.Errorf("upstream %s: update service GC safepoint to %d: %w", key, ts, err))
			continue
		}
		if minSP > ts {
			errs = append(errs, c.failLostToGC(ctx, fence, cfs, key, minSP)...)
		}
	}
	return errors.Join(errs...)
}

// failLostToGC fails the running changefeeds of an upstream whose
// checkpoint GC has passed: the data they still need may be gone, and only
// an operator (a new changefeed, or resume past the loss) can decide what
// to do. TiCDC's ErrSnapshotLostByGC.
func (c *Coordinator) failLostToGC(ctx context.Context, fence store.Fence, cfs []*store.Changefeed, key string, gcSafePoint uint64) []error {
	var errs []error
	for _, cf := range cfs {
		st := cf.Status.GetState()
		if strings.Join(cf.Info.PdAddrs, ",") != key || cf.Status.GetCheckpointTs() >= gcSafePoint ||
			(st != pb.ChangefeedState_CHANGEFEED_STATE_NORMAL && st != pb.ChangefeedState_CHANGEFEED_STATE_WARNING) {
			continue
		}
		_, err := c.store.UpdateStatus(ctx, cf.Info.Namespace, cf.Info.Id, fence, func(cf *store.Changefeed) error {
			st := cf.Status.GetState()
			if cf.Status.GetCheckpointTs() >= gcSafePoint || (st != pb.ChangefeedState_CHANGEFEED_STATE_NORMAL && st != pb.ChangefeedState_CHANGEFEED_STATE_WARNING) {
				return errTargetMoved // moved on or stopped meanwhile: nothing to do
			}
			cf.Status.State = pb.ChangefeedState_CHANGEFEED_STATE_FAILED
			cf.Status.Error = &pb.RunningError{Time: timestamppb.Now(), Addr: c.cfg.Addr, Code: "CDC:ErrSnapshotLostByGC",
				Message: fmt.Sprintf("[CDC:ErrSnapshotLostByGC]fail to create or maintain changefeed due to snapshot loss caused by GC. checkpoint-ts %d is earlier than or equal to GC safepoint at %d",
					cf.Status.GetCheckpointTs(), gcSafePoint)}
			return nil
		})
		if err != nil && !errors.Is(err, errTargetMoved) {
			errs = append(errs, err)
			continue
		}
		if err == nil {
			c.log.Error("changefeed failed: GC passed its checkpoint", "changefeed", cf.Info.Id, "namespace", cf.Info.Namespace,
				"checkpoint", cf.Status.GetCheckpointTs(), "gc_safepoint", gcSafePoint)
		}
	}
	return errs
}
