// Package engine is the sorter's storage: one pebble instance per process
// holding the raw events of every pipeline placed on it, keyed so that
// iteration yields (pipeline, commit ts, start ts, key) order.
//
// It is responsible for: ordering, the memory quota (memtables + block
// cache; beyond them data lives on disk only), releasing events only up to
// a pipeline's resolved ts without splitting a commit ts, deleting what the
// downstream acknowledged and compacting it away, and epoch fencing
// (a newer epoch discards the older one's data).
//
// It is not responsible for: talking to the puller or the encoder, fair
// scheduling across pipelines, or durability — the directory is wiped on
// Open because every pipeline restarts from its checkpoint after a process
// restart. The on-disk layout is specified in FORMAT.md.
package engine
