// Package cdcemu emulates TiKV's change-data endpoint (the cdcpb.ChangeData
// gRPC service) on top of the playground's unistore engine, following
// shared/specs/tikv-changefeed-protocol.md §2 and the emulator checklist §6.
//
// Every MVCC mutation of unistore goes through an mvcc.DBWriter; the emulator
// wraps it (WrapWriter) and, while holding one apply mutex, turns each applied
// batch into PREWRITE / COMMIT / COMMITTED / ROLLBACK rows for the
// subscriptions whose observed range holds the key. Registration (epoch check,
// snapshot of locks and committed versions, switching on observation), resolved
// ts sampling and region splits take the same mutex, which is what gives the
// emulator TiKV's apply-order guarantees: a row is always queued on its
// connection before any resolved ts that covers it.
//
// Responsibilities: EventFeed and EventFeedV2 (stream-multiplexing), the
// ticdc_version feature gates, cluster-id checks, incremental scans, resolved
// ts that never passes an in-flight lock (async commit and 1PC included, via
// the KV-port interceptors), region errors on splits, deregistration, and the
// fault hooks the playground exposes over HTTP. It also sends what real TiKV
// sends beyond an idealised reading of the protocol (spec §0): the empty
// UNKNOWN row of each committed Lock record, resolved-ts rounds without a TSO
// that re-report current values, register-time rejections that leave a live
// subscription streaming, and realtime Events that are never size-split.
//
// Not emulated: leader transfer, merges, txn_source, pipelined-DML
// generations and RawKV (unistore has none of them).
package cdcemu
