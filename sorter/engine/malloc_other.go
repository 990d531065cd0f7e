//go:build !linux || !cgo

package engine

// pinMallocThreshold is a no-op where pebble's memtables do not come from
// glibc (no cgo: Go's allocator) or the platform has no such tunable.
func pinMallocThreshold() {}
