package scheduler

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tidestream/tidestream/coordinator/placement"
	"github.com/tidestream/tidestream/coordinator/store"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// A hot table is split by key range into pieces, one pipeline each, placed
// apart (TiCDC's scheduler.enable-table-across-nodes with
// region-threshold). A key's versions stay in order because a key belongs
// to one piece for as long as the split holds; a split changes at a ts
// (stopAt) that the old pipelines stop at (their assignment's target ts)
// and the new ones start from once every old one got there.
//
// Only tables whose Kafka key is their row handle are split (Table.
// Splittable): for a table keyed by a unique index over a _tidb_rowid
// handle, or a partitioned one, the same Kafka key can move between
// handles or partitions, and two pipelines could then deliver a delete and
// the insert that follows it out of order.

// Piece ids: bit 62 set (positive: negative ids are the encoder's DDL
// pipelines), then the table id (38 bits), the split's generation (8 bits,
// to tell a split from the one it replaces), the number of pieces and the
// piece's index (8 bits each). A table id above 2^38 is not split.
const (
	pieceFlag     = int64(1) << 62
	pieceTableMax = int64(1)<<38 - 1
	// MaxPieces bounds the pieces of one table.
	MaxPieces = 255
	// regionsPerPiece is the most regions a piece is given when there are
	// more pieces than stage members (TiCDC's new architecture keeps 100
	// regions per span).
	regionsPerPiece = 100
)

// PieceID is the pipeline id of piece idx of k of a table split at
// generation gen.
func PieceID(table int64, gen, k, idx int) int64 {
	return pieceFlag | table<<24 | int64(gen&0xff)<<16 | int64(k&0xff)<<8 | int64(idx&0xff)
}

// PieceOf undoes PieceID; ok is false for a whole table's pipeline id.
func PieceOf(id int64) (table int64, gen, k, idx int, ok bool) {
	if id < 0 || id&pieceFlag == 0 {
		return 0, 0, 0, 0, false
	}
	return id &^ pieceFlag >> 24, int(id >> 16 & 0xff), int(id >> 8 & 0xff), int(id & 0xff), true
}

// TableOf is the logical table id of a pipeline id.
func TableOf(id int64) int64 {
	if t, _, _, _, ok := PieceOf(id); ok {
		return t
	}
	return id
}

// RegionLister reads the regions each span holds, clipped to it, in key
// order (spans in the SubscribeRequest encoding).
type RegionLister func(ctx context.Context, cf *store.Changefeed, spans []*pb.Span) ([][]*pb.Span, error)

// split is how one table is cut: its pieces (k of them, in key order) at
// generation gen.
type split struct {
	base   Table
	gen    int
	pieces []Table
}

// piecesFor is how many pieces a table should run as under the
// changefeed's scheduler config, with width members in the widest stage
// role: whole (1) unless it is hot — its rows modified per minute (perMin)
// at or over write-key-threshold (while split, half of it: a table that
// calms down a little is not merged and split again), or its regions at or
// over region-threshold; a hot table runs as one piece per member, more
// when that leaves a piece over regionsPerPiece regions, never more
// pieces than regions.
func piecesFor(cfg *pb.SchedulerConfig, regions, width int, perMin float64, split bool) int {
	if !cfg.GetEnableTableAcrossNodes() {
		return 1
	}
	hot := false
	if w := float64(cfg.GetWriteKeyThreshold()); w > 0 {
		hot = perMin >= w || split && perMin >= w/2
	}
	if r := cfg.GetRegionThreshold(); r > 0 && int64(regions) >= r {
		hot = true
	}
	if !hot {
		return 1
	}
	k := max(width, (regions+regionsPerPiece-1)/regionsPerPiece)
	k = min(k, regions, MaxPieces)
	if k < 2 {
		return 1
	}
	return k
}

