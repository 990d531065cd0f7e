// Package coordinator is the control-plane role: it registers the process as
// a member, campaigns for ownership, serves the control API, and while owner
// keeps the cluster's duties (today: the upstream GC safepoint and target-ts
// completion; later issues add pipeline scheduling and schema history).
//
// Run is its lifecycle; RegisterServices puts its gRPC services on the
// process's server, which the caller owns.
package coordinator
