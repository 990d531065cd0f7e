// Package scheduler is the owner's loop over table pipelines (DESIGN.md
// §8): it turns each running changefeed into one pipeline per eligible
// table, keeps every pipeline placed on live members of each stage role
// (coordinator/placement decides, the store writes the records under the
// owner's fence), and folds the producers' progress records into the
// changefeed's checkpoint, resolved ts and state.
//
// It is responsible for: which pipelines a changefeed runs (its tables at
// its checkpoint, under its filter), retiring pipelines of changefeeds that
// stopped or were removed (and the progress records of removed ones), the
// changefeed checkpoint (the minimum over its pipelines, monotonic, capped
// at the target ts, written to the status key only), and the changefeed's
// warning / normal / failed state from its pipelines' errors.
//
// It also follows the tables DDL creates and drops after the checkpoint
// (Config.SchemaVersion) and splits hot tables into key-range pieces
// (split.go, Config.Regions).
//
// It is not responsible for: reading the upstream schema or its regions
// (the Config functions), the GC safepoint and finishing at the target ts
// (the owner's tick).
package scheduler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
	"github.com/tidestream/tidestream/coordinator/changefeed"
	"github.com/tidestream/tidestream/coordinator/placement"
	"github.com/tidestream/tidestream/coordinator/store"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// Table is one pipeline of a table a changefeed replicates: the whole
// table, whose pipeline id is its logical id, or a piece of a split one
// (PieceID).
type Table struct {
	ID int64
	// TableID is the table's logical id; 0 means ID.
	TableID      int64
	Schema, Name string
	// Spans are the table's record spans: one, or one per partition.
	Spans []*pb.Span
	// Splittable says the table may be split by key range (see split.go):
	// its Kafka key is its row handle and it has one span.
	Splittable bool
	// Physical are the physical table ids the spans cover (the table's,
	// or its partitions'): when one moves to another table (EXCHANGE
	// PARTITION) the owner hands it over at a ts (tableList.apply).
	Physical []int64
	// Ineligible, when set, says why the table is not replicated (it has
	// no primary key and no NOT NULL unique key): the lister names such
	// tables so that the owner can tell the user about ones that appear
	// while the changefeed runs. They get no pipeline.
	Ineligible string
}

// eligible splits tables into those that run and the ineligible ones.
func eligible(tables []Table) (run, skipped []Table) {
	for _, t := range tables {
		if t.Ineligible != "" {
			skipped = append(skipped, t)
		} else {
			run = append(run, t)
		}
	}
	return run, skipped
}

// normalize fills TableID and sorts by pipeline id.
func normalize(tables []Table) []Table {
	for i := range tables {
		if tables[i].TableID == 0 {
			tables[i].TableID = tables[i].ID
		}
	}
	slices.SortFunc(tables, func(a, b Table) int { return cmp.Compare(a.ID, b.ID) })
	return tables
}

// TableLister reads the tables a changefeed replicates at ts: its eligible
// tables under its filter, read from its upstream.
type TableLister func(ctx context.Context, cf *store.Changefeed, ts uint64) ([]Table, error)

// SchemaVersion reads a fresh TSO of a changefeed's upstream and TiDB's
// schema version at it: every DDL raises the version, so an unchanged one
// means the changefeed's tables are the same up to that ts.
type SchemaVersion func(ctx context.Context, cf *store.Changefeed) (ts uint64, version int64, err error)

// Config configures a Scheduler.
type Config struct {
	Store  *store.Store
	Tables TableLister
	// SchemaVersion, when set, makes the owner follow the tables a
	// changefeed's run sees change after its first read (created,
	// dropped, truncated, repartitioned, renamed out of or into the
	// filter, made eligible). Nil keeps the first read's tables.
	SchemaVersion SchemaVersion
	// TablesBetween, with SchemaVersion, lists the tables DDL jobs
	// finished in (from, to] left behind: one created and dropped or
	// truncated between two reads shows only there, and its rows are
	// replicated too.
	TablesBetween func(ctx context.Context, cf *store.Changefeed, from, to uint64) ([]Table, error)
	// Regions, with SchemaVersion, lets the owner split hot tables of
	// changefeeds whose scheduler config enables it: every RegionInterval
	// it counts each splittable table's regions.
	Regions        RegionLister
	RegionInterval time.Duration
	// Interval paces rounds. Default 1 s: a round reads the changefeeds,
	// members, assignments and progress records once, whatever their
	// number.
	Interval time.Duration
	// MaxMoves bounds the pipelines one round restarts elsewhere only for
	// balance (a member joined). Default 16.
	MaxMoves int
	Logger   *slog.Logger
}

// Defaults.
const (
	DefaultInterval       = time.Second
	DefaultMaxMoves       = 16
	DefaultRegionInterval = 10 * time.Second
)

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.Store == nil:
		return errors.New("scheduler: Config.Store is required")
	case c.Tables == nil:
		return errors.New("scheduler: Config.Tables is required")
	case c.Interval < 0 || c.MaxMoves < 0 || c.RegionInterval < 0:
		return errors.New("scheduler: Interval, MaxMoves and RegionInterval must not be negative")
	}
	return nil
}

