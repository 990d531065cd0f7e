// Package row is the encoder's shape of a table version and of one row
// change: what mount produces from raw KV and what avro, dispatch and the
// registry consume. Values stay TiDB datums (pkg/types), decoded by TiDB's
// own codecs; this package only fixes which columns a change carries, in
// which order, and which of them form the Kafka key.
package row

import (
	"errors"
	"fmt"
	"slices"

	"github.com/pingcap/tidb/pkg/meta/model"
	"github.com/pingcap/tidb/pkg/parser/mysql"
	"github.com/pingcap/tidb/pkg/types"
)

// ErrGone is what a schema lookup wraps when a physical id belonged to a
// table or partition that was dropped, truncated or replaced by the asked
// ts. Its rows come from a span not torn down yet, and their data is gone
// upstream too: they are dropped, not failed on (spec §3.3 step 4). It
// lives here so that the history (encoder/schema) and its reader
// (encoder/mount) share it without importing each other.
var ErrGone = errors.New("table dropped or truncated")

// keyspacePrefixLen is the length of an API-V2 keyspace prefix: 'x' plus a
// 3-byte keyspace id. TiDB keys never start with 'x' otherwise.
const keyspacePrefixLen = 4

// StripKeyspace removes an API-V2 keyspace prefix from a row key, so that
// tablecodec sees a plain 't…' key (spec §6.3 item 7). Mount and the DDL
// job decoder both read row keys.
func StripKeyspace(key []byte) []byte {
	if len(key) > keyspacePrefixLen && key[0] == 'x' {
		return key[keyspacePrefixLen:]
	}
	return key
}

// Table is one version of a table's schema as the encoder uses it. It is
// immutable once built and shared by every row decoded with it.
type Table struct {
	// Schema is the database name, Name the logical table name (partitions
	// share their table's), both as TiDB spells them.
	Schema, Name string
	// ID is the logical table id; a partition's rows carry their physical
	// id in Row.PhysicalID.
	ID int64
	// Version identifies this schema version of the table (the schema
	// version of the DDL that produced Info); caches of derived schemas and
	// registry ids are keyed by (ID, Version).
	Version int64
	// Info is TiDB's table info at that version.
	Info *model.TableInfo
	// Columns are the columns a change carries, CDC-visible ones only
	// (public, not hidden, not virtual generated), in table column order.
	Columns []*model.ColumnInfo
	// Flags[i] describes Columns[i].
	Flags []Flag
	// Key holds the indexes into Columns of the handle key (the Kafka key),
	// in table column order; empty when the table has none, which makes it
	// ineligible (see Eligible).
	Key []int
}

// Flag describes a column as TiCDC exposes it to encoders: every column of
// a primary key or unique index is marked, not only the first.
type Flag uint16

// Column flags.
const (
	PrimaryKey  Flag = 1 << iota // part of the primary key (clustered or not)
	UniqueKey                    // part of some unique index, nullable ones included
	HandleKey                    // part of the handle key (Table.Key)
	MultipleKey                  // part of some non-unique index
	Nullable                     // may be NULL
	Unsigned                     // unsigned numeric
	Binary                       // binary string type: bytes, not text
	Generated                    // stored generated column
)

// Has reports whether f carries all of g.
func (f Flag) Has(g Flag) bool { return f&g == g }

