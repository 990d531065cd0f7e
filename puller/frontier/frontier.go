package frontier

import (
	"bytes"

	"github.com/google/btree"
)

// btreeDegree is the B-tree fan-out: 32 keeps a 100k-entry tree four levels
// deep. The tree is off the hot path (see byStart), so it was not tuned.
const btreeDegree = 32

// entry is one sub-range [start, end) of the span and its resolved ts.
// Entries tile the span: no gaps, no overlaps. Key slices are owned by the
// Frontier and never modified after creation, so neighbours may share the
// slice of their common boundary.
type entry struct {
	start []byte
	end   []byte // empty = +∞ (only the last entry, when the span is unbounded)
	ts    uint64
	idx   int // position in the min-heap, kept up to date by the heap
}

// Frontier is the resolved ts of a span, tracked per sub-range.
//
// Entries live in a B-tree ordered by start key (for locating a key range)
// and in a min-heap ordered by ts (for the span minimum), so Forward of a
// range that covers k entries costs O(k·log n) and Frontier is O(1). In the
// puller's steady state every Forward is one region's range, which is exactly
// one entry, so k = 1.
//
// Forward never merges an entry with a neighbour outside the forwarded range,
// even when their ts become equal: regions report the same ts in the same
// round all the time, and merging them would only be undone by the next
// round's split (O(1) allocations per report for nothing). Boundaries that
// stopped being region boundaries (after a region merge) disappear when a
// Forward covering both sides brings them to the same ts.
//
// A Frontier is not safe for concurrent use; the caller owns it.
type Frontier struct {
	tree *btree.BTreeG[*entry]
	heap minHeap
	// byStart indexes entries by exact start key. Region reports almost
	// always name a range that starts exactly at an entry, and a hash lookup
	// skips the B-tree descent, whose key comparisons (cache misses on
	// scattered keys) were ~60% of Forward's time at 100k entries.
	byStart map[string]*entry
	start   []byte
	end     []byte // empty = +∞

	// Reused by Forward so that the steady state allocates nothing. The
	// iterator callbacks are method values bound once in New: a closure
	// built per call would escape to the heap on every Forward.
	pivot     entry
	found     *entry
	scratch   []*entry
	scanEnd   []byte
	floorFn   btree.ItemIteratorG[*entry]
	collectFn btree.ItemIteratorG[*entry]
}

// New returns a Frontier over the span [start, end) with every part at ts
// (the span's start checkpoint). An empty end means +∞. The keys are copied.
func New(start, end []byte, ts uint64) *Frontier {
	f := &Frontier{
		tree:    btree.NewG(btreeDegree, lessStart),
		byStart: make(map[string]*entry),
		start:   bytes.Clone(start),
		end:     bytes.Clone(end),
	}
	f.floorFn = f.floor
	f.collectFn = f.collect
	e := &entry{start: f.start, end: f.end, ts: ts}
	f.insert(e)
	return f
}

func lessStart(a, b *entry) bool { return bytes.Compare(a.start, b.start) < 0 }

// before reports key < end, where an empty end is +∞.
func before(key, end []byte) bool {
	return len(end) == 0 || bytes.Compare(key, end) < 0
}

// endLE reports a ≤ b for end keys, where empty is +∞.
func endLE(a, b []byte) bool {
	switch {
	case len(b) == 0:
		return true
	case len(a) == 0:
		return false
	default:
		return bytes.Compare(a, b) <= 0
	}
}

// clip intersects [start, end) with the span.
func (f *Frontier) clip(start, end []byte) (s, e []byte) {
	s = start
	if bytes.Compare(s, f.start) < 0 {
		s = f.start
	}
	e = end
	if !endLE(e, f.end) {
		e = f.end
	}
	return s, e
}

func (f *Frontier) floor(en *entry) bool {
	f.found = en
	return false
}

func (f *Frontier) collect(en *entry) bool {
	if !before(en.start, f.scanEnd) {
		return false
	}
	f.scratch = append(f.scratch, en)
	return true
}

// covering returns the entry that contains key. key must lie in the span.
func (f *Frontier) covering(key []byte) *entry {
	if en, ok := f.byStart[string(key)]; ok {
		return en
	}
	f.pivot.start = key
	f.found = nil
	f.tree.DescendLessOrEqual(&f.pivot, f.floorFn)
	f.pivot.start = nil
	return f.found
}

