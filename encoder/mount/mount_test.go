package mount

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/pingcap/tidb/pkg/meta/model"
	pmodel "github.com/pingcap/tidb/pkg/parser/model"
	"github.com/pingcap/tidb/pkg/parser/mysql"
	"github.com/pingcap/tidb/pkg/types"
	"github.com/pingcap/tidb/pkg/util/collate"
	"github.com/stretchr/testify/require"

	"github.com/tidestream/tidestream/encoder/row"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

const bin = "utf8mb4_bin"

// intPKTable is `CREATE TABLE t (id BIGINT [UNSIGNED] PRIMARY KEY, name
// VARCHAR(32), score INT)`: the id lives only in the key.
func intPKTable(id int64, unsignedPK bool) *model.TableInfo {
	flag := uint(pkFlag)
	if unsignedPK {
		flag |= unsigned
	}
	info := tableInfo(id, "t", []*model.ColumnInfo{
		column(1, "id", ft(mysql.TypeLonglong, flag)),
		column(2, "name", strFt(mysql.TypeVarchar, 32, bin, 0)),
		column(3, "score", ft(mysql.TypeLong, 0)),
	})
	info.PKIsHandle = true
	return info
}

func TestMountIntHandle(t *testing.T) {
	for _, f := range formats {
		for _, tc := range []struct {
			name     string
			unsigned bool
			handle   int64
			want     string
			kind     byte
		}{
			{"signed", false, -5, "-5", types.KindInt64},
			{"unsigned max", true, -1, "18446744073709551615", types.KindUint64},
			{"unsigned small", true, 42, "42", types.KindUint64},
		} {
			t.Run(f.name+"/"+tc.name, func(t *testing.T) {
				tbl := mustTable(t, intPKTable(100, tc.unsigned))
				require.Equal(t, []int{0}, tbl.Key)
				value := f.encode(t, time.UTC, cell{2, types.NewStringDatum("alice")}, cell{3, types.NewIntDatum(7)})
				rows := mountOne(t, newMounter(t, Config{}), tablesOf(tbl), put(intKey(100, tc.handle), value, nil, 10))
				require.Len(t, rows, 1)
				r := rows[0]
				require.Equal(t, row.Insert, r.Op)
				require.Equal(t, []string{tc.want, "alice", "7"}, render(t, r.Cols))
				require.Equal(t, tc.kind, r.Cols[0].Kind())
				if tc.unsigned {
					require.Equal(t, uint64(tc.handle), r.Cols[0].GetUint64())
				}
				require.Nil(t, r.PreCols)
				require.Equal(t, int64(100), r.PhysicalID)
				require.Equal(t, uint64(10), r.CommitTs)
				require.Equal(t, uint64(9), r.StartTs)
			})
		}
	}
}

// rowIDTable has no clustered key: `CREATE TABLE r (a INT NOT NULL, b
// VARCHAR(10), UNIQUE KEY(a))`, rows keyed by the hidden _tidb_rowid.
func rowIDTable(id int64) *model.TableInfo {
	cols := []*model.ColumnInfo{
		column(1, "a", ft(mysql.TypeLong, notNull|mysql.UniqueKeyFlag)),
		column(2, "b", strFt(mysql.TypeVarchar, 10, bin, 0)),
	}
	return tableInfo(id, "r", cols, index(1, "uk_a", false, true, cols, "a"))
}

func TestMountRowID(t *testing.T) {
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			tbl := mustTable(t, rowIDTable(101))
			require.Equal(t, []int{0}, tbl.Key, "NOT NULL unique key is the handle key")
			pre := f.encode(t, time.UTC, cell{1, types.NewIntDatum(3)}, cell{2, types.NewStringDatum("x")})
			post := f.encode(t, time.UTC, cell{1, types.NewIntDatum(3)}, cell{2, types.Datum{}})
			rows := mountOne(t, newMounter(t, Config{}), tablesOf(tbl), put(intKey(101, 77), post, pre, 20))
			require.Len(t, rows, 1)
			require.Equal(t, row.Update, rows[0].Op)
			require.Equal(t, []string{"3", "<nil>"}, render(t, rows[0].Cols))
			require.Equal(t, []string{"3", "x"}, render(t, rows[0].PreCols))
		})
	}
}

