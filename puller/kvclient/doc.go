// Package kvclient is the puller's TiKV change-data client: it subscribes key
// spans through ChangeData.EventFeedV2 (multiplexed, falling back to
// EventFeed), matches PREWRITE with COMMIT per region, and reports committed
// events plus a span resolved ts that never passes an event it has not
// delivered (shared/specs/tikv-changefeed-protocol.md §3, §7).
//
// Shape, chosen for many spans and regions on one process:
//
//   - One gRPC connection per store and Config.StreamsPerStore EventFeedV2
//     streams on it, shared by every subscription; the request id of each
//     registration is its subscription's id. A store that answers
//     UNIMPLEMENTED to the multiplexing probe gets one EventFeed stream per
//     subscription instead (spec §1.4: without multiplexing resolved ts carry
//     no request id, so a stream can serve one subscription only).
//   - A receive goroutine per stream routes each message to its
//     subscription's bounded inbox; a full inbox blocks the receive loop, so
//     a slow Sink slows TiKV through gRPC flow control instead of growing a
//     queue.
//   - Subscribe's own goroutine owns all per-region state of its span
//     (epoch, range, checkpoint, initialized flag, matcher) and the span's
//     frontier, so none of it is locked. Region location (PD through the
//     client-go region cache) runs on a small shared pool, never on the
//     goroutines that read streams.
//
// What it is not responsible for: sorting (events arrive in any order across
// regions), de-duplication (a re-registered region replays from its own
// checkpoint, so an event can arrive twice: at-least-once), GC safepoints,
// and serving the sorter.
package kvclient
