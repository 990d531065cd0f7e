package schema

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"

	"github.com/pingcap/tidb/pkg/meta/model"
	"github.com/tidestream/tidestream/encoder/row"
)

// Errors returned by lookups. Callers test them with errors.Is; every
// returned error wraps exactly one of them.
var (
	// ErrDropped: the physical id belonged to a table or partition that was
	// dropped, truncated or replaced at or before the asked ts. A row of it
	// is a stray (e.g. replayed by an incremental scan) and is dropped.
	// It wraps row.ErrGone, which mount tests for.
	ErrDropped = fmt.Errorf("schema: %w", row.ErrGone)
	// ErrUnknown: the history never saw the id at or before the asked ts
	// (system-schema tables are never tracked). A row of it means the
	// history and the data disagree: a pipeline error.
	ErrUnknown = errors.New("schema: unknown table")
	// ErrNotResolved: the asked ts is above Resolved(); DDLs finishing at or
	// below it may still arrive. Wait with WaitResolved first.
	ErrNotResolved = errors.New("schema: ts not resolved yet")
	// ErrTooOld: the asked ts is below the snapshot ts or below what Forget
	// released, so the answer may be wrong.
	ErrTooOld = errors.New("schema: ts below the history")
	// ErrJobOrder: a finished job arrived at a commit ts the history had
	// already resolved past, so versions after it may be wrong. Terminal for
	// this history: rebuild it from a new snapshot.
	ErrJobOrder = errors.New("schema: job below resolved ts")
)

// GoneReason says why an id stopped being a live table.
type GoneReason uint8

// Reasons an id is gone. All of them mean "drop the row"; they differ only
// for the owner, which reports them.
const (
	NotGone   GoneReason = iota
	Dropped              // DROP TABLE/VIEW/DATABASE, DROP PARTITION
	Truncated            // TRUNCATE TABLE, TRUNCATE PARTITION
	Replaced             // REORGANIZE PARTITION, (REMOVE) PARTITIONING gave new ids
	MovedOut             // renamed into a system schema, which is not tracked
)

func (g GoneReason) String() string {
	switch g {
	case NotGone:
		return "live"
	case Dropped:
		return "dropped"
	case Truncated:
		return "truncated"
	case Replaced:
		return "replaced"
	case MovedOut:
		return "moved to a system schema"
	}
	return fmt.Sprintf("gone(%d)", uint8(g))
}

// Version is one version of one table, shared by the table's logical id and
// all its partition ids. It is immutable.
type Version struct {
	// Table is the table at this version; nil when Gone != NotGone.
	Table *row.Table
	// LogicalID is the table's logical id, SchemaID its database's id.
	LogicalID, SchemaID int64
	// Since is the finished ts of the DDL that produced the version (the
	// commit ts of its Done row), or the snapshot ts for snapshot versions.
	Since uint64
	// Eligibility of the table at this version; meaningless when gone.
	Eligibility Eligibility
	// Gone says whether, and why, the id stopped being live at Since.
	Gone GoneReason
	// DDL is the statement text of the job that produced the version
	// (TiDB's job Query), empty for snapshot versions. It is kept so that
	// an error the version causes downstream, such as a schema registry
	// refusing its Avro schema, can name the statement the user ran.
	DDL string
}

// Options configure a History.
type Options struct {
	// Filter decides Filtered eligibility. Nil accepts every table.
	Filter Filter
	// OnUnsupported, if set, is called by the writer for finished jobs the
	// history cannot apply faithfully (FLASHBACK DATABASE and FLASHBACK
	// CLUSTER: what they restore stays unknown). It must not block or call
	// the History's writer methods.
	OnUnsupported func(job *model.Job)
}

// JobEvent is one finished DDL job and the commit ts of its Done row, the
// moment its schema became visible (spec §1.4 step 3).
type JobEvent struct {
	Job      *model.Job
	CommitTs uint64
}

