package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
	"github.com/tidestream/tidestream/coordinator/store"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

func electOwner(t *testing.T, st *store.Store, cli *clientv3.Client) (store.Fence, *concurrency.Session) {
	t.Helper()
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	require.NoError(t, err)
	t.Cleanup(func() { _ = sess.Close() })
	el := concurrency.NewElection(sess, st.Keys().OwnerPrefix())
	require.NoError(t, el.Campaign(context.Background(), "owner"))
	return store.Fence{Key: el.Key(), Rev: el.Rev()}, sess
}

func assignment(pipeline int64, epoch uint64, producer string) *pb.PipelineAssignment {
	return &pb.PipelineAssignment{
		Namespace: "default", ChangefeedId: "cf", PipelineId: pipeline, Epoch: epoch, StartTs: 100,
		Spans: []*pb.Span{{StartKey: []byte("a"), EndKey: []byte("b")}},
		Route: &pb.Route{SorterAddr: "s:1", EncoderAddr: "e:1"}, ProducerMember: producer,
		SchemaName: "test", TableName: "t", TableId: 42,
	}
}

func status(epoch, checkpoint uint64) *pb.PipelineStatus {
	return &pb.PipelineStatus{Epoch: epoch, CheckpointTs: checkpoint, ResolvedTs: checkpoint}
}

// The producer lists its assignments and follows their changes from the
// revision it listed at; a move to another producer deletes its key.
func TestAssignmentsListAndWatch(t *testing.T) {
	st, cli := newStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fence := ownerFence(t, st, cli)
	require.NoError(t, st.Assign(ctx, fence, assignment(1, 1, "p1"), ""))
	require.NoError(t, st.Assign(ctx, fence, assignment(2, 1, "p2"), ""))

	mine, rev, err := st.Assignments(ctx, "p1")
	require.NoError(t, err)
	require.Len(t, mine, 1)
	require.EqualValues(t, 1, mine[0].Record.GetPipelineId())
	require.Equal(t, "test", mine[0].Record.GetSchemaName())

	events := make(chan []store.AssignmentEvent, 4)
	done := make(chan error, 1)
	wctx, stop := context.WithCancel(ctx)
	go func() {
		done <- st.WatchAssignments(wctx, "p1", rev, func(evs []store.AssignmentEvent) error {
			events <- evs
			return nil
		})
	}()
	// Pipeline 2 moves to p1 at epoch 2; pipeline 1 moves away to p2.
	require.NoError(t, st.Assign(ctx, fence, assignment(2, 2, "p1"), "p2"))
	require.NoError(t, st.Assign(ctx, fence, assignment(1, 2, "p2"), "p1"))
	// etcd may deliver the two changes in one watch response or in two.
	var got []store.AssignmentEvent
	for len(got) < 2 {
		select {
		case evs := <-events:
			got = append(got, evs...)
		case <-ctx.Done():
			t.Fatalf("watch delivered %d of 2 changes", len(got))
		}
	}
	require.Len(t, got, 2)
	require.NotNil(t, got[0].Assignment)
	require.EqualValues(t, 2, got[0].Assignment.Record.GetEpoch())
	require.Nil(t, got[1].Assignment, "pipeline 1 left p1")
	member, ns, cf, id, ok := st.Keys().ParseAssignment(got[1].Key)
	require.True(t, ok)
	require.Equal(t, []any{"p1", "default", "cf", int64(1)}, []any{member, ns, cf, id})
	stop()
	require.ErrorIs(t, <-done, context.Canceled)

	all, _, err := st.Assignments(ctx, "")
	require.NoError(t, err)
	require.Len(t, all, 2, "each pipeline on exactly one producer")
}

