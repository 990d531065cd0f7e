package dispatch

import (
	"errors"
	"hash/crc32"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/pingcap/tidb/pkg/meta/model"
	pmodel "github.com/pingcap/tidb/pkg/parser/model"
	"github.com/pingcap/tidb/pkg/parser/mysql"
	"github.com/pingcap/tidb/pkg/types"
	"github.com/stretchr/testify/require"
	v1 "github.com/tidestream/tidestream/proto/tidestream/v1"

	"github.com/tidestream/tidestream/encoder/row"
)

// refHash is an independent statement of spec §7.5: the XOR of CRC-32s
// of "schema‖table" and of each "name‖value" pair.
func refHash(parts ...[2]string) uint64 {
	var h uint32
	for _, p := range parts {
		h ^= crc32.ChecksumIEEE([]byte(p[0] + p[1]))
	}
	return uint64(h)
}

type colSpec struct {
	name    string
	tp      byte
	flag    uint
	virtual bool
}

// newTable builds a table of schema.name with the given columns; pk names
// the primary key column (int handle) or is empty, uks are unique indexes
// (name, columns...).
func newTable(t *testing.T, schema, name string, id, version int64, cols []colSpec, pk string, uks ...[]string) *row.Table {
	t.Helper()
	info := &model.TableInfo{ID: id, Name: pmodel.NewCIStr(name), State: model.StatePublic}
	for i, c := range cols {
		ft := types.NewFieldType(c.tp)
		ft.SetFlag(c.flag)
		if c.name == pk {
			ft.AddFlag(mysql.PriKeyFlag | mysql.NotNullFlag)
			info.PKIsHandle = true
		}
		ci := &model.ColumnInfo{ID: int64(i + 1), Name: pmodel.NewCIStr(c.name), Offset: i, FieldType: *ft, State: model.StatePublic}
		if c.virtual {
			ci.GeneratedExprString = "1"
			ci.GeneratedStored = false
		}
		info.Columns = append(info.Columns, ci)
	}
	for n, uk := range uks {
		idx := &model.IndexInfo{ID: int64(n + 1), Name: pmodel.NewCIStr(uk[0]), Unique: uk[0] != "k_plain", State: model.StatePublic}
		for _, cn := range uk[1:] {
			for _, ci := range info.Columns {
				if ci.Name.O == cn {
					idx.Columns = append(idx.Columns, &model.IndexColumn{Name: ci.Name, Offset: ci.Offset})
				}
			}
		}
		info.Indices = append(info.Indices, idx)
	}
	tb, err := row.NewTable(schema, info, version)
	require.NoError(t, err)
	return tb
}

func mustRouter(t *testing.T, cfg Config) *Router {
	t.Helper()
	r, err := NewRouter(cfg)
	require.NoError(t, err)
	return r
}

func rules(rs ...*v1.DispatchRule) []*v1.DispatchRule { return rs }

func TestSpecVectors(t *testing.T) {
	// The worked numbers of spec §7.5.
	require.Equal(t, uint32(0x8c0469fd), crc32.ChecksumIEEE([]byte("testt")))
	tb := newTable(t, "test", "t", 1, 1, []colSpec{{name: "id", tp: mysql.TypeLonglong}}, "id")
	for _, tc := range []struct {
		part string
		id   int64
		hash uint64
		p3   uint64
	}{
		{"table", 1, 0x8c0469fd, 1},
		{"index-value", 1, 1678569177, 0},
		{"index-value", 2, refHash([2]string{"test", "t"}, [2]string{"id", "2"}), 2},
	} {
		r := mustRouter(t, Config{DefaultTopic: "meta", Rules: rules(&v1.DispatchRule{
			Matcher: []string{"*.*"}, Topic: "tidb_{schema}_{table}", Partition: tc.part})})
		topic, h, err := r.Route(&row.Row{Table: tb, Op: row.Insert, Cols: []types.Datum{types.NewIntDatum(tc.id)}})
		require.NoError(t, err)
		require.Equal(t, "tidb_test_t", topic)
		require.Equal(t, tc.hash, h, "%s id=%d", tc.part, tc.id)
		require.Equal(t, tc.p3, h%3, "%s id=%d", tc.part, tc.id)
	}
}