type jobKey struct {
	ts  uint64
	ver int64
}

func (a jobKey) cmp(b jobKey) int {
	return cmp.Or(cmp.Compare(a.ts, b.ts), cmp.Compare(a.ver, b.ver))
}

// tableState is the writer's view of a live table.
type tableState struct {
	info     *model.TableInfo
	schemaID int64
}

// History is the schema history of one changefeed. Many goroutines may call
// its read methods (Lookup, TableAt, Tables, Resolved, WaitResolved) while
// one writer calls AddJob, AdvanceResolved and Forget.
//
// Readers never see a half-applied job: a job's versions all carry Since =
// its finished ts, which is above the published resolved ts until the whole
// batch containing it is applied, and lookups refuse ts above the resolved
// ts. The mutex only protects the maps' memory, not that ordering.
type History struct {
	opts Options

	// wmu serialises writers; one writer is the contract, but a second one
	// would corrupt the state below without it.
	wmu sync.Mutex
	// Writer-only state: the live schema as of the last applied job.
	dbs     map[int64]*model.DBInfo
	tables  map[int64]*tableState
	pending map[jobKey]*model.Job
	// lastApply is the key of the last applied job; it starts above every
	// job at the snapshot ts, all of which the snapshot includes.
	lastApply jobKey
	broken    error
	// ddl is the query of the job being applied, for the versions it makes.
	ddl string

	mu       sync.RWMutex
	versions map[int64][]*Version // physical (and logical) id -> ascending Since
	resolved uint64
	floor    uint64
	advanced chan struct{} // closed and replaced whenever resolved moves
}

// New builds a history from a meta snapshot. It is resolved to snap.Ts.
func New(snap *Snapshot, opts Options) (*History, error) {
	if snap == nil {
		return nil, errors.New("schema: nil snapshot")
	}
	h := &History{
		opts:      opts,
		dbs:       make(map[int64]*model.DBInfo, len(snap.DBs)),
		tables:    make(map[int64]*tableState),
		pending:   make(map[jobKey]*model.Job),
		versions:  make(map[int64][]*Version),
		resolved:  snap.Ts,
		floor:     snap.Ts,
		lastApply: jobKey{ts: snap.Ts, ver: math.MaxInt64},
		advanced:  make(chan struct{}),
	}
	for _, db := range snap.DBs {
		h.dbs[db.ID] = db
	}
	for dbID, tables := range snap.Tables {
		if _, ok := h.dbs[dbID]; !ok {
			return nil, fmt.Errorf("schema: snapshot has tables of unknown database %d", dbID)
		}
		for _, info := range tables {
			if err := h.setTable(info.ID, dbID, info, snap.Ts, snap.SchemaVersion, NotGone); err != nil {
				return nil, err
			}
		}
	}
	return h, nil
}

// UnknownError is the ErrUnknown of one lookup: the id and the ts asked.
type UnknownError struct {
	PhysicalID int64
	Ts         uint64
}

func (e *UnknownError) Error() string {
	return fmt.Sprintf("%v: table %d at %d", ErrUnknown, e.PhysicalID, e.Ts)
}

// Is makes errors.Is(err, ErrUnknown) hold.
func (e *UnknownError) Is(target error) bool { return target == ErrUnknown }

// Knows reports whether the history has seen physicalID at any ts: a
// partition that a DDL not yet in the history adds is unknown until that
// DDL arrives, though TiDB writes rows into it before.
func (h *History) Knows(physicalID int64) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.versions[physicalID]) > 0
}

// Resolved is the ts up to which the history is complete: every DDL with
// finished ts ≤ Resolved() has been applied.
func (h *History) Resolved() uint64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.resolved
}

// WaitResolved blocks until Resolved() ≥ ts or ctx ends.
func (h *History) WaitResolved(ctx context.Context, ts uint64) error {
	for {
		h.mu.RLock()
		r, ch := h.resolved, h.advanced
		h.mu.RUnlock()
		if r >= ts {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("schema: wait for resolved ts %d (at %d): %w", ts, r, ctx.Err())
		}
	}
}

