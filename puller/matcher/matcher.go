package matcher

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/pingcap/kvproto/pkg/cdcpb"
)

// Op is the kind of a committed change.
type Op uint8

const (
	// OpPut writes Value at Key (insert or update; OldValue tells which).
	OpPut Op = iota + 1
	// OpDelete removes Key.
	OpDelete
)

// String implements fmt.Stringer.
func (o Op) String() string {
	switch o {
	case OpPut:
		return "put"
	case OpDelete:
		return "delete"
	default:
		return fmt.Sprintf("op(%d)", uint8(o))
	}
}

// Event is one committed change of one key.
//
// Key is the raw (not memcomparable) key. OldValue is the newest committed
// value before this change, empty when there was none or it was a delete
// (§2.6: both mean "insert" to a row consumer). Value is empty for OpDelete.
// The slices alias the cdcpb rows given to the Matcher, which must therefore
// not be reused by the caller (gogoproto's Unmarshal allocates fresh slices
// per message, so rows straight off the stream are fine).
type Event struct {
	Key, Value, OldValue []byte
	Op                   Op
	StartTs, CommitTs    uint64
}

// Errors returned by Row and AppendRow. All of them match ErrProtocol with
// errors.Is, and are returned wrapped with the row's key and timestamps.
// After one of them the subscription's state is not trustworthy: drop the
// Matcher.
var (
	// ErrProtocol is the kind of every error of this package: TiKV sent
	// something the protocol does not allow.
	ErrProtocol = errors.New("matcher: protocol violation")

	// ErrUnmatchedCommit: a COMMIT after INITIALIZED whose PREWRITE was
	// never seen (and whose commit ts is above the checkpoint, so it is not
	// a replay of a delivered row). Retryable at region level: the caller
	// re-registers the region from the frontier's MinIn of its range, and
	// the scan delivers the commit again as a COMMITTED row.
	ErrUnmatchedCommit = fmt.Errorf("%w: commit without prewrite after INITIALIZED", ErrProtocol)

	// ErrCommitBelowResolved: a commit at or below a resolved ts this
	// subscription already reported. The span frontier may already have
	// been published past it, so re-registering the region cannot repair
	// it: the caller must fail the pipeline so that it restarts from its
	// acknowledged checkpoint (TiCDC panics here, tiflow#3075, #7549).
	ErrCommitBelowResolved = fmt.Errorf("%w: commit ts not above the region's resolved ts", ErrProtocol)

	// ErrUnknownOp: a COMMIT or COMMITTED row whose op type is neither PUT
	// nor DELETE. Retryable at region level.
	ErrUnknownOp = fmt.Errorf("%w: unknown op type", ErrProtocol)

	// ErrUnknownRowType: a row whose log type is outside the enum (UNKNOWN
	// is ignored, see AppendRow). Retryable at region level.
	ErrUnknownRowType = fmt.Errorf("%w: unknown row type", ErrProtocol)

	// ErrSpill: the Spill failed to keep, read or drop a PREWRITE (not a
	// protocol error: the row was fine). The Matcher's state is not
	// trustworthy after it; the subscription must end and start again.
	ErrSpill = errors.New("matcher: spill failed")
)

// Spill is where a Matcher keeps the PREWRITEs it may not hold in memory
// (spill.Space): it grants memory to them from a budget it shares with
// other Matchers and keeps the rest on disk.
type Spill interface {
	// Hold asks to keep n more bytes in memory; false means the row goes
	// to Put.
	Hold(n int64) bool
	// Unhold gives back n bytes Hold granted.
	Unhold(n int64)
	// OnDisk is how many rows Put holds.
	OnDisk() int64
	// Put keeps row under its start ts and key; replaces says one is
	// there already.
	Put(row *cdcpb.Event_Row, replaces bool) error
	// Get reads the row Put kept for key at startTs, nil if none.
	Get(startTs uint64, key []byte) (*cdcpb.Event_Row, error)
	// Delete drops the row Put kept for key at startTs.
	Delete(startTs uint64, key []byte) error
	// Close gives back the memory held and drops every row kept.
	Close() error
}

// Option configures a Matcher.
type Option func(*Matcher)

// WithSpill has the Matcher hold its PREWRITEs in memory only as far as
// sp grants, and keep the others in sp until their COMMIT or ROLLBACK.
// Close gives sp back.
func WithSpill(sp Spill) Option { return func(m *Matcher) { m.sp = sp } }

