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
// It is not responsible for: reading the upstream schema (Config.Tables),
// the GC safepoint and finishing at the target ts (the owner's tick), nor
// tables that DDL creates or drops after the changefeed's checkpoint.
package scheduler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
	"github.com/tidestream/tidestream/coordinator/changefeed"
	"github.com/tidestream/tidestream/coordinator/placement"
	"github.com/tidestream/tidestream/coordinator/store"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// Table is one table a changefeed replicates: one pipeline, whose id is
// the table's logical id.
type Table struct {
	ID           int64
	Schema, Name string
	// Spans are the table's record spans: one, or one per partition.
	Spans []*pb.Span
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
	DefaultInterval = time.Second
	DefaultMaxMoves = 16
)

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.Store == nil:
		return errors.New("scheduler: Config.Store is required")
	case c.Tables == nil:
		return errors.New("scheduler: Config.Tables is required")
	case c.Interval < 0 || c.MaxMoves < 0:
		return errors.New("scheduler: Interval and MaxMoves must not be negative")
	}
	return nil
}

// Scheduler is the owner's pipeline loop. Its state is a cache of what it
// read from the upstream; everything else is read from etcd every round,
// so a new owner carries on from the records alone.
type Scheduler struct {
	cfg Config
	log *slog.Logger

	// tables caches each changefeed's table list for the run (status
	// epoch) it was read for; reads run aside (tablesOf).
	mu     sync.Mutex
	tables map[cfKey]*tableList
	reads  sync.WaitGroup
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
	// later, so rows of a new partition are not skipped.
	starts, seen, respan map[int64]uint64
	refreshing           bool
	refreshErr           error
}

type goneTable struct {
	Table
	at uint64
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
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Scheduler{cfg: cfg, log: cfg.Logger.With("component", "scheduler"), tables: map[cfKey]*tableList{}}, nil
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
	assigned, rev, err := s.cfg.Store.Assignments(ctx, "")
	if err != nil {
		return err
	}
	progress, err := s.cfg.Store.AllProgress(ctx)
	if err != nil {
		return err
	}

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
			want = append(want, pipelineOf(f, t.ID, t.Schema, t.Name, t.ID, t.Spans, progress, lastEpoch, floor))
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
			a.TargetTs = f.cf.Info.GetTargetTs()
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
			starts: map[int64]uint64{}, seen: map[int64]uint64{}, respan: map[int64]uint64{}}
		s.tables[k] = tl
		s.reads.Go(func() {
			rctx, cancel := context.WithTimeout(ctx, readTimeout)
			defer cancel()
			tables, err := s.cfg.Tables(rctx, cf, ts)
			if err == nil && tables == nil {
				tables = []Table{}
			}
			slices.SortFunc(tables, func(a, b Table) int { return cmp.Compare(a.ID, b.ID) })
			s.mu.Lock()
			tl.tables, tl.err, tl.finished = tables, err, time.Now()
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
	defer s.mu.Unlock()
	tl.refreshing, tl.refreshErr = false, err
	if err != nil {
		s.log.Warn("following a changefeed's tables failed", "changefeed", k.id, "namespace", k.ns, "err", err)
		return
	}
	if ts <= tl.ts {
		return
	}
	if changed {
		tl.apply(tables, between, ts)
		s.log.Info("changefeed tables changed", "changefeed", k.id, "namespace", k.ns, "ts", ts, "tables", len(tl.tables), "gone", len(tl.gone))
	}
	tl.ts, tl.version = ts, version
}

// apply records the difference between the table set and tables, read at
// ts; between are tables DDL left behind since the last read, some of
// which may be gone already. Scheduler.mu held.
func (tl *tableList) apply(tables, between []Table, ts uint64) {
	before := make(map[int64]Table, len(tl.tables))
	for _, t := range tl.tables {
		before[t.ID] = t
	}
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
			tl.respan[t.ID] = tl.ts
		}
	}
	for id, t := range before {
		if !now[id] {
			tl.gone[id] = goneTable{Table: t, at: ts}
		}
	}
	for _, t := range between {
		if _, was := before[t.ID]; was || now[t.ID] {
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
	if s.cfg.SchemaVersion != nil {
		f.bound = tl.ts // else the first read's tables are all there is
	}
	f.starts = maps.Clone(tl.starts)
	f.respan = maps.Clone(tl.respan)
	f.tables = []Table{}
	var running []goneTable
	for id, g := range tl.gone {
		if cp, ok := pipelineCheckpoint(f, id, progress); ok && cp >= g.at {
			delete(tl.gone, id) // done: not wanted any more, so unassigned
			continue
		}
		running = append(running, g)
	}
	for _, t := range tl.tables {
		if seen, fresh := tl.seen[t.ID]; fresh && f.current[t.ID] == nil &&
			slices.ContainsFunc(running, func(g goneTable) bool { return g.at <= seen }) {
			f.bound = min(f.bound, tl.starts[t.ID]) // it will start there (fresh tables exist only when following)
			continue
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