func TestPartitioners(t *testing.T) {
	cols := []colSpec{
		{name: "ID", tp: mysql.TypeLonglong},
		{name: "tenant", tp: mysql.TypeVarchar, flag: mysql.NotNullFlag},
		{name: "email", tp: mysql.TypeVarchar, flag: mysql.NotNullFlag},
		{name: "v", tp: mysql.TypeVarchar},
		{name: "gen", tp: mysql.TypeLonglong, virtual: true},
	}
	tb := newTable(t, "Shop", "Orders", 7, 3, cols, "ID", []string{"uk_mail", "tenant", "email"}, []string{"k_plain", "v"}, []string{"uk_gen", "gen"})
	after := []types.Datum{types.NewIntDatum(42), types.NewStringDatum("acme"), types.NewStringDatum("a@b.c"), {}}
	before := []types.Datum{types.NewIntDatum(41), types.NewStringDatum("old"), types.NewStringDatum("x@y.z"), types.NewStringDatum("vv")}
	tableH := refHash([2]string{"Shop", "Orders"})

	for _, tc := range []struct {
		name string
		rule *v1.DispatchRule
		row  row.Row
		want uint64
		err  string
	}{
		{name: "default is table", rule: &v1.DispatchRule{Partition: ""},
			row: row.Row{Op: row.Insert, Cols: after}, want: tableH},
		{name: "table", rule: &v1.DispatchRule{Partition: "TABLE"},
			row: row.Row{Op: row.Insert, Cols: after}, want: tableH},
		{name: "ts", rule: &v1.DispatchRule{Partition: "ts"},
			row: row.Row{Op: row.Insert, Cols: after, CommitTs: 449218466452733953}, want: 449218466452733953},
		{name: "index-value handle", rule: &v1.DispatchRule{Partition: "index-value"},
			row:  row.Row{Op: row.Insert, Cols: after},
			want: refHash([2]string{"Shop", "Orders"}, [2]string{"ID", "42"})},
		{name: "rowid alias, delete uses before image", rule: &v1.DispatchRule{Partition: "rowid"},
			row:  row.Row{Op: row.Delete, PreCols: before},
			want: refHash([2]string{"Shop", "Orders"}, [2]string{"ID", "41"})},
		{name: "index-value named unique index, case-insensitive name", rule: &v1.DispatchRule{Partition: "index-value", Index: "UK_MAIL"},
			row:  row.Row{Op: row.Update, Cols: after, PreCols: before},
			want: refHash([2]string{"Shop", "Orders"}, [2]string{"tenant", "acme"}, [2]string{"email", "a@b.c"})},
		{name: "columns hash the column's own spelling, NULL as null", rule: &v1.DispatchRule{Partition: "columns", Columns: []string{"id", "V"}},
			row:  row.Row{Op: row.Insert, Cols: after},
			want: refHash([2]string{"Shop", "Orders"}, [2]string{"ID", "42"}, [2]string{"v", "null"})},
		{name: "index PRIMARY names the int handle", rule: &v1.DispatchRule{Partition: "index-value", Index: "primary"},
			row:  row.Row{Op: row.Insert, Cols: after},
			want: refHash([2]string{"Shop", "Orders"}, [2]string{"ID", "42"})},
		{name: "non-unique index refused", rule: &v1.DispatchRule{Partition: "index-value", Index: "k_plain"},
			row: row.Row{Op: row.Insert, Cols: after}, err: `index "k_plain" of Shop.Orders is not unique`},
		{name: "missing index", rule: &v1.DispatchRule{Partition: "index-value", Index: "nope"},
			row: row.Row{Op: row.Insert, Cols: after}, err: `table Shop.Orders has no index "nope"`},
		{name: "index on a virtual column", rule: &v1.DispatchRule{Partition: "index-value", Index: "uk_gen"},
			row: row.Row{Op: row.Insert, Cols: after}, err: `uses column "gen", which a change does not carry`},
		{name: "missing columns", rule: &v1.DispatchRule{Partition: "columns", Columns: []string{"tenant", "zz", "gen"}},
			row: row.Row{Op: row.Insert, Cols: after}, err: `has no column ["zz" "gen"]`},
		{name: "short image", rule: &v1.DispatchRule{Partition: "index-value"},
			row: row.Row{Op: row.Insert, Cols: after[:2]}, err: "has 2 values for 4 columns"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.rule.Matcher = []string{"shop.*"}
			tc.rule.Topic = "t_{schema}_{table}"
			r := mustRouter(t, Config{DefaultTopic: "meta", Rules: rules(tc.rule)})
			tc.row.Table = tb
			topic, h, err := r.Route(&tc.row)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				require.True(t, errors.Is(err, ErrInvalidRule) || errors.Is(err, ErrRow), "%v", err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, "t_Shop_Orders", topic)
			require.Equal(t, tc.want, h)
		})
	}
}

