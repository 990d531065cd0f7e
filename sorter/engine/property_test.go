package engine

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// The property test drives several pipelines of one engine with a
// simulated puller: transactions (some spanning regions, some large, some
// sharing a commit ts) are split by key into regions; each region delivers
// its events in random order and random batches, may re-send events, and
// advances its own resolved ts only past events it has sent; the pipeline's
// resolved ts is the minimum over regions, resolved after the writes it
// covers. A reader interleaved at random reads with random bounds, byte
// limits, ErrStop pauses and injected errors, and acks at random. The model
// checks: order, exactly once, never past the resolved ts, and that each
// Read returns only at a commit-ts boundary with every event ≤ next
// delivered.

var errBoom = errors.New("injected callback failure")

type simRegion struct{ queue []*tidestreamv1.RawKVEvent }

type simPipeline struct {
	t   testing.TB
	rng *rand.Rand
	p   *Pipeline

	clock     uint64
	regions   []simRegion
	generated []*tidestreamv1.RawKVEvent // every unique event
	sent      []*tidestreamv1.RawKVEvent // for re-sends
	buf       []*tidestreamv1.RawKVEvent

	next      uint64
	delivered []*tidestreamv1.RawKVEvent
	acked     uint64
	reads     int
	paused    int // Reads that stopped before upTo (limit or ErrStop)
	failed    int // Reads ended by an injected error
	resent    int
}

func newSim(t testing.TB, rng *rand.Rand, p *Pipeline, regions int) *simPipeline {
	return &simPipeline{t: t, rng: rng, p: p, regions: make([]simRegion, regions)}
}

func (s *simPipeline) genTxns() {
	commit := s.clock + 1 + s.rng.Uint64N(3)
	s.clock = commit
	ntxn := 1
	if s.rng.IntN(10) == 0 {
		ntxn = 2 + s.rng.IntN(2) // distinct start ts, same commit ts
	}
	starts := map[uint64]bool{}
	for range ntxn {
		start := 1 + s.rng.Uint64N(commit-1+1)
		if start >= commit {
			start = commit - 1
		}
		if start == 0 || starts[start] {
			continue
		}
		starts[start] = true
		n := 1 + s.rng.IntN(8)
		if s.rng.IntN(40) == 0 {
			n = 100 + s.rng.IntN(300)
		}
		keys := map[string]bool{}
		for range n {
			k := fmt.Sprintf("t%04d", s.rng.IntN(5000))
			if keys[k] {
				continue
			}
			keys[k] = true
			op := tidestreamv1.OpType_OP_TYPE_PUT
			var val []byte
			if s.rng.IntN(5) == 0 {
				op = tidestreamv1.OpType_OP_TYPE_DELETE
			} else {
				val = bytes.Repeat([]byte{byte(commit)}, s.rng.IntN(64))
			}
			var old []byte
			if s.rng.IntN(2) == 0 {
				old = []byte(fmt.Sprintf("old-%d", start))
			}
			r := int(k[1]+k[2]+k[3]+k[4]) % len(s.regions)
			ev := &tidestreamv1.RawKVEvent{Key: []byte(k), Value: val, OldValue: old, Op: op,
				StartTs: start, CommitTs: commit, RegionId: uint64(r + 1)}
			s.regions[r].queue = append(s.regions[r].queue, ev)
			s.generated = append(s.generated, ev)
		}
	}
}

func (s *simPipeline) emit() {
	r := &s.regions[s.rng.IntN(len(s.regions))]
	if len(r.queue) > 0 {
		n := 1 + s.rng.IntN(len(r.queue))
		for range n {
			i := s.rng.IntN(len(r.queue))
			ev := r.queue[i]
			r.queue[i] = r.queue[len(r.queue)-1]
			r.queue = r.queue[:len(r.queue)-1]
			s.buf = append(s.buf, ev)
			s.sent = append(s.sent, ev)
		}
	}
	if len(s.sent) > 0 && s.rng.IntN(10) == 0 {
		// A region reconnect re-sends an event, possibly long after.
		s.buf = append(s.buf, s.sent[s.rng.IntN(len(s.sent))])
		s.resent++
	}
}

func (s *simPipeline) flush() {
	for len(s.buf) > 0 {
		n := 1 + s.rng.IntN(len(s.buf))
		require.NoError(s.t, s.p.Write(s.buf[:n]))
		s.buf = s.buf[n:]
	}
	s.buf = nil
}

// trueResolved is the highest ts below every event not yet sent.
func (s *simPipeline) trueResolved() uint64 {
	r := s.clock
	for _, reg := range s.regions {
		for _, ev := range reg.queue {
			r = min(r, ev.CommitTs-1)
		}
	}
	return r
}

func (s *simPipeline) resolve() {
	s.flush()
	if s.rng.IntN(5) == 0 {
		s.p.Resolve(s.p.Resolved() / 2) // stale resolved ts: ignored
	}
	s.p.Resolve(s.trueResolved())
}

