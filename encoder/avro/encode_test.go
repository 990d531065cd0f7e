package avro

import (
	"encoding/hex"
	"math"
	"math/big"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	hamba "github.com/hamba/avro/v2"
	"github.com/pingcap/tidb/pkg/parser/mysql"
	"github.com/pingcap/tidb/pkg/types"
	"github.com/stretchr/testify/require"

	"github.com/tidestream/tidestream/encoder/row"
)

// hambaAPI decodes and re-encodes in tests; frozen here so no test touches
// hamba's package-level default config.
var hambaAPI = hamba.Config{}.Freeze()

func dec(s string) types.Datum {
	d := new(types.MyDecimal)
	if err := d.FromString([]byte(s)); err != nil {
		panic(err)
	}
	return types.NewDecimalDatum(d)
}

func tm(s string, tp byte, fsp int) types.Datum {
	t, err := types.ParseTime(types.DefaultStmtNoWarningContext, s, tp, fsp)
	if err != nil {
		panic(err)
	}
	return types.NewTimeDatum(t)
}

func dur(s string, fsp int) types.Datum {
	d, _, err := types.ParseDuration(types.DefaultStmtNoWarningContext, s, fsp)
	if err != nil {
		panic(err)
	}
	return types.NewDurationDatum(d)
}

func jsonDatum(s string) types.Datum {
	j, err := types.ParseBinaryJSONFromString(s)
	if err != nil {
		panic(err)
	}
	return types.NewJSONDatum(j)
}

func bit(v uint64, n int) types.Datum {
	return types.NewMysqlBitDatum(types.NewBinaryLiteralFromUint(v, (n+7)/8))
}

// nullRow is an insert of table t with every column NULL except those set.
func nullRow(t *row.Table, set map[string]types.Datum) *row.Row {
	cols := make([]types.Datum, len(t.Columns))
	for i, c := range t.Columns {
		if d, ok := set[c.Name.O]; ok {
			cols[i] = d
		}
	}
	return &row.Row{Table: t, Op: row.Insert, CommitTs: 449218466452733953, Cols: cols}
}

// roundTrip decodes a framed record with hamba, checks the header and that
// hamba re-encodes the decoded record to the very same bytes, and returns
// the decoded record.
func roundTrip(t testing.TB, framed []byte, id uint32, schema hamba.Schema) map[string]any {
	t.Helper()
	require.GreaterOrEqual(t, len(framed), 5)
	require.Equal(t, byte(0), framed[0])
	require.Equal(t, id, uint32(framed[1])<<24|uint32(framed[2])<<16|uint32(framed[3])<<8|uint32(framed[4]))
	var m map[string]any
	require.NoError(t, hambaAPI.Unmarshal(schema, framed[5:], &m))
	again, err := hambaAPI.Marshal(schema, m)
	require.NoError(t, err)
	if string(again) != string(framed[5:]) {
		// hamba writes some negative decimals with a redundant sign byte
		// (-128 as ff 80, where the spec and we write 80); anything else
		// must match byte for byte, and the values must always agree.
		require.True(t, strings.Contains(schema.String(), `"decimal"`), "hamba re-encodes differently:\n ours  %x\n hamba %x", framed[5:], again)
		var m2 map[string]any
		require.NoError(t, hambaAPI.Unmarshal(schema, again, &m2))
		require.Equal(t, len(m), len(m2))
		for k, v := range m {
			if r, ok := v.(*big.Rat); ok {
				require.Zero(t, r.Cmp(m2[k].(*big.Rat)), k)
				continue
			}
			require.Equal(t, v, m2[k], k)
		}
	}
	return m
}

