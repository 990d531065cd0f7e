package avro

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	hamba "github.com/hamba/avro/v2"
	"github.com/pingcap/tidb/pkg/meta/model"
	"github.com/pingcap/tidb/pkg/parser/charset"
	"github.com/pingcap/tidb/pkg/parser/mysql"

	"github.com/tidestream/tidestream/encoder/row"
)

// kind is how a column's datums are rendered; it fixes the Avro type.
type kind uint8

const (
	kindInt          kind = iota + 1 // Avro int or long from a ranged integer (both zig-zag varints)
	kindUint64Long                   // BIGINT UNSIGNED reinterpreted as int64
	kindUint64String                 // BIGINT UNSIGNED as text
	kindFloat
	kindDouble
	kindDecimalBytes
	kindDecimalString
	kindText
	kindBinary
	kindBit
	kindEnum
	kindSet
	kindJSON
	kindDate
	kindDatetime
	kindTimestamp
	kindTime
	kindVector
)

// The TiDB extension fields (spec §4.4), in schema order.
const (
	extOp           = "_tidb_op"
	extCommitTs     = "_tidb_commit_ts"
	extPhysicalTime = "_tidb_commit_physical_time"
)

// column is everything the encoder needs to know about one field, decided
// once per table version.
type column struct {
	idx       int    // index into the row image (row.Table.Columns)
	name      string // TiDB column name, for error messages
	field     string // Avro field name
	tidbType  string // connect.parameters.tidb_type
	avroType  string // Avro primitive type
	kind      kind
	nullable  bool
	nullFirst bool // union is ["null",T]; otherwise [T,"null"]
	unsigned  bool
	lo, hi    int64  // signed range (kindInt, !unsigned)
	uhi       uint64 // unsigned upper bound (kindInt, unsigned)
	fsp       int    // fraction digits of DATETIME/TIMESTAMP/TIME
	precision int    // DECIMAL
	scale     int    // DECIMAL
	bits      int    // BIT width
	elems     []string

	// fieldJSON is the field's JSON object as it appears in the schema.
	fieldJSON []byte
}

