package scheduler

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tidestream/tidestream/coordinator/store"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

func TestPiecesFor(t *testing.T) {
	on := func(regions, writes int64) *pb.SchedulerConfig {
		return &pb.SchedulerConfig{EnableTableAcrossNodes: true, RegionThreshold: regions, WriteKeyThreshold: writes}
	}
	for _, c := range []struct {
		name    string
		cfg     *pb.SchedulerConfig
		regions int
		width   int
		perMin  float64
		split   bool
		want    int
	}{
		{"off", &pb.SchedulerConfig{RegionThreshold: 2}, 10, 3, 0, false, 1},
		{"under the region threshold", on(10, 0), 9, 3, 0, false, 1},
		{"at the region threshold: one piece per member", on(10, 0), 10, 3, 0, false, 3},
		{"no more pieces than regions", on(2, 0), 2, 3, 0, false, 2},
		{"one member: whole", on(2, 0), 5, 1, 0, false, 1},
		{"at most 100 regions a piece", on(10, 0), 1000, 3, 0, false, 10},
		{"at most 255 pieces", on(10, 0), 100000, 3, 0, false, 255},
		{"write traffic over its threshold", on(0, 30000), 4, 2, 30000, false, 2},
		{"write traffic under it", on(0, 30000), 4, 2, 29999, false, 1},
		{"a split table stays split down to half", on(0, 30000), 4, 2, 15000, true, 2},
		{"and merges below", on(0, 30000), 4, 2, 14999, true, 1},
		{"write traffic, but one region: cannot cut", on(0, 30000), 1, 2, 90000, false, 1},
		{"either threshold", on(3, 30000), 3, 2, 0, false, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.want, piecesFor(c.cfg, c.regions, c.width, c.perMin, c.split))
		})
	}
}

// Rates come from the rows counts in progress records over windows; a
// count that restarts (new epoch, restarted pipeline) opens a new window.
func TestRowRates(t *testing.T) {
	s := &Scheduler{rates: map[store.PipelineRef]*rowRate{}}
	ref := func(id int64) store.PipelineRef {
		return store.PipelineRef{Namespace: "default", Changefeed: "cf", Pipeline: id}
	}
	p1, p2 := PieceID(7, 1, 2, 0), PieceID(7, 1, 2, 1)
	t0 := time.Unix(1000, 0)
	round := func(at time.Duration, rows map[int64]uint64, epoch uint64) {
		progress := map[store.PipelineRef]*pb.PipelineStatus{}
		for id, n := range rows {
			progress[ref(id)] = &pb.PipelineStatus{Epoch: epoch, Rows: n}
		}
		s.noteRows(progress, t0.Add(at))
	}
	round(0, map[int64]uint64{p1: 0, p2: 100, 8: 0}, 1)
	round(5*time.Second, map[int64]uint64{p1: 500, p2: 600, 8: 10}, 1)
	require.Zero(t, s.tableRates(cfKey{"default", "cf"})[7], "no window closed yet")
	round(rateWindow, map[int64]uint64{p1: 1000, p2: 1100, 8: 10}, 1)
	rates := s.tableRates(cfKey{"default", "cf"})
	require.InDelta(t, 12000, rates[7], 1, "both pieces: 2 x 1000 rows in 10 s")
	require.InDelta(t, 60, rates[8], 0.1, "10 rows in 10 s")
	round(rateWindow+time.Second, map[int64]uint64{p1: 10, p2: 1100}, 2) // p1 restarted; table 8 gone
	require.InDelta(t, 12000, s.tableRates(cfKey{"default", "cf"})[7], 1, "the last rate holds meanwhile")
	require.NotContains(t, s.rates, ref(8))
	round(2*rateWindow+time.Second, map[int64]uint64{p1: 110, p2: 1100}, 2)
	require.InDelta(t, 600, s.tableRates(cfKey{"default", "cf"})[7], 1, "100 rows in 10 s on p1, p2 idle")
}

// A new owner's first table read starts a refresh beside the round, and
// the refresh counts regions. Until the round adopted the splits the
// previous owner left, the list shows a split table as whole: counting
// then would split it again under the running pieces' ids, and stop a
// whole-table pipeline that must not run at all. The count waits.
func TestRegionsAreNotCountedBeforeTheSplitsAreAdopted(t *testing.T) {
	counted := 0
	s, err := New(Config{Store: &store.Store{}, Tables: func(context.Context, *store.Changefeed, uint64) ([]Table, error) { return nil, nil },
		RegionInterval: time.Millisecond,
		Regions: func(_ context.Context, _ *store.Changefeed, spans []*pb.Span) ([][]*pb.Span, error) {
			counted++
			out := make([][]*pb.Span, len(spans))
			for i, sp := range spans {
				out[i] = []*pb.Span{{StartKey: sp.GetStartKey(), EndKey: []byte("t1_rm")}, {StartKey: []byte("t1_rm"), EndKey: sp.GetEndKey()}}
			}
			return out, nil
		}})
	require.NoError(t, err)
	s.width.Store(2)
	cf := &store.Changefeed{Info: &pb.ChangefeedInfo{Id: "cf", Config: &pb.ReplicaConfig{Scheduler: &pb.SchedulerConfig{EnableTableAcrossNodes: true, RegionThreshold: 2}}}}
	hot := Table{ID: 1, TableID: 1, Schema: "db", Name: "t1", Splittable: true, Physical: []int64{1},
		Spans: []*pb.Span{{StartKey: []byte("t1_r"), EndKey: []byte("t1_s")}}}
	tl := &tableList{tables: []Table{hot}, gone: map[int64]goneTable{}, starts: map[int64]uint64{}, seen: map[int64]uint64{},
		respan: map[int64]uint64{}, kept: map[int64]keptSpans{}, splits: map[int64]*split{}, gens: map[int64]int{}}
	k := cfKey{"default", "cf"}

	require.NoError(t, s.resplit(context.Background(), cf, k, tl, 1000))
	require.Zero(t, counted, "not counted before adoption")
	require.Empty(t, tl.splits)
	require.Empty(t, tl.gone, "the whole table is not stopped")

	tl.adopted = true
	require.NoError(t, s.resplit(context.Background(), cf, k, tl, 1000))
	require.Equal(t, 1, counted)
	require.Len(t, tl.splits[1].pieces, 2, "counted and split once adopted")
}
