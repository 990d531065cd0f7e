package service

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pingcap/tidb/pkg/meta/model"
	pmodel "github.com/pingcap/tidb/pkg/parser/model"
	"github.com/pingcap/tidb/pkg/parser/mysql"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tidestream/tidestream/proto/contract"

	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// wideTable is test.t with ten columns; its rows are about 200 bytes.
func wideTable() *model.TableInfo {
	cols := []*model.ColumnInfo{col(1, "id", mysql.TypeLonglong, mysql.PriKeyFlag|mysql.NotNullFlag)}
	for i := 2; i <= 10; i++ {
		tp := mysql.TypeLonglong
		switch i % 3 {
		case 0:
			tp = mysql.TypeVarchar
		case 1:
			tp = mysql.TypeDouble
		}
		c := col(int64(i), fmt.Sprintf("c%d", i), tp, 0)
		if tp == mysql.TypeVarchar {
			c.SetFlen(64)
			c.SetCharset(mysql.DefaultCharset)
			c.SetCollate(mysql.DefaultCollationName)
		}
		cols = append(cols, c)
	}
	return &model.TableInfo{ID: tableID, Name: pmodel.NewCIStr("t"), State: model.StatePublic, PKIsHandle: true, Columns: cols, MaxColumnID: 10}
}

// benchEvents are the distinct rows a benchmark sorter cycles through, so
// that the setup leaves no large heap behind to tax the measured part's GC.
func benchEvents(b *testing.B) (evs []*tidestreamv1.RawKVEvent, rowBytes int) {
	for i := range 1000 {
		var vals []any
		var ids []int64
		for c := int64(2); c <= 10; c++ {
			ids = append(ids, c)
			switch c % 3 {
			case 0:
				vals = append(vals, strings.Repeat(string(rune('a'+c)), 30)+fmt.Sprint(i))
			case 1:
				vals = append(vals, float64(i)*1.5)
			default:
				vals = append(vals, int64(i)*int64(c))
			}
		}
		ev := &tidestreamv1.RawKVEvent{Key: rowKey(int64(i)), Value: rowValue(b, ids, vals...), Op: tidestreamv1.OpType_OP_TYPE_PUT}
		rowBytes += len(ev.Key) + len(ev.Value)
		evs = append(evs, ev)
	}
	return evs, rowBytes / len(evs)
}

// benchSorter streams n puts, one transaction each, in batches of 1000
// with a resolved ts.
func benchSorter(evs []*tidestreamv1.RawKVEvent, n int) func(*tidestreamv1.SubscribeRequest, grpc.ServerStreamingServer[tidestreamv1.SortedBatch]) error {
	return func(_ *tidestreamv1.SubscribeRequest, st grpc.ServerStreamingServer[tidestreamv1.SortedBatch]) error {
		const batch = 1000
		for i := 0; i < n; i += batch {
			out := &tidestreamv1.SortedBatch{}
			for j := i; j < min(i+batch, n); j++ {
				tmpl := evs[j%len(evs)]
				ts := benchTs(j)
				out.Events = append(out.Events, &tidestreamv1.RawKVEvent{Key: tmpl.Key, Value: tmpl.Value, Op: tmpl.Op, StartTs: ts - 1, CommitTs: ts})
			}
			out.ResolvedTs = out.Events[len(out.Events)-1].CommitTs
			if err := st.Send(out); err != nil {
				return err
			}
		}
		<-st.Context().Done()
		return nil
	}
}

func benchTs(i int) uint64 { return snapTs + uint64(2*i) + 2 }

// BenchmarkService is the whole encoder stage as a producer sees it: raw
// events of a ten-column ~200-byte row from a sorter over loopback gRPC,
// decoded, Avro-encoded with registry ids (cached after the first row) and
// streamed back over gRPC. rows/cpu-s is per CPU-second of the whole
// process, which also runs the fake sorter and the receiving producer;
// BenchmarkTransportOnly measures those two ends alone, so that
// encoder-only ns/row ≈ cpu-ns/row here − cpu-ns/row there.
func BenchmarkService(b *testing.B) {
	evs, rowBytes := benchEvents(b)
	n := b.N
	e := newEnv(b, wideTable(), benchSorter(evs, n), nil)
	e.resolveDDL(benchTs(n))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	cpu0 := cpuTime()
	b.ResetTimer()
	began := time.Now()
	st, err := e.client.Subscribe(ctx, &tidestreamv1.SubscribeRequest{ChangefeedId: "cf", PipelineId: 1, Epoch: 1, FromTs: snapTs, Spans: tableSpan()})
	if err != nil {
		b.Fatal(err)
	}
	got := 0
	for got < n {
		bt, err := st.Recv()
		if err != nil {
			b.Fatal(err)
		}
		got += len(bt.GetRecords())
	}
	report(b, n, time.Since(began), cpuTime()-cpu0)
	b.ReportMetric(float64(rowBytes), "B/row-in")
}

// BenchmarkTransportOnly streams the same events from the same fake sorter
// straight to the receiving side, without an encoder: the cost of the two
// ends BenchmarkService includes.
func BenchmarkTransportOnly(b *testing.B) {
	evs, _ := benchEvents(b)
	n := b.N
	s := &fakeSorter{table: benchSorter(evs, n)}
	cc, err := grpc.NewClient(serve(b, func(g *grpc.Server) { tidestreamv1.RegisterSorterServiceServer(g, s) }),
		append(contract.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	cpu0 := cpuTime()
	b.ResetTimer()
	began := time.Now()
	st, err := tidestreamv1.NewSorterServiceClient(cc).Subscribe(ctx, &tidestreamv1.SubscribeRequest{ChangefeedId: "cf", PipelineId: 1, Epoch: 1, FromTs: snapTs, Spans: tableSpan()})
	if err != nil {
		b.Fatal(err)
	}
	got := 0
	for got < n {
		bt, err := st.Recv()
		if err != nil {
			b.Fatal(err)
		}
		got += len(bt.GetEvents())
	}
	report(b, n, time.Since(began), cpuTime()-cpu0)
}

func report(b *testing.B, n int, wall, cpu time.Duration) {
	b.StopTimer()
	b.ReportMetric(float64(n)/wall.Seconds(), "rows/s")
	b.ReportMetric(float64(n)/cpu.Seconds(), "rows/cpu-s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(n), "cpu-ns/row")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
