package engine

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/stretchr/testify/require"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

func ev(commit, start uint64, key string, valLen int) *tidestreamv1.RawKVEvent {
	return &tidestreamv1.RawKVEvent{Key: []byte(key), Value: bytes.Repeat([]byte{'v'}, valLen),
		Op: tidestreamv1.OpType_OP_TYPE_PUT, StartTs: start, CommitTs: commit, RegionId: 1}
}

func readAll(t testing.TB, p *Pipeline, after, upTo uint64) ([]*tidestreamv1.RawKVEvent, uint64) {
	var out []*tidestreamv1.RawKVEvent
	next, err := p.Read(after, upTo, 0, func(e *tidestreamv1.RawKVEvent) error {
		out = append(out, e)
		return nil
	})
	require.NoError(t, err)
	return out, next
}

func dirSize(t testing.TB, dir string) int64 {
	var n int64
	require.NoError(t, filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	}))
	return n
}

// TestReadGroupsAreAtomic pins the Read contract on a fixed layout:
// commit ts 10 (3 events), 20 (4 events), 30 (1 event).
func TestReadGroupsAreAtomic(t *testing.T) {
	e := openTest(t, minMemoryQuota)
	p, err := e.Pipeline(PipelineID{"ns", "cf", 1}, 1)
	require.NoError(t, err)
	var evs []*tidestreamv1.RawKVEvent
	for _, g := range []struct {
		commit uint64
		n      int
	}{{10, 3}, {20, 4}, {30, 1}} {
		for i := range g.n {
			evs = append(evs, ev(g.commit, g.commit-1-uint64(i%2), fmt.Sprintf("k%d", i), 10))
		}
	}
	rand.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
	require.NoError(t, p.Write(evs))

	_, err = p.Read(0, 30, 0, nil)
	require.ErrorIs(t, err, ErrBeyondResolved)
	p.Resolve(25)
	got, next := readAll(t, p, 0, 25)
	require.Len(t, got, 7)
	require.EqualValues(t, 25, next, "everything up to upTo delivered: next is upTo, not the last commit ts")
	for i := 1; i < len(got); i++ {
		require.Negative(t, evLess(got[i-1], got[i]))
	}

	// ErrStop on the first event of commit ts 20: the group is finished,
	// and Read stops before 30.
	p.Resolve(30)
	var seen []uint64
	next, err = p.Read(0, 30, 0, func(e *tidestreamv1.RawKVEvent) error {
		seen = append(seen, e.CommitTs)
		if e.CommitTs == 20 {
			return ErrStop
		}
		return nil
	})
	require.NoError(t, err)
	require.EqualValues(t, 20, next)
	require.Equal(t, []uint64{10, 10, 10, 20, 20, 20, 20}, seen)

	// A 1-byte limit stops after each group.
	var calls [][]uint64
	for after := uint64(0); after < 30; {
		var c []uint64
		after, err = p.Read(after, 30, 1, func(e *tidestreamv1.RawKVEvent) error {
			c = append(c, e.CommitTs)
			return nil
		})
		require.NoError(t, err)
		calls = append(calls, c)
	}
	require.Equal(t, [][]uint64{{10, 10, 10}, {20, 20, 20, 20}, {30}}, calls)

	// Another error stops at once; next is the last complete group.
	n := 0
	next, err = p.Read(0, 25, 0, func(e *tidestreamv1.RawKVEvent) error {
		if n++; n == 5 {
			return errBoom
		}
		return nil
	})
	require.ErrorIs(t, err, errBoom)
	require.EqualValues(t, 10, next)

	// upTo ≤ after: nothing.
	got, next = readAll(t, p, 25, 25)
	require.Empty(t, got)
	require.EqualValues(t, 25, next)
}