// clusteredTable is `CREATE TABLE c (a VARCHAR(20) COLLATE
// utf8mb4_general_ci, b INT, c INT, PRIMARY KEY(a, b) CLUSTERED)`.
func clusteredTable(id int64) *model.TableInfo {
	cols := []*model.ColumnInfo{
		column(1, "a", strFt(mysql.TypeVarchar, 20, "utf8mb4_general_ci", pkFlag)),
		column(2, "b", ft(mysql.TypeLong, pkFlag)),
		column(3, "c", ft(mysql.TypeLong, 0)),
	}
	info := tableInfo(id, "c", cols, index(1, "PRIMARY", true, true, cols, "a", "b"))
	info.IsCommonHandle = true
	info.CommonHandleVersion = 1
	return info
}

func setNewCollation(t *testing.T, on bool) {
	was := collate.NewCollationEnabled()
	collate.SetNewCollationEnabledForTest(on)
	t.Cleanup(func() { collate.SetNewCollationEnabledForTest(was) })
}

// TestMountClusteredCollation covers spec §3.4's pitfall: with new
// collation a ci-collated clustered key holds sort keys and the value
// holds the string; without it the value lacks the column and only the
// key has it. Each case decodes under the opposite process-wide flag, to
// show mount does not depend on it.
func TestMountClusteredCollation(t *testing.T) {
	for _, f := range formats {
		for _, newCollation := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/new_collation=%v", f.name, newCollation), func(t *testing.T) {
				setNewCollation(t, newCollation)
				tbl := mustTable(t, clusteredTable(102))
				require.Equal(t, []int{0, 1}, tbl.Key)
				key := commonKey(t, 102, types.NewCollationStringDatum("Key1", "utf8mb4_general_ci"), types.NewIntDatum(7))
				cells := []cell{{3, types.NewIntDatum(5)}}
				if newCollation {
					require.False(t, bytes.Contains(key, []byte("Key1")), "key should hold collation sort keys")
					cells = append(cells, cell{1, types.NewStringDatum("Key1")}) // restored data
				} else {
					require.True(t, bytes.Contains(key, []byte("Key1")))
				}
				value := f.encode(t, time.UTC, cells...)

				collate.SetNewCollationEnabledForTest(!newCollation)
				m := newMounter(t, Config{})
				rows := mountOne(t, m, tablesOf(tbl), put(key, value, nil, 30))
				require.Len(t, rows, 1)
				require.Equal(t, []string{"Key1", "7", "5"}, render(t, rows[0].Cols))
				rows = mountOne(t, m, tablesOf(tbl), del(key, value, 31))
				require.Equal(t, row.Delete, rows[0].Op)
				require.Equal(t, []string{"Key1", "7", "5"}, render(t, rows[0].PreCols))
			})
		}
	}
}

// TestMountPrefixPK: `PRIMARY KEY(a(2), b) CLUSTERED` keeps only "ab" in
// the key; the full value comes from the row.
func TestMountPrefixPK(t *testing.T) {
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			cols := []*model.ColumnInfo{
				column(1, "a", strFt(mysql.TypeVarchar, 20, bin, pkFlag)),
				column(2, "b", ft(mysql.TypeLong, pkFlag)),
			}
			info := tableInfo(103, "p", cols, index(1, "PRIMARY", true, true, cols, "a(2)", "b"))
			info.IsCommonHandle = true
			tbl := mustTable(t, info)
			key := commonKey(t, 103, types.NewStringDatum("ab"), types.NewIntDatum(1))
			value := f.encode(t, time.UTC, cell{1, types.NewStringDatum("abcdef")})
			rows := mountOne(t, newMounter(t, Config{}), tablesOf(tbl), put(key, value, nil, 30))
			require.Equal(t, []string{"abcdef", "1"}, render(t, rows[0].Cols))
		})
	}
}