// cut divides t, one span, into k pieces of consecutive regions (as even
// as the count allows). The first piece starts where the table does and
// the last ends where it does, so the pieces cover it exactly whatever
// the regions' clipping.
func cut(t Table, regions []*pb.Span, k, gen int) ([]Table, error) {
	if len(t.Spans) != 1 || k < 2 || k > len(regions) {
		return nil, fmt.Errorf("scheduler: cannot cut table %d (%d spans) into %d pieces of %d regions", t.ID, len(t.Spans), k, len(regions))
	}
	out := make([]Table, 0, k)
	start := t.Spans[0].GetStartKey()
	for i := range k {
		var end []byte
		if i == k-1 {
			end = t.Spans[0].GetEndKey()
		} else {
			end = regions[(i+1)*len(regions)/k].GetStartKey()
		}
		if bytes.Compare(start, end) >= 0 {
			return nil, fmt.Errorf("scheduler: regions of table %d are not in key order", t.ID)
		}
		out = append(out, Table{ID: PieceID(t.ID, gen, k, i), TableID: t.ID, Schema: t.Schema, Name: t.Name,
			Spans: []*pb.Span{{StartKey: start, EndKey: end}}, Splittable: true, Physical: t.Physical})
		start = end
	}
	return out, nil
}

// stopMargin is how far ahead of the owner's clock a split change takes
// effect: the old pipelines' new target ts must reach their producers
// before any record committed after it can (the sorter releases a record
// only once its resolved ts passes the record's commit ts), and the owner
// writes it within a round.
const stopMargin = 3000 // ms of TSO physical time

// stopAt is the ts a split change decided at ts takes effect at: a TSO's
// physical part (ms) sits above its 18 logical bits.
func stopAt(ts uint64) uint64 { return ts + stopMargin<<18 }

// layout is the pipelines tables run as under splits: a split table's
// pieces in place of it, while its spans are the split's.
func layout(tables []Table, splits map[int64]*split) []Table {
	out := make([]Table, 0, len(tables))
	for _, t := range tables {
		if sp := splits[t.TableID]; sp != nil && sameSpans(sp.base.Spans, t.Spans) {
			for _, p := range sp.pieces {
				p.Schema, p.Name = t.Schema, t.Name // a rename keeps the split
				out = append(out, p)
			}
			continue
		}
		delete(splits, t.TableID)
		out = append(out, t)
	}
	return out
}

// adopt takes a table's split from the current run's records when a new
// owner finds one: for each table, the newest generation whose every
// piece has a record. Records of older generations, or a whole table's
// record beside them, are left out: the next round unassigns them.
func adopt(tables []Table, current map[int64]*pb.PipelineAssignment) map[int64]*split {
	type group struct {
		gen, k int
		pieces map[int]*pb.PipelineAssignment
	}
	groups := map[[2]int64]*group{} // table, gen
	for id, r := range current {
		t, gen, k, idx, ok := PieceOf(id)
		if !ok {
			continue
		}
		g := groups[[2]int64{t, int64(gen)}]
		if g == nil {
			g = &group{gen: gen, k: k, pieces: map[int]*pb.PipelineAssignment{}}
			groups[[2]int64{t, int64(gen)}] = g
		}
		if k == g.k {
			g.pieces[idx] = r
		}
	}
	splits := map[int64]*split{}
	for _, t := range tables {
		if !t.Splittable || len(t.Spans) != 1 {
			continue
		}
		var best *group
		for key, g := range groups {
			if key[0] != t.TableID || len(g.pieces) != g.k {
				continue
			}
			// Generations wrap at 256; the records of one run hold at most
			// two at once, so the newer is the one just after the older.
			if best == nil || uint8(g.gen-best.gen) < 128 {
				best = g
			}
		}
		if best == nil {
			continue
		}
		sp := &split{base: t, gen: best.gen}
		start := t.Spans[0].GetStartKey()
		for idx := range best.k {
			r := best.pieces[idx]
			if len(r.GetSpans()) != 1 || !bytes.Equal(r.GetSpans()[0].GetStartKey(), start) {
				sp = nil
				break
			}
			start = r.GetSpans()[0].GetEndKey()
			sp.pieces = append(sp.pieces, Table{ID: r.GetPipelineId(), TableID: t.TableID, Schema: t.Schema, Name: t.Name,
				Spans: r.GetSpans(), Splittable: true, Physical: t.Physical})
		}
		if sp != nil && bytes.Equal(start, t.Spans[0].GetEndKey()) {
			splits[t.TableID] = sp
		}
	}
	return splits
}