// TestAppendixA encodes the spec's worked record byte for byte.
func TestAppendixA(t *testing.T) {
	cfg := DefaultConfig()
	cfg.EnableTiDBExtension = true
	tbl := ordersSpec().build(t)
	c, err := NewCodec(cfg, tbl)
	require.NoError(t, err)
	r := &row.Row{Table: tbl, Op: row.Insert, CommitTs: 449218466452733953, Cols: []types.Datum{
		types.NewIntDatum(7), types.NewStringDatum("hi"), dec("12.34"), types.NewUintDatum(3),
	}}
	key, err := c.AppendKey(nil, 11, r)
	require.NoError(t, err)
	require.Equal(t, "000000000b0e", hex.EncodeToString(key))
	val, err := c.AppendValue(nil, 12, r)
	require.NoError(t, err)
	require.Equal(t, "000000000c"+"0e"+"02046869"+"020404d2"+"06"+"0263"+"8280b0f795f4f8bb0c"+"baafa1c7df63", hex.EncodeToString(val))
	m := roundTrip(t, val, 12, c.ValueAvroSchema())
	require.Equal(t, int64(1713632455645), m["_tidb_commit_physical_time"])
	require.Equal(t, "c", m["_tidb_op"])

	// DELETE: the key from the before image, a tombstone value.
	del := &row.Row{Table: tbl, Op: row.Delete, PreCols: r.Cols}
	key, err = c.AppendKey(nil, 11, del)
	require.NoError(t, err)
	require.Equal(t, "000000000b0e", hex.EncodeToString(key))
	val, err = c.AppendValue(nil, 12, del)
	require.NoError(t, err)
	require.Nil(t, val)

	// UPDATE keeps the full new row with _tidb_op "u", and appends to what
	// the buffer already holds.
	upd := &row.Row{Table: tbl, Op: row.Update, CommitTs: 1 << 18, Cols: r.Cols, PreCols: r.Cols}
	buf := []byte("prefix")
	buf, err = c.AppendValue(buf, 12, upd)
	require.NoError(t, err)
	require.Equal(t, "prefix", string(buf[:6]))
	m = roundTrip(t, buf[6:], 12, c.ValueAvroSchema())
	require.Equal(t, "u", m["_tidb_op"])
	require.Equal(t, int64(1<<18), m["_tidb_commit_ts"])
	require.Equal(t, int64(1), m["_tidb_commit_physical_time"])
}

func TestCompositeKeyOrder(t *testing.T) {
	var s shape
	for _, sh := range shapes() {
		if sh.name == "composite_pk_reordered" {
			s = sh
		}
	}
	tbl := s.spec.build(t)
	c, err := NewCodec(DefaultConfig(), tbl)
	require.NoError(t, err)
	r := &row.Row{Table: tbl, Op: row.Insert, Cols: []types.Datum{types.NewIntDatum(-1), types.NewDatum(nil), types.NewStringDatum("k")}}
	key, err := c.AppendKey(nil, 1, r)
	require.NoError(t, err)
	require.Equal(t, "0000000001"+"01"+"026b", hex.EncodeToString(key)) // a=-1, c="k"
	m := roundTrip(t, key, 1, c.KeyAvroSchema())
	require.Equal(t, map[string]any{"a": -1, "c": "k"}, m)
}

type valueCase struct {
	col  string
	d    types.Datum
	want any    // as hamba decodes it; *big.Rat compared by value
	raw  string // optional: expected hex of the field (union branch included)
}

