package feedclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/pingcap/kvproto/pkg/cdcpb"
	"github.com/pingcap/kvproto/pkg/kvrpcpb"
	"github.com/pingcap/kvproto/pkg/metapb"
	"github.com/pingcap/tidb/pkg/util/codec"
	"github.com/tidestream/tidestream/deploy/playground/checker"
	"github.com/tikv/client-go/v2/kv"
	"github.com/tikv/client-go/v2/tikv"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
)

// ErrFatal is wrapped by the error Run returns when the server refuses the
// subscription for good (cluster id mismatch, incompatible version) or
// reports a client bug (duplicate request).
var ErrFatal = errors.New("feedclient: fatal change-data error")

const (
	// Region-error retries back off per range like the new TiCDC (spec §3.7):
	// 50 ms × 2^(attempt−1), at most 2 s, jittered into [d/2, d].
	regionBackoffBase = 50 * time.Millisecond
	regionBackoffMax  = 2 * time.Second
	// Busy and congested regions are retried after 100–500 ms, or the
	// server's backoff_ms when larger.
	busyBackoffMin = 100 * time.Millisecond
	busyBackoffMax = 500 * time.Millisecond
	// A failed stream is re-established after 200 ms × 2^(failures−1), at
	// most 2 s; the count resets when a region on that store initialises.
	streamBackoffBase = 200 * time.Millisecond
	streamBackoffMax  = 2 * time.Second
	// Backoffer budgets (ms) for region cache lookups, which go to PD.
	locateBudgetMs = 10000

	maxRecvMsgSize = 256 << 20
)

// sub is one region subscription: a Register sent on a stream for a range.
type sub struct {
	regionID   uint64
	ver        tikv.RegionVerID
	rpcCtx     *tikv.RPCContext
	stream     *stream
	part       *part
	start, end []byte // registered range, memcomparable; end nil = +inf
	checkpoint uint64
	resolved   uint64
	attempt    int // consecutive failed registrations of this range before it
	m          *matcher
}

type stream struct {
	id     uint64
	addr   string
	client cdcpb.ChangeData_EventFeedV2Client
	cancel context.CancelFunc
	subs   map[uint64]*sub // by region id; the client uses one request id
}

// task asks to locate the regions of [start, end) and register them.
type task struct {
	start, end []byte
	attempt    int
}

type recvMsg struct {
	stream uint64
	ev     *cdcpb.ChangeDataEvent
	err    error
}

// runner is the state of one Run; only Run's goroutine touches it.
type runner struct {
	c      *Client
	cfg    *Config
	ctx    context.Context
	log    *slog.Logger
	ranges *rangeMap

	streams    map[string]*stream // by store address
	byID       map[uint64]*stream
	conns      map[string]*grpc.ClientConn
	storeFails map[string]int
	lastID     uint64

	pending []task
	delayed chan task
	in      chan recvMsg
	wg      sync.WaitGroup
}

// Run subscribes the span and processes the streams until ctx ends (then it
// returns nil) or a fatal error (wrapping ErrFatal). Run may be called once.
func (c *Client) Run(ctx context.Context) error {
	if !c.ran.CompareAndSwap(false, true) {
		return errors.New("feedclient: Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	r := &runner{
		c: c, cfg: &c.cfg, ctx: ctx, log: c.log,
		ranges:     newRangeMap(c.start, c.end, c.cfg.CheckpointTs),
		streams:    make(map[string]*stream),
		byID:       make(map[uint64]*stream),
		conns:      make(map[string]*grpc.ClientConn),
		storeFails: make(map[string]int),
		delayed:    make(chan task),
		in:         make(chan recvMsg, 64),
	}
	defer r.shutdown(cancel)
	r.pending = append(r.pending, task{start: c.start, end: c.end})
	for {
		for len(r.pending) > 0 && ctx.Err() == nil {
			t := r.pending[0]
			r.pending = r.pending[1:]
			r.divide(t)
		}
		select {
		case <-ctx.Done():
			return nil
		case t := <-r.delayed:
			r.pending = append(r.pending, t)
		case m := <-r.in:
			if err := r.handle(m); err != nil {
				return err
			}
		}
		if ts, ok := r.ranges.resolved(); ok {
			c.publish(ts)
		}
	}
}

// shutdown ends every stream and waits for the goroutines Run started.
func (r *runner) shutdown(cancel context.CancelFunc) {
	cancel()
	for _, st := range r.byID {
		st.cancel()
		if r.cfg.OnStreamEnd != nil {
			r.cfg.OnStreamEnd(st.id)
		}
	}
	r.wg.Wait()
	for addr, cc := range r.conns {
		if err := cc.Close(); err != nil {
			r.log.Debug("close connection", "addr", addr, "err", err)
		}
	}
}

// retry queues t after d, off Run's goroutine so the wait blocks nothing.
func (r *runner) retry(t task, d time.Duration) {
	if d <= 0 {
		r.pending = append(r.pending, t)
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-r.ctx.Done():
			return
		}
		select {
		case r.delayed <- t:
		case <-r.ctx.Done():
		}
	}()
}

