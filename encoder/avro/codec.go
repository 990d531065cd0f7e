package avro

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/bits"
	"time"

	hamba "github.com/hamba/avro/v2"
	"github.com/pingcap/tidb/pkg/types"

	"github.com/tidestream/tidestream/encoder/row"
)

// magic is the first byte of a Confluent-framed key or value.
const magic = 0

// TableCodec encodes the rows of one table version. It is immutable after
// NewCodec and safe for concurrent use.
type TableCodec struct {
	table       *row.Table
	ext         bool
	key, value  []column
	keyJSON     string
	valueJSON   string
	keySchema   hamba.Schema
	valueSchema hamba.Schema
}

// NewCodec derives the key and value schemas of t and the encoder for its
// rows. It fails when the table has no handle key (it is not eligible for
// Avro), has a column type Avro cannot carry, or two columns share a field
// name after sanitising.
func NewCodec(cfg Config, t *row.Table) (*TableCodec, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if t == nil {
		return nil, fmt.Errorf("%w: table is nil", ErrSchema)
	}
	if !t.Eligible() {
		return nil, fmt.Errorf("%w: table %s.%s has no primary key or NOT NULL unique key, so no Avro key", ErrSchema, t.Schema, t.Name)
	}
	key, value, keyJSON, valueJSON, err := buildSchemas(&cfg, t)
	if err != nil {
		return nil, err
	}
	ks, err := parseSchema(keyJSON)
	if err != nil {
		return nil, fmt.Errorf("table %s.%s key: %w", t.Schema, t.Name, err)
	}
	vs, err := parseSchema(valueJSON)
	if err != nil {
		return nil, fmt.Errorf("table %s.%s value: %w", t.Schema, t.Name, err)
	}
	return &TableCodec{
		table: t, ext: cfg.EnableTiDBExtension,
		key: key, value: value, keyJSON: keyJSON, valueJSON: valueJSON,
		keySchema: ks, valueSchema: vs,
	}, nil
}

// Table is the table version the codec was built for.
func (c *TableCodec) Table() *row.Table { return c.table }

// KeySchema is the key schema's JSON text, to register under <topic>-key.
func (c *TableCodec) KeySchema() string { return c.keyJSON }

// ValueSchema is the value schema's JSON text, to register under
// <topic>-value.
func (c *TableCodec) ValueSchema() string { return c.valueJSON }

// KeyAvroSchema is the parsed key schema, for readers and compatibility
// checks.
func (c *TableCodec) KeyAvroSchema() hamba.Schema { return c.keySchema }

// ValueAvroSchema is the parsed value schema.
func (c *TableCodec) ValueAvroSchema() hamba.Schema { return c.valueSchema }

// AppendKey appends the Confluent-framed key of r (from its key image: the
// before image of a delete) with schema id id to buf. On error buf is
// returned as it was.
func (c *TableCodec) AppendKey(buf []byte, id uint32, r *row.Row) ([]byte, error) {
	img, err := c.image(r, r.KeyImage(), "key")
	if err != nil {
		return buf, err
	}
	out := appendHeader(buf, id)
	out, err = c.appendColumns(out, c.key, img)
	if err != nil {
		return buf, err
	}
	return out, nil
}

// AppendValue appends the Confluent-framed value of r with schema id id to
// buf. A delete has no value: buf is returned unchanged and the caller
// sends a nil Kafka value (a tombstone), which is what Confluent sinks take
// as a delete. On error buf is returned as it was.
func (c *TableCodec) AppendValue(buf []byte, id uint32, r *row.Row) ([]byte, error) {
	var op byte
	switch r.Op {
	case row.Delete:
		return buf, nil
	case row.Insert:
		op = 'c'
	case row.Update:
		op = 'u'
	default:
		return buf, fmt.Errorf("%w: table %s.%s: unknown row op %v", ErrValue, c.table.Schema, c.table.Name, r.Op)
	}
	img, err := c.image(r, r.Cols, "after")
	if err != nil {
		return buf, err
	}
	out := appendHeader(buf, id)
	out, err = c.appendColumns(out, c.value, img)
	if err != nil {
		return buf, err
	}
	if c.ext {
		out = append(out, 2, op) // string of length 1
		out = appendLong(out, int64(r.CommitTs))
		out = appendLong(out, int64(r.CommitTs>>18)) // TSO physical part: Unix ms
	}
	return out, nil
}

