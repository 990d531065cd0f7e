// Package matcher assembles committed row changes from the rows TiKV sends on
// one region subscription (shared/specs/tikv-changefeed-protocol.md §2.4–2.9,
// §3.5).
//
// TiKV sends a transaction's data in its PREWRITE rows and only the commit
// ts in the COMMIT row (plus the value when it is short). A Matcher caches
// PREWRITEs until their COMMIT or ROLLBACK, turns COMMIT and COMMITTED (1PC,
// incremental scan) rows into Events, and follows the subscription's
// INITIALIZED barrier, before which scan rows and realtime rows interleave in
// any order. It also holds the region's resolved ts, because the same
// per-region floor decides which rows are duplicates (at or below the
// checkpoint) and which break the protocol (at or below a resolved ts already
// reported).
//
// The package does not talk to TiKV, filter keys by range or track the span's
// frontier (package frontier). A transaction can be larger than memory
// (https://github.com/pingcap/tiflow/issues/9654): with WithSpill the cached
// PREWRITEs stay in memory only as far as a budget shared by the process
// grants, and the rest wait on disk (package spill) for their COMMIT.
package matcher
