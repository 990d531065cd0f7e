package mount

import (
	"testing"
	"time"

	"github.com/pingcap/tidb/pkg/types"
	"github.com/stretchr/testify/require"

	"github.com/tidestream/tidestream/encoder/row"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// anyTables maps every physical id onto one of a few table shapes, so that
// random keys reach the row decoders instead of stopping at the lookup.
type anyTables []*row.Table

func (a anyTables) TableAt(id int64, _ uint64) (*row.Table, error) {
	return a[uint64(id)%uint64(len(a))], nil
}

// FuzzMount: arbitrary key and value bytes must come back as rows or an
// error, never a panic, and rows must match their table's shape.
func FuzzMount(f *testing.F) {
	tables := anyTables{
		mustTable(f, intPKTable(100, true)),
		mustTable(f, rowIDTable(101)),
		mustTable(f, clusteredTable(102)),
		mustTable(f, splitTable(107)),
	}
	for _, enc := range formats {
		v := enc.encode(f, time.UTC, cell{1, types.NewStringDatum("k")}, cell{2, types.NewIntDatum(2)}, cell{3, types.NewIntDatum(3)})
		f.Add(intKey(100, 1), v, []byte(nil), uint8(1))
		f.Add(intKey(101, 1), v, v, uint8(1))
		f.Add(commonKey(f, 102, types.NewStringDatum("k"), types.NewIntDatum(2)), v, []byte(nil), uint8(1))
		f.Add(intKey(107, 1), []byte(nil), v, uint8(2))
	}
	f.Fuzz(func(t *testing.T, key, value, old []byte, op uint8) {
		m, err := New(Config{})
		require.NoError(t, err)
		ev := &tidestreamv1.RawKVEvent{Key: key, Value: value, OldValue: old, Op: tidestreamv1.OpType(op % 4), StartTs: 9, CommitTs: 10}
		rows, err := m.Mount(ev, tables, nil)
		if err != nil {
			require.Empty(t, rows)
			return
		}
		require.LessOrEqual(t, len(rows), 2)
		for _, r := range rows {
			n := len(r.Table.Columns)
			if r.Op != row.Delete {
				require.Len(t, r.Cols, n)
			}
			if r.Op != row.Insert {
				require.Len(t, r.PreCols, n)
			}
		}
	})
}
