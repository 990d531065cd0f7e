// Package frontier tracks the resolved ts of one subscribed span as the
// minimum over its sub-ranges (shared/specs/tikv-changefeed-protocol.md §3.3,
// §3.6).
//
// A Frontier starts with the whole span at the span's start ts. As regions
// report resolved ts, the puller forwards the region's range; the span's
// resolved ts is the minimum over every sub-range, so a region that has not
// reported yet (or is being re-registered) holds the span back at the last ts
// its range reached. When a region must be registered again, MinIn gives the
// checkpoint its range inherits, so the new subscription never starts above
// what the old one delivered.
//
// Keys are memcomparable (the encoding PD and ChangeDataRequest use); an empty
// end key means +∞ and an empty start key is the smallest key.
//
// The package is responsible for the arithmetic only: it does not decide when
// a region's report may be trusted (after INITIALIZED, never regressing — see
// package matcher) nor when the span's minimum is published.
package frontier
