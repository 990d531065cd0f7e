package health

import (
	"fmt"
	"net/http"
	"strings"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// HealthzHandler answers 200 while Overall is SERVING and 503 otherwise
// (starting, dependency lost, draining). Point load balancers and
// readiness probes that only care about the process as a whole here.
func (c *Checker) HealthzHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		st := c.status(Overall)
		writeStatus(w, st == healthpb.HealthCheckResponse_SERVING, "overall: "+st.String()+"\n")
	})
}

// ReadyzHandler answers 200 only when Overall and every registered service
// are SERVING, with one line per service in the body so an operator can see
// which role holds the process back. Use it as the Kubernetes readiness
// probe of a process that hosts several roles.
func (c *Checker) ReadyzHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		var b strings.Builder
		st := c.status(Overall)
		ok := st == healthpb.HealthCheckResponse_SERVING
		fmt.Fprintf(&b, "overall: %s\n", st)
		for _, name := range c.services {
			st := c.status(name)
			ok = ok && st == healthpb.HealthCheckResponse_SERVING
			fmt.Fprintf(&b, "%s: %s\n", name, st)
		}
		writeStatus(w, ok, b.String())
	})
}

// LivezHandler always answers 200 while the process can serve HTTP. It
// exists because /healthz is 503 during start-up and drain: used as a
// liveness probe, /healthz would make the kubelet kill a role that is still
// recovering (sorter reopening pebble) or finishing a graceful drain.
func (c *Checker) LivezHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeStatus(w, true, "alive\n")
	})
}

func writeStatus(w http.ResponseWriter, ok bool, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	// Probes poll; a cached answer would hide a drain.
	w.Header().Set("Cache-Control", "no-store")
	if ok {
		w.WriteHeader(http.StatusOK)
	} else {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = w.Write([]byte(body))
}
