package avro

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/pingcap/tidb/pkg/parser/mysql"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite testdata/*.json golden schemas (review every diff against the spec)")

// ordersSpec is the table of spec §2.6 / Appendix A.
func ordersSpec() tableSpec {
	return tableSpec{db: "shop", name: "orders", cols: []col{
		{name: "id", tp: mysql.TypeLong, pk: true},
		{name: "note", tp: mysql.TypeVarchar, flen: 20},
		{name: "price", tp: mysql.TypeNewDecimal, flen: 6, dec: 2},
		{name: "qty", tp: mysql.TypeLong, unsigned: true, notNull: true, def: "1"},
	}, intHandle: true}
}

func TestSanitizeName(t *testing.T) {
	for in, want := range map[string]string{
		"normalColumnName123":        "normalColumnName123",
		"1ColumnNameStartWithNumber": "_1ColumnNameStartWithNumber",
		"A.B":                        "A_B",
		"-x":                         "_x",
		"col中文":                      "col__",
		"N-amespace":                 "N_amespace",
		"中":                          "_",
		"":                           "",
		"_a1":                        "_a1",
	} {
		require.Equal(t, want, SanitizeName(in), "SanitizeName(%q)", in)
	}
	require.Equal(t, "_1Namespace._1Schema", namespace("1Namespace", "1Schema"))
	require.Equal(t, "N_amespace.S_chema", namespace("N-amespace", "S.chema"))
	require.Equal(t, "normalNamespace", namespace("normalNamespace", ""))
}

func TestAllowed(t *testing.T) {
	require.Equal(t, `a,b\,c`, allowed([]string{"a", "b,c"}))
	require.Equal(t, `it's,x''`, allowed([]string{`it\'s`, "x''''"}))
	require.Equal(t, "", allowed(nil))
}

// TestSpecSchemaText checks the §2.6 worked example character for character.
func TestSpecSchemaText(t *testing.T) {
	cfg := DefaultConfig()
	cfg.EnableTiDBExtension = true
	c, err := NewCodec(cfg, ordersSpec().build(t))
	require.NoError(t, err)
	require.Equal(t, `{"type":"record","name":"orders","namespace":"default.shop","fields":[`+
		`{"name":"id","type":{"type":"int","connect.parameters":{"tidb_type":"INT"}}}]}`, c.KeySchema())
	require.Equal(t, `{"type":"record","name":"orders","namespace":"default.shop","fields":[`+
		`{"name":"id","type":{"type":"int","connect.parameters":{"tidb_type":"INT"}}},`+
		`{"default":null,"name":"note","type":["null",{"type":"string","connect.parameters":{"tidb_type":"TEXT"}}]},`+
		`{"default":null,"name":"price","type":["null",{"type":"bytes","connect.parameters":{"tidb_type":"DECIMAL"},"logicalType":"decimal","precision":6,"scale":2}]},`+
		`{"default":1,"name":"qty","type":{"type":"long","connect.parameters":{"tidb_type":"INT UNSIGNED"}}},`+
		`{"default":"","name":"_tidb_op","type":"string"},`+
		`{"default":0,"name":"_tidb_commit_ts","type":"long"},`+
		`{"default":0,"name":"_tidb_commit_physical_time","type":"long"}]}`, c.ValueSchema())
}

