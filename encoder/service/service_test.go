package service

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pingcap/tidb/pkg/kv"
	"github.com/pingcap/tidb/pkg/meta/model"
	pmodel "github.com/pingcap/tidb/pkg/parser/model"
	"github.com/pingcap/tidb/pkg/parser/mysql"
	"github.com/pingcap/tidb/pkg/tablecodec"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tidestream/tidestream/encoder/schema"
	"github.com/tidestream/tidestream/proto/contract"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// sendAll is a table script: the batches, then wait for the encoder to go.
func sendAll(batches ...*tidestreamv1.SortedBatch) func(*tidestreamv1.SubscribeRequest, grpc.ServerStreamingServer[tidestreamv1.SortedBatch]) error {
	return func(_ *tidestreamv1.SubscribeRequest, st grpc.ServerStreamingServer[tidestreamv1.SortedBatch]) error {
		for _, b := range batches {
			if err := st.Send(b); err != nil {
				return err
			}
		}
		<-st.Context().Done()
		return nil
	}
}

// Chunks are encoded concurrently, the first one last, yet the producer
// gets the rows in the sorter's order. A sender that sent chunks as they
// finished would put row 0 after row 5.
func TestParallelChunksKeepSorterOrder(t *testing.T) {
	ctx := testCtx(t)
	const n = 12
	var evs []*tidestreamv1.RawKVEvent
	for i := range n {
		evs = append(evs, put(t, int64(i), int64(i*10), snapTs+uint64(2*i)+1, snapTs+uint64(2*i)+2))
	}
	last := evs[n-1].CommitTs
	sixthStarted := make(chan struct{})
	e := newEnv(t, keyedTable(), sendAll(&tidestreamv1.SortedBatch{Events: evs, ResolvedTs: last}), func(c *Config) {
		c.Workers, c.InFlight, c.ChunkBytes = 4, n, 1 // one transaction per chunk
		c.Knobs.BeforeEncode = func(seq int) {
			switch seq {
			case 5:
				close(sixthStarted)
			case 0:
				select {
				case <-sixthStarted:
				case <-time.After(10 * time.Second):
				}
			}
		}
	})
	e.resolveDDL(last)
	st := e.subscribe(ctx, t, 1, snapTs)
	recs := e.collect(ctx, t, st, n, last)
	require.Len(t, recs, n)
	for i, r := range recs {
		require.Equal(t, int64(i), r.key["id"], "record %d", i)
		require.Equal(t, int64(i*10), r.value["v"])
		require.Equal(t, "tidb_test_t", r.rec.GetTopic())
		require.Equal(t, evs[i].CommitTs, r.rec.GetCommitTs())
	}
}

// A row is decoded with the schema at its commit ts − 1, which the encoder
// learns from the DDL stream: it holds the row until that stream is
// resolved there. Decoding early fails (the history refuses a ts above its
// resolved one), or would use the old schema and lose column c.
func TestRowsWaitForTheSchemaHistory(t *testing.T) {
	ctx := testCtx(t)
	const ddlAt, rowAt = snapTs + 10, snapTs + 20
	rowSent := make(chan struct{})
	e := newEnv(t, keyedTable(), func(_ *tidestreamv1.SubscribeRequest, st grpc.ServerStreamingServer[tidestreamv1.SortedBatch]) error {
		// Written after ADD COLUMN c: the value holds c.
		ev := &tidestreamv1.RawKVEvent{Key: rowKey(1), Value: rowValue(t, []int64{2, 3}, int64(5), int64(9)),
			Op: tidestreamv1.OpType_OP_TYPE_PUT, StartTs: rowAt - 1, CommitTs: rowAt}
		if err := st.Send(&tidestreamv1.SortedBatch{Events: []*tidestreamv1.RawKVEvent{ev}, ResolvedTs: rowAt}); err != nil {
			return err
		}
		close(rowSent)
		<-st.Context().Done()
		return nil
	}, nil)
	st := e.subscribe(ctx, t, 1, snapTs)
	<-rowSent
	// Only now does the DDL stream deliver ADD COLUMN c (default 7).
	e.resolveDDL(ddlAt, jobEvent(t, addColumnC(t), ddlAt))
	e.resolveDDL(rowAt)
	recs := e.collect(ctx, t, st, 1, rowAt)
	require.Equal(t, int64(5), recs[0].value["v"])
	require.Equal(t, int64(9), recs[0].value["c"], "decoded with the schema after the DDL")
}