func newColumn(cfg *Config, idx int, c *model.ColumnInfo, f row.Flag) (column, error) {
	col := column{
		idx:      idx,
		name:     c.Name.O,
		field:    SanitizeName(c.Name.O),
		nullable: f.Has(row.Nullable),
		unsigned: mysql.HasUnsignedFlag(c.GetFlag()),
		elems:    c.GetElems(),
	}
	if col.field == "" {
		return col, fmt.Errorf("%w: column %q has an empty name", ErrSchema, c.Name.O)
	}
	// Binary vs text is decided by charset, not by BinaryFlag: a text column
	// with a _bin collation is still text (TiCDC issue #4454).
	binary := c.GetCharset() == charset.CharsetBin
	tp := c.GetType()
	switch tp {
	case mysql.TypeTiny, mysql.TypeShort, mysql.TypeInt24, mysql.TypeLong, mysql.TypeLonglong:
		col.tidbType, col.kind, col.avroType = "INT", kindInt, "int"
		var bits uint
		switch tp {
		case mysql.TypeTiny:
			bits = 8
		case mysql.TypeShort:
			bits = 16
		case mysql.TypeInt24:
			bits = 24
		case mysql.TypeLong:
			bits = 32
			if col.unsigned {
				col.avroType = "long" // uint32 does not fit Avro int
			}
		case mysql.TypeLonglong:
			bits = 64
			col.tidbType, col.avroType = "BIGINT", "long"
			if col.unsigned {
				col.kind = kindUint64Long
				if cfg.BigintUnsignedHandling == BigintUnsignedString {
					col.kind, col.avroType = kindUint64String, "string"
				}
			}
		}
		if col.unsigned {
			col.tidbType += " UNSIGNED"
			col.uhi = math.MaxUint64 >> (64 - bits)
		} else {
			col.hi = math.MaxInt64 >> (64 - bits)
			col.lo = -col.hi - 1
		}
	case mysql.TypeYear:
		// TiDB stores YEAR as an integer; 0 is the zero year.
		col.tidbType, col.kind, col.avroType = "YEAR", kindInt, "int"
		col.unsigned, col.lo, col.hi = false, 0, 2155
	case mysql.TypeFloat:
		col.tidbType, col.kind, col.avroType = "FLOAT", kindFloat, "float"
	case mysql.TypeDouble:
		col.tidbType, col.kind, col.avroType = "DOUBLE", kindDouble, "double"
	case mysql.TypeNewDecimal:
		col.tidbType = "DECIMAL"
		col.precision, col.scale = c.GetFlen(), c.GetDecimal()
		if col.precision <= 0 {
			col.precision = 10
		}
		if col.scale < 0 {
			col.scale = 0
		}
		col.kind, col.avroType = kindDecimalBytes, "bytes"
		if cfg.DecimalHandling == DecimalString {
			col.kind, col.avroType = kindDecimalString, "string"
		}
	case mysql.TypeVarchar, mysql.TypeString, mysql.TypeVarString,
		mysql.TypeTinyBlob, mysql.TypeBlob, mysql.TypeMediumBlob, mysql.TypeLongBlob:
		col.tidbType, col.kind, col.avroType = "TEXT", kindText, "string"
		if binary {
			col.tidbType, col.kind, col.avroType = "BLOB", kindBinary, "bytes"
		}
	case mysql.TypeBit:
		col.tidbType, col.kind, col.avroType = "BIT", kindBit, "bytes"
		col.bits = c.GetFlen()
		if col.bits <= 0 {
			col.bits = 1
		}
		if col.bits > 64 {
			return col, fmt.Errorf("%w: column %s: BIT(%d) is wider than 64", ErrSchema, c.Name.O, col.bits)
		}
	case mysql.TypeEnum:
		col.tidbType, col.kind, col.avroType = "ENUM", kindEnum, "string"
	case mysql.TypeSet:
		col.tidbType, col.kind, col.avroType = "SET", kindSet, "string"
		if len(col.elems) > 64 {
			return col, fmt.Errorf("%w: column %s: SET has %d members, more than 64", ErrSchema, c.Name.O, len(col.elems))
		}
	case mysql.TypeJSON:
		col.tidbType, col.kind, col.avroType = "JSON", kindJSON, "string"
	case mysql.TypeDate, mysql.TypeNewDate:
		col.tidbType, col.kind, col.avroType = "DATE", kindDate, "string"
	case mysql.TypeDatetime:
		col.tidbType, col.kind, col.avroType = "DATETIME", kindDatetime, "string"
	case mysql.TypeTimestamp:
		col.tidbType, col.kind, col.avroType = "TIMESTAMP", kindTimestamp, "string"
	case mysql.TypeDuration:
		col.tidbType, col.kind, col.avroType = "TIME", kindTime, "string"
	case mysql.TypeTiDBVectorFloat32:
		col.tidbType, col.kind, col.avroType = "TiDBVECTORFloat32", kindVector, "string"
	default:
		return col, fmt.Errorf("%w: column %s: unsupported type %s", ErrSchema, c.Name.O, c.FieldType.String())
	}
	switch col.kind {
	case kindDatetime, kindTimestamp, kindTime:
		col.fsp = c.GetDecimal()
		if col.fsp < 0 {
			col.fsp = 0 // unspecified fsp means 0 for these types
		}
		if col.fsp > 6 {
			return col, fmt.Errorf("%w: column %s: fsp %d out of range 0..6", ErrSchema, c.Name.O, col.fsp)
		}
	}
	if err := col.buildFieldJSON(c); err != nil {
		return col, err
	}
	return col, nil
}

