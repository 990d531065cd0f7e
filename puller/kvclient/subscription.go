package kvclient

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pingcap/kvproto/pkg/cdcpb"
	"github.com/pingcap/kvproto/pkg/kvrpcpb"
	"github.com/pingcap/kvproto/pkg/metapb"
	"github.com/tidestream/tidestream/puller/frontier"
	"github.com/tidestream/tidestream/puller/matcher"
	"github.com/tikv/client-go/v2/oracle"
	"github.com/tikv/client-go/v2/tikv"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// inboxSize bounds the messages queued for one subscription. Each holds at
// most one ChangeDataEvent's share (TiKV sends ≤ 6 MiB per message), so a
// stalled subscription holds at most a few of them before its streams stop
// reading.
const inboxSize = 8

// inbound is part of one ChangeDataEvent for one subscription.
type inbound struct {
	w        *worker
	events   []*cdcpb.Event
	resolved *cdcpb.ResolvedTs
}

// control is a message to the subscription from the locator pool, a store
// or a worker. Exactly one field is set.
type control struct {
	located    *located     // a region to register
	retry      *rangeTask   // locate this range again after its delay
	streamDown *worker      // every region sent on this worker must register again
	unsent     *regionState // its store could not be reached: locate it again
	cause      error        // why streamDown or unsent happened (nil: a clean end)
	fatal      error        // fail the subscription
}

// rangeTask asks to locate the regions of [start, end) and register them.
type rangeTask struct {
	start, end []byte
	attempt    int // consecutive failures of this range; 0 for a fresh one
	delay      time.Duration
}

// located is one region of a range task with its leader's address.
type located struct {
	task       rangeTask
	ver        tikv.RegionVerID
	rpcCtx     *tikv.RPCContext
	start, end []byte // the region ∩ the task's range
}

// regionState is one registration of one region for one subscription.
// Only the subscription's goroutine touches the plain fields; the atomics
// are shared with the worker that sends the registration.
type regionState struct {
	sub        *subscription
	id         uint64
	ver        tikv.RegionVerID
	rpcCtx     *tikv.RPCContext
	store      *store
	start, end []byte // memcomparable
	req        *cdcpb.ChangeDataRequest
	attempt    int

	checkpoint uint64 // the range's frontier ts when registered: replays start above it
	stopping   bool   // deregistered by us; waiting for the server's Error to re-register
	// m assembles rows and holds the region's INITIALIZED flag and resolved
	// ts (which starts at the checkpoint).
	m *matcher.Matcher

	lastLockResolve time.Time

	sentOn    atomic.Pointer[worker] // the stream the registration went out on
	admitted  atomic.Bool            // holds an admission slot of its store
	cancelled atomic.Bool            // dropped before being sent: skip it
}

// releaseSlot gives back the admission slot if this registration holds one.
func (rs *regionState) releaseSlot() {
	if rs.admitted.CompareAndSwap(true, false) {
		rs.store.release()
	}
}

type subscription struct {
	c       *Client
	id      uint64
	span    Span
	startTs uint64
	sink    Sink
	log     *slog.Logger
	trace   trace.Span

	in   chan inbound
	done chan struct{} // closed when run returns: receive loops stop waiting on in

	ctlMu   sync.Mutex
	ctlQ    []control
	ctlKick chan struct{}

	// Owned by run's goroutine.
	regions     map[uint64]*regionState
	frontier    *frontier.Frontier
	retries     retryHeap
	out         []matcher.Event
	rowCounts   rowCounts
	emitted     uint64 // last resolved ts passed to the sink
	lastAdvance time.Time
	stuckLog    logThrottle
	stores      map[*store]bool
}

func newSubscription(c *Client, id uint64, span Span, startTs uint64, sink Sink) *subscription {
	return &subscription{
		c: c, id: id, span: span, startTs: startTs, sink: sink,
		log:      c.log.With("subscription", id),
		in:       make(chan inbound, inboxSize),
		done:     make(chan struct{}),
		ctlKick:  make(chan struct{}, 1),
		regions:  make(map[uint64]*regionState),
		frontier: frontier.New(span.Start, span.End, startTs),
		emitted:  startTs,
		stores:   make(map[*store]bool),
	}
}