// An update that moves a unique key to another row is a delete and an
// insert in one transaction, in key order. When the sorter splits that
// transaction over two batches, the delete must still come out first: a
// tombstone after the insert erases the new row downstream.
func TestTransactionSplitAcrossSorterBatchesKeepsDeletesFirst(t *testing.T) {
	ctx := testCtx(t)
	const start, commit = snapTs + 1, snapTs + 2
	ins := &tidestreamv1.RawKVEvent{Key: rowKey(3), Value: rowValue(t, []int64{1, 2}, int64(1), int64(200)),
		Op: tidestreamv1.OpType_OP_TYPE_PUT, StartTs: start, CommitTs: commit}
	del := &tidestreamv1.RawKVEvent{Key: rowKey(7), OldValue: rowValue(t, []int64{1, 2}, int64(1), int64(100)),
		Op: tidestreamv1.OpType_OP_TYPE_DELETE, StartTs: start, CommitTs: commit}
	e := newEnv(t, uniqueKeyTable(), sendAll(
		&tidestreamv1.SortedBatch{Events: []*tidestreamv1.RawKVEvent{ins}},
		&tidestreamv1.SortedBatch{Events: []*tidestreamv1.RawKVEvent{del}, ResolvedTs: commit},
	), nil)
	e.resolveDDL(commit)
	recs := e.collect(ctx, t, e.subscribe(ctx, t, 1, snapTs), 2, commit)
	require.Len(t, recs, 2)
	require.True(t, recs[0].rec.GetTombstone(), "the delete first")
	require.Equal(t, int64(1), recs[0].key["u"])
	require.False(t, recs[1].rec.GetTombstone())
	require.Equal(t, int64(1), recs[1].key["u"])
	require.Equal(t, int64(200), recs[1].value["v"])
}

// A sorter stream that breaks is re-subscribed from the last resolved ts;
// what the sorter sends again up to the last event already passed on is
// not passed on twice, and nothing after it is missed.
func TestSorterRetryResumesWithoutDuplicates(t *testing.T) {
	ctx := testCtx(t)
	ev := func(i int) *tidestreamv1.RawKVEvent {
		return put(t, int64(i), int64(i), snapTs+uint64(2*i)+1, snapTs+uint64(2*i)+2)
	}
	r1 := ev(2).CommitTs
	var calls atomic.Int32
	e := newEnv(t, keyedTable(), func(req *tidestreamv1.SubscribeRequest, st grpc.ServerStreamingServer[tidestreamv1.SortedBatch]) error {
		switch calls.Add(1) {
		case 1:
			if err := st.Send(&tidestreamv1.SortedBatch{Events: []*tidestreamv1.RawKVEvent{ev(1), ev(2)}, ResolvedTs: r1}); err != nil {
				return err
			}
			// ev(3) and ev(4) share no commit ts: ev(3) is a whole
			// transaction, passed on before the stream breaks.
			if err := st.Send(&tidestreamv1.SortedBatch{Events: []*tidestreamv1.RawKVEvent{ev(3), ev(4)}}); err != nil {
				return err
			}
			return contract.Status(contract.Transient, codes.Unavailable, "sorter restarting")
		default:
			if req.GetFromTs() != r1 {
				return status.Errorf(codes.InvalidArgument, "resumed from %d, want %d", req.GetFromTs(), r1)
			}
			return sendAll(&tidestreamv1.SortedBatch{Events: []*tidestreamv1.RawKVEvent{ev(3), ev(4), ev(5)}, ResolvedTs: ev(5).CommitTs})(req, st)
		}
	}, nil)
	e.resolveDDL(ev(5).CommitTs)
	recs := e.collect(ctx, t, e.subscribe(ctx, t, 1, snapTs), 5, ev(5).CommitTs)
	require.Len(t, recs, 5)
	for i, r := range recs {
		require.Equal(t, int64(i+1), r.key["id"])
	}
	require.GreaterOrEqual(t, calls.Load(), int32(2))
}

