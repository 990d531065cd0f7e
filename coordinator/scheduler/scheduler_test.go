package scheduler_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
	"github.com/tidestream/tidestream/coordinator/internal/etcdtest"
	"github.com/tidestream/tidestream/coordinator/scheduler"
	"github.com/tidestream/tidestream/coordinator/store"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var allRoles = []string{"coordinator", "puller", "sorter", "encoder", "producer"}

// env is a real etcd with an elected owner, a changefeed "cf" at
// checkpoint 100 and a table lister the test controls.
type env struct {
	t     *testing.T
	ctx   context.Context
	cli   *clientv3.Client
	st    *store.Store
	fence store.Fence
	sess  *concurrency.Session

	mu     sync.Mutex
	tables []scheduler.Table
	reads  int
	// The upstream as a following scheduler sees it (following): a
	// fresh TSO and the schema version at it.
	ts      uint64
	version int64
}

func newEnv(t *testing.T, tables int) *env {
	t.Helper()
	cli := etcdtest.Start(t).Client(t)
	keys, err := store.NewKeys("test")
	require.NoError(t, err)
	e := &env{t: t, ctx: context.Background(), cli: cli, st: store.New(cli, keys)}
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	require.NoError(t, err)
	t.Cleanup(func() { _ = sess.Close() })
	el := concurrency.NewElection(sess, keys.OwnerPrefix())
	require.NoError(t, el.Campaign(e.ctx, "owner"))
	e.fence, e.sess = store.Fence{Key: el.Key(), Rev: el.Rev()}, sess
	for id := int64(1); id <= int64(tables); id++ {
		e.tables = append(e.tables, table(id))
	}
	require.NoError(t, e.st.Create(e.ctx,
		&pb.ChangefeedInfo{Namespace: "default", Id: "cf", SinkUri: "kafka://k:9092/t?protocol=avro", StartTs: 100, PdAddrs: []string{"pd:2379"}},
		&pb.ChangefeedStatus{State: pb.ChangefeedState_CHANGEFEED_STATE_NORMAL, CheckpointTs: 100, ResolvedTs: 100, Epoch: 1}))
	return e
}

func table(id int64) scheduler.Table {
	return scheduler.Table{ID: id, Schema: "db", Name: fmt.Sprintf("t%d", id),
		Spans: []*pb.Span{{StartKey: fmt.Appendf(nil, "t%d_r", id), EndKey: fmt.Appendf(nil, "t%d_s", id)}}}
}

func (e *env) scheduler() *scheduler.Scheduler {
	s, err := scheduler.New(scheduler.Config{Store: e.st, MaxMoves: 2, Tables: func(_ context.Context, cf *store.Changefeed, ts uint64) ([]scheduler.Table, error) {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.reads++
		require.Equal(e.t, cf.Status.GetCheckpointTs(), ts, "tables read at the checkpoint")
		return append([]scheduler.Table(nil), e.tables...), nil
	}})
	require.NoError(e.t, err)
	return s
}

// following completes cfg into a scheduler that follows the env's
// upstream: its tables now, and a schema version setSchema moves.
func (e *env) following(cfg scheduler.Config) *scheduler.Scheduler {
	e.t.Helper()
	cfg.Store = e.st
	cfg.Tables = func(context.Context, *store.Changefeed, uint64) ([]scheduler.Table, error) {
		e.mu.Lock()
		defer e.mu.Unlock()
		return slices.Clone(e.tables), nil
	}
	cfg.SchemaVersion = func(context.Context, *store.Changefeed) (uint64, int64, error) {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.ts, e.version, nil
	}
	s, err := scheduler.New(cfg)
	require.NoError(e.t, err)
	return s
}

// setSchema is a DDL: the upstream at ts has tables, under a new schema
// version.
func (e *env) setSchema(ts uint64, tables ...scheduler.Table) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ts, e.version, e.tables = ts, e.version+1, tables
}

// advance moves the upstream's TSO with no DDL.
func (e *env) advance(ts uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ts = ts
}

// settle runs rounds of s until cond holds.
func (e *env) settle(s *scheduler.Scheduler, what string, cond func() bool) {
	e.t.Helper()
	require.Eventually(e.t, func() bool { e.round(s); return cond() }, 10*time.Second, 5*time.Millisecond, what)
}

