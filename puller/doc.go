// Package puller will hold the puller stage: it subscribes to TiKV's
// change-data stream (EventFeed / EventFeedV2) for the table spans assigned
// to it, matches prewrites with commits, tracks a resolved-ts frontier over
// each span, and serves the raw committed changes to sorters through
// tidestream.v1.PullerService (shared/specs/tikv-changefeed-protocol.md §3,
// §7). Issue 4 builds it; today the module only fixes its place in go.work.
package puller