// The fence that correctness depends on (DESIGN §8): a progress write lands
// only while the assignment it was made under is unchanged. A reassigned
// pipeline's old producer is refused — and told which pipeline — while the
// rest of its batch lands.
func TestProgressIsFencedOnTheAssignment(t *testing.T) {
	st, cli := newStore(t)
	ctx := context.Background()
	fence := ownerFence(t, st, cli)
	for id := int64(1); id <= 3; id++ {
		require.NoError(t, st.Assign(ctx, fence, assignment(id, 1, "p1"), ""))
	}
	mine, _, err := st.Assignments(ctx, "p1")
	require.NoError(t, err)
	writes := func(checkpoint uint64) []store.ProgressWrite {
		var w []store.ProgressWrite
		for _, a := range mine {
			w = append(w, store.ProgressWrite{Assignment: a, Status: status(1, checkpoint)})
		}
		return w
	}
	fenced, err := st.WriteProgress(ctx, writes(150))
	require.NoError(t, err)
	require.Empty(t, fenced)

	// Pipeline 2 gets epoch 2 on the same producer member (a restart), and
	// pipeline 3 moves to another producer.
	require.NoError(t, st.Assign(ctx, fence, assignment(2, 2, "p1"), "p1"))
	require.NoError(t, st.Assign(ctx, fence, assignment(3, 2, "p2"), "p1"))
	fenced, err = st.WriteProgress(ctx, writes(200))
	require.NoError(t, err)
	var lost []int64
	for _, f := range fenced {
		lost = append(lost, f.Assignment.Record.GetPipelineId())
	}
	require.ElementsMatch(t, []int64{2, 3}, lost)

	progress, err := st.PipelineProgress(ctx, "default", "cf")
	require.NoError(t, err)
	require.EqualValues(t, 200, progress[1].GetCheckpointTs(), "the unfenced pipeline moved on")
	require.EqualValues(t, 150, progress[2].GetCheckpointTs(), "the zombie's write did not land")
	require.EqualValues(t, 150, progress[3].GetCheckpointTs())
}

// Many pipelines of one member go in transactions etcd accepts (its
// default limit is 128 operations), every one written.
func TestProgressOfManyPipelines(t *testing.T) {
	st, cli := newStore(t)
	ctx := context.Background()
	fence := ownerFence(t, st, cli)
	const n = 300
	for id := int64(1); id <= n; id++ {
		require.NoError(t, st.Assign(ctx, fence, assignment(id, 1, "p1"), ""))
	}
	mine, _, err := st.Assignments(ctx, "p1")
	require.NoError(t, err)
	var w []store.ProgressWrite
	for _, a := range mine {
		w = append(w, store.ProgressWrite{Assignment: a, Status: status(1, 500)})
	}
	fenced, err := st.WriteProgress(ctx, w)
	require.NoError(t, err)
	require.Empty(t, fenced)
	progress, err := st.PipelineProgress(ctx, "default", "cf")
	require.NoError(t, err)
	require.Len(t, progress, n)
}

// Assignments are owner writes: a deposed owner's are refused.
func TestAssignRequiresTheOwnerFence(t *testing.T) {
	st, cli := newStore(t)
	ctx := context.Background()
	fence, sess := electOwner(t, st, cli)
	_, err := cli.Revoke(ctx, sess.Lease())
	require.NoError(t, err)
	err = st.Assign(ctx, fence, assignment(1, 1, "p1"), "")
	require.ErrorIs(t, err, cdcerr.ErrNotOwner)
	err = st.Unassign(ctx, fence, "p1", "default", "cf", 1)
	require.ErrorIs(t, err, cdcerr.ErrNotOwner)
	require.Error(t, st.Assign(ctx, store.Fence{}, assignment(1, 1, "p1"), ""), "no fence, no write")
	all, _, err := st.Assignments(ctx, "")
	require.NoError(t, err)
	require.Empty(t, all)
}

