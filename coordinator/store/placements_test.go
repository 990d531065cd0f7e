package store_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tidestream/tidestream/coordinator/store"
)

// One changefeed's assignments are found across every producer member
// holding some, by skipping from member to member. The names are chosen so
// that byte order is not tuple order: "p-2/…" sorts before "p/…" ('-' <
// '/'), "cf-2/…" before "cf/…", and "p1" after "p0", where the skip past
// member "p" lands. Stray keys under the prefix are stepped over.
func TestChangefeedAssignmentsAndPlacements(t *testing.T) {
	st, cli := newStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fence := ownerFence(t, st, cli)
	put := func(ns, cf string, pipeline int64, producer string) {
		a := assignment(pipeline, 1, producer)
		a.Namespace, a.ChangefeedId = ns, cf
		require.NoError(t, st.Assign(ctx, fence, a, ""))
	}
	put("default", "cf", 1, "p")
	put("default", "cf", 2, "p")
	put("default", "cf-2", 3, "p")
	put("default", "cf", 4, "p-2")
	put("other", "cf", 5, "p-2")
	put("default", "cf-2", 6, "p1")
	put("default", "cf", 7, "p1")
	put("default", "cf", 8, "q")
	base := st.Keys().AssignmentPrefix("")
	_, err := cli.Put(ctx, base+"/stray", "x")
	require.NoError(t, err)
	_, err = cli.Put(ctx, base+"lonely", "x")
	require.NoError(t, err)

	got, err := st.ChangefeedAssignments(ctx, "", "cf")
	require.NoError(t, err)
	var ids []int64
	for _, a := range got {
		require.Equal(t, "default", a.Record.GetNamespace())
		require.Equal(t, "cf", a.Record.GetChangefeedId())
		require.NotZero(t, a.ModRevision)
		ids = append(ids, a.Record.GetPipelineId())
	}
	slices.Sort(ids)
	require.Equal(t, []int64{1, 2, 4, 7, 8}, ids)

	got, err = st.ChangefeedAssignments(ctx, "other", "cf")
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.EqualValues(t, 5, got[0].Record.GetPipelineId())

	got, err = st.ChangefeedAssignments(ctx, "default", "c")
	require.NoError(t, err)
	require.Empty(t, got, "a changefeed id that is a prefix of others matches none of theirs")

	ps, err := st.Placements(ctx)
	require.NoError(t, err)
	require.ElementsMatch(t, []store.Placement{
		{Member: "p", Namespace: "default", Changefeed: "cf"},
		{Member: "p", Namespace: "default", Changefeed: "cf-2"},
		{Member: "p-2", Namespace: "default", Changefeed: "cf"},
		{Member: "p-2", Namespace: "other", Changefeed: "cf"},
		{Member: "p1", Namespace: "default", Changefeed: "cf"},
		{Member: "p1", Namespace: "default", Changefeed: "cf-2"},
		{Member: "q", Namespace: "default", Changefeed: "cf"},
	}, ps)

	// A pipeline moving to another member is seen once, at its new place.
	require.NoError(t, st.Assign(ctx, fence, assignment(1, 2, "q"), "p"))
	got, err = st.ChangefeedAssignments(ctx, "default", "cf")
	require.NoError(t, err)
	require.Len(t, got, 5)
	for _, a := range got {
		if a.Record.GetPipelineId() == 1 {
			require.Equal(t, "q", a.Record.GetProducerMember())
		}
	}

	require.Equal(t, "test", st.Keys().Cluster())
}