func TestEpochReset(t *testing.T) {
	e := openTest(t, minMemoryQuota)
	id := PipelineID{"ns", "cf", 7}
	p1, err := e.Pipeline(id, 3)
	require.NoError(t, err)
	same, err := e.Pipeline(id, 3)
	require.NoError(t, err)
	require.Same(t, p1, same)
	require.NoError(t, p1.Write([]*tidestreamv1.RawKVEvent{ev(5, 4, "a", 1), ev(6, 4, "b", 1)}))
	p1.Resolve(10)

	_, err = e.Pipeline(id, 2)
	require.ErrorIs(t, err, ErrStaleEpoch)

	p2, err := e.Pipeline(id, 4)
	require.NoError(t, err)
	require.NotSame(t, p1, p2)
	require.Zero(t, p2.Resolved())
	p2.Resolve(10)
	got, _ := readAll(t, p2, 0, 10)
	require.Empty(t, got, "the new epoch starts empty")

	require.ErrorIs(t, p1.Write([]*tidestreamv1.RawKVEvent{ev(7, 4, "c", 1)}), ErrStaleEpoch)
	_, err = p1.Read(0, 10, 0, func(*tidestreamv1.RawKVEvent) error { return nil })
	require.ErrorIs(t, err, ErrStaleEpoch)
	require.ErrorIs(t, p1.Ack(6), ErrStaleEpoch)
	_, err = e.Pipeline(id, 3)
	require.ErrorIs(t, err, ErrStaleEpoch)

	require.NoError(t, p2.Write([]*tidestreamv1.RawKVEvent{ev(8, 7, "x", 1)}))
	got, _ = readAll(t, p2, 0, 10)
	require.Len(t, got, 1)

	require.NoError(t, e.DropPipeline(id))
	require.ErrorIs(t, p2.Write([]*tidestreamv1.RawKVEvent{ev(9, 7, "x", 1)}), ErrStaleEpoch)
	require.NoError(t, e.DropPipeline(id), "dropping an unknown pipeline is a no-op")
	p3, err := e.Pipeline(id, 1)
	require.NoError(t, err, "after a drop the pipeline may be opened again")
	p3.Resolve(10)
	got, _ = readAll(t, p3, 0, 10)
	require.Empty(t, got)
}

func TestAckBelowAndLateWrites(t *testing.T) {
	e := openTest(t, minMemoryQuota)
	p, err := e.Pipeline(PipelineID{"ns", "cf", 1}, 1)
	require.NoError(t, err)
	require.NoError(t, p.Write([]*tidestreamv1.RawKVEvent{ev(5, 1, "a", 1), ev(15, 1, "b", 1)}))
	require.NoError(t, p.Ack(10))
	require.NoError(t, p.Ack(3), "a lower ack is a no-op")
	require.NoError(t, p.Write([]*tidestreamv1.RawKVEvent{ev(8, 1, "late", 1), ev(12, 1, "c", 1)}))
	p.Resolve(20)
	got, _ := readAll(t, p, 0, 20)
	require.Len(t, got, 2, "acked range deleted and late writes into it dropped")
	require.Equal(t, "c", string(got[0].Key))
	require.ErrorIs(t, p.Write([]*tidestreamv1.RawKVEvent{{Key: []byte("z")}}), ErrInvalidEvent)
}