// TableAt returns the version of the table owning physicalID (a table or a
// partition id) in force at ts: the newest one whose finished ts ≤ ts. To
// decode a row committed at T pass T−1 (spec §4.3), so that a DDL finishing
// at T does not apply to it.
//
// Errors wrap ErrDropped (drop the row), ErrUnknown, ErrNotResolved or
// ErrTooOld. An ineligible table is returned without error; see Lookup for
// its Eligibility.
func (h *History) TableAt(physicalID int64, ts uint64) (*row.Table, error) {
	v, err := h.Lookup(physicalID, ts)
	if err != nil {
		return nil, err
	}
	return v.Table, nil
}

// RowTable is the table to decode a row of physicalID committed at commitTs
// with: it waits until the history is resolved to commitTs−1 and returns
// TableAt(physicalID, commitTs−1). That wait is enough: every DDL that
// applies to the row finished at ≤ commitTs−1, and one finishing at commitTs
// does not apply to it (spec §4.3).
func (h *History) RowTable(ctx context.Context, physicalID int64, commitTs uint64) (*row.Table, error) {
	if commitTs == 0 {
		return nil, fmt.Errorf("schema: row of table %d with commit ts 0", physicalID)
	}
	if err := h.WaitResolved(ctx, commitTs-1); err != nil {
		return nil, err
	}
	return h.TableAt(physicalID, commitTs-1)
}

// Lookup is TableAt returning the whole Version. For a dropped id it returns
// the gone version together with the ErrDropped error.
func (h *History) Lookup(physicalID int64, ts uint64) (*Version, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if ts > h.resolved {
		return nil, fmt.Errorf("%w: table %d at %d, resolved %d", ErrNotResolved, physicalID, ts, h.resolved)
	}
	if ts < h.floor {
		return nil, fmt.Errorf("%w: table %d at %d, history starts at %d", ErrTooOld, physicalID, ts, h.floor)
	}
	v := versionAt(h.versions[physicalID], ts)
	if v == nil {
		v = h.partitionBeforeItsDDL(physicalID, ts)
	}
	switch {
	case v == nil:
		return nil, &UnknownError{PhysicalID: physicalID, Ts: ts}
	case v.Gone != NotGone:
		return v, fmt.Errorf("%w: table %d %s at %d", ErrDropped, physicalID, v.Gone, v.Since)
	}
	return v, nil
}

// partitionBeforeItsDDL is the version to decode a row of physicalID
// committed before the DDL that made it a partition finished: its
// logical table's version at ts, when the id's first version is a live
// partition of a table live at ts; nil otherwise. TiDB writes to new
// partition ids from an intermediate state of the job, before its finished
// ts: TRUNCATE PARTITION swaps the new ids in at StateDeleteOnly, so rows
// inserted from then on exist only there (real rows, which must not be
// lost), and REORGANIZE PARTITION double-writes and backfills its new
// partitions from StateWriteOnly (copies of rows the old partitions
// deliver too, so at worst duplicates). Partition DDLs never change the
// columns, so the logical table's version at ts decodes them. mu held.
func (h *History) partitionBeforeItsDDL(physicalID int64, ts uint64) *Version {
	vs := h.versions[physicalID]
	if len(vs) == 0 {
		return nil
	}
	first := vs[0]
	if first.Gone != NotGone || first.LogicalID == physicalID {
		return nil
	}
	lv := versionAt(h.versions[first.LogicalID], ts)
	if lv == nil || lv.Gone != NotGone || lv.LogicalID != first.LogicalID || lv.Table.Info.GetPartitionInfo() == nil {
		return nil
	}
	return lv
}

func versionAt(vs []*Version, ts uint64) *Version {
	i := sort.Search(len(vs), func(i int) bool { return vs[i].Since > ts })
	if i == 0 {
		return nil
	}
	return vs[i-1]
}

