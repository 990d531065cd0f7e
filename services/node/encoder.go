package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/spf13/pflag"
	"github.com/tikv/client-go/v2/config"
	"google.golang.org/grpc"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
	"github.com/tidestream/tidestream/coordinator/store"
	"github.com/tidestream/tidestream/encoder/schema"
	encoder "github.com/tidestream/tidestream/encoder/service"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
	"github.com/tidestream/tidestream/services/runtime/logging"
)

// EncoderConfig configures the encoder role.
type EncoderConfig struct {
	// Workers bounds the goroutines encoding rows at once.
	Workers int
	// Registry CA and client certificate, for Schema Registries behind a
	// private CA or mutual TLS; they are files of this node, so they are
	// flags of the process, not part of a changefeed.
	RegistryCA, RegistryCert, RegistryKey string
}

// AddFlags registers the encoder role's flags.
func (c *EncoderConfig) AddFlags(fs *pflag.FlagSet) {
	fs.IntVar(&c.Workers, "encoder-workers", c.Workers, "rows are decoded and encoded on this many goroutines at once (default: the number of CPUs)")
	fs.StringVar(&c.RegistryCA, "schema-registry-ca", c.RegistryCA, "PEM file of CAs to verify the Schema Registry's certificate with, instead of the system pool")
	fs.StringVar(&c.RegistryCert, "schema-registry-cert", c.RegistryCert, "PEM client certificate for the Schema Registry (mutual TLS; with --schema-registry-key)")
	fs.StringVar(&c.RegistryKey, "schema-registry-key", c.RegistryKey, "PEM private key of --schema-registry-cert")
}

// Validate checks the encoder role's flags.
func (c EncoderConfig) Validate() error {
	switch {
	case c.Workers < 0:
		return fmt.Errorf("--encoder-workers %d: must not be negative", c.Workers)
	case (c.RegistryCert == "") != (c.RegistryKey == ""):
		return errors.New("--schema-registry-cert and --schema-registry-key go together")
	}
	return nil
}

// encoderRole serves EncoderService, pulling from the sorters routes name.
type encoderRole struct {
	snaps *snapshotStores
	svc   *encoder.Service
}

func newEncoderRole(n *Node) (Role, error) {
	log := logging.Component(n.log, "encoder")
	var defaultSorter string
	if n.hasRole(RoleSorter) {
		defaultSorter = n.advert
	}
	var up tidestreamv1.SorterServiceClient
	if sr := n.role(RoleSorter); sr != nil && n.local != nil {
		up = n.local.Sorter(sr.(*sorterRole).svc)
	}
	st := store.New(n.etcd, n.keys)
	r := &encoderRole{snaps: newSnapshotStores(n.cfg.PD, log)}
	workers := n.cfg.Encoder.Workers
	if workers == 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	svc, err := encoder.New(encoder.Config{
		MemberID: n.cfg.MemberID,
		Changefeeds: func(ctx context.Context, ns, id string) (*tidestreamv1.ChangefeedInfo, error) {
			cf, err := st.Get(ctx, ns, id)
			if errors.Is(err, cdcerr.ErrNotFound) {
				return nil, fmt.Errorf("%w: %v", encoder.ErrChangefeedNotFound, err)
			}
			if err != nil {
				return nil, err
			}
			return cf.Info, nil
		},
		LoadSnapshot:     r.snaps.load,
		SorterAddr:       defaultSorter,
		Upstream:         up,
		RegistryCAFile:   n.cfg.Encoder.RegistryCA,
		RegistryCertFile: n.cfg.Encoder.RegistryCert,
		RegistryKeyFile:  n.cfg.Encoder.RegistryKey,
		Workers:          workers,
		Logger:           log,
		Meter:            n.tel.MeterProvider.Meter("tidestream/encoder"),
	})
	if err != nil {
		return nil, err
	}
	r.svc = svc
	return r, nil
}

func (r *encoderRole) Name() string            { return RoleEncoder }
func (r *encoderRole) Register(s *grpc.Server) { r.svc.Register(s) }

// Run is ready at once: the encoder reads a changefeed and its schema on
// the first subscription that names it.
func (r *encoderRole) Run(ctx context.Context, env Env) error {
	env.Ready()
	<-ctx.Done()
	return nil
}
func (r *encoderRole) Stop() { r.svc.Stop() }
func (r *encoderRole) Close() error {
	r.svc.Close()
	return r.snaps.Close()
}

// snapshotStores are the encoder role's client-go connections, one per
// upstream cluster, opened on the first snapshot a route's cluster needs.
type snapshotStores struct {
	def []string
	log *slog.Logger

	mu     sync.Mutex
	byPD   map[string]*schema.Store
	closed bool
}

func newSnapshotStores(def []string, log *slog.Logger) *snapshotStores {
	return &snapshotStores{def: def, log: log, byPD: make(map[string]*schema.Store)}
}

func (s *snapshotStores) load(ctx context.Context, pdAddrs []string, ts uint64) (*schema.Snapshot, error) {
	st, err := s.get(ctx, pdAddrs)
	if err != nil {
		return nil, err
	}
	return schema.LoadSnapshot(ctx, st, ts, 0)
}

func (s *snapshotStores) get(ctx context.Context, pdAddrs []string) (*schema.Store, error) {
	addrs := pdAddrs
	if len(addrs) == 0 {
		addrs = s.def
	}
	if len(addrs) == 0 {
		return nil, errors.New("no upstream: the route names no PD addresses and the process has no --pd")
	}
	addrs = slices.Clone(addrs)
	slices.Sort(addrs)
	addrs = slices.Compact(addrs)
	key := strings.Join(addrs, ",")
	// Held while connecting: a second pipeline of the same cluster waits
	// for the first connection rather than opening another.
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("encoder role closed")
	}
	if st := s.byPD[key]; st != nil {
		return st, nil
	}
	st, err := schema.OpenStore(ctx, addrs, config.Security{})
	if err != nil {
		return nil, fmt.Errorf("connect to upstream PD %s: %w", key, err)
	}
	s.byPD[key] = st
	return st, nil
}

// Close closes every store opened.
func (s *snapshotStores) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	var errs []error
	for key, st := range s.byPD {
		if err := st.Close(); err != nil {
			errs = append(errs, fmt.Errorf("upstream %s: %w", key, err))
		}
		delete(s.byPD, key)
	}
	return errors.Join(errs...)
}