func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

func regionBackoff(attempt int) time.Duration {
	if attempt <= 0 {
		return 0
	}
	d := regionBackoffBase << min(attempt-1, 8)
	return jitter(min(d, regionBackoffMax))
}

// divide locates the regions of t's range and registers each for its part.
func (r *runner) divide(t task) {
	bo := tikv.NewBackoffer(r.ctx, locateBudgetMs)
	cur := t.start
	for cmpEnd(cur, t.end) < 0 {
		loc, err := r.c.cache.LocateKey(bo, cur)
		if err != nil {
			if r.ctx.Err() != nil {
				return
			}
			r.log.Warn("locate region", "key", fmt.Sprintf("%x", cur), "err", err)
			next := task{start: cur, end: t.end, attempt: t.attempt + 1}
			r.retry(next, max(regionBackoff(next.attempt), busyBackoffMin))
			return
		}
		regionEnd := loc.EndKey
		if len(regionEnd) == 0 {
			regionEnd = nil
		}
		if bytes.Compare(loc.StartKey, cur) > 0 || cmpEnd(regionEnd, cur) <= 0 {
			// The cache answered with a region that does not hold cur.
			r.c.cache.InvalidateCachedRegion(loc.Region)
			next := task{start: cur, end: t.end, attempt: t.attempt + 1}
			r.retry(next, regionBackoff(next.attempt))
			return
		}
		end := t.end
		if cmpEnd(regionEnd, end) < 0 {
			end = regionEnd
		}
		r.register(loc, cur, end, t.attempt)
		if end == nil {
			return
		}
		cur = end
	}
}

// register subscribes region loc for [start, end) on its leader's stream.
func (r *runner) register(loc *tikv.KeyLocation, start, end []byte, attempt int) {
	again := task{start: start, end: end, attempt: attempt + 1}
	bo := tikv.NewBackoffer(r.ctx, locateBudgetMs)
	rpcCtx, err := r.c.cache.GetTiKVRPCContext(bo, loc.Region, kv.ReplicaReadLeader, 0)
	if err != nil || rpcCtx == nil {
		// The region dropped out of the cache (or its store is unknown).
		r.log.Debug("no RPC context", "region", loc.Region.GetID(), "err", err)
		r.c.cache.InvalidateCachedRegion(loc.Region)
		r.retry(again, regionBackoff(again.attempt))
		return
	}
	st, err := r.stream(rpcCtx.Addr)
	if err != nil {
		if r.ctx.Err() != nil {
			return
		}
		r.storeFails[rpcCtx.Addr]++
		r.log.Warn("open change-data stream", "addr", rpcCtx.Addr, "err", err)
		r.retry(again, streamBackoff(r.storeFails[rpcCtx.Addr]))
		return
	}
	id := loc.Region.GetID()
	if st.subs[id] != nil {
		// The cache maps this range to a region already subscribed for
		// another range: it is stale. A second Register would be a
		// duplicate_request.
		r.c.cache.InvalidateCachedRegion(loc.Region)
		r.retry(again, regionBackoff(again.attempt))
		return
	}
	s := &sub{
		regionID: id, ver: loc.Region, rpcCtx: rpcCtx, stream: st,
		start: start, end: end, attempt: attempt, m: newMatcher(),
	}
	p, err := r.ranges.lock(start, end, s)
	if err != nil {
		// A bug in this client: never subscribe a key twice.
		r.c.problem("client: %v", err)
		return
	}
	s.part = p
	s.checkpoint = p.ts
	st.subs[id] = s
	req := &cdcpb.ChangeDataRequest{
		Header:       &cdcpb.Header{ClusterId: r.c.clusterID, TicdcVersion: TiCDCVersion},
		RegionId:     id,
		RegionEpoch:  &metapb.RegionEpoch{ConfVer: loc.Region.GetConfVer(), Version: loc.Region.GetVer()},
		CheckpointTs: s.checkpoint,
		StartKey:     start,
		EndKey:       end,
		RequestId:    r.c.requestID,
		ExtraOp:      kvrpcpb.ExtraOp_ReadOldValue,
		Request:      &cdcpb.ChangeDataRequest_Register_{Register: &cdcpb.ChangeDataRequest_Register{}},
	}
	if r.cfg.OnRequest != nil {
		r.cfg.OnRequest(st.id, req)
	}
	r.log.Debug("register", "stream", st.id, "region", id, "version", loc.Region.GetVer(),
		"checkpoint", s.checkpoint, "start", fmt.Sprintf("%x", start), "end", fmt.Sprintf("%x", end))
	if err := st.client.Send(req); err != nil {
		r.failStream(st, fmt.Errorf("send register: %w", err))
	}
}