// post queues a control message; it never blocks.
func (s *subscription) post(m control) {
	s.ctlMu.Lock()
	s.ctlQ = append(s.ctlQ, m)
	s.ctlMu.Unlock()
	select {
	case s.ctlKick <- struct{}{}:
	default:
	}
}

func (s *subscription) takeControl() []control {
	s.ctlMu.Lock()
	defer s.ctlMu.Unlock()
	q := s.ctlQ
	s.ctlQ = nil
	return q
}

func (s *subscription) run(ctx context.Context) (err error) {
	defer func() {
		close(s.done)
		s.teardown()
		if err != nil && ctx.Err() == nil {
			s.log.Warn("subscription ended", "err", err)
		}
	}()
	s.log.Info("subscribe", "start", fmt.Sprintf("%x", s.span.Start), "end", fmt.Sprintf("%x", s.span.End), "start_ts", s.startTs)
	s.lastAdvance = time.Now()
	s.c.locator.push(s, rangeTask{start: s.span.Start, end: s.span.End})

	tick := time.NewTicker(stuckCheckInterval(s.c.cfg.ResolveLockAfter))
	defer tick.Stop()
	retryTimer := time.NewTimer(time.Hour)
	retryTimer.Stop()
	defer retryTimer.Stop()
	for {
		var timerC <-chan time.Time
		if s.retries.Len() > 0 {
			retryTimer.Reset(time.Until(s.retries[0].at))
			timerC = retryTimer.C
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.c.ctx.Done():
			return ErrClosed
		case in := <-s.in:
			if err := s.handle(ctx, in); err != nil {
				return err
			}
		case <-s.ctlKick:
			for _, m := range s.takeControl() {
				if err := s.control(m); err != nil {
					return err
				}
			}
		case <-timerC:
			now := time.Now()
			for s.retries.Len() > 0 && !s.retries[0].at.After(now) {
				t := heap.Pop(&s.retries).(retryItem)
				s.c.locator.push(s, t.task)
			}
		case <-tick.C:
			s.checkStuck()
		}
		retryTimer.Stop()
	}
}

// teardown cancels every registration and asks the stores to forget the
// request id (spec §3.9).
func (s *subscription) teardown() {
	for _, rs := range s.regions {
		s.dropRegion(rs)
	}
	for st := range s.stores {
		st.deregister(s.id)
	}
}

// schedule re-locates a range after its delay.
func (s *subscription) schedule(t rangeTask) {
	if t.delay <= 0 {
		s.c.locator.push(s, t)
		return
	}
	heap.Push(&s.retries, retryItem{at: time.Now().Add(t.delay), task: t})
}

// retryAfter schedules a failed range: attempt is its count of consecutive
// failures, which sets the backoff; atLeast is a floor the server asked for.
func (s *subscription) retryAfter(start, end []byte, attempt int, atLeast time.Duration) {
	s.schedule(rangeTask{start: start, end: end, attempt: attempt, delay: max(rangeBackoff(attempt), atLeast)})
}

func (s *subscription) control(m control) error {
	switch {
	case m.fatal != nil:
		return m.fatal
	case m.retry != nil:
		s.schedule(*m.retry)
	case m.located != nil:
		s.register(m.located)
	case m.streamDown != nil:
		w := m.streamDown
		n := 0
		for _, rs := range s.regions {
			if rs.sentOn.Load() != w {
				continue
			}
			n++
			s.dropRegion(rs)
			s.sendFailed(rs, m.cause)
			// The store backs off before its next stream; the range
			// itself has done nothing wrong.
			s.schedule(rangeTask{start: rs.start, end: rs.end, attempt: rs.nextAttempt()})
		}
		if n > 0 {
			s.log.Debug("stream down; regions register again", "store", w.st.addr, "regions", n)
		}
	case m.unsent != nil:
		rs := m.unsent
		if s.regions[rs.id] != rs {
			return nil
		}
		s.dropRegion(rs)
		s.sendFailed(rs, m.cause)
		// Locate at once, in case the leader moved; the store paces its
		// own reconnects, and stacking a range backoff on top would only
		// delay the recovery.
		s.schedule(rangeTask{start: rs.start, end: rs.end, attempt: rs.attempt})
	}
	return nil
}

