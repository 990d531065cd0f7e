package engine

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/stretchr/testify/require"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// benchEvents makes n events shaped like TiDB row changes: a 19-byte record
// key (t{table}_r{handle}), a 100-byte value, transactions of 1–10 rows,
// arriving out of commit order within windows of 4096 events (several
// regions interleaving).
func benchEvents(n int) []*tidestreamv1.RawKVEvent {
	rng := rand.New(rand.NewPCG(7, 7))
	evs := make([]*tidestreamv1.RawKVEvent, 0, n)
	commit := uint64(1000)
	for len(evs) < n {
		commit += 1 + rng.Uint64N(3)
		for range min(1+rng.IntN(10), n-len(evs)) {
			key := make([]byte, 0, 19)
			key = append(key, 't', 0x80, 0, 0, 0, 0, 0, 0, 42, '_', 'r')
			key = binary.BigEndian.AppendUint64(key, rng.Uint64())
			val := make([]byte, 100)
			for i := range val {
				val[i] = byte('a' + rng.IntN(16)) // compressible like row data
			}
			evs = append(evs, &tidestreamv1.RawKVEvent{Key: key, Value: val, Op: tidestreamv1.OpType_OP_TYPE_PUT,
				StartTs: commit - 1 - rng.Uint64N(5), CommitTs: commit, RegionId: uint64(rng.IntN(8))})
		}
	}
	for w := 0; w < len(evs); w += 4096 {
		win := evs[w:min(w+4096, len(evs))]
		rng.Shuffle(len(win), func(i, j int) { win[i], win[j] = win[j], win[i] })
	}
	return evs
}

const benchBatch = 1024

// engineRound runs events through Write+Resolve+Read+Ack of a fresh
// pipeline and returns the events read.
func engineRound(b *testing.B, e *Engine, round int, evs []*tidestreamv1.RawKVEvent, maxTs uint64) int {
	id := PipelineID{"bench", "cf", int64(round)}
	p, err := e.Pipeline(id, 1)
	require.NoError(b, err)
	for i := 0; i < len(evs); i += benchBatch {
		require.NoError(b, p.Write(evs[i:min(i+benchBatch, len(evs))]))
	}
	p.Resolve(maxTs)
	n, next := 0, uint64(0)
	for next < maxTs {
		next, err = p.Read(next, maxTs, 4<<20, func(*tidestreamv1.RawKVEvent) error { n++; return nil })
		require.NoError(b, err)
		require.NoError(b, p.Ack(next))
	}
	require.NoError(b, e.DropPipeline(id))
	return n
}

type rawKV struct{ k, v []byte }

func encodeRaw(evs []*tidestreamv1.RawKVEvent) []rawKV {
	out := make([]rawKV, len(evs))
	for i, ev := range evs {
		out[i] = rawKV{make([]byte, encodedKeyLen(ev)), make([]byte, encodedValueLen(ev))}
		putKey(out[i].k, 0, ev)
		putValue(out[i].v, ev)
	}
	return out
}

// rawRound is the baseline: the same keys and values, pre-encoded, through
// plain pebble batch writes and one iteration, then a range delete.
func rawRound(b *testing.B, db *pebble.DB, round int, kvs []rawKV) int {
	slot := uint64(round + 1)
	for i := 0; i < len(kvs); i += benchBatch {
		batch := db.NewBatch()
		for _, kv := range kvs[i:min(i+benchBatch, len(kvs))] {
			binary.BigEndian.PutUint64(kv.k, slot)
			require.NoError(b, batch.Set(kv.k, kv.v, nil))
		}
		require.NoError(b, batch.Commit(pebble.NoSync))
		require.NoError(b, batch.Close())
	}
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: slotPrefix(slot), UpperBound: slotPrefix(slot + 1)})
	require.NoError(b, err)
	n, sum := 0, 0
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		require.NoError(b, err)
		sum += len(it.Key()) + len(v)
		n++
	}
	require.NoError(b, it.Close())
	require.NoError(b, db.DeleteRange(slotPrefix(slot), slotPrefix(slot+1), pebble.NoSync))
	return n
}

func benchSorted(b *testing.B, quota int64, events int) {
	evs := benchEvents(events)
	var maxTs uint64
	for _, ev := range evs {
		maxTs = max(maxTs, ev.CommitTs)
	}
	kvs := encodeRaw(evs)
	e, err := Open(Config{Dir: b.TempDir(), MemoryQuota: quota, CompactInterval: time.Second})
	require.NoError(b, err)
	defer func() { require.NoError(b, e.Close()) }()
	opts := pebbleOptions(quota, e.log)
	raw, err := pebble.Open(b.TempDir(), opts)
	opts.Cache.Unref()
	require.NoError(b, err)
	defer func() { require.NoError(b, raw.Close()) }()

	// Bytes per event on disk: write once, flush, measure.
	var diskPerEvent float64
	{
		p, err := e.Pipeline(PipelineID{"bench", "size", 0}, 1)
		require.NoError(b, err)
		for i := 0; i < len(evs); i += benchBatch {
			require.NoError(b, p.Write(evs[i:min(i+benchBatch, len(evs))]))
		}
		require.NoError(b, e.db.Flush())
		s := e.Stats()
		diskPerEvent = float64(s.Pipelines[0].DiskBytes) / float64(len(evs))
		require.NoError(b, e.DropPipeline(p.ID()))
		require.NoError(b, e.db.Compact(b.Context(), slotPrefix(0), slotPrefix(1<<62), false))
	}

	var engineDur, rawDur time.Duration
	var maxMem int64
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		require.Equal(b, len(evs), engineRound(b, e, i, evs, maxTs))
		engineDur += time.Since(start)
		maxMem = max(maxMem, e.Stats().MemoryBytes)
		start = time.Now()
		require.Equal(b, len(evs), rawRound(b, raw, i, kvs))
		rawDur += time.Since(start)
	}
	pm := e.db.Metrics()
	var compacted uint64
	for _, l := range pm.Levels {
		compacted += l.TableBytesCompacted
	}
	b.Logf("engine pebble over the run: %d flushes (%d MiB), %d compactions (%d MiB written)",
		pm.Flush.Count, pm.Levels[0].TableBytesFlushed>>20, pm.Compact.Count, compacted>>20)
	n := float64(b.N * len(evs))
	engineRate, rawRate := n/engineDur.Seconds(), n/rawDur.Seconds()
	b.ReportMetric(engineRate, "events/s")
	b.ReportMetric(rawRate, "raw-events/s")
	b.ReportMetric(engineRate/rawRate, "ratio")
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(diskPerEvent, "disk-B/event")
	b.Logf("quota %d MiB, %d events/round (~%d MiB payload): engine %.0f events/s, raw pebble %.0f events/s, ratio %.2f, %.1f B/event on disk (payload %d B), peak pebble memory %d MiB",
		quota>>20, len(evs), len(evs)*(19+100)>>20, engineRate, rawRate, engineRate/rawRate, diskPerEvent, eventSize(evs[0]), maxMem>>20)
}

// BenchmarkSortedInMemory: 200k events (~24 MiB) per round under the
// default 512 MiB quota: everything stays in memtables.
func BenchmarkSortedInMemory(b *testing.B) { benchSorted(b, DefaultMemoryQuota, 200_000) }

// BenchmarkSortedSpilled: 1M events (~115 MiB payload) per round under a
// 16 MiB quota: the writes fill several memtables, which flush to L0 and
// compact, and the read merges sstables through a 4 MiB cache.
func BenchmarkSortedSpilled(b *testing.B) { benchSorted(b, 16<<20, 1_000_000) }