// buildFieldJSON writes the field object with the key order TiCDC's Go map
// serialisation produces: default, name, type (spec §2.5).
func (col *column) buildFieldJSON(c *model.ColumnInfo) error {
	var block bytes.Buffer
	block.WriteString(`{"type":`)
	writeJSONString(&block, col.avroType)
	block.WriteString(`,"connect.parameters":{`)
	switch col.kind {
	case kindEnum, kindSet:
		block.WriteString(`"allowed":`)
		writeJSONString(&block, allowed(col.elems))
		block.WriteByte(',')
	case kindBit:
		block.WriteString(`"length":`)
		writeJSONString(&block, strconv.Itoa(col.bits))
		block.WriteByte(',')
	}
	block.WriteString(`"tidb_type":`)
	writeJSONString(&block, col.tidbType)
	block.WriteByte('}')
	if col.kind == kindDecimalBytes {
		fmt.Fprintf(&block, `,"logicalType":"decimal","precision":%d,"scale":%d`, col.precision, col.scale)
	}
	block.WriteByte('}')

	var def []byte // nil: no "default" key
	switch {
	case col.kind == kindDecimalBytes:
		// TiCDC never gives a precise decimal a non-null default (goavro
		// could not validate it): nullable ones default to null, NOT NULL
		// ones have none.
		col.nullFirst = true
		if col.nullable {
			def = []byte("null")
		}
	default:
		v, err := col.defaultJSON(c)
		if err != nil {
			return err
		}
		switch {
		case col.nullable && v == nil:
			col.nullFirst, def = true, []byte("null")
		default:
			// A union's default must match its first branch, so a
			// non-null default puts "null" second.
			def = v
		}
	}

	var f bytes.Buffer
	f.WriteByte('{')
	if def != nil {
		f.WriteString(`"default":`)
		f.Write(def)
		f.WriteByte(',')
	}
	f.WriteString(`"name":`)
	writeJSONString(&f, col.field)
	f.WriteString(`,"type":`)
	switch {
	case !col.nullable:
		f.Write(block.Bytes())
	case col.nullFirst:
		f.WriteString(`["null",`)
		f.Write(block.Bytes())
		f.WriteByte(']')
	default:
		f.WriteByte('[')
		f.Write(block.Bytes())
		f.WriteString(`,"null"]`)
	}
	f.WriteByte('}')
	col.fieldJSON = f.Bytes()
	return nil
}

// defaultJSON converts the column's current default (spec §2.4) to the
// JSON text of the Avro default, or nil when there is none.
func (col *column) defaultJSON(c *model.ColumnInfo) ([]byte, error) {
	raw := c.GetDefaultValue()
	if raw == nil {
		return nil, nil
	}
	var s string
	switch v := raw.(type) {
	case string:
		s = v
	case []byte:
		s = string(v)
	default:
		s = fmt.Sprint(v)
	}
	bad := func(err error) ([]byte, error) {
		return nil, fmt.Errorf("%w: column %s: default %q is not a valid %s: %w", ErrSchema, col.name, s, col.tidbType, err)
	}
	switch col.kind {
	case kindInt, kindUint64Long, kindUint64String:
		t := strings.TrimSpace(s)
		if col.unsigned {
			u, err := parseUintDefault(t)
			if err != nil {
				return bad(err)
			}
			if col.kind == kindInt && u > col.uhi {
				return bad(strconv.ErrRange)
			}
			switch col.kind {
			case kindUint64Long:
				return strconv.AppendInt(nil, int64(u), 10), nil
			case kindUint64String:
				return json.Marshal(strconv.FormatUint(u, 10))
			}
			return strconv.AppendUint(nil, u, 10), nil
		}
		n, err := parseIntDefault(t)
		if err != nil {
			return bad(err)
		}
		if n < col.lo || n > col.hi {
			return bad(strconv.ErrRange)
		}
		return strconv.AppendInt(nil, n, 10), nil
	case kindFloat, kindDouble:
		size := 64
		if col.kind == kindFloat {
			size = 32
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(s), size)
		if err != nil {
			return bad(err)
		}
		// A FLOAT default is parsed at float32 precision but written as a
		// float64 (1.1 -> 1.100000023841858), as TiCDC does.
		b, err := json.Marshal(f)
		if err != nil {
			return bad(err)
		}
		return b, nil
	case kindBit:
		// GetDefaultValue gives the bytes of the BIT literal; write them at
		// the column's fixed width, like values.
		var u uint64
		for i := 0; i < len(s); i++ {
			if u>>56 != 0 {
				return bad(strconv.ErrRange)
			}
			u = u<<8 | uint64(s[i])
		}
		if col.bits < 64 && u>>col.bits != 0 {
			return bad(strconv.ErrRange)
		}
		return json.Marshal(latin1(appendBitBytes(nil, u, col.bits)))
	case kindBinary:
		return json.Marshal(latin1([]byte(s)))
	}
	// Everything else is a string exactly as TiDB stores it, including
	// CURRENT_TIMESTAMP and TIMESTAMP literals (which TiDB keeps in UTC).
	return json.Marshal(s)
}

func parseIntDefault(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err == nil {
		return n, nil
	}
	// TiDB normalises integer defaults, but a default written as "1.0"
	// by an older version is still an integer.
	f, ferr := strconv.ParseFloat(s, 64)
	if ferr != nil || f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
		return 0, err
	}
	return int64(f), nil
}