// A schema the registry refuses fails the changefeed with the table and the
// DDL that produced the schema.
func TestRegistryRefusalIsFatalAndNamesTheTable(t *testing.T) {
	ctx := testCtx(t)
	evs := []*tidestreamv1.RawKVEvent{put(t, 1, 1, snapTs+1, snapTs+2)}
	e := newEnv(t, keyedTable(), sendAll(&tidestreamv1.SortedBatch{Events: evs, ResolvedTs: snapTs + 2}), nil)
	e.registry.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPost || !strings.Contains(r.URL.Path, "-value/versions") {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		_ = json.NewEncoder(w).Encode(map[string]any{"error_code": 409, "message": "Schema being registered is incompatible"})
		return true
	})
	e.resolveDDL(snapTs + 2)
	st := e.subscribe(ctx, t, 1, snapTs)
	_, err := st.Recv()
	require.Error(t, err)
	require.Equal(t, contract.Fatal, contract.Classify(err), "%v", err)
	require.Contains(t, err.Error(), "test.t")
	require.Contains(t, err.Error(), "incompatible")
}

// While the registry answers 5xx the stream carries the stall as a warning
// (the producer reports it); once it recovers the rows flow.
func TestRegistryStallIsReportedThenRecovers(t *testing.T) {
	ctx := testCtx(t)
	evs := []*tidestreamv1.RawKVEvent{put(t, 1, 1, snapTs+1, snapTs+2)}
	e := newEnv(t, keyedTable(), sendAll(&tidestreamv1.SortedBatch{Events: evs, ResolvedTs: snapTs + 2}), func(c *Config) {
		c.WarnInterval = 20 * time.Millisecond
	})
	var down atomic.Bool
	down.Store(true)
	e.registry.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if !down.Load() {
			return false
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		return true
	})
	e.resolveDDL(snapTs + 2)
	st := e.subscribe(ctx, t, 1, snapTs)
	b, err := st.Recv()
	require.NoError(t, err)
	require.Contains(t, b.GetWarning(), "schema registry")
	require.Empty(t, b.GetRecords())
	down.Store(false)
	recs := e.collect(ctx, t, st, 1, snapTs+2)
	require.Equal(t, int64(1), recs[0].key["id"])
}

// The producer's ack reaches the sorter, never beyond what was sent; an ack
// of an older epoch is refused.
func TestAckIsRelayedNoFurtherThanSent(t *testing.T) {
	ctx := testCtx(t)
	const resolved = snapTs + 2
	e := newEnv(t, keyedTable(), sendAll(&tidestreamv1.SortedBatch{Events: []*tidestreamv1.RawKVEvent{put(t, 1, 1, snapTs+1, resolved)}, ResolvedTs: resolved}), nil)
	e.resolveDDL(resolved)
	st := e.subscribe(ctx, t, 2, snapTs)
	e.collect(ctx, t, st, 1, resolved)
	_, err := e.client.Ack(ctx, &tidestreamv1.PipelineProgress{ChangefeedId: "cf", PipelineId: 1, Epoch: 2, CheckpointTs: resolved + 100})
	require.NoError(t, err)
	require.Equal(t, []uint64{resolved}, e.sorter.tableAcks())
	_, err = e.client.Ack(ctx, &tidestreamv1.PipelineProgress{ChangefeedId: "cf", PipelineId: 1, Epoch: 1, CheckpointTs: resolved})
	require.Equal(t, codes.FailedPrecondition, status.Code(err))
}

// A newer epoch takes the pipeline over and the older stream is told it is
// fenced; the older epoch cannot come back.
func TestNewerEpochFencesTheOlderStream(t *testing.T) {
	ctx := testCtx(t)
	e := newEnv(t, keyedTable(), sendAll(), nil)
	old := e.subscribe(ctx, t, 1, snapTs)
	require.Eventually(t, func() bool { return len(e.sorter.tableReqs()) == 1 }, 10*time.Second, time.Millisecond)
	e.subscribe(ctx, t, 2, snapTs)
	_, err := old.Recv()
	require.Equal(t, contract.Fenced, contract.Classify(err), "%v", err)
	_, err = e.subscribe(ctx, t, 1, snapTs).Recv()
	require.Equal(t, contract.Fenced, contract.Classify(err), "%v", err)
}

