package scheduler_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tidestream/tidestream/coordinator/scheduler"
	"github.com/tidestream/tidestream/coordinator/store"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

func TestPieceIDs(t *testing.T) {
	for _, c := range []struct {
		table         int64
		gen, k, index int
	}{{1, 1, 2, 0}, {1, 1, 2, 1}, {424242, 255, 255, 254}, {1<<38 - 1, 0, 3, 2}} {
		id := scheduler.PieceID(c.table, c.gen, c.k, c.index)
		require.Positive(t, id, "piece ids must not look like the encoder's DDL pipelines")
		table, gen, k, index, ok := scheduler.PieceOf(id)
		require.True(t, ok)
		require.Equal(t, []any{c.table, c.gen, c.k, c.index}, []any{table, gen, k, index})
		require.Equal(t, c.table, scheduler.TableOf(id))
	}
	_, _, _, _, ok := scheduler.PieceOf(42)
	require.False(t, ok, "a table's own id is no piece")
	require.EqualValues(t, 42, scheduler.TableOf(42))
}

// splitEnv is a changefeed with table-across-nodes on (threshold 4
// regions) over table 1 (splittable) and table 2 (not), two members of
// every role, and a region count the test sets.
type splitEnv struct {
	*env
	regions int // under env.mu
}

func newSplitEnv(t *testing.T) *splitEnv {
	e := &splitEnv{env: newEnv(t, 0), regions: 1}
	t1 := table(1)
	t1.Splittable = true
	e.setSchema(1000, t1, table(2))
	_, err := e.st.UpdateInfo(e.ctx, "default", "cf", func(cf *store.Changefeed) error {
		cf.Info.Config = &pb.ReplicaConfig{Scheduler: &pb.SchedulerConfig{EnableTableAcrossNodes: true, RegionThreshold: 4}}
		return nil
	})
	require.NoError(t, err)
	e.member("m1", allRoles...)
	e.member("m2", allRoles...)
	return e
}

func (e *splitEnv) scheduler() *scheduler.Scheduler {
	return e.following(scheduler.Config{RegionInterval: time.Millisecond,
		Regions: func(_ context.Context, _ *store.Changefeed, spans []*pb.Span) ([][]*pb.Span, error) {
			e.mu.Lock()
			defer e.mu.Unlock()
			out := make([][]*pb.Span, len(spans))
			for i, sp := range spans {
				require.Equal(e.t, table(1).Spans[0].GetStartKey(), sp.GetStartKey(), "only the splittable table is counted")
				start := sp.GetStartKey()
				for r := range e.regions {
					end := sp.GetEndKey()
					if r < e.regions-1 {
						end = fmt.Appendf(nil, "t1_r%02d", r+1)
					}
					out[i] = append(out[i], &pb.Span{StartKey: start, EndKey: end})
					start = end
				}
			}
			return out, nil
		}})
}

func (e *splitEnv) set(ts uint64, regions int) {
	e.advance(ts)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.regions = regions
}

// stopAt mirrors the scheduler's: 3 s of TSO physical time ahead.
func stopAt(ts uint64) uint64 { return ts + 3000<<18 }