func parseUintDefault(s string) (uint64, error) {
	u, err := strconv.ParseUint(s, 10, 64)
	if err == nil {
		return u, nil
	}
	f, ferr := strconv.ParseFloat(s, 64)
	if ferr != nil || f != math.Trunc(f) || f < 0 || f >= math.MaxUint64 {
		return 0, err
	}
	return uint64(f), nil
}

// latin1 spells bytes as an Avro bytes default: one code point U+0000..U+00FF
// per byte. (TiCDC writes base64 text instead, which a reader would take as
// the default's bytes.)
func latin1(b []byte) string {
	var sb strings.Builder
	sb.Grow(len(b) * 2)
	for _, c := range b {
		sb.WriteRune(rune(c))
	}
	return sb.String()
}

// writeJSONString writes s as encoding/json does, HTML escaping included,
// because that is what TiCDC's schema text contains.
func writeJSONString(b *bytes.Buffer, s string) {
	out, _ := json.Marshal(s) // a string always marshals
	b.Write(out)
}

// schemas builds the key and value columns and schema texts of t.
func buildSchemas(cfg *Config, t *row.Table) (key, value []column, keyJSON, valueJSON string, err error) {
	if len(t.Flags) != len(t.Columns) {
		return nil, nil, "", "", fmt.Errorf("%w: table %s.%s: %d flags for %d columns", ErrSchema, t.Schema, t.Name, len(t.Flags), len(t.Columns))
	}
	name := SanitizeName(t.Name)
	if name == "" {
		return nil, nil, "", "", fmt.Errorf("%w: table %s.%s has an empty name", ErrSchema, t.Schema, t.Name)
	}
	owner := make(map[string]string, len(t.Columns)+3) // field name -> column that took it
	if cfg.EnableTiDBExtension {
		for _, f := range []string{extOp, extCommitTs, extPhysicalTime} {
			owner[f] = "the TiDB extension field " + f
		}
	}
	value = make([]column, len(t.Columns))
	for i, c := range t.Columns {
		col, err := newColumn(cfg, i, c, t.Flags[i])
		if err != nil {
			return nil, nil, "", "", fmt.Errorf("table %s.%s: %w", t.Schema, t.Name, err)
		}
		if prev, ok := owner[col.field]; ok {
			// TiCDC would emit a schema with a duplicate field, which the
			// registry or every reader rejects later and less clearly.
			return nil, nil, "", "", fmt.Errorf("%w: table %s.%s: column %q and %s both become Avro field %q",
				ErrSchema, t.Schema, t.Name, c.Name.O, quoteOwner(prev), col.field)
		}
		owner[col.field] = c.Name.O
		value[i] = col
	}
	key = make([]column, 0, len(t.Key))
	for _, i := range t.Key {
		if i < 0 || i >= len(value) {
			return nil, nil, "", "", fmt.Errorf("%w: table %s.%s: key column index %d out of range", ErrSchema, t.Schema, t.Name, i)
		}
		key = append(key, value[i])
	}
	ns := namespace(cfg.Namespace, t.Schema)
	keyJSON = recordJSON(name, ns, key, false)
	valueJSON = recordJSON(name, ns, value, cfg.EnableTiDBExtension)
	return key, value, keyJSON, valueJSON, nil
}

func quoteOwner(s string) string {
	if strings.HasPrefix(s, "the TiDB extension field ") {
		return s
	}
	return strconv.Quote(s)
}

func recordJSON(name, ns string, cols []column, ext bool) string {
	var b bytes.Buffer
	b.WriteString(`{"type":"record","name":`)
	writeJSONString(&b, name)
	b.WriteString(`,"namespace":`)
	writeJSONString(&b, ns)
	b.WriteString(`,"fields":[`)
	for i := range cols {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(cols[i].fieldJSON)
	}
	if ext {
		if len(cols) > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"default":"","name":"` + extOp + `","type":"string"},`)
		b.WriteString(`{"default":0,"name":"` + extCommitTs + `","type":"long"},`)
		b.WriteString(`{"default":0,"name":"` + extPhysicalTime + `","type":"long"}`)
	}
	b.WriteString(`]}`)
	return b.String()
}

// parseSchema validates text with hamba/avro, in a cache of its own so that
// no two tables' record names meet in a shared registry of named types.
func parseSchema(text string) (hamba.Schema, error) {
	s, err := hamba.ParseWithCache(text, "", &hamba.SchemaCache{})
	if err != nil {
		return nil, fmt.Errorf("%w: generated schema is invalid: %w", ErrSchema, err)
	}
	return s, nil
}