// TestAckReclaimsDisk writes far more than the quota into two pipelines,
// reads and acks everything, and waits for the compactor to bring disk use
// back to near zero.
func TestAckReclaimsDisk(t *testing.T) {
	dir := t.TempDir()
	e, err := Open(Config{Dir: dir, MemoryQuota: minMemoryQuota, CompactInterval: 100 * time.Millisecond})
	require.NoError(t, err)
	defer func() { require.NoError(t, e.Close()) }()
	const perPipe, valLen = 60_000, 200
	var pipes []*Pipeline
	for i := range 2 {
		p, err := e.Pipeline(PipelineID{"ns", "cf", int64(i)}, 1)
		require.NoError(t, err)
		pipes = append(pipes, p)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	val := make([]byte, valLen)
	for i := range perPipe / 1000 {
		for _, p := range pipes {
			batch := make([]*tidestreamv1.RawKVEvent, 1000)
			for j := range batch {
				for k := range val {
					val[k] = byte(rng.Uint32())
				}
				c := uint64(i*1000 + j + 1)
				batch[j] = &tidestreamv1.RawKVEvent{Key: fmt.Appendf(nil, "t_%08d", rng.IntN(1e8)),
					Value: bytes.Clone(val), StartTs: c, CommitTs: c + 1, Op: 1}
			}
			require.NoError(t, p.Write(batch))
		}
	}
	require.NoError(t, e.db.Flush())
	before := e.Stats()
	sizeBefore := dirSize(t, dir)
	t.Logf("after writes: disk %d MiB (dir %d MiB), memory %d KiB", before.DiskBytes>>20, sizeBefore>>20, before.MemoryBytes>>10)
	require.Greater(t, before.DiskBytes, uint64(20<<20), "data must have spilled past the 8 MiB quota")
	require.LessOrEqual(t, before.MemoryBytes, minMemoryQuota)

	for _, p := range pipes {
		p.Resolve(perPipe + 1)
		var n int
		next := uint64(0)
		for next < perPipe+1 {
			next, err = p.Read(next, perPipe+1, 1<<20, func(*tidestreamv1.RawKVEvent) error { n++; return nil })
			require.NoError(t, err)
			require.NoError(t, p.Ack(next)) // ack as the consumer goes
		}
		require.Equal(t, perPipe, n)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := e.Stats()
		size := dirSize(t, dir)
		if s.DiskBytes < 1<<20 && size < 2<<20 && s.PendingCompactions == 0 {
			t.Logf("after acks + compaction: disk %d KiB (dir %d KiB)", s.DiskBytes>>10, size>>10)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("disk use did not return to near zero: stats %+v, dir %d bytes", s, size)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestOpenWipes(t *testing.T) {
	dir := t.TempDir()
	e, err := Open(Config{Dir: dir, MemoryQuota: minMemoryQuota})
	require.NoError(t, err)
	p, err := e.Pipeline(PipelineID{"ns", "cf", 1}, 1)
	require.NoError(t, err)
	var batch []*tidestreamv1.RawKVEvent
	for i := range 20000 {
		batch = append(batch, ev(uint64(i+2), uint64(i+1), fmt.Sprint(i), 100))
	}
	require.NoError(t, p.Write(batch))
	require.NoError(t, e.db.Flush())
	require.NoError(t, e.Close())
	require.ErrorIs(t, p.Write(batch[:1]), ErrClosed)
	_, err = e.Pipeline(PipelineID{"ns", "cf", 2}, 1)
	require.ErrorIs(t, err, ErrClosed)
	require.NoError(t, e.Close(), "Close is idempotent")
	require.Greater(t, dirSize(t, dir), int64(200<<10))

	e, err = Open(Config{Dir: dir, MemoryQuota: minMemoryQuota})
	require.NoError(t, err)
	defer func() { require.NoError(t, e.Close()) }()
	require.Less(t, dirSize(t, dir), int64(64<<10), "old tables removed")
	p, err = e.Pipeline(PipelineID{"ns", "cf", 1}, 1)
	require.NoError(t, err)
	p.Resolve(1 << 40)
	got, _ := readAll(t, p, 0, 1<<40)
	require.Empty(t, got)
}

func TestOpenRefusesForeignDir(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "precious"), []byte("x"), 0o644))
	_, err := Open(Config{Dir: dir})
	require.ErrorContains(t, err, "refusing to wipe")
	_, err = os.Stat(filepath.Join(dir, "precious"))
	require.NoError(t, err)
	_, err = Open(Config{})
	require.Error(t, err)
	_, err = Open(Config{Dir: dir, MemoryQuota: 1})
	require.Error(t, err)
}

// TestConcurrentWriteRead runs the puller side and the encoder side of
// several pipelines on their own goroutines (for -race), with acks and an
// epoch reset of one pipeline midway.
func TestConcurrentWriteRead(t *testing.T) {
	e := openTest(t, minMemoryQuota)
	const pipes, rounds, perRound = 4, 200, 50
	var wg sync.WaitGroup
	for i := range pipes {
		p, err := e.Pipeline(PipelineID{"ns", "cf", int64(i)}, 1)
		require.NoError(t, err)
		wg.Go(func() {
			for r := range rounds {
				batch := make([]*tidestreamv1.RawKVEvent, perRound)
				for j := range batch {
					c := uint64(r*10 + 5 + j%3)
					batch[perRound-1-j] = ev(c, c-1, fmt.Sprintf("k%03d", j), 16)
				}
				if err := p.Write(batch); err != nil {
					if !errors.Is(err, ErrStaleEpoch) {
						t.Error(err)
					}
					return
				}
				p.Resolve(uint64(r*10 + 9))
			}
		})
		wg.Go(func() {
			var next, n uint64
			var last *tidestreamv1.RawKVEvent
			deadline := time.Now().Add(20 * time.Second)
			for next < rounds*10-1 && time.Now().Before(deadline) {
				var err error
				next, err = p.Read(next, p.Resolved(), 4096, func(ev *tidestreamv1.RawKVEvent) error {
					if last != nil && evLess(last, ev) >= 0 {
						return fmt.Errorf("out of order: %v then %v", last, ev)
					}
					last = ev
					n++
					return nil
				})
				if err == nil {
					err = p.Ack(next)
				}
				if err != nil {
					// Only pipeline 0 is reset under its reader's feet.
					if i != 0 || !errors.Is(err, ErrStaleEpoch) {
						t.Error(err)
					}
					return
				}
			}
			if i != 0 && n != rounds*perRound {
				t.Errorf("pipeline %d: read %d events, want %d", i, n, rounds*perRound)
			}
		})
	}
	time.Sleep(5 * time.Millisecond)
	_, err := e.Pipeline(PipelineID{"ns", "cf", 0}, 2)
	require.NoError(t, err)
	wg.Wait()
	s := e.Stats()
	require.Len(t, s.Pipelines, pipes)
	for _, ps := range s.Pipelines[1:] {
		require.EqualValues(t, rounds*perRound, ps.EventsIn)
		require.EqualValues(t, rounds*perRound, ps.EventsOut)
	}
}

// TestStalledWriteHoldsNoEngineLock stands one pipeline's Write still where
// a pebble write stall would hold it and checks that the engine goes on for
// everyone else: opening other pipelines, resetting the stalled one to a new
// epoch and dropping it. Engine.Pipeline used to fence the old handle under
// the engine lock by taking the handle's lock, which the stalled Write held,
// so one slow pipeline blocked every Subscribe of the process. The write
// that finally commits into the fenced slot must not stay on disk.
func TestStalledWriteHoldsNoEngineLock(t *testing.T) {
	stalled := PipelineID{"ns", "cf", 1}
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	e, err := Open(Config{Dir: t.TempDir(), MemoryQuota: minMemoryQuota, CompactInterval: 20 * time.Millisecond,
		Knobs: &TestingKnobs{BeforeCommit: func(id PipelineID) {
			if id == stalled {
				once.Do(func() { close(entered) })
				<-release
			}
		}}})
	require.NoError(t, err)
	var releaseOnce sync.Once
	unstall := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(func() { unstall(); require.NoError(t, e.Close()) })

	p1, err := e.Pipeline(stalled, 1)
	require.NoError(t, err)
	writeErr := make(chan error, 1)
	go func() { writeErr <- p1.Write([]*tidestreamv1.RawKVEvent{ev(5, 4, "late", 64)}) }()
	<-entered

	// Each call must return while the write is still stalled.
	within := func(what string, f func() error) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- f() }()
		select {
		case err := <-done:
			require.NoError(t, err, what)
		case <-time.After(5 * time.Second):
			t.Fatalf("%s blocked behind another pipeline's stalled write", what)
		}
	}
	var p2 *Pipeline
	within("resetting the stalled pipeline to epoch 2", func() (err error) { p2, err = e.Pipeline(stalled, 2); return err })
	within("opening another pipeline", func() error {
		other, err := e.Pipeline(PipelineID{"ns", "cf", 2}, 1)
		if err != nil {
			return err
		}
		if err := other.Write([]*tidestreamv1.RawKVEvent{ev(7, 6, "k", 8)}); err != nil {
			return err
		}
		other.Resolve(10)
		_, err = other.Read(0, 10, 0, func(*tidestreamv1.RawKVEvent) error { return nil })
		return err
	})
	within("dropping another pipeline", func() error { return e.DropPipeline(PipelineID{"ns", "cf", 2}) })
	within("stats", func() error { e.Stats(); return nil })

	unstall()
	require.ErrorIs(t, <-writeErr, ErrStaleEpoch, "a write that outlived its epoch reports it")
	p2.Resolve(10)
	got, _ := readAll(t, p2, 0, 10)
	require.Empty(t, got, "the old epoch's late write is not in the new epoch")

	// The late write landed in the dead slot after it was deleted; the
	// engine deletes it again.
	deadline := time.Now().Add(10 * time.Second)
	for {
		it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: slotPrefix(p1.slot), UpperBound: slotPrefix(p1.slot + 1)})
		require.NoError(t, err)
		left := it.First()
		require.NoError(t, it.Close())
		if !left && e.Stats().PendingCompactions == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fenced epoch's slot still holds data (left=%v) or work is pending: %+v", left, e.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// An idle pipeline's reads skip the store, but never an event written