// A row that cannot be decoded fails the pipeline naming table, key and
// commit ts; it is never skipped.
func TestUndecodableRowFailsThePipeline(t *testing.T) {
	ctx := testCtx(t)
	bad := &tidestreamv1.RawKVEvent{Key: rowKey(1), Value: []byte{0x80, 0x01, 0xff}, Op: tidestreamv1.OpType_OP_TYPE_PUT, StartTs: snapTs + 1, CommitTs: snapTs + 2}
	e := newEnv(t, keyedTable(), sendAll(&tidestreamv1.SortedBatch{Events: []*tidestreamv1.RawKVEvent{bad}, ResolvedTs: snapTs + 2}), nil)
	e.resolveDDL(snapTs + 2)
	_, err := e.subscribe(ctx, t, 1, snapTs).Recv()
	require.Equal(t, contract.Fatal, contract.Classify(err), "%v", err)
	require.Contains(t, err.Error(), "1002", "commit ts")
}

// What the encoder cannot do fails the pipeline with the reason at once.
func TestChangefeedTheEncoderCannotServe(t *testing.T) {
	ctx := testCtx(t)
	e := newEnv(t, keyedTable(), sendAll(), nil)
	e.info.Config.Sink.Protocol = "canal-json"
	_, err := e.subscribe(ctx, t, 1, snapTs).Recv()
	require.Equal(t, contract.Fatal, contract.Classify(err))
	require.Contains(t, err.Error(), "canal-json")

	e.info.Config.Sink.Protocol = "avro"
	e.info.Config.Integrity = &tidestreamv1.IntegrityConfig{IntegrityCheckLevel: "correctness"}
	_, err = e.subscribe(ctx, t, 2, snapTs).Recv()
	require.Equal(t, contract.Fatal, contract.Classify(err))
	require.Contains(t, err.Error(), "integrity-check-level")

	st, err := e.client.Subscribe(ctx, &tidestreamv1.SubscribeRequest{ChangefeedId: "gone", PipelineId: 1, Epoch: 1, FromTs: snapTs, Spans: tableSpan()})
	require.NoError(t, err)
	_, err = st.Recv()
	require.Equal(t, codes.NotFound, status.Code(err))
	require.Equal(t, contract.Fatal, contract.Classify(err))
}

// Pipelines of one changefeed share one history and one DDL stream; a
// pipeline asking for a ts below the history's start gets its own.
func TestPipelinesShareTheHistory(t *testing.T) {
	ctx := testCtx(t)
	e := newEnv(t, keyedTable(), sendAll(), nil)
	for _, p := range []struct {
		id   int64
		from uint64
	}{{1, snapTs}, {2, snapTs + 5}, {3, snapTs - 5}} {
		_, err := e.client.Subscribe(ctx, &tidestreamv1.SubscribeRequest{ChangefeedId: "cf", PipelineId: p.id, Epoch: 1, FromTs: p.from, Spans: tableSpan()})
		require.NoError(t, err)
		// Subscribe returns before the server attached; wait for each to
		// reach the sorter so the order is the one written here.
		require.Eventually(t, func() bool { return len(e.sorter.tableReqs()) == int(p.id) }, 10*time.Second, time.Millisecond)
	}
	ddl := func() map[int64]uint64 {
		e.sorter.mu.Lock()
		defer e.sorter.mu.Unlock()
		m := map[int64]uint64{}
		for _, r := range e.sorter.reqs {
			if r.GetPipelineId() < 0 {
				m[r.GetPipelineId()] = r.GetFromTs()
			}
		}
		return m
	}
	// Each history subscribes its DDL stream from a goroutine of its own.
	require.Eventually(t, func() bool { return len(ddl()) >= 2 }, 10*time.Second, time.Millisecond)
	streams := ddl()
	require.Len(t, streams, 2, "one DDL stream for pipelines 1 and 2, another for 3")
	var starts []uint64
	for _, from := range streams {
		starts = append(starts, from)
	}
	require.ElementsMatch(t, []uint64{snapTs, snapTs - 5}, starts)
}

