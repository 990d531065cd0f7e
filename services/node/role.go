package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"google.golang.org/grpc"

	"github.com/tidestream/tidestream/coordinator"
	"github.com/tidestream/tidestream/coordinator/member"
	"github.com/tidestream/tidestream/puller/service"
	"github.com/tidestream/tidestream/services/runtime/logging"
	"github.com/tidestream/tidestream/sorter/engine"
	sorter "github.com/tidestream/tidestream/sorter/service"
)

// Role is one part of a process: the coordinator or a stage. The process
// builds the roles its config names, registers their services on its one
// gRPC server, runs them on its one member registration, and stops them in
// order: readiness drops, Stop ends their streams, Run returns, Close
// releases. Encoder and producer roles plug in the same way.
type Role interface {
	// Name is the role's name, as in --roles and the member record.
	Name() string
	// Register adds the role's gRPC services.
	Register(s *grpc.Server)
	// Run serves until ctx ends; an error stops the process. reg is the
	// process's member registration: only the coordinator campaigns on it.
	Run(ctx context.Context, reg *member.Registration) error
	// Stop ends the role's open streams at once, as shutdown begins, so a
	// graceful server stop does not wait for them. Idempotent.
	Stop()
	// Close releases what the role holds, after Run returned or when it
	// never ran. Idempotent.
	Close() error
}

// coordinatorRole is the control API and the owner campaign.
type coordinatorRole struct{ c *coordinator.Coordinator }

func (r coordinatorRole) Name() string            { return RoleCoordinator }
func (r coordinatorRole) Register(s *grpc.Server) { r.c.RegisterServices(s) }
func (r coordinatorRole) Run(ctx context.Context, reg *member.Registration) error {
	return r.c.Run(ctx, reg)
}
func (r coordinatorRole) Stop()        {}
func (r coordinatorRole) Close() error { return nil }

// pullerRole serves PullerService from the upstream clusters its requests'
// routes name.
type pullerRole struct {
	ups *upstreams
	svc *service.Service
}

func newPullerRole(n *Node) (*pullerRole, error) {
	log := logging.Component(n.log, "puller")
	meter := n.tel.MeterProvider.Meter("tidestream/puller")
	r := &pullerRole{ups: newUpstreams(n.cfg.PD, log, meter)}
	svc, err := service.New(service.Config{Upstreams: r.ups.get, MemoryQuota: n.cfg.PullerMemoryQuota, Logger: log, Meter: meter})
	if err != nil {
		return nil, err
	}
	r.svc = svc
	return r, nil
}

func (r *pullerRole) Name() string            { return RolePuller }
func (r *pullerRole) Register(s *grpc.Server) { r.svc.Register(s) }
func (r *pullerRole) Run(ctx context.Context, _ *member.Registration) error {
	<-ctx.Done()
	return nil
}
func (r *pullerRole) Stop()        { r.svc.Stop() }
func (r *pullerRole) Close() error { r.svc.Stop(); return r.ups.Close() }

// sorterRole serves SorterService, pulling from the pullers routes name
// (this process's own by default).
type sorterRole struct {
	db  *engine.Engine
	svc *sorter.Service
}

func newSorterRole(n *Node, defaultPuller string) (*sorterRole, error) {
	log := logging.Component(n.log, "sorter")
	meter := n.tel.MeterProvider.Meter("tidestream/sorter")
	db, err := engine.Open(engine.Config{
		Dir: filepath.Join(n.cfg.DataDir, "sorter"), MemoryQuota: n.cfg.SorterMemoryQuota, Logger: log, Meter: meter,
	})
	if err != nil {
		return nil, fmt.Errorf("sorter: %w", err)
	}
	svc, err := sorter.New(sorter.Config{PullerAddr: defaultPuller, Engine: db, Logger: log, Meter: meter})
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	return &sorterRole{db: db, svc: svc}, nil
}

func (r *sorterRole) Name() string            { return RoleSorter }
func (r *sorterRole) Register(s *grpc.Server) { r.svc.Register(s) }
func (r *sorterRole) Run(ctx context.Context, _ *member.Registration) error {
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