// reached reports pipeline id's progress at cp under its record's epoch.
func (e *env) reached(id int64, cp uint64) {
	e.t.Helper()
	r := e.records()[id]
	require.NotNil(e.t, r, "pipeline %d", id)
	e.progress(id, &pb.PipelineStatus{Epoch: r.GetEpoch(), CheckpointTs: cp, ResolvedTs: cp})
}

func tables(ids ...int64) []scheduler.Table {
	out := make([]scheduler.Table, 0, len(ids))
	for _, id := range ids {
		out = append(out, table(id))
	}
	return out
}

func (e *env) member(id string, roles ...string) {
	v, err := store.MarshalMember(&pb.Member{Id: id, Addr: id + ":8300", Roles: roles})
	require.NoError(e.t, err)
	_, err = e.cli.Put(e.ctx, e.st.Keys().Member(id), v)
	require.NoError(e.t, err)
}

func (e *env) memberGone(id string) {
	_, err := e.cli.Delete(e.ctx, e.st.Keys().Member(id))
	require.NoError(e.t, err)
}

func (e *env) round(s *scheduler.Scheduler) {
	e.t.Helper()
	require.NoError(e.t, s.Round(e.ctx, e.fence))
}

// records are the assignment records by pipeline id.
func (e *env) records() map[int64]*pb.PipelineAssignment {
	e.t.Helper()
	as, _, err := e.st.Assignments(e.ctx, "")
	require.NoError(e.t, err)
	out := map[int64]*pb.PipelineAssignment{}
	for _, a := range as {
		_, dup := out[a.Record.GetPipelineId()]
		require.False(e.t, dup, "pipeline %d assigned twice", a.Record.GetPipelineId())
		out[a.Record.GetPipelineId()] = a.Record
	}
	return out
}

// progress writes a pipeline's progress as its producer would (unfenced
// here: the fence is the store's, tested there).
func (e *env) progress(id int64, st *pb.PipelineStatus) {
	b, err := protojson.Marshal(st)
	require.NoError(e.t, err)
	_, err = e.cli.Put(e.ctx, e.st.Keys().Progress("default", "cf", id), string(b))
	require.NoError(e.t, err)
}

func (e *env) status() *pb.ChangefeedStatus {
	cf, err := e.st.Get(e.ctx, "default", "cf")
	require.NoError(e.t, err)
	return cf.Status
}

func (e *env) revision() int64 {
	resp, err := e.cli.Get(e.ctx, "/")
	require.NoError(e.t, err)
	return resp.Header.Revision
}

// writtenSince names the keys written after rev, with their values, for
// a failure's message (a deleted key is not listed).
func (e *env) writtenSince(rev int64) []string {
	resp, err := e.cli.Get(e.ctx, "\x00", clientv3.WithFromKey(), clientv3.WithMinModRev(rev+1))
	require.NoError(e.t, err)
	var out []string
	for _, kv := range resp.Kvs {
		out = append(out, string(kv.Key)+"="+string(kv.Value))
	}
	return out
}

func perProducer(rs map[int64]*pb.PipelineAssignment) map[string]int {
	out := map[string]int{}
	for _, r := range rs {
		out[r.GetProducerMember()]++
	}
	return out
}

// A running changefeed gets one pipeline per table, balanced over the
// members of each role, starting at its checkpoint under its run's epoch;
// a second round, or a new owner, changes nothing.
func TestPlacesEveryTableOnceAndStays(t *testing.T) {
	e := newEnv(t, 6)
	e.member("m1", allRoles...)
	e.member("m2", allRoles...)
	s := e.scheduler()
	e.round(s)
	rs := e.records()
	require.Len(t, rs, 6)
	require.Equal(t, map[string]int{"m1": 3, "m2": 3}, perProducer(rs))
	for id, r := range rs {
		require.EqualValues(t, 100, r.GetStartTs())
		require.EqualValues(t, 1, r.GetChangefeedEpoch())
		require.Equal(t, fmt.Sprintf("t%d", id), r.GetTableName())
		require.Equal(t, []string{"pd:2379"}, r.GetRoute().GetPdAddrs())
		require.Equal(t, r.GetEncoderMember()+":8300", r.GetRoute().GetEncoderAddr())
	}

	rev := e.revision()
	e.round(s)
	e.round(e.scheduler()) // a new owner: nothing in memory
	require.Equal(t, rev, e.revision(), "steady state writes nothing")
	require.Equal(t, 2, e.reads, "tables read once per owner and run")
}