func TestMountPartition(t *testing.T) {
	info := intPKTable(200, false)
	info.Partition = &model.PartitionInfo{Type: pmodel.PartitionTypeHash, Enable: true, Num: 2,
		Definitions: []model.PartitionDefinition{{ID: 201, Name: pmodel.NewCIStr("p0")}, {ID: 202, Name: pmodel.NewCIStr("p1")}}}
	tbl := mustTable(t, info)
	tables := tablesOf(tbl)
	value := encodeV2(t, time.UTC, cell{2, types.NewStringDatum("bob")}, cell{3, types.NewIntDatum(1)})
	rows := mountOne(t, newMounter(t, Config{}), tables, put(intKey(202, 9), value, nil, 40))
	require.Len(t, rows, 1)
	require.Same(t, tbl, rows[0].Table)
	require.Equal(t, int64(202), rows[0].PhysicalID)
	require.Equal(t, []string{"9", "bob", "1"}, render(t, rows[0].Cols))
}

// TestMountAddedColumns: a row stored before columns 3–8 were added gets
// their origin defaults (not today's default), NULL or the zero value, per
// spec §2.6, with TIMESTAMP defaults rendered in the output zone.
func TestMountAddedColumns(t *testing.T) {
	shanghai, err := time.LoadLocation("Asia/Shanghai")
	require.NoError(t, err)
	withDefault := func(c *model.ColumnInfo, origin, current any) *model.ColumnInfo {
		c.OriginDefaultValue, c.DefaultValue = origin, current
		return c
	}
	enumFt := strFt(mysql.TypeEnum, 0, bin, notNull)
	enumFt.SetElems([]string{"x", "y"})
	oldTS := withDefault(column(8, "h", ft(mysql.TypeTimestamp, notNull)), "2024-01-02 04:00:00", nil)
	oldTS.Version = model.ColumnInfoVersion0
	info := tableInfo(104, "a", []*model.ColumnInfo{
		column(1, "id", ft(mysql.TypeLonglong, pkFlag)),
		column(2, "a", ft(mysql.TypeLong, 0)),
		withDefault(column(3, "c", ft(mysql.TypeLong, notNull)), "5", "6"),
		column(4, "d", strFt(mysql.TypeVarchar, 10, bin, notNull)),
		column(5, "e", enumFt),
		column(6, "f", ft(mysql.TypeLong, 0)),
		withDefault(column(7, "g", ft(mysql.TypeTimestamp, notNull)), "2024-01-02 04:00:00", nil),
		oldTS,
		column(9, "i", ft(mysql.TypeLong, notNull)),
	})
	info.PKIsHandle = true
	tbl := mustTable(t, info)
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			value := f.encode(t, time.UTC, cell{2, types.NewIntDatum(1)})
			rows := mountOne(t, newMounter(t, Config{TimeZone: shanghai}), tablesOf(tbl), put(intKey(104, 1), value, nil, 50))
			require.Equal(t, []string{"1", "1", "5", "", "x", "<nil>", "2024-01-02 12:00:00", "2024-01-02 04:00:00", "0"},
				render(t, rows[0].Cols))
		})
	}
}

func TestMountDroppedColumn(t *testing.T) {
	info := intPKTable(105, false)
	info.Columns = info.Columns[:2] // score (id 3) was dropped
	tbl := mustTable(t, info)
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			value := f.encode(t, time.UTC, cell{2, types.NewStringDatum("n")}, cell{3, types.NewIntDatum(9)}, cell{4, types.NewIntDatum(10)})
			rows := mountOne(t, newMounter(t, Config{}), tablesOf(tbl), put(intKey(105, 2), value, nil, 60))
			require.Equal(t, []string{"2", "n"}, render(t, rows[0].Cols))
		})
	}
}

