package cdcemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pingcap/kvproto/pkg/cdcpb"
	"github.com/pingcap/kvproto/pkg/metapb"
	"github.com/pingcap/tidb/pkg/store/mockstore/unistore/tikv"
	"github.com/pingcap/tidb/pkg/store/mockstore/unistore/tikv/mvcc"
	"github.com/tidestream/tidestream/deploy/playground/store"
	"google.golang.org/grpc"
)

// Defaults follow TiKV's CdcConfig (spec §2.13).
const (
	DefaultResolvedTsInterval = time.Second
	DefaultScanConcurrency    = 6
	DefaultPendingScanLimit   = 10000
	DefaultSinkQuota          = 512 << 20
)

// Tap observes the wire: every request received and every message sent, per
// connection, in order. The invariant checker implements it.
type Tap interface {
	SetMultiplexing(conn uint64, on bool)
	Request(conn uint64, req *cdcpb.ChangeDataRequest)
	Event(conn uint64, ev *cdcpb.ChangeDataEvent)
	CloseConn(conn uint64)
}

// Backend is what the emulator needs from the store: the data it reads for
// scans and old values, the region manager it checks epochs against, and the
// TSO it samples for resolved ts.
type Backend struct {
	Bundle    *mvcc.DBBundle
	Regions   *tikv.MockRegionManager
	ClusterID uint64
	// TSO returns a fresh timestamp from the same oracle unistore's MVCC
	// store uses for async-commit and 1PC commit timestamps.
	TSO func(context.Context) (uint64, error)
}

// Config configures an Emulator.
type Config struct {
	// ResolvedTsInterval is TiKV's cdc.min-ts-interval. 0 means the default;
	// negative means manual ticks only (Tick).
	ResolvedTsInterval time.Duration
	ScanConcurrency    int
	PendingScanLimit   int
	// SinkQuota bounds the bytes queued per connection; realtime rows beyond it
	// deregister their subscription with `congested`, as TiKV does.
	SinkQuota int64
	Tap       Tap
	Logger    *slog.Logger
}

