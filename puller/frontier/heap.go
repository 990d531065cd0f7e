package frontier

// minHeap orders entries by ts and keeps each entry's idx equal to its
// position, so an entry whose ts changed can be fixed in O(log n). It is
// hand-written rather than container/heap to avoid interface calls on the
// hot path (one fix per region per resolved-ts round).
type minHeap []*entry

func (h minHeap) min() *entry { return h[0] }

func (h *minHeap) push(e *entry) {
	e.idx = len(*h)
	*h = append(*h, e)
	h.up(e.idx)
}

// remove deletes the entry at position i.
func (h *minHeap) remove(i int) {
	old := *h
	last := len(old) - 1
	if i != last {
		old.swap(i, last)
	}
	old[last].idx = -1
	old[last] = nil
	*h = old[:last]
	if i != last {
		h.fix(i)
	}
}

// fix restores the heap order after the ts at position i changed.
func (h minHeap) fix(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

func (h minHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx = i
	h[j].idx = j
}

func (h minHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if h[p].ts <= h[i].ts {
			return
		}
		h.swap(i, p)
		i = p
	}
}

// down sifts position i down and reports whether it moved.
func (h minHeap) down(i int) bool {
	start, n := i, len(h)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		c := l
		if r := l + 1; r < n && h[r].ts < h[l].ts {
			c = r
		}
		if h[i].ts <= h[c].ts {
			break
		}
		h.swap(i, c)
		i = c
	}
	return i > start
}
