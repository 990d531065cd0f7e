package spill_test

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pingcap/kvproto/pkg/cdcpb"

	"github.com/tidestream/tidestream/puller/matcher"
	"github.com/tidestream/tidestream/puller/spill"
)

// BenchmarkLargeTransaction is one region's share of a transaction over
// the budget: b.N PREWRITEs of 1 KiB rows go to disk, then each COMMIT
// reads its row back and drops it, in key order as TiKV commits them.
// The figure is per row, write and read together.
func BenchmarkLargeTransaction(b *testing.B) {
	s, err := spill.Open(spill.Config{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	sp := s.Space()
	value := make([]byte, 1024)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range value {
		value[i] = byte('a' + rng.IntN(26)) // random letters: as compressible as text
	}
	key := func(i int) []byte {
		return binary.BigEndian.AppendUint64([]byte("t\x80\x00\x00\x00\x00\x00\x00\x2a_r"), uint64(i))
	}
	b.SetBytes(int64(len(value)))
	b.ResetTimer()
	for i := range b.N {
		if err := sp.Put(&cdcpb.Event_Row{Type: cdcpb.Event_PREWRITE, OpType: cdcpb.Event_Row_PUT, StartTs: 7, Key: key(i), Value: value}, false); err != nil {
			b.Fatal(err)
		}
	}
	for i := range b.N {
		r, err := sp.Get(7, key(i))
		if err != nil || r == nil {
			b.Fatal(r, err)
		}
		if err := sp.Delete(7, key(i)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMatcherLargeTransaction is what a puller does with a
// transaction over its budget, through the matcher: 4 regions' PREWRITEs
// arrive interleaved, each region's in batches of 16 keys sent by
// concurrent committers (so not in key order across batches), and every
// PREWRITE first looks for an older one of its lock; then the COMMITs
// arrive the same way and each reads its PREWRITE back. Rows of 1 KiB;
// the figure is per row.
func BenchmarkMatcherLargeTransaction(b *testing.B) {
	const regions, batch = 4, 16
	s, err := spill.Open(spill.Config{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	value := make([]byte, 1024)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range value {
		value[i] = byte('a' + rng.IntN(26))
	}
	ms := make([]*matcher.Matcher, regions)
	for r := range ms {
		ms[r] = matcher.New(5, matcher.WithSpill(s.Space()))
		if _, err := ms[r].Row(&cdcpb.Event_Row{Type: cdcpb.Event_INITIALIZED}); err != nil {
			b.Fatal(err)
		}
	}
	key := func(region, i int) []byte {
		k := binary.BigEndian.AppendUint64([]byte("t\x80\x00\x00\x00\x00\x00\x00\x2a_r"), uint64(region))
		return binary.BigEndian.AppendUint64(k, uint64(i))
	}
	// order is the arrival order of one phase: per region, batches of
	// consecutive keys, each batch in key order, batches shuffled within
	// windows of 8 (the committers in flight); regions interleaved.
	type ref struct{ region, i int }
	order := func() []ref {
		per := (b.N + regions - 1) / regions
		var out []ref
		queues := make([][]ref, regions)
		for r := range queues {
			var batches [][]ref
			for lo := 0; lo < per; lo += batch {
				var bt []ref
				for i := lo; i < min(lo+batch, per); i++ {
					bt = append(bt, ref{r, i})
				}
				batches = append(batches, bt)
			}
			for w := 0; w < len(batches); w += 8 {
				win := batches[w:min(w+8, len(batches))]
				rng.Shuffle(len(win), func(i, j int) { win[i], win[j] = win[j], win[i] })
			}
			for _, bt := range batches {
				queues[r] = append(queues[r], bt...)
			}
		}
		for len(out) < regions*per {
			r := rng.IntN(regions)
			if len(queues[r]) == 0 {
				continue
			}
			out = append(out, queues[r][0])
			queues[r] = queues[r][1:]
		}
		return out
	}
	prewrites, commits := order(), order()
	b.SetBytes(int64(len(value)))
	b.ResetTimer()
	began := time.Now()
	for _, p := range prewrites {
		if _, err := ms[p.region].Row(&cdcpb.Event_Row{Type: cdcpb.Event_PREWRITE, OpType: cdcpb.Event_Row_PUT,
			StartTs: 7, Key: key(p.region, p.i), Value: value}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(time.Since(began).Nanoseconds())/float64(b.N), "prewrite-ns/row")
	began = time.Now()
	for _, c := range commits {
		evs, err := ms[c.region].Row(&cdcpb.Event_Row{Type: cdcpb.Event_COMMIT, OpType: cdcpb.Event_Row_PUT,
			StartTs: 7, CommitTs: 9, Key: key(c.region, c.i)})
		if err != nil || len(evs) != 1 {
			b.Fatal(evs, err)
		}
	}
	b.ReportMetric(float64(time.Since(began).Nanoseconds())/float64(b.N), "commit-ns/row")
	b.StopTimer()
	if st := s.Stats(); st.OnDisk != 0 || st.Spilled < int64(b.N) {
		b.Fatalf("after the commits: %+v", st)
	}
}
