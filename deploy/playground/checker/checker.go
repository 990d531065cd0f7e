package checker

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/pingcap/kvproto/pkg/cdcpb"
	"github.com/pingcap/tidb/pkg/util/codec"
)

// Rules, as reported in Violation.Rule.
const (
	// RuleUnregistered: an event names a (request_id, region_id) that was
	// never registered on the connection.
	RuleUnregistered = "event-for-unregistered-subscription"
	// RuleAfterError: a row, resolved ts or second Error for a subscription
	// whose Error was already sent, with no new Register since (spec §2.3).
	RuleAfterError = "event-after-error"
	// RuleResolvedBeforeInit: a resolved ts for a subscription whose
	// INITIALIZED row has not been sent yet (spec §2.3, §2.8).
	RuleResolvedBeforeInit = "resolved-ts-before-initialized"
	// RuleRowNotAboveResolved: a COMMIT or COMMITTED row whose commit_ts is at
	// or below a resolved ts already sent for its subscription. This is the
	// safety rule the whole watermark scheme rests on (spec §2.8).
	RuleRowNotAboveResolved = "row-not-above-resolved-ts"
	// RuleDuplicateInitialized: a second INITIALIZED in one subscription.
	RuleDuplicateInitialized = "duplicate-initialized"
	// RuleCommitWithoutPrewrite: a COMMIT after INITIALIZED with no pending
	// PREWRITE of the same (key, start_ts) earlier in the subscription, or a
	// COMMIT before INITIALIZED that neither a PREWRITE nor a COMMITTED row of
	// the scan had matched by the time INITIALIZED arrived.
	RuleCommitWithoutPrewrite = "commit-without-prewrite"
	// RuleCommittedNotAboveCheckpoint: a COMMITTED row (scan or 1PC) with
	// commit_ts ≤ the registration's checkpoint_ts (spec §2.4).
	RuleCommittedNotAboveCheckpoint = "committed-not-above-checkpoint"
	// RuleCommitNotAboveStart: a COMMIT or COMMITTED row with commit_ts ≤ start_ts.
	RuleCommitNotAboveStart = "commit-ts-not-above-start-ts"
	// RuleUnexpectedCommitTs: a PREWRITE or ROLLBACK row with commit_ts ≠ 0.
	RuleUnexpectedCommitTs = "unexpected-commit-ts"
	// RuleBadOpType: a PREWRITE, COMMIT or COMMITTED row whose op_type is not
	// PUT or DELETE.
	RuleBadOpType = "bad-op-type"
	// RuleBadLogType: a row whose type is outside the enum, or of type
	// UNKNOWN with any field set. TiKV sends one UNKNOWN shape only: the
	// degenerate row of a committed Lock record (empty key, zero timestamps,
	// op UNKNOWN, no values, spec §2.5), which clients ignore.
	RuleBadLogType = "bad-log-type"
	// RuleKeyOutOfRange: a row whose key, memcomparable-encoded, is outside the
	// registered [start_key, end_key).
	RuleKeyOutOfRange = "key-out-of-range"
	// RuleResolvedTsRegressed: a resolved ts below one already sent for the
	// subscription. Checked only with StrictMonotonic, because TiKV reports a
	// batch at the batch minimum (spec §2.8).
	RuleResolvedTsRegressed = "resolved-ts-regressed"
	// RuleResolvedTsForm: resolved ts delivered in the wrong form for the
	// connection: a batch to a client older than 4.0.8, a legacy per-region
	// Event.resolved_ts to a newer one, or a batch with a request_id on a
	// connection without multiplexing (spec §1.4).
	RuleResolvedTsForm = "resolved-ts-wrong-form"
	// RuleMixedMessage: one ChangeDataEvent carrying both events and a
	// resolved ts; TiKV always sends a resolved ts alone (spec §1.3).
	RuleMixedMessage = "mixed-message"
	// RuleMalformedEvent: an Event with no payload, an Admin or LongTxn
	// payload (never emitted by TiKV), or an Error with no field set.
	RuleMalformedEvent = "malformed-event"
	// RuleNotifyTxnStatus: a client sent NotifyTxnStatus, which TiKV does not
	// implement (spec §1.2).
	RuleNotifyTxnStatus = "notify-txn-status-sent"
)

