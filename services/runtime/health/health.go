package health

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"google.golang.org/grpc"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tidestream/tidestream/services/runtime/logging"
)

// Overall is the service name the gRPC health protocol uses for "the whole
// server". Clients that do not know our service names check this one.
const Overall = ""

// Checker holds the serving state of one process. It is safe for concurrent
// use. The zero value is not usable; call New.
type Checker struct {
	logger *slog.Logger
	srv    *grpchealth.Server

	mu       sync.Mutex
	services []string // registered names, Overall excluded, sorted; immutable after New, so read without mu
	draining bool
}

// New returns a Checker with Overall and each named service NOT_SERVING.
// Names are the fully qualified gRPC service names the process serves
// (e.g. "tidestream.v1.PullerService"), so that a client can ask about the
// exact service it is about to call.
func New(logger *slog.Logger, services ...string) *Checker {
	c := &Checker{
		logger: logging.Component(logger, "health"),
		// grpchealth.NewServer starts Overall as SERVING; that would
		// advertise a process whose dependencies are not up yet, so every
		// status is overwritten below before the Checker is returned.
		srv: grpchealth.NewServer(),
	}
	c.srv.SetServingStatus(Overall, healthpb.HealthCheckResponse_NOT_SERVING)
	for _, name := range services {
		if name == Overall || slices.Contains(c.services, name) {
			continue
		}
		c.services = append(c.services, name)
		c.srv.SetServingStatus(name, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	slices.Sort(c.services)
	return c
}

// Register adds the grpc.health.v1.Health service to r (normally the role's
// *grpc.Server).
func (c *Checker) Register(r grpc.ServiceRegistrar) {
	healthpb.RegisterHealthServer(r, c.srv)
}

// SetReady marks Overall and every registered service SERVING. Call it once
// the role's dependencies are up (etcd session, upstream subscription,
// Kafka metadata). It is ignored after Drain: a dependency that comes up
// during shutdown must not re-advertise a process that is going away.
func (c *Checker) SetReady() {
	c.setAll(healthpb.HealthCheckResponse_SERVING)
}

// SetNotReady marks Overall and every registered service NOT_SERVING
// without draining: a later SetReady flips them back. Use it when a
// dependency is lost at run time (for example the etcd session expired and
// is being re-established).
func (c *Checker) SetNotReady() {
	c.setAll(healthpb.HealthCheckResponse_NOT_SERVING)
}

// SetServiceStatus sets one registered service's status, leaving Overall
// alone. It lets a process hosting several roles (`cdc server`) report one
// role as unavailable while the others keep serving. Unknown names are
// rejected rather than added, so a typo cannot create a service that is
// forever SERVING while the real one is not. Ignored after Drain.
func (c *Checker) SetServiceStatus(service string, serving bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !slices.Contains(c.services, service) {
		return fmt.Errorf("health: unknown service %q (registered: %s)", service, strings.Join(c.services, ", "))
	}
	if c.draining {
		return nil
	}
	c.srv.SetServingStatus(service, toStatus(serving))
	return nil
}

// Drain marks everything NOT_SERVING and keeps it so. Call it first on
// SIGTERM, before closing listeners or streams: watchers (grpc health
// Watch, kube readiness probes, mesh sidecars) then stop routing new work
// here while in-flight streams finish. Drain is idempotent.
func (c *Checker) Drain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.draining {
		return
	}
	c.draining = true
	// Shutdown also makes the grpc health server ignore any later
	// SetServingStatus, so nothing can undo the drain behind our back.
	c.srv.Shutdown()
	c.logger.Info("health: draining, now NOT_SERVING")
}

// Serving reports whether Overall is SERVING.
func (c *Checker) Serving() bool {
	return c.status(Overall) == healthpb.HealthCheckResponse_SERVING
}

// Draining reports whether Drain has been called.
func (c *Checker) Draining() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.draining
}

func (c *Checker) setAll(st healthpb.HealthCheckResponse_ServingStatus) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.draining {
		c.logger.Debug("health: status change ignored while draining", "status", st.String())
		return
	}
	// Services before Overall on the way up, so that a client which sees
	// Overall SERVING and then checks its own service never sees it lag.
	for _, name := range c.services {
		c.srv.SetServingStatus(name, st)
	}
	c.srv.SetServingStatus(Overall, st)
	c.logger.Info("health: status changed", "status", st.String())
}

// status reads back from the grpc health server so HTTP and gRPC can never
// disagree.
func (c *Checker) status(service string) healthpb.HealthCheckResponse_ServingStatus {
	resp, err := c.srv.Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return healthpb.HealthCheckResponse_SERVICE_UNKNOWN
	}
	return resp.GetStatus()
}

func toStatus(serving bool) healthpb.HealthCheckResponse_ServingStatus {
	if serving {
		return healthpb.HealthCheckResponse_SERVING
	}
	return healthpb.HealthCheckResponse_NOT_SERVING
}
