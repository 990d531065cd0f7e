// Package upstream is the coordinator's view of the upstream TiDB cluster's
// PD: cluster identity, timestamps (TSO) and the GC safepoint. It wraps the
// real github.com/tikv/pd/client so that the rest of the coordinator sees a
// handful of calls with tidestream's error taxonomy (package cdcerr) instead
// of the whole PD API.
//
// Two callers use it: changefeed creation (cluster id, "now" as the default
// start-ts, CheckStartTS) and the GC-safepoint keeper, which holds a service
// GC safepoint at the slowest changefeed's checkpoint so TiKV keeps the MVCC
// versions the changefeeds still need.
//
// Errors: a bad configuration or argument is a cdcerr.FieldError naming the
// field ("pd", "ca", "start-ts", ...); PD not answering (down, wrong address,
// network) wraps cdcerr.ErrUnavailable; a caller's cancelled context comes
// back as context.Canceled. Nothing here retries: the calls are cheap to
// repeat and the caller owns the retry policy (the keeper tolerates failures
// for up to its TTL; creation reports them).
//
// The package does not touch regions, stores or keyspaces (the puller's
// client-go does), and it uses GC safepoint API v1 (service safepoints),
// which every classic PD serves; next-gen keyspace clusters with GC barriers
// are out of scope.
//
// Subpackage pdfake is a fake PD server that the real client accepts, for
// tests here and elsewhere.
package upstream
