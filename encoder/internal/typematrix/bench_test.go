package typematrix

import (
	"strings"
	"testing"
	"time"

	"github.com/pingcap/tidb/pkg/kv"
	"github.com/pingcap/tidb/pkg/meta/model"
	pmodel "github.com/pingcap/tidb/pkg/parser/model"
	"github.com/pingcap/tidb/pkg/parser/mysql"
	"github.com/pingcap/tidb/pkg/tablecodec"
	"github.com/pingcap/tidb/pkg/types"
	"github.com/pingcap/tidb/pkg/util/rowcodec"

	"github.com/tidestream/tidestream/encoder/avro"
	"github.com/tidestream/tidestream/encoder/dispatch"
	"github.com/tidestream/tidestream/encoder/mount"
	"github.com/tidestream/tidestream/encoder/row"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// oneTable is the schema history of a benchmark: one table version, built
// once, as the real history hands out.
type oneTable struct{ t *row.Table }

func (o oneTable) TableAt(int64, uint64) (*row.Table, error) { return o.t, nil }

// BenchmarkEncodePipeline measures the encoder's per-row CPU cost on one
// goroutine: mount a raw insert of a 10-column row of about 200 stored
// bytes, route it and hash its key (index-value, TiCDC's key-affine
// partitioner), and write its Confluent-framed Avro key and value. Schema
// ids come from the registry client's cache in the pipeline, which costs a
// map lookup and is left out. rows/s is per core: the pipeline runs one
// such loop per table pipeline goroutine and shares nothing per row.
func BenchmarkEncodePipeline(b *testing.B) {
	const tableID = 500
	ft := func(tp byte, flag uint, flen, dec int, collation string) types.FieldType {
		f := types.NewFieldType(tp)
		f.SetFlag(flag)
		if flen != 0 {
			f.SetFlen(flen)
		}
		if dec != 0 {
			f.SetDecimal(dec)
		}
		if collation != "" {
			f.SetCharset(mysql.DefaultCharset)
			if collation == "binary" {
				f.SetCharset("binary")
			}
			f.SetCollate(collation)
		}
		return *f
	}
	cols := []types.FieldType{
		ft(mysql.TypeLonglong, mysql.PriKeyFlag|mysql.NotNullFlag, 20, 0, ""),
		ft(mysql.TypeLong, 0, 11, 0, ""),
		ft(mysql.TypeLonglong, 0, 20, 0, ""),
		ft(mysql.TypeVarchar, 0, 64, 0, "utf8mb4_bin"),
		ft(mysql.TypeVarchar, 0, 128, 0, "utf8mb4_bin"),
		ft(mysql.TypeNewDecimal, 0, 10, 2, ""),
		ft(mysql.TypeDatetime, 0, 19, 0, ""),
		ft(mysql.TypeTimestamp, 0, 19, 0, ""),
		ft(mysql.TypeDouble, 0, 22, 0, ""),
		ft(mysql.TypeVarchar, 0, 32, 0, "binary"),
	}
	names := []string{"id", "c_int", "c_bigint", "c_name", "c_note", "c_dec", "c_dt", "c_ts", "c_double", "c_code"}
	info := &model.TableInfo{ID: tableID, Name: pmodel.NewCIStr("bench"), State: model.StatePublic, PKIsHandle: true}
	for i := range cols {
		info.Columns = append(info.Columns, &model.ColumnInfo{
			ID: int64(i + 1), Name: pmodel.NewCIStr(names[i]), Offset: i, FieldType: cols[i],
			State: model.StatePublic, Version: model.CurrLatestColumnInfoVersion,
		})
	}
	info.MaxColumnID = int64(len(cols))
	tbl, err := row.NewTable("shop", info, 1)
	if err != nil {
		b.Fatal(err)
	}

	loc, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		b.Fatal(err)
	}
	when := func(tp byte) types.Datum {
		tm, err := types.ParseTime(types.DefaultStmtNoWarningContext, "2024-05-06 12:00:00", tp, 0)
		if err != nil {
			b.Fatal(err)
		}
		return types.NewTimeDatum(tm)
	}
	// The int handle is in the key only, as TiDB stores it.
	values := []types.Datum{
		types.NewIntDatum(123456),
		types.NewIntDatum(9876543210),
		types.NewStringDatum(strings.Repeat("n", 40)),
		types.NewStringDatum(strings.Repeat("x", 80)),
		types.NewDecimalDatum(types.NewDecFromStringForTest("12345.67")),
		when(mysql.TypeDatetime),
		when(mysql.TypeTimestamp),
		types.NewFloat64Datum(3.25),
		types.NewBytesDatum([]byte(strings.Repeat("c", 20))),
	}
	value, err := tablecodec.EncodeRow(time.UTC, values, []int64{2, 3, 4, 5, 6, 7, 8, 9, 10}, nil, nil, nil, &rowcodec.Encoder{Enable: true})
	if err != nil {
		b.Fatal(err)
	}
	ev := &tidestreamv1.RawKVEvent{
		Key:   tablecodec.EncodeRowKeyWithHandle(tableID, kv.IntHandle(42)),
		Value: value, Op: tidestreamv1.OpType_OP_TYPE_PUT, StartTs: 10, CommitTs: 11,
	}

	m, err := mount.New(mount.Config{TimeZone: loc})
	if err != nil {
		b.Fatal(err)
	}
	router, err := dispatch.NewRouter(dispatch.Config{
		Rules:        []*tidestreamv1.DispatchRule{{Matcher: []string{"shop.bench"}, Partition: "index-value"}},
		DefaultTopic: "bench",
	})
	if err != nil {
		b.Fatal(err)
	}
	codec, err := avro.NewCodec(avro.DefaultConfig(), tbl)
	if err != nil {
		b.Fatal(err)
	}
	tables := mount.Tables(oneTable{tbl})
	var (
		rows     []row.Row
		key, val []byte
	)
	b.Logf("stored row: %d bytes key, %d bytes value", len(ev.Key), len(ev.Value))
	b.SetBytes(int64(len(ev.Key) + len(ev.Value)))
	b.ReportAllocs()
	for b.Loop() {
		rows, err = m.Mount(ev, tables, rows[:0])
		if err != nil || len(rows) != 1 {
			b.Fatal(err, len(rows))
		}
		r := &rows[0]
		if _, _, err = router.Route(r); err != nil {
			b.Fatal(err)
		}
		if key, err = codec.AppendKey(key[:0], 1, r); err != nil {
			b.Fatal(err)
		}
		if val, err = codec.AppendValue(val[:0], 2, r); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	b.Logf("Avro record: %d bytes key, %d bytes value", len(key), len(val))
}