// TestSpecFieldExamples checks the other field examples of spec §2.6.
func TestSpecFieldExamples(t *testing.T) {
	cfg := DefaultConfig()
	cfg.BigintUnsignedHandling = BigintUnsignedString
	spec := tableSpec{db: "d", name: "t", intHandle: true, cols: []col{
		{name: "id", tp: mysql.TypeLong, pk: true},
		{name: "status", tp: mysql.TypeEnum, elems: []string{"a", "b,c"}, notNull: true, def: "a"},
		{name: "flags", tp: mysql.TypeBit, flen: 3},
		{name: "name", tp: mysql.TypeVarchar, flen: 20, def: "abc"},
		{name: "ts", tp: mysql.TypeTimestamp, notNull: true, def: "CURRENT_TIMESTAMP"},
		{name: "big", tp: mysql.TypeLonglong, unsigned: true},
	}}
	c, err := NewCodec(cfg, spec.build(t))
	require.NoError(t, err)
	want := []string{
		`{"default":"a","name":"status","type":{"type":"string","connect.parameters":{"allowed":"a,b\\,c","tidb_type":"ENUM"}}}`,
		`{"default":null,"name":"flags","type":["null",{"type":"bytes","connect.parameters":{"length":"3","tidb_type":"BIT"}}]}`,
		`{"default":"abc","name":"name","type":[{"type":"string","connect.parameters":{"tidb_type":"TEXT"}},"null"]}`,
		`{"default":"CURRENT_TIMESTAMP","name":"ts","type":{"type":"string","connect.parameters":{"tidb_type":"TIMESTAMP"}}}`,
		`{"default":null,"name":"big","type":["null",{"type":"string","connect.parameters":{"tidb_type":"BIGINT UNSIGNED"}}]}`,
	}
	for i, w := range want {
		require.Equal(t, w, string(c.value[i+1].fieldJSON))
	}
}

func TestNameCollision(t *testing.T) {
	spec := tableSpec{db: "d", name: "t", intHandle: true, cols: []col{
		{name: "id", tp: mysql.TypeLong, pk: true},
		{name: "a.b", tp: mysql.TypeLong},
		{name: "a-b", tp: mysql.TypeLong},
	}}
	_, err := NewCodec(DefaultConfig(), spec.build(t))
	require.ErrorIs(t, err, ErrSchema)
	require.ErrorContains(t, err, `column "a-b" and "a.b" both become Avro field "a_b"`)

	spec = tableSpec{db: "d", name: "t", intHandle: true, cols: []col{
		{name: "id", tp: mysql.TypeLong, pk: true},
		{name: "_tidb_op", tp: mysql.TypeLong},
	}}
	_, err = NewCodec(DefaultConfig(), spec.build(t)) // no extension: no clash
	require.NoError(t, err)
	cfg := DefaultConfig()
	cfg.EnableTiDBExtension = true
	_, err = NewCodec(cfg, spec.build(t))
	require.ErrorIs(t, err, ErrSchema)
	require.ErrorContains(t, err, `column "_tidb_op" and the TiDB extension field _tidb_op`)
}

func TestNewCodecErrors(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DecimalHandling = "exact"
	_, err := NewCodec(cfg, ordersSpec().build(t))
	require.ErrorIs(t, err, ErrConfig)
	require.ErrorContains(t, err, "DecimalHandling")
	cfg = DefaultConfig()
	cfg.BigintUnsignedHandling = ""
	require.ErrorContains(t, cfg.Validate(), "BigintUnsignedHandling")
	cfg = DefaultConfig()
	cfg.Namespace = ""
	require.ErrorContains(t, cfg.Validate(), "Namespace")

	noKey := tableSpec{db: "d", name: "t", cols: []col{{name: "a", tp: mysql.TypeLong}}}
	_, err = NewCodec(DefaultConfig(), noKey.build(t))
	require.ErrorIs(t, err, ErrSchema)
	require.ErrorContains(t, err, "no primary key")

	geo := tableSpec{db: "d", name: "t", intHandle: true, cols: []col{
		{name: "id", tp: mysql.TypeLong, pk: true}, {name: "g", tp: mysql.TypeGeometry}}}
	_, err = NewCodec(DefaultConfig(), geo.build(t))
	require.ErrorIs(t, err, ErrSchema)
	require.ErrorContains(t, err, "column g: unsupported type")

	badDef := tableSpec{db: "d", name: "t", intHandle: true, cols: []col{
		{name: "id", tp: mysql.TypeLong, pk: true}, {name: "n", tp: mysql.TypeTiny, def: "300"}}}
	_, err = NewCodec(DefaultConfig(), badDef.build(t))
	require.ErrorIs(t, err, ErrSchema)
	require.ErrorContains(t, err, `column n: default "300"`)
}