func evLess(a, b *tidestreamv1.RawKVEvent) int {
	if a.CommitTs != b.CommitTs {
		return cmpU(a.CommitTs, b.CommitTs)
	}
	if a.StartTs != b.StartTs {
		return cmpU(a.StartTs, b.StartTs)
	}
	return bytes.Compare(a.Key, b.Key)
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (s *simPipeline) read() {
	t := s.t
	resolved := s.p.Resolved()
	if resolved < 1<<63 && s.rng.IntN(20) == 0 {
		_, err := s.p.Read(s.next, resolved+1, 0, func(*tidestreamv1.RawKVEvent) error { return nil })
		require.ErrorIs(t, err, ErrBeyondResolved)
	}
	upTo := resolved
	if upTo > s.next && s.rng.IntN(3) == 0 {
		upTo = s.next + 1 + s.rng.Uint64N(upTo-s.next)
	}
	limit := 0
	if s.rng.IntN(2) == 0 {
		limit = s.rng.IntN(3000)
	}
	stopAt, failAt := -1, -1
	switch s.rng.IntN(6) {
	case 0:
		stopAt = s.rng.IntN(50)
	case 1:
		failAt = s.rng.IntN(50)
	}
	var got []*tidestreamv1.RawKVEvent
	after := s.next
	next, err := s.p.Read(after, upTo, limit, func(ev *tidestreamv1.RawKVEvent) error {
		require.Greater(t, ev.CommitTs, after)
		require.LessOrEqual(t, ev.CommitTs, upTo)
		got = append(got, ev)
		if len(got)-1 == failAt {
			return fmt.Errorf("wrapped: %w", errBoom)
		}
		if len(got)-1 == stopAt {
			return fmt.Errorf("pause: %w", ErrStop)
		}
		return nil
	})
	s.reads++
	if err != nil {
		require.ErrorIs(t, err, errBoom)
		s.failed++
		// Keep the complete groups only.
		for len(got) > 0 && got[len(got)-1].CommitTs > next {
			got = got[:len(got)-1]
		}
	} else if next != upTo {
		s.paused++
		require.NotEmpty(t, got)
		require.Equal(t, got[len(got)-1].CommitTs, next, "a paused Read ends at a commit-ts boundary")
	}
	require.GreaterOrEqual(t, next, after)
	require.LessOrEqual(t, next, upTo)
	for _, ev := range got {
		if n := len(s.delivered); n > 0 {
			require.Negative(t, evLess(s.delivered[n-1], ev), "strict (commit, start, key) order, no duplicates")
		}
		s.delivered = append(s.delivered, ev)
	}
	// Every generated event with commit ts ≤ next has been delivered: the
	// order check above makes the delivered list duplicate-free, so equal
	// counts mean equal sets.
	want := 0
	for _, ev := range s.generated {
		if ev.CommitTs <= next {
			want++
		}
	}
	have := 0
	for _, ev := range s.delivered {
		if ev.CommitTs <= next {
			have++
		}
	}
	require.Equal(t, want, have, "events with commit ts ≤ %d", next)
	s.next = next
}

func (s *simPipeline) ack() {
	if s.next > s.acked {
		s.acked += 1 + s.rng.Uint64N(s.next-s.acked)
		require.NoError(s.t, s.p.Ack(s.acked))
	}
}

func (s *simPipeline) step() {
	switch k := s.rng.IntN(20); {
	case k < 6:
		s.genTxns()
	case k < 12:
		s.emit()
	case k < 14:
		if len(s.buf) > 0 {
			n := 1 + s.rng.IntN(len(s.buf))
			require.NoError(s.t, s.p.Write(s.buf[:n]))
			s.buf = s.buf[n:]
		}
	case k < 16:
		s.resolve()
	case k < 19:
		s.read()
	default:
		s.ack()
	}
}

func (s *simPipeline) finish() {
	for i := range s.regions {
		s.buf = append(s.buf, s.regions[i].queue...)
		s.regions[i].queue = nil
	}
	s.resolve()
	require.Equal(s.t, s.clock, s.p.Resolved())
	for s.next < s.clock {
		s.read()
	}
	want := slices.Clone(s.generated)
	slices.SortFunc(want, evLess)
	require.Len(s.t, s.delivered, len(want))
	for i, ev := range want {
		got := s.delivered[i]
		require.Zero(s.t, evLess(ev, got), "event %d", i)
		require.Equal(s.t, ev.Op, got.Op)
		require.Equal(s.t, ev.RegionId, got.RegionId)
		require.True(s.t, bytes.Equal(ev.Value, got.Value) && bytes.Equal(ev.OldValue, got.OldValue))
	}
}

func runScenario(t testing.TB, e *Engine, seed uint64, pipelines, steps int) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	sims := make([]*simPipeline, pipelines)
	for i := range sims {
		p, err := e.Pipeline(PipelineID{"ns", fmt.Sprintf("cf-%d", seed), int64(i)}, 1)
		require.NoError(t, err)
		sims[i] = newSim(t, rng, p, 1+rng.IntN(5))
	}
	for range steps {
		sims[rng.IntN(len(sims))].step()
	}
	for _, s := range sims {
		s.finish()
		t.Logf("pipeline %v: %d events (%d re-sent), %d reads, %d paused, %d failed, acked %d",
			s.p.ID(), len(s.generated), s.resent, s.reads, s.paused, s.failed, s.acked)
		require.NoError(t, e.DropPipeline(s.p.ID()))
	}
}

func openTest(t testing.TB, quota int64) *Engine {
	e, err := Open(Config{Dir: t.TempDir(), MemoryQuota: quota, CompactInterval: 50e6})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, e.Close()) })
	return e
}

func TestPropertyOrderExactlyOnce(t *testing.T) {
	seeds := 40
	if testing.Short() {
		seeds = 8
	}
	// A tiny quota makes most runs span memtables and sstables, so reads
	// merge both and range deletions meet flushed data.
	e := openTest(t, minMemoryQuota)
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			runScenario(t, e, seed, 3, 3000)
		})
	}
}

func FuzzSorter(f *testing.F) {
	for seed := range uint64(4) {
		f.Add(seed, uint8(3), uint16(500))
	}
	e, err := Open(Config{Dir: f.TempDir(), MemoryQuota: minMemoryQuota})
	require.NoError(f, err)
	f.Cleanup(func() { _ = e.Close() })
	f.Fuzz(func(t *testing.T, seed uint64, pipelines uint8, steps uint16) {
		runScenario(t, e, seed, 1+int(pipelines%4), int(steps%4000))
	})
}
