package cdcemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pingcap/kvproto/pkg/cdcpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Framing limits from TiKV (spec §1.5).
const (
	maxEventBytes    = 32 << 10 // rows per Event
	maxEventsPerMsg  = 64       // Events per ChangeDataEvent
	maxMessageBytes  = 6 << 20  // per ChangeDataEvent
	scanBufferBytes  = 6 << 20  // queued scan output per connection before the scan waits
	scanBatchRows    = 1024
	featureMultiplex = "stream-multiplexing"
)

type subKey struct{ requestID, regionID uint64 }

// item is one queued message part.
type item struct {
	ev       *cdcpb.Event
	resolved *cdcpb.ResolvedTs
	ds       *downstream // set for scan rows: dropped if ds stopped before sending
	onSent   func()
	at       time.Time
	size     int64
}

type stream interface {
	Send(*cdcpb.ChangeDataEvent) error
	Recv() (*cdcpb.ChangeDataRequest, error)
	Context() context.Context
}

// conn is one EventFeed / EventFeedV2 stream.
type conn struct {
	e         *Emulator
	id        uint64
	multiplex bool
	ctx       context.Context
	cancel    context.CancelCauseFunc

	// Set by the first request, before any subscription exists (applyMu).
	gatesSet          bool
	batchResolved     bool
	validateClusterID bool

	subs map[subKey]*downstream // applyMu

	mu     sync.Mutex
	wake   chan struct{} // 1-buffered: queue changed
	space  chan struct{} // 1-buffered: queue shrank
	queue  []item
	qbytes int64
	closed bool
}

func (c *conn) notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// enqueue appends a realtime item; false when the sink quota is exhausted.
func (c *conn) enqueue(it item) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return true
	}
	if c.qbytes+it.size > c.e.cfg.SinkQuota {
		return false
	}
	c.push(it)
	return true
}

// enqueueForced appends regardless of the quota (errors, as TiKV sends them).
func (c *conn) enqueueForced(it item) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.push(it)
	}
}

func (c *conn) push(it item) {
	it.at = time.Now()
	c.queue = append(c.queue, it)
	c.qbytes += it.size
	c.notify(c.wake)
}

// enqueueError queues an Error for one subscription key, regardless of the
// quota (TiKV sends errors forced).
func (c *conn) enqueueError(requestID, regionID uint64, err *cdcpb.Error) {
	c.enqueueForced(item{size: 64, ev: &cdcpb.Event{
		RegionId: regionID, RequestId: requestID,
		Event: &cdcpb.Event_Error{Error: err},
	}})
}