func TestMountGeneratedColumns(t *testing.T) {
	virt := column(3, "v", ft(mysql.TypeLong, 0))
	virt.GeneratedExprString = "`a` + 1"
	stored := column(4, "s", ft(mysql.TypeLong, 0))
	stored.GeneratedExprString, stored.GeneratedStored = "`a` * 2", true
	info := tableInfo(106, "g", []*model.ColumnInfo{column(1, "id", ft(mysql.TypeLonglong, pkFlag)), column(2, "a", ft(mysql.TypeLong, 0)), virt, stored})
	info.PKIsHandle = true
	tbl := mustTable(t, info)
	require.Len(t, tbl.Columns, 3)
	value := encodeV2(t, time.UTC, cell{2, types.NewIntDatum(4)}, cell{4, types.NewIntDatum(8)})
	rows := mountOne(t, newMounter(t, Config{}), tablesOf(tbl), put(intKey(106, 1), value, nil, 70))
	require.Equal(t, []string{"1", "4", "8"}, render(t, rows[0].Cols))
	require.True(t, tbl.Flags[2].Has(row.Generated))
}

func TestMountClassify(t *testing.T) {
	tbl := mustTable(t, intPKTable(100, false))
	v1 := encodeV2(t, time.UTC, cell{2, types.NewStringDatum("a")}, cell{3, types.NewIntDatum(1)})
	v2 := encodeV2(t, time.UTC, cell{2, types.NewStringDatum("b")}, cell{3, types.NewIntDatum(2)})
	key := intKey(100, 1)
	for _, tc := range []struct {
		name      string
		ev        *tidestreamv1.RawKVEvent
		ops       []row.Op
		cols, pre []string
		err       string
	}{
		{name: "insert", ev: put(key, v1, nil, 5), ops: []row.Op{row.Insert}, cols: []string{"1", "a", "1"}},
		{name: "update", ev: put(key, v2, v1, 5), ops: []row.Op{row.Update}, cols: []string{"1", "b", "2"}, pre: []string{"1", "a", "1"}},
		{name: "delete", ev: del(key, v1, 5), ops: []row.Op{row.Delete}, pre: []string{"1", "a", "1"}},
		{name: "put without images", ev: put(key, nil, nil, 5)},
		{name: "delete without old value", ev: del(key, nil, 5)},
		{name: "put with only old value", ev: put(key, nil, v1, 5), err: "put without value"},
		{name: "delete with only a value", ev: &tidestreamv1.RawKVEvent{Key: key, Value: v1, Op: tidestreamv1.OpType_OP_TYPE_DELETE, CommitTs: 5}, err: "no old value"},
		{name: "unknown op", ev: &tidestreamv1.RawKVEvent{Key: key, Value: v1, CommitTs: 5}, err: "unknown op"},
		{name: "no commit ts", ev: &tidestreamv1.RawKVEvent{Key: key, Value: v1, Op: tidestreamv1.OpType_OP_TYPE_PUT}, err: "no commit ts"},
		{name: "index key", ev: put([]byte("t\x80\x00\x00\x00\x00\x00\x00\x64_i\x80\x00\x00\x00\x00\x00\x00\x01\x01"), v1, nil, 5), err: "invalid record key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows, err := newMounter(t, Config{}).Mount(tc.ev, tablesOf(tbl), nil)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				require.ErrorContains(t, err, "mount:")
				return
			}
			require.NoError(t, err)
			require.Len(t, rows, len(tc.ops))
			for i, r := range rows {
				require.Equal(t, tc.ops[i], r.Op)
				require.Equal(t, tc.cols, render(t, r.Cols))
				require.Equal(t, tc.pre, render(t, r.PreCols))
				require.Equal(t, tc.ops[i], r.Op)
			}
		})
	}
}