func TestHashIsOrderIndependentAndDiffers(t *testing.T) {
	// XOR commutes: a named index hashes the same in any column order, and
	// a different key gives a different hash.
	tb := newTable(t, "s", "t", 1, 1, []colSpec{
		{name: "a", tp: mysql.TypeLong, flag: mysql.NotNullFlag},
		{name: "b", tp: mysql.TypeLong, flag: mysql.NotNullFlag},
	}, "", []string{"uk", "b", "a"})
	r := mustRouter(t, Config{DefaultTopic: "m", Rules: rules(
		&v1.DispatchRule{Matcher: []string{"*.*"}, Topic: "{schema}.{table}", Partition: "index-value"})})
	_, h1, err := r.Route(&row.Row{Table: tb, Op: row.Insert, Cols: []types.Datum{types.NewIntDatum(1), types.NewIntDatum(2)}})
	require.NoError(t, err)
	require.Equal(t, refHash([2]string{"s", "t"}, [2]string{"a", "1"}, [2]string{"b", "2"}), h1)
	_, h2, err := r.Route(&row.Row{Table: tb, Op: row.Insert, Cols: []types.Datum{types.NewIntDatum(3), types.NewIntDatum(2)}})
	require.NoError(t, err)
	require.NotEqual(t, h1, h2)

	// CRC-32 is affine over XOR, so for equal-length parts
	// crc(x)^crc(y) depends only on x^y: (a=1,b=2) and (a=2,b=1) collide.
	// TiCDC has the same collision; matching it is the point, so pin it.
	_, h3, err := r.Route(&row.Row{Table: tb, Op: row.Insert, Cols: []types.Datum{types.NewIntDatum(2), types.NewIntDatum(1)}})
	require.NoError(t, err)
	require.Equal(t, h1, h3)
}