type matchKey struct {
	startTs uint64
	key     string
}

// Memory accounting (PendingBytes). The figures approximate the heap cost of
// holding a row: the cdcpb.Event_Row struct, its three byte slices, and one
// map slot with its own copy of the key. They are estimates for a memory
// quota, not exact allocator figures.
const (
	rowOverhead  = int64(unsafe.Sizeof(cdcpb.Event_Row{}))
	slotOverhead = int64(unsafe.Sizeof(matchKey{})) + 16 // key header + pointer/index + map control byte, rounded
)

// heldCost is the accounted size of a cached PREWRITE or a parked COMMIT.
func heldCost(r *cdcpb.Event_Row) int64 {
	return rowOverhead + slotOverhead + 2*int64(len(r.Key)) + int64(len(r.Value)) + int64(len(r.OldValue))
}

// settledCost is the accounted size of a settled-key entry (only the map slot
// and its key; the row itself is released).
func settledCost(k matchKey) int64 { return slotOverhead + int64(len(k.key)) }

// shrinkAfter is the number of cached prewrites above which the map is
// dropped (and later reallocated small) once it empties: Go maps never give
// memory back, and a region that once held a 1M-key transaction would
// otherwise keep that table forever.
const shrinkAfter = 1024

// maxKeptOut is the largest result buffer Row keeps between calls.
const maxKeptOut = 64

// Matcher is the row-assembly state of one region subscription (one
// Register with one checkpoint ts). Create a new one for every registration.
// It tracks INITIALIZED itself (Initialized) and the region's resolved ts
// (Resolved). It is not safe for concurrent use.
type Matcher struct {
	checkpoint  uint64
	resolved    uint64 // ≥ checkpoint; raised by Resolved after INITIALIZED
	initialized bool

	// prewrites holds PREWRITEs waiting for their COMMIT or ROLLBACK.
	prewrites map[matchKey]*cdcpb.Event_Row
	peak      int

	// Before INITIALIZED only:
	//
	// parked holds COMMITs that could not be matched yet, in arrival order
	// (nil once matched); parkedAt indexes it. A realtime COMMIT can arrive
	// before the scan's PREWRITE of the same lock (§2.4 ordering).
	parked   []*cdcpb.Event_Row
	parkedAt map[matchKey]int
	nParked  int
	// settled holds (key, start ts) pairs already committed or rolled back
	// during the scan. The scan may still deliver the PREWRITE of such a
	// lock (read from the snapshot taken before the commit); without this
	// set it would stay cached forever, since its COMMIT has come and gone.
	settled map[matchKey]struct{}

	pending int64
	out     []Event

	// sp, when set, keeps the PREWRITEs over its memory budget; the
	// in-memory ones are held from it.
	sp Spill
}

// New returns the Matcher of a subscription registered with checkpoint ts:
// TiKV sends every commit above it, and any commit at or below it has
// already been delivered by an earlier subscription of the range.
func New(checkpoint uint64, opts ...Option) *Matcher {
	m := &Matcher{checkpoint: checkpoint, resolved: checkpoint}
	for _, o := range opts {
		o(m)
	}
	return m
}

// Close gives back what the Matcher holds in its Spill. It is not used
// afterwards.
func (m *Matcher) Close() error {
	if m.sp == nil {
		return nil
	}
	if err := m.sp.Close(); err != nil {
		return fmt.Errorf("%w: %w", ErrSpill, err)
	}
	return nil
}

// Checkpoint returns the checkpoint ts the subscription was registered with.
func (m *Matcher) Checkpoint() uint64 { return m.checkpoint }

// Initialized reports whether the INITIALIZED row has been seen: the
// incremental scan is complete and resolved ts may be trusted.
func (m *Matcher) Initialized() bool { return m.initialized }

// ResolvedTs returns the region's resolved ts: the checkpoint until a higher
// resolved ts is accepted by Resolved.
func (m *Matcher) ResolvedTs() uint64 { return m.resolved }

// Resolved notes a resolved ts TiKV reported for this subscription and
// reports whether it advanced the region's resolved ts (and the caller should
// forward the region's range in the span frontier). It is ignored before
// INITIALIZED (TiKV does not send one then, §2.8; a stray one must not move
// the frontier while scan rows are missing) and when not above the current
// value (the first report may be below the checkpoint, §2.8).
func (m *Matcher) Resolved(ts uint64) bool {
	if !m.initialized || ts <= m.resolved {
		return false
	}
	m.resolved = ts
	return true
}

