// Package sorter is the sorter stage: it pulls a pipeline's raw changes from
// a puller, orders them by (commit ts, start ts, key) in pebble under a memory
// quota (spilling to disk), and serves them up to the resolved ts through
// tidestream.v1.SorterService. The storage is in engine, the service in
// service.
package sorter