// ErrViolation is wrapped by the error Err returns.
var ErrViolation = errors.New("checker: cdcpb protocol violation")

const (
	defaultMaxViolations = 10000
	errSummaryCount      = 5
)

// Violation is one broken rule.
type Violation struct {
	Conn, RequestID, RegionID uint64
	Rule                      string
	Detail                    string
}

func (v Violation) String() string {
	return fmt.Sprintf("conn %d request %d region %d: %s: %s", v.Conn, v.RequestID, v.RegionID, v.Rule, v.Detail)
}

// Option configures a Checker.
type Option func(*config)

type config struct {
	multiplexing  bool
	strict        bool
	maxViolations int
	onViolation   func(Violation)
}

// Multiplexing sets whether connections are multiplexing (EventFeedV2 with
// the stream-multiplexing feature) unless SetMultiplexing says otherwise for
// a connection. Default false.
func Multiplexing(on bool) Option { return func(c *config) { c.multiplexing = on } }

// StrictMonotonic flags any resolved ts below one already sent for the same
// subscription. Off by default: a TiKV batch carries the minimum over its
// regions, so a region can legitimately be reported lower than before.
func StrictMonotonic() Option { return func(c *config) { c.strict = true } }

// MaxViolations bounds how many violations are kept (default 10000); the
// rest are counted only, so a badly broken stream cannot exhaust memory.
func MaxViolations(n int) Option { return func(c *config) { c.maxViolations = n } }

// OnViolation calls f for every violation as it is found, outside the
// checker's lock (so f may call the checker), in the order found.
func OnViolation(f func(Violation)) Option { return func(c *config) { c.onViolation = f } }

// Checker checks the cdcpb ChangeData protocol per connection. It is safe
// for concurrent use; each connection's messages must be fed in wire order.
type Checker struct {
	cfg config

	mu         sync.Mutex
	conns      map[uint64]*connState
	violations []Violation
	total      int
	fresh      []Violation // found during the current call, for OnViolation
	keyBuf     []byte
}

// New returns a Checker.
func New(opts ...Option) *Checker {
	cfg := config{maxViolations: defaultMaxViolations}
	for _, o := range opts {
		o(&cfg)
	}
	return &Checker{cfg: cfg, conns: make(map[uint64]*connState)}
}

type connState struct {
	id         uint64
	versionSet bool
	compat     bool
	mux        bool
	// regions → request_id → subscription key state.
	regions map[uint64]map[uint64]*keyState
}

// keyState holds the generations of one (request_id, region_id). Normally
// there is at most one live generation; more are queued when a Register
// arrives while an earlier generation is still live (a duplicate register,
// or a register after a deregister whose Error has not been sent yet).
// Events are attributed to the oldest live generation.
type keyState struct {
	gens    []*gen
	nextGen int
	// The generation that ended last, and how: reported when events arrive
	// with no live generation left.
	lastEndGen int
	lastEnd    string
}

type lockKey struct {
	key     string
	startTS uint64
}

type gen struct {
	n          int
	checkpoint uint64
	start, end []byte
	rangeKnown bool

	// maybeDup: registered while an earlier generation was live and not
	// deregistered, so the server may reject it with duplicate_request.
	maybeDup     bool
	deregistered bool
	// started: some row or resolved ts was attributed to it, so the server
	// accepted the registration.
	started bool

	initialized bool
	maxResolved uint64

	prewrites map[lockKey]struct{} // pending locks: PREWRITE seen, no COMMIT/ROLLBACK yet
	// Before INITIALIZED only: COMMITs whose PREWRITE has not arrived (a scan
	// row may still bring it), COMMITTED rows that may explain such a COMMIT,
	// and ROLLBACKs that came before their scan PREWRITE.
	parked     map[lockKey]uint64
	committed  map[lockKey]uint64
	rolledBack map[lockKey]struct{}
}