// PendingBytes returns the estimated memory held for rows not yet emitted:
// cached PREWRITEs, COMMITs parked before INITIALIZED, and the settled keys
// of the scan phase (not the PREWRITEs in the Spill).
func (m *Matcher) PendingBytes() int64 { return m.pending }

// Len returns the number of rows held: cached PREWRITEs (in memory and in
// the Spill) plus parked COMMITs.
func (m *Matcher) Len() int {
	n := len(m.prewrites) + m.nParked
	if m.sp != nil {
		n += int(m.sp.OnDisk())
	}
	return n
}

// Row handles one row of the subscription and returns the committed events
// it completes (0..n; INITIALIZED may complete many). The returned slice is
// reused by the next call to Row; use AppendRow to collect into your own.
func (m *Matcher) Row(r *cdcpb.Event_Row) ([]Event, error) {
	// The previous result's rows need not stay reachable, and a buffer grown
	// by one large INITIALIZED need not be kept by an idle region.
	if cap(m.out) > maxKeptOut {
		m.out = nil
	} else {
		clear(m.out)
	}
	out, err := m.AppendRow(m.out[:0], r)
	m.out = out
	return out, err
}

// AppendRow is Row appending the completed events to dst.
func (m *Matcher) AppendRow(dst []Event, r *cdcpb.Event_Row) ([]Event, error) {
	switch r.Type {
	case cdcpb.Event_PREWRITE:
		return m.prewrite(dst, r)
	case cdcpb.Event_COMMIT:
		return m.commit(dst, r)
	case cdcpb.Event_COMMITTED:
		return m.committed(dst, r)
	case cdcpb.Event_ROLLBACK:
		return dst, m.rollback(r)
	case cdcpb.Event_INITIALIZED:
		return m.initialize(dst)
	case cdcpb.Event_UNKNOWN:
		// TiKV sends an empty row of this type for every committed Lock
		// record (a key locked by SELECT … FOR UPDATE and not written) to
		// downstreams covering the whole region (spec §2.5). It carries
		// nothing, so it is ignored without any check: treating it as a
		// protocol error re-registered the region — a full incremental scan
		// per lock-only commit under TiDB's default pessimistic mode.
		return dst, nil
	default:
		return dst, rowError(ErrUnknownRowType, r)
	}
}

func rowError(kind error, r *cdcpb.Event_Row) error {
	return fmt.Errorf("%w (type %s op %s key %x start_ts %d commit_ts %d)",
		kind, r.Type, r.OpType, r.Key, r.StartTs, r.CommitTs)
}

// matchableBeforeInit reports whether a cached PREWRITE may complete a COMMIT
// while scan rows can still arrive. An empty value may be a heartbeat's lock
// rewrite standing in for the real PREWRITE the scan has yet to deliver, so
// it waits for INITIALIZED. Rows of pipelined transactions (non-zero
// generation) wait too, as in TiCDC (tiflow#11185, #11186): we found no
// interleaving that needs it — the scan reads the lock as of the snapshot,
// so its generation is never above a realtime one — but a flush seen out of
// order would emit wrong data, while waiting only delays rows until the scan
// ends.
func matchableBeforeInit(p *cdcpb.Event_Row) bool {
	return len(p.Value) > 0 && p.Generation == 0
}

// The map keys below are written as literals at each use on purpose: the
// compiler converts string(r.Key) without allocating only when the
// conversion appears directly in the map index expression.

func (m *Matcher) prewrite(dst []Event, r *cdcpb.Event_Row) ([]Event, error) {
	if !m.initialized {
		if _, ok := m.settled[matchKey{r.StartTs, string(r.Key)}]; ok {
			return dst, nil
		}
	}
	old, oldOnDisk, err := m.find(r.StartTs, r.Key)
	if err != nil {
		return dst, err
	}
	if old != nil {
		// A PUT without a value is a lock rewritten by a heartbeat or a
		// min_commit_ts push whose value lives in the default CF (§2.5):
		// it must not replace the real one. Among real ones the last wins
		// (pipelined DML flushes), unless generations say it is older.
		if (r.OpType == cdcpb.Event_Row_PUT && len(r.Value) == 0) || r.Generation < old.Generation {
			return dst, nil
		}
		if !oldOnDisk {
			m.takePrewrite(old)
		}
	}

	if !m.initialized && m.nParked > 0 && matchableBeforeInit(r) {
		k := matchKey{r.StartTs, string(r.Key)}
		if i, ok := m.parkedAt[k]; ok {
			if oldOnDisk {
				if err := m.sp.Delete(old.StartTs, old.Key); err != nil {
					return dst, spillError(err, r)
				}
			}
			c := m.parked[i]
			m.parked[i] = nil
			delete(m.parkedAt, k)
			m.nParked--
			m.pending -= heldCost(c)
			m.settle(k)
			// Op and resolved ts were checked when the COMMIT was parked.
			return m.emit(dst, c, r), nil
		}
	}
	return dst, m.keep(r, oldOnDisk)
}