// Tables lists the live tables at ts, one Version per logical table, ordered
// by logical id. The owner uses it to decide which spans a changefeed has.
func (h *History) Tables(ts uint64) ([]*Version, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if ts > h.resolved {
		return nil, fmt.Errorf("%w: tables at %d, resolved %d", ErrNotResolved, ts, h.resolved)
	}
	if ts < h.floor {
		return nil, fmt.Errorf("%w: tables at %d, history starts at %d", ErrTooOld, ts, h.floor)
	}
	var out []*Version
	for id, vs := range h.versions {
		v := versionAt(vs, ts)
		if v != nil && v.Gone == NotGone && v.LogicalID == id {
			out = append(out, v)
		}
	}
	slices.SortFunc(out, func(a, b *Version) int { return cmp.Compare(a.LogicalID, b.LogicalID) })
	return out, nil
}

// Forget releases versions no reader needs any more: for each id it keeps the
// newest version with Since ≤ belowTs and everything after it. Pass the
// minimum checkpoint of every pipeline sharing the history. Lookups below
// belowTs fail with ErrTooOld afterwards. Gone markers are kept so a stray
// row of a dropped id is still recognised as such.
func (h *History) Forget(belowTs uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	// Never forget above resolved: versions above it are not final yet.
	belowTs = min(belowTs, h.resolved)
	if belowTs <= h.floor {
		return
	}
	h.floor = belowTs
	for id, vs := range h.versions {
		i := sort.Search(len(vs), func(i int) bool { return vs[i].Since > belowTs })
		if i <= 1 {
			continue
		}
		// Copy: a reslice would keep the released versions reachable
		// through the backing array.
		h.versions[id] = slices.Clone(vs[i-1:])
	}
}

// AddJob queues a finished job until the DDL stream's resolved ts reaches its
// commit ts. It keeps only Done jobs with a schema version (spec §1.5),
// overwrites FinishedTS with commitTs, ignores jobs at or below the snapshot
// or the last applied job (replays after region errors), and keeps one job
// per (commit ts, schema version). The history takes ownership of ev.Job.
func (h *History) AddJob(ev JobEvent) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if h.broken != nil {
		return h.broken
	}
	job := ev.Job
	if job == nil || !job.IsDone() || job.BinlogInfo == nil || job.BinlogInfo.SchemaVersion == 0 {
		return nil
	}
	job.BinlogInfo.FinishedTS = ev.CommitTs
	k := jobKey{ts: ev.CommitTs, ver: job.BinlogInfo.SchemaVersion}
	if k.cmp(h.lastApply) <= 0 {
		return nil // already applied, or in the snapshot
	}
	if ev.CommitTs <= h.Resolved() {
		h.broken = fmt.Errorf("%w: job %d (%s) at %d, resolved %d", ErrJobOrder, job.ID, job.Type, ev.CommitTs, h.Resolved())
		return h.broken
	}
	h.pending[k] = job
	return nil
}

// AdvanceResolved applies, in (commit ts, schema version) order, every queued
// job with commit ts ≤ ts and then publishes ts as the resolved ts. A ts at
// or below the current one is ignored: a resumed DDL stream may replay an
// older resolved ts, and the history stays valid.
//
// An error leaves the history resolved at its previous ts and every later
// writer call fails with it; build a new history from a snapshot.
func (h *History) AdvanceResolved(ts uint64) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if h.broken != nil {
		return h.broken
	}
	if ts <= h.Resolved() {
		return nil
	}
	var ready []jobKey
	for k := range h.pending {
		if k.ts <= ts {
			ready = append(ready, k)
		}
	}
	slices.SortFunc(ready, jobKey.cmp)
	for _, k := range ready {
		job := h.pending[k]
		delete(h.pending, k)
		h.ddl = job.Query
		err := h.apply(job)
		h.ddl = ""
		if err != nil {
			h.broken = fmt.Errorf("schema: apply job %d (%s) at %d: %w", job.ID, job.Type, k.ts, err)
			return h.broken
		}
		h.lastApply = k
	}
	h.mu.Lock()
	h.resolved = ts
	close(h.advanced)
	h.advanced = make(chan struct{})
	h.mu.Unlock()
	return nil
}