// image checks that a row image belongs to this codec's table version.
func (c *TableCodec) image(r *row.Row, img []types.Datum, which string) ([]types.Datum, error) {
	t := c.table
	if r.Table != nil && r.Table != t && (r.Table.ID != t.ID || r.Table.Version != t.Version) {
		return nil, fmt.Errorf("%w: row of table %s.%s (id %d, version %d) given to the codec of %s.%s (id %d, version %d)",
			ErrValue, r.Table.Schema, r.Table.Name, r.Table.ID, r.Table.Version, t.Schema, t.Name, t.ID, t.Version)
	}
	if len(img) != len(t.Columns) {
		return nil, fmt.Errorf("%w: table %s.%s: %s image has %d values for %d columns", ErrValue, t.Schema, t.Name, which, len(img), len(t.Columns))
	}
	return img, nil
}

func appendHeader(buf []byte, id uint32) []byte {
	return binary.BigEndian.AppendUint32(append(buf, magic), id)
}

// appendLong appends v as an Avro int/long: zig-zag, then varint.
func appendLong(b []byte, v int64) []byte {
	u := uint64(v<<1) ^ uint64(v>>63)
	for u >= 0x80 {
		b = append(b, byte(u)|0x80)
		u >>= 7
	}
	return append(b, byte(u))
}