// Scheduler is the owner's pipeline loop. Its state is a cache of what it
// read from the upstream; everything else is read from etcd every round,
// so a new owner carries on from the records alone.
type Scheduler struct {
	cfg Config
	log *slog.Logger
	// assignCache is Round's (rounds run one at a time).
	assignCache store.AssignmentCache

	// tables caches each changefeed's table list for the run (status
	// epoch) it was read for; reads run aside (tablesOf).
	mu     sync.Mutex
	tables map[cfKey]*tableList
	reads  sync.WaitGroup
	// width is the member count of the widest stage role, as the last
	// round saw it: how many pieces a hot table is split into.
	width atomic.Int64
	// rates are the pipelines' rows per minute (split.go), under mu.
	rates map[store.PipelineRef]*rowRate
}

type cfKey struct{ ns, id string }

type tableList struct {
	epoch uint64
	done  chan struct{} // closed when the first read finished
	// Set when done, and by refreshes (under Scheduler.mu).
	tables   []Table
	err      error
	finished time.Time
	// ts is the schema's resolved ts: the table set holds at least up to
	// it, so the changefeed's checkpoint may not pass it. version is
	// TiDB's schema version at ts (0 before the first refresh).
	ts      uint64
	version int64
	// gone are tables that disappeared by the read at their at: their
	// pipelines run on until they pass it, delivering the rows committed
	// before the DDL.
	gone map[int64]goneTable
	// starts are where tables that appeared after the first read start:
	// the ts of the read before, when they did not exist yet. seen is the
	// read that found them. respan is, for a table whose spans changed,
	// the ts of the read before the change: its pipeline restarts no
	// later, so rows of a new partition are not skipped. It goes once the
	// pipeline runs on the new spans.
	starts, seen, respan map[int64]uint64
	// kept are the spans a table lost (partitions dropped, truncated,
	// reorganized, exchanged away), which its pipeline keeps reading until
	// it passes the read that found them gone.
	kept       map[int64]keptSpans
	refreshing bool
	refreshErr error
	// splits are the tables run in pieces; gens the last split
	// generation of each table; regionsAt when regions were last counted.
	// adopted is set once the run's records were searched for splits a
	// previous owner made. ineligible are the tables the last read skipped.
	ineligible map[int64]bool
	splits     map[int64]*split
	gens       map[int64]int
	regionsAt  time.Time
	adopted    bool
}

type goneTable struct {
	Table
	at uint64
	// stop: the pipeline goes because its table's split changed, not
	// because the table did; it must produce nothing after at (its
	// assignment's target ts).
	stop bool
}

// keptSpans are spans a table's pipeline goes on reading after its table
// lost them, with their physical ids, until its checkpoint passes until.
// Rows committed before the DDL that took them are the table's, and no
// other pipeline reads them for it. Rows after it are not: the encoder
// drops a row whose physical id belongs to another table at its commit ts
// (EXCHANGE PARTITION), and that table's pipeline delivers it.
type keptSpans struct {
	spans    []*pb.Span
	physical []int64
	until    uint64
}

func (t *tableList) failed() bool { return t.err != nil }