// splitTable is `CREATE TABLE u (id INT NOT NULL PRIMARY KEY NONCLUSTERED,
// u VARCHAR(10) UNIQUE, v INT)`: the row key is _tidb_rowid, so a changed
// primary or unique key arrives as one update.
func splitTable(id int64) *model.TableInfo {
	cols := []*model.ColumnInfo{
		column(1, "id", ft(mysql.TypeLong, pkFlag)),
		column(2, "u", strFt(mysql.TypeVarchar, 10, bin, mysql.UniqueKeyFlag)),
		column(3, "v", ft(mysql.TypeLong, 0)),
	}
	return tableInfo(id, "u", cols, index(1, "PRIMARY", true, true, cols, "id"), index(2, "uk_u", false, true, cols, "u"))
}

func TestMountSplitUpdate(t *testing.T) {
	tbl := mustTable(t, splitTable(107))
	require.Equal(t, []int{0}, tbl.Key)
	img := func(id int64, u any, v int64) []byte {
		return encodeV2(t, time.UTC, cell{1, types.NewIntDatum(id)}, cell{2, types.NewDatum(u)}, cell{3, types.NewIntDatum(v)})
	}
	key := intKey(107, 3)
	for _, tc := range []struct {
		name     string
		pre, cur []byte
		raw      bool
		ops      []row.Op
	}{
		{"non-key column", img(1, "a", 1), img(1, "a", 2), false, []row.Op{row.Update}},
		{"primary key", img(1, "a", 1), img(2, "a", 1), false, []row.Op{row.Delete, row.Insert}},
		{"unique key", img(1, "a", 1), img(1, "b", 1), false, []row.Op{row.Delete, row.Insert}},
		{"nullable unique key from NULL", img(1, nil, 1), img(1, "a", 1), false, []row.Op{row.Delete, row.Insert}},
		{"primary key, raw change events", img(1, "a", 1), img(2, "a", 1), true, []row.Op{row.Update}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMounter(t, Config{OutputRawChangeEvent: tc.raw})
			rows := mountOne(t, m, tablesOf(tbl), put(key, tc.cur, tc.pre, 80))
			var ops []row.Op
			for _, r := range rows {
				ops = append(ops, r.Op)
				require.Equal(t, uint64(80), r.CommitTs)
			}
			require.Equal(t, tc.ops, ops)
			if len(rows) == 2 {
				require.Nil(t, rows[0].Cols)
				require.Equal(t, render(t, rows[0].PreCols)[0], "1")
				require.Nil(t, rows[1].PreCols)
				require.NotNil(t, rows[1].Cols)
			}
		})
	}
}

func TestOrderTxns(t *testing.T) {
	mk := func(commit uint64, op row.Op, tag int64) row.Row {
		return row.Row{CommitTs: commit, StartTs: commit - 1, Op: op, PhysicalID: tag}
	}
	rows := []row.Row{
		mk(10, row.Insert, 1), mk(10, row.Delete, 2), mk(10, row.Update, 3), mk(10, row.Delete, 4), mk(10, row.Insert, 5),
		mk(11, row.Insert, 6), mk(11, row.Delete, 7),
		mk(12, row.Update, 8),
	}
	rows = append(rows, row.Row{CommitTs: 12, StartTs: 5, Op: row.Delete, PhysicalID: 9}) // another txn at the same commit ts
	OrderTxns(rows)
	var got []int64
	for _, r := range rows {
		got = append(got, r.PhysicalID)
	}
	require.Equal(t, []int64{2, 4, 3, 1, 5, 7, 6, 8, 9}, got)
}

// TestMountSplitThenOrder: an update splitting into delete + insert, next
// to an insert taking the freed unique value, comes out deletes first.
func TestMountSplitThenOrder(t *testing.T) {
	tbl := mustTable(t, splitTable(107))
	img := func(id int64, u string) []byte {
		return encodeV2(t, time.UTC, cell{1, types.NewIntDatum(id)}, cell{2, types.NewStringDatum(u)}, cell{3, types.NewIntDatum(0)})
	}
	m := newMounter(t, Config{})
	tables := tablesOf(tbl)
	rows, err := m.Mount(put(intKey(107, 1), img(2, "z"), nil, 90), tables, nil)
	require.NoError(t, err)
	rows, err = m.Mount(put(intKey(107, 2), img(1, "b"), img(1, "a"), 90), tables, rows)
	require.NoError(t, err)
	OrderTxns(rows)
	var ops []row.Op
	for _, r := range rows {
		ops = append(ops, r.Op)
	}
	require.Equal(t, []row.Op{row.Delete, row.Insert, row.Insert}, ops)
	require.Equal(t, "1", render(t, rows[0].PreCols)[0])
}

