package mount

import (
	"fmt"
	"time"

	"github.com/pingcap/tidb/pkg/kv"
	"github.com/pingcap/tidb/pkg/meta/model"
	"github.com/pingcap/tidb/pkg/parser/charset"
	"github.com/pingcap/tidb/pkg/parser/mysql"
	"github.com/pingcap/tidb/pkg/tablecodec"
	"github.com/pingcap/tidb/pkg/types"
	"github.com/pingcap/tidb/pkg/util/codec"
	"github.com/pingcap/tidb/pkg/util/rowcodec"
	"github.com/tidestream/tidestream/encoder/row"
)

// handleCol is a column whose value the row key can supply.
type handleCol struct {
	pos int // index into Table.Columns
	ft  *types.FieldType
	// idx is the column's position in a common handle; unused for an int
	// handle.
	idx int
}

// tableDecoder decodes images of one table version. It holds TiDB decoders
// that keep per-call state, so it belongs to one Mounter.
type tableDecoder struct {
	t   *row.Table
	loc *time.Location

	v2  *rowcodec.DatumMapDecoder
	fts map[int64]*types.FieldType // for v1 rows
	// scratch receives decoded datums by column id; reused across calls.
	scratch map[int64]types.Datum

	intHandle *handleCol // pk_is_handle: the PK column
	common    []handleCol
	// commonLen is the number of columns in a clustered PK, all of which a
	// common handle must carry, including prefix ones we never read.
	commonLen int

	// defaults[i] fills Columns[i] when a stored row lacks it; defErr[i]
	// is why that default could not be built, reported only if needed.
	defaults []types.Datum
	defErr   []error

	// keyCols are the columns whose change splits an update: every column
	// of the primary key or of any unique index, and the handle key.
	keyCols []int
}

func (m *Mounter) decoder(t *row.Table) *tableDecoder {
	// A Tables that rebuilds row.Table per call for the same version
	// still hits the cache as long as it hands out the same TableInfo.
	if d, ok := m.decoders[t.ID]; ok && (d.t == t || d.t.Version == t.Version && d.t.Info == t.Info) {
		return d
	}
	d := newTableDecoder(t, m.loc)
	m.decoders[t.ID] = d
	return d
}

func newTableDecoder(t *row.Table, loc *time.Location) *tableDecoder {
	n := len(t.Columns)
	d := &tableDecoder{
		t:        t,
		loc:      loc,
		fts:      make(map[int64]*types.FieldType, n),
		scratch:  make(map[int64]types.Datum, n),
		defaults: make([]types.Datum, n),
		defErr:   make([]error, n),
	}
	pos := make(map[int64]int, n) // column id -> index in Table.Columns
	cols := make([]rowcodec.ColInfo, n)
	info := t.Info
	for i, c := range t.Columns {
		pos[c.ID] = i
		d.fts[c.ID] = &c.FieldType
		isPK := info.PKIsHandle && mysql.HasPriKeyFlag(c.GetFlag())
		// The decoders only read the field type, so it is shared with the
		// table rather than cloned per decoder.
		cols[i] = rowcodec.ColInfo{ID: c.ID, IsPKHandle: isPK, Ft: &c.FieldType}
		if isPK {
			d.intHandle = &handleCol{pos: i, ft: &c.FieldType}
		}
		d.defaults[i], d.defErr[i] = defaultDatum(c, loc)
		if t.Flags[i]&(row.PrimaryKey|row.UniqueKey|row.HandleKey) != 0 {
			d.keyCols = append(d.keyCols, i)
		}
	}
	d.v2 = rowcodec.NewDatumMapDecoder(cols, loc)
	if info.IsCommonHandle {
		if pk := info.GetPrimaryKey(); pk != nil {
			d.commonLen = len(pk.Columns)
			for k, ic := range pk.Columns {
				if ic.Length != types.UnspecifiedLength {
					// The key holds only a prefix; TiDB always stores the
					// full value in the row.
					continue
				}
				if ic.Offset < 0 || ic.Offset >= len(info.Columns) {
					continue
				}
				if i, ok := pos[info.Columns[ic.Offset].ID]; ok {
					d.common = append(d.common, handleCol{pos: i, ft: d.fts[info.Columns[ic.Offset].ID], idx: k})
				}
			}
		}
	}
	return d
}