// sendFailed tells the region cache that rs's store failed, so the next
// lookup reloads the region and tries another peer (spec §3.7). A clean end
// of stream says nothing about the store.
func (s *subscription) sendFailed(rs *regionState, cause error) {
	if cause == nil {
		return
	}
	s.trace.AddEvent("stream failed", trace.WithAttributes(
		attribute.Int64("region", int64(rs.id)), attribute.String("cause", cause.Error())))
	bo := tikv.NewBackoffer(s.c.ctx, locateBudgetMs)
	s.c.cache.OnSendFail(bo, rs.rpcCtx, true, cause)
}

// nextAttempt is the failure count of the range after this registration
// failed: an initialised region starts the count again.
func (rs *regionState) nextAttempt() int {
	if rs.m.Initialized() {
		return 1
	}
	return rs.attempt + 1
}

// register subscribes a located region for its part of a range, from the
// range's own checkpoint.
func (s *subscription) register(l *located) {
	id := l.ver.GetID()
	if _, dup := s.regions[id]; dup {
		// The cache maps this range to a region already registered for
		// another range, so it is stale; a second Register would be a
		// duplicate_request.
		s.c.cache.InvalidateCachedRegion(l.ver)
		s.retryAfter(l.start, l.end, l.task.attempt+1, 0)
		return
	}
	cp := s.frontier.MinIn(l.start, l.end)
	rs := &regionState{
		sub: s, id: id, ver: l.ver, rpcCtx: l.rpcCtx,
		store: s.c.store(l.rpcCtx.Addr),
		start: l.start, end: l.end, attempt: l.task.attempt,
		checkpoint: cp,
	}
	if s.c.cfg.Spill != nil {
		rs.m = matcher.New(cp, matcher.WithSpill(s.c.cfg.Spill.Space()))
	} else {
		rs.m = matcher.New(cp)
	}
	rs.req = &cdcpb.ChangeDataRequest{
		Header:       s.c.header(),
		RegionId:     id,
		RegionEpoch:  &metapb.RegionEpoch{ConfVer: l.ver.GetConfVer(), Version: l.ver.GetVer()},
		CheckpointTs: cp,
		StartKey:     l.start,
		EndKey:       l.end,
		RequestId:    s.id,
		ExtraOp:      kvrpcpb.ExtraOp_ReadOldValue,
		Request:      &cdcpb.ChangeDataRequest_Register_{Register: &cdcpb.ChangeDataRequest_Register{}},
	}
	s.regions[id] = rs
	s.stores[rs.store] = true
	s.c.met.regions.Add(context.Background(), 1, storeAttr(rs.store.addr))
	rs.store.enqueue(rs)
}

// dropRegion forgets a registration: frees its admission slot and keeps a
// worker from sending it if it is still queued. Its range keeps its
// frontier ts, the checkpoint of whatever registers it next.
func (s *subscription) dropRegion(rs *regionState) {
	if s.regions[rs.id] != rs {
		return
	}
	delete(s.regions, rs.id)
	rs.cancelled.Store(true)
	rs.releaseSlot()
	if err := rs.m.Close(); err != nil {
		// The rows stay on disk until the process restarts and wipes them.
		s.log.Warn("dropping a region's spilled prewrites failed", "region", rs.id, "err", err)
	}
	s.c.met.regions.Add(context.Background(), -1, storeAttr(rs.store.addr))
}

// current returns the registration an event from w for region id belongs
// to, or nil for a stale one (an earlier stream, a dropped region).
func (s *subscription) current(w *worker, id uint64) *regionState {
	rs := s.regions[id]
	if rs == nil || rs.sentOn.Load() != w {
		return nil
	}
	return rs
}

