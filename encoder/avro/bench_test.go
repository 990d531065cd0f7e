package avro

import (
	"math/big"
	"testing"

	"github.com/pingcap/tidb/pkg/parser/mysql"
	"github.com/pingcap/tidb/pkg/types"
	"github.com/stretchr/testify/require"

	"github.com/tidestream/tidestream/encoder/row"
)

// benchSpec is a typical OLTP row: 10 columns, about 200 bytes of Avro.
func benchSpec() tableSpec {
	return tableSpec{db: "shop", name: "customers", intHandle: true, cols: []col{
		{name: "id", tp: mysql.TypeLonglong, pk: true},
		{name: "customer_id", tp: mysql.TypeLong, notNull: true},
		{name: "name", tp: mysql.TypeVarchar, flen: 64, notNull: true},
		{name: "email", tp: mysql.TypeVarchar, flen: 128},
		{name: "balance", tp: mysql.TypeNewDecimal, flen: 12, dec: 2, notNull: true},
		{name: "status", tp: mysql.TypeEnum, elems: []string{"active", "blocked"}, notNull: true, def: "active"},
		{name: "score", tp: mysql.TypeDouble},
		{name: "created", tp: mysql.TypeDatetime, dec: 6, notNull: true},
		{name: "updated", tp: mysql.TypeTimestamp, dec: 3, notNull: true, def: "CURRENT_TIMESTAMP(3)"},
		{name: "note", tp: mysql.TypeBlob},
	}}
}

func benchRow(tbl *row.Table) *row.Row {
	return &row.Row{Table: tbl, Op: row.Insert, CommitTs: 449218466452733953, Cols: []types.Datum{
		types.NewIntDatum(1234567890123),
		types.NewIntDatum(987654),
		types.NewStringDatum("Margaret Hamilton-Smith"),
		types.NewStringDatum("margaret.hamilton@example.com"),
		dec("123456.78"),
		types.NewMysqlEnumDatum(types.Enum{Name: "active", Value: 1}),
		types.NewFloat64Datum(4.75),
		tm("2024-04-20 17:00:55.123456", mysql.TypeDatetime, 6),
		tm("2024-04-20 17:00:55.645", mysql.TypeTimestamp, 3),
		types.NewStringDatum("Prefers e-mail contact; VIP since 2019. Ships to the billing address."),
	}}
}

// benchRecord is the same record as a Go struct for hamba's Marshal, with
// the values already in Avro form (the baseline does no TiDB rendering).
type benchRecord struct {
	ID         int64    `avro:"id"`
	CustomerID int32    `avro:"customer_id"`
	Name       string   `avro:"name"`
	Email      *string  `avro:"email"`
	Balance    *big.Rat `avro:"balance"`
	Status     string   `avro:"status"`
	Score      *float64 `avro:"score"`
	Created    string   `avro:"created"`
	Updated    string   `avro:"updated"`
	Note       *string  `avro:"note"`
}

func benchCodec(tb testing.TB) (*TableCodec, *row.Row) {
	cfg := DefaultConfig()
	tbl := benchSpec().build(tb)
	c, err := NewCodec(cfg, tbl)
	require.NoError(tb, err)
	return c, benchRow(tbl)
}

// TestBenchRecordsAgree checks that both benchmarks encode the same bytes,
// so the comparison is like for like, and that a row costs at most two
// allocations (none here: nothing in this row needs one).
func TestBenchRecordsAgree(t *testing.T) {
	c, r := benchCodec(t)
	ours, err := c.AppendValue(nil, 1, r)
	require.NoError(t, err)
	theirs, err := hambaAPI.Marshal(c.ValueAvroSchema(), benchValue())
	require.NoError(t, err)
	require.Equal(t, theirs, ours[5:])
	t.Logf("value body %d bytes", len(ours)-5)

	buf := make([]byte, 0, 1024)
	allocs := testing.AllocsPerRun(200, func() {
		var err error
		buf, err = c.AppendKey(buf[:0], 1, r)
		if err != nil {
			t.Fatal(err)
		}
		buf, err = c.AppendValue(buf, 2, r)
		if err != nil {
			t.Fatal(err)
		}
	})
	require.LessOrEqual(t, allocs, 2.0)
}

func benchValue() *benchRecord {
	email, note, score := "margaret.hamilton@example.com", "Prefers e-mail contact; VIP since 2019. Ships to the billing address.", 4.75
	return &benchRecord{
		ID: 1234567890123, CustomerID: 987654, Name: "Margaret Hamilton-Smith", Email: &email,
		Balance: big.NewRat(12345678, 100), Status: "active", Score: &score,
		Created: "2024-04-20 17:00:55.123456", Updated: "2024-04-20 17:00:55.645", Note: &note,
	}
}

// BenchmarkEncode is our hot path: datums to a Confluent-framed value, into
// a reused buffer.
func BenchmarkEncode(b *testing.B) {
	c, r := benchCodec(b)
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		var err error
		if buf, err = c.AppendValue(buf[:0], 1, r); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(buf)))
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkHambaMarshal is the baseline: hamba/avro's Marshal of the same
// record from a Go struct already holding Avro-ready values.
func BenchmarkHambaMarshal(b *testing.B) {
	c, _ := benchCodec(b)
	schema, v := c.ValueAvroSchema(), benchValue()
	b.ReportAllocs()
	b.ResetTimer()
	var out []byte
	for b.Loop() {
		var err error
		if out, err = hambaAPI.Marshal(schema, v); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(out)))
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
