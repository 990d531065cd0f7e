// Package server runs the two network endpoints every tidestream role has:
// the status HTTP server (/metrics, /healthz, /readyz, /livez,
// /debug/pprof/) and the gRPC server the role's services are registered on.
//
// It is responsible for: building both servers from validated configs with
// production-safe options (timeouts, keepalive, message size limits),
// listening (":0" works, and the bound address is observable before Run so
// tests and the in-process e2e runner can use run-time ports), serving, and
// on context cancellation draining in-flight work for a bounded time before
// stopping hard. Run returns nil on a cancellation-driven stop.
//
// It is not responsible for: TLS and authentication (passed in as
// grpc.ServerOption / a wrapped handler by main), tracing interceptors
// (main adds otelgrpc's stats handler as an option), the role's own
// services, or deciding when readiness flips (see the health package; the
// gRPC server only calls Drain on its Checker before stopping, as a safety
// net in case main did not).
package server
