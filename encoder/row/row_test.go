package row

import (
	"strings"
	"testing"

	"github.com/pingcap/tidb/pkg/meta/model"
	pmodel "github.com/pingcap/tidb/pkg/parser/model"
	"github.com/pingcap/tidb/pkg/parser/mysql"
	"github.com/pingcap/tidb/pkg/types"
	"github.com/stretchr/testify/require"
)

// col is a column spec: "name" is a nullable INT, "name!" NOT NULL,
// "name*" a virtual and "name+" a stored generated column.
func cols(specs ...string) []*model.ColumnInfo {
	out := make([]*model.ColumnInfo, len(specs))
	for i, s := range specs {
		ft := types.NewFieldType(mysql.TypeLong)
		c := &model.ColumnInfo{ID: int64(i + 1), Offset: i, State: model.StatePublic}
		switch {
		case strings.HasSuffix(s, "!"):
			ft.AddFlag(mysql.NotNullFlag)
		case strings.HasSuffix(s, "*"):
			c.GeneratedExprString = "1"
		case strings.HasSuffix(s, "+"):
			c.GeneratedExprString, c.GeneratedStored = "1", true
		}
		c.Name = pmodel.NewCIStr(strings.TrimRight(s, "!*+"))
		c.FieldType = *ft
		out[i] = c
	}
	return out
}

func idx(id int64, kind string, cs []*model.ColumnInfo, names ...string) *model.IndexInfo {
	ix := &model.IndexInfo{ID: id, Name: pmodel.NewCIStr(kind), State: model.StatePublic,
		Primary: kind == "pk", Unique: kind == "pk" || kind == "uk"}
	for _, n := range names {
		for off, c := range cs {
			if c.Name.L == n {
				ix.Columns = append(ix.Columns, &model.IndexColumn{Name: c.Name, Offset: off, Length: types.UnspecifiedLength})
			}
		}
	}
	return ix
}

func names(t *Table, at []int) []string {
	out := []string{}
	for _, i := range at {
		out = append(out, t.Columns[i].Name.O)
	}
	return out
}