// Validate reports a bad field.
func (c Config) Validate() error {
	if c.ScanConcurrency < 0 {
		return fmt.Errorf("cdcemu: ScanConcurrency %d < 0", c.ScanConcurrency)
	}
	if c.PendingScanLimit < 0 {
		return fmt.Errorf("cdcemu: PendingScanLimit %d < 0", c.PendingScanLimit)
	}
	if c.SinkQuota < 0 {
		return fmt.Errorf("cdcemu: SinkQuota %d < 0", c.SinkQuota)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.ResolvedTsInterval == 0 {
		c.ResolvedTsInterval = DefaultResolvedTsInterval
	}
	if c.ScanConcurrency == 0 {
		c.ScanConcurrency = DefaultScanConcurrency
	}
	if c.PendingScanLimit == 0 {
		c.PendingScanLimit = DefaultPendingScanLimit
	}
	if c.SinkQuota == 0 {
		c.SinkQuota = DefaultSinkQuota
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Emulator is the change-data endpoint of one emulated TiKV store.
type Emulator struct {
	cdcpb.UnimplementedChangeDataServer

	cfg     Config
	backend atomic.Pointer[Backend]
	log     *slog.Logger

	// applyMu orders applied writes, registrations, splits and resolved-ts
	// rounds, like raft apply order does in TiKV.
	applyMu   sync.Mutex
	delegates []*delegate // sorted by raw start key; regions never overlap
	inflight  map[uint64]int

	connsMu  sync.Mutex
	conns    map[uint64]*conn
	nextConn atomic.Uint64

	scanSem      chan struct{}
	pendingScans atomic.Int64

	faults faults
	stats  Stats
}

// New returns an emulator. Attach a backend before serving.
func New(cfg Config) (*Emulator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	return &Emulator{
		cfg:      cfg,
		log:      cfg.Logger,
		inflight: make(map[uint64]int),
		conns:    make(map[uint64]*conn),
		scanSem:  make(chan struct{}, cfg.ScanConcurrency),
	}, nil
}

// Attach sets the store the emulator reads. The writer wrapper installed with
// WrapWriter forwards without observing until then.
func (e *Emulator) Attach(b Backend) error {
	if b.Bundle == nil || b.Regions == nil || b.TSO == nil {
		return errors.New("cdcemu: Backend needs Bundle, Regions and TSO")
	}
	e.backend.Store(&b)
	return nil
}

// Register registers the ChangeData service on s.
func (e *Emulator) Register(s *grpc.Server) { cdcpb.RegisterChangeDataServer(s, e) }

// Run drives resolved-ts rounds until ctx ends.
func (e *Emulator) Run(ctx context.Context) error {
	if e.cfg.ResolvedTsInterval < 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(e.cfg.ResolvedTsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := e.Tick(ctx); err != nil && ctx.Err() == nil {
				e.log.Warn("resolved ts round without a TSO: current values re-reported", "err", err)
			}
		}
	}
}

// delegate is the per-region observer: every live downstream of one region.
// All its downstreams registered against the same region epoch.
type delegate struct {
	region   *metapb.Region
	rawStart []byte
	rawEnd   []byte // nil = +inf
	downs    []*downstream
}

func (d *delegate) contains(key []byte) bool {
	return keyInRange(key, d.rawStart, d.rawEnd)
}

// findDelegate returns the delegate whose region holds key. applyMu held.
func (e *Emulator) findDelegate(key []byte) *delegate {
	i := sort.Search(len(e.delegates), func(i int) bool {
		return bytes.Compare(e.delegates[i].rawStart, key) > 0
	})
	if i == 0 {
		return nil
	}
	d := e.delegates[i-1]
	if !d.contains(key) {
		return nil
	}
	return d
}

func (e *Emulator) delegateByRegion(id uint64) *delegate {
	for _, d := range e.delegates {
		if d.region.GetId() == id {
			return d
		}
	}
	return nil
}

// addDelegate inserts d keeping the order; a stale delegate overlapping it
// (a split the emulator did not see) is stopped first.
func (e *Emulator) addDelegate(d *delegate) {
	kept := e.delegates[:0:0]
	for _, o := range e.delegates {
		if rangesOverlap(o.rawStart, o.rawEnd, d.rawStart, d.rawEnd) {
			e.stopDelegate(o, regionNotFound(o.region.GetId()))
			continue
		}
		kept = append(kept, o)
	}
	kept = append(kept, d)
	sort.Slice(kept, func(i, j int) bool { return bytes.Compare(kept[i].rawStart, kept[j].rawStart) < 0 })
	e.delegates = kept
}

func (e *Emulator) removeDelegate(d *delegate) {
	for i, o := range e.delegates {
		if o == d {
			e.delegates = append(e.delegates[:i:i], e.delegates[i+1:]...)
			return
		}
	}
}

// stopDelegate sends err to every downstream of d and drops d. applyMu held.
func (e *Emulator) stopDelegate(d *delegate, err *cdcpb.Error) {
	for _, ds := range append([]*downstream(nil), d.downs...) {
		e.stopDownstream(ds, err)
	}
	e.removeDelegate(d)
}

// stopDownstream ends one subscription: err (if any) is its last message.
// applyMu held.
func (e *Emulator) stopDownstream(ds *downstream, err *cdcpb.Error) {
	if !ds.stop() {
		return
	}
	if d := ds.delegate; d != nil {
		for i, o := range d.downs {
			if o == ds {
				d.downs = append(d.downs[:i:i], d.downs[i+1:]...)
				break
			}
		}
		if len(d.downs) == 0 {
			e.removeDelegate(d)
		}
	}
	ds.conn.removeSub(ds)
	if err != nil {
		ds.conn.enqueueError(ds.requestID, ds.regionID, err)
	}
}

// Tick runs one resolved-ts round (spec §2.8, §6.3). When the TSO cannot be
// read the round still runs, as TiKV's does, and Tick returns the TSO error.
func (e *Emulator) Tick(ctx context.Context) error {
	b := e.backend.Load()
	if b == nil {
		return nil
	}
	// The TSO is read before the lock sets are sampled: a transaction that got
	// its commit ts before this read is then either visible as a lock (or an
	// in-flight async-commit / 1PC prewrite) or already has its rows queued.
	t, err := b.TSO(ctx)
	if e.faults.tsoFailing() {
		t, err = 0, errInjectedTSO
	}
	if err != nil {
		// TiKV substitutes 0 for a failed TSO and runs the round anyway:
		// nothing advances, and every Normal downstream hears its current
		// value again, 0 if it never advanced (spec §2.8 step 1).
		t = 0
		e.stats.TSOErrors.Add(1)
		err = fmt.Errorf("cdcemu: resolved ts round: tso: %w", err)
	}
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	e.checkEpochs(b)
	minTS := t
	for ts := range e.inflight {
		minTS = min(minTS, ts)
	}
	type group struct {
		c   *conn
		req uint64
	}
	groups := make(map[group][]*downstream)
	for _, d := range e.delegates {
		for _, ds := range d.downs {
			if ds.state.Load() != stateNormal {
				continue
			}
			if e.faults.resolvedHeld(ds.regionID) {
				continue
			}
			cand := min(minTS, ds.minLock())
			if cand > ds.advancedTo {
				ds.advancedTo = cand
			}
			g := group{c: ds.conn}
			if ds.conn.multiplex {
				g.req = ds.requestID
			}
			groups[g] = append(groups[g], ds)
		}
	}
	for g, dss := range groups {
		g.c.enqueueResolved(g.req, dss)
	}
	e.stats.Rounds.Add(1)
	return err
}

// checkEpochs is the safety net for region changes that did not pass through
// Split: a delegate whose region epoch moved is stopped with epoch_not_match
// carrying the regions now covering its range. applyMu held.
func (e *Emulator) checkEpochs(b *Backend) {
	for _, d := range append([]*delegate(nil), e.delegates...) {
		cur := b.Regions.GetRegion(d.region.GetId())
		if cur != nil && cur.GetRegionEpoch().GetVersion() == d.region.GetRegionEpoch().GetVersion() {
			continue
		}
		e.stopDelegate(d, epochNotMatch(regionsOverlapping(b, d.region)))
	}
}

// regionsOverlapping lists the current regions covering r's range.
func regionsOverlapping(b *Backend, r *metapb.Region) []*metapb.Region {
	var out []*metapb.Region
	for _, pr := range b.Regions.ScanRegions(r.GetStartKey(), r.GetEndKey(), 0) {
		out = append(out, pr.Meta)
	}
	return out
}

// inflightAdd marks an async-commit / 1PC prewrite as in flight: its commit ts
// comes from a TSO read inside the prewrite, so resolved ts must stay below its
// start ts until its rows are queued (the role of TiKV's memory locks and
// max_ts).
func (e *Emulator) inflightAdd(startTS uint64) {
	e.applyMu.Lock()
	e.inflight[startTS]++
	e.applyMu.Unlock()
}

func (e *Emulator) inflightDone(startTS uint64) {
	e.applyMu.Lock()
	if e.inflight[startTS] <= 1 {
		delete(e.inflight, startTS)
	} else {
		e.inflight[startTS]--
	}
	e.applyMu.Unlock()
}

// Stats are counters for tests and the status endpoint.
type Stats struct {
	Rounds      atomic.Uint64
	Prewrites   atomic.Uint64
	Commits     atomic.Uint64
	Committed   atomic.Uint64
	Rollbacks   atomic.Uint64
	ScanRows    atomic.Uint64
	Registers   atomic.Uint64
	Errors      atomic.Uint64
	Resolved    atomic.Uint64
	MessagesOut atomic.Uint64
	Conns       atomic.Int64
	// UnknownRows counts degenerate rows of committed Lock records queued
	// to downstreams (spec §2.5).
	UnknownRows atomic.Uint64
	// DuplicateRegisters counts Registers a client sent for a key that was
	// live on its connection, rejected with duplicate_request. A correct
	// client never sends one; injected duplicates are not counted.
	DuplicateRegisters atomic.Uint64
	// TSOErrors counts resolved-ts rounds run without a TSO.
	TSOErrors atomic.Uint64
}

// Snapshot is a point-in-time copy of Stats plus live state.
type Snapshot struct {
	Rounds, Prewrites, Commits, Committed, Rollbacks, ScanRows uint64
	Registers, Errors, Resolved, MessagesOut                   uint64
	UnknownRows, DuplicateRegisters, TSOErrors                 uint64
	Conns                                                      int64
	Subscriptions                                              []SubscriptionState
}

// SubscriptionState describes one live downstream.
type SubscriptionState struct {
	Conn, RequestID, RegionID uint64
	State                     string
	AdvancedTo                uint64
	Locks                     int
	MinLock                   uint64
}

// Snapshot returns counters and the live subscriptions.
func (e *Emulator) Snapshot() Snapshot {
	s := Snapshot{
		Rounds: e.stats.Rounds.Load(), Prewrites: e.stats.Prewrites.Load(),
		Commits: e.stats.Commits.Load(), Committed: e.stats.Committed.Load(),
		Rollbacks: e.stats.Rollbacks.Load(), ScanRows: e.stats.ScanRows.Load(),
		Registers: e.stats.Registers.Load(), Errors: e.stats.Errors.Load(),
		Resolved: e.stats.Resolved.Load(), MessagesOut: e.stats.MessagesOut.Load(),
		UnknownRows: e.stats.UnknownRows.Load(), DuplicateRegisters: e.stats.DuplicateRegisters.Load(),
		TSOErrors: e.stats.TSOErrors.Load(),
		Conns:     e.stats.Conns.Load(),
	}
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	for _, d := range e.delegates {
		for _, ds := range d.downs {
			ml := ds.minLock()
			if ml == math.MaxUint64 {
				ml = 0
			}
			s.Subscriptions = append(s.Subscriptions, SubscriptionState{
				Conn: ds.conn.id, RequestID: ds.requestID, RegionID: ds.regionID,
				State: stateName(ds.state.Load()), AdvancedTo: ds.advancedTo,
				Locks: len(ds.lockKeys), MinLock: ml,
			})
		}
	}
	return s
}

// StoreBackend is the Backend of a playground store.
func StoreBackend(st *store.Store) Backend {
	return Backend{Bundle: st.Bundle, Regions: st.Regions, ClusterID: st.ClusterID, TSO: st.TSO}
}