// resplit counts the regions of the run's splittable tables every
// RegionInterval and changes the splits the counts call for (piecesFor),
// each taking effect at stopAt(ts). A table whose earlier change has not
// finished (a pipeline of it still stopping) waits for the next count.
// Scheduler.mu not held: the count is a read of the upstream.
func (s *Scheduler) resplit(ctx context.Context, cf *store.Changefeed, k cfKey, tl *tableList, ts uint64) error {
	sc := cf.Info.GetConfig().GetScheduler()
	if s.cfg.Regions == nil || !sc.GetEnableTableAcrossNodes() {
		return nil
	}
	s.mu.Lock()
	// Until a round adopted the splits a previous owner left (want), the
	// list holds split tables as whole ones: counting now would split
	// them again over the running pieces, under the same piece ids.
	if !tl.adopted || !tl.regionsAt.IsZero() && time.Since(tl.regionsAt) < s.cfg.RegionInterval {
		s.mu.Unlock()
		return nil
	}
	busy := map[int64]bool{}
	for _, g := range tl.gone {
		busy[g.TableID] = true
	}
	var bases []Table
	for _, t := range tl.tables {
		if !t.Splittable || busy[t.TableID] {
			continue
		}
		busy[t.TableID] = true // once per table
		if sp := tl.splits[t.TableID]; sp != nil {
			bases = append(bases, sp.base)
		} else if t.ID == t.TableID && len(t.Spans) == 1 {
			bases = append(bases, t)
		}
	}
	s.mu.Unlock()
	var regions [][]*pb.Span
	if len(bases) > 0 {
		spans := make([]*pb.Span, len(bases))
		for i, b := range bases {
			spans[i] = b.Spans[0]
		}
		var err error
		if regions, err = s.cfg.Regions(ctx, cf, spans); err != nil {
			return fmt.Errorf("counting the regions of %d tables: %w", len(bases), err)
		}
		if len(regions) != len(bases) {
			return fmt.Errorf("counting the regions of %d tables: got %d answers", len(bases), len(regions))
		}
	}
	width := int(s.width.Load())
	at := stopAt(ts)
	s.mu.Lock()
	defer s.mu.Unlock()
	tl.regionsAt = time.Now()
	perMin := s.tableRates(k)
	for i, b := range bases {
		sp := tl.splits[b.TableID]
		want, have := piecesFor(sc, len(regions[i]), width, perMin[b.TableID], sp != nil), 1
		if sp != nil {
			have = len(sp.pieces)
		}
		if want == have || b.TableID > pieceTableMax || !tl.holds(b) {
			continue
		}
		next := []Table{b}
		if want > 1 {
			gen := (tl.gens[b.TableID] + 1) & 0xff
			pieces, err := cut(b, regions[i], want, gen)
			if err != nil {
				s.log.Warn("table not split", "changefeed", k.id, "namespace", k.ns, "table", b.Schema+"."+b.Name, "err", err)
				continue
			}
			tl.gens[b.TableID] = gen
			tl.splits[b.TableID] = &split{base: b, gen: gen, pieces: pieces}
			next = pieces
		} else {
			delete(tl.splits, b.TableID)
		}
		tl.replace(b.TableID, next, at)
		s.log.Info("table split changed", "changefeed", k.id, "namespace", k.ns, "table", b.Schema+"."+b.Name,
			"table_id", b.TableID, "regions", len(regions[i]), "rows_per_min", int64(perMin[b.TableID]),
			"pieces_from", have, "pieces_to", want, "at", at)
	}
	return nil
}

// holds says whether base is still one of the run's tables as it was
// when its regions were counted (no DDL changed it since). Scheduler.mu
// held.
func (tl *tableList) holds(base Table) bool {
	if sp := tl.splits[base.TableID]; sp != nil {
		return sameSpans(sp.base.Spans, base.Spans)
	}
	return slices.ContainsFunc(tl.tables, func(t Table) bool { return t.ID == base.ID && sameSpans(t.Spans, base.Spans) })
}

// replace runs a table as next from at on: its pipelines now stop at at
// (gone, stopping), and next start there once they all got there (want
// holds fresh pipelines back until then). Scheduler.mu held.
func (tl *tableList) replace(table int64, next []Table, at uint64) {
	kept := make([]Table, 0, len(tl.tables)+len(next))
	for _, t := range tl.tables {
		if t.TableID == table {
			tl.gone[t.ID] = goneTable{Table: t, at: at, stop: true}
			continue
		}
		kept = append(kept, t)
	}
	for _, t := range next {
		tl.starts[t.ID], tl.seen[t.ID] = at, at
		kept = append(kept, t)
	}
	tl.tables = normalize(kept)
}