// everyType has one column of each TiDB type the spec maps, nullable unless
// notNull is set.
func everyType(notNull bool) []col {
	return []col{
		{name: "id", tp: mysql.TypeLonglong, pk: true},
		{name: "c_bool", tp: mysql.TypeTiny, flen: 1, notNull: notNull},
		{name: "c_tinyint", tp: mysql.TypeTiny, notNull: notNull},
		{name: "c_tinyint_u", tp: mysql.TypeTiny, unsigned: true, notNull: notNull},
		{name: "c_smallint", tp: mysql.TypeShort, notNull: notNull},
		{name: "c_smallint_u", tp: mysql.TypeShort, unsigned: true, notNull: notNull},
		{name: "c_mediumint", tp: mysql.TypeInt24, notNull: notNull},
		{name: "c_mediumint_u", tp: mysql.TypeInt24, unsigned: true, notNull: notNull},
		{name: "c_int", tp: mysql.TypeLong, notNull: notNull},
		{name: "c_int_u", tp: mysql.TypeLong, unsigned: true, notNull: notNull},
		{name: "c_bigint", tp: mysql.TypeLonglong, notNull: notNull},
		{name: "c_bigint_u", tp: mysql.TypeLonglong, unsigned: true, notNull: notNull},
		{name: "c_float", tp: mysql.TypeFloat, notNull: notNull},
		{name: "c_double", tp: mysql.TypeDouble, notNull: notNull},
		{name: "c_decimal", tp: mysql.TypeNewDecimal, flen: 10, dec: -1, notNull: notNull},
		{name: "c_decimal_65_30", tp: mysql.TypeNewDecimal, flen: 65, dec: 30, notNull: notNull},
		{name: "c_decimal_38_19", tp: mysql.TypeNewDecimal, flen: 38, dec: 19, notNull: notNull},
		{name: "c_decimal_u", tp: mysql.TypeNewDecimal, flen: 6, dec: 2, unsigned: true, notNull: notNull},
		{name: "c_char", tp: mysql.TypeString, flen: 10, notNull: notNull},
		{name: "c_varchar", tp: mysql.TypeVarchar, flen: 255, notNull: notNull},
		{name: "c_text", tp: mysql.TypeBlob, notNull: notNull},
		{name: "c_longtext", tp: mysql.TypeLongBlob, notNull: notNull},
		{name: "c_binary", tp: mysql.TypeString, flen: 4, binary: true, notNull: notNull},
		{name: "c_varbinary", tp: mysql.TypeVarchar, flen: 16, binary: true, notNull: notNull},
		{name: "c_blob", tp: mysql.TypeBlob, binary: true, notNull: notNull},
		{name: "c_tinyblob", tp: mysql.TypeTinyBlob, binary: true, notNull: notNull},
		{name: "c_mediumblob", tp: mysql.TypeMediumBlob, binary: true, notNull: notNull},
		{name: "c_longblob", tp: mysql.TypeLongBlob, binary: true, notNull: notNull},
		{name: "c_bit1", tp: mysql.TypeBit, flen: 1, notNull: notNull},
		{name: "c_bit64", tp: mysql.TypeBit, flen: 64, notNull: notNull},
		{name: "c_enum", tp: mysql.TypeEnum, elems: []string{"", "x-small", "it''s", "a,b"}, notNull: notNull},
		{name: "c_set", tp: mysql.TypeSet, elems: []string{"r", "g", "b"}, notNull: notNull},
		{name: "c_json", tp: mysql.TypeJSON, notNull: notNull},
		{name: "c_date", tp: mysql.TypeDate, notNull: notNull},
		{name: "c_datetime", tp: mysql.TypeDatetime, dec: 6, notNull: notNull},
		{name: "c_timestamp", tp: mysql.TypeTimestamp, dec: 3, notNull: notNull},
		{name: "c_time", tp: mysql.TypeDuration, dec: 2, notNull: notNull},
		{name: "c_year", tp: mysql.TypeYear, notNull: notNull},
		{name: "c_vector", tp: mysql.TypeTiDBVectorFloat32, notNull: notNull},
	}
}