func TestValueString(t *testing.T) {
	col := func(tp byte, flag uint) *model.ColumnInfo {
		ft := types.NewFieldType(tp)
		ft.SetFlag(flag)
		return &model.ColumnInfo{Name: pmodel.NewCIStr("c"), FieldType: *ft}
	}
	json, err := types.ParseBinaryJSONFromString(`{"b":[1,2],"a":"x"}`)
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		d    types.Datum
		col  *model.ColumnInfo
		want string
	}{
		{"null", types.Datum{}, col(mysql.TypeLong, 0), "null"},
		{"negative int", types.NewIntDatum(-17), col(mysql.TypeLonglong, 0), "-17"},
		{"bigint unsigned max", types.NewUintDatum(math.MaxUint64), col(mysql.TypeLonglong, mysql.UnsignedFlag), "18446744073709551615"},
		{"year", types.NewIntDatum(2024), col(mysql.TypeYear, 0), "2024"},
		{"float shortest f", types.NewFloat32Datum(1.1), col(mysql.TypeFloat, 0), "1.1"},
		{"float tiny", types.NewFloat32Datum(1e-7), col(mysql.TypeFloat, 0), "0.0000001"},
		{"double no exponent", types.NewFloat64Datum(1e21), col(mysql.TypeDouble, 0), "1000000000000000000000"},
		{"double NaN is 0", types.NewFloat64Datum(math.NaN()), col(mysql.TypeDouble, 0), "0"},
		{"double -Inf is 0", types.NewFloat64Datum(math.Inf(-1)), col(mysql.TypeDouble, 0), "0"},
		{"varchar raw", types.NewStringDatum("héllo, wörld"), col(mysql.TypeVarchar, 0), "héllo, wörld"},
		{"varbinary raw", types.NewBytesDatum([]byte{0, 0xff, 'a'}), col(mysql.TypeVarString, mysql.BinaryFlag), "\x00\xffa"},
		{"decimal keeps scale", types.NewDecimalDatum(types.NewDecFromStringForTest("12.340")), col(mysql.TypeNewDecimal, 0), "12.340"},
		{"datetime fsp", types.NewTimeDatum(types.NewTime(types.FromDate(2024, 4, 20, 17, 0, 55, 645000), mysql.TypeDatetime, 3)), col(mysql.TypeDatetime, 0), "2024-04-20 17:00:55.645"},
		{"date", types.NewTimeDatum(types.NewTime(types.FromDate(2024, 4, 20, 0, 0, 0, 0), mysql.TypeDate, 0)), col(mysql.TypeDate, 0), "2024-04-20"},
		{"time fsp", types.NewDurationDatum(types.Duration{Duration: -(12*time.Hour + 34*time.Minute + 56*time.Second + 120*time.Millisecond), Fsp: 2}), col(mysql.TypeDuration, 0), "-12:34:56.12"},
		{"json", types.NewJSONDatum(json), col(mysql.TypeJSON, 0), `{"a": "x", "b": [1, 2]}`},
		{"enum is its index", types.NewMysqlEnumDatum(types.Enum{Name: "b", Value: 2}), col(mysql.TypeEnum, 0), "2"},
		{"set is its bitmap", types.NewMysqlSetDatum(types.Set{Name: "a,c", Value: 5}, ""), col(mysql.TypeSet, 0), "5"},
		{"bit is its integer", types.NewMysqlBitDatum(types.NewBinaryLiteralFromUint(0x0102, 2)), col(mysql.TypeBit, mysql.UnsignedFlag), "258"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ValueString(&tc.d, tc.col)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	d := types.NewFloat64Datum(1)
	_, err = ValueString(&d, col(mysql.TypeVarchar, 0))
	require.ErrorIs(t, err, ErrRow)
}

func TestTopicExpressions(t *testing.T) {
	for _, tc := range []struct {
		expr, schema, table, want string
		avroErr                   bool
	}{
		{expr: "tidb_{schema}_{table}", schema: "Shop", table: "Orders", want: "tidb_Shop_Orders"},
		{expr: "{schema}.{table}", schema: "db", table: "t", want: "db.t"},
		{expr: "pre{schema}mid{table}suf", schema: "库", table: "a b$c", want: "pre_mida_b_csuf"},
		{expr: "x-{schema}", schema: "s", table: "t", want: "x-s", avroErr: true},
		{expr: "{table}", schema: "s", table: "t", want: "t", avroErr: true},
		{expr: "literal.topic-1", schema: "s", table: "t", want: "literal.topic-1"},
		{expr: "{schema}{table}", schema: ".", table: "", want: "_"},
		{expr: "{schema}{table}", schema: ".", table: ".", want: "__"},
		{expr: "{schema}_{table}", schema: strings.Repeat("s", 200), table: strings.Repeat("t", 100), want: (strings.Repeat("s", 200) + "_" + strings.Repeat("t", 100))[:249]},
		{expr: "{schema}_{table}", schema: "bad\xffutf8", table: "t", want: "bad_utf8_t"},
	} {
		topic, err := ParseTopic(tc.expr)
		require.NoError(t, err, tc.expr)
		require.Equal(t, tc.want, topic.Substitute(tc.schema, tc.table), tc.expr)
		if tc.avroErr {
			require.ErrorContains(t, topic.ValidateAvro(), "must contain {schema} and {table}")
		} else {
			require.NoError(t, topic.ValidateAvro(), tc.expr)
		}
	}
	for expr, msg := range map[string]string{
		"":                        "empty",
		"tidb_{Schema}_{table}":   "lowercase placeholders",
		"tidb_{table}_{schema}":   "[prefix]{schema}",
		"tidb/{schema}_{table}":   "[prefix]{schema}",
		"{schema}_{schema}":       "[prefix]{schema}",
		"tidb {schema}":           "[prefix]{schema}",
		"..":                      "reserved",
		strings.Repeat("a", 250):  "Kafka allows 249",
		"{schema}_{table}_{tabl}": "[prefix]{schema}",
	} {
		_, err := ParseTopic(expr)
		require.ErrorIs(t, err, ErrInvalidTopic, "%q", expr)
		require.ErrorContains(t, err, msg, "%q", expr)
	}
}

func TestDefaultTopic(t *testing.T) {
	got, err := DefaultTopic("kafka://a:9092,b:9092/ticdc-meta?protocol=avro&sasl-password=S")
	require.NoError(t, err)
	require.Equal(t, "ticdc-meta", got)
	got, err = DefaultTopic("kafka+ssl://a:9092//t.x//")
	require.NoError(t, err)
	require.Equal(t, "t.x", got)
	_, err = DefaultTopic("kafka://a:9092/?protocol=avro")
	require.ErrorContains(t, err, "no topic is specified")
	_, err = DefaultTopic("kafka://a:9092/a%20b")
	require.ErrorContains(t, err, "only [A-Za-z0-9._-]")
	_, err = DefaultTopic("kafka://u:secret@a:9092/%zz")
	require.ErrorIs(t, err, ErrInvalidTopic)
	require.NotContains(t, err.Error(), "secret")
}

func TestMatchingFirstRuleWinsAndCase(t *testing.T) {
	cfg := Config{DefaultTopic: "meta", Rules: rules(
		&v1.DispatchRule{Matcher: []string{"shop.*", "!shop.tmp_*"}, Topic: "a_{schema}_{table}"},
		&v1.DispatchRule{Matcher: []string{"*.*"}, Topic: "b_{schema}_{table}"},
	)}
	r := mustRouter(t, cfg)
	require.Equal(t, "a_Shop_Orders", r.Topic("Shop", "Orders"), "case-insensitive by default")
	require.Equal(t, "b_shop_tmp_x", r.Topic("shop", "tmp_x"), "negation falls through to the next rule")
	require.Equal(t, "b_crm_users", r.Topic("crm", "users"))

	cfg.CaseSensitive = true
	r = mustRouter(t, cfg)
	require.Equal(t, "b_Shop_Orders", r.Topic("Shop", "Orders"))
	require.Equal(t, "a_shop_Orders", r.Topic("shop", "Orders"))

	// Unmatched tables go to the default topic by the implicit rule.
	r = mustRouter(t, Config{DefaultTopic: "meta", Rules: rules(&v1.DispatchRule{Matcher: []string{"shop.*"}, Topic: "{schema}_{table}"})})
	require.Equal(t, "meta", r.Topic("crm", "users"))
}

func TestRuleValidation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rules []*v1.DispatchRule
		msg   string
	}{
		{"no matcher", rules(&v1.DispatchRule{Topic: "{schema}_{table}"}), "has no matcher"},
		{"file import", rules(&v1.DispatchRule{Matcher: []string{"@rules.txt"}, Topic: "{schema}_{table}"}), "imports a file"},
		{"bad pattern", rules(&v1.DispatchRule{Matcher: []string{"shop"}, Topic: "{schema}_{table}"}), "matcher"},
		{"unknown partition", rules(&v1.DispatchRule{Matcher: []string{"*.*"}, Topic: "{schema}_{table}", Partition: "hash"}), `partition "hash"`},
		{"index without index-value", rules(&v1.DispatchRule{Matcher: []string{"*.*"}, Topic: "{schema}_{table}", Partition: "table", Index: "uk"}), `needs partition = "index-value"`},
		{"columns without columns", rules(&v1.DispatchRule{Matcher: []string{"*.*"}, Topic: "{schema}_{table}", Partition: "columns"}), "needs columns"},
		{"columns with table", rules(&v1.DispatchRule{Matcher: []string{"*.*"}, Topic: "{schema}_{table}", Columns: []string{"a"}}), `need partition = "columns"`},
		{"avro expression without table", rules(&v1.DispatchRule{Matcher: []string{"*.*"}, Topic: "tidb_{schema}"}), "must contain {schema} and {table}"},
		{"literal topic for many tables", rules(&v1.DispatchRule{Matcher: []string{"shop.*"}, Topic: "orders"}), `sends every table it matches to topic "orders"`},
		{"default topic for many tables", rules(&v1.DispatchRule{Matcher: []string{"shop.orders", "shop.items"}}), `to topic "meta"`},
		{"two single tables on one literal topic", rules(
			&v1.DispatchRule{Matcher: []string{"shop.orders"}, Topic: "t"},
			&v1.DispatchRule{Matcher: []string{"shop.items"}, Topic: "t"}), `both send a table to topic "t"`},
		{"nil rule", rules(nil), "is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewRouter(Config{DefaultTopic: "meta", Rules: tc.rules})
			require.True(t, errors.Is(err, ErrInvalidRule) || errors.Is(err, ErrInvalidTopic), "%v", err)
			require.ErrorContains(t, err, tc.msg)
		})
	}
	_, err := NewRouter(Config{DefaultTopic: "", Rules: nil})
	require.ErrorIs(t, err, ErrInvalidTopic)

	// One table per literal topic is fine, also the same table twice.
	mustRouter(t, Config{DefaultTopic: "meta", Rules: rules(
		&v1.DispatchRule{Matcher: []string{"shop.orders"}, Topic: "orders"},
		&v1.DispatchRule{Matcher: []string{"SHOP.ORDERS"}, Topic: "orders"},
		&v1.DispatchRule{Matcher: []string{"shop.items"}},
	)})
}

