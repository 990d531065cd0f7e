package service

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pingcap/tidb/pkg/kv"
	"github.com/pingcap/tidb/pkg/meta/model"
	pmodel "github.com/pingcap/tidb/pkg/parser/model"
	"github.com/pingcap/tidb/pkg/parser/mysql"
	"github.com/pingcap/tidb/pkg/tablecodec"
	"github.com/pingcap/tidb/pkg/types"
	"github.com/pingcap/tidb/pkg/util/rowcodec"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tidestream/tidestream/encoder/internal/avrotest"
	"github.com/tidestream/tidestream/encoder/schema"
	"github.com/tidestream/tidestream/proto/contract"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// grpc's and the http test server's background goroutines end
		// asynchronously after Close.
		goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

const (
	tableID = 100
	snapTs  = 1000
)

// fakeSorter serves SorterService from test scripts: DDL pipelines
// (negative ids) stream what the test pushes on ddl, table pipelines run
// table.
type fakeSorter struct {
	tidestreamv1.UnimplementedSorterServiceServer

	ddl   chan *tidestreamv1.SortedBatch
	table func(req *tidestreamv1.SubscribeRequest, stream grpc.ServerStreamingServer[tidestreamv1.SortedBatch]) error
	// ddlScript, when set, serves DDL pipelines instead of ddl.
	ddlScript func(req *tidestreamv1.SubscribeRequest, stream grpc.ServerStreamingServer[tidestreamv1.SortedBatch]) error

	mu   sync.Mutex
	reqs []*tidestreamv1.SubscribeRequest
	acks []*tidestreamv1.PipelineProgress
}

func (f *fakeSorter) Subscribe(req *tidestreamv1.SubscribeRequest, stream grpc.ServerStreamingServer[tidestreamv1.SortedBatch]) error {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()
	if req.GetPipelineId() < 0 && f.ddlScript != nil {
		return f.ddlScript(req, stream)
	}
	if req.GetPipelineId() < 0 {
		for {
			select {
			case <-stream.Context().Done():
				return nil
			case b := <-f.ddl:
				if err := stream.Send(b); err != nil {
					return err
				}
			}
		}
	}
	return f.table(req, stream)
}

func (f *fakeSorter) Ack(_ context.Context, p *tidestreamv1.PipelineProgress) (*tidestreamv1.AckResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.acks = append(f.acks, p)
	return &tidestreamv1.AckResponse{}, nil
}

func (f *fakeSorter) tableReqs() []*tidestreamv1.SubscribeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*tidestreamv1.SubscribeRequest
	for _, r := range f.reqs {
		if r.GetPipelineId() > 0 {
			out = append(out, r)
		}
	}
	return out
}

func (f *fakeSorter) tableAcks() []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []uint64
	for _, a := range f.acks {
		if a.GetPipelineId() > 0 {
			out = append(out, a.GetCheckpointTs())
		}
	}
	return out
}

// env is an encoder service between a fake sorter and a test producer.
type env struct {
	sorter   *fakeSorter
	svc      *Service
	client   tidestreamv1.EncoderServiceClient
	registry *srfake.Registry
	consumer *avrotest.Consumer
	info     *tidestreamv1.ChangefeedInfo
}

func serve(t testing.TB, register func(*grpc.Server)) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	g := grpc.NewServer()
	register(g)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