// SetMultiplexing records whether conn is a multiplexing stream; call it
// before feeding the connection's events.
func (c *Checker) SetMultiplexing(conn uint64, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn(conn).mux = on
}

func (c *Checker) conn(id uint64) *connState {
	cs := c.conns[id]
	if cs == nil {
		cs = &connState{id: id, mux: c.cfg.multiplexing, regions: make(map[uint64]map[uint64]*keyState)}
		c.conns[id] = cs
	}
	return cs
}

// CloseConn forgets conn; events for it afterwards are unregistered.
func (c *Checker) CloseConn(conn uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.conns, conn)
}

// Violations returns a copy of the violations found so far (at most
// MaxViolations of them).
func (c *Checker) Violations() []Violation {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.violations)
}

// Err returns nil, or an error wrapping ErrViolation that lists the first
// few violations and the total.
func (c *Checker) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.total == 0 {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d violation(s)", c.total)
	for i, v := range c.violations {
		if i == errSummaryCount {
			fmt.Fprintf(&b, "; …")
			break
		}
		fmt.Fprintf(&b, "; %s", v)
	}
	return fmt.Errorf("%w: %s", ErrViolation, b.String())
}

// unlockAndNotify releases the lock and hands violations found during the
// call to the OnViolation callback.
func (c *Checker) unlockAndNotify() {
	fresh := c.fresh
	c.fresh = nil
	c.mu.Unlock()
	if c.cfg.onViolation != nil {
		for _, v := range fresh {
			c.cfg.onViolation(v)
		}
	}
}

func (c *Checker) report(conn, requestID, regionID uint64, rule, format string, args ...any) {
	v := Violation{Conn: conn, RequestID: requestID, RegionID: regionID, Rule: rule, Detail: fmt.Sprintf(format, args...)}
	c.total++
	if len(c.violations) < c.cfg.maxViolations {
		c.violations = append(c.violations, v)
	}
	if c.cfg.onViolation != nil {
		c.fresh = append(c.fresh, v)
	}
}

// Request records a request received on conn (sent, on the client side).
// The first request of a connection decides its compat mode.
func (c *Checker) Request(conn uint64, req *cdcpb.ChangeDataRequest) {
	c.mu.Lock()
	defer c.unlockAndNotify()
	if req == nil {
		return
	}
	cs := c.conn(conn)
	if !cs.versionSet {
		cs.versionSet = true
		cs.compat = compatMode(req.GetHeader().GetTicdcVersion())
	}
	switch req.Request.(type) {
	case nil, *cdcpb.ChangeDataRequest_Register_:
		// An unset oneof is a Register for TiKV (legacy clients).
		c.register(cs, req)
	case *cdcpb.ChangeDataRequest_Deregister_:
		c.deregister(cs, req)
	case *cdcpb.ChangeDataRequest_NotifyTxnStatus_:
		c.report(conn, req.RequestId, req.RegionId, RuleNotifyTxnStatus, "TiKV does not implement NotifyTxnStatus")
	}
}

func (c *Checker) register(cs *connState, req *cdcpb.ChangeDataRequest) {
	byReq := cs.regions[req.RegionId]
	if byReq == nil {
		byReq = make(map[uint64]*keyState)
		cs.regions[req.RegionId] = byReq
	}
	ks := byReq[req.RequestId]
	if ks == nil {
		ks = &keyState{}
		byReq[req.RequestId] = ks
	}
	ks.nextGen++
	g := &gen{
		n:          ks.nextGen,
		checkpoint: req.CheckpointTs,
		prewrites:  make(map[lockKey]struct{}),
		parked:     make(map[lockKey]uint64),
		committed:  make(map[lockKey]uint64),
		rolledBack: make(map[lockKey]struct{}),
	}
	// TiKV silently observes the whole region when a bound does not decode
	// as memcomparable; the checker does not know the region, so it skips
	// the range rule then.
	g.rangeKnown = validBound(req.StartKey) && validBound(req.EndKey)
	if g.rangeKnown {
		g.start = slices.Clone(req.StartKey)
		g.end = slices.Clone(req.EndKey)
	}
	for _, old := range ks.gens {
		if !old.deregistered {
			g.maybeDup = true
		}
	}
	ks.gens = append(ks.gens, g)
}