// addColumnC is ALTER TABLE t ADD COLUMN c BIGINT DEFAULT 7 on keyedTable.
func addColumnC(t *testing.T) *model.Job {
	next := keyedTable()
	c := col(3, "c", mysql.TypeLonglong, 0)
	require.NoError(t, c.SetOriginDefaultValue(int64(7)))
	require.NoError(t, c.SetDefaultValue(int64(7)))
	next.Columns = append(next.Columns, c)
	next.MaxColumnID = 3
	return &model.Job{ID: 11, Type: model.ActionAddColumn, SchemaID: 1, TableID: tableID, State: model.JobStateDone, Version: model.JobVersion2,
		Query: "ALTER TABLE t ADD COLUMN c BIGINT DEFAULT 7", BinlogInfo: &model.HistoryInfo{SchemaVersion: 11, TableInfo: next}}
}

// Acks release old schema versions. A pipeline that starts below what was
// released (a table restarted from its older checkpoint) must not be given
// that history: it gets one of its own and decodes its rows with the schema
// they were written with.
func TestPipelineBelowReleasedVersionsGetsItsOwnHistory(t *testing.T) {
	ctx := testCtx(t)
	const ddlAt, acked = snapTs + 1000, snapTs + 2000
	e := newEnv(t, keyedTable(), func(req *tidestreamv1.SubscribeRequest, st grpc.ServerStreamingServer[tidestreamv1.SortedBatch]) error {
		if req.GetPipelineId() == 1 {
			return sendAll(&tidestreamv1.SortedBatch{Events: []*tidestreamv1.RawKVEvent{put(t, 1, 1, snapTs+1, snapTs+2)}, ResolvedTs: acked})(req, st)
		}
		// Pipeline 2 restarts from before the DDL: its row has no c.
		return sendAll(&tidestreamv1.SortedBatch{Events: []*tidestreamv1.RawKVEvent{put(t, 2, 2, ddlAt-11, ddlAt-10)}, ResolvedTs: ddlAt - 10})(req, st)
	}, nil)
	job := addColumnC(t)
	e.sorter.ddlScript = func(req *tidestreamv1.SubscribeRequest, st grpc.ServerStreamingServer[tidestreamv1.SortedBatch]) error {
		b := &tidestreamv1.SortedBatch{ResolvedTs: acked}
		if req.GetFromTs() < ddlAt {
			b.Events = []*tidestreamv1.RawKVEvent{jobEvent(t, job, ddlAt)}
		}
		return sendAll(b)(req, st)
	}
	st := e.subscribe(ctx, t, 1, snapTs)
	e.collect(ctx, t, st, 1, acked)
	_, err := e.client.Ack(ctx, &tidestreamv1.PipelineProgress{ChangefeedId: "cf", PipelineId: 1, Epoch: 1, CheckpointTs: acked})
	require.NoError(t, err)

	st2, err := e.client.Subscribe(ctx, &tidestreamv1.SubscribeRequest{ChangefeedId: "cf", PipelineId: 2, Epoch: 1, FromTs: snapTs + 500, Spans: tableSpan()})
	require.NoError(t, err)
	recs := e.collect(ctx, t, st2, 1, ddlAt-10)
	require.Equal(t, int64(2), recs[0].value["v"])
	require.NotContains(t, recs[0].value, "c", "written before ADD COLUMN")
}