type shape struct {
	name string
	cfg  func(*Config)
	spec tableSpec
}

func shapes() []shape {
	ext := func(c *Config) { c.EnableTiDBExtension = true }
	str := func(c *Config) { c.DecimalHandling, c.BigintUnsignedHandling = DecimalString, BigintUnsignedString }
	return []shape{
		{"orders_extension", ext, ordersSpec()},
		{"int_pk", nil, tableSpec{db: "app", name: "users", intHandle: true, cols: []col{
			{name: "id", tp: mysql.TypeLong, pk: true},
			{name: "name", tp: mysql.TypeVarchar, flen: 64, notNull: true},
			{name: "age", tp: mysql.TypeTiny, unsigned: true},
		}}},
		{"unsigned_bigint_pk_long", nil, tableSpec{db: "app", name: "ids", intHandle: true, cols: []col{
			{name: "id", tp: mysql.TypeLonglong, unsigned: true, pk: true},
			{name: "v", tp: mysql.TypeLonglong, unsigned: true, def: "18446744073709551615"},
		}}},
		{"unsigned_bigint_pk_string", func(c *Config) { c.BigintUnsignedHandling = BigintUnsignedString }, tableSpec{db: "app", name: "ids", intHandle: true, cols: []col{
			{name: "id", tp: mysql.TypeLonglong, unsigned: true, pk: true},
			{name: "v", tp: mysql.TypeLonglong, unsigned: true, def: "18446744073709551615"},
		}}},
		{"composite_pk_reordered", nil, tableSpec{db: "app", name: "lines", pkOrder: []string{"c", "a"}, cols: []col{
			{name: "a", tp: mysql.TypeLong, pk: true},
			{name: "b", tp: mysql.TypeVarchar, flen: 10},
			{name: "c", tp: mysql.TypeVarchar, flen: 10, pk: true},
		}}},
		{"not_null_uk_key", nil, tableSpec{db: "app", name: "accounts", cols: []col{
			{name: "email", tp: mysql.TypeVarchar, flen: 100},
			{name: "tenant", tp: mysql.TypeLong, notNull: true},
			{name: "login", tp: mysql.TypeVarchar, flen: 32, notNull: true},
			{name: "code", tp: mysql.TypeLong, notNull: true},
			{name: "region", tp: mysql.TypeLong, notNull: true},
			// uka is nullable (skipped), ukb and ukc have two NOT NULL
			// columns each: the lower id, ukb, wins; its key is in table
			// order (tenant, login) although the index says (login, tenant).
		}, uniques: [][]string{{"email"}, {"login", "tenant"}, {"code", "region"}}}},
		{"every_type_nullable_precise_long", nil, tableSpec{db: "types", name: "every", cols: everyType(false)}},
		{"every_type_not_null_precise_long", nil, tableSpec{db: "types", name: "every", cols: everyType(true)}},
		{"every_type_nullable_string_string", str, tableSpec{db: "types", name: "every", cols: everyType(false)}},
		{"every_type_extension_string", func(c *Config) { ext(c); str(c) }, tableSpec{db: "types", name: "every", cols: everyType(true)}},
		{"sanitised_names", func(c *Config) { c.Namespace = "N-amespace" }, tableSpec{db: "1st-db", name: "order.items", intHandle: true, cols: []col{
			{name: "1id", tp: mysql.TypeLong, pk: true},
			{name: "col中文", tp: mysql.TypeVarchar, flen: 8},
			{name: "a.b", tp: mysql.TypeLong},
			{name: "<html>&", tp: mysql.TypeLong, def: "5"},
		}}},
		{"defaults_every_kind", nil, tableSpec{db: "d", name: "defaults", intHandle: true, cols: []col{
			{name: "id", tp: mysql.TypeLong, pk: true},
			{name: "i_nn", tp: mysql.TypeLong, notNull: true, def: "-7"},
			{name: "i_null", tp: mysql.TypeLong, def: "42"},
			{name: "tiny_u", tp: mysql.TypeTiny, unsigned: true, def: "255"},
			{name: "int_u", tp: mysql.TypeLong, unsigned: true, def: "4294967295"},
			{name: "big", tp: mysql.TypeLonglong, def: "-9223372036854775808"},
			{name: "big_u", tp: mysql.TypeLonglong, unsigned: true, notNull: true, def: "9223372036854775808"},
			{name: "f", tp: mysql.TypeFloat, def: "1.1"},
			{name: "dbl", tp: mysql.TypeDouble, notNull: true, def: "2.5e-3"},
			{name: "dec_null", tp: mysql.TypeNewDecimal, flen: 6, dec: 2, def: "1.50"},
			{name: "dec_nn", tp: mysql.TypeNewDecimal, flen: 6, dec: 2, notNull: true, def: "1.50"},
			{name: "s", tp: mysql.TypeVarchar, flen: 10, def: "x<y&z"},
			{name: "s_null_word", tp: mysql.TypeVarchar, flen: 10, def: "null"},
			{name: "s_empty", tp: mysql.TypeVarchar, flen: 10, notNull: true, def: ""},
			{name: "bin", tp: mysql.TypeVarchar, flen: 4, binary: true, def: "\x00\xff\x7fA"},
			{name: "bits", tp: mysql.TypeBit, flen: 12, defBit: []byte{0x05}, def: "\x05"},
			{name: "e", tp: mysql.TypeEnum, elems: []string{"x", "y"}, def: "y"},
			{name: "st", tp: mysql.TypeSet, elems: []string{"x", "y"}, def: "x,y"},
			{name: "dt", tp: mysql.TypeDate, def: "2024-02-29"},
			{name: "dtm", tp: mysql.TypeDatetime, dec: 3, def: "2024-04-20 17:00:55.645"},
			{name: "ts_now", tp: mysql.TypeTimestamp, notNull: true, def: "CURRENT_TIMESTAMP"},
			{name: "ts_now3", tp: mysql.TypeTimestamp, dec: 3, def: "CURRENT_TIMESTAMP(3)"},
			{name: "ts_lit", tp: mysql.TypeTimestamp, def: "2024-01-01 00:00:00"},
			{name: "tm", tp: mysql.TypeDuration, def: "-01:02:03"},
			{name: "yr", tp: mysql.TypeYear, def: "2024"},
			{name: "js", tp: mysql.TypeJSON, def: `{"a": 1}`},
		}}},
		{"bit_enum_set_defaults", nil, tableSpec{db: "d", name: "flags", intHandle: true, cols: []col{
			{name: "id", tp: mysql.TypeLong, pk: true},
			{name: "b1", tp: mysql.TypeBit, flen: 1, notNull: true, defBit: []byte{1}, def: "\x01"},
			{name: "b64", tp: mysql.TypeBit, flen: 64, defBit: []byte{0x80, 0, 0, 0, 0, 0, 0, 1}, def: "x"},
			{name: "status", tp: mysql.TypeEnum, elems: []string{"a", "b,c"}, notNull: true, def: "a"},
			{name: "tags", tp: mysql.TypeSet, elems: []string{"p", "q", "it''s"}, def: ""},
			{name: "e_null", tp: mysql.TypeEnum, elems: []string{"on", "off"}},
		}}},
		{"nullable_vs_not", nil, tableSpec{db: "d", name: "nulls", intHandle: true, cols: []col{
			{name: "id", tp: mysql.TypeLonglong, pk: true},
			{name: "a_null", tp: mysql.TypeVarchar, flen: 5},
			{name: "a_nn", tp: mysql.TypeVarchar, flen: 5, notNull: true},
			{name: "a_null_def", tp: mysql.TypeVarchar, flen: 5, def: "d"},
			{name: "a_nn_def", tp: mysql.TypeVarchar, flen: 5, notNull: true, def: "d"},
			{name: "dec_null", tp: mysql.TypeNewDecimal, flen: 4, dec: 1},
			{name: "dec_nn", tp: mysql.TypeNewDecimal, flen: 4, dec: 1, notNull: true},
		}}},
	}
}

