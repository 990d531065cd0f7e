package spill

import (
	"bytes"
	"slices"
)

// readAhead holds rows read from disk ahead of the COMMITs that will ask
// for them. TiKV commits a large transaction region by region in batches
// of keys in key order, a few batches at a time, so the COMMITs of a Space
// walk its rows forward from a handful of places at once. One iterator
// read of the rows after the first key asked for serves the keys that
// follow from memory: a point read per row costs a seek in every level
// and, while a transaction's rows stream through it, index and filter
// blocks the block cache no longer holds.
//
// Each segment is an exact image of its key range: the Space's own writes
// keep it so (a Put cuts the segment before its key, a Delete marks the
// row gone), and nothing else writes a Space's keys.
type readAhead struct {
	segs []*segment // least recently used first
}

type segment struct {
	lo, hi []byte   // the range read, [lo, hi); nil hi: to the Space's end
	keys   [][]byte // in key order
	vals   [][]byte // nil once deleted
	live   int
	size   int64 // bytes of keys and values held
}

// A Space keeps at most aheadSegments of aheadSegmentBytes each: four
// places at once in a region (TiDB commits a region's batches a few at a
// time) for 256 KiB of memory, which counts against the budget.
const (
	aheadSegments     = 4
	aheadSegmentBytes = 64 << 10
)

func (s *segment) covers(k []byte) bool {
	return bytes.Compare(k, s.lo) >= 0 && (s.hi == nil || bytes.Compare(k, s.hi) < 0)
}

func (s *segment) search(k []byte) (int, bool) {
	return slices.BinarySearchFunc(s.keys, k, bytes.Compare)
}

// lookup returns whether a segment covers k and, if so, the row's bytes
// (nil when the Space has no row at k).
func (a *readAhead) lookup(k []byte) (v []byte, covered bool) {
	for i := len(a.segs) - 1; i >= 0; i-- {
		s := a.segs[i]
		if !s.covers(k) {
			continue
		}
		if i != len(a.segs)-1 {
			copy(a.segs[i:], a.segs[i+1:])
			a.segs[len(a.segs)-1] = s
		}
		if j, ok := s.search(k); ok {
			return s.vals[j], true
		}
		return nil, true
	}
	return nil, false
}

// add keeps a segment just read and returns the bytes it freed by
// dropping the least recently used one.
func (a *readAhead) add(s *segment) (freed int64) {
	if len(a.segs) == aheadSegments {
		freed = a.segs[0].size
		a.segs = slices.Delete(a.segs, 0, 1)
	}
	a.segs = append(a.segs, s)
	return freed
}

// put notes a row written at k: segments covering k now end before it.
// It returns the bytes freed.
func (a *readAhead) put(k []byte) (freed int64) {
	a.segs = slices.DeleteFunc(a.segs, func(s *segment) bool {
		if !s.covers(k) {
			return false
		}
		j, _ := s.search(k)
		for i := j; i < len(s.keys); i++ {
			if s.vals[i] != nil {
				s.live--
			}
			freed += int64(len(s.keys[i]) + len(s.vals[i]))
			s.size -= int64(len(s.keys[i]) + len(s.vals[i]))
		}
		clear(s.keys[j:])
		clear(s.vals[j:])
		s.keys, s.vals = s.keys[:j], s.vals[:j]
		s.hi = k
		if bytes.Equal(s.lo, k) {
			freed += s.size
			return true
		}
		return false
	})
	return freed
}

// delete notes the row at k deleted; a segment with no row left goes.
// It returns the bytes freed.
func (a *readAhead) delete(k []byte) (freed int64) {
	a.segs = slices.DeleteFunc(a.segs, func(s *segment) bool {
		if !s.covers(k) {
			return false
		}
		if j, ok := s.search(k); ok && s.vals[j] != nil {
			freed += int64(len(s.vals[j]))
			s.size -= int64(len(s.vals[j]))
			s.vals[j] = nil
			s.live--
		}
		if s.live == 0 {
			freed += s.size
			return true
		}
		return false
	})
	return freed
}

// reset drops every segment and returns the bytes freed.
func (a *readAhead) reset() (freed int64) {
	for _, s := range a.segs {
		freed += s.size
	}
	a.segs = nil
	return freed
}