func TestOneTablePerTopic(t *testing.T) {
	// Sanitising maps distinct names to one topic; only the table list can
	// show it.
	r := mustRouter(t, Config{DefaultTopic: "meta", Rules: rules(
		&v1.DispatchRule{Matcher: []string{"*.*"}, Topic: "{schema}_{table}"})})
	require.NoError(t, r.CheckTables([]TableName{{"a", "b"}, {"a", "c"}, {"a", "b"}}))
	err := r.CheckTables([]TableName{{"a_b", "c"}, {"a", "b_c"}, {"x", "y z"}, {"x", "y$z"}})
	require.ErrorIs(t, err, ErrTopicConflict)
	require.ErrorContains(t, err, `a_b.c and a.b_c on topic "a_b_c"`)
	require.ErrorContains(t, err, `x.y z and x.y$z on topic "x_y_z"`)

	// The implicit default rule: two unmatched tables meet on the default
	// topic. The guard in Route catches it too.
	r = mustRouter(t, Config{DefaultTopic: "meta", Rules: rules(
		&v1.DispatchRule{Matcher: []string{"shop.*"}, Topic: "{schema}_{table}"})})
	require.ErrorIs(t, r.CheckTables([]TableName{{"shop", "a"}, {"crm", "u"}, {"crm", "v"}}), ErrTopicConflict)
	u := newTable(t, "crm", "u", 10, 1, []colSpec{{name: "id", tp: mysql.TypeLong}}, "id")
	v := newTable(t, "crm", "v", 11, 1, []colSpec{{name: "id", tp: mysql.TypeLong}}, "id")
	topic, _, err := r.Route(&row.Row{Table: u, Op: row.Insert, Cols: []types.Datum{types.NewIntDatum(1)}})
	require.NoError(t, err)
	require.Equal(t, "meta", topic)
	// A new version of the same table keeps its topic.
	u2 := newTable(t, "crm", "u", 10, 2, []colSpec{{name: "id", tp: mysql.TypeLong}, {name: "x", tp: mysql.TypeLong}}, "id")
	_, _, err = r.Route(&row.Row{Table: u2, Op: row.Insert, Cols: []types.Datum{types.NewIntDatum(1), {}}})
	require.NoError(t, err)
	_, _, err = r.Route(&row.Row{Table: v, Op: row.Insert, Cols: []types.Datum{types.NewIntDatum(1)}})
	require.ErrorIs(t, err, ErrTopicConflict)
	require.ErrorContains(t, err, `crm.u and crm.v both route to topic "meta" by the implicit default rule`)
}