// find returns the cached PREWRITE of key at startTs, if any, and whether
// it is in the Spill rather than in memory.
func (m *Matcher) find(startTs uint64, key []byte) (p *cdcpb.Event_Row, onDisk bool, err error) {
	if p, ok := m.prewrites[matchKey{startTs, string(key)}]; ok {
		return p, false, nil
	}
	if m.sp == nil || m.sp.OnDisk() == 0 {
		return nil, false, nil
	}
	p, err = m.sp.Get(startTs, key)
	if err != nil {
		return nil, false, fmt.Errorf("%w (key %x start_ts %d): %w", ErrSpill, key, startTs, err)
	}
	return p, p != nil, nil
}

// keep caches PREWRITE r: in memory as far as the Spill grants, else in
// it. replacesOnDisk says the Spill holds an older PREWRITE of the same
// lock, which r replaces.
func (m *Matcher) keep(r *cdcpb.Event_Row, replacesOnDisk bool) error {
	cost := heldCost(r)
	if m.sp != nil && !m.sp.Hold(cost) {
		if err := m.sp.Put(r, replacesOnDisk); err != nil {
			return spillError(err, r)
		}
		return nil
	}
	if replacesOnDisk {
		if err := m.sp.Delete(r.StartTs, r.Key); err != nil {
			m.sp.Unhold(cost)
			return spillError(err, r)
		}
	}
	if m.prewrites == nil {
		m.prewrites = make(map[matchKey]*cdcpb.Event_Row)
	}
	m.prewrites[matchKey{r.StartTs, string(r.Key)}] = r
	m.pending += cost
	m.peak = max(m.peak, len(m.prewrites))
	return nil
}

// take removes a cached PREWRITE that find returned.
func (m *Matcher) take(p *cdcpb.Event_Row, onDisk bool) error {
	if !onDisk {
		m.takePrewrite(p)
		return nil
	}
	if err := m.sp.Delete(p.StartTs, p.Key); err != nil {
		return spillError(err, p)
	}
	return nil
}

// takePrewrite removes a PREWRITE cached in memory.
func (m *Matcher) takePrewrite(p *cdcpb.Event_Row) {
	delete(m.prewrites, matchKey{p.StartTs, string(p.Key)})
	cost := heldCost(p)
	m.pending -= cost
	if m.sp != nil {
		m.sp.Unhold(cost)
	}
	if len(m.prewrites) == 0 && m.peak > shrinkAfter {
		m.prewrites, m.peak = nil, 0
	}
}

func spillError(err error, r *cdcpb.Event_Row) error {
	return fmt.Errorf("%w (key %x start_ts %d): %w", ErrSpill, r.Key, r.StartTs, err)
}

func (m *Matcher) settle(k matchKey) {
	if m.settled == nil {
		m.settled = make(map[matchKey]struct{})
	}
	if _, ok := m.settled[k]; !ok {
		m.settled[k] = struct{}{}
		m.pending += settledCost(k)
	}
}