func valueCases(t *testing.T) []valueCase {
	vec, err := types.ParseVectorFloat32("[1,2.5,-3]")
	require.NoError(t, err)
	return []valueCase{
		{col: "c_bool", d: types.NewIntDatum(1), want: 1, raw: "0202"},
		{col: "c_tinyint", d: types.NewIntDatum(-128), want: -128},
		{col: "c_tinyint", d: types.NewIntDatum(127), want: 127},
		{col: "c_tinyint_u", d: types.NewUintDatum(255), want: 255},
		{col: "c_tinyint_u", d: types.NewUintDatum(0), want: 0},
		{col: "c_smallint", d: types.NewIntDatum(-32768), want: -32768},
		{col: "c_smallint", d: types.NewIntDatum(32767), want: 32767},
		{col: "c_smallint_u", d: types.NewUintDatum(65535), want: 65535},
		{col: "c_mediumint", d: types.NewIntDatum(-8388608), want: -8388608},
		{col: "c_mediumint", d: types.NewIntDatum(8388607), want: 8388607},
		{col: "c_mediumint_u", d: types.NewUintDatum(16777215), want: 16777215},
		{col: "c_int", d: types.NewIntDatum(math.MinInt32), want: math.MinInt32},
		{col: "c_int", d: types.NewIntDatum(math.MaxInt32), want: math.MaxInt32},
		{col: "c_int_u", d: types.NewUintDatum(math.MaxUint32), want: int64(math.MaxUint32)},
		{col: "c_bigint", d: types.NewIntDatum(math.MinInt64), want: int64(math.MinInt64)},
		{col: "c_bigint", d: types.NewIntDatum(math.MaxInt64), want: int64(math.MaxInt64)},
		{col: "c_bigint_u", d: types.NewUintDatum(math.MaxUint64), want: int64(-1), raw: "0201"},
		{col: "c_bigint_u", d: types.NewUintDatum(1 << 63), want: int64(math.MinInt64)},
		{col: "c_bigint_u", d: types.NewUintDatum(0), want: int64(0)},
		{col: "c_float", d: types.NewFloat32Datum(1.1), want: float32(1.1), raw: "02cdcc8c3f"},
		{col: "c_float", d: types.NewFloat32Datum(-math.MaxFloat32), want: float32(-math.MaxFloat32)},
		{col: "c_double", d: types.NewFloat64Datum(-2.5e-300), want: -2.5e-300},
		{col: "c_double", d: types.NewFloat64Datum(math.MaxFloat64), want: math.MaxFloat64},
		{col: "c_decimal", d: dec("9999999999"), want: big.NewRat(9999999999, 1)},
		{col: "c_decimal", d: dec("-1"), want: big.NewRat(-1, 1), raw: "0202ff"},
		{col: "c_decimal", d: dec("0"), want: new(big.Rat), raw: "020200"},
		{col: "c_decimal", d: dec("-128"), want: big.NewRat(-128, 1), raw: "020280"},
		{col: "c_decimal", d: dec("-256"), want: big.NewRat(-256, 1), raw: "0204ff00"},
		{col: "c_decimal", d: dec("128"), want: big.NewRat(128, 1), raw: "02040080"},
		{col: "c_decimal", d: dec("-100"), want: big.NewRat(-100, 1), raw: "02029c"},
		{col: "c_decimal_65_30", d: dec("99999999999999999999999999999999999.999999999999999999999999999999"), want: rat("99999999999999999999999999999999999.999999999999999999999999999999")},
		{col: "c_decimal_65_30", d: dec("-99999999999999999999999999999999999.999999999999999999999999999999"), want: rat("-99999999999999999999999999999999999.999999999999999999999999999999")},
		{col: "c_decimal_65_30", d: dec("0.000000000000000000000000000001"), want: rat("0.000000000000000000000000000001")},
		{col: "c_decimal_38_19", d: dec("1234567890123456789.1234567890123456789"), want: rat("1234567890123456789.1234567890123456789")},
		{col: "c_decimal_38_19", d: dec("-0.5000000000000000000"), want: rat("-0.5")},
		{col: "c_decimal_u", d: dec("9999.99"), want: rat("9999.99")},
		{col: "c_decimal_u", d: dec("1.5"), want: rat("1.5")}, // fewer fraction digits than the scale
		{col: "c_char", d: types.NewStringDatum("héllo"), want: "héllo"},
		{col: "c_varchar", d: types.NewStringDatum(""), want: "", raw: "0200"},
		{col: "c_text", d: types.NewBytesDatum([]byte("utf8mb4 😀")), want: "utf8mb4 😀"},
		{col: "c_longtext", d: types.NewStringDatum(strings.Repeat("x", 300)), want: strings.Repeat("x", 300)},
		{col: "c_binary", d: types.NewBytesDatum([]byte{1, 0, 0, 0}), want: []byte{1, 0, 0, 0}, raw: "020801000000"},
		{col: "c_varbinary", d: types.NewBytesDatum([]byte{0xff, 0x00}), want: []byte{0xff, 0x00}},
		{col: "c_blob", d: types.NewBytesDatum([]byte{}), want: []byte{}},
		{col: "c_longblob", d: types.NewBytesDatum([]byte("\x80\x81")), want: []byte("\x80\x81")},
		{col: "c_bit1", d: bit(1, 1), want: []byte{1}, raw: "020201"},
		{col: "c_bit1", d: bit(0, 1), want: []byte{0}},
		{col: "c_bit64", d: bit(math.MaxUint64, 64), want: []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{col: "c_bit64", d: bit(5, 64), want: []byte{0, 0, 0, 0, 0, 0, 0, 5}},
		{col: "c_bit64", d: types.NewUintDatum(5), want: []byte{0, 0, 0, 0, 0, 0, 0, 5}},
		{col: "c_enum", d: types.NewMysqlEnumDatum(types.Enum{Name: "a,b", Value: 4}), want: "a,b"},
		{col: "c_enum", d: types.NewMysqlEnumDatum(types.Enum{Name: "", Value: 1}), want: ""},
		{col: "c_enum", d: types.NewMysqlEnumDatum(types.Enum{}), want: ""}, // index 0: invalid value in non-strict mode
		{col: "c_enum", d: types.NewUintDatum(2), want: "x-small"},
		{col: "c_set", d: types.NewMysqlSetDatum(types.Set{Name: "r,b", Value: 5}, ""), want: "r,b"},
		{col: "c_set", d: types.NewMysqlSetDatum(types.Set{}, ""), want: ""},
		{col: "c_set", d: types.NewUintDatum(6), want: "g,b"},
		{col: "c_json", d: jsonDatum(`{"b":[1,2.5,"x"],"a":null}`), want: `{"a": null, "b": [1, 2.5, "x"]}`},
		{col: "c_json", d: jsonDatum(`"<&>"`), want: `"<&>"`},
		{col: "c_date", d: tm("2024-02-29", mysql.TypeDate, 0), want: "2024-02-29"},
		{col: "c_date", d: tm("0000-00-00", mysql.TypeDate, 0), want: "0000-00-00"},
		{col: "c_datetime", d: tm("9999-12-31 23:59:59.999999", mysql.TypeDatetime, 6), want: "9999-12-31 23:59:59.999999"},
		{col: "c_datetime", d: tm("2024-04-20 17:00:55", mysql.TypeDatetime, 6), want: "2024-04-20 17:00:55.000000"},
		{col: "c_datetime", d: tm("0000-00-00 00:00:00", mysql.TypeDatetime, 6), want: "0000-00-00 00:00:00.000000"},
		// TIMESTAMP datums arrive already in the changefeed's zone
		// (mount converts them) and are written as they are.
		{col: "c_timestamp", d: tm("2024-04-20 17:00:55.645", mysql.TypeTimestamp, 3), want: "2024-04-20 17:00:55.645"},
		{col: "c_timestamp", d: tm("2038-01-19 03:14:07.999", mysql.TypeTimestamp, 3), want: "2038-01-19 03:14:07.999"},
		{col: "c_timestamp", d: tm("0000-00-00 00:00:00", mysql.TypeTimestamp, 3), want: "0000-00-00 00:00:00.000"},
		{col: "c_time", d: dur("-838:59:59", 2), want: "-838:59:59.00"},
		{col: "c_time", d: dur("838:59:59", 2), want: "838:59:59.00"},
		{col: "c_time", d: dur("-00:00:01.25", 2), want: "-00:00:01.25"},
		{col: "c_time", d: dur("12:34:56.78", 2), want: "12:34:56.78"},
		{col: "c_time", d: dur("00:00:00", 2), want: "00:00:00.00"},
		{col: "c_year", d: types.NewIntDatum(2155), want: 2155},
		{col: "c_year", d: types.NewIntDatum(1901), want: 1901},
		{col: "c_year", d: types.NewIntDatum(0), want: 0},
		{col: "c_vector", d: types.NewVectorFloat32Datum(vec), want: "[1,2.5,-3]"},
	}
}

func rat(s string) *big.Rat {
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		panic(s)
	}
	return r
}