// enqueueScan appends scan output, waiting while the connection's scan buffer
// is full. It returns false once the downstream stopped or the stream ended.
func (c *conn) enqueueScan(it item) bool {
	for {
		c.mu.Lock()
		if c.closed || it.ds.state.Load() == stateStopped {
			c.mu.Unlock()
			return false
		}
		if c.qbytes < scanBufferBytes {
			c.push(it)
			c.mu.Unlock()
			return true
		}
		c.mu.Unlock()
		select {
		case <-c.space:
		case <-c.ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// enqueueResolved queues resolved ts for dss (spec §2.8 step 5). applyMu held.
func (c *conn) enqueueResolved(requestID uint64, dss []*downstream) {
	if !c.batchResolved {
		for _, ds := range dss {
			c.enqueueForced(item{size: 16, ev: &cdcpb.Event{
				RegionId: ds.regionID, RequestId: ds.requestID,
				Event: &cdcpb.Event_ResolvedTs{ResolvedTs: ds.advancedTo},
			}})
		}
		return
	}
	// Slowest regions first, in batches of 8, 32, 128, ... each carrying the
	// batch minimum, as TiKV's heap-based emission does.
	sort.Slice(dss, func(i, j int) bool { return dss[i].advancedTo < dss[j].advancedTo })
	for i, n := 0, 8; i < len(dss); n *= 4 {
		end := min(i+n, len(dss))
		rt := &cdcpb.ResolvedTs{Ts: dss[i].advancedTo, RequestId: requestID}
		for _, ds := range dss[i:end] {
			rt.Regions = append(rt.Regions, ds.regionID)
		}
		c.enqueueForced(item{resolved: rt, size: int64(8 * (end - i))})
		i = end
	}
}

func (c *conn) removeSub(ds *downstream) {
	if c.subs[subKey{ds.requestID, ds.regionID}] == ds {
		delete(c.subs, subKey{ds.requestID, ds.regionID})
	}
}

// take removes the next message's items: one resolved ts alone, or up to 64
// events within 6 MiB.
func (c *conn) take() ([]item, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) == 0 {
		return nil, false
	}
	n, bytes := 0, int64(0)
	if c.queue[0].resolved != nil {
		n = 1
	} else {
		for n < len(c.queue) && n < maxEventsPerMsg && c.queue[n].resolved == nil {
			if n > 0 && bytes+c.queue[n].size > maxMessageBytes {
				break
			}
			bytes += c.queue[n].size
			n++
		}
	}
	out := append([]item(nil), c.queue[:n]...)
	for i := range n {
		c.qbytes -= c.queue[i].size
		c.queue[i] = item{}
	}
	c.queue = c.queue[n:]
	if len(c.queue) == 0 {
		c.queue = nil
	}
	c.notify(c.space)
	return out, true
}

// sendLoop is the only goroutine that writes to the stream.
func (c *conn) sendLoop(s stream) {
	for {
		items, ok := c.take()
		if !ok {
			select {
			case <-c.wake:
				continue
			case <-c.ctx.Done():
				return
			}
		}
		if d := c.e.faults.eventDelay(); d > 0 {
			if wait := time.Until(items[0].at.Add(d)); wait > 0 {
				select {
				case <-time.After(wait):
				case <-c.ctx.Done():
					return
				}
			}
		}
		msg := &cdcpb.ChangeDataEvent{}
		var sent []func()
		for _, it := range items {
			if it.resolved != nil {
				msg.ResolvedTs = it.resolved
				continue
			}
			if it.ds != nil && it.ds.state.Load() == stateStopped {
				continue
			}
			msg.Events = append(msg.Events, it.ev)
			if it.onSent != nil {
				sent = append(sent, it.onSent)
			}
		}
		if msg.ResolvedTs == nil && len(msg.Events) == 0 {
			continue
		}
		if err := s.Send(msg); err != nil {
			c.cancel(status.Errorf(codes.Unknown, "send: %v", err))
			return
		}
		c.e.stats.MessagesOut.Add(1)
		if msg.ResolvedTs != nil {
			c.e.stats.Resolved.Add(1)
		}
		if tap := c.e.cfg.Tap; tap != nil {
			tap.Event(c.id, msg)
		}
		for _, f := range sent {
			f()
		}
	}
}

// EventFeed serves the original RPC: no features, no multiplexing.
func (e *Emulator) EventFeed(s cdcpb.ChangeData_EventFeedServer) error {
	return e.serve(s, false)
}

// EventFeedV2 reads the `features` header (spec §1.1): only
// stream-multiplexing is known; anything else fails the stream.
func (e *Emulator) EventFeedV2(s cdcpb.ChangeData_EventFeedV2Server) error {
	if e.faults.v2Disabled() {
		return status.Error(codes.Unimplemented, "unknown method EventFeedV2 for service cdcpb.ChangeData")
	}
	multiplex := false
	md, _ := metadata.FromIncomingContext(s.Context())
	if vals, ok := md["features"]; ok {
		var unknown []string
		for _, v := range vals {
			for _, f := range strings.Split(v, ",") {
				f = strings.TrimSpace(f)
				if f == featureMultiplex {
					multiplex = true
					continue
				}
				unknown = append(unknown, strconv.Quote(f))
			}
		}
		if len(unknown) > 0 {
			return status.Errorf(codes.Unimplemented, "the cluster does not support these features: [%s]", strings.Join(unknown, ", "))
		}
	}
	if multiplex && e.faults.featuresRejected() {
		return status.Errorf(codes.Unimplemented, "the cluster does not support these features: [%q]", featureMultiplex)
	}
	return e.serve(s, multiplex)
}

func (e *Emulator) serve(s stream, multiplex bool) error {
	if e.backend.Load() == nil {
		return status.Error(codes.Unavailable, "store is starting")
	}
	ctx, cancel := context.WithCancelCause(s.Context())
	c := &conn{
		e: e, id: e.nextConn.Add(1), multiplex: multiplex, ctx: ctx, cancel: cancel,
		subs: make(map[subKey]*downstream),
		wake: make(chan struct{}, 1), space: make(chan struct{}, 1),
	}
	e.connsMu.Lock()
	e.conns[c.id] = c
	e.connsMu.Unlock()
	e.stats.Conns.Add(1)
	if tap := e.cfg.Tap; tap != nil {
		tap.SetMultiplexing(c.id, multiplex)
	}
	defer func() {
		e.connsMu.Lock()
		delete(e.conns, c.id)
		e.connsMu.Unlock()
		e.stats.Conns.Add(-1)
		if tap := e.cfg.Tap; tap != nil {
			tap.CloseConn(c.id)
		}
	}()

	sendDone := make(chan struct{})
	go func() {
		defer close(sendDone)
		c.sendLoop(s)
	}()
	recvDone := make(chan error, 1)
	go func() { recvDone <- e.recvLoop(c, s) }()

	var err error
	select {
	case err = <-recvDone:
		cancel(err)
	case <-ctx.Done():
		err = context.Cause(ctx)
	}
	e.teardown(c)
	<-sendDone
	switch {
	case err == nil || errors.Is(err, io.EOF):
		// Half-close: every subscription was dropped silently, stream ends OK.
		return nil
	case isStatus(err):
		return err
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "stream canceled")
	default:
		return status.Error(codes.Unknown, err.Error())
	}
}

func isStatus(err error) bool {
	_, ok := status.FromError(err)
	return ok
}

func (e *Emulator) recvLoop(c *conn, s stream) error {
	for {
		req, err := s.Recv()
		if err != nil {
			return err
		}
		if tap := e.cfg.Tap; tap != nil {
			tap.Request(c.id, req)
		}
		switch req.Request.(type) {
		case nil, *cdcpb.ChangeDataRequest_Register_:
			e.register(c, req)
		case *cdcpb.ChangeDataRequest_Deregister_:
			e.deregister(c, req)
		case *cdcpb.ChangeDataRequest_NotifyTxnStatus_:
			// TiKV's dispatcher treats it as unreachable and the server task
			// dies; failing the stream is the closest faithful behaviour.
			return status.Error(codes.Internal, "notify_txn_status is not implemented by TiKV's CDC endpoint")
		default:
			return status.Errorf(codes.InvalidArgument, "unknown change data request %T", req.Request)
		}
	}
}

// teardown drops every subscription of c silently (no Error events).
func (e *Emulator) teardown(c *conn) {
	e.applyMu.Lock()
	for _, ds := range c.subs {
		e.stopDownstream(ds, nil)
	}
	e.applyMu.Unlock()
	c.mu.Lock()
	c.closed = true
	c.queue = nil
	c.qbytes = 0
	c.mu.Unlock()
}

// setGates derives the feature gates from the first request's ticdc_version
// (spec §1.4). applyMu held.
func (c *conn) setGates(h *cdcpb.Header) {
	if c.gatesSet {
		return
	}
	c.gatesSet = true
	v := parseSemver(h.GetTicdcVersion())
	c.batchResolved = !v.less(semver{4, 0, 8})
	c.validateClusterID = !v.less(semver{5, 3, 0})
}

type semver struct{ major, minor, patch uint64 }

func (a semver) less(b semver) bool {
	if a.major != b.major {
		return a.major < b.major
	}
	if a.minor != b.minor {
		return a.minor < b.minor
	}
	return a.patch < b.patch
}

// parseSemver is strict like TiKV's parser: MAJOR.MINOR.PATCH with optional
// -pre / +build, no leading "v"; anything else is 0.0.0.
func parseSemver(s string) semver {
	core := s
	if i := strings.IndexAny(core, "-+"); i >= 0 {
		core = core[:i]
	}
	parts := strings.Split(core, ".")
	if len(parts) != 3 {
		return semver{}
	}
	var out [3]uint64
	for i, p := range parts {
		if p == "" || (len(p) > 1 && p[0] == '0') {
			return semver{}
		}
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return semver{}
		}
		out[i] = n
	}
	return semver{out[0], out[1], out[2]}
}