// handle applies one message part: its rows first, then its resolved ts. TiKV
// sends a resolved ts alone (spec §1.3), but were both in one message, the
// rows were queued before the resolved-ts round that covers them; applying
// the resolved ts first would turn them into commits below the resolved ts.
func (s *subscription) handle(ctx context.Context, in inbound) error {
	for _, ev := range in.events {
		rs := s.current(in.w, ev.GetRegionId())
		if rs == nil {
			continue
		}
		switch e := ev.GetEvent().(type) {
		case *cdcpb.Event_Entries_:
			if err := s.rows(rs, e.Entries.GetEntries()); err != nil {
				return err
			}
		case *cdcpb.Event_Error:
			if err := s.regionError(rs, e.Error); err != nil {
				return err
			}
		case *cdcpb.Event_ResolvedTs:
			// Per-region resolved ts of servers that think the client is
			// older than 4.0.8.
			s.resolvedTs(rs, e.ResolvedTs)
		}
	}
	if rts := in.resolved; rts != nil {
		for _, id := range rts.GetRegions() {
			if rs := s.current(in.w, id); rs != nil {
				s.resolvedTs(rs, rts.GetTs())
			}
		}
	}
	s.rowCounts.record(s.c.met)
	return s.flush(ctx)
}

// flush passes collected events to the sink, then the resolved ts if the
// frontier advanced: events first, so the resolved ts never passes one.
func (s *subscription) flush(ctx context.Context) error {
	if len(s.out) > 0 {
		evs := s.out
		s.out = nil
		began := time.Now()
		err := s.sink.Events(ctx, evs)
		s.c.met.sinkBlocked.Add(context.Background(), time.Since(began).Seconds())
		if err != nil {
			return err
		}
		s.c.met.events.Add(context.Background(), int64(len(evs)))
	}
	if f := s.frontier.Frontier(); f > s.emitted {
		began := time.Now()
		err := s.sink.Resolved(ctx, f)
		s.c.met.sinkBlocked.Add(context.Background(), time.Since(began).Seconds())
		if err != nil {
			return err
		}
		s.emitted = f
		s.lastAdvance = time.Now()
		lag := time.Since(oracle.GetTimeFromTS(f))
		s.c.met.resolvedLag.Record(context.Background(), lag.Seconds())
	}
	return nil
}

func (s *subscription) resolvedTs(rs *regionState, ts uint64) {
	// Before INITIALIZED a resolved ts says nothing about the scan; a value
	// at or below the last one is a batch minimum or a fresh registration's
	// first report below its checkpoint (spec §2.8).
	if !rs.stopping && rs.m.Resolved(ts) {
		s.frontier.Forward(rs.start, rs.end, ts)
	}
}

func (s *subscription) rows(rs *regionState, rows []*cdcpb.Event_Row) error {
	for _, row := range rows {
		if rs.stopping || s.regions[rs.id] != rs {
			return nil // the rest belongs to a registration being replaced
		}
		// Counted by type before the matcher sees it: the UNKNOWN rows TiKV
		// sends for committed Lock records (spec §2.5) are dropped by the
		// matcher and show only here.
		s.rowCounts.add(row.GetType())
		wasInit := rs.m.Initialized()
		out, err := rs.m.AppendRow(s.out, row)
		if err != nil {
			if errors.Is(err, matcher.ErrSpill) {
				// The disk under the matcher failed: its state is gone, and
				// the pipeline starts again from its checkpoint.
				return fmt.Errorf("region %d: %w", rs.id, err)
			}
			if errors.Is(err, matcher.ErrCommitBelowResolved) {
				// The frontier may already have been published past this
				// commit: re-registering cannot repair that.
				return fmt.Errorf("%w: region %d: %w", ErrProtocol, rs.id, err)
			}
			// An unmatched COMMIT, an unknown op or a row type outside the
			// enum: the region's stream state cannot be trusted, but a
			// fresh scan from its checkpoint delivers every commit above it
			// again.
			s.log.Warn("bad row; region registers again", "region", rs.id, "err", err)
			s.c.met.regionErrors.Add(context.Background(), 1, kindAttr("bad_row"))
			s.restart(rs)
			return nil
		}
		s.out = out
		if !wasInit && rs.m.Initialized() {
			rs.attempt = 0
			rs.releaseSlot()
			rs.store.failures.Store(0)
		}
	}
	return nil
}

