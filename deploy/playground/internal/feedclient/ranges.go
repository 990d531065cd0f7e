package feedclient

import (
	"bytes"
	"fmt"
	"sort"
)

// part is a piece of the subscribed span, in memcomparable key space. While a
// region subscription covers it, it is locked (sub set); otherwise a task to
// locate and register it is pending. Either way ts is its checkpoint: the
// next registration of any of its keys starts from there (spec §3.3).
type part struct {
	start, end []byte // end nil = +inf
	ts         uint64
	// initialized is set once some subscription of the piece sent
	// INITIALIZED. The span's resolved ts is only published once every piece
	// has been initialised; later re-subscriptions keep it set, because the
	// inherited ts is already safe.
	initialized bool
	sub         *sub
}

// rangeMap holds the pieces of one span: sorted, disjoint, covering it exactly.
type rangeMap struct {
	start, end []byte
	parts      []*part
}

func newRangeMap(start, end []byte, ts uint64) *rangeMap {
	return &rangeMap{start: start, end: end, parts: []*part{{start: start, end: end, ts: ts}}}
}

// cmpEnd compares two range ends, nil meaning +inf.
func cmpEnd(a, b []byte) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return 1
	case b == nil:
		return -1
	}
	return bytes.Compare(a, b)
}

// lock merges the pieces covering [start, end) into one piece owned by s and
// returns it; its ts is the smallest of theirs, so the registration replays
// whatever any of them may still be missing. Every covered piece must be
// unlocked: a locked one would mean two subscriptions for one key.
func (m *rangeMap) lock(start, end []byte, s *sub) (*part, error) {
	if bytes.Compare(start, m.start) < 0 || cmpEnd(end, m.end) > 0 || cmpEnd(start, end) >= 0 {
		return nil, fmt.Errorf("feedclient: range [%x, %x) is not a non-empty part of the span [%x, %x)", start, end, m.start, m.end)
	}
	first := sort.Search(len(m.parts), func(i int) bool { return cmpEnd(m.parts[i].end, start) > 0 })
	last := first // exclusive
	for last < len(m.parts) && (end == nil || bytes.Compare(m.parts[last].start, end) < 0) {
		last++
	}
	for _, p := range m.parts[first:last] {
		if p.sub != nil {
			return nil, fmt.Errorf("feedclient: range [%x, %x) overlaps [%x, %x), still subscribed to region %d",
				start, end, p.start, p.end, p.sub.regionID)
		}
	}
	merged := &part{start: start, end: end, ts: m.parts[first].ts, initialized: true, sub: s}
	var repl []*part
	for _, p := range m.parts[first:last] {
		merged.ts = min(merged.ts, p.ts)
		merged.initialized = merged.initialized && p.initialized
		if bytes.Compare(p.start, start) < 0 {
			left := *p
			left.end = start
			repl = append(repl, &left)
		}
	}
	repl = append(repl, merged)
	if lp := m.parts[last-1]; cmpEnd(lp.end, end) > 0 {
		right := *lp
		right.start = end
		repl = append(repl, &right)
	}
	parts := make([]*part, 0, len(m.parts)-(last-first)+len(repl))
	parts = append(parts, m.parts[:first]...)
	parts = append(parts, repl...)
	parts = append(parts, m.parts[last:]...)
	m.parts = parts
	return merged, nil
}

// resolved returns the span's resolved ts: the smallest checkpoint of its
// pieces, or ok=false while some piece has never been initialised.
func (m *rangeMap) resolved() (ts uint64, ok bool) {
	for i, p := range m.parts {
		if !p.initialized {
			return 0, false
		}
		if i == 0 || p.ts < ts {
			ts = p.ts
		}
	}
	return ts, true
}