// NewTable derives the change shape of info, a table of database schema at
// schema version version.
//
// The handle key follows TiCDC's classic rule, which its documentation
// states ("the key contains only primary key columns or unique index
// columns"): the primary key's columns (int handle, clustered or not);
// otherwise, among the public unique indexes whose columns are all NOT NULL
// and none a virtual generated column, the one with the fewest columns,
// ties to the lowest index id. No such index leaves Key empty.
func NewTable(schema string, info *model.TableInfo, version int64) (*Table, error) {
	if info == nil {
		return nil, fmt.Errorf("row: table info of %s is nil", schema)
	}
	t := &Table{Schema: schema, Name: info.Name.O, ID: info.ID, Version: version, Info: info}
	pos := make(map[int64]int, len(info.Columns)) // column id -> index in Columns
	for _, c := range info.Columns {
		if !Visible(c) {
			continue
		}
		pos[c.ID] = len(t.Columns)
		t.Columns = append(t.Columns, c)
	}
	// TableInfo.Columns is normally in offset order already; after a
	// MODIFY ... AFTER it is too, but sort defensively: the order is the
	// schema's field order.
	slices.SortStableFunc(t.Columns, func(a, b *model.ColumnInfo) int { return a.Offset - b.Offset })
	for i, c := range t.Columns {
		pos[c.ID] = i
	}
	t.Flags = make([]Flag, len(t.Columns))
	for i, c := range t.Columns {
		var f Flag
		flag := c.GetFlag()
		if !mysql.HasNotNullFlag(flag) {
			f |= Nullable
		}
		if mysql.HasUnsignedFlag(flag) {
			f |= Unsigned
		}
		// A binary string (BINARY, VARBINARY, BLOB): the binary charset
		// decides, not MySQL's BINARY flag, which a _bin collation sets on
		// text columns too (TiCDC's bug 4454), and not for numbers, whose
		// charset is binary too.
		if types.IsBinaryStr(&c.FieldType) {
			f |= Binary
		}
		if c.IsGenerated() {
			f |= Generated
		}
		if info.PKIsHandle && mysql.HasPriKeyFlag(flag) {
			f |= PrimaryKey | UniqueKey
		}
		t.Flags[i] = f
	}
	byName := make(map[string]int, len(t.Columns))
	for i, c := range t.Columns {
		byName[c.Name.L] = i
	}
	var pk []int
	pkBroken := false
	var best *model.IndexInfo
	var bestCols []int
	for _, idx := range info.Indices {
		if idx.State != model.StatePublic {
			continue
		}
		cols, complete := indexColumns(idx, byName)
		for _, i := range cols {
			switch {
			case idx.Primary:
				t.Flags[i] |= PrimaryKey | UniqueKey
			case idx.Unique:
				t.Flags[i] |= UniqueKey
			default:
				t.Flags[i] |= MultipleKey
			}
		}
		// An index with a column the change does not carry (a virtual
		// generated or hidden column) cannot be the key; its carried
		// columns are still flagged above, so changing them splits an
		// update. A primary key like that makes the table keyless rather
		// than let a unique key quietly stand in for it.
		if idx.Primary {
			pk, pkBroken = cols, !complete
			continue
		}
		if !complete || !idx.Unique || !allNotNull(t, cols) {
			continue
		}
		if best == nil || len(cols) < len(bestCols) || (len(cols) == len(bestCols) && idx.ID < best.ID) {
			best, bestCols = idx, cols
		}
	}
	switch {
	case pkBroken:
	case info.PKIsHandle:
		if c := info.GetPkColInfo(); c != nil {
			if i, ok := pos[c.ID]; ok {
				t.Key = []int{i}
			}
		}
	case pk != nil:
		t.Key = pk
	case best != nil:
		t.Key = bestCols
	}
	t.Key = slices.Clone(t.Key)
	slices.Sort(t.Key) // table column order, not index column order
	for _, i := range t.Key {
		t.Flags[i] |= HandleKey
	}
	return t, nil
}

// Visible reports whether a column's values reach the downstream: public,
// not hidden (expression-index columns) and not virtual generated.
func Visible(c *model.ColumnInfo) bool {
	return c.State == model.StatePublic && !c.Hidden && !c.IsVirtualGenerated()
}

// indexColumns returns the indexes into Table.Columns of idx's carried
// columns, and whether it carries all of them.
func indexColumns(idx *model.IndexInfo, byName map[string]int) ([]int, bool) {
	cols := make([]int, 0, len(idx.Columns))
	complete := true
	for _, ic := range idx.Columns {
		i, ok := byName[ic.Name.L]
		if !ok {
			complete = false
			continue
		}
		cols = append(cols, i)
	}
	return cols, complete
}

func allNotNull(t *Table, cols []int) bool {
	for _, i := range cols {
		if t.Flags[i].Has(Nullable) {
			return false
		}
	}
	return true
}

// Eligible reports whether the table can be replicated as Avro: it needs a
// handle key (the record key).
func (t *Table) Eligible() bool { return len(t.Key) > 0 }

// Op is the kind of a row change.
type Op uint8

// Row change kinds.
const (
	Insert Op = iota + 1
	Update
	Delete
)

func (o Op) String() string {
	switch o {
	case Insert:
		return "insert"
	case Update:
		return "update"
	case Delete:
		return "delete"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Row is one row change of one table.
type Row struct {
	Table *Table
	// PhysicalID is the id in the row key: the table's, or a partition's.
	PhysicalID int64
	StartTs    uint64
	CommitTs   uint64
	Op         Op
	// Cols is the after image and PreCols the before image, each aligned
	// with Table.Columns; Cols is nil for a delete, PreCols for an insert.
	Cols    []types.Datum
	PreCols []types.Datum
}

// KeyImage is the image a change's key and partition come from: the after
// image, or the before image for a delete.
func (r *Row) KeyImage() []types.Datum {
	if r.Op == Delete {
		return r.PreCols
	}
	return r.Cols
}
