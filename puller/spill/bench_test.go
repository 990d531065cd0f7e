package spill_test

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/pingcap/kvproto/pkg/cdcpb"

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