func TestMountTimestampZone(t *testing.T) {
	shanghai, err := time.LoadLocation("Asia/Shanghai")
	require.NoError(t, err)
	info := tableInfo(108, "z", []*model.ColumnInfo{
		column(1, "id", ft(mysql.TypeLonglong, pkFlag)),
		column(2, "ts", func() *types.FieldType { f := ft(mysql.TypeTimestamp, 0); f.SetDecimal(3); return f }()),
		column(3, "dt", ft(mysql.TypeDatetime, 0)),
	})
	info.PKIsHandle = true
	tbl := mustTable(t, info)
	for _, f := range formats {
		// The session that wrote the row was in Shanghai: TiDB stores
		// 12:00 there as 04:00 UTC.
		value := f.encode(t, shanghai,
			cell{2, types.NewTimeDatum(mustTime(t, "2024-05-06 12:00:00.123", mysql.TypeTimestamp, 3))},
			cell{3, types.NewTimeDatum(mustTime(t, "2024-05-06 12:00:00", mysql.TypeDatetime, 0))})
		for _, tc := range []struct {
			loc  *time.Location
			want string
		}{{shanghai, "2024-05-06 12:00:00.123"}, {time.UTC, "2024-05-06 04:00:00.123"}, {nil, "2024-05-06 04:00:00.123"}} {
			t.Run(fmt.Sprintf("%s/%v", f.name, tc.loc), func(t *testing.T) {
				tables := tablesOf(tbl)
				rows := mountOne(t, newMounter(t, Config{TimeZone: tc.loc}), tables, put(intKey(108, 1), value, nil, 100))
				require.Equal(t, []string{"1", tc.want, "2024-05-06 12:00:00"}, render(t, rows[0].Cols))
				require.Equal(t, []uint64{99}, tables.asked, "schema at commit ts - 1")
			})
		}
	}
}

func TestMountTableLookup(t *testing.T) {
	tbl := mustTable(t, intPKTable(100, false))
	value := encodeV2(t, time.UTC, cell{2, types.NewStringDatum("a")})

	tables := tablesOf(tbl)
	tables.gone[300] = true
	rows, err := newMounter(t, Config{}).Mount(put(intKey(300, 1), value, nil, 5), tables, nil)
	require.NoError(t, err, "a dropped or truncated table's stray rows are dropped")
	require.Empty(t, rows)

	_, err = newMounter(t, Config{}).Mount(put(intKey(301, 1), value, nil, 5), tables, nil)
	require.ErrorContains(t, err, "table not found")
	require.ErrorContains(t, err, fmt.Sprintf("%x", intKey(301, 1)))
	require.ErrorContains(t, err, "commit ts 5")
}

func TestMountCorruptValue(t *testing.T) {
	tbl := mustTable(t, intPKTable(100, false))
	key := intKey(100, 1)
	good := encodeV2(t, time.UTC, cell{2, types.NewStringDatum("a")})
	for name, value := range map[string][]byte{
		"truncated v2":    {128, 0, 5},
		"cut v2":          bytes.Clone(good[:len(good)-1]), // no spare capacity to read into
		"v1 garbage":      {0x03, 0xff},
		"v2 json no type": encodeRawV2JSON(t),
	} {
		t.Run(name, func(t *testing.T) {
			info := tbl.Info
			if name == "v2 json no type" {
				info = tableInfo(100, "t", []*model.ColumnInfo{column(1, "id", ft(mysql.TypeLonglong, pkFlag)), column(2, "j", ft(mysql.TypeJSON, 0))})
				info.PKIsHandle = true
			}
			rows, err := newMounter(t, Config{}).Mount(put(key, value, nil, 7), tablesOf(mustTable(t, info)), nil)
			require.Error(t, err)
			require.Empty(t, rows)
			require.ErrorContains(t, err, "test.t (table 100")
			require.ErrorContains(t, err, fmt.Sprintf("key %x", key))
			require.ErrorContains(t, err, "commit ts 7")
		})
	}
}