func validBound(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	_, _, err := codec.DecodeBytes(b, nil)
	return err == nil
}

func (c *Checker) deregister(cs *connState, req *cdcpb.ChangeDataRequest) {
	mark := func(ks *keyState) {
		for _, g := range ks.gens {
			g.deregistered = true
		}
	}
	if req.RegionId != 0 {
		if ks := cs.regions[req.RegionId][req.RequestId]; ks != nil {
			mark(ks)
		}
		return
	}
	for _, byReq := range cs.regions {
		if ks := byReq[req.RequestId]; ks != nil {
			mark(ks)
		}
	}
}

// Event records a message sent on conn (received, on the client side).
func (c *Checker) Event(conn uint64, ev *cdcpb.ChangeDataEvent) {
	c.mu.Lock()
	defer c.unlockAndNotify()
	if ev == nil {
		c.report(conn, 0, 0, RuleMalformedEvent, "nil ChangeDataEvent")
		return
	}
	cs := c.conns[conn]
	if cs == nil {
		// Events before any request: every subscription is unregistered.
		cs = &connState{id: conn, mux: c.cfg.multiplexing, regions: map[uint64]map[uint64]*keyState{}}
	}
	if len(ev.Events) > 0 && ev.ResolvedTs != nil {
		c.report(conn, ev.ResolvedTs.RequestId, 0, RuleMixedMessage,
			"message carries %d event(s) and a resolved ts %d", len(ev.Events), ev.ResolvedTs.Ts)
	}
	for _, e := range ev.Events {
		c.event(cs, e)
	}
	if ev.ResolvedTs != nil {
		c.batchResolved(cs, ev.ResolvedTs)
	}
}

// live returns the generation events for (requestID, regionID) belong to,
// or reports why there is none.
func (c *Checker) live(cs *connState, requestID, regionID uint64, what string) *gen {
	ks := cs.regions[regionID][requestID]
	if ks != nil && len(ks.gens) > 0 {
		return ks.gens[0]
	}
	if ks != nil && ks.lastEndGen > 0 {
		c.report(cs.id, requestID, regionID, RuleAfterError, "%s after generation %d ended with %s", what, ks.lastEndGen, ks.lastEnd)
		return nil
	}
	c.report(cs.id, requestID, regionID, RuleUnregistered, "%s for a subscription never registered on this connection", what)
	return nil
}

func (c *Checker) event(cs *connState, e *cdcpb.Event) {
	if e == nil {
		c.report(cs.id, 0, 0, RuleMalformedEvent, "nil event")
		return
	}
	switch p := e.Event.(type) {
	case *cdcpb.Event_Entries_:
		rows := p.Entries.GetEntries()
		if len(rows) == 0 {
			return
		}
		what := fmt.Sprintf("%s (first of %d row(s))", fmtRow(rows[0]), len(rows))
		g := c.live(cs, e.RequestId, e.RegionId, what)
		if g == nil {
			return
		}
		g.maybeDup, g.started = false, true
		for _, r := range rows {
			c.row(cs, e, g, r)
		}
	case *cdcpb.Event_Error:
		c.regionError(cs, e, p.Error)
	case *cdcpb.Event_ResolvedTs:
		if !cs.compat {
			c.report(cs.id, e.RequestId, e.RegionId, RuleResolvedTsForm,
				"legacy Event.resolved_ts %d sent to a client of version ≥ 4.0.8", p.ResolvedTs)
		}
		what := fmt.Sprintf("legacy resolved ts %d", p.ResolvedTs)
		if g := c.live(cs, e.RequestId, e.RegionId, what); g != nil {
			c.resolved(cs, e.RequestId, e.RegionId, g, p.ResolvedTs)
		}
	case *cdcpb.Event_Admin_:
		c.report(cs.id, e.RequestId, e.RegionId, RuleMalformedEvent, "admin event (TiKV never sends one)")
	case *cdcpb.Event_LongTxn_:
		c.report(cs.id, e.RequestId, e.RegionId, RuleMalformedEvent, "long_txn event (TiKV never sends one)")
	default:
		c.report(cs.id, e.RequestId, e.RegionId, RuleMalformedEvent, "event without payload")
	}
}