// TestValueRendering encodes each case into the every-type table (all other
// columns NULL), decodes it with hamba against the generated schema and
// compares the field; string mode is checked for the columns it changes.
func TestValueRendering(t *testing.T) {
	cfg := DefaultConfig()
	tbl := tableSpec{db: "types", name: "every", cols: everyType(false)}.build(t)
	c, err := NewCodec(cfg, tbl)
	require.NoError(t, err)
	scfg := cfg
	scfg.DecimalHandling, scfg.BigintUnsignedHandling = DecimalString, BigintUnsignedString
	sc, err := NewCodec(scfg, tbl)
	require.NoError(t, err)

	for _, tc := range valueCases(t) {
		r := nullRow(tbl, map[string]types.Datum{"id": types.NewIntDatum(1), tc.col: tc.d})
		val, err := c.AppendValue(nil, 3, r)
		require.NoError(t, err, tc.col)
		m := roundTrip(t, val, 3, c.ValueAvroSchema())
		got := m[tc.col]
		if w, ok := tc.want.(*big.Rat); ok {
			require.IsType(t, w, got, tc.col)
			require.Zero(t, w.Cmp(got.(*big.Rat)), "%s: got %s want %s", tc.col, got.(*big.Rat).RatString(), w.RatString())
		} else {
			require.Equal(t, tc.want, got, tc.col)
		}
		if tc.raw != "" {
			// id (long 1) = 02, then every column before tc.col is NULL (00).
			i := fieldIndex(c, tc.col)
			prefix := "0000000003" + "02" + strings.Repeat("00", i-1)
			require.True(t, strings.HasPrefix(hex.EncodeToString(val), prefix+tc.raw), "%s: %x", tc.col, val)
		}
		// All the other columns are NULL, so each is branch 0.
		for k, v := range m {
			if k != tc.col && k != "id" {
				require.Nil(t, v, k)
			}
		}

		sval, err := sc.AppendValue(nil, 3, r)
		require.NoError(t, err, tc.col)
		sm := roundTrip(t, sval, 3, sc.ValueAvroSchema())
		switch tc.col {
		case "c_bigint_u":
			require.Equal(t, tc.d.GetUint64(), mustUint(t, sm[tc.col]), tc.col)
		case "c_decimal", "c_decimal_65_30", "c_decimal_38_19", "c_decimal_u":
			s := sm[tc.col].(string)
			scale := c.value[fieldIndex(c, tc.col)].scale
			require.Equal(t, tc.want.(*big.Rat).FloatString(scale), s, tc.col)
		default:
			require.Equal(t, m[tc.col], sm[tc.col], tc.col)
		}
	}
}

