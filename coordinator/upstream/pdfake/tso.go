package pdfake

import (
	"sync"
	"time"
)

// maxLogical bounds the logical part of a TSO: PD keeps 18 bits for it.
const maxLogical = 1 << 18

// tsoAllocator hands out (physical ms, logical) pairs that increase strictly
// across every stream of the server. Its zero value is ready.
type tsoAllocator struct {
	mu       sync.Mutex
	physical int64
	logical  int64
}

// alloc reserves count timestamps and returns the last of them. The
// physical part follows the wall clock but never goes back; when the
// logical part would overflow within one millisecond the allocator borrows
// the next millisecond (real PD waits for its clock instead, which only
// matters for load far beyond any test).
func (a *tsoAllocator) alloc(now time.Time, count uint32) (physical, logical int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ms := now.UnixMilli(); ms > a.physical {
		a.physical, a.logical = ms, 0
	}
	if a.logical+int64(count) >= maxLogical {
		a.physical++
		a.logical = 0
	}
	a.logical += int64(count)
	return a.physical, a.logical
}
