package mount

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pingcap/tidb/pkg/kv"
	"github.com/pingcap/tidb/pkg/meta/model"
	pmodel "github.com/pingcap/tidb/pkg/parser/model"
	"github.com/pingcap/tidb/pkg/parser/mysql"
	"github.com/pingcap/tidb/pkg/tablecodec"
	"github.com/pingcap/tidb/pkg/types"
	"github.com/pingcap/tidb/pkg/util/codec"
	"github.com/pingcap/tidb/pkg/util/rowcodec"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/tidestream/tidestream/encoder/row"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Fixtures are built the way TiDB writes rows: TiDB's own encoders, with
// the caller choosing which columns the value holds (TiDB's tables.CanSkip
// leaves out int-PK handles, plain clustered-key columns and NULLs without
// defaults).

func ft(tp byte, flag uint) *types.FieldType {
	f := types.NewFieldType(tp)
	f.SetFlag(flag)
	return f
}

func strFt(tp byte, flen int, collation string, flag uint) *types.FieldType {
	f := types.NewFieldTypeWithCollation(tp, collation, flen)
	f.SetFlag(flag)
	return f
}

func column(id int64, name string, f *types.FieldType) *model.ColumnInfo {
	return &model.ColumnInfo{
		ID: id, Name: pmodel.NewCIStr(name), FieldType: *f,
		State: model.StatePublic, Version: model.CurrLatestColumnInfoVersion,
	}
}

// index builds an index over the named columns of cols; a name "a(3)"
// indexes a 3-character prefix.
func index(id int64, name string, primary, unique bool, cols []*model.ColumnInfo, names ...string) *model.IndexInfo {
	idx := &model.IndexInfo{ID: id, Name: pmodel.NewCIStr(name), Primary: primary, Unique: unique || primary, State: model.StatePublic}
	for _, n := range names {
		length := types.UnspecifiedLength
		if base, rest, ok := strings.Cut(n, "("); ok {
			length, _ = strconv.Atoi(strings.TrimSuffix(rest, ")"))
			n = base
		}
		for off, c := range cols {
			if c.Name.L == n {
				idx.Columns = append(idx.Columns, &model.IndexColumn{Name: c.Name, Offset: off, Length: length})
			}
		}
	}
	return idx
}

func tableInfo(id int64, name string, cols []*model.ColumnInfo, idx ...*model.IndexInfo) *model.TableInfo {
	for i, c := range cols {
		c.Offset = i
	}
	info := &model.TableInfo{ID: id, Name: pmodel.NewCIStr(name), Columns: cols, Indices: idx, State: model.StatePublic}
	for _, c := range cols {
		if c.ID > info.MaxColumnID {
			info.MaxColumnID = c.ID
		}
	}
	return info
}

func mustTable(t testing.TB, info *model.TableInfo) *row.Table {
	t.Helper()
	tbl, err := row.NewTable("test", info, 1)
	require.NoError(t, err)
	return tbl
}

// fakeTables is a recording Tables.
type fakeTables struct {
	byID  map[int64]*row.Table
	gone  map[int64]bool
	asked []uint64
}

func tablesOf(ts ...*row.Table) *fakeTables {
	f := &fakeTables{byID: map[int64]*row.Table{}, gone: map[int64]bool{}}
	for _, t := range ts {
		f.byID[t.ID] = t
		if pi := t.Info.GetPartitionInfo(); pi != nil {
			for _, d := range pi.Definitions {
				f.byID[d.ID] = t
			}
		}
	}
	return f
}

func (f *fakeTables) TableAt(id int64, ts uint64) (*row.Table, error) {
	f.asked = append(f.asked, ts)
	if f.gone[id] {
		return nil, fmt.Errorf("table %d: %w", id, row.ErrGone)
	}
	if t, ok := f.byID[id]; ok {
		return t, nil
	}
	return nil, errors.New("table not found")
}

// cell is a column id and the datum TiDB would store for it.
type cell struct {
	id int64
	d  types.Datum
}

func encodeV2(t testing.TB, loc *time.Location, cells ...cell) []byte {
	t.Helper()
	ds, ids := split(cells)
	b, err := tablecodec.EncodeRow(loc, ds, ids, nil, nil, nil, &rowcodec.Encoder{Enable: true})
	require.NoError(t, err)
	require.True(t, rowcodec.IsNewFormat(b))
	return b
}

func encodeV1(t testing.TB, loc *time.Location, cells ...cell) []byte {
	t.Helper()
	ds, ids := split(cells)
	b, err := tablecodec.EncodeOldRow(loc, ds, ids, nil, nil)
	require.NoError(t, err)
	require.False(t, rowcodec.IsNewFormat(b))
	return b
}

type encodeFunc func(testing.TB, *time.Location, ...cell) []byte

var formats = []struct {
	name   string
	encode encodeFunc
}{{"v2", encodeV2}, {"v1", encodeV1}}

func split(cells []cell) ([]types.Datum, []int64) {
	ds := make([]types.Datum, len(cells))
	ids := make([]int64, len(cells))
	for i, c := range cells {
		ds[i], ids[i] = c.d, c.id
	}
	return ds, ids
}

func intKey(tableID, h int64) []byte {
	return tablecodec.EncodeRowKeyWithHandle(tableID, kv.IntHandle(h))
}

func commonKey(t testing.TB, tableID int64, vals ...types.Datum) []byte {
	t.Helper()
	enc, err := codec.EncodeKey(time.UTC, nil, vals...)
	require.NoError(t, err)
	h, err := kv.NewCommonHandle(enc)
	require.NoError(t, err)
	return tablecodec.EncodeRowKeyWithHandle(tableID, h)
}

func put(key, value, old []byte, commitTs uint64) *tidestreamv1.RawKVEvent {
	return &tidestreamv1.RawKVEvent{Key: key, Value: value, OldValue: old, Op: tidestreamv1.OpType_OP_TYPE_PUT, StartTs: commitTs - 1, CommitTs: commitTs}
}

func del(key, old []byte, commitTs uint64) *tidestreamv1.RawKVEvent {
	return &tidestreamv1.RawKVEvent{Key: key, OldValue: old, Op: tidestreamv1.OpType_OP_TYPE_DELETE, StartTs: commitTs - 1, CommitTs: commitTs}
}

func newMounter(t testing.TB, cfg Config) *Mounter {
	t.Helper()
	m, err := New(cfg)
	require.NoError(t, err)
	return m
}

func mountOne(t testing.TB, m *Mounter, tables Tables, ev *tidestreamv1.RawKVEvent) []row.Row {
	t.Helper()
	rows, err := m.Mount(ev, tables, nil)
	require.NoError(t, err)
	return rows
}

// render shows an image as strings in column order, NULL as "<nil>", so
// expectations read like SQL results.
func render(t testing.TB, img []types.Datum) []string {
	t.Helper()
	if img == nil {
		return nil
	}
	out := make([]string, len(img))
	for i := range img {
		if img[i].IsNull() {
			out[i] = "<nil>"
			continue
		}
		s, err := img[i].ToString()
		require.NoError(t, err)
		out[i] = s
	}
	return out
}

func mustTime(t testing.TB, s string, tp byte, fsp int) types.Time {
	t.Helper()
	tm, err := types.ParseTime(types.DefaultStmtNoWarningContext, s, tp, fsp)
	require.NoError(t, err)
	return tm
}

const (
	notNull  = mysql.NotNullFlag
	pkFlag   = mysql.PriKeyFlag | mysql.NotNullFlag
	unsigned = mysql.UnsignedFlag
)