func streamBackoff(failures int) time.Duration {
	if failures <= 0 {
		return 0
	}
	return jitter(min(streamBackoffBase<<min(failures-1, 8), streamBackoffMax))
}

// stream returns the stream to addr, opening it (and its connection) if needed.
func (r *runner) stream(addr string) (*stream, error) {
	if st := r.streams[addr]; st != nil {
		return st, nil
	}
	cc := r.conns[addr]
	if cc == nil {
		var err error
		cc, err = grpc.NewClient(addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgSize)),
			// TiCDC's keepalive (spec §1.5).
			grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 3 * time.Second, PermitWithoutStream: true}),
		)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		r.conns[addr] = cc
	}
	sctx, cancel := context.WithCancel(r.ctx)
	if r.cfg.Multiplex {
		sctx = metadata.AppendToOutgoingContext(sctx, "features", "stream-multiplexing")
	}
	client, err := cdcpb.NewChangeDataClient(cc).EventFeedV2(sctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("EventFeedV2 on %s: %w", addr, err)
	}
	r.lastID++
	st := &stream{id: r.lastID, addr: addr, client: client, cancel: cancel, subs: make(map[uint64]*sub)}
	r.streams[addr] = st
	r.byID[st.id] = st
	if r.cfg.OnStream != nil {
		r.cfg.OnStream(st.id, r.cfg.Multiplex)
	}
	r.log.Debug("stream opened", "stream", st.id, "addr", addr, "multiplex", r.cfg.Multiplex)
	r.wg.Add(1)
	go r.recv(st.id, client)
	return st, nil
}