// A table over the region threshold runs as one pipeline per member,
// each on its own producer and encoder, covering the table exactly; the
// whole table's pipeline stops at a ts (its target) and the pieces start
// there only once it got there. Below the threshold again the pieces stop
// and the table runs whole. A new owner keeps the split it finds.
func TestHotTableSplitsAcrossMembersAndMergesBack(t *testing.T) {
	e := newSplitEnv(t)
	s := e.scheduler()
	settle, progress := e.settle, e.reached
	settle(s, "both tables placed whole", func() bool { return len(e.records()) == 2 })
	progress(1, 1000)
	progress(2, 1000)

	e.set(2000, 6)
	at := stopAt(2000)
	settle(s, "the whole table's pipeline told to stop", func() bool { return e.records()[1].GetTargetTs() == at })
	whole := e.records()[1]
	for range 5 {
		e.round(s)
	}
	require.Len(t, e.records(), 2, "the pieces wait for the whole table's pipeline to reach the split")
	require.Zero(t, e.records()[2].GetTargetTs(), "other tables go on")

	// An owner that takes over now never heard of the split: it lets the
	// table run whole again, from its checkpoint under a new epoch, since
	// the pipeline dropped what it read above its target.
	e.set(2000, 1)
	s2 := e.scheduler()
	settle(s2, "target lifted under a new epoch", func() bool { return e.records()[1].GetTargetTs() == 0 })
	r := e.records()[1]
	require.Greater(t, r.GetEpoch(), whole.GetEpoch())
	require.EqualValues(t, 1000, r.GetStartTs(), "from its checkpoint")

	e.set(3000, 6)
	at = stopAt(3000)
	settle(s2, "split decided again", func() bool { return e.records()[1].GetTargetTs() == at })
	progress(1, at)
	settle(s2, "pieces placed once the whole table reached the split", func() bool { return e.records()[1] == nil && len(e.records()) == 3 })
	var pieces []*pb.PipelineAssignment
	for id, r := range e.records() {
		if id != 2 {
			pieces = append(pieces, r)
		}
	}
	if bytes.Compare(pieces[0].GetSpans()[0].GetStartKey(), pieces[1].GetSpans()[0].GetStartKey()) > 0 {
		pieces[0], pieces[1] = pieces[1], pieces[0]
	}
	require.Equal(t, table(1).Spans[0].GetStartKey(), pieces[0].GetSpans()[0].GetStartKey())
	require.Equal(t, pieces[0].GetSpans()[0].GetEndKey(), pieces[1].GetSpans()[0].GetStartKey(), "pieces meet")
	require.Equal(t, []byte("t1_r03"), pieces[0].GetSpans()[0].GetEndKey(), "cut at the middle region")
	require.Equal(t, table(1).Spans[0].GetEndKey(), pieces[1].GetSpans()[0].GetEndKey())
	for _, p := range pieces {
		require.EqualValues(t, at, p.GetStartTs(), "pieces start where the whole table stopped")
		require.Zero(t, p.GetTargetTs())
		require.EqualValues(t, 1, p.GetTableId())
		require.Equal(t, "t1", p.GetTableName())
	}
	require.NotEqual(t, pieces[0].GetProducerMember(), pieces[1].GetProducerMember(), "pieces on different producers")
	require.NotEqual(t, pieces[0].GetEncoderMember(), pieces[1].GetEncoderMember(), "and encoders")

	// A third owner adopts the split: nothing is rewritten.
	rev := e.revision()
	s3 := e.scheduler()
	for range 5 {
		e.round(s3)
	}
	require.Equal(t, rev, e.revision(), "a new owner keeps the split it finds; written: %v", e.writtenSince(rev))

	progress(2, at+100)
	progress(pieces[0].GetPipelineId(), at+100)
	progress(pieces[1].GetPipelineId(), at+100)
	settle(s3, "checkpoint over the pieces", func() bool { return e.status().GetCheckpointTs() == 3000 })

	e.set(4000, 2) // under the threshold: whole again
	at2 := stopAt(4000)
	settle(s3, "pieces told to stop", func() bool {
		rs := e.records()
		return rs[pieces[0].GetPipelineId()].GetTargetTs() == at2 && rs[pieces[1].GetPipelineId()].GetTargetTs() == at2
	})
	progress(pieces[0].GetPipelineId(), at2)
	for range 5 {
		e.round(s3)
	}
	require.Nil(t, e.records()[1], "the whole table waits for every piece")
	progress(pieces[1].GetPipelineId(), at2)
	settle(s3, "whole table again", func() bool { return len(e.records()) == 2 && e.records()[1] != nil })
	require.EqualValues(t, at2, e.records()[1].GetStartTs())
	require.Greater(t, e.records()[1].GetEpoch(), r.GetEpoch(), "above the epochs it ran at before")
}

