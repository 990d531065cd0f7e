package mount

import (
	"strings"
	"testing"
	"time"

	"github.com/pingcap/tidb/pkg/meta/model"
	"github.com/pingcap/tidb/pkg/parser/mysql"
	"github.com/pingcap/tidb/pkg/types"

	"github.com/tidestream/tidestream/encoder/row"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// benchTable is a 10-column table whose stored rows are about 200 bytes.
func benchTable(b *testing.B) (*row.Table, []byte) {
	dec := ft(mysql.TypeNewDecimal, 0)
	dec.SetFlen(10)
	dec.SetDecimal(2)
	info := tableInfo(500, "bench", []*model.ColumnInfo{
		column(1, "id", ft(mysql.TypeLonglong, pkFlag)),
		column(2, "c_int", ft(mysql.TypeLong, 0)),
		column(3, "c_bigint", ft(mysql.TypeLonglong, 0)),
		column(4, "c_name", strFt(mysql.TypeVarchar, 64, "utf8mb4_general_ci", 0)),
		column(5, "c_note", strFt(mysql.TypeVarchar, 128, bin, 0)),
		column(6, "c_dec", dec),
		column(7, "c_dt", ft(mysql.TypeDatetime, 0)),
		column(8, "c_ts", ft(mysql.TypeTimestamp, 0)),
		column(9, "c_double", ft(mysql.TypeDouble, 0)),
		column(10, "c_code", strFt(mysql.TypeVarchar, 32, bin, 0)),
	})
	info.PKIsHandle = true
	tbl := mustTable(b, info)
	d := types.NewDecFromStringForTest("12345.67")
	value := encodeV2(b, time.UTC,
		cell{2, types.NewIntDatum(123456)},
		cell{3, types.NewIntDatum(9876543210)},
		cell{4, types.NewStringDatum(strings.Repeat("n", 40))},
		cell{5, types.NewStringDatum(strings.Repeat("x", 80))},
		cell{6, types.NewDecimalDatum(d)},
		cell{7, types.NewTimeDatum(mustTime(b, "2024-05-06 12:00:00", mysql.TypeDatetime, 0))},
		cell{8, types.NewTimeDatum(mustTime(b, "2024-05-06 12:00:00", mysql.TypeTimestamp, 0))},
		cell{9, types.NewFloat64Datum(3.25)},
		cell{10, types.NewStringDatum(strings.Repeat("c", 20))},
	)
	return tbl, value
}

func BenchmarkMount(b *testing.B) {
	tbl, value := benchTable(b)
	b.Logf("stored row: %d bytes", len(value))
	var tables Tables = anyTables{tbl} // not recording, converted once: the benchmark measures mount alone
	loc, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		ev   *tidestreamv1.RawKVEvent
	}{
		{"insert", put(intKey(500, 1), value, nil, 10)},
		{"update", put(intKey(500, 1), value, value, 10)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			m := newMounter(b, Config{TimeZone: loc})
			var out []row.Row
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.ev.Value) + len(bc.ev.OldValue)))
			for b.Loop() {
				var err error
				out, err = m.Mount(bc.ev, tables, out[:0])
				if err != nil || len(out) != 1 {
					b.Fatal(err, len(out))
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