// The DDL stream follows a route an attached pipeline uses: it stays while
// one does (pipelines spread over two pullers must not make it hop), and
// moves, under a new epoch, once the owner moved them all off its route —
// its puller may be dead, which its sorter would retry for ever while every
// pipeline here waits on the history.
func TestDDLStreamLeavesARouteNoPipelineUses(t *testing.T) {
	ctx := testCtx(t)
	e := newEnv(t, keyedTable(), sendAll(), nil)
	other := &fakeSorter{ddl: make(chan *tidestreamv1.SortedBatch, 16), table: sendAll()}
	otherAddr := serve(t, func(g *grpc.Server) { tidestreamv1.RegisterSorterServiceServer(g, other) })
	routeA := &tidestreamv1.Route{SorterAddr: e.svc.cfg.SorterAddr, PullerAddr: "puller-a:1"}
	routeB := &tidestreamv1.Route{SorterAddr: otherAddr, PullerAddr: "puller-b:1"}
	ddlReqs := func(f *fakeSorter) []*tidestreamv1.SubscribeRequest {
		f.mu.Lock()
		defer f.mu.Unlock()
		var out []*tidestreamv1.SubscribeRequest
		for _, r := range f.reqs {
			if r.GetPipelineId() < 0 {
				out = append(out, r)
			}
		}
		return out
	}
	subscribe := func(id int64, route *tidestreamv1.Route) context.CancelFunc {
		sctx, cancel := context.WithCancel(ctx)
		_, err := e.client.Subscribe(sctx, &tidestreamv1.SubscribeRequest{ChangefeedId: "cf", PipelineId: id, Epoch: 1, FromTs: snapTs, Spans: tableSpan(), Route: route})
		require.NoError(t, err)
		return cancel
	}

	stop1 := subscribe(1, routeA)
	require.Eventually(t, func() bool { return len(ddlReqs(e.sorter)) == 1 }, 10*time.Second, time.Millisecond)
	first := ddlReqs(e.sorter)[0]
	subscribe(2, routeB)
	require.Eventually(t, func() bool { return len(other.tableReqs()) == 1 }, 10*time.Second, time.Millisecond)
	require.Empty(t, ddlReqs(other), "pipeline 1 still uses route A: the DDL stream stays")

	stop1() // the owner moved pipeline 1 off route A
	require.Eventually(t, func() bool { return len(ddlReqs(other)) == 1 }, 10*time.Second, time.Millisecond, "the DDL stream moved to route B")
	moved := ddlReqs(other)[0]
	require.Equal(t, first.GetPipelineId(), moved.GetPipelineId())
	require.Greater(t, moved.GetEpoch(), first.GetEpoch(), "a new epoch, so the sorter starts it afresh")
	require.Equal(t, "puller-b:1", moved.GetRoute().GetPullerAddr())
	require.Len(t, ddlReqs(e.sorter), 1, "not re-subscribed on route A")
}

// TiDB writes a TRUNCATE PARTITION's rows into the new partition id before
// the DDL finishes, and those rows are the only copy. One can reach the
// encoder while the history has resolved past it but not yet seen the DDL
// (the DDL's finished ts is later): it must wait for that DDL and go out as
// the table's row, not fail the changefeed as an unknown table.
func TestRowOfAPartitionWhoseDDLIsStillToCome(t *testing.T) {
	ctx := testCtx(t)
	const oldPart, newPart = tableID + 1, tableID + 2
	pt := keyedTable()
	pt.Partition = &model.PartitionInfo{Type: pmodel.PartitionTypeHash, Enable: true, Num: 1,
		Definitions: []model.PartitionDefinition{{ID: oldPart, Name: pmodel.NewCIStr("p0")}}}
	const rowAt, ddlAt = snapTs + 10, snapTs + 30
	e := newEnv(t, pt, sendAll(&tidestreamv1.SortedBatch{Events: []*tidestreamv1.RawKVEvent{{
		Key: tablecodec.EncodeRowKeyWithHandle(newPart, kv.IntHandle(4)), Value: rowValue(t, []int64{2}, int64(44)),
		Op: tidestreamv1.OpType_OP_TYPE_PUT, StartTs: rowAt - 1, CommitTs: rowAt,
	}}, ResolvedTs: rowAt}), nil)
	st := e.subscribe(ctx, t, 1, snapTs)
	e.resolveDDL(rowAt + 5) // past the row, before the DDL
	type recv struct {
		b   *tidestreamv1.EncodedBatch
		err error
	}
	received := make(chan recv, 1)
	go func() {
		for {
			b, err := st.Recv()
			if err != nil || len(b.GetRecords()) > 0 {
				received <- recv{b, err}
				return
			}
		}
	}()
	select {
	case r := <-received:
		t.Fatalf("answered before the history knew the partition: %v %v", r.b, r.err)
	case <-time.After(200 * time.Millisecond): // the wait is the behaviour under test; the row must not come early
	}
	next := keyedTable()
	next.Partition = &model.PartitionInfo{Type: pmodel.PartitionTypeHash, Enable: true, Num: 1,
		Definitions: []model.PartitionDefinition{{ID: newPart, Name: pmodel.NewCIStr("p0")}}}
	job := &model.Job{ID: 12, Type: model.ActionTruncateTablePartition, SchemaID: 1, TableID: tableID, State: model.JobStateDone,
		Version: model.JobVersion2, Query: "ALTER TABLE t TRUNCATE PARTITION p0",
		BinlogInfo: &model.HistoryInfo{SchemaVersion: 11, TableInfo: next}}
	e.resolveDDL(ddlAt, jobEvent(t, job, ddlAt))
	r := <-received
	require.NoError(t, r.err)
	require.Len(t, r.b.GetRecords(), 1)
	rec := r.b.GetRecords()[0]
	require.Equal(t, "tidb_test_t", rec.GetTopic())
	key, _ := e.consumer.Decode(ctx, t, rec.GetKey())
	value, _ := e.consumer.Decode(ctx, t, rec.GetValue())
	require.Equal(t, int64(4), key["id"])
	require.Equal(t, int64(44), value["v"])
}