// target is the target ts a pipeline's assignment carries: the
// changefeed's, or earlier where a split change stops the pipeline.
func (f *feed) target(id int64) uint64 {
	t := f.cf.Info.GetTargetTs()
	if at, ok := f.stops[id]; ok && (t == 0 || at < t) {
		t = at
	}
	return t
}

// retarget rewrites the current records whose target ts is not the one
// their pipeline should have (feed.target), except those this round puts
// anyway. A lower target is written under the same epoch: the producer
// applies it to the running pipeline, which then produces nothing after
// it. A higher one (a new owner that never learnt of the split change its
// predecessor started) restarts the pipeline under a new epoch from its
// checkpoint: the run dropped what it read above its old target, so it
// must read it again.
func (s *Scheduler) retarget(feeds map[cfKey]*feed, puts map[string]bool, lastEpoch map[placement.Key]uint64,
	progress map[store.PipelineRef]*pb.PipelineStatus) []store.AssignmentOp {
	var ops []store.AssignmentOp
	for _, f := range sortedFeeds(feeds) {
		if !running(f.cf.Status.GetState()) || f.tables == nil {
			continue
		}
		for _, r := range sortedRecords(f.current) {
			id := r.GetPipelineId()
			want, have := f.target(id), r.GetTargetTs()
			if want == have || puts[s.assignmentKey(r)] {
				continue
			}
			n := proto.CloneOf(r)
			n.TargetTs = want
			if have != 0 && (want == 0 || want > have) {
				cp, _ := pipelineCheckpoint(f, id, progress)
				n.Epoch, n.StartTs = max(lastEpoch[placement.RecordKey(r)], r.GetEpoch())+1, cp
			}
			ops = append(ops, store.AssignmentOp{Put: n})
			f.current[id] = n
			s.log.Info("pipeline target changed", "changefeed", f.key.id, "pipeline", id, "target_ts", want, "epoch", n.GetEpoch())
		}
	}
	return ops
}

// stageWidth is the member count of the widest stage role.
func stageWidth(members []*pb.Member) int {
	counts := map[string]int{}
	for _, m := range members {
		for _, r := range m.GetRoles() {
			switch placement.Role(r) {
			case placement.RolePuller, placement.RoleSorter, placement.RoleEncoder, placement.RoleProducer:
				counts[r]++
			}
		}
	}
	w := 0
	for _, n := range counts {
		w = max(w, n)
	}
	return w
}

// rowRate follows one pipeline's produced row count (PipelineStatus.rows)
// to estimate its rows per minute over windows of rateWindow.
type rowRate struct {
	epoch  uint64
	rows   uint64
	at     time.Time
	perMin float64
}

const rateWindow = 10 * time.Second

// noteRows updates the pipelines' row rates from a round's progress
// records. A restarted count (new epoch, or a producer restarted the
// pipeline) starts a new window and keeps the last rate meanwhile.
// Scheduler.mu held.
func (s *Scheduler) noteRows(progress map[store.PipelineRef]*pb.PipelineStatus, now time.Time) {
	for ref, st := range progress {
		r := s.rates[ref]
		switch {
		case r == nil:
			s.rates[ref] = &rowRate{epoch: st.GetEpoch(), rows: st.GetRows(), at: now}
		case r.epoch != st.GetEpoch() || st.GetRows() < r.rows:
			r.epoch, r.rows, r.at = st.GetEpoch(), st.GetRows(), now
		case now.Sub(r.at) >= rateWindow:
			r.perMin = float64(st.GetRows()-r.rows) / now.Sub(r.at).Minutes()
			r.rows, r.at = st.GetRows(), now
		}
	}
	for ref := range s.rates {
		if progress[ref] == nil {
			delete(s.rates, ref)
		}
	}
}

// tableRates sums a changefeed's pipelines' row rates per table.
// Scheduler.mu held.
func (s *Scheduler) tableRates(k cfKey) map[int64]float64 {
	out := map[int64]float64{}
	for ref, r := range s.rates {
		if ref.Namespace == k.ns && ref.Changefeed == k.id {
			out[TableOf(ref.Pipeline)] += r.perMin
		}
	}
	return out
}
