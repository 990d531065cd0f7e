package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
	"github.com/tidestream/tidestream/coordinator/changefeed"
	"github.com/tidestream/tidestream/coordinator/replicaconfig"
	"github.com/tidestream/tidestream/coordinator/store"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// CreatingServiceTTL is how long the GC safepoint set at create time holds
// the start ts. It only has to bridge the gap until the owner's regular
// safepoint upkeep covers the new changefeed, which is seconds; an hour
// leaves room for an owner election in between.
const CreatingServiceTTL = time.Hour

// Config configures the control API.
type Config struct {
	Store *store.Store
	// OpenUpstream connects to an upstream PD.
	OpenUpstream UpstreamOpener
	// IneligibleTables reads an upstream's schema for the eligibility
	// check at create.
	IneligibleTables IneligibleTableLister
	// Addr of this process, recorded in errors it reports.
	Addr string
	// Version of this binary, recorded as creator_version.
	Version string
	// ClusterID names this tidestream cluster in GC service ids.
	ClusterID string
	// DefaultPDAddrs is the upstream of changefeeds created without --pd
	// (the server's own --pd, as in TiCDC).
	DefaultPDAddrs []string
	Logger         *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Validate checks the config.
func (c *Config) Validate() error {
	switch {
	case c.Store == nil:
		return errors.New("control: Store must be set")
	case c.OpenUpstream == nil:
		return errors.New("control: OpenUpstream must be set")
	case c.IneligibleTables == nil:
		return errors.New("control: IneligibleTables must be set")
	}
	return nil
}

// ChangefeedServer implements tidestreamv1.ChangefeedServiceServer.
type ChangefeedServer struct {
	pb.UnimplementedChangefeedServiceServer
	cfg Config
	log *slog.Logger
}

// NewChangefeedServer returns the changefeed service.
func NewChangefeedServer(cfg Config) (*ChangefeedServer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &ChangefeedServer{cfg: cfg, log: log.With("component", "control")}, nil
}

func namespaceOf(ns string) (string, error) {
	if ns == "" {
		return store.DefaultNamespace, nil
	}
	if err := changefeed.ValidateNamespace(ns); err != nil {
		return "", err
	}
	return ns, nil
}

// normalizePD accepts TiCDC's forms: a comma-separated list, with or
// without http(s)://.
func normalizePD(addrs []string) ([]string, error) {
	var out []string
	for _, a := range addrs {
		for _, p := range strings.Split(a, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	if len(out) == 0 {
		return nil, cdcerr.Field("pd", "at least one upstream PD address is required (give --pd to the command or to cdc server)")
	}
	return out, nil
}

// Create validates a changefeed request and stores it.
func (s *ChangefeedServer) Create(ctx context.Context, req *pb.CreateChangefeedRequest) (*pb.ChangefeedInfo, error) {
	info, err := s.create(ctx, req)
	if err != nil {
		s.log.Info("create changefeed refused", "changefeed", req.GetId(), "err", err)
		return nil, cdcerr.ToStatus(err)
	}
	s.log.Info("changefeed created", "namespace", info.Namespace, "changefeed", info.Id, "start_ts", info.StartTs, "sink_uri", info.SinkUri)
	return info, nil
}

func (s *ChangefeedServer) create(ctx context.Context, req *pb.CreateChangefeedRequest) (*pb.ChangefeedInfo, error) {
	ns, err := namespaceOf(req.Namespace)
	if err != nil {
		return nil, err
	}
	id := req.Id
	if id == "" {
		id = uuid.NewString()
	} else if err := changefeed.ValidateID(id); err != nil {
		return nil, err
	}
	pdIn := req.PdAddrs
	if len(pdIn) == 0 {
		pdIn = s.cfg.DefaultPDAddrs
	}
	pdAddrs, err := normalizePD(pdIn)
	if err != nil {
		return nil, err
	}
	// Everything that needs no network first: a bad sink URI should not
	// wait for PD.
	built, err := replicaconfig.Build(replicaconfig.Input{
		SinkURI:               req.SinkUri,
		SchemaRegistry:        req.SchemaRegistry,
		ConfigTOML:            []byte(req.ConfigToml),
		IgnoreIneligibleTable: req.IgnoreIneligibleTable,
	})
	if err != nil {
		return nil, err
	}
	if req.TargetTs != 0 && req.StartTs != 0 && req.TargetTs <= req.StartTs {
		return nil, cdcerr.Field("target-ts", "must be greater than start-ts %d, got %d", req.StartTs, req.TargetTs)
	}
	if _, err := s.cfg.Store.Get(ctx, ns, id); err == nil {
		return nil, fmt.Errorf("changefeed-id: changefeed %q already exists in namespace %q: %w", id, ns, cdcerr.ErrAlreadyExists)
	} else if !errors.Is(err, cdcerr.ErrNotFound) {
		return nil, err
	}

	up, err := s.cfg.OpenUpstream(ctx, pdAddrs)
	if err != nil {
		return nil, err
	}
	defer up.Close()
	startTS := req.StartTs
	if startTS == 0 {
		if startTS, err = up.CurrentTS(ctx); err != nil {
			return nil, err
		}
	}
	if req.TargetTs != 0 && req.TargetTs <= startTS {
		return nil, cdcerr.Field("target-ts", "must be greater than start-ts %d, got %d", startTS, req.TargetTs)
	}
	if built.Config.CheckGcSafePoint && !req.DisableGcCheck {
		if err := up.CheckStartTS(ctx, startTS); err != nil {
			return nil, err
		}
		// Hold GC at the start ts until the owner's upkeep takes over;
		// otherwise data between start ts and now could be collected
		// before the first pipeline reads it.
		minSP, err := up.UpdateServiceGCSafePoint(ctx, s.creatingServiceID(ns, id), CreatingServiceTTL, startTS)
		if err != nil {
			return nil, fmt.Errorf("hold GC safepoint at start-ts %d: %w", startTS, err)
		}
		// GC may have advanced between the check and the hold; PD does not
		// store a service safepoint below the current minimum, so the
		// minimum it returns is the authority.
		if minSP > startTS {
			return nil, cdcerr.Field("start-ts", "%d is below the GC safepoint %d; data at start-ts may already be collected", startTS, minSP)
		}
	}
	// After the hold (when the GC check is on): the schema is read at
	// start-ts, which GC must not pass during the read. A refusal leaves
	// the hold to its TTL, as TiCDC's does; a retried create with the same
	// id renews it.
	if err := s.checkEligibility(ctx, ns, id, pdAddrs, startTS, built.Config); err != nil {
		return nil, err
	}

	info := &pb.ChangefeedInfo{
		Namespace:         ns,
		Id:                id,
		UpstreamId:        up.ClusterID(),
		PdAddrs:           pdAddrs,
		SinkUri:           req.SinkUri,
		Config:            built.Config,
		Kafka:             built.Kafka,
		Avro:              built.Avro,
		CreateTime:        timestamppb.New(s.cfg.Now()),
		StartTs:           startTS,
		TargetTs:          req.TargetTs,
		CreatorVersion:    s.cfg.Version,
		ConfigToml:        req.ConfigToml,
		SchemaRegistryArg: req.SchemaRegistry,
	}
	st := &pb.ChangefeedStatus{
		State:        pb.ChangefeedState_CHANGEFEED_STATE_NORMAL,
		CheckpointTs: startTS,
		Epoch:        1,
	}
	if err := s.cfg.Store.Create(ctx, info, st); err != nil {
		if errors.Is(err, cdcerr.ErrAlreadyExists) {
			return nil, fmt.Errorf("changefeed-id: %w", err)
		}
		return nil, err
	}
	return redacted(&store.Changefeed{Info: info, Status: st}), nil
}

func (s *ChangefeedServer) creatingServiceID(ns, id string) string {
	return fmt.Sprintf("tidestream-creating-%s-%s-%s", s.cfg.ClusterID, ns, id)
}

// redacted is the only way a changefeed leaves this package.
func redacted(cf *store.Changefeed) *pb.ChangefeedInfo {
	v := cf.View()
	v.ConfigToml = ""
	v.SchemaRegistryArg = ""
	replicaconfig.Redact(v)
	return v
}

// Get returns one changefeed.
func (s *ChangefeedServer) Get(ctx context.Context, req *pb.GetChangefeedRequest) (*pb.ChangefeedInfo, error) {
	ns, err := namespaceOf(req.Namespace)
	if err != nil {
		return nil, cdcerr.ToStatus(err)
	}
	cf, err := s.cfg.Store.Get(ctx, ns, req.Id)
	if err != nil {
		return nil, cdcerr.ToStatus(err)
	}
	return redacted(cf), nil
}

// List returns the changefeeds of a namespace ("" for all); finished ones
// only with All, as in TiCDC.
func (s *ChangefeedServer) List(ctx context.Context, req *pb.ListChangefeedsRequest) (*pb.ListChangefeedsResponse, error) {
	ns := req.Namespace
	if ns != "" {
		if err := changefeed.ValidateNamespace(ns); err != nil {
			return nil, cdcerr.ToStatus(err)
		}
	}
	cfs, err := s.cfg.Store.List(ctx, ns)
	if err != nil {
		return nil, cdcerr.ToStatus(err)
	}
	resp := &pb.ListChangefeedsResponse{}
	for _, cf := range cfs {
		if !req.All && (cf.Status.State == pb.ChangefeedState_CHANGEFEED_STATE_FINISHED || cf.Status.State == pb.ChangefeedState_CHANGEFEED_STATE_REMOVED) {
			continue
		}
		resp.Changefeeds = append(resp.Changefeeds, redacted(cf))
	}
	return resp, nil
}

// Pause stops a changefeed (state stopped).
func (s *ChangefeedServer) Pause(ctx context.Context, req *pb.ChangefeedRef) (*pb.ChangefeedInfo, error) {
	return s.transition(ctx, req.Namespace, req.Id, "pause", s.changeState, func(cf *store.Changefeed) error {
		if err := changefeed.CheckTransition(cf.Status.State, pb.ChangefeedState_CHANGEFEED_STATE_STOPPED); err != nil {
			return err
		}
		cf.Status.State = pb.ChangefeedState_CHANGEFEED_STATE_STOPPED
		return nil
	})
}

// Resume restarts a stopped or failed changefeed from its checkpoint, or
// from overwrite_checkpoint_ts.
func (s *ChangefeedServer) Resume(ctx context.Context, req *pb.ResumeChangefeedRequest) (*pb.ChangefeedInfo, error) {
	ns, err := namespaceOf(req.Namespace)
	if err != nil {
		return nil, cdcerr.ToStatus(err)
	}
	overwrite := req.OverwriteCheckpointTs
	if overwrite != 0 && req.OverwriteCheckpointNow {
		return nil, cdcerr.ToStatus(cdcerr.Field("overwrite-checkpoint-ts", "give either a ts or now, not both"))
	}
	if overwrite != 0 || req.OverwriteCheckpointNow {
		// Ask the upstream outside the CAS loop: network calls do not
		// belong in a function that may run several times.
		cf, err := s.cfg.Store.Get(ctx, ns, req.Id)
		if err != nil {
			return nil, cdcerr.ToStatus(err)
		}
		if overwrite, err = s.checkOverwrite(ctx, cf.Info.PdAddrs, overwrite); err != nil {
			return nil, cdcerr.ToStatus(err)
		}
	}
	return s.transition(ctx, ns, req.Id, "resume", s.changeState, func(cf *store.Changefeed) error {
		if err := changefeed.CheckTransition(cf.Status.State, pb.ChangefeedState_CHANGEFEED_STATE_NORMAL); err != nil {
			return err
		}
		if cf.Status.State == pb.ChangefeedState_CHANGEFEED_STATE_WARNING {
			return fmt.Errorf("changefeed is retrying (warning); pause it before resuming: %w", cdcerr.ErrFailedPrecondition)
		}
		cf.Status.State = pb.ChangefeedState_CHANGEFEED_STATE_NORMAL
		cf.Status.Error = nil
		cf.Status.Epoch++
		if overwrite != 0 {
			cf.Status.CheckpointTs = overwrite
			cf.Status.ResolvedTs = 0
		}
		return nil
	})
}

// checkOverwrite validates an overwrite checkpoint (0 means "now") against
// the upstream and returns the ts to use.
func (s *ChangefeedServer) checkOverwrite(ctx context.Context, pdAddrs []string, ts uint64) (uint64, error) {
	up, err := s.cfg.OpenUpstream(ctx, pdAddrs)
	if err != nil {
		return 0, err
	}
	defer up.Close()
	if ts == 0 {
		return up.CurrentTS(ctx)
	}
	if err := up.CheckStartTS(ctx, ts); err != nil {
		var fe *cdcerr.FieldError
		if errors.As(err, &fe) {
			return 0, cdcerr.Field("overwrite-checkpoint-ts", "%s", fe.Reason)
		}
		return 0, err
	}
	return ts, nil
}

// Remove deletes a changefeed and returns its last state as removed.
func (s *ChangefeedServer) Remove(ctx context.Context, req *pb.ChangefeedRef) (*pb.ChangefeedInfo, error) {
	ns, err := namespaceOf(req.Namespace)
	if err != nil {
		return nil, cdcerr.ToStatus(err)
	}
	cf, err := s.cfg.Store.Delete(ctx, ns, req.Id, store.Fence{}, func(cf *store.Changefeed) error {
		return changefeed.CheckTransition(cf.Status.State, pb.ChangefeedState_CHANGEFEED_STATE_REMOVED)
	})
	if err != nil {
		return nil, cdcerr.ToStatus(err)
	}
	cf.Status.State = pb.ChangefeedState_CHANGEFEED_STATE_REMOVED
	s.log.Info("changefeed removed", "namespace", ns, "changefeed", req.Id)
	return redacted(cf), nil
}

// Update changes the sink, registry, config or target ts of a stopped or
// failed changefeed; the whole configuration is rebuilt and revalidated.
func (s *ChangefeedServer) Update(ctx context.Context, req *pb.UpdateChangefeedRequest) (*pb.ChangefeedInfo, error) {
	ns, err := namespaceOf(req.Namespace)
	if err != nil {
		return nil, cdcerr.ToStatus(err)
	}
	if req.SinkUri == nil && req.SchemaRegistry == nil && req.ConfigToml == nil && req.TargetTs == nil {
		return nil, cdcerr.ToStatus(cdcerr.Field("update", "nothing to update: give at least one of --sink-uri, --schema-registry, --config, --target-ts"))
	}
	// Info only: a checkpoint landing meanwhile must not make the update
	// retry, and the state it checks cannot change under it without the
	// info key moving too (store.Update, KEYS.md).
	return s.transition(ctx, ns, req.Id, "update", s.cfg.Store.UpdateInfo, func(cf *store.Changefeed) error {
		st := cf.Status.State
		if st != pb.ChangefeedState_CHANGEFEED_STATE_STOPPED && st != pb.ChangefeedState_CHANGEFEED_STATE_FAILED {
			return fmt.Errorf("changefeed is %s; pause it before updating: %w", changefeed.StateName(st), cdcerr.ErrFailedPrecondition)
		}
		info := proto.Clone(cf.Info).(*pb.ChangefeedInfo)
		if req.SinkUri != nil {
			info.SinkUri = *req.SinkUri
		}
		if req.SchemaRegistry != nil {
			info.SchemaRegistryArg = *req.SchemaRegistry
		}
		if req.ConfigToml != nil {
			info.ConfigToml = *req.ConfigToml
		}
		if req.TargetTs != nil {
			if *req.TargetTs != 0 && *req.TargetTs <= cf.Status.CheckpointTs {
				return cdcerr.Field("target-ts", "must be greater than the checkpoint %d, got %d", cf.Status.CheckpointTs, *req.TargetTs)
			}
			info.TargetTs = *req.TargetTs
		}
		built, err := replicaconfig.Build(replicaconfig.Input{
			SinkURI:               info.SinkUri,
			SchemaRegistry:        info.SchemaRegistryArg,
			ConfigTOML:            []byte(info.ConfigToml),
			IgnoreIneligibleTable: cf.Info.GetConfig().GetIgnoreIneligibleTable(),
		})
		if err != nil {
			return err
		}
		info.Config, info.Kafka, info.Avro = built.Config, built.Kafka, built.Avro
		cf.Info = info
		return nil
	})
}

// storeWrite is one of the store's compare-and-swap updates without a
// fence: user mutations are not owner writes.
type storeWrite func(ctx context.Context, namespace, id string, mutate func(*store.Changefeed) error) (*store.Changefeed, error)

// changeState writes a user's state transition. It goes through both keys
// (store.Update), not the status alone, so that an update checking the
// state at the same time fails its compare on the info key.
func (s *ChangefeedServer) changeState(ctx context.Context, namespace, id string, mutate func(*store.Changefeed) error) (*store.Changefeed, error) {
	return s.cfg.Store.Update(ctx, namespace, id, store.Fence{}, mutate)
}

// transition runs a user mutation with compare-and-swap and maps errors.
func (s *ChangefeedServer) transition(ctx context.Context, namespace, id, op string, write storeWrite, mutate func(*store.Changefeed) error) (*pb.ChangefeedInfo, error) {
	ns, err := namespaceOf(namespace)
	if err != nil {
		return nil, cdcerr.ToStatus(err)
	}
	cf, err := write(ctx, ns, id, mutate)
	if err != nil {
		s.log.Info(op+" changefeed refused", "namespace", ns, "changefeed", id, "err", err)
		return nil, cdcerr.ToStatus(err)
	}
	s.log.Info("changefeed "+op, "namespace", ns, "changefeed", id, "state", changefeed.StateName(cf.Status.State))
	return redacted(cf), nil
}