func (c *TableCodec) appendColumns(buf []byte, cols []column, img []types.Datum) ([]byte, error) {
	var err error
	for i := range cols {
		col := &cols[i]
		d := &img[col.idx]
		if d.IsNull() {
			if !col.nullable {
				return buf, c.valueError(col, d, "NULL in a NOT NULL column")
			}
			if col.nullFirst {
				buf = append(buf, 0)
			} else {
				buf = append(buf, 2)
			}
			continue
		}
		if col.nullable {
			if col.nullFirst {
				buf = append(buf, 2)
			} else {
				buf = append(buf, 0)
			}
		}
		if buf, err = c.appendDatum(buf, col, d); err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// appendDatum writes one non-NULL datum as col's Avro type. It accepts the
// datum kinds TiDB's row decoders produce for the column type and rejects
// others rather than guess.
func (c *TableCodec) appendDatum(buf []byte, col *column, d *types.Datum) ([]byte, error) {
	switch col.kind {
	case kindInt:
		if col.unsigned {
			u, ok := datumUint(d)
			if !ok || u > col.uhi {
				return buf, c.valueError(col, d, "out of range")
			}
			return appendLong(buf, int64(u)), nil
		}
		n, ok := datumInt(d)
		if !ok || n < col.lo || n > col.hi {
			return buf, c.valueError(col, d, "out of range")
		}
		return appendLong(buf, n), nil
	case kindUint64Long, kindUint64String:
		u, ok := datumUint(d)
		if !ok {
			return buf, c.valueError(col, d, "not an unsigned integer")
		}
		if col.kind == kindUint64Long {
			return appendLong(buf, int64(u)), nil // wraps above 2^63-1, as TiCDC
		}
		var tmp [20]byte
		return appendBytes(buf, appendUintText(tmp[:0], u)), nil
	case kindFloat, kindDouble:
		if k := d.Kind(); k != types.KindFloat32 && k != types.KindFloat64 {
			return buf, c.valueError(col, d, "not a float")
		}
		f := d.GetFloat64()
		if col.kind == kindFloat {
			return binary.LittleEndian.AppendUint32(buf, math.Float32bits(float32(f))), nil
		}
		return binary.LittleEndian.AppendUint64(buf, math.Float64bits(f)), nil
	case kindDecimalBytes, kindDecimalString:
		return c.appendDecimal(buf, col, d)
	case kindText, kindBinary:
		if k := d.Kind(); k != types.KindString && k != types.KindBytes {
			return buf, c.valueError(col, d, "not a string")
		}
		return appendBytes(buf, d.GetBytes()), nil
	case kindBit:
		u, ok := datumBit(d)
		if !ok || col.bits < 64 && u>>col.bits != 0 {
			return buf, c.valueError(col, d, "out of range")
		}
		return appendBitBytes(appendLong(buf, int64((col.bits+7)/8)), u, col.bits), nil
	case kindEnum:
		return c.appendEnum(buf, col, d)
	case kindSet:
		return c.appendSet(buf, col, d)
	case kindJSON:
		if d.Kind() != types.KindMysqlJSON {
			return buf, c.valueError(col, d, "not JSON")
		}
		text, err := d.GetMysqlJSON().MarshalJSON()
		if err != nil {
			return buf, c.valueErrorErr(col, d, err)
		}
		return appendBytes(buf, text), nil
	case kindDate, kindDatetime, kindTimestamp:
		if d.Kind() != types.KindMysqlTime {
			return buf, c.valueError(col, d, "not a time")
		}
		t := d.GetMysqlTime()
		out, ok := appendTime(buf, t, col.kind == kindDate, col.fsp)
		if !ok {
			return buf, c.valueError(col, d, "year out of range")
		}
		return out, nil
	case kindTime:
		if d.Kind() != types.KindMysqlDuration {
			return buf, c.valueError(col, d, "not a TIME")
		}
		return appendDuration(buf, d.GetMysqlDuration().Duration, col.fsp), nil
	case kindVector:
		if d.Kind() != types.KindVectorFloat32 {
			return buf, c.valueError(col, d, "not a float32 vector")
		}
		return appendString(buf, d.GetVectorFloat32().String()), nil
	}
	return buf, c.valueError(col, d, "unknown column kind")
}

func datumInt(d *types.Datum) (int64, bool) {
	switch d.Kind() {
	case types.KindInt64:
		return d.GetInt64(), true
	case types.KindUint64:
		u := d.GetUint64()
		return int64(u), u <= math.MaxInt64
	}
	return 0, false
}

func datumUint(d *types.Datum) (uint64, bool) {
	switch d.Kind() {
	case types.KindUint64:
		return d.GetUint64(), true
	case types.KindInt64:
		n := d.GetInt64()
		return uint64(n), n >= 0
	}
	return 0, false
}

// datumBit reads a BIT value: TiDB decodes it as a BinaryLiteral of
// (n+7)/8 bytes, but an integer is accepted too.
func datumBit(d *types.Datum) (uint64, bool) {
	switch d.Kind() {
	case types.KindMysqlBit, types.KindBinaryLiteral:
		var u uint64
		for _, b := range d.GetBytes() {
			if u>>56 != 0 {
				return 0, false
			}
			u = u<<8 | uint64(b)
		}
		return u, true
	case types.KindUint64, types.KindInt64:
		return d.GetUint64(), true // the bits, whatever the sign
	}
	return 0, false
}

// appendBitBytes writes u big-endian in exactly (n+7)/8 bytes, the width
// connect.parameters.length announces (TiCDC's new architecture does the
// same; the classic one writes the minimal width, which is not reversible).
func appendBitBytes(b []byte, u uint64, n int) []byte {
	for i := (n+7)/8 - 1; i >= 0; i-- {
		b = append(b, byte(u>>(8*i)))
	}
	return b
}

func appendBytes(b, v []byte) []byte {
	return append(appendLong(b, int64(len(v))), v...)
}

func appendString(b []byte, v string) []byte {
	return append(appendLong(b, int64(len(v))), v...)
}

func appendUintText(b []byte, u uint64) []byte {
	var tmp [20]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = byte('0' + u%10)
		u /= 10
		if u == 0 {
			break
		}
	}
	return append(b, tmp[i:]...)
}

// appendDecimal writes a DECIMAL at the column's scale: precise mode as the
// minimal big-endian two's complement of value×10^scale, string mode as
// TiDB's text with exactly scale fraction digits.
func (c *TableCodec) appendDecimal(buf []byte, col *column, d *types.Datum) ([]byte, error) {
	if d.Kind() != types.KindMysqlDecimal {
		return buf, c.valueError(col, d, "not a decimal")
	}
	dec := *d.GetMysqlDecimal() // a value copy: Shift and Round must not touch the row
	frac := int(dec.GetDigitsFrac())
	if frac > col.scale {
		return buf, c.valueError(col, d, fmt.Sprintf("more than %d fraction digits", col.scale))
	}
	if col.kind == kindDecimalString {
		if frac < col.scale {
			var to types.MyDecimal
			if err := dec.Round(&to, col.scale, types.ModeHalfUp); err != nil {
				return buf, c.valueErrorErr(col, d, err)
			}
			dec = to
		}
		return appendBytes(buf, dec.ToString()), nil
	}
	shifted := dec
	if err := shifted.Shift(col.scale); err == nil {
		if n, err := shifted.ToInt(); err == nil {
			return appendDecimalInt(buf, n), nil
		}
	}
	// More than 18 digits: the rare slow path, in arbitrary precision (an
	// int64 power of ten overflows at scale 19, goavro's bug).
	return c.appendDecimalBig(buf, col, d, &dec, frac)
}

func appendDecimalInt(b []byte, v int64) []byte {
	// Drop leading bytes that are pure sign extension of the next one.
	n := 8
	for n > 1 {
		top, next := byte(v>>(8*(n-1))), byte(v>>(8*(n-2)))
		if top == 0 && next&0x80 == 0 || top == 0xff && next&0x80 != 0 {
			n--
			continue
		}
		break
	}
	b = appendLong(b, int64(n))
	for i := n - 1; i >= 0; i-- {
		b = append(b, byte(v>>(8*i)))
	}
	return b
}

func (c *TableCodec) appendDecimalBig(buf []byte, col *column, d *types.Datum, dec *types.MyDecimal, frac int) ([]byte, error) {
	text := dec.ToString()
	digits := make([]byte, 0, len(text)+col.scale)
	for _, ch := range text {
		if ch != '.' {
			digits = append(digits, ch)
		}
	}
	for i := frac; i < col.scale; i++ {
		digits = append(digits, '0')
	}
	var x big.Int
	if _, ok := x.SetString(string(digits), 10); !ok {
		return buf, c.valueError(col, d, "unparsable decimal text")
	}
	return appendBytes(buf, twosComplement(&x)), nil
}

// twosComplement is the minimal big-endian two's complement of x.
func twosComplement(x *big.Int) []byte {
	if x.Sign() >= 0 {
		b := x.Bytes()
		if len(b) == 0 || b[0]&0x80 != 0 {
			b = append([]byte{0}, b...)
		}
		return b
	}
	// For x < 0 the bytes are those of |x|-1 inverted, in one more bit
	// than |x|-1 needs.
	m := new(big.Int).Neg(x)
	m.Sub(m, big.NewInt(1))
	n := m.BitLen()/8 + 1
	b := make([]byte, n)
	m.FillBytes(b)
	for i := range b {
		b[i] = ^b[i]
	}
	return b
}

func (c *TableCodec) appendEnum(buf []byte, col *column, d *types.Datum) ([]byte, error) {
	var idx uint64
	switch d.Kind() {
	case types.KindMysqlEnum:
		e := d.GetMysqlEnum()
		if e.Value == 0 || e.Name != "" {
			// Index 0 is the empty value non-strict SQL modes store for an
			// invalid member; it is written as "" (TiCDC fails here).
			return appendString(buf, e.Name), nil
		}
		idx = e.Value
	case types.KindUint64, types.KindInt64:
		idx = d.GetUint64()
		if idx == 0 {
			return appendString(buf, ""), nil
		}
	default:
		return buf, c.valueError(col, d, "not an enum")
	}
	if idx > uint64(len(col.elems)) {
		return buf, c.valueError(col, d, "no such member")
	}
	return appendString(buf, col.elems[idx-1]), nil
}

func (c *TableCodec) appendSet(buf []byte, col *column, d *types.Datum) ([]byte, error) {
	var mask uint64
	switch d.Kind() {
	case types.KindMysqlSet:
		s := d.GetMysqlSet()
		if s.Value == 0 || s.Name != "" {
			return appendString(buf, s.Name), nil
		}
		mask = s.Value
	case types.KindUint64, types.KindInt64:
		mask = d.GetUint64()
	default:
		return buf, c.valueError(col, d, "not a set")
	}
	if len(col.elems) < 64 && mask>>len(col.elems) != 0 {
		return buf, c.valueError(col, d, "no such member")
	}
	// Members in definition order joined by ",", written without an
	// intermediate string: length first, then the names.
	n := bits.OnesCount64(mask)
	size := 0
	if n > 0 {
		size = n - 1
	}
	for i, e := range col.elems {
		if mask&(1<<i) != 0 {
			size += len(e)
		}
	}
	buf = appendLong(buf, int64(size))
	first := true
	for i, e := range col.elems {
		if mask&(1<<i) == 0 {
			continue
		}
		if !first {
			buf = append(buf, ',')
		}
		first = false
		buf = append(buf, e...)
	}
	return buf, nil
}

// appendTime writes "YYYY-MM-DD" or "YYYY-MM-DD HH:MM:SS[.f]" with fsp
// fraction digits, as TiDB's Time.String does for a value of that fsp.
func appendTime(b []byte, t types.Time, dateOnly bool, fsp int) ([]byte, bool) {
	y := t.Year()
	if y < 0 || y > 9999 {
		return b, false
	}
	n := 10
	if !dateOnly {
		n = 19
		if fsp > 0 {
			n += 1 + fsp
		}
	}
	b = appendLong(b, int64(n))
	b = append4(b, y)
	b = append(b, '-')
	b = append2(b, t.Month())
	b = append(b, '-')
	b = append2(b, t.Day())
	if dateOnly {
		return b, true
	}
	b = append(b, ' ')
	b = append2(b, t.Hour())
	b = append(b, ':')
	b = append2(b, t.Minute())
	b = append(b, ':')
	b = append2(b, t.Second())
	return appendFrac(b, t.Microsecond(), fsp), true
}

// appendDuration writes "[-]HH:MM:SS[.f]" (hours may exceed 24) like
// TiDB's Duration.String: the fraction is truncated to fsp digits.
func appendDuration(b []byte, d time.Duration, fsp int) []byte {
	neg := d < 0
	u := uint64(d)
	if neg {
		u = -u
	}
	us := u / 1000
	h, m, s, frac := us/3_600_000_000, us/60_000_000%60, us/1_000_000%60, int(us%1_000_000)
	hd := 2
	for x := h / 100; x > 0; x /= 10 {
		hd++
	}
	n := hd + 6
	if neg {
		n++
	}
	if fsp > 0 {
		n += 1 + fsp
	}
	b = appendLong(b, int64(n))
	if neg {
		b = append(b, '-')
	}
	if h < 10 {
		b = append(b, '0')
	}
	b = appendUintText(b, h)
	b = append(b, ':')
	b = append2(b, int(m))
	b = append(b, ':')
	b = append2(b, int(s))
	return appendFrac(b, frac, fsp)
}

func appendFrac(b []byte, us, fsp int) []byte {
	if fsp <= 0 {
		return b
	}
	b = append(b, '.')
	var tmp [6]byte
	for i := 5; i >= 0; i-- {
		tmp[i] = byte('0' + us%10)
		us /= 10
	}
	return append(b, tmp[:fsp]...)
}

func append2(b []byte, v int) []byte {
	return append(b, byte('0'+v/10%10), byte('0'+v%10))
}

func append4(b []byte, v int) []byte {
	return append(b, byte('0'+v/1000%10), byte('0'+v/100%10), byte('0'+v/10%10), byte('0'+v%10))
}

func (c *TableCodec) valueError(col *column, d *types.Datum, why string) error {
	return c.valueErrorErr(col, d, errors.New(why))
}

func (c *TableCodec) valueErrorErr(col *column, d *types.Datum, why error) error {
	return fmt.Errorf("%w: table %s.%s column %s (%s): %s: %w",
		ErrValue, c.table.Schema, c.table.Name, col.name, col.tidbType, describe(d), why)
}

// describe renders a datum for an error message, never failing.
func describe(d *types.Datum) string {
	if d.IsNull() {
		return "NULL"
	}
	if s, err := d.ToString(); err == nil {
		if len(s) > 64 {
			s = s[:64] + "…"
		}
		return fmt.Sprintf("value %q (datum kind %d)", s, d.Kind())
	}
	return fmt.Sprintf("value of datum kind %d", d.Kind())
}