// closeAll ends every stream with the given status (fault injection).
func (e *Emulator) closeAll(code codes.Code, msg string) int {
	e.connsMu.Lock()
	defer e.connsMu.Unlock()
	for _, c := range e.conns {
		if code == codes.OK {
			c.cancel(io.EOF)
		} else {
			c.cancel(status.Error(code, msg))
		}
	}
	return len(e.conns)
}

const (
	stateInitializing int32 = iota + 1
	stateNormal
	stateStopped
)

func stateName(s int32) string {
	switch s {
	case stateInitializing:
		return "initializing"
	case stateNormal:
		return "normal"
	case stateStopped:
		return "stopped"
	}
	return fmt.Sprintf("state(%d)", s)
}

// downstream is one subscription (connection, request id, region).
type downstream struct {
	conn       *conn
	requestID  uint64
	regionID   uint64
	delegate   *delegate
	rawStart   []byte
	rawEnd     []byte
	checkpoint uint64
	state      atomic.Int32
	// coversRegion and observedFromMin decide whether the degenerate row of
	// a committed Lock record reaches this downstream (spec §2.5): TiKV
	// range-checks that row's empty key, which passes only for a downstream
	// flagged as covering its region or whose observed range starts at the
	// smallest key.
	coversRegion    bool
	observedFromMin bool

	// applyMu
	advancedTo uint64
	lockKeys   map[string]uint64 // Put/Delete locks in range: key -> start ts
	lockTS     map[uint64]int    // multiset of their start ts
}