func TestNewTableKey(t *testing.T) {
	for _, tc := range []struct {
		name    string
		build   func() *model.TableInfo
		key     []string
		columns []string
	}{
		{
			name: "int PK handle",
			build: func() *model.TableInfo {
				cs := cols("a!", "id!", "b")
				cs[1].AddFlag(mysql.PriKeyFlag)
				return &model.TableInfo{Columns: cs, PKIsHandle: true}
			},
			key: []string{"id"},
		},
		{
			name: "clustered composite PK",
			build: func() *model.TableInfo {
				cs := cols("a!", "b!", "c")
				return &model.TableInfo{Columns: cs, IsCommonHandle: true, Indices: []*model.IndexInfo{idx(1, "pk", cs, "a", "b")}}
			},
			key: []string{"a", "b"},
		},
		{
			name: "non-clustered PK beats a smaller NOT NULL UK",
			build: func() *model.TableInfo {
				cs := cols("a!", "b!", "c!")
				return &model.TableInfo{Columns: cs, Indices: []*model.IndexInfo{idx(1, "uk", cs, "c"), idx(2, "pk", cs, "a", "b")}}
			},
			key: []string{"a", "b"},
		},
		{
			name: "PK(b, a) keys in column order",
			build: func() *model.TableInfo {
				cs := cols("a!", "b!", "c")
				return &model.TableInfo{Columns: cs, IsCommonHandle: true, Indices: []*model.IndexInfo{idx(1, "pk", cs, "b", "a")}}
			},
			key: []string{"a", "b"},
		},
		{
			name: "NOT NULL UK with fewest columns",
			build: func() *model.TableInfo {
				cs := cols("a!", "b!", "c!")
				return &model.TableInfo{Columns: cs, Indices: []*model.IndexInfo{idx(1, "uk", cs, "a", "b"), idx(2, "uk", cs, "c")}}
			},
			key: []string{"c"},
		},
		{
			name: "NOT NULL UK tie goes to lowest index id",
			build: func() *model.TableInfo {
				cs := cols("a!", "b!")
				return &model.TableInfo{Columns: cs, Indices: []*model.IndexInfo{idx(5, "uk", cs, "a"), idx(3, "uk", cs, "b")}}
			},
			key: []string{"b"},
		},
		{
			name: "nullable UK ignored",
			build: func() *model.TableInfo {
				cs := cols("a", "b!", "c!")
				return &model.TableInfo{Columns: cs, Indices: []*model.IndexInfo{idx(1, "uk", cs, "a"), idx(2, "uk", cs, "b", "c")}}
			},
			key: []string{"b", "c"},
		},
		{
			name: "only nullable UK and plain index: ineligible",
			build: func() *model.TableInfo {
				cs := cols("a", "b!")
				return &model.TableInfo{Columns: cs, Indices: []*model.IndexInfo{idx(1, "uk", cs, "a"), idx(2, "key", cs, "b")}}
			},
		},
		{
			name: "no index: ineligible",
			build: func() *model.TableInfo {
				return &model.TableInfo{Columns: cols("a", "b")}
			},
		},
		{
			name: "non-public UK ignored",
			build: func() *model.TableInfo {
				cs := cols("a!")
				ix := idx(1, "uk", cs, "a")
				ix.State = model.StateWriteReorganization
				return &model.TableInfo{Columns: cs, Indices: []*model.IndexInfo{ix}}
			},
		},
		{
			name: "UK on a virtual generated column cannot be the key",
			build: func() *model.TableInfo {
				cs := cols("a!", "v*", "b!")
				cs[1].AddFlag(mysql.NotNullFlag)
				return &model.TableInfo{Columns: cs, Indices: []*model.IndexInfo{idx(1, "uk", cs, "v"), idx(2, "uk", cs, "a", "b")}}
			},
			key:     []string{"a", "b"},
			columns: []string{"a", "b"},
		},
		{
			name: "virtual generated excluded, stored included",
			build: func() *model.TableInfo {
				cs := cols("id!", "v*", "s+")
				cs[0].AddFlag(mysql.PriKeyFlag)
				return &model.TableInfo{Columns: cs, PKIsHandle: true}
			},
			key:     []string{"id"},
			columns: []string{"id", "s"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info := tc.build()
			info.ID, info.Name = 10, pmodel.NewCIStr("t")
			tbl, err := NewTable("db", info, 3)
			require.NoError(t, err)
			require.Equal(t, len(tc.key) > 0, tbl.Eligible())
			if tc.key == nil {
				tc.key = []string{}
			}
			require.Equal(t, tc.key, names(tbl, tbl.Key))
			if tc.columns != nil {
				all := make([]int, len(tbl.Columns))
				for i := range all {
					all[i] = i
				}
				require.Equal(t, tc.columns, names(tbl, all))
			}
			for i := range tbl.Columns {
				require.Equal(t, containsInt(tbl.Key, i), tbl.Flags[i].Has(HandleKey), "column %d", i)
			}
		})
	}
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestNewTableFlags(t *testing.T) {
	cs := cols("id!", "u", "m!", "s+")
	cs[0].AddFlag(mysql.PriKeyFlag | mysql.UnsignedFlag)
	info := &model.TableInfo{ID: 1, Name: pmodel.NewCIStr("t"), Columns: cs, PKIsHandle: true,
		Indices: []*model.IndexInfo{idx(1, "uk", cs, "u"), idx(2, "key", cs, "m")}}
	tbl, err := NewTable("db", info, 1)
	require.NoError(t, err)
	// Numbers have charset "binary" in TiDB; Binary marks binary strings
	// only.
	require.Equal(t, PrimaryKey|UniqueKey|HandleKey|Unsigned, tbl.Flags[0])
	require.Equal(t, UniqueKey|Nullable, tbl.Flags[1])
	require.Equal(t, MultipleKey, tbl.Flags[2])
	require.Equal(t, Generated|Nullable, tbl.Flags[3])
	text := types.NewFieldTypeWithCollation(mysql.TypeVarchar, "utf8mb4_bin", 10)
	blob := types.NewFieldTypeWithCollation(mysql.TypeBlob, "binary", 10)
	strs := &model.TableInfo{ID: 2, Name: pmodel.NewCIStr("s"), Columns: []*model.ColumnInfo{
		{ID: 1, Name: pmodel.NewCIStr("text"), FieldType: *text, State: model.StatePublic},
		{ID: 2, Name: pmodel.NewCIStr("blob"), Offset: 1, FieldType: *blob, State: model.StatePublic},
	}}
	st, err := NewTable("db", strs, 1)
	require.NoError(t, err)
	require.False(t, st.Flags[0].Has(Binary))
	require.True(t, st.Flags[1].Has(Binary))
	require.Equal(t, "db", tbl.Schema)
	require.Equal(t, "t", tbl.Name)
	require.Equal(t, int64(1), tbl.Version)
}

// A unique index over a visible and a virtual generated column is not a
// key candidate, but its visible column is still UniqueKey, so an update
// changing it is split.
func TestUniqueIndexWithVirtualColumnFlagsItsVisibleOnes(t *testing.T) {
	cs := cols("id!", "a!", "v*")
	cs[0].AddFlag(mysql.PriKeyFlag)
	cs[2].AddFlag(mysql.NotNullFlag)
	info := &model.TableInfo{ID: 1, Name: pmodel.NewCIStr("t"), Columns: cs, PKIsHandle: true,
		Indices: []*model.IndexInfo{idx(1, "uk", cs, "a", "v")}}
	tbl, err := NewTable("db", info, 1)
	require.NoError(t, err)
	require.Equal(t, []string{"id", "a"}, names(tbl, []int{0, 1}))
	require.True(t, tbl.Flags[1].Has(UniqueKey))
	require.Equal(t, []int{0}, tbl.Key)

	// Without the int handle, that index cannot stand in for a key.
	cs = cols("id!", "a!", "v*")
	info = &model.TableInfo{ID: 2, Name: pmodel.NewCIStr("u"), Columns: cs,
		Indices: []*model.IndexInfo{idx(1, "uk", cs, "a", "v")}}
	tbl, err = NewTable("db", info, 1)
	require.NoError(t, err)
	require.False(t, tbl.Eligible())
}

func TestNewTableNil(t *testing.T) {
	_, err := NewTable("db", nil, 1)
	require.Error(t, err)
}

func TestKeyImage(t *testing.T) {
	pre, post := []types.Datum{types.NewIntDatum(1)}, []types.Datum{types.NewIntDatum(2)}
	require.Equal(t, pre, (&Row{Op: Delete, PreCols: pre}).KeyImage())
	require.Equal(t, post, (&Row{Op: Update, PreCols: pre, Cols: post}).KeyImage())
	require.Equal(t, post, (&Row{Op: Insert, Cols: post}).KeyImage())
	require.Equal(t, "delete", Delete.String())
}