// put records v as id's version from v.Since on.
func (h *History) put(id int64, v *Version) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	vs := h.versions[id]
	if n := len(vs); n > 0 {
		last := vs[n-1]
		switch {
		case last.Since > v.Since:
			return fmt.Errorf("schema: version of table %d at %d after one at %d", id, v.Since, last.Since)
		case last.Since == v.Since:
			// Several jobs finishing at one ts (or several steps of one job,
			// like exchange partition): the last applied wins.
			vs[n-1] = v
			return nil
		}
	}
	h.versions[id] = append(vs, v)
	return nil
}

// PhysicalIDs lists the ids the history answers for info under: its logical
// id first, then its partitions' ids. Row keys use the logical id only for a
// table without partitions (and for global indexes), so the owner subscribes
// the partitions of a partitioned table, not its logical id.
func PhysicalIDs(info *model.TableInfo) []int64 {
	ids := []int64{info.ID}
	if pi := info.GetPartitionInfo(); pi != nil {
		for _, d := range pi.Definitions {
			ids = append(ids, d.ID)
		}
	}
	return ids
}

// setTable makes info (in database schemaID) the live version of its table at
// ts, replacing the table that was live under oldID (the same id except for
// truncate and repartitioning). Ids of the old table that the new one no
// longer has become gone with reason removed.
func (h *History) setTable(oldID, schemaID int64, info *model.TableInfo, ts uint64, ver int64, removed GoneReason) error {
	db, ok := h.dbs[schemaID]
	if !ok {
		return fmt.Errorf("schema: table %d (%s) in unknown database %d", info.ID, info.Name.O, schemaID)
	}
	if IsSystemSchema(db.Name.L) {
		return h.dropTable(oldID, ts, MovedOut)
	}
	// TableInfo.DBID is not serialised; callers may rely on it.
	info.DBID = schemaID
	t, err := row.NewTable(db.Name.O, info, ver)
	if err != nil {
		return fmt.Errorf("schema: table %d: %w", info.ID, err)
	}
	v := &Version{
		Table:       t,
		LogicalID:   info.ID,
		SchemaID:    schemaID,
		Since:       ts,
		Eligibility: classify(db.Name.O, info, t, h.opts.Filter),
		DDL:         h.ddl,
	}
	newIDs := PhysicalIDs(info)
	for _, id := range newIDs {
		if err := h.put(id, v); err != nil {
			return err
		}
	}
	if old, ok := h.tables[oldID]; ok {
		gone := &Version{LogicalID: oldID, SchemaID: old.schemaID, Since: ts, Gone: removed, DDL: h.ddl}
		for _, id := range PhysicalIDs(old.info) {
			if slices.Contains(newIDs, id) {
				continue
			}
			if err := h.put(id, gone); err != nil {
				return err
			}
		}
		delete(h.tables, oldID)
	}
	h.tables[info.ID] = &tableState{info: info, schemaID: schemaID}
	return nil
}

// dropTable marks every id of the live table id as gone at ts. An id that is
// not live is a no-op: its DDL's effect is already there.
func (h *History) dropTable(id int64, ts uint64, why GoneReason) error {
	old, ok := h.tables[id]
	if !ok {
		return nil
	}
	gone := &Version{LogicalID: id, SchemaID: old.schemaID, Since: ts, Gone: why, DDL: h.ddl}
	for _, pid := range PhysicalIDs(old.info) {
		if err := h.put(pid, gone); err != nil {
			return err
		}
	}
	delete(h.tables, id)
	return nil
}