func (c *Checker) regionError(cs *connState, e *cdcpb.Event, perr *cdcpb.Error) {
	kind := errKind(perr)
	if kind == "" {
		c.report(cs.id, e.RequestId, e.RegionId, RuleMalformedEvent, "Error with no field set")
		kind = "empty error"
	}
	ks := cs.regions[e.RegionId][e.RequestId]
	if c.live(cs, e.RequestId, e.RegionId, "Error "+kind) == nil {
		return
	}
	// Which generation the Error ends: normally the oldest live one. But a
	// Register for a key that is still live is rejected with
	// duplicate_request — or, as TiKV runs the cluster-id, kv_api and
	// pending-scan checks first (spec §2.2), with one of those errors — and
	// the running generation carries on. Those errors never end a running
	// subscription, so they go to the newest possible duplicate (for
	// duplicate_request) or the oldest generation not yet started.
	//
	// A register-time error with no such candidate answers a Register the
	// checker did not see (a fault injection on the server side): it ends
	// nothing, since TiKV never ends a running subscription with one (spec
	// §2.10).
	victim := 0
	switch {
	case perr.GetDuplicateRequest() != nil:
		victim = -1
		for i := len(ks.gens) - 1; i > 0; i-- {
			if ks.gens[i].maybeDup {
				victim = i
				break
			}
		}
		if victim < 0 && !ks.gens[0].started {
			victim = 0
		}
	case registerOnlyError(perr):
		victim = -1
		for i, g := range ks.gens {
			if !g.started {
				victim = i
				break
			}
		}
	}
	if victim < 0 {
		return
	}
	ks.lastEndGen, ks.lastEnd = ks.gens[victim].n, kind
	ks.gens = slices.Delete(ks.gens, victim, victim+1)
}

// registerOnlyError reports errors TiKV sends only in answer to a Register.
func registerOnlyError(e *cdcpb.Error) bool {
	return e.DuplicateRequest != nil || e.ClusterIdMismatch != nil || e.Compatibility != nil || e.ServerIsBusy != nil
}

func errKind(e *cdcpb.Error) string {
	switch {
	case e == nil:
		return ""
	case e.NotLeader != nil:
		return "not_leader"
	case e.RegionNotFound != nil:
		return "region_not_found"
	case e.EpochNotMatch != nil:
		return "epoch_not_match"
	case e.DuplicateRequest != nil:
		return "duplicate_request"
	case e.Compatibility != nil:
		return "compatibility"
	case e.ClusterIdMismatch != nil:
		return "cluster_id_mismatch"
	case e.ServerIsBusy != nil:
		return "server_is_busy"
	case e.Congested != nil:
		return "congested"
	}
	return ""
}

func (c *Checker) batchResolved(cs *connState, rts *cdcpb.ResolvedTs) {
	if cs.compat {
		c.report(cs.id, rts.RequestId, 0, RuleResolvedTsForm,
			"batched resolved ts %d sent to a client older than 4.0.8", rts.Ts)
	}
	if cs.mux {
		for _, region := range rts.Regions {
			what := fmt.Sprintf("resolved ts %d", rts.Ts)
			if g := c.live(cs, rts.RequestId, region, what); g != nil {
				c.resolved(cs, rts.RequestId, region, g, rts.Ts)
			}
		}
		return
	}
	if rts.RequestId != 0 {
		c.report(cs.id, rts.RequestId, 0, RuleResolvedTsForm,
			"resolved ts %d carries request_id %d on a connection without multiplexing", rts.Ts, rts.RequestId)
	}
	for _, region := range rts.Regions {
		c.unmuxedResolved(cs, region, rts.Ts)
	}
}