// decode fills cols (aligned with Table.Columns) from one stored row image
// and the row's handle.
func (d *tableDecoder) decode(data []byte, h kv.Handle, cols []types.Datum) (err error) {
	defer func() {
		// TiDB's row decoders index into the value without bounds checks
		// (rowcodec.row.fromBytes, JSON type byte); corrupt bytes must
		// surface as this row's error, not take the process down.
		if p := recover(); p != nil {
			err = fmt.Errorf("corrupt row value: %v", p)
		}
	}()
	clear(d.scratch)
	if rowcodec.IsNewFormat(data) {
		if _, err := d.v2.DecodeToDatumMap(data, d.scratch); err != nil {
			return fmt.Errorf("row format v2: %w", err)
		}
	} else {
		// v1 rows are a flat (column id, value) list; ids the table no
		// longer has (dropped columns) are skipped by the decoder.
		if _, err := tablecodec.DecodeRowWithMap(data, d.fts, d.loc, d.scratch); err != nil {
			return fmt.Errorf("row format v1: %w", err)
		}
	}
	if err := d.fillFromHandle(h); err != nil {
		return err
	}
	for i, c := range d.t.Columns {
		if v, ok := d.scratch[c.ID]; ok {
			cols[i] = v
			continue
		}
		if d.defErr[i] != nil {
			return fmt.Errorf("column %s missing from row: %w", c.Name.O, d.defErr[i])
		}
		cols[i] = d.defaults[i]
	}
	return nil
}

// fillFromHandle takes key columns the value lacks from the row key. The
// value wins whenever it has the column: with new collation a clustered
// key holds sort keys, and TiDB then stores the real string in the value.
func (d *tableDecoder) fillFromHandle(h kv.Handle) error {
	switch {
	case d.intHandle != nil:
		hc := d.intHandle
		id := d.t.Columns[hc.pos].ID
		if _, ok := d.scratch[id]; ok {
			return nil
		}
		if !h.IsInt() {
			return fmt.Errorf("table has an integer handle but key has a common handle")
		}
		if mysql.HasUnsignedFlag(hc.ft.GetFlag()) {
			d.scratch[id] = types.NewUintDatum(uint64(h.IntValue()))
		} else {
			d.scratch[id] = types.NewIntDatum(h.IntValue())
		}
	case d.commonLen > 0:
		if h.IsInt() {
			return fmt.Errorf("table has a clustered primary key but key has an integer handle")
		}
		if h.NumCols() != d.commonLen {
			return fmt.Errorf("common handle has %d columns, primary key %d", h.NumCols(), d.commonLen)
		}
		for _, hc := range d.common {
			id := d.t.Columns[hc.pos].ID
			if _, ok := d.scratch[id]; ok {
				continue
			}
			_, v, err := codec.DecodeOne(h.EncodedCol(hc.idx))
			if err != nil {
				return fmt.Errorf("column %s from handle: %w", d.t.Columns[hc.pos].Name.O, err)
			}
			if v, err = tablecodec.Unflatten(v, hc.ft, d.loc); err != nil {
				return fmt.Errorf("column %s from handle: %w", d.t.Columns[hc.pos].Name.O, err)
			}
			d.scratch[id] = v
		}
	}
	return nil
}

// keyChanged reports whether an update changed a column of the primary key
// or of any unique index. Both images come from the same table version, so
// equal values are equal datums; NULL to a value counts as a change.
func (d *tableDecoder) keyChanged(pre, post []types.Datum) bool {
	for _, i := range d.keyCols {
		if !pre[i].Equals(&post[i]) {
			return true
		}
	}
	return false
}