// newEnv starts the pieces; snap is the upstream schema at any ts, table
// the sorter's script for table pipelines.
func newEnv(t testing.TB, table *model.TableInfo, script func(*tidestreamv1.SubscribeRequest, grpc.ServerStreamingServer[tidestreamv1.SortedBatch]) error, tweak func(*Config)) *env {
	t.Helper()
	e := &env{sorter: &fakeSorter{ddl: make(chan *tidestreamv1.SortedBatch, 16), table: script}}
	sorterAddr := serve(t, func(g *grpc.Server) { tidestreamv1.RegisterSorterServiceServer(g, e.sorter) })
	e.registry = srfake.New()
	t.Cleanup(e.registry.Close)
	e.info = &tidestreamv1.ChangefeedInfo{
		Namespace: "default", Id: "cf", SinkUri: "kafka://127.0.0.1:9092/default-topic?protocol=avro",
		Kafka: &tidestreamv1.KafkaSink{Topic: "default-topic"},
		Avro:  &tidestreamv1.AvroOptions{DecimalHandlingMode: "precise", BigintUnsignedHandlingMode: "long"},
		Config: &tidestreamv1.ReplicaConfig{Sink: &tidestreamv1.SinkConfig{
			Protocol: "avro", SchemaRegistry: e.registry.URL(),
			Dispatchers: []*tidestreamv1.DispatchRule{{Matcher: []string{"*.*"}, Topic: "tidb_{schema}_{table}", Partition: "index-value"}},
		}},
	}
	cfg := Config{
		MemberID: "m1",
		Changefeeds: func(_ context.Context, ns, id string) (*tidestreamv1.ChangefeedInfo, error) {
			if ns != "default" || id != "cf" {
				return nil, ErrChangefeedNotFound
			}
			return e.info, nil
		},
		LoadSnapshot: func(_ context.Context, _ []string, ts uint64) (*schema.Snapshot, error) {
			return &schema.Snapshot{
				Ts: ts, SchemaVersion: 10,
				DBs:      []*model.DBInfo{{ID: 1, Name: pmodel.NewCIStr("test"), State: model.StatePublic}},
				Tables:   map[int64][]*model.TableInfo{1: {table}},
				JobTable: jobTableInfo(),
			}, nil
		},
		SorterAddr:   sorterAddr,
		RetryBackoff: time.Millisecond,
		IdleTimeout:  time.Millisecond,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	svc, err := New(cfg)
	require.NoError(t, err)
	e.svc = svc
	addr := serve(t, svc.Register)
	t.Cleanup(svc.Close)
	cc, err := grpc.NewClient(addr, append(contract.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	e.client = tidestreamv1.NewEncoderServiceClient(cc)
	cl, err := sr.NewClient(sr.URLs(e.registry.URL()))
	require.NoError(t, err)
	e.consumer = avrotest.NewConsumer(cl)
	return e
}

// resolveDDL moves the DDL stream's resolved ts.
func (e *env) resolveDDL(ts uint64, jobs ...*tidestreamv1.RawKVEvent) {
	e.sorter.ddl <- &tidestreamv1.SortedBatch{Events: jobs, ResolvedTs: ts}
}

func tableSpan() []*tidestreamv1.Span {
	return []*tidestreamv1.Span{{StartKey: []byte("a"), EndKey: []byte("b")}}
}

func (e *env) subscribe(ctx context.Context, t *testing.T, epoch, from uint64) grpc.ServerStreamingClient[tidestreamv1.EncodedBatch] {
	t.Helper()
	st, err := e.client.Subscribe(ctx, &tidestreamv1.SubscribeRequest{ChangefeedId: "cf", PipelineId: 1, Epoch: epoch, FromTs: from, Spans: tableSpan()})
	require.NoError(t, err)
	return st
}

// got is one received record, decoded.
type got struct {
	key, value map[string]any
	rec        *tidestreamv1.EncodedRecord
}

// collect receives until n records and a resolved ts ≥ until arrived.
func (e *env) collect(ctx context.Context, t *testing.T, st grpc.ServerStreamingClient[tidestreamv1.EncodedBatch], n int, until uint64) []got {
	t.Helper()
	var out []got
	var resolved uint64
	for len(out) < n || resolved < until {
		b, err := st.Recv()
		require.NoError(t, err)
		for _, r := range b.GetRecords() {
			g := got{rec: r}
			g.key, _ = e.consumer.Decode(ctx, t, r.GetKey())
			if !r.GetTombstone() {
				g.value, _ = e.consumer.Decode(ctx, t, r.GetValue())
			}
			out = append(out, g)
		}
		resolved = max(resolved, b.GetResolvedTs())
	}
	return out
}

// Fixtures, written with TiDB's own encoders.

func col(id int64, name string, tp byte, flag uint) *model.ColumnInfo {
	c := &model.ColumnInfo{ID: id, Name: pmodel.NewCIStr(name), Offset: int(id - 1), State: model.StatePublic, Version: model.CurrLatestColumnInfoVersion}
	c.FieldType = *types.NewFieldType(tp)
	c.SetFlag(flag)
	return c
}

// keyedTable is test.t (id BIGINT PRIMARY KEY, v BIGINT).
func keyedTable() *model.TableInfo {
	return &model.TableInfo{
		ID: tableID, Name: pmodel.NewCIStr("t"), State: model.StatePublic, PKIsHandle: true,
		Columns:     []*model.ColumnInfo{col(1, "id", mysql.TypeLonglong, mysql.PriKeyFlag|mysql.NotNullFlag), col(2, "v", mysql.TypeLonglong, 0)},
		MaxColumnID: 2,
	}
}

// uniqueKeyTable is test.t (u BIGINT NOT NULL UNIQUE, v BIGINT): no primary
// key, so rows are keyed by _tidb_rowid and the Kafka key is u.
func uniqueKeyTable() *model.TableInfo {
	cols := []*model.ColumnInfo{col(1, "u", mysql.TypeLonglong, mysql.NotNullFlag|mysql.UniqueKeyFlag), col(2, "v", mysql.TypeLonglong, 0)}
	return &model.TableInfo{
		ID: tableID, Name: pmodel.NewCIStr("t"), State: model.StatePublic, Columns: cols, MaxColumnID: 2,
		Indices: []*model.IndexInfo{{ID: 1, Name: pmodel.NewCIStr("u"), Unique: true, State: model.StatePublic,
			Columns: []*model.IndexColumn{{Name: cols[0].Name, Offset: 0, Length: types.UnspecifiedLength}}}},
	}
}

func rowValue(t testing.TB, ids []int64, vals ...any) []byte {
	t.Helper()
	b, err := tablecodec.EncodeRow(time.UTC, types.MakeDatums(vals...), ids, nil, nil, nil, &rowcodec.Encoder{Enable: true})
	require.NoError(t, err)
	return b
}

func rowKey(handle int64) []byte {
	return tablecodec.EncodeRowKeyWithHandle(tableID, kv.IntHandle(handle))
}

// put is an insert into the keyed table (the handle column is not stored).
func put(t testing.TB, id, v int64, start, commit uint64) *tidestreamv1.RawKVEvent {
	return &tidestreamv1.RawKVEvent{Key: rowKey(id), Value: rowValue(t, []int64{2}, v), Op: tidestreamv1.OpType_OP_TYPE_PUT, StartTs: start, CommitTs: commit}
}

func jobTableInfo() *model.TableInfo {
	mk := func(id int64, name string, tp byte, flag uint) *model.ColumnInfo {
		c := col(id, name, tp, flag)
		c.Offset = int(id - 1)
		return c
	}
	return &model.TableInfo{
		ID: schema.JobTableID, Name: pmodel.NewCIStr("tidb_ddl_job"), PKIsHandle: true, State: model.StatePublic,
		Columns: []*model.ColumnInfo{
			mk(1, "job_id", mysql.TypeLonglong, mysql.PriKeyFlag|mysql.NotNullFlag),
			mk(2, "job_meta", mysql.TypeLongBlob, mysql.BinaryFlag),
		},
	}
}

// jobEvent is the Done row of a job in mysql.tidb_ddl_job.
func jobEvent(t testing.TB, j *model.Job, commit uint64) *tidestreamv1.RawKVEvent {
	t.Helper()
	meta, err := j.Encode(true)
	require.NoError(t, err)
	return &tidestreamv1.RawKVEvent{
		Key:   tablecodec.EncodeRowKeyWithHandle(schema.JobTableID, kv.IntHandle(j.ID)),
		Value: rowValue(t, []int64{2}, meta), Op: tidestreamv1.OpType_OP_TYPE_PUT, StartTs: commit - 1, CommitTs: commit,
	}
}
