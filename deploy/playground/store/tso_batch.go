package store

import (
	"context"
	"fmt"
)

// MaxTSBatch is the largest number of timestamps one GetTSBatch call hands out: all
// of them share one physical millisecond, so at most the logical range fits.
const MaxTSBatch = 1 << logicalBits

// GetTSBatch allocates count consecutive timestamps atomically from the persistent
// TSO and returns the physical part they share and the logical part of the LAST one
// (the first is lastLogical-count+1). That is the shape of PD's Tso stream response,
// from which tikv/pd/client derives the whole batch. Like GetTS, every timestamp is
// above every timestamp issued before, also by an earlier process on the same Dir.
func (p *PD) GetTSBatch(_ context.Context, count uint32) (physical, lastLogical int64, err error) {
	return p.tso.nextBatch(int64(count))
}

// nextBatch is next for n timestamps sharing one physical part.
func (t *tso) nextBatch(n int64) (int64, int64, error) {
	if n < 1 || n > MaxTSBatch {
		return 0, 0, fmt.Errorf("store: tso batch of %d timestamps, want 1..%d", n, MaxTSBatch)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	physical, first := t.physical, t.logical+1
	if now := t.now().UnixMilli(); now > physical {
		physical, first = now, 0
	}
	if first+n > MaxTSBatch {
		// The batch must not straddle two milliseconds; borrow the next one, as
		// next does when its logical part overflows.
		physical, first = physical+1, 0
	}
	if physical >= t.limit {
		limit := physical + tsoWindow.Milliseconds()
		if err := t.save(limit); err != nil {
			// Nothing was handed out; state stays as it was.
			return 0, 0, err
		}
		t.limit = limit
	}
	t.physical, t.logical = physical, first+n-1
	return t.physical, t.logical, nil
}