func TestPlanCacheFollowsVersion(t *testing.T) {
	r := mustRouter(t, Config{DefaultTopic: "meta", Rules: rules(
		&v1.DispatchRule{Matcher: []string{"*.*"}, Topic: "{schema}_{table}", Partition: "columns", Columns: []string{"c"}})})
	v1t := newTable(t, "s", "t", 5, 1, []colSpec{{name: "id", tp: mysql.TypeLong}}, "id")
	_, err := r.Plan(v1t)
	require.ErrorContains(t, err, `has no column ["c"]`)
	v2t := newTable(t, "s", "t", 5, 2, []colSpec{{name: "id", tp: mysql.TypeLong}, {name: "c", tp: mysql.TypeLong}}, "id")
	p, err := r.Plan(v2t)
	require.NoError(t, err)
	p2, err := r.Plan(v2t)
	require.NoError(t, err)
	require.Same(t, p, p2)
	// A row of another version is refused rather than hashed with the
	// wrong columns.
	_, err = p.Hash(&row.Row{Table: v1t, Op: row.Insert, Cols: []types.Datum{types.NewIntDatum(1)}})
	require.ErrorIs(t, err, ErrRow)
	h, err := p.Hash(&row.Row{Table: v2t, Op: row.Insert, Cols: []types.Datum{types.NewIntDatum(1), types.NewIntDatum(9)}})
	require.NoError(t, err)
	require.Equal(t, refHash([2]string{"s", "t"}, [2]string{"c", "9"}), h)
}

