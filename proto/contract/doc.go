// Package contract is the stream contract every stage of a pipeline speaks,
// written once beside the wire types (DESIGN.md §8): how a Subscribe request
// is validated, how epochs fence a pipeline's streams, what a failed stream
// means for the pipeline (Outcome), how large a batch may be, and how stages
// dial each other.
//
// A stage module uses it on both ends of its streams — the server side it
// serves and the client side it pulls from — so a failure classified by the
// puller is understood the same way by the sorter, the encoder and the
// producer. It depends on gRPC and the generated types only; it holds no
// stage logic.
//
// Outcomes, from the least to the most severe for the pipeline:
//
//   - Transient: the upstream stage is down or shutting down; the caller
//     retries Subscribe in place from its own resolved ts (Subscribe is
//     idempotent given from_ts).
//   - Restart: the stream's data can no longer be trusted (a protocol
//     violation, a lost invariant, an engine error); the pipeline restarts
//     from its table checkpoint with a new epoch. Retrying in place would
//     resume above rows that may be missing.
//   - Fatal: retrying cannot help (the history is below the GC safepoint, an
//     incompatible cluster, a bad request); the changefeed moves to failed.
//   - Fenced: a newer epoch (or a newer subscriber of the same epoch) owns
//     the pipeline; the stream's owner is a zombie and must stop, never retry.
//
// Each outcome travels as a gRPC status carrying an ErrorInfo detail
// (Domain, Reason = the outcome's name), so it survives any code a stage
// picks; statuses without the detail (from gRPC itself, or an older peer)
// are classified by code.
package contract