// After EXCHANGE PARTITION the exchanged ids belong to the other table.
// Both tables' pipelines read them around the DDL (the owner keeps the
// given id on its old pipeline until it passes the DDL, and starts the
// taker's before it), so each must deliver only the rows that are its own
// table's at their commit ts: a row delivered by the other pipeline into
// this table's topic could overtake an earlier version of its key.
func TestExchangedPartitionRowsGoOnlyToTheirTablesPipeline(t *testing.T) {
	ctx := testCtx(t)
	const part, nt = tableID + 1, tableID + 100 // p0 of test.t, and test.nt
	const before, ddlAt, after = snapTs + 10, snapTs + 20, snapTs + 30
	pt := keyedTable()
	pt.Partition = &model.PartitionInfo{Type: pmodel.PartitionTypeHash, Enable: true, Num: 1,
		Definitions: []model.PartitionDefinition{{ID: part, Name: pmodel.NewCIStr("p0")}}}
	ntInfo := keyedTable()
	ntInfo.ID, ntInfo.Name = nt, pmodel.NewCIStr("nt")
	put := func(physical, handle int64, v int64, commit uint64) *tidestreamv1.RawKVEvent {
		return &tidestreamv1.RawKVEvent{Key: tablecodec.EncodeRowKeyWithHandle(physical, kv.IntHandle(handle)),
			Value: rowValue(t, []int64{2}, v), Op: tidestreamv1.OpType_OP_TYPE_PUT, StartTs: commit - 1, CommitTs: commit}
	}
	// What both pipelines read: p0's id before and after the exchange,
	// and nt's old id after it (nt's row before it is nt's pipeline's).
	e := newEnv(t, pt, sendAll(&tidestreamv1.SortedBatch{Events: []*tidestreamv1.RawKVEvent{
		put(part, 1, 10, before), put(part, 1, 11, after), put(nt, 2, 20, after),
	}, ResolvedTs: after}), func(c *Config) {
		load := c.LoadSnapshot
		c.LoadSnapshot = func(ctx context.Context, pd []string, ts uint64) (*schema.Snapshot, error) {
			s, err := load(ctx, pd, ts)
			if err == nil {
				s.Tables[1] = append(s.Tables[1], ntInfo)
			}
			return s, err
		}
	})
	exchanged := keyedTable()
	exchanged.Partition = &model.PartitionInfo{Type: pmodel.PartitionTypeHash, Enable: true, Num: 1,
		Definitions: []model.PartitionDefinition{{ID: nt, Name: pmodel.NewCIStr("p0")}}}
	job := &model.Job{ID: 12, Type: model.ActionExchangeTablePartition, SchemaID: 1, TableID: nt, State: model.JobStateDone,
		Version: model.JobVersion2, Query: "ALTER TABLE t EXCHANGE PARTITION p0 WITH TABLE nt",
		BinlogInfo: &model.HistoryInfo{SchemaVersion: 11, TableInfo: exchanged, FinishedTS: ddlAt}}
	e.resolveDDL(ddlAt, jobEvent(t, job, ddlAt))
	e.resolveDDL(after + 5)

	read := func(pipeline, table int64, n int) []got {
		st, err := e.client.Subscribe(ctx, &tidestreamv1.SubscribeRequest{ChangefeedId: "cf", PipelineId: pipeline, Epoch: 1,
			FromTs: snapTs, Spans: tableSpan(), TableId: table})
		require.NoError(t, err)
		return e.collect(ctx, t, st, n, after)
	}
	type rec struct {
		topic string
		v     int64
		ts    uint64
	}
	recs := func(gs []got) []rec {
		var out []rec
		for _, g := range gs {
			out = append(out, rec{g.rec.GetTopic(), g.value["v"].(int64), g.rec.GetCommitTs()})
		}
		return out
	}
	require.Equal(t, []rec{{"tidb_test_t", 10, before}, {"tidb_test_t", 20, after}}, recs(read(1, tableID, 2)),
		"t's pipeline: p0 up to the exchange, then nt's old id, which is p0 now")
	require.Equal(t, []rec{{"tidb_test_nt", 11, after}}, recs(read(2, part, 1)),
		"nt's pipeline under its new id: that id's rows from the exchange on")
	require.Len(t, read(3, 0, 3), 3, "a pipeline naming no table routes every row by the schema at its ts")
}