// TestSchemaGolden compares key and value schema text with the checked-in
// files. Run with -update to rewrite them; every rewritten file must then
// be checked by hand against spec §2–§4.
func TestSchemaGolden(t *testing.T) {
	for _, s := range shapes() {
		t.Run(s.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if s.cfg != nil {
				s.cfg(&cfg)
			}
			c, err := NewCodec(cfg, s.spec.build(t))
			require.NoError(t, err)
			for _, part := range []struct{ suffix, text string }{{"key", c.KeySchema()}, {"value", c.ValueSchema()}} {
				require.True(t, json.Valid([]byte(part.text)))
				path := filepath.Join("testdata", s.name+"."+part.suffix+".json")
				if *update {
					require.NoError(t, os.WriteFile(path, []byte(part.text+"\n"), 0o644))
					continue
				}
				want, err := os.ReadFile(path)
				require.NoError(t, err)
				require.Equal(t, string(bytes.TrimSuffix(want, []byte("\n"))), part.text, path)
			}
		})
	}
}

// TestDefaultConversions covers default spellings TiDB versions have stored
// and defaults that cannot be converted.
func TestDefaultConversions(t *testing.T) {
	field := func(c col) (string, error) {
		spec := tableSpec{db: "d", name: "t", intHandle: true, cols: []col{{name: "id", tp: mysql.TypeLong, pk: true}, c}}
		codec, err := NewCodec(DefaultConfig(), spec.build(t))
		if err != nil {
			return "", err
		}
		return string(codec.value[1].fieldJSON), nil
	}
	got, err := field(col{name: "n", tp: mysql.TypeLong, notNull: true, def: "3.0"})
	require.NoError(t, err)
	require.Equal(t, `{"default":3,"name":"n","type":{"type":"int","connect.parameters":{"tidb_type":"INT"}}}`, got)
	got, err = field(col{name: "n", tp: mysql.TypeLonglong, notNull: true, def: int64(-4)}) // not a string
	require.NoError(t, err)
	require.Equal(t, `{"default":-4,"name":"n","type":{"type":"long","connect.parameters":{"tidb_type":"BIGINT"}}}`, got)
	got, err = field(col{name: "n", tp: mysql.TypeLong, unsigned: true, notNull: true, def: " 7 "})
	require.NoError(t, err)
	require.Equal(t, `{"default":7,"name":"n","type":{"type":"long","connect.parameters":{"tidb_type":"INT UNSIGNED"}}}`, got)
	for _, bad := range []col{
		{name: "n", tp: mysql.TypeLong, unsigned: true, def: "-1"},
		{name: "n", tp: mysql.TypeLong, def: "2147483648"},
		{name: "n", tp: mysql.TypeLong, def: "1.5"},
		{name: "n", tp: mysql.TypeFloat, def: "abc"},
		{name: "n", tp: mysql.TypeDouble, def: "NaN"},
		{name: "n", tp: mysql.TypeBit, flen: 4, defBit: []byte{0x1f}, def: "x"},
		{name: "n", tp: mysql.TypeYear, def: "2200"},
	} {
		_, err := field(bad)
		require.ErrorIs(t, err, ErrSchema, "%+v", bad)
		require.ErrorContains(t, err, "column n: default", "%+v", bad)
	}
}