// encodeRawV2JSON is a v2 row whose JSON column 2 has zero bytes, which
// TiDB's decoder indexes without a bounds check.
func encodeRawV2JSON(t *testing.T) []byte {
	// VER, flags, 1 not-null column, 0 null columns, col id 2, offset 0.
	return []byte{128, 0, 1, 0, 0, 0, 2, 0, 0}
}

func TestMountHandleMismatch(t *testing.T) {
	tbl := mustTable(t, clusteredTable(102))
	value := encodeV2(t, time.UTC, cell{3, types.NewIntDatum(5)})
	_, err := newMounter(t, Config{}).Mount(put(intKey(102, 1), value, nil, 5), tablesOf(tbl), nil)
	require.ErrorContains(t, err, "integer handle")
	_, err = newMounter(t, Config{}).Mount(put(commonKey(t, 102, types.NewStringDatum("a")), value, nil, 5), tablesOf(tbl), nil)
	require.ErrorContains(t, err, "common handle has 1 columns, primary key 2")
}

func TestMountKeyspacePrefix(t *testing.T) {
	tbl := mustTable(t, intPKTable(100, false))
	value := encodeV2(t, time.UTC, cell{2, types.NewStringDatum("a")})
	key := append([]byte{'x', 0, 0, 1}, intKey(100, 4)...)
	rows := mountOne(t, newMounter(t, Config{}), tablesOf(tbl), put(key, value, nil, 5))
	require.Equal(t, []string{"4", "a", "<nil>"}, render(t, rows[0].Cols))
}

func TestMountDecoderPerVersion(t *testing.T) {
	v1 := mustTable(t, intPKTable(100, false))
	v2, err := row.NewTable("test", intPKTable(100, false), 2)
	require.NoError(t, err)
	m := newMounter(t, Config{})
	value := encodeV2(t, time.UTC, cell{2, types.NewStringDatum("a")})
	mountOne(t, m, tablesOf(v1), put(intKey(100, 1), value, nil, 5))
	d := m.decoders[100]
	mountOne(t, m, tablesOf(v1), put(intKey(100, 2), value, nil, 6))
	require.Same(t, d, m.decoders[100], "decoder reused for the same table version")
	mountOne(t, m, tablesOf(v2), put(intKey(100, 3), value, nil, 7))
	require.NotSame(t, d, m.decoders[100])
	require.Len(t, m.decoders, 1, "a new version replaces the old decoder")
}

func TestMountBadOriginDefault(t *testing.T) {
	info := intPKTable(100, false)
	c := column(4, "bad", ft(mysql.TypeDate, notNull))
	c.OriginDefaultValue = "not a date"
	c.Offset = 3
	info.Columns = append(info.Columns, c)
	tbl := mustTable(t, info)
	m := newMounter(t, Config{})
	// The bad default only matters for rows lacking the column.
	withCol := encodeV2(t, time.UTC, cell{4, types.NewTimeDatum(mustTime(t, "2024-01-01", mysql.TypeDate, 0))})
	rows := mountOne(t, m, tablesOf(tbl), put(intKey(100, 1), withCol, nil, 5))
	require.Equal(t, "2024-01-01", render(t, rows[0].Cols)[3])
	_, err := m.Mount(put(intKey(100, 1), encodeV2(t, time.UTC, cell{2, types.NewStringDatum("a")}), nil, 6), tablesOf(tbl), nil)
	require.ErrorContains(t, err, "column bad missing from row")
}