// The changefeed checkpoint is the minimum over its pipelines of the
// progress written under their current epoch, never moving back; a
// pipeline error makes it warning (with the table named), its recovery
// normal again, a fatal error failed — and then its pipelines stop.
func TestProgressBecomesCheckpointAndState(t *testing.T) {
	e := newEnv(t, 3)
	e.member("m1", allRoles...)
	s := e.scheduler()
	e.round(s)
	rs := e.records()
	for id, r := range rs {
		e.progress(id, &pb.PipelineStatus{Epoch: r.GetEpoch(), CheckpointTs: 200 + uint64(id), ResolvedTs: 300 + uint64(id)})
	}
	e.round(s)
	st := e.status()
	require.EqualValues(t, 201, st.GetCheckpointTs())
	require.EqualValues(t, 301, st.GetResolvedTs())
	require.Equal(t, pb.ChangefeedState_CHANGEFEED_STATE_NORMAL, st.GetState())

	// Progress of an older epoch does not count; lower progress never
	// moves the checkpoint back.
	e.progress(1, &pb.PipelineStatus{Epoch: rs[1].GetEpoch() - 1, CheckpointTs: 900, ResolvedTs: 900})
	e.round(s)
	require.EqualValues(t, 201, e.status().GetCheckpointTs(), "pipeline 1's record is of another epoch: its start ts counts")
	e.progress(1, &pb.PipelineStatus{Epoch: rs[1].GetEpoch(), CheckpointTs: 150, ResolvedTs: 150})
	e.round(s)
	require.EqualValues(t, 201, e.status().GetCheckpointTs(), "monotonic")
	e.progress(1, &pb.PipelineStatus{Epoch: rs[1].GetEpoch(), CheckpointTs: 250, ResolvedTs: 350})
	e.round(s)
	require.EqualValues(t, 202, e.status().GetCheckpointTs())

	e.progress(2, &pb.PipelineStatus{Epoch: rs[2].GetEpoch(), CheckpointTs: 260, ResolvedTs: 360,
		Error: &pb.RunningError{Message: "kafka: no record acknowledged for 12s"}})
	e.round(s)
	st = e.status()
	require.Equal(t, pb.ChangefeedState_CHANGEFEED_STATE_WARNING, st.GetState())
	require.Equal(t, "pipeline 2 (db.t2): kafka: no record acknowledged for 12s", st.GetError().GetMessage())
	require.EqualValues(t, 203, st.GetCheckpointTs(), "a warning changefeed still advances")

	e.progress(2, &pb.PipelineStatus{Epoch: rs[2].GetEpoch(), CheckpointTs: 270, ResolvedTs: 370})
	e.round(s)
	st = e.status()
	require.Equal(t, pb.ChangefeedState_CHANGEFEED_STATE_NORMAL, st.GetState())
	require.Nil(t, st.GetError())

	e.progress(3, &pb.PipelineStatus{Epoch: rs[3].GetEpoch(), CheckpointTs: 203, Fatal: true,
		Error: &pb.RunningError{Message: "kafka: MESSAGE_TOO_LARGE"}})
	e.round(s)
	st = e.status()
	require.Equal(t, pb.ChangefeedState_CHANGEFEED_STATE_FAILED, st.GetState())
	require.Contains(t, st.GetError().GetMessage(), "pipeline 3 (db.t3): kafka: MESSAGE_TOO_LARGE")
	e.round(s)
	require.Empty(t, e.records(), "a failed changefeed runs nothing")
}