func (ds *downstream) stop() bool {
	for {
		s := ds.state.Load()
		if s == stateStopped {
			return false
		}
		if ds.state.CompareAndSwap(s, stateStopped) {
			return true
		}
	}
}

func (ds *downstream) contains(key []byte) bool { return keyInRange(key, ds.rawStart, ds.rawEnd) }

// takesLockRows reports whether committed Lock records of its region reach
// ds as degenerate UNKNOWN rows.
func (ds *downstream) takesLockRows() bool { return ds.coversRegion || ds.observedFromMin }

func (ds *downstream) addLock(key []byte, ts uint64) {
	if old, ok := ds.lockKeys[string(key)]; ok {
		if old == ts {
			return
		}
		ds.dropTS(old)
	}
	ds.lockKeys[string(key)] = ts
	ds.lockTS[ts]++
}

func (ds *downstream) removeLock(key []byte, ts uint64) {
	if old, ok := ds.lockKeys[string(key)]; ok && old == ts {
		delete(ds.lockKeys, string(key))
		ds.dropTS(ts)
	}
}

func (ds *downstream) dropTS(ts uint64) {
	if ds.lockTS[ts] <= 1 {
		delete(ds.lockTS, ts)
	} else {
		ds.lockTS[ts]--
	}
}

func (ds *downstream) minLock() uint64 {
	m := uint64(math.MaxUint64)
	for ts := range ds.lockTS {
		m = min(m, ts)
	}
	return m
}
