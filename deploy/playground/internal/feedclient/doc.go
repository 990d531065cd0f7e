// Package feedclient is a small TiKV change-data client for tests: it
// subscribes one key span through TiKV's cdcpb.ChangeData service the way a
// CDC puller does (shared/specs/tikv-changefeed-protocol.md §3) and records
// what it assembled — committed row changes, the span's resolved ts and the
// errors and reconnects it went through.
//
// It is built only from public clients: tikv/pd/client for the cluster id,
// client-go's region cache for regions and store addresses, kvproto's cdcpb
// and gRPC. It deliberately knows nothing of the playground's internals, so
// it checks the playground the way an external consumer would.
//
// Algorithm, in short: the span is split into per-region ranges, each with its
// own checkpoint (the initial one, then the latest resolved ts its region
// reached). Every region is registered with EventFeedV2 on one stream per
// store address, from its range's checkpoint. Rows are assembled per region
// (PREWRITE cached, matched by COMMIT; COMMITTED as is; ROLLBACK drops) and
// only commits above the registration's checkpoint are kept. A region error
// releases the range, keeping its checkpoint, and the range is located again
// and re-registered; a failed stream does that for all its regions after a
// backoff. The span's resolved ts is the minimum of the ranges' checkpoints
// once every range has been initialised.
//
// Not implemented (not needed against one emulated store): lock resolution
// for stuck resolved ts, the capability probe and v1 EventFeed fallback, and
// admission limits on concurrent scans.
package feedclient