func mustUint(t *testing.T, v any) uint64 {
	u, err := strconvParseUint(v.(string))
	require.NoError(t, err)
	return u
}

func fieldIndex(c *TableCodec, name string) int {
	for i := range c.value {
		if c.value[i].name == name {
			return i
		}
	}
	panic(name)
}

// TestValueErrors: a datum that does not fit its column fails with an
// error naming table, column and value, and leaves the buffer as it was.
func TestValueErrors(t *testing.T) {
	tbl := tableSpec{db: "types", name: "every", cols: everyType(true)}.build(t)
	c, err := NewCodec(DefaultConfig(), tbl)
	require.NoError(t, err)
	for _, tc := range []struct {
		col  string
		d    types.Datum
		want string
	}{
		{"c_tinyint", types.NewIntDatum(128), `column c_tinyint (INT): value "128"`},
		{"c_tinyint_u", types.NewIntDatum(-1), "c_tinyint_u (INT UNSIGNED)"},
		{"c_int", types.NewUintDatum(math.MaxUint64), "out of range"},
		{"c_bigint", types.NewUintDatum(1 << 63), "out of range"},
		{"c_bigint_u", types.NewIntDatum(-5), "not an unsigned integer"},
		{"c_year", types.NewIntDatum(3000), "c_year (YEAR)"},
		{"c_bit1", bit(2, 8), "c_bit1 (BIT)"},
		{"c_decimal_u", dec("1.234"), "more than 2 fraction digits"},
		{"c_decimal", types.NewStringDatum("1"), "not a decimal"},
		{"c_varchar", types.NewIntDatum(1), "not a string"},
		{"c_enum", types.NewUintDatum(9), "no such member"},
		{"c_set", types.NewUintDatum(8), "no such member"},
		{"c_json", types.NewStringDatum("{}"), "not JSON"},
		{"c_date", types.NewStringDatum("2024-01-01"), "not a time"},
		{"c_time", types.NewIntDatum(0), "not a TIME"},
		{"c_int", types.NewDatum(nil), "NULL in a NOT NULL column"},
	} {
		r := &row.Row{Table: tbl, Op: row.Insert, Cols: validEveryRow(t, tbl)}
		r.Cols[fieldIndex(c, tc.col)] = tc.d
		buf := []byte("keep")
		out, err := c.AppendValue(buf, 1, r)
		require.ErrorIs(t, err, ErrValue, tc.col)
		require.ErrorContains(t, err, "table types.every column "+tc.col, tc.col)
		require.ErrorContains(t, err, tc.want, tc.col)
		require.Equal(t, "keep", string(out))
	}
	// An image of the wrong length, a foreign table version, an unknown op.
	r := &row.Row{Table: tbl, Op: row.Insert, Cols: validEveryRow(t, tbl)[:3]}
	_, err = c.AppendValue(nil, 1, r)
	require.ErrorContains(t, err, "after image has 3 values")
	_, err = c.AppendKey(nil, 1, &row.Row{Table: tbl, Op: row.Delete})
	require.ErrorContains(t, err, "key image has 0 values")
	other := *tbl
	other.Version++
	_, err = c.AppendValue(nil, 1, &row.Row{Table: &other, Op: row.Insert, Cols: validEveryRow(t, tbl)})
	require.ErrorContains(t, err, "given to the codec of")
	_, err = c.AppendValue(nil, 1, &row.Row{Table: tbl, Op: 9, Cols: validEveryRow(t, tbl)})
	require.ErrorContains(t, err, "unknown row op")
}