// EXCHANGE PARTITION swaps a partition's id with a table's, and the table
// takes the partition's id as its own. Every topic must get its rows from
// one pipeline at a time, in commit order, so no pipeline stops at a
// hand-off ahead (the two old pipelines would both deliver rows of the
// moved ids in between, into each other's topics):
//   - p re-spans from the read before the exchange, over its new ids and
//     the one it gave, which it keeps until it passes the read that found
//     it gone (the encoder drops the rows that are nt's by then);
//   - nt's old pipeline runs on until it passes that read;
//   - nt under its new id starts at the read before, once nt's old
//     pipeline is done, so nt's topic never has two writers.
func TestExchangePartitionReSpansAndKeepsTheGivenID(t *testing.T) {
	e := newEnv(t, 0)
	e.member("m1", allRoles...)
	e.setSchema(1000, phys(130, "p", 131, 132), phys(124, "nt", 124))
	s := e.following(scheduler.Config{})
	settle := func(what string, cond func() bool) { t.Helper(); e.settle(s, what, cond) }
	settle("both placed", func() bool { return len(e.records()) == 2 })
	e.reached(130, 1500)
	e.reached(124, 1500)
	before130 := e.records()[130]

	// The same read also finds partition 150, which an earlier DDL added.
	e.setSchema(2000, phys(130, "p", 124, 132, 150), phys(131, "nt", 131))
	settle("p re-spanned", func() bool { return e.records()[130].GetEpoch() > before130.GetEpoch() })
	rs := e.records()
	require.Equal(t, []string{"t124_r", "t132_r", "t150_r", "t131_r"}, starts(rs[130]),
		"p reads its new ids, and the one it gave until it passes the exchange")
	require.EqualValues(t, 1000, rs[130].GetStartTs(), "from the read before the exchange, which it may have passed")
	require.Zero(t, rs[130].GetTargetTs(), "no hand-off ahead")
	require.NotNil(t, rs[124], "nt's old pipeline runs on")
	require.Zero(t, rs[124].GetTargetTs())
	require.Nil(t, rs[131], "nt under its new id waits for its old pipeline")

	for range 5 {
		e.round(s)
	}
	require.Nil(t, e.records()[131], "still waiting: nt's topic has one writer at a time")
	e.reached(124, 2000)
	settle("nt under its new id placed once the old one passed the exchange", func() bool {
		rs := e.records()
		return rs[124] == nil && rs[131] != nil
	})
	require.EqualValues(t, 1000, e.records()[131].GetStartTs(), "from the read before: the encoder drops what was p's")
	require.Equal(t, []string{"t131_r"}, starts(e.records()[131]))

	// p drops the id it gave once it passed the read that found it gone,
	// from its own checkpoint: there is nothing before it to read again.
	respanned := e.records()[130]
	e.reached(130, 1999)
	for range 5 {
		e.round(s)
	}
	require.Equal(t, respanned.GetEpoch(), e.records()[130].GetEpoch(), "not before it passed the exchange")
	e.reached(130, 2600)
	settle("p drops the given id", func() bool { return len(starts(e.records()[130])) == 3 })
	r := e.records()[130]
	require.Equal(t, []string{"t124_r", "t132_r", "t150_r"}, starts(r))
	require.EqualValues(t, 2600, r.GetStartTs())
	require.Greater(t, r.GetEpoch(), respanned.GetEpoch())
}

// A partition dropped (or truncated, reorganized) while the table's
// pipeline is behind the DDL must not lose the partition's last rows: the
// pipeline keeps its span, running on as it is, until it passes the read
// that found it gone, and then drops it from its checkpoint.
func TestDroppedPartitionIsReadUntilThePipelinePassesTheDrop(t *testing.T) {
	e := newEnv(t, 0)
	e.member("m1", allRoles...)
	e.setSchema(1000, phys(130, "p", 131, 132))
	s := e.following(scheduler.Config{})
	e.settle(s, "placed", func() bool { return len(e.records()) == 1 })
	e.reached(130, 1500)
	placed := e.records()[130]

	e.setSchema(2000, phys(130, "p", 132))
	for range 10 {
		e.round(s)
	}
	r := e.records()[130]
	require.Equal(t, placed.GetEpoch(), r.GetEpoch(), "the pipeline runs on, the dropped partition's span included")
	require.Equal(t, []string{"t131_r", "t132_r"}, starts(r))

	e.reached(130, 2100)
	e.settle(s, "the dropped partition's span goes", func() bool { return len(starts(e.records()[130])) == 1 })
	r = e.records()[130]
	require.Equal(t, []string{"t132_r"}, starts(r))
	require.EqualValues(t, 2100, r.GetStartTs(), "from its checkpoint")
}

// phys is a table over the given physical ids, one span each.
func phys(id int64, name string, ids ...int64) scheduler.Table {
	tb := scheduler.Table{ID: id, Schema: "db", Name: name, Physical: ids}
	for _, p := range ids {
		tb.Spans = append(tb.Spans, &pb.Span{StartKey: fmt.Appendf(nil, "t%d_r", p), EndKey: fmt.Appendf(nil, "t%d_s", p)})
	}
	return tb
}

func starts(r *pb.PipelineAssignment) []string {
	var out []string
	for _, sp := range r.GetSpans() {
		out = append(out, string(sp.GetStartKey()))
	}
	return out
}
