// Package pdfake is a small in-process PD (Placement Driver) for tests: a
// real gRPC server on loopback TCP that speaks kvproto's pdpb.PD service well
// enough for the real github.com/tikv/pd/client to connect, draw TSOs and keep
// service GC safepoints.
//
// It is deliberately not internal: unit tests of other coordinator packages
// and the end-to-end tests of another module start one in the test process
// and point `cdc --pd` processes at Server.URL.
//
// What it serves, and why each piece is there (found by running the pinned pd
// client against it, see the upstream package's tests):
//
//   - GetMembers: the client's service discovery asks every configured URL for
//     the member list, takes the cluster id from the header and dials the
//     leader's first client URL. The fake is a one-member cluster whose leader
//     is itself.
//   - GetClusterInfo: asked once at start and then periodically to learn the
//     service mode; the fake answers PD mode, so TSOs come from this server
//     and no TSO microservice is looked for.
//   - Tso: the bidirectional TSO stream, honouring the batch count.
//   - GetGCSafePoint, UpdateGCSafePoint, UpdateServiceGCSafePoint: the GC
//     safepoint v1 API (service safepoints with TTL; the minimum wins).
//   - meta_storagepb.MetaStorage/Get (empty): the client's router-service
//     discovery lists registered router microservices while the client is
//     being constructed and retries for 5 s if the service is missing.
//   - grpc.health.v1.Health (SERVING): the client checks its leader's health
//     every second and marks it failed otherwise.
//
// Everything else is pdpb.UnimplementedPDServer, so an unexpected call fails
// at once with codes.Unimplemented (logged at warn level and listed by
// Server.UnimplementedCalls) instead of hanging a test. No HTTP API is
// served: the pd client's TSO and GC calls are all gRPC.
//
// It is not a PD: no regions, stores, keyspaces, etcd, HTTP API or leader
// changes, and the GC safepoint it reports only moves when a test calls
// SetGCSafePoint or a client calls UpdateGCSafePoint, as TiDB's GC worker
// would.
package pdfake