// validEveryRow is a NOT NULL-valid row of the every-type table.
func validEveryRow(t testing.TB, tbl *row.Table) []types.Datum {
	vec, err := types.ParseVectorFloat32("[1]")
	require.NoError(t, err)
	byName := map[string]types.Datum{
		"id": types.NewIntDatum(1), "c_bool": types.NewIntDatum(0), "c_tinyint": types.NewIntDatum(1),
		"c_tinyint_u": types.NewUintDatum(1), "c_smallint": types.NewIntDatum(1), "c_smallint_u": types.NewUintDatum(1),
		"c_mediumint": types.NewIntDatum(1), "c_mediumint_u": types.NewUintDatum(1), "c_int": types.NewIntDatum(1),
		"c_int_u": types.NewUintDatum(1), "c_bigint": types.NewIntDatum(1), "c_bigint_u": types.NewUintDatum(1),
		"c_float": types.NewFloat32Datum(1), "c_double": types.NewFloat64Datum(1), "c_decimal": dec("1"),
		"c_decimal_65_30": dec("1.000000000000000000000000000000"), "c_decimal_38_19": dec("1.0000000000000000000"),
		"c_decimal_u": dec("1.00"), "c_char": types.NewStringDatum("a"), "c_varchar": types.NewStringDatum("a"),
		"c_text": types.NewStringDatum("a"), "c_longtext": types.NewStringDatum("a"),
		"c_binary": types.NewBytesDatum([]byte("abcd")), "c_varbinary": types.NewBytesDatum([]byte("a")),
		"c_blob": types.NewBytesDatum([]byte("a")), "c_tinyblob": types.NewBytesDatum([]byte("a")),
		"c_mediumblob": types.NewBytesDatum([]byte("a")), "c_longblob": types.NewBytesDatum([]byte("a")),
		"c_bit1": bit(1, 1), "c_bit64": bit(1, 64), "c_enum": types.NewMysqlEnumDatum(types.Enum{Name: "x-small", Value: 2}),
		"c_set": types.NewMysqlSetDatum(types.Set{Name: "r", Value: 1}, ""), "c_json": jsonDatum(`[1]`),
		"c_date": tm("2024-01-01", mysql.TypeDate, 0), "c_datetime": tm("2024-01-01 00:00:00", mysql.TypeDatetime, 6),
		"c_timestamp": tm("2024-01-01 00:00:00", mysql.TypeTimestamp, 3), "c_time": dur("01:00:00", 2),
		"c_year": types.NewIntDatum(2024), "c_vector": types.NewVectorFloat32Datum(vec),
	}
	out := make([]types.Datum, len(tbl.Columns))
	for i, c := range tbl.Columns {
		d, ok := byName[c.Name.O]
		require.True(t, ok, c.Name.O)
		out[i] = d
	}
	return out
}

// TestTemporalMatchesTiDB compares our allocation-free DATE/DATETIME/TIME
// text with TiDB's own String() over random values and every fsp.
func TestTemporalMatchesTiDB(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		fsp := rng.IntN(7)
		ct := types.FromDate(rng.IntN(10000), rng.IntN(13), rng.IntN(32), rng.IntN(24), rng.IntN(60), rng.IntN(60), rng.IntN(1_000_000))
		for _, tp := range []byte{mysql.TypeDate, mysql.TypeDatetime} {
			tt := types.NewTime(ct, tp, fsp)
			if tp == mysql.TypeDatetime {
				// TiDB keeps only fsp digits of a stored value.
				r, err := tt.RoundFrac(types.DefaultStmtNoWarningContext, fsp)
				if err != nil {
					continue
				}
				tt = r
			}
			out, ok := appendTime(nil, tt, tp == mysql.TypeDate, fsp)
			require.True(t, ok)
			require.Equal(t, tt.String(), string(out[1:]))
		}
		d := types.Duration{Duration: time.Duration(rng.Int64N(2*int64(839*time.Hour))) - 839*time.Hour, Fsp: fsp}
		out := appendDuration(nil, d.Duration, fsp)
		var n int64
		// skip the varint length (1 byte for these lengths)
		n = int64(out[0] >> 1)
		require.Equal(t, d.String(), string(out[1:]))
		require.Equal(t, int64(len(out)-1), n)
	}
}

func strconvParseUint(s string) (uint64, error) { return strconv.ParseUint(s, 10, 64) }