// A placement of many pipelines goes in batched transactions; moves delete
// the old producer's key with the put; AllProgress reads every
// changefeed's records and DeleteProgress one changefeed's, fenced.
func TestApplyAssignmentsAndProgressOfAllChangefeeds(t *testing.T) {
	st, cli := newStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fence := ownerFence(t, st, cli)
	const n = 150 // three transactions
	var ops []store.AssignmentOp
	for id := int64(1); id <= n; id++ {
		ops = append(ops, store.AssignmentOp{Put: assignment(id, 1, "p1")})
	}
	before, err := cli.Get(ctx, "/")
	require.NoError(t, err)
	require.NoError(t, st.ApplyAssignments(ctx, fence, ops))
	after, err := cli.Get(ctx, "/")
	require.NoError(t, err)
	require.EqualValues(t, 3, after.Header.Revision-before.Header.Revision, "one revision per transaction of 60")
	all, _, err := st.Assignments(ctx, "p1")
	require.NoError(t, err)
	require.Len(t, all, n)

	moved := assignment(7, 2, "p2")
	require.NoError(t, st.ApplyAssignments(ctx, fence, []store.AssignmentOp{
		{Put: moved, From: "p1"},
		{Delete: assignment(8, 1, "p1")},
	}))
	p1, _, err := st.Assignments(ctx, "p1")
	require.NoError(t, err)
	require.Len(t, p1, n-2)
	p2, _, err := st.Assignments(ctx, "p2")
	require.NoError(t, err)
	require.Len(t, p2, 1)
	require.EqualValues(t, 2, p2[0].Record.GetEpoch())
	require.Error(t, st.ApplyAssignments(ctx, fence, []store.AssignmentOp{{Put: moved, Delete: moved}}), "one or the other")

	for _, cf := range []string{"cf", "other"} {
		for id := int64(1); id <= 2; id++ {
			_, err := cli.Put(ctx, st.Keys().Progress("default", cf, id), `{"epoch":"1","checkpointTs":"5"}`)
			require.NoError(t, err)
		}
	}
	prog, err := st.AllProgress(ctx)
	require.NoError(t, err)
	require.Len(t, prog, 4)
	require.EqualValues(t, 5, prog[store.PipelineRef{Namespace: "default", Changefeed: "other", Pipeline: 2}].GetCheckpointTs())
	require.NoError(t, st.DeleteProgress(ctx, fence, "default", "cf"))
	prog, err = st.AllProgress(ctx)
	require.NoError(t, err)
	require.Len(t, prog, 2, "only the other changefeed's are left")
}

// The owner's list reuses what it decoded before and decodes only the
// records written since; a deleted one is gone from the list.
func TestAssignmentsCachedDecodesOnlyChangedRecords(t *testing.T) {
	st, cli := newStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fence := ownerFence(t, st, cli)
	require.NoError(t, st.Assign(ctx, fence, assignment(1, 1, "p1"), ""))
	require.NoError(t, st.Assign(ctx, fence, assignment(2, 1, "p2"), ""))
	require.NoError(t, st.Assign(ctx, fence, assignment(3, 1, "p2"), ""))
	var c store.AssignmentCache
	first, _, err := st.AssignmentsCached(ctx, "", &c)
	require.NoError(t, err)
	require.Len(t, first, 3)
	byID := func(as []*store.Assignment) map[int64]*store.Assignment {
		m := map[int64]*store.Assignment{}
		for _, a := range as {
			m[a.Record.GetPipelineId()] = a
		}
		return m
	}
	before := byID(first)

	require.NoError(t, st.Assign(ctx, fence, assignment(2, 2, "p2"), "p2"))
	require.NoError(t, st.Unassign(ctx, fence, "p2", "default", "cf", 3))
	second, _, err := st.AssignmentsCached(ctx, "", &c)
	require.NoError(t, err)
	after := byID(second)
	require.Len(t, after, 2)
	require.Same(t, before[1], after[1], "unchanged: reused")
	require.NotSame(t, before[2], after[2], "rewritten: decoded again")
	require.EqualValues(t, 2, after[2].Record.GetEpoch())
	plain, _, err := st.Assignments(ctx, "")
	require.NoError(t, err)
	require.Len(t, plain, 2)
}