// below the resolved ts after an earlier read, nor one written out of order
// above a read's start.
func TestReadOfAnIdleRangeStillSeesLaterWrites(t *testing.T) {
	e := openTest(t, minMemoryQuota)
	p, err := e.Pipeline(PipelineID{"ns", "cf", 1}, 1)
	require.NoError(t, err)
	p.Resolve(10)
	got, next := readAll(t, p, 0, 10)
	require.Empty(t, got)
	require.Equal(t, uint64(10), next, "an empty range is delivered whole")

	require.NoError(t, p.Write([]*tidestreamv1.RawKVEvent{ev(25, 24, "b", 1)}))
	require.NoError(t, p.Write([]*tidestreamv1.RawKVEvent{ev(15, 14, "a", 1)})) // out of order
	p.Resolve(20)
	got, next = readAll(t, p, 10, 20)
	require.Len(t, got, 1)
	require.Equal(t, "a", string(got[0].Key))
	require.Equal(t, uint64(20), next)
	p.Resolve(30)
	got, _ = readAll(t, p, 20, 30)
	require.Len(t, got, 1)
	require.Equal(t, "b", string(got[0].Key))
	p.Resolve(40)
	got, next = readAll(t, p, 30, 40)
	require.Empty(t, got)
	require.Equal(t, uint64(40), next)
}