// Forward raises the resolved ts of [start, end) ∩ span to ts wherever it is
// lower. It never lowers a ts: a region reporting a ts below what its range
// already reached (a re-registered region's first report, §2.8) is a no-op.
// An empty end means +∞. The keys are copied when they become boundaries.
func (f *Frontier) Forward(start, end []byte, ts uint64) {
	// Nothing in the span is below the minimum, so nothing can be raised.
	if ts <= f.heap.min().ts {
		return
	}
	s, e := f.clip(start, end)
	if !before(s, e) {
		return
	}
	first := f.covering(s)
	f.scratch = append(f.scratch[:0], first)
	if !endLE(e, first.end) {
		// The range spans several entries: gather them before mutating,
		// since the B-tree cannot be changed while it is being iterated.
		f.scratch = f.scratch[:0]
		f.scanEnd = e
		f.tree.AscendGreaterOrEqual(first, f.collectFn)
		f.scanEnd = nil
	}
	for i, en := range f.scratch {
		if en.ts >= ts {
			continue
		}
		if bytes.Compare(en.start, s) < 0 {
			en = f.split(en, bytes.Clone(s))
			f.scratch[i] = en
		}
		if !endLE(en.end, e) {
			f.split(en, bytes.Clone(e))
		}
		en.ts = ts
		f.heap.fix(en.idx)
	}
	f.mergeInside(s, e)
	clear(f.scratch) // drop pointers so deleted entries can be collected
	f.scratch = f.scratch[:0]
}

// split cuts en at key (strictly inside it) and returns the new right part,
// which starts with en's ts.
func (f *Frontier) split(en *entry, key []byte) *entry {
	right := &entry{start: key, end: en.end, ts: en.ts}
	en.end = key
	f.insert(right)
	return right
}

func (f *Frontier) insert(en *entry) {
	f.tree.ReplaceOrInsert(en)
	f.heap.push(en)
	f.byStart[string(en.start)] = en
}

func (f *Frontier) delete(en *entry) {
	f.tree.Delete(en)
	f.heap.remove(en.idx)
	delete(f.byStart, string(en.start))
}

// mergeInside joins neighbouring entries of f.scratch that both lie inside
// [s, e) and have equal ts.
func (f *Frontier) mergeInside(s, e []byte) {
	inside := func(en *entry) bool {
		return bytes.Compare(en.start, s) >= 0 && endLE(en.end, e)
	}
	var prev *entry
	for _, en := range f.scratch {
		if !inside(en) {
			prev = nil
			continue
		}
		if prev != nil && prev.ts == en.ts && bytes.Equal(prev.end, en.start) {
			prev.end = en.end
			f.delete(en)
			continue
		}
		prev = en
	}
}

// Frontier returns the span's resolved ts: the minimum over all of it.
func (f *Frontier) Frontier() uint64 { return f.heap.min().ts }

// MinIn returns the minimum ts over [start, end) ∩ span: the checkpoint a
// region covering that range must be registered with, so that it resumes from
// the oldest point any part of its range reached. An empty end means +∞.
// It returns 0 when the range does not intersect the span (a caller bug: 0
// re-reads everything, which duplicates rows but never loses one).
func (f *Frontier) MinIn(start, end []byte) uint64 {
	s, e := f.clip(start, end)
	if !before(s, e) {
		return 0
	}
	first := f.covering(s)
	minTs := first.ts
	if endLE(e, first.end) {
		return minTs
	}
	f.tree.AscendGreaterOrEqual(first, func(en *entry) bool {
		if !before(en.start, e) {
			return false
		}
		minTs = min(minTs, en.ts)
		return true
	})
	return minTs
}

// Entries calls fn for each sub-range in key order, with adjacent ranges of
// equal ts merged, until fn returns false. An empty end means +∞. The slices
// belong to the Frontier: fn must not modify them, nor call Forward.
func (f *Frontier) Entries(fn func(start, end []byte, ts uint64) bool) {
	var cur *entry
	var curEnd []byte
	stopped := false
	f.tree.Ascend(func(en *entry) bool {
		if cur != nil && cur.ts == en.ts {
			curEnd = en.end
			return true
		}
		if cur != nil && !fn(cur.start, curEnd, cur.ts) {
			stopped = true
			return false
		}
		cur, curEnd = en, en.end
		return true
	})
	if !stopped && cur != nil {
		fn(cur.start, curEnd, cur.ts)
	}
}

// Len returns the number of sub-ranges tracked (before Entries' merging of
// equal neighbours): the memory the Frontier holds is proportional to it.
func (f *Frontier) Len() int { return f.tree.Len() }