func (m *Matcher) commit(dst []Event, r *cdcpb.Event_Row) ([]Event, error) {
	if r.OpType != cdcpb.Event_Row_PUT && r.OpType != cdcpb.Event_Row_DELETE {
		return dst, rowError(ErrUnknownOp, r)
	}
	// Check before touching the cache: a violation leaves the state as the
	// caller last saw it. Commits at or below the checkpoint are replays
	// and pass (they are dropped in emit after releasing their PREWRITE).
	if r.CommitTs > m.checkpoint && r.CommitTs <= m.resolved {
		return dst, rowError(ErrCommitBelowResolved, r)
	}
	p, onDisk, err := m.find(r.StartTs, r.Key)
	if err != nil {
		return dst, err
	}
	if p != nil && (m.initialized || matchableBeforeInit(p)) {
		if err := m.take(p, onDisk); err != nil {
			return dst, err
		}
		if !m.initialized {
			m.settle(matchKey{r.StartTs, string(r.Key)})
		}
		return m.emit(dst, r, p), nil
	}
	if !m.initialized {
		k := matchKey{r.StartTs, string(r.Key)}
		if _, ok := m.parkedAt[k]; ok {
			return dst, nil // the same COMMIT again (a re-sent row): one is enough
		}
		if _, ok := m.settled[k]; ok {
			return dst, nil // re-sent after it was matched or rolled back
		}
		if m.parkedAt == nil {
			m.parkedAt = make(map[matchKey]int)
		}
		m.parkedAt[k] = len(m.parked)
		m.parked = append(m.parked, r)
		m.nParked++
		m.pending += heldCost(r)
		return dst, nil
	}
	if r.CommitTs <= m.checkpoint {
		// A replay of a row an earlier subscription already delivered; its
		// PREWRITE is long gone. Nothing is lost by dropping it.
		return dst, nil
	}
	return dst, rowError(ErrUnmatchedCommit, r)
}

// emit appends the event of COMMIT c completed by PREWRITE p. The COMMIT's
// own value, present when TiKV stored it inline as a short value, is the
// committed one; otherwise the PREWRITE's.
func (m *Matcher) emit(dst []Event, c, p *cdcpb.Event_Row) []Event {
	if c.CommitTs <= m.checkpoint {
		return dst
	}
	ev := Event{Key: c.Key, OldValue: p.OldValue, StartTs: c.StartTs, CommitTs: c.CommitTs}
	if c.OpType == cdcpb.Event_Row_DELETE {
		ev.Op = OpDelete
	} else {
		ev.Op = OpPut
		ev.Value = c.Value
		if len(ev.Value) == 0 {
			ev.Value = p.Value
		}
	}
	return append(dst, ev)
}

func (m *Matcher) committed(dst []Event, r *cdcpb.Event_Row) ([]Event, error) {
	var op Op
	switch r.OpType {
	case cdcpb.Event_Row_PUT:
		op = OpPut
	case cdcpb.Event_Row_DELETE:
		op = OpDelete
	default:
		return dst, rowError(ErrUnknownOp, r)
	}
	if r.CommitTs <= m.checkpoint {
		return dst, nil
	}
	if r.CommitTs <= m.resolved {
		return dst, rowError(ErrCommitBelowResolved, r)
	}
	ev := Event{Key: r.Key, OldValue: r.OldValue, Op: op, StartTs: r.StartTs, CommitTs: r.CommitTs}
	if op == OpPut {
		ev.Value = r.Value
	}
	return append(dst, ev), nil
}

func (m *Matcher) rollback(r *cdcpb.Event_Row) error {
	p, onDisk, err := m.find(r.StartTs, r.Key)
	if err != nil {
		return err
	}
	if p != nil {
		if err := m.take(p, onDisk); err != nil {
			return err
		}
	}
	// TiKV sends ROLLBACK even for keys it never locked; before
	// INITIALIZED the scan may still deliver the lock, so remember it.
	if !m.initialized {
		m.settle(matchKey{r.StartTs, string(r.Key)})
	}
	return nil
}

// initialize completes the parked COMMITs. One whose PREWRITE never came was
// committed before the scan's snapshot, so the scan delivered it as a
// COMMITTED row (or it is at or below the checkpoint): it is dropped.
func (m *Matcher) initialize(dst []Event) ([]Event, error) {
	if m.initialized {
		return dst, nil
	}
	for i, c := range m.parked {
		if c == nil {
			continue
		}
		p, onDisk, err := m.find(c.StartTs, c.Key)
		if err == nil && p != nil {
			err = m.take(p, onDisk)
		}
		if err != nil {
			// The state must stay as it was for what comes next: the
			// rows done so far are returned, this one stays parked. The
			// caller ends the subscription anyway.
			return dst, err
		}
		m.parked[i] = nil
		delete(m.parkedAt, matchKey{c.StartTs, string(c.Key)})
		m.nParked--
		m.pending -= heldCost(c)
		if p != nil {
			dst = m.emit(dst, c, p)
		}
	}
	m.initialized = true
	for k := range m.settled {
		m.pending -= settledCost(k)
	}
	m.parked, m.parkedAt, m.nParked, m.settled = nil, nil, 0, nil
	return dst, nil
}