// A member whose lease is gone loses its pipelines: each restarts on a
// live member at epoch + 1 from its own checkpoint; the others stay.
func TestMemberGoneMovesOnlyItsPipelines(t *testing.T) {
	e := newEnv(t, 4)
	e.member("m1", allRoles...)
	e.member("m2", allRoles...)
	s := e.scheduler()
	e.round(s)
	before := e.records()
	for id, r := range before {
		e.progress(id, &pb.PipelineStatus{Epoch: r.GetEpoch(), CheckpointTs: 500 + uint64(id), ResolvedTs: 600})
	}
	e.memberGone("m2")
	e.round(s)
	after := e.records()
	require.Len(t, after, 4)
	for id, r := range after {
		old := before[id]
		require.Equal(t, "m1", r.GetProducerMember())
		require.Equal(t, "m1", r.GetEncoderMember())
		if old.GetProducerMember() == "m1" && old.GetEncoderMember() == "m1" && old.GetSorterMember() == "m1" && old.GetPullerMember() == "m1" {
			require.Equal(t, old.GetEpoch(), r.GetEpoch(), "pipeline %d stays", id)
			continue
		}
		require.Equal(t, old.GetEpoch()+1, r.GetEpoch(), "pipeline %d moves at epoch + 1", id)
		require.EqualValues(t, 500+id, r.GetStartTs(), "from its own checkpoint")
	}
	e.round(s)
	require.EqualValues(t, 501, e.status().GetCheckpointTs(), "moved pipelines count from their new start")
}

// Pause stops every pipeline and keeps the checkpoint; resume starts them
// again from it at epochs above every earlier one; a resume with an
// overwritten checkpoint replaces pipelines of the old run even when the
// owner never saw the pause; remove stops them and deletes their progress.
func TestPauseResumeRemove(t *testing.T) {
	e := newEnv(t, 2)
	e.member("m1", allRoles...)
	s := e.scheduler()
	e.round(s)
	first := e.records()
	for id, r := range first {
		e.progress(id, &pb.PipelineStatus{Epoch: r.GetEpoch(), CheckpointTs: 400, ResolvedTs: 400})
	}
	e.round(s)
	require.EqualValues(t, 400, e.status().GetCheckpointTs())

	setState := func(state pb.ChangefeedState, checkpoint uint64) {
		_, err := e.st.Update(e.ctx, "default", "cf", store.Fence{}, func(cf *store.Changefeed) error {
			if state == pb.ChangefeedState_CHANGEFEED_STATE_NORMAL {
				cf.Status.Epoch++
			}
			if checkpoint != 0 {
				cf.Status.CheckpointTs = checkpoint
			}
			cf.Status.State = state
			return nil
		})
		require.NoError(t, err)
	}
	setState(pb.ChangefeedState_CHANGEFEED_STATE_STOPPED, 0)
	e.round(s)
	require.Empty(t, e.records(), "paused: nothing runs")
	require.EqualValues(t, 400, e.status().GetCheckpointTs())
	progress, err := e.st.PipelineProgress(e.ctx, "default", "cf")
	require.NoError(t, err)
	require.Len(t, progress, 2, "per-table progress kept while paused")

	setState(pb.ChangefeedState_CHANGEFEED_STATE_NORMAL, 0)
	e.round(s)
	second := e.records()
	require.Len(t, second, 2)
	for id, r := range second {
		require.Greater(t, r.GetEpoch(), first[id].GetEpoch())
		require.EqualValues(t, 400, r.GetStartTs())
		require.EqualValues(t, 2, r.GetChangefeedEpoch())
	}

	// Overwrite the checkpoint through a pause and resume the owner never
	// saw: the old run's pipelines are replaced, from the new checkpoint.
	setState(pb.ChangefeedState_CHANGEFEED_STATE_STOPPED, 0)
	setState(pb.ChangefeedState_CHANGEFEED_STATE_NORMAL, 150)
	e.round(s)
	third := e.records()
	for id, r := range third {
		require.Greater(t, r.GetEpoch(), second[id].GetEpoch())
		require.EqualValues(t, 150, r.GetStartTs())
		require.EqualValues(t, 3, r.GetChangefeedEpoch())
	}
	e.round(s)
	require.EqualValues(t, 150, e.status().GetCheckpointTs(), "old progress does not count for the new run")

	_, err = e.st.Delete(e.ctx, "default", "cf", store.Fence{}, func(*store.Changefeed) error { return nil })
	require.NoError(t, err)
	e.round(s)
	require.Empty(t, e.records())
	e.round(s)
	progress, err = e.st.PipelineProgress(e.ctx, "default", "cf")
	require.NoError(t, err)
	require.Empty(t, progress, "removed: progress deleted")
}

