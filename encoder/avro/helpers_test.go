package avro

import (
	"testing"

	"github.com/pingcap/tidb/pkg/meta/model"
	pmodel "github.com/pingcap/tidb/pkg/parser/model"
	"github.com/pingcap/tidb/pkg/parser/mysql"
	"github.com/stretchr/testify/require"

	"github.com/tidestream/tidestream/encoder/row"
)

// col describes one column of a hand-made table. The zero charset means
// utf8mb4 for text types and binary for everything else, as TiDB sets it.
type col struct {
	name     string
	tp       byte
	flen     int
	dec      int
	notNull  bool
	unsigned bool
	binary   bool // charset binary
	elems    []string
	def      any // DefaultValue (nil: no default)
	defBit   []byte
	pk       bool // part of the primary key
}

type tableSpec struct {
	db, name string
	cols     []col
	// pkOrder lists PK columns in index order when it differs from table
	// order; empty means the pk-flagged columns in table order.
	pkOrder []string
	// intHandle makes a single int PK the row handle (clustered int PK).
	intHandle bool
	// uniques are unique indexes (column names), ids in order 1, 2, ...
	uniques [][]string
}

func (s tableSpec) build(t testing.TB) *row.Table {
	t.Helper()
	info := &model.TableInfo{ID: 100, Name: pmodel.NewCIStr(s.name), State: model.StatePublic, PKIsHandle: s.intHandle}
	var pk []string
	for i, c := range s.cols {
		ci := &model.ColumnInfo{ID: int64(i + 1), Name: pmodel.NewCIStr(c.name), Offset: i, State: model.StatePublic}
		ci.SetType(c.tp)
		flen, dec := mysql.GetDefaultFieldLengthAndDecimal(c.tp)
		if c.flen != 0 {
			flen = c.flen
		}
		if c.dec != 0 {
			dec = c.dec
		}
		if c.dec < 0 {
			dec = 0
		}
		ci.SetFlen(flen)
		ci.SetDecimal(dec)
		var flag uint
		if c.notNull || c.pk {
			flag |= mysql.NotNullFlag
		}
		if c.unsigned {
			flag |= mysql.UnsignedFlag
		}
		if c.pk {
			flag |= mysql.PriKeyFlag
			pk = append(pk, c.name)
		}
		switch c.tp {
		case mysql.TypeVarchar, mysql.TypeString, mysql.TypeVarString, mysql.TypeBlob, mysql.TypeTinyBlob,
			mysql.TypeMediumBlob, mysql.TypeLongBlob, mysql.TypeEnum, mysql.TypeSet:
			if c.binary {
				ci.SetCharset("binary")
				ci.SetCollate("binary")
				flag |= mysql.BinaryFlag
			} else {
				ci.SetCharset("utf8mb4")
				ci.SetCollate("utf8mb4_bin")
			}
		default:
			ci.SetCharset("binary")
			ci.SetCollate("binary")
			flag |= mysql.BinaryFlag
		}
		ci.SetFlag(flag)
		ci.SetElems(c.elems)
		ci.DefaultValue = c.def
		ci.DefaultValueBit = c.defBit
		info.Columns = append(info.Columns, ci)
	}
	if len(s.pkOrder) > 0 {
		pk = s.pkOrder
	}
	if len(pk) > 0 && !s.intHandle {
		info.Indices = append(info.Indices, index(info, 1, "PRIMARY", pk, true, true))
	}
	for i, u := range s.uniques {
		info.Indices = append(info.Indices, index(info, int64(i+2), "uk"+string(rune('a'+i)), u, false, true))
	}
	tbl, err := row.NewTable(s.db, info, 7)
	require.NoError(t, err)
	return tbl
}

func index(info *model.TableInfo, id int64, name string, cols []string, primary, unique bool) *model.IndexInfo {
	idx := &model.IndexInfo{ID: id, Name: pmodel.NewCIStr(name), Primary: primary, Unique: unique, State: model.StatePublic}
	for _, c := range cols {
		ci := model.FindColumnInfo(info.Columns, c)
		idx.Columns = append(idx.Columns, &model.IndexColumn{Name: ci.Name, Offset: ci.Offset, Length: -1})
	}
	return idx
}
