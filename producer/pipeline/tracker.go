package pipeline

import (
	"errors"
	"slices"
	"sort"
	"sync"
)

// tracker turns acknowledgements into the checkpoint: every record with
// commit ts ≤ checkpoint has been acknowledged by Kafka. Records are added
// in commit-ts order (the encoder's order) and acknowledged in any order
// (partitions ack independently), so it keeps, per commit ts still in
// flight, how many of its records are, and the checkpoint is
// min(resolved, oldest commit ts in flight − 1).
type tracker struct {
	mu       sync.Mutex
	pending  []pendingTs // non-decreasing ts from head on
	head     int
	resolved uint64 // highest resolved ts received: every record ≤ it was added
}

type pendingTs struct {
	ts uint64
	n  int
}

func newTracker(start uint64) *tracker { return &tracker{resolved: start} }

// add counts a record handed to Kafka. Records come in commit-ts order,
// except after a re-subscription, which sends again what followed the last
// resolved ts: those go to their place.
func (t *tracker) add(ts uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := len(t.pending)
	if l == t.head || t.pending[l-1].ts < ts {
		t.pending = append(t.pending, pendingTs{ts: ts, n: 1})
		return
	}
	live := t.pending[t.head:]
	i := sort.Search(len(live), func(i int) bool { return live[i].ts >= ts })
	if live[i].ts == ts {
		live[i].n++
		return
	}
	t.pending = slices.Insert(t.pending, t.head+i, pendingTs{ts: ts, n: 1})
}

// errNotInFlight: an acknowledgement for a record the tracker does not
// hold would mean the checkpoint may already have passed a record — the
// one thing it exists to prevent — so the pipeline restarts.
var errNotInFlight = errors.New("pipeline: acknowledgement of a record that is not in flight")

// done counts a record Kafka acknowledged.
func (t *tracker) done(ts uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	live := t.pending[t.head:]
	i := sort.Search(len(live), func(i int) bool { return live[i].ts >= ts })
	if i == len(live) || live[i].ts != ts || live[i].n == 0 {
		return errNotInFlight
	}
	live[i].n--
	for t.head < len(t.pending) && t.pending[t.head].n == 0 {
		t.head++
	}
	// Reuse the slice once it is drained, and compact it when the dead
	// prefix dominates, so a long run does not grow it without bound.
	if t.head == len(t.pending) {
		t.pending, t.head = t.pending[:0], 0
	} else if t.head > 1024 && t.head > len(t.pending)/2 {
		t.pending = append(t.pending[:0], t.pending[t.head:]...)
		t.head = 0
	}
	return nil
}

// resolve records that every record with commit ts ≤ ts has been added.
func (t *tracker) resolve(ts uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.resolved = max(t.resolved, ts)
}

// checkpoint is the highest ts at or below which Kafka holds every record.
func (t *tracker) checkpoint() (checkpoint, resolved uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.head < len(t.pending) {
		return min(t.resolved, t.pending[t.head].ts-1), t.resolved
	}
	return t.resolved, t.resolved
}

// inFlight is the number of records not yet acknowledged.
func (t *tracker) inFlight() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, p := range t.pending[t.head:] {
		n += p.n
	}
	return n
}