// unmuxedResolved applies a resolved ts that names a region but no
// request_id: it is meant for every subscription of the region on the
// connection that can take one. TiKV lists only initialised downstreams, so
// uninitialised ones are skipped as long as some initialised one exists.
func (c *Checker) unmuxedResolved(cs *connState, region, ts uint64) {
	byReq := cs.regions[region]
	ids := make([]uint64, 0, len(byReq))
	for id, ks := range byReq {
		if len(ks.gens) > 0 {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	what := fmt.Sprintf("resolved ts %d", ts)
	if len(ids) == 0 {
		// Report against whichever key explains best (after-error or unregistered).
		var anyID uint64
		for id, ks := range byReq {
			if ks.lastEndGen > 0 {
				anyID = id
				break
			}
		}
		c.live(cs, anyID, region, what)
		return
	}
	var inited []uint64
	for _, id := range ids {
		if byReq[id].gens[0].initialized {
			inited = append(inited, id)
		}
	}
	if len(inited) == 0 {
		inited = ids[:1] // reports resolved-before-initialized
	}
	for _, id := range inited {
		c.resolved(cs, id, region, byReq[id].gens[0], ts)
	}
}

func (c *Checker) resolved(cs *connState, requestID, regionID uint64, g *gen, ts uint64) {
	g.maybeDup, g.started = false, true
	if !g.initialized {
		c.report(cs.id, requestID, regionID, RuleResolvedBeforeInit, "resolved ts %d before INITIALIZED (generation %d)", ts, g.n)
		return
	}
	if ts < g.maxResolved && c.cfg.strict {
		c.report(cs.id, requestID, regionID, RuleResolvedTsRegressed,
			"resolved ts %d below %d already sent (generation %d)", ts, g.maxResolved, g.n)
	}
	g.maxResolved = max(g.maxResolved, ts)
}

func (c *Checker) row(cs *connState, e *cdcpb.Event, g *gen, r *cdcpb.Event_Row) {
	bad := func(rule, format string, args ...any) {
		c.report(cs.id, e.RequestId, e.RegionId, rule, "%s: %s (generation %d)", fmtRow(r), fmt.Sprintf(format, args...), g.n)
	}
	if r == nil {
		c.report(cs.id, e.RequestId, e.RegionId, RuleMalformedEvent, "nil row (generation %d)", g.n)
		return
	}
	lk := lockKey{key: string(r.Key), startTS: r.StartTs}
	switch r.Type {
	case cdcpb.Event_INITIALIZED:
		if g.initialized {
			bad(RuleDuplicateInitialized, "second INITIALIZED")
			return
		}
		g.initialized = true
		for _, k := range sortedLockKeys(g.parked) {
			if ts, ok := g.committed[k]; ok && ts == g.parked[k] {
				continue // observation overlapped the scan: the commit is also a scan COMMITTED
			}
			bad(RuleCommitWithoutPrewrite, "COMMIT key=%s start=%d commit=%d, received before INITIALIZED, was never matched by a PREWRITE or a scan COMMITTED",
				FormatKey([]byte(k.key)), k.startTS, g.parked[k])
		}
		g.parked, g.committed, g.rolledBack = nil, nil, nil
	case cdcpb.Event_PREWRITE:
		c.checkCommon(g, r, bad)
		if r.CommitTs != 0 {
			bad(RuleUnexpectedCommitTs, "PREWRITE with commit_ts ≠ 0")
		}
		if !g.initialized {
			if _, ok := g.parked[lk]; ok {
				delete(g.parked, lk) // the scan's PREWRITE of a lock whose realtime COMMIT came first
				return
			}
			if _, ok := g.rolledBack[lk]; ok {
				return
			}
		}
		g.prewrites[lk] = struct{}{}
	case cdcpb.Event_COMMIT:
		c.checkCommon(g, r, bad)
		c.checkCommitTs(g, r, bad)
		if _, ok := g.prewrites[lk]; ok {
			delete(g.prewrites, lk)
			return
		}
		if !g.initialized {
			g.parked[lk] = r.CommitTs
			return
		}
		bad(RuleCommitWithoutPrewrite, "no pending PREWRITE for (key, start_ts) in this subscription")
	case cdcpb.Event_COMMITTED:
		c.checkCommon(g, r, bad)
		c.checkCommitTs(g, r, bad)
		if r.CommitTs <= g.checkpoint {
			bad(RuleCommittedNotAboveCheckpoint, "commit_ts ≤ checkpoint_ts %d", g.checkpoint)
		}
		if !g.initialized {
			g.committed[lk] = r.CommitTs
		}
	case cdcpb.Event_ROLLBACK:
		c.checkRange(g, r, bad)
		if r.CommitTs != 0 {
			bad(RuleUnexpectedCommitTs, "ROLLBACK with commit_ts ≠ 0")
		}
		delete(g.prewrites, lk)
		if !g.initialized {
			g.rolledBack[lk] = struct{}{}
		}
	case cdcpb.Event_UNKNOWN:
		if !IsLockRecordRow(r) {
			bad(RuleBadLogType, "UNKNOWN row with fields set (only the empty row of a committed Lock record is legal)")
		}
	default:
		bad(RuleBadLogType, "row type %d", int32(r.Type))
	}
}

// IsLockRecordRow reports whether r is the row TiKV sends for a committed
// Lock record: type UNKNOWN and every other field empty (spec §2.5). Clients
// ignore it.
func IsLockRecordRow(r *cdcpb.Event_Row) bool {
	return r.Type == cdcpb.Event_UNKNOWN && r.OpType == cdcpb.Event_Row_UNKNOWN &&
		len(r.Key) == 0 && len(r.Value) == 0 && len(r.OldValue) == 0 &&
		r.StartTs == 0 && r.CommitTs == 0 && r.TxnSource == 0 && r.Generation == 0 && r.ExpireTsUnixSecs == 0
}

func (c *Checker) checkCommon(g *gen, r *cdcpb.Event_Row, bad func(string, string, ...any)) {
	if r.OpType != cdcpb.Event_Row_PUT && r.OpType != cdcpb.Event_Row_DELETE {
		bad(RuleBadOpType, "op_type %s", r.OpType)
	}
	c.checkRange(g, r, bad)
}

func (c *Checker) checkCommitTs(g *gen, r *cdcpb.Event_Row, bad func(string, string, ...any)) {
	if r.CommitTs <= r.StartTs {
		bad(RuleCommitNotAboveStart, "commit_ts ≤ start_ts")
	}
	if g.initialized && r.CommitTs <= g.maxResolved {
		bad(RuleRowNotAboveResolved, "commit_ts ≤ resolved ts %d already sent", g.maxResolved)
	}
}

func (c *Checker) checkRange(g *gen, r *cdcpb.Event_Row, bad func(string, string, ...any)) {
	if !g.rangeKnown {
		return
	}
	c.keyBuf = codec.EncodeBytes(c.keyBuf[:0], r.Key)
	if len(g.start) > 0 && bytes.Compare(c.keyBuf, g.start) < 0 {
		bad(RuleKeyOutOfRange, "key below start_key %x", g.start)
	} else if len(g.end) > 0 && bytes.Compare(c.keyBuf, g.end) >= 0 {
		bad(RuleKeyOutOfRange, "key at or above end_key %x", g.end)
	}
}

func sortedLockKeys(m map[lockKey]uint64) []lockKey {
	keys := make([]lockKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b lockKey) int {
		if c := strings.Compare(a.key, b.key); c != 0 {
			return c
		}
		switch {
		case a.startTS < b.startTS:
			return -1
		case a.startTS > b.startTS:
			return 1
		}
		return 0
	})
	return keys
}

func fmtRow(r *cdcpb.Event_Row) string {
	if r == nil {
		return "nil row"
	}
	switch r.Type {
	case cdcpb.Event_INITIALIZED:
		return "INITIALIZED"
	case cdcpb.Event_ROLLBACK:
		return fmt.Sprintf("ROLLBACK key=%s start=%d commit=%d", FormatKey(r.Key), r.StartTs, r.CommitTs)
	}
	return fmt.Sprintf("%s key=%s start=%d commit=%d op=%s", r.Type, FormatKey(r.Key), r.StartTs, r.CommitTs, r.OpType)
}