// TestHashModuloMatchesTiCDC pins the partition_hash contract: TiCDC
// computes int32(sum32 % uint32(n)) for the CRC partitioners and
// int32(commitTs % uint64(n)) for ts; the producer computes
// hash % uint64(n) on our uint64. They agree for every partition count a
// topic can have (1 … 2³¹-1), provided the producer reduces unsigned.
func TestHashModuloMatchesTiCDC(t *testing.T) {
	ns := []int32{1, 2, 3, 7, 12, 100, 1000, 1 << 20, math.MaxInt32}
	for i := range uint32(2000) {
		sum32 := i*2654435761 ^ 0x8c0469fd
		commitTs := uint64(449218466452733953) + uint64(i)*7919
		for _, n := range ns {
			require.Equal(t, int64(int32(sum32%uint32(n))), int64(uint64(sum32)%uint64(n)))
			require.Equal(t, int64(int32(commitTs%uint64(n))), int64(commitTs%uint64(n)))
		}
	}
}

// FuzzSubstitute checks that a per-table expression with a fixed prefix
// always yields a name Kafka accepts, whatever the names hold.
func FuzzSubstitute(f *testing.F) {
	f.Add("shop", "orders")
	f.Add("库", "表")
	f.Add(".", ".")
	f.Add(strings.Repeat("x", 300), "\xff\xfe")
	topic, err := ParseTopic("tidb_{schema}_{table}")
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, schema, table string) {
		name := topic.Substitute(schema, table)
		require.NoError(t, ValidateTopicName(name))
	})
}