// A transaction larger than SplitTxnBytes is encoded and sent in pieces:
// no batch holds all of it, none carries a resolved ts before its end, and
// every row arrives once, in the sorter's order. A unique key that passes
// from a row late in key order to one early in it (insert in the first
// piece, the old row's delete in a later one) keeps the new row: the
// tombstone for a key the transaction already wrote is dropped, as the
// delete-first order within one batch would have made it harmless.
func TestLargeTransactionIsSentInPieces(t *testing.T) {
	ctx := testCtx(t)
	const start, commit = snapTs + 1, snapTs + 2
	const rows = 40
	var events []*tidestreamv1.RawKVEvent
	// Handle 1 takes u = 1000 from handle 40, which is deleted; the
	// other rows are plain inserts.
	for h := int64(1); h < rows; h++ {
		u := 1000 + h
		if h == 1 {
			u = 1000
		}
		events = append(events, &tidestreamv1.RawKVEvent{Key: rowKey(h), Value: rowValue(t, []int64{1, 2}, u, h),
			Op: tidestreamv1.OpType_OP_TYPE_PUT, StartTs: start, CommitTs: commit})
	}
	events = append(events, &tidestreamv1.RawKVEvent{Key: rowKey(rows), OldValue: rowValue(t, []int64{1, 2}, int64(1000), int64(rows)),
		Op: tidestreamv1.OpType_OP_TYPE_DELETE, StartTs: start, CommitTs: commit})
	size := 0
	for _, ev := range events {
		size += len(ev.GetKey()) + len(ev.GetValue()) + len(ev.GetOldValue())
	}
	// Half the events in each sorter batch; pieces of about a fifth.
	e := newEnv(t, uniqueKeyTable(), sendAll(
		&tidestreamv1.SortedBatch{Events: events[:rows/2]},
		&tidestreamv1.SortedBatch{Events: events[rows/2:], ResolvedTs: commit},
	), func(c *Config) { c.SplitTxnBytes = size / 5 })
	e.resolveDDL(commit)
	st := e.subscribe(ctx, t, 1, snapTs)
	var got []*tidestreamv1.EncodedRecord
	batches := 0
	for {
		b, err := st.Recv()
		require.NoError(t, err)
		if len(b.GetRecords()) > 0 {
			batches++
			require.Less(t, len(b.GetRecords()), rows/2, "a batch holds a piece, not the transaction")
		}
		got = append(got, b.GetRecords()...)
		if b.GetResolvedTs() >= commit {
			break
		}
		require.Zero(t, b.GetResolvedTs(), "no resolved ts inside the transaction")
	}
	require.GreaterOrEqual(t, batches, 4)
	require.Len(t, got, rows-1, "every insert once; the delete of u = 1000, which handle 1 took over, dropped")
	state := map[int64]int64{}
	for i, r := range got {
		require.False(t, r.GetTombstone(), "record %d", i)
		key, _ := e.consumer.Decode(ctx, t, r.GetKey())
		value, _ := e.consumer.Decode(ctx, t, r.GetValue())
		state[key["u"].(int64)] = value["v"].(int64)
		require.Equal(t, int64(i+1), value["v"], "in the sorter's order")
	}
	require.Equal(t, int64(1), state[1000], "u = 1000 is handle 1's row after the transaction, as in TiDB")
}
