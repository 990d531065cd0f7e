// Package health owns a process's readiness state and publishes it twice:
// as the standard gRPC health service (grpc.health.v1.Health, which load
// balancers, meshes and our own stage clients watch) and as HTTP probes.
//
// It is responsible for: starting every service NOT_SERVING, flipping to
// SERVING only when main says the role's dependencies are up (SetReady),
// flipping to NOT_SERVING for good on drain so that a terminating process
// stops being advertised before it closes anything, and serving /healthz,
// /readyz and /livez from the same state.
//
// It is not responsible for: probing dependencies (the role knows what "up"
// means and calls SetReady / SetServiceStatus), serving HTTP or gRPC (see
// the server package), or deciding when to drain (main, on SIGTERM).
package health