// With no live producer nothing can run: the changefeed is warning with
// the reason, and its checkpoint waits.
func TestUnplacedPipelinesWarn(t *testing.T) {
	e := newEnv(t, 2)
	e.member("m1", "coordinator", "puller", "sorter", "encoder")
	s := e.scheduler()
	e.round(s)
	require.Empty(t, e.records())
	st := e.status()
	require.Equal(t, pb.ChangefeedState_CHANGEFEED_STATE_WARNING, st.GetState())
	require.Contains(t, st.GetError().GetMessage(), "no live producer member")
	e.member("m2", "producer")
	e.round(s)
	require.Len(t, e.records(), 2)
	e.round(s)
	require.Equal(t, pb.ChangefeedState_CHANGEFEED_STATE_NORMAL, e.status().GetState())
}

// A deposed owner's round writes nothing and says so.
func TestDeposedOwnerStops(t *testing.T) {
	e := newEnv(t, 2)
	e.member("m1", allRoles...)
	_, err := e.cli.Revoke(e.ctx, e.sess.Lease())
	require.NoError(t, err)
	err = e.scheduler().Round(e.ctx, e.fence)
	require.ErrorIs(t, err, cdcerr.ErrNotOwner)
	require.Empty(t, e.records())
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	require.ErrorIs(t, e.scheduler().Run(ctx, e.fence), cdcerr.ErrNotOwner, "Run ends on it")
}

// With a target ts, pipelines are told it, the checkpoint stops there, and
// once every pipeline reached it the changefeed is finished and its
// pipelines stop.
func TestTargetTsFinishes(t *testing.T) {
	e := newEnv(t, 2)
	_, err := e.st.UpdateInfo(e.ctx, "default", "cf", func(cf *store.Changefeed) error {
		cf.Info.TargetTs = 300
		return nil
	})
	require.NoError(t, err)
	e.member("m1", allRoles...)
	s := e.scheduler()
	e.round(s)
	rs := e.records()
	require.EqualValues(t, 300, rs[1].GetTargetTs())
	e.progress(1, &pb.PipelineStatus{Epoch: rs[1].GetEpoch(), CheckpointTs: 300, ResolvedTs: 300})
	e.progress(2, &pb.PipelineStatus{Epoch: rs[2].GetEpoch(), CheckpointTs: 250, ResolvedTs: 250})
	e.round(s)
	require.Equal(t, pb.ChangefeedState_CHANGEFEED_STATE_NORMAL, e.status().GetState(), "one pipeline short of the target")
	e.progress(2, &pb.PipelineStatus{Epoch: rs[2].GetEpoch(), CheckpointTs: 300, ResolvedTs: 300})
	e.round(s)
	st := e.status()
	require.Equal(t, pb.ChangefeedState_CHANGEFEED_STATE_FINISHED, st.GetState())
	require.EqualValues(t, 300, st.GetCheckpointTs())
	e.round(s)
	require.Empty(t, e.records(), "a finished changefeed runs nothing")
}