// defaultDatum is the value of column c in a row stored without it (spec
// §2.6): its origin default (the default when the column was added, not
// today's), else NULL when nullable, else the type's zero value.
func defaultDatum(c *model.ColumnInfo, loc *time.Location) (types.Datum, error) {
	if v := c.GetOriginDefaultValue(); v != nil {
		src := types.NewDatum(v)
		d, err := src.ConvertTo(types.DefaultStmtNoWarningContext, &c.FieldType)
		if err != nil {
			return types.Datum{}, fmt.Errorf("origin default %v of column %s: %w", v, c.Name.O, err)
		}
		// Since column version 1 a TIMESTAMP default is kept in UTC; before,
		// in the creating server's zone, which TiDB reads as wall time.
		if c.GetType() == mysql.TypeTimestamp && c.Version >= model.ColumnInfoVersion1 && !d.IsNull() {
			t := d.GetMysqlTime()
			if err := t.ConvertTimeZone(time.UTC, loc); err != nil {
				return types.Datum{}, fmt.Errorf("origin default %v of column %s: %w", v, c.Name.O, err)
			}
			d.SetMysqlTime(t)
		}
		return d, nil
	}
	if !mysql.HasNotNullFlag(c.GetFlag()) {
		return types.Datum{}, nil // NULL
	}
	return zeroDatum(c), nil
}

// zeroDatum is what TiDB reads for a NOT NULL column without any default:
// the type's zero value, except that ENUM takes its first element (as
// TiCDC does) and a binary CHAR its full width of zero bytes.
func zeroDatum(c *model.ColumnInfo) types.Datum {
	var d types.Datum
	switch c.GetType() {
	case mysql.TypeTiny, mysql.TypeShort, mysql.TypeInt24, mysql.TypeLong, mysql.TypeLonglong:
		if mysql.HasUnsignedFlag(c.GetFlag()) {
			d.SetUint64(0)
		} else {
			d.SetInt64(0)
		}
	case mysql.TypeYear:
		d.SetInt64(0)
	case mysql.TypeFloat:
		d.SetFloat32(0)
	case mysql.TypeDouble:
		d.SetFloat64(0)
	case mysql.TypeNewDecimal:
		d.SetMysqlDecimal(new(types.MyDecimal))
		d.SetLength(c.GetFlen())
		d.SetFrac(c.GetDecimal())
	case mysql.TypeString:
		if c.GetFlen() > 0 && c.GetCharset() == charset.CharsetBin {
			d.SetBytes(make([]byte, c.GetFlen()))
		} else {
			d.SetString("", c.GetCollate())
		}
	case mysql.TypeVarchar, mysql.TypeVarString, mysql.TypeBlob, mysql.TypeTinyBlob, mysql.TypeMediumBlob, mysql.TypeLongBlob:
		d.SetString("", c.GetCollate())
	case mysql.TypeDuration:
		d.SetMysqlDuration(types.ZeroDuration)
	case mysql.TypeDate:
		d.SetMysqlTime(types.ZeroDate)
	case mysql.TypeDatetime:
		d.SetMysqlTime(types.ZeroDatetime)
	case mysql.TypeTimestamp:
		d.SetMysqlTime(types.ZeroTimestamp)
	case mysql.TypeBit:
		d.SetMysqlBit(types.ZeroBinaryLiteral)
	case mysql.TypeEnum:
		e := types.Enum{}
		if elems := c.GetElems(); len(elems) > 0 {
			e = types.Enum{Name: elems[0], Value: 1}
		}
		d.SetMysqlEnum(e, c.GetCollate())
	case mysql.TypeSet:
		d.SetMysqlSet(types.Set{}, c.GetCollate())
	case mysql.TypeJSON:
		d.SetMysqlJSON(types.CreateBinaryJSON(nil))
	case mysql.TypeTiDBVectorFloat32:
		d.SetVectorFloat32(types.ZeroVectorFloat32)
	}
	return d
}