func (r *runner) recv(id uint64, client cdcpb.ChangeData_EventFeedV2Client) {
	defer r.wg.Done()
	for {
		ev, err := client.Recv()
		select {
		case r.in <- recvMsg{stream: id, ev: ev, err: err}:
		case <-r.ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// failStream drops a stream whose Recv or Send failed and re-registers each
// of its regions, from its range's checkpoint, after the store's backoff.
func (r *runner) failStream(st *stream, err error) {
	if r.ctx.Err() != nil || r.byID[st.id] != st {
		return
	}
	delete(r.byID, st.id)
	if r.streams[st.addr] == st {
		delete(r.streams, st.addr)
	}
	st.cancel()
	if r.cfg.OnStreamEnd != nil {
		r.cfg.OnStreamEnd(st.id)
	}
	r.c.mu.Lock()
	r.c.reconnects++
	r.c.mu.Unlock()
	r.storeFails[st.addr]++
	d := streamBackoff(r.storeFails[st.addr])
	r.log.Info("change-data stream ended; re-registering its regions", "stream", st.id, "addr", st.addr,
		"regions", len(st.subs), "backoff", d, "err", err)
	for _, s := range st.subs {
		r.unlock(s)
		r.retry(task{start: s.start, end: s.end, attempt: s.nextAttempt()}, d)
	}
	st.subs = nil
}

func (s *sub) nextAttempt() int {
	if s.m.initialized {
		return 1
	}
	return s.attempt + 1
}

// unlock releases the subscription's range; the range keeps the last
// resolved ts the subscription reached as its checkpoint.
func (r *runner) unlock(s *sub) {
	s.part.sub = nil
	delete(s.stream.subs, s.regionID)
}

func (r *runner) handle(m recvMsg) error {
	st := r.byID[m.stream]
	if st == nil {
		return nil // a stream already dropped
	}
	if m.err != nil {
		r.failStream(st, m.err)
		return nil
	}
	if r.cfg.OnEvent != nil {
		r.cfg.OnEvent(st.id, m.ev)
	}
	if rts := m.ev.ResolvedTs; rts != nil && (!r.cfg.Multiplex || rts.RequestId == r.c.requestID) {
		for _, id := range rts.Regions {
			if s := st.subs[id]; s != nil {
				r.resolved(s, rts.Ts)
			}
		}
	}
	for _, ev := range m.ev.Events {
		if ev.RequestId != r.c.requestID {
			continue
		}
		s := st.subs[ev.RegionId]
		if s == nil {
			continue // e.g. an answer to a subscription already dropped
		}
		switch e := ev.Event.(type) {
		case *cdcpb.Event_Entries_:
			for _, row := range e.Entries.GetEntries() {
				r.row(s, row)
			}
		case *cdcpb.Event_Error:
			if err := r.regionError(s, e.Error); err != nil {
				return err
			}
		case *cdcpb.Event_ResolvedTs:
			r.resolved(s, e.ResolvedTs)
		}
	}
	return nil
}

func (r *runner) resolved(s *sub, ts uint64) {
	// Before INITIALIZED a resolved ts says nothing about the scan; below the
	// known value it is a batch minimum or a fresh subscription's first report.
	if !s.m.initialized || ts <= s.resolved {
		return
	}
	s.resolved = ts
	if ts > s.part.ts {
		s.part.ts = ts
	}
}

func (r *runner) row(s *sub, row *cdcpb.Event_Row) {
	if row.Type == cdcpb.Event_UNKNOWN {
		// The row TiKV sends for a committed Lock record (spec §2.5, §3.5):
		// ignored, with no range check; any other UNKNOWN row is a problem.
		if !checker.IsLockRecordRow(row) {
			r.c.problem("region %d: UNKNOWN row with fields set: %v", s.regionID, row)
		}
		r.c.mu.Lock()
		r.c.lockRows++
		r.c.mu.Unlock()
		return
	}
	if row.Type != cdcpb.Event_INITIALIZED {
		if k := codec.EncodeBytes(nil, row.Key); bytes.Compare(k, s.start) < 0 || cmpEnd(k, s.end) >= 0 {
			r.c.problem("region %d: %v row of key %x outside the registered range", s.regionID, row.Type, row.Key)
			return
		}
	}
	changes, problems := s.m.add(row)
	for _, p := range problems {
		r.c.problem("region %d: %s", s.regionID, p)
	}
	if row.Type == cdcpb.Event_INITIALIZED {
		s.part.initialized = true
		r.storeFails[s.stream.addr] = 0
		r.log.Debug("region initialized", "region", s.regionID, "stream", s.stream.id)
	}
	for _, ch := range changes {
		if ch.CommitTS <= s.checkpoint {
			continue // inside the consumer's starting snapshot
		}
		if ch.CommitTS <= s.resolved {
			r.c.problem("region %d: change of %x committed at %d arrived after resolved ts %d", s.regionID, ch.Key, ch.CommitTS, s.resolved)
		}
		r.c.addChange(ch)
	}
}

func errKind(e *cdcpb.Error) string {
	switch {
	case e.GetNotLeader() != nil:
		return "not_leader"
	case e.GetRegionNotFound() != nil:
		return "region_not_found"
	case e.GetEpochNotMatch() != nil:
		return "epoch_not_match"
	case e.GetDuplicateRequest() != nil:
		return "duplicate_request"
	case e.GetCompatibility() != nil:
		return "compatibility"
	case e.GetClusterIdMismatch() != nil:
		return "cluster_id_mismatch"
	case e.GetServerIsBusy() != nil:
		return "server_is_busy"
	case e.GetCongested() != nil:
		return "congested"
	}
	return "unknown"
}

// regionError ends a subscription (spec §3.7): its range is released with its
// checkpoint, then located again and re-registered.
func (r *runner) regionError(s *sub, e *cdcpb.Error) error {
	kind := errKind(e)
	r.c.countError(kind)
	r.unlock(s)
	again := task{start: s.start, end: s.end, attempt: s.nextAttempt()}
	r.log.Debug("region error", "region", s.regionID, "kind", kind, "error", e.String(), "resolved", s.resolved)
	cache := r.c.cache
	switch kind {
	case "duplicate_request", "compatibility", "cluster_id_mismatch":
		return fmt.Errorf("%w: region %d: %s: %s", ErrFatal, s.regionID, kind, e.String())
	case "epoch_not_match":
		if cur := e.GetEpochNotMatch().GetCurrentRegions(); len(cur) > 0 {
			bo := tikv.NewBackoffer(r.ctx, locateBudgetMs)
			if _, err := cache.OnRegionEpochNotMatch(bo, s.rpcCtx, cur); err != nil {
				cache.InvalidateCachedRegion(s.ver)
			}
		} else {
			cache.InvalidateCachedRegion(s.ver)
		}
		r.retry(again, regionBackoff(again.attempt))
	case "not_leader", "region_not_found":
		cache.InvalidateCachedRegion(s.ver)
		r.retry(again, regionBackoff(again.attempt))
	case "server_is_busy", "congested":
		d := busyBackoffMin + rand.N(busyBackoffMax-busyBackoffMin)
		if ms := e.GetServerIsBusy().GetBackoffMs(); time.Duration(ms)*time.Millisecond > d {
			d = time.Duration(ms) * time.Millisecond
		}
		r.retry(again, d)
	default:
		r.retry(again, max(regionBackoff(again.attempt), busyBackoffMin))
	}
	return nil
}