// Following the upstream's schema: a table created after the run's first
// read starts at the read before it existed; the checkpoint never passes
// what the owner has read of the schema; a truncated table's pipeline runs
// on until it passed the read that missed it, and only then does its
// replacement start, so the old and new versions of a key cannot arrive
// out of order.
func TestFollowsTablesTheSchemaCreatesAndDrops(t *testing.T) {
	e := newEnv(t, 2)
	e.member("m1", allRoles...)
	e.setSchema(200, tables(1, 2)...)
	s := e.following(scheduler.Config{})

	e.settle(s, "tables 1 and 2 placed", func() bool { return len(e.records()) == 2 })
	e.reached(1, 300)
	e.reached(2, 300)
	e.settle(s, "checkpoint bounded by the schema read at 200", func() bool { return e.status().GetCheckpointTs() == 200 })

	e.setSchema(400, tables(1, 2, 3)...) // CREATE TABLE between 200 and 400
	e.settle(s, "table 3 placed", func() bool { return e.records()[3] != nil })
	require.EqualValues(t, 200, e.records()[3].GetStartTs(), "from the read before it existed")
	e.reached(3, 450)
	e.settle(s, "checkpoint follows the schema to 300", func() bool { return e.status().GetCheckpointTs() == 300 })

	e.setSchema(500, tables(1, 3, 4)...) // TRUNCATE TABLE t2 (new id 4) between 400 and 500
	for range 5 {
		e.round(s)
	}
	rs := e.records()
	require.NotNil(t, rs[2], "the truncated table's pipeline runs on: its rows before the DDL")
	require.Nil(t, rs[4], "its replacement waits for it")
	e.reached(1, 600)
	e.reached(3, 600)
	e.settle(s, "checkpoint held at the replacement's start", func() bool { return e.status().GetCheckpointTs() == 300 })
	e.reached(2, 500)
	e.settle(s, "old pipeline done, replacement placed", func() bool { rs := e.records(); return rs[2] == nil && rs[4] != nil })
	require.EqualValues(t, 400, e.records()[4].GetStartTs())
	e.reached(4, 600)
	e.settle(s, "checkpoint on to the schema's 500", func() bool { return e.status().GetCheckpointTs() == 500 })
}

// A table created and dropped between two reads shows in neither; the
// DDL history (TablesBetween) names it, and its pipeline runs from the
// read before until past the read that missed it.
func TestTableCreatedAndDroppedBetweenReads(t *testing.T) {
	e := newEnv(t, 0)
	e.member("m1", allRoles...)
	e.setSchema(200, table(1))
	var between []scheduler.Table // under e.mu
	s := e.following(scheduler.Config{
		TablesBetween: func(_ context.Context, _ *store.Changefeed, from, to uint64) ([]scheduler.Table, error) {
			e.mu.Lock()
			defer e.mu.Unlock()
			return between, nil
		}})
	e.settle(s, "table 1 placed, schema read at 200", func() bool { return len(e.records()) == 1 && e.status().GetCheckpointTs() == 100 })
	e.reached(1, 250)
	e.settle(s, "checkpoint at the schema read", func() bool { return e.status().GetCheckpointTs() == 200 })

	e.mu.Lock()
	between = tables(5)
	e.mu.Unlock()
	e.setSchema(300, table(1))
	e.settle(s, "the short-lived table's pipeline placed", func() bool { return e.records()[5] != nil })
	require.EqualValues(t, 200, e.records()[5].GetStartTs(), "from the read before it existed")
	e.reached(1, 400)
	e.settle(s, "the checkpoint waits for it", func() bool { return e.status().GetCheckpointTs() == 200 })
	e.reached(5, 300)
	e.settle(s, "once past the read that missed it, it stops", func() bool { return e.records()[5] == nil })
	e.settle(s, "and the checkpoint moves on", func() bool { return e.status().GetCheckpointTs() == 300 })
}

// A table without a key that appears while the changefeed runs gets no
// pipeline and a warning naming it; once it gets a key (ADD UNIQUE INDEX)
// it starts like a table created then.
func TestIneligibleTableWarnedThenStartsWhenEligible(t *testing.T) {
	e := newEnv(t, 0)
	e.member("m1", allRoles...)
	e.setSchema(200, table(1))
	var (
		mu   sync.Mutex // the log's
		logs bytes.Buffer
	)
	nokey := table(9)
	nokey.Ineligible = "no key"
	s := e.following(scheduler.Config{Logger: slog.New(slog.NewTextHandler(&syncWriter{w: &logs, mu: &mu}, nil))})
	e.settle(s, "table 1 placed", func() bool { return len(e.records()) == 1 })

	e.setSchema(300, table(1), nokey)
	e.settle(s, "the keyless table warned about", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(logs.String(), `msg="table not replicated" component=scheduler changefeed=cf namespace=default table=db.t9 table_id=9 reason="no key" ts=300`)
	})
	require.Len(t, e.records(), 1, "no pipeline for it")

	e.setSchema(400, tables(1, 9)...)
	e.settle(s, "placed once it has a key", func() bool { return e.records()[9] != nil })
	require.EqualValues(t, 300, e.records()[9].GetStartTs(), "from the read before it was eligible")
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, 1, strings.Count(logs.String(), "table not replicated"), "warned once")
}

type syncWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}