// New returns a Scheduler for cfg.
func New(cfg Config) (*Scheduler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.MaxMoves == 0 {
		cfg.MaxMoves = DefaultMaxMoves
	}
	if cfg.RegionInterval == 0 {
		cfg.RegionInterval = DefaultRegionInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Scheduler{cfg: cfg, log: cfg.Logger.With("component", "scheduler"), tables: map[cfKey]*tableList{}, rates: map[store.PipelineRef]*rowRate{}}, nil
}

// Run runs rounds until ctx ends (nil) or the fence is lost
// (cdcerr.ErrNotOwner); other failures are logged and retried next round.
// It returns once the table reads it started have.
func (s *Scheduler) Run(ctx context.Context, fence store.Fence) error {
	ctx, cancel := context.WithCancel(ctx)
	defer s.reads.Wait()
	defer cancel()
	tick := time.NewTicker(s.cfg.Interval)
	defer tick.Stop()
	for {
		if err := s.Round(ctx, fence); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, cdcerr.ErrNotOwner) {
				return err
			}
			s.log.Warn("scheduling round failed; retrying next interval", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// running says whether a changefeed in state st runs pipelines.
func running(st pb.ChangefeedState) bool {
	return st == pb.ChangefeedState_CHANGEFEED_STATE_NORMAL || st == pb.ChangefeedState_CHANGEFEED_STATE_WARNING
}

// feed is one changefeed as a round sees it.
type feed struct {
	cf      *store.Changefeed
	key     cfKey
	list    *tableList // nil while unknown (the upstream could not be read)
	readErr error
	// Decided by want (from list, under Scheduler.mu): the tables to run
	// now (nil while unknown), the bound the schema puts on the
	// checkpoint, and where fresh or re-spanned pipelines start.
	tables []Table
	bound  uint64 // 0: none (the tables are not followed)
	starts map[int64]uint64
	respan map[int64]uint64
	stops  map[int64]uint64
	// current are its assignment records of this run (status epoch).
	current map[int64]*pb.PipelineAssignment
}

// Round is one pass: read, place, write, aggregate.
func (s *Scheduler) Round(ctx context.Context, fence store.Fence) error {
	cfs, err := s.cfg.Store.List(ctx, "")
	if err != nil {
		return err
	}
	members, err := s.cfg.Store.Members(ctx)
	if err != nil {
		return err
	}
	s.width.Store(int64(stageWidth(members)))
	// The round reads records and writes new ones, never changing one it
	// read, so decoded records can be kept from round to round.
	assigned, rev, err := s.cfg.Store.AssignmentsCached(ctx, "", &s.assignCache)
	if err != nil {
		return err
	}
	progress, err := s.cfg.Store.AllProgress(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.noteRows(progress, time.Now())
	s.mu.Unlock()

	feeds := map[cfKey]*feed{}
	for _, cf := range cfs {
		k := cfKey{store.NamespaceOr(cf.Info.GetNamespace()), cf.Info.GetId()}
		f := &feed{cf: cf, key: k, current: map[int64]*pb.PipelineAssignment{}}
		feeds[k] = f
		if running(cf.Status.GetState()) {
			f.list, f.readErr = s.tablesOf(ctx, cf)
		}
	}
	s.mu.Lock()
	for k := range s.tables {
		if f := feeds[k]; f == nil || !running(f.cf.Status.GetState()) {
			delete(s.tables, k) // read again when it runs again
		}
	}
	s.mu.Unlock()

	// Records of changefeeds that no longer run, or of an earlier run of
	// one that does (resumed, checkpoint overwritten), go; the run's own
	// records are placement's current state.
	var retire []store.AssignmentOp
	var current []*pb.PipelineAssignment
	lastEpoch := map[placement.Key]uint64{}
	for _, a := range assigned {
		r := a.Record
		pk := placement.RecordKey(r)
		lastEpoch[pk] = max(lastEpoch[pk], r.GetEpoch())
		f := feeds[cfKey{pk.Namespace, r.GetChangefeedId()}]
		if f == nil || !running(f.cf.Status.GetState()) || r.GetChangefeedEpoch() != f.cf.Status.GetEpoch() {
			retire = append(retire, store.AssignmentOp{Delete: r})
			continue
		}
		f.current[r.GetPipelineId()] = r
		current = append(current, r)
	}
	for ref, st := range progress {
		pk := placement.Key{Namespace: ref.Namespace, Changefeed: ref.Changefeed, ID: ref.Pipeline}
		lastEpoch[pk] = max(lastEpoch[pk], st.GetEpoch())
	}
	// A pipeline placed afresh (a new changefeed, a resume, a re-created
	// id) starts above any epoch it may have run at before: stages
	// remember released epochs and refuse lower ones as zombies, and its
	// old records may be gone. The etcd revision only grows.
	floor := uint64(rev)

	var want []placement.Pipeline
	for _, f := range sortedFeeds(feeds) {
		if !running(f.cf.Status.GetState()) {
			continue
		}
		s.want(f, progress)
		if f.tables == nil {
			for _, r := range sortedRecords(f.current) {
				want = append(want, pipelineOf(f, r.GetPipelineId(), r.GetSchemaName(), r.GetTableName(), r.GetTableId(), r.GetSpans(), progress, lastEpoch, floor))
			}
			continue
		}
		for _, t := range f.tables {
			p := pipelineOf(f, t.ID, t.Schema, t.Name, t.TableID, t.Spans, progress, lastEpoch, floor)
			if t.ID != t.TableID {
				p.Spread = t.TableID
			}
			want = append(want, p)
		}
	}

	plan, err := placement.Plan(placement.Input{Pipelines: want, Members: placementMembers(members), Current: current, MaxMoves: s.cfg.MaxMoves})
	if err != nil {
		return err
	}
	ops := make([]store.AssignmentOp, 0, len(retire)+len(plan.Ops))
	puts := map[string]bool{}
	for _, op := range plan.Ops {
		if a := op.Assign; a != nil {
			f := feeds[cfKey{store.NamespaceOr(a.GetNamespace()), a.GetChangefeedId()}]
			a.ChangefeedEpoch = f.cf.Status.GetEpoch()
			a.TargetTs = f.target(a.GetPipelineId())
			puts[s.assignmentKey(a)] = true
			f.current[a.GetPipelineId()] = a
		} else if u := op.Unassign; u != nil {
			if f := feeds[cfKey{store.NamespaceOr(u.GetNamespace()), u.GetChangefeedId()}]; f != nil && f.current[u.GetPipelineId()] == u {
				delete(f.current, u.GetPipelineId())
			}
		}
	}
	for _, op := range retire {
		// A record of an earlier run that this plan overwrites under the
		// same key is replaced by the put; etcd refuses a transaction that
		// names a key twice.
		if !puts[s.assignmentKey(op.Delete)] {
			ops = append(ops, op)
		}
	}
	ops = append(ops, s.retarget(feeds, puts, lastEpoch, progress)...)
	for _, op := range plan.Ops {
		if op.Assign != nil {
			ops = append(ops, store.AssignmentOp{Put: op.Assign, From: op.From})
			s.log.Info("pipeline placed", "changefeed", op.Assign.GetChangefeedId(), "pipeline", op.Assign.GetPipelineId(),
				"epoch", op.Assign.GetEpoch(), "start_ts", op.Assign.GetStartTs(), "producer", op.Assign.GetProducerMember(),
				"encoder", op.Assign.GetEncoderMember(), "sorter", op.Assign.GetSorterMember(), "puller", op.Assign.GetPullerMember(), "reason", op.Reason)
		} else {
			ops = append(ops, store.AssignmentOp{Delete: op.Unassign})
		}
	}
	if len(ops) > 0 {
		if err := s.cfg.Store.ApplyAssignments(ctx, fence, ops); err != nil {
			return err
		}
	}

	// Progress records of removed changefeeds go once their assignments
	// are gone, so a producer cannot write one again. A paused one keeps
	// them: its per-table checkpoints stay visible.
	stillAssigned := map[cfKey]bool{}
	for _, a := range assigned {
		stillAssigned[cfKey{store.NamespaceOr(a.Record.GetNamespace()), a.Record.GetChangefeedId()}] = true
	}
	var errs []error
	for _, k := range progressFeeds(progress) {
		if feeds[k] == nil && !stillAssigned[k] {
			if err := s.cfg.Store.DeleteProgress(ctx, fence, k.ns, k.id); err != nil {
				errs = append(errs, err)
			}
		}
	}

	unplaced := map[cfKey][]placement.Unplaced{}
	for _, u := range plan.Unplaced {
		k := cfKey{u.Pipeline.Namespace, u.Pipeline.Changefeed}
		unplaced[k] = append(unplaced[k], u)
	}
	for _, f := range sortedFeeds(feeds) {
		if !running(f.cf.Status.GetState()) {
			continue
		}
		if err := s.aggregate(ctx, fence, f, progress, unplaced[f.key]); err != nil {
			if errors.Is(err, cdcerr.ErrNotOwner) {
				return err
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// tablesOf returns the changefeed's tables for its current run, read at
// its checkpoint when the run is first seen. The read goes to the
// upstream, which may be slow or down: it runs aside, and a round waits
// for it only up to readWait, so one unreachable upstream does not hold up
// every other changefeed. Until it succeeds the changefeed's pipelines stay
// as they are (nil tables); a failed read is tried again after
// readRetry, its error shown meanwhile.
func (s *Scheduler) tablesOf(ctx context.Context, cf *store.Changefeed) (*tableList, error) {
	k := cfKey{store.NamespaceOr(cf.Info.GetNamespace()), cf.Info.GetId()}
	epoch, ts := cf.Status.GetEpoch(), cf.Status.GetCheckpointTs()
	s.mu.Lock()
	tl := s.tables[k]
	if tl == nil || tl.epoch != epoch || tl.failed() && time.Since(tl.finished) > readRetry {
		tl = &tableList{epoch: epoch, ts: ts, done: make(chan struct{}), gone: map[int64]goneTable{},
			starts: map[int64]uint64{}, seen: map[int64]uint64{}, respan: map[int64]uint64{}, kept: map[int64]keptSpans{},
			splits: map[int64]*split{}, gens: map[int64]int{}, ineligible: map[int64]bool{}}
		s.tables[k] = tl
		s.reads.Go(func() {
			rctx, cancel := context.WithTimeout(ctx, readTimeout)
			defer cancel()
			tables, err := s.cfg.Tables(rctx, cf, ts)
			tables, skipped := eligible(tables)
			if err == nil && tables == nil {
				tables = []Table{}
			}
			tables = normalize(tables)
			s.mu.Lock()
			tl.tables, tl.err, tl.finished = tables, err, time.Now()
			for _, t := range skipped {
				tl.ineligible[t.ID] = true
			}
			s.mu.Unlock()
			close(tl.done)
			if err != nil {
				s.log.Warn("reading a changefeed's tables failed", "changefeed", k.id, "namespace", k.ns, "ts", ts, "err", err)
			} else {
				s.log.Info("changefeed tables read", "changefeed", k.id, "namespace", k.ns, "ts", ts, "tables", len(tables))
			}
		})
	}
	s.mu.Unlock()
	select {
	case <-tl.done:
	case <-time.After(readWait):
	case <-ctx.Done():
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if tl.err != nil {
		return nil, fmt.Errorf("tables of changefeed %s/%s at %d: %w", k.ns, k.id, tl.ts, tl.err)
	}
	if tl.tables == nil {
		return nil, nil // the first read is still on its way
	}
	if s.cfg.SchemaVersion != nil && !tl.refreshing {
		tl.refreshing = true
		s.reads.Go(func() { s.refresh(ctx, cf, k, tl) })
	}
	return tl, nil
}

// refresh moves a run's table set to the upstream's present: when the
// schema version did not change only its resolved ts moves, else the
// tables are read again and the difference recorded (see tableList).
func (s *Scheduler) refresh(ctx context.Context, cf *store.Changefeed, k cfKey, tl *tableList) {
	rctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	var tables []Table
	var between []Table
	ts, version, err := s.cfg.SchemaVersion(rctx, cf)
	s.mu.Lock()
	changed, prev := err == nil && version != tl.version, tl.ts
	s.mu.Unlock()
	if changed {
		tables, err = s.cfg.Tables(rctx, cf, ts)
	}
	if changed && err == nil && s.cfg.TablesBetween != nil && ts > prev {
		between, err = s.cfg.TablesBetween(rctx, cf, prev, ts)
	}
	s.mu.Lock()
	if err == nil && ts > tl.ts {
		if changed {
			var skipped []Table
			tables, skipped = eligible(tables)
			between, _ = eligible(between)
			now := make(map[int64]bool, len(skipped))
			for _, t := range skipped {
				now[t.ID] = true
				if !tl.ineligible[t.ID] {
					// TiCDC skips such a table with a warning too; the
					// user agreed to skip those there at create.
					s.log.Warn("table not replicated", "changefeed", k.id, "namespace", k.ns,
						"table", t.Schema+"."+t.Name, "table_id", t.ID, "reason", t.Ineligible, "ts", ts)
				}
			}
			tl.ineligible = now
			tl.apply(normalize(tables), normalize(between), ts)
			s.log.Info("changefeed tables changed", "changefeed", k.id, "namespace", k.ns, "ts", ts, "tables", len(tl.tables), "gone", len(tl.gone))
		}
		tl.ts, tl.version = ts, version
	}
	s.mu.Unlock()
	if err == nil {
		err = s.resplit(rctx, cf, k, tl, ts)
	}
	s.mu.Lock()
	tl.refreshing, tl.refreshErr = false, err
	s.mu.Unlock()
	if err != nil {
		s.log.Warn("following a changefeed's tables failed", "changefeed", k.id, "namespace", k.ns, "err", err)
	}
}

// apply records the difference between the table set and tables, read at
// ts; between are tables DDL left behind since the last read, some of
// which may be gone already. Scheduler.mu held.
func (tl *tableList) apply(tables, between []Table, ts uint64) {
	for id := range tl.splits {
		if !slices.ContainsFunc(tables, func(t Table) bool { return t.ID == id }) {
			delete(tl.splits, id) // dropped or truncated: its id never returns split
		}
	}
	tables = layout(tables, tl.splits)
	before := make(map[int64]Table, len(tl.tables))
	beforeTables := make(map[int64]bool, len(tl.tables))
	for _, t := range tl.tables {
		before[t.ID] = t
		beforeTables[t.TableID] = true
	}
	// A physical id that moves to another table (EXCHANGE PARTITION swaps
	// a partition with a table, which takes the partition's id as its
	// own) needs nothing of its own here. The table that took it re-spans
	// or, under its new id, starts like any new table; the one that gave
	// it keeps reading it up to the read that found it gone; each drops
	// the id's rows that are the other's at their commit ts (the encoder,
	// by the schema at that ts). So every row of a topic is delivered by
	// that topic's one pipeline, in commit order.
	now := make(map[int64]bool, len(tables))
	for _, t := range tables {
		now[t.ID] = true
		old, existed := before[t.ID]
		switch {
		case !existed:
			if _, ok := tl.gone[t.ID]; ok {
				// Back (RECOVER TABLE) before its old pipeline stopped:
				// that one simply goes on.
				delete(tl.gone, t.ID)
				continue
			}
			tl.starts[t.ID], tl.seen[t.ID] = tl.ts, ts
		case !sameSpans(old.Spans, t.Spans):
			if r, ok := tl.respan[t.ID]; !ok || tl.ts < r {
				tl.respan[t.ID] = tl.ts
			} // else an earlier change not yet run restarts it earlier
			tl.keep(t.ID, old, t, ts)
		}
	}
	for id, t := range before {
		if !now[id] {
			// Its pipeline runs on as it is, spans it kept included: it
			// passes the reads that found them gone before this one.
			tl.gone[id] = goneTable{Table: tl.kept[id].add(t), at: ts}
			delete(tl.kept, id)
		}
	}
	for _, t := range between {
		if _, was := before[t.ID]; was || now[t.ID] || beforeTables[t.TableID] {
			continue
		}
		if _, ok := tl.gone[t.ID]; ok {
			continue
		}
		// Created and gone again since the last read: it runs from that
		// read until past this one, like any table that disappeared.
		tl.gone[t.ID] = goneTable{Table: t, at: ts}
		tl.starts[t.ID] = tl.ts
	}
	slices.SortFunc(tables, func(a, b Table) int { return cmp.Compare(a.ID, b.ID) })
	tl.tables = tables
}

// keep records the spans table id lost going from old to now, found at
// ts, adding them to those it still keeps from earlier changes; a span
// the table has again is not kept. Scheduler.mu held.
func (tl *tableList) keep(id int64, old, now Table, ts uint64) {
	k := tl.kept[id]
	var spans []*pb.Span
	var physical []int64
	has := func(sp *pb.Span) bool {
		return slices.ContainsFunc(now.Spans, func(x *pb.Span) bool { return proto.Equal(x, sp) })
	}
	for i, sp := range k.spans {
		if !has(sp) {
			spans, physical = append(spans, sp), append(physical, k.physical[i])
		}
	}
	for i, sp := range old.Spans {
		if has(sp) || slices.ContainsFunc(spans, func(x *pb.Span) bool { return proto.Equal(x, sp) }) {
			continue
		}
		var p int64
		if len(old.Physical) == len(old.Spans) {
			p = old.Physical[i]
		}
		spans, physical = append(spans, sp), append(physical, p)
	}
	if len(spans) == 0 {
		delete(tl.kept, id)
		return
	}
	tl.kept[id] = keptSpans{spans: spans, physical: physical, until: ts}
}

// withKept is t as its pipeline runs it: with the spans it still keeps
// until it passes the read that found them gone. A pipeline already
// running on all of them that did pass drops them (and its respan, which
// that run served). Scheduler.mu held.
func (tl *tableList) withKept(f *feed, t Table, progress map[store.PipelineRef]*pb.PipelineStatus) Table {
	k, ok := tl.kept[t.ID]
	if !ok {
		return t
	}
	all := inOrderOf(k.add(t), f.current[t.ID].GetSpans())
	if sameSpans(f.current[t.ID].GetSpans(), all.Spans) {
		if cp, ok := pipelineCheckpoint(f, t.ID, progress); ok && cp >= k.until {
			delete(tl.kept, t.ID)
			delete(tl.respan, t.ID)
			delete(f.respan, t.ID)
			return t
		}
	}
	return all
}

// add is t with the kept spans after its own.
func (k keptSpans) add(t Table) Table {
	if len(k.spans) == 0 {
		return t
	}
	all := t
	all.Spans = append(slices.Clip(t.Spans), k.spans...)
	if len(t.Physical) == len(t.Spans) {
		all.Physical = append(slices.Clip(t.Physical), k.physical...)
	}
	return all
}

// inOrderOf is t with its spans in the order of cur when they are the same
// set: a table that only lost spans, which it keeps, runs on as it is
// rather than restart for their order.
func inOrderOf(t Table, cur []*pb.Span) Table {
	if len(cur) != len(t.Spans) || sameSpans(cur, t.Spans) {
		return t
	}
	idx := make([]int, len(cur))
	for i, sp := range cur {
		j := slices.IndexFunc(t.Spans, func(x *pb.Span) bool { return proto.Equal(x, sp) })
		if j < 0 {
			return t
		}
		idx[i] = j
	}
	out := t
	out.Spans = make([]*pb.Span, len(cur))
	for i, j := range idx {
		out.Spans[i] = t.Spans[j]
	}
	if len(t.Physical) == len(t.Spans) {
		out.Physical = make([]int64, len(cur))
		for i, j := range idx {
			out.Physical[i] = t.Physical[j]
		}
	}
	return out
}

func sameSpans(a, b []*pb.Span) bool {
	return slices.EqualFunc(a, b, func(x, y *pb.Span) bool { return proto.Equal(x, y) })
}

// Pacing of table reads.
const (
	readWait    = 2 * time.Second
	readTimeout = time.Minute
	readRetry   = 5 * time.Second
)

// pipelineOf is one wanted pipeline: it starts, or restarts elsewhere, at
// its own checkpoint when its current record's epoch reported one, else
// where its record started, else at the changefeed's checkpoint.
func pipelineOf(f *feed, id int64, schema, table string, tableID int64, spans []*pb.Span,
	progress map[store.PipelineRef]*pb.PipelineStatus, lastEpoch map[placement.Key]uint64, floor uint64) placement.Pipeline {
	p := placement.Pipeline{
		Namespace: f.key.ns, Changefeed: f.key.id, ID: id, Spans: spans, Schema: schema, Table: table, TableID: tableID,
		PDAddrs: f.cf.Info.GetPdAddrs(), Checkpoint: f.cf.Status.GetCheckpointTs(),
	}
	if start, ok := f.starts[id]; ok {
		p.Checkpoint = max(p.Checkpoint, start)
	}
	p.LastEpoch = lastEpoch[p.Key()]
	if cp, ok := pipelineCheckpoint(f, id, progress); ok {
		p.Checkpoint = cp
		if at, ok := f.respan[id]; ok && !sameSpans(f.current[id].GetSpans(), spans) {
			// Its spans changed (partitions added, exchanged): the new
			// ones' rows start after at, which the pipeline may be past.
			p.Checkpoint = min(cp, max(at, f.current[id].GetStartTs()))
		}
	} else {
		p.LastEpoch = max(p.LastEpoch, floor)
	}
	return p
}

// want decides, from the run's table list, which tables run now: the live
// ones, except a table that appeared while one that disappeared no later
// still runs (TRUNCATE, a partition exchanged or reorganized: the
// replacement starts once the old pipeline delivered everything before the
// DDL, so a key's old and new versions cannot arrive out of order), plus
// the disappeared ones until their pipelines pass the read that missed
// them. It also sets the bound the schema puts on the checkpoint.
func (s *Scheduler) want(f *feed, progress map[store.PipelineRef]*pb.PipelineStatus) {
	if f.list == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tl := f.list
	if !tl.adopted {
		// A previous owner's splits of this run go on as they are.
		tl.adopted = true
		if splits := adopt(tl.tables, f.current); len(splits) > 0 {
			for id, sp := range splits {
				tl.splits[id], tl.gens[id] = sp, sp.gen
			}
			tl.tables = normalize(layout(tl.tables, tl.splits))
		}
	}
	if s.cfg.SchemaVersion != nil {
		f.bound = tl.ts // else the first read's tables are all there is
	}
	f.stops = map[int64]uint64{}
	f.tables = []Table{}
	var running []goneTable
	for id, g := range tl.gone {
		if cp, ok := pipelineCheckpoint(f, id, progress); ok && cp >= g.at {
			delete(tl.gone, id) // done: not wanted any more, so unassigned
			if g.stop {
				delete(tl.respan, id) // a successor of the same id starts at g.at
			}
			continue
		}
		running = append(running, g)
		if g.stop {
			f.stops[id] = g.at
		}
	}
	f.starts = maps.Clone(tl.starts)
	f.respan = maps.Clone(tl.respan) // after the stopped ones dropped theirs
	// A pipeline that starts at ts waits while any pipeline stopping at
	// or before ts runs: one comparison with the earliest of them.
	firstStop := uint64(math.MaxUint64)
	for _, g := range running {
		firstStop = min(firstStop, g.at)
	}
	for _, t := range tl.tables {
		if seen, fresh := tl.seen[t.ID]; fresh && f.current[t.ID] == nil && firstStop <= seen {
			f.bound = min(f.bound, tl.starts[t.ID]) // it will start there (fresh tables exist only when following)
			continue
		}
		t = tl.withKept(f, t, progress)
		if sameSpans(f.current[t.ID].GetSpans(), t.Spans) {
			// It runs on them already (restarted from its respan, or
			// placed since): a later change restarts it from its own read.
			delete(tl.respan, t.ID)
		}
		f.tables = append(f.tables, t)
	}
	for _, g := range running {
		f.tables = append(f.tables, g.Table)
	}
	slices.SortFunc(f.tables, func(a, b Table) int { return cmp.Compare(a.ID, b.ID) })
	if tl.refreshErr != nil && f.readErr == nil {
		f.readErr = fmt.Errorf("following the tables of changefeed %s/%s: %w", f.key.ns, f.key.id, tl.refreshErr)
	}
}

// pipelineCheckpoint is how far a pipeline of the current run got: its
// progress record's checkpoint if written under its current epoch, else
// its record's start ts (a reassignment starts at the checkpoint it had).
func pipelineCheckpoint(f *feed, id int64, progress map[store.PipelineRef]*pb.PipelineStatus) (uint64, bool) {
	r := f.current[id]
	if r == nil {
		return 0, false
	}
	cp, _, _ := store.Reached(r, progress[store.PipelineRef{Namespace: f.key.ns, Changefeed: f.key.id, Pipeline: id}])
	return cp, true
}

// aggregate folds a running changefeed's pipelines into its status: the
// checkpoint and resolved ts are the minimum over its pipelines (only once
// every table has a pipeline of this run), never moving back; a pipeline
// error makes it warning, a fatal one failed, none normal.
func (s *Scheduler) aggregate(ctx context.Context, fence store.Fence, f *feed, progress map[store.PipelineRef]*pb.PipelineStatus, unplaced []placement.Unplaced) error {
	status := f.cf.Status
	var (
		checkpoint, resolved uint64
		complete             = f.tables != nil
		first                = true
		problem              *pb.RunningError
		fatal                bool
	)
	if f.readErr != nil {
		problem = &pb.RunningError{Message: f.readErr.Error()}
	}
	if len(unplaced) > 0 {
		complete = false
		if problem == nil {
			problem = &pb.RunningError{Message: fmt.Sprintf("%d pipelines cannot be placed: %s (pipeline %s)", len(unplaced), unplaced[0].Reason, unplaced[0].Pipeline)}
		}
	}
	for _, t := range f.tables {
		r := f.current[t.ID]
		if r == nil {
			complete = false
			continue
		}
		st := progress[store.PipelineRef{Namespace: f.key.ns, Changefeed: f.key.id, Pipeline: t.ID}]
		cp, res, counted := store.Reached(r, st)
		if counted {
			if e := st.GetError(); e != nil && (problem == nil || st.GetFatal() && !fatal) {
				problem = proto1(e, fmt.Sprintf("pipeline %d (%s.%s): ", t.ID, t.Schema, t.Name))
				fatal = st.GetFatal()
			}
		}
		if first || cp < checkpoint {
			checkpoint = cp
		}
		if first || res < resolved {
			resolved = res
		}
		first = false
	}
	if f.bound != 0 && f.tables != nil && (first || f.bound < checkpoint) {
		// The table set is known only up to bound: a table created
		// after it may still have to start there.
		checkpoint, first = f.bound, false
		if resolved == 0 || f.bound < resolved {
			resolved = f.bound
		}
	}
	if target := f.cf.Info.GetTargetTs(); target != 0 {
		checkpoint, resolved = min(checkpoint, target), min(resolved, target)
	}
	advance := complete && !first && checkpoint > status.GetCheckpointTs()
	advanceResolved := complete && !first && resolved > status.GetResolvedTs()
	state := pb.ChangefeedState_CHANGEFEED_STATE_NORMAL
	target := f.cf.Info.GetTargetTs()
	switch {
	case fatal:
		state = pb.ChangefeedState_CHANGEFEED_STATE_FAILED
	case problem != nil:
		state = pb.ChangefeedState_CHANGEFEED_STATE_WARNING
	case target != 0 && complete && !first && checkpoint >= target:
		// Every pipeline delivered up to the target: done, as TiCDC.
		state = pb.ChangefeedState_CHANGEFEED_STATE_FINISHED
	}
	sameErr := status.GetError().GetMessage() == problem.GetMessage()
	if !advance && !advanceResolved && state == status.GetState() && sameErr {
		return nil
	}
	epoch := status.GetEpoch()
	_, err := s.cfg.Store.UpdateStatus(ctx, f.key.ns, f.key.id, fence, func(cf *store.Changefeed) error {
		if cf.Status.GetEpoch() != epoch || !running(cf.Status.GetState()) {
			return errRunChanged // paused, resumed or failed meanwhile: next round
		}
		if advance {
			cf.Status.CheckpointTs = max(cf.Status.GetCheckpointTs(), checkpoint)
		}
		if advanceResolved {
			cf.Status.ResolvedTs = max(cf.Status.GetResolvedTs(), resolved)
		}
		to := state
		if to == pb.ChangefeedState_CHANGEFEED_STATE_FINISHED && cf.Status.GetState() == pb.ChangefeedState_CHANGEFEED_STATE_WARNING {
			to = pb.ChangefeedState_CHANGEFEED_STATE_NORMAL // finished only from normal: next round
		}
		if to != cf.Status.GetState() {
			if err := changefeed.CheckTransition(cf.Status.GetState(), to); err != nil {
				return err
			}
			cf.Status.State = to
		}
		cf.Status.Error = problem
		return nil
	})
	if errors.Is(err, errRunChanged) {
		return nil
	}
	if err == nil && state != status.GetState() {
		s.log.Warn("changefeed state", "changefeed", f.key.id, "namespace", f.key.ns, "from", status.GetState(), "to", state, "error", problem.GetMessage())
	}
	return err
}

var errRunChanged = errors.New("scheduler: the changefeed's run changed since it was read")

// proto1 copies a pipeline error with prefix on its message.
func proto1(e *pb.RunningError, prefix string) *pb.RunningError {
	return &pb.RunningError{Time: e.GetTime(), Addr: e.GetAddr(), Code: e.GetCode(), Message: prefix + e.GetMessage()}
}

func placementMembers(ms []*pb.Member) []placement.Member {
	out := make([]placement.Member, 0, len(ms))
	for _, m := range ms {
		out = append(out, placement.Member{ID: m.GetId(), Addr: m.GetAddr(), Roles: m.GetRoles()})
	}
	return out
}

func sortedFeeds(m map[cfKey]*feed) []*feed {
	out := make([]*feed, 0, len(m))
	for _, f := range m {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].key.ns != out[j].key.ns {
			return out[i].key.ns < out[j].key.ns
		}
		return out[i].key.id < out[j].key.id
	})
	return out
}

func sortedRecords(m map[int64]*pb.PipelineAssignment) []*pb.PipelineAssignment {
	out := make([]*pb.PipelineAssignment, 0, len(m))
	for _, r := range m {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b *pb.PipelineAssignment) int { return cmp.Compare(a.GetPipelineId(), b.GetPipelineId()) })
	return out
}

func progressFeeds(p map[store.PipelineRef]*pb.PipelineStatus) []cfKey {
	seen := map[cfKey]bool{}
	var out []cfKey
	for ref := range p {
		k := cfKey{ref.Namespace, ref.Changefeed}
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(a, b cfKey) int { return cmp.Or(strings.Compare(a.ns, b.ns), strings.Compare(a.id, b.id)) })
	return out
}

// assignmentKey is the etcd key a record is stored under.
func (s *Scheduler) assignmentKey(a *pb.PipelineAssignment) string {
	return s.cfg.Store.Keys().Assignment(a.GetProducerMember(), store.NamespaceOr(a.GetNamespace()), a.GetChangefeedId(), a.GetPipelineId())
}