// restart deregisters a region whose stream state is broken and registers
// it again once the server has confirmed (its Error for the registration);
// registering before that would be a duplicate_request.
func (s *subscription) restart(rs *regionState) {
	rs.stopping = true
	rs.releaseSlot()
	w := rs.sentOn.Load()
	w.push(sendItem{req: &cdcpb.ChangeDataRequest{
		Header:    s.c.header(),
		RegionId:  rs.id,
		RequestId: s.id,
		Request:   &cdcpb.ChangeDataRequest_Deregister_{Deregister: &cdcpb.ChangeDataRequest_Deregister{}},
	}})
}

// regionError handles the Error that ends a registration (spec §3.7): the
// range keeps its checkpoint, the region cache learns what changed, and the
// range is located and registered again after its backoff.
func (s *subscription) regionError(rs *regionState, e *cdcpb.Error) error {
	kind := errKind(e)
	s.c.met.regionErrors.Add(context.Background(), 1, kindAttr(kind))
	s.dropRegion(rs)
	if rs.stopping {
		// The answer to our own Deregister, whatever its kind.
		s.retryAfter(rs.start, rs.end, rs.attempt+1, 0)
		return nil
	}
	s.log.Debug("region error", "region", rs.id, "kind", kind, "error", e.String(), "resolved_ts", rs.m.ResolvedTs())
	s.trace.AddEvent("region error", trace.WithAttributes(
		attribute.String("kind", kind), attribute.Int64("region", int64(rs.id)), attribute.Int("attempt", rs.attempt)))
	attempt := rs.nextAttempt()
	cache := s.c.cache
	switch kind {
	case "duplicate_request", "compatibility", "cluster_id_mismatch":
		return fmt.Errorf("%w: region %d: %s: %s", ErrFatal, rs.id, kind, e.String())
	case "epoch_not_match":
		if cur := e.GetEpochNotMatch().GetCurrentRegions(); len(cur) > 0 {
			bo := tikv.NewBackoffer(s.c.ctx, locateBudgetMs)
			if _, err := cache.OnRegionEpochNotMatch(bo, rs.rpcCtx, cur); err != nil {
				cache.InvalidateCachedRegion(rs.ver)
			}
		} else {
			cache.InvalidateCachedRegion(rs.ver) // a merge
		}
	case "not_leader":
		if leader := e.GetNotLeader().GetLeader(); leader != nil && leader.GetStoreId() != 0 {
			cache.UpdateLeader(rs.ver, leader, rs.rpcCtx.AccessIdx)
		} else {
			cache.InvalidateCachedRegion(rs.ver)
		}
	case "region_not_found":
		cache.InvalidateCachedRegion(rs.ver)
	case "server_is_busy":
		// TiKV's scan queue is full: wait at least what it asks for.
		busy := time.Duration(e.GetServerIsBusy().GetBackoffMs()) * time.Millisecond
		s.retryAfter(rs.start, rs.end, attempt, min(busy, busyBackoffMax))
		return nil
	}
	// congested and unknown errors retry the same range with backoff.
	s.retryAfter(rs.start, rs.end, attempt, 0)
	return nil
}

// retryItem is a range waiting for its backoff to pass.
type retryItem struct {
	at   time.Time
	task rangeTask
}

type retryHeap []retryItem

func (h retryHeap) Len() int           { return len(h) }
func (h retryHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h retryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *retryHeap) Push(x any)        { *h = append(*h, x.(retryItem)) }
func (h *retryHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}
