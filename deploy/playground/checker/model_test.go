package checker

import (
	"fmt"
	"slices"
	"strings"

	"github.com/pingcap/kvproto/pkg/cdcpb"
	"github.com/pingcap/kvproto/pkg/errorpb"
)

// A small model of a TiKV CDC endpoint that produces legal streams from a
// byte string, for the fuzz test. It has 12 keys of one table in 3 regions
// (4 handles each), a TSO, Percolator locks and committed versions, and up
// to 3 connections of random version and multiplexing. Every commit takes a
// fresh ts above everything reported so far, so any resolved ts up to the
// current TSO is legal; the model still holds resolved ts at the smallest
// lock start_ts like TiKV, to make the streams realistic.

const (
	modelKeys     = 12
	modelRegions  = 3
	keysPerRegion = modelKeys / modelRegions
	maxModelSteps = 300
)

// src hands out fuzz bytes as decisions; exhausted, it answers 0.
type src struct {
	data []byte
	pos  int
}

func (s *src) more() bool { return s.pos < len(s.data) }

func (s *src) byte() byte {
	if s.pos >= len(s.data) {
		return 0
	}
	b := s.data[s.pos]
	s.pos++
	return b
}

func (s *src) intn(n int) int {
	if n <= 1 {
		return 0
	}
	return int(s.byte()) % n
}

func (s *src) bool() bool { return s.byte()&1 == 1 }

type modelConn struct {
	id      uint64
	version string
	mux     bool
	compat  bool
}

type modelLock struct {
	start uint64
	op    cdcpb.Event_Row_OpType
	value []byte
}

type modelVersion struct {
	start, commit uint64
	op            cdcpb.Event_Row_OpType
	value         []byte
}

type modelSub struct {
	id          int
	conn        *modelConn
	req, region uint64
	checkpoint  uint64
	scan        []*cdcpb.Event_Row // not yet sent; INITIALIZED last
	initialized bool
	ended       bool
	advanced    uint64
	endTS       uint64
	regOp       int
	initOp      int // op that carried INITIALIZED, -1 if none
	endOp       int // op that carried the Error, -1 if none
	received    []*cdcpb.Event_Row
}

func (s *modelSub) String() string {
	return fmt.Sprintf("sub#%d(conn %d req %d region %d cp %d)", s.id, s.conn.id, s.req, s.region, s.checkpoint)
}

type deliveryKind int

const (
	dRow deliveryKind = iota
	dResolved
	dError
)

// delivery locates one thing sent to one subscription: ops[op], its
// Events[ev] (-1 for a batched resolved ts) and Entries[row].
type delivery struct {
	kind        deliveryKind
	op, ev, row int
	sub         *modelSub
	r           *cdcpb.Event_Row
	ts          uint64
}

type model struct {
	s          *src
	tso        uint64
	conns      []*modelConn
	locks      map[int64]*modelLock
	versions   map[int64][]modelVersion
	history    []Change
	subs       []*modelSub
	ops        []step
	deliveries []delivery
}

func regionOf(h int64) uint64 { return uint64(h/keysPerRegion) + 1 }

func regionBounds(region uint64) (start, end []byte) {
	first := int64(region-1) * keysPerRegion
	start, end = tableStart, tableEnd
	if region > 1 {
		start = enc(tk(first))
	}
	if region < modelRegions {
		end = enc(tk(first + keysPerRegion))
	}
	return start, end
}

func generate(data []byte) *model {
	m := &model{
		s:        &src{data: data},
		tso:      100,
		locks:    make(map[int64]*modelLock),
		versions: make(map[int64][]modelVersion),
	}
	n := 1 + m.s.intn(3)
	for i := range n {
		c := &modelConn{id: uint64(i + 1), mux: m.s.bool()}
		switch m.s.intn(4) {
		case 0:
			c.version = ""
		case 1:
			c.version = "4.0.7"
		default:
			c.version = modernVersion
		}
		c.compat = compatMode(c.version)
		if c.mux {
			m.ops = append(m.ops, Mux(c.id, true))
		}
		m.conns = append(m.conns, c)
	}
	for i := 0; i < maxModelSteps && m.s.more(); i++ {
		m.step()
	}
	m.finish()
	return m
}

func (m *model) step() {
	switch m.s.intn(16) {
	case 0, 1:
		m.register()
	case 2, 3, 4:
		m.drain(1 + m.s.intn(4))
	case 5, 6:
		m.prewrite()
	case 7, 8:
		m.commit()
	case 9:
		m.rollback()
	case 10, 11:
		m.onePC()
	case 12, 13:
		m.tick()
	case 14:
		m.regionError()
	case 15:
		m.deregister()
	}
}

func (m *model) finish() {
	for _, sub := range m.live() {
		for len(sub.scan) > 0 {
			m.drainSub(sub, len(sub.scan))
		}
	}
	m.tick()
	for _, sub := range m.live() {
		sub.endTS = m.tso
	}
	for _, c := range m.conns {
		m.ops = append(m.ops, Close(c.id))
	}
}

func (m *model) live() []*modelSub {
	var out []*modelSub
	for _, s := range m.subs {
		if !s.ended {
			out = append(out, s)
		}
	}
	return out
}

func (m *model) emit(conn uint64, ev *cdcpb.ChangeDataEvent) int {
	m.ops = append(m.ops, EC(conn, ev))
	return len(m.ops) - 1
}

func (m *model) request(conn *modelConn, req *cdcpb.ChangeDataRequest) int {
	req.Header.TicdcVersion = conn.version
	m.ops = append(m.ops, RC(conn.id, req))
	return len(m.ops) - 1
}

func (m *model) register() {
	conn := m.conns[m.s.intn(len(m.conns))]
	region := uint64(1 + m.s.intn(modelRegions))
	req := uint64(1)
	if conn.mux {
		req += uint64(m.s.intn(2))
	}
	start, end := regionBounds(region)
	for _, s := range m.live() {
		if s.conn == conn && s.req == req && s.region == region {
			m.request(conn, regV(modernVersion, req, region, s.checkpoint, start, end))
			m.emit(conn.id, m.rejection(req, region, true))
			return
		}
	}
	var checkpoint uint64
	switch m.s.intn(3) {
	case 0:
		checkpoint = m.tso
	case 1:
		checkpoint = m.tso - uint64(m.s.intn(int(m.tso-90)))
	case 2:
		// A re-subscription resumes from what the last generation resolved.
		for _, s := range m.subs {
			if s.conn == conn && s.region == region {
				checkpoint = s.advanced
			}
		}
	}
	sub := &modelSub{id: len(m.subs), conn: conn, req: req, region: region, checkpoint: checkpoint, initOp: -1, endOp: -1}
	first := int64(region-1) * keysPerRegion
	for h := first; h < first+keysPerRegion; h++ {
		if l := m.locks[h]; l != nil {
			sub.scan = append(sub.scan, &cdcpb.Event_Row{Type: cdcpb.Event_PREWRITE, Key: tk(h), StartTs: l.start, OpType: l.op, Value: l.value})
		}
		vs := m.versions[h]
		for i := len(vs) - 1; i >= 0 && vs[i].commit > checkpoint; i-- {
			v := vs[i]
			sub.scan = append(sub.scan, &cdcpb.Event_Row{Type: cdcpb.Event_COMMITTED, Key: tk(h), StartTs: v.start, CommitTs: v.commit, OpType: v.op, Value: v.value})
		}
	}
	sub.scan = append(sub.scan, initRow())
	sub.regOp = m.request(conn, regV(modernVersion, req, region, checkpoint, start, end))
	m.subs = append(m.subs, sub)
	if m.s.intn(8) == 0 {
		m.end(sub, m.rejection(req, region, false))
	}
}

// rejection is the Error answering a Register that is refused before it
// starts (spec §2.2): a duplicate, or a check TiKV runs before that one.
func (m *model) rejection(req, region uint64, live bool) *cdcpb.ChangeDataEvent {
	n := 3
	if live {
		n = 4
	}
	var e cdcpb.Error
	switch m.s.intn(n) {
	case 0:
		e.ServerIsBusy = &errorpb.ServerIsBusy{Reason: "too many pending incremental scans"}
	case 1:
		e.ClusterIdMismatch = &cdcpb.ClusterIDMismatch{Current: 1, Request: 2}
	case 2:
		e.Compatibility = &cdcpb.Compatibility{RequiredVersion: "6.2.0"}
	default:
		e.DuplicateRequest = &cdcpb.DuplicateRequest{RegionId: region}
	}
	return msg(errEvent(req, region, &e))
}

func (m *model) drain(n int) {
	var scanning []*modelSub
	for _, s := range m.live() {
		if len(s.scan) > 0 {
			scanning = append(scanning, s)
		}
	}
	if len(scanning) > 0 {
		m.drainSub(scanning[m.s.intn(len(scanning))], n)
	}
}

func (m *model) drainSub(sub *modelSub, n int) {
	n = min(n, len(sub.scan))
	batch := sub.scan[:n]
	sub.scan = sub.scan[n:]
	op := m.emit(sub.conn.id, rows(sub.req, sub.region, batch...))
	for i, r := range batch {
		m.deliverRow(sub, op, 0, i, r)
	}
}

func (m *model) deliverRow(sub *modelSub, op, ev, row int, r *cdcpb.Event_Row) {
	m.deliveries = append(m.deliveries, delivery{kind: dRow, op: op, ev: ev, row: row, sub: sub, r: r})
	sub.received = append(sub.received, r)
	if r.Type == cdcpb.Event_INITIALIZED {
		sub.initialized = true
		sub.initOp = op
	}
}

// fanout sends a realtime row to every subscription observing its key,
// sometimes packing one connection's events into one message.
func (m *model) fanout(h int64, r *cdcpb.Event_Row) {
	pack := m.s.bool()
	for _, c := range m.conns {
		var subs []*modelSub
		for _, s := range m.live() {
			if s.conn == c && s.region == regionOf(h) {
				subs = append(subs, s)
			}
		}
		if len(subs) == 0 {
			continue
		}
		if pack {
			var evs []*cdcpb.Event
			for _, s := range subs {
				evs = append(evs, entries(s.req, s.region, r))
			}
			op := m.emit(c.id, msg(evs...))
			for i, s := range subs {
				m.deliverRow(s, op, i, 0, r)
			}
			continue
		}
		for _, s := range subs {
			m.deliverRow(s, m.emit(c.id, rows(s.req, s.region, r)), 0, 0, r)
		}
	}
}

func (m *model) pickHandle(locked bool) (int64, bool) {
	var hs []int64
	for h := range int64(modelKeys) {
		if (m.locks[h] != nil) == locked {
			hs = append(hs, h)
		}
	}
	if len(hs) == 0 {
		return 0, false
	}
	return hs[m.s.intn(len(hs))], true
}

func (m *model) newValue(op cdcpb.Event_Row_OpType) []byte {
	if op == cdcpb.Event_Row_DELETE {
		return nil
	}
	return []byte(fmt.Sprintf("v%d", m.tso))
}

func (m *model) randomOp() cdcpb.Event_Row_OpType {
	if m.s.intn(4) == 0 {
		return cdcpb.Event_Row_DELETE
	}
	return cdcpb.Event_Row_PUT
}

func (m *model) prewrite() {
	h, ok := m.pickHandle(false)
	if !ok {
		return
	}
	m.tso++
	op := m.randomOp()
	l := &modelLock{start: m.tso, op: op, value: m.newValue(op)}
	m.locks[h] = l
	m.fanout(h, &cdcpb.Event_Row{Type: cdcpb.Event_PREWRITE, Key: tk(h), StartTs: l.start, OpType: op, Value: l.value})
}

func (m *model) commit() {
	h, ok := m.pickHandle(true)
	if !ok {
		return
	}
	l := m.locks[h]
	delete(m.locks, h)
	m.tso++
	r := &cdcpb.Event_Row{Type: cdcpb.Event_COMMIT, Key: tk(h), StartTs: l.start, CommitTs: m.tso, OpType: l.op}
	if m.s.bool() {
		r.Value = l.value // a short value travels with the commit
	}
	m.addVersion(h, modelVersion{start: l.start, commit: m.tso, op: l.op, value: l.value})
	m.fanout(h, r)
}

func (m *model) rollback() {
	h, ok := m.pickHandle(true)
	if !ok {
		return
	}
	l := m.locks[h]
	delete(m.locks, h)
	m.fanout(h, &cdcpb.Event_Row{Type: cdcpb.Event_ROLLBACK, Key: tk(h), StartTs: l.start})
}

func (m *model) onePC() {
	h, ok := m.pickHandle(false)
	if !ok {
		return
	}
	m.tso++
	start := m.tso
	m.tso++
	op := m.randomOp()
	v := modelVersion{start: start, commit: m.tso, op: op, value: m.newValue(op)}
	m.addVersion(h, v)
	m.fanout(h, &cdcpb.Event_Row{Type: cdcpb.Event_COMMITTED, Key: tk(h), StartTs: v.start, CommitTs: v.commit, OpType: op, Value: v.value})
}

func (m *model) addVersion(h int64, v modelVersion) {
	m.versions[h] = append(m.versions[h], v)
	m.history = append(m.history, Change{Key: tk(h), StartTS: v.start, CommitTS: v.commit, Op: v.op, Value: v.value})
}

// tick is one resolved-ts round: per initialised subscription (some skipped,
// as if leadership was not confirmed) advance to min(TSO, locks in range),
// then send per connection, per request_id when multiplexing, in batches
// carrying the batch minimum — or one legacy event per region in compat mode.
func (m *model) tick() {
	t := m.tso
	for _, c := range m.conns {
		groups := map[uint64][]*modelSub{}
		var keys []uint64
		for _, s := range m.live() {
			if s.conn != c || !s.initialized || m.s.intn(4) == 0 {
				continue
			}
			cand := t
			for h, l := range m.locks {
				if regionOf(h) == s.region {
					cand = min(cand, l.start)
				}
			}
			s.advanced = max(s.advanced, cand)
			g := uint64(0)
			if c.mux {
				g = s.req
			}
			if _, ok := groups[g]; !ok {
				keys = append(keys, g)
			}
			groups[g] = append(groups[g], s)
		}
		for _, g := range keys {
			m.sendResolved(c, g, groups[g])
		}
	}
}

func (m *model) sendResolved(c *modelConn, req uint64, subs []*modelSub) {
	if c.compat {
		var evs []*cdcpb.Event
		for _, s := range subs {
			evs = append(evs, legacyRtsEvent(s.req, s.region, s.advanced))
		}
		op := m.emit(c.id, msg(evs...))
		for i, s := range subs {
			m.deliveries = append(m.deliveries, delivery{kind: dResolved, op: op, ev: i, sub: s, ts: s.advanced})
		}
		return
	}
	slices.SortStableFunc(subs, func(a, b *modelSub) int { return cmpU64(a.advanced, b.advanced) })
	for len(subs) > 0 {
		n := min(len(subs), 1+m.s.intn(3))
		batch := subs[:n]
		subs = subs[n:]
		ts := batch[0].advanced
		var regions []uint64
		for _, s := range batch {
			regions = append(regions, s.region)
			ts = min(ts, s.advanced)
		}
		op := m.emit(c.id, rts(req, ts, regions...))
		for _, s := range batch {
			m.deliveries = append(m.deliveries, delivery{kind: dResolved, op: op, ev: -1, sub: s, ts: ts})
		}
	}
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (m *model) end(s *modelSub, ev *cdcpb.ChangeDataEvent) {
	op := m.emit(s.conn.id, ev)
	m.deliveries = append(m.deliveries, delivery{kind: dError, op: op, sub: s})
	s.ended, s.endOp, s.endTS, s.scan = true, op, m.tso, nil
}

func (m *model) regionError() {
	live := m.live()
	if len(live) == 0 {
		return
	}
	s := live[m.s.intn(len(live))]
	if m.s.bool() {
		m.end(s, epochErr(s.req, s.region))
	} else {
		m.end(s, notFoundErr(s.req, s.region))
	}
}

func (m *model) deregister() {
	live := m.live()
	if len(live) == 0 {
		return
	}
	s := live[m.s.intn(len(live))]
	if m.s.intn(3) > 0 {
		m.request(s.conn, dereg(s.req, s.region))
		m.end(s, notFoundErr(s.req, s.region))
		return
	}
	m.request(s.conn, dereg(s.req, 0))
	for _, o := range live {
		if o.conn == s.conn && o.req == s.req {
			m.end(o, notFoundErr(o.req, o.region))
		}
	}
}

// resolvedFor is the resolved ts message a subscription's connection would
// carry for it.
func resolvedFor(s *modelSub, ts uint64) *cdcpb.ChangeDataEvent {
	switch {
	case s.conn.compat:
		return legacyRts(s.req, s.region, ts)
	case s.conn.mux:
		return rts(s.req, ts, s.region)
	}
	return rts(0, ts, s.region)
}

func (m *model) dump(ops []step) string {
	var b strings.Builder
	for i, s := range ops {
		fmt.Fprintf(&b, "%4d conn %d: %s\n", i, s.conn, describe(s))
	}
	return b.String()
}

func describe(s step) string {
	switch {
	case s.mux != nil:
		return fmt.Sprintf("multiplexing=%v", *s.mux)
	case s.close:
		return "close"
	case s.req != nil:
		kind := "register"
		if s.req.GetDeregister() != nil {
			kind = "deregister"
		}
		return fmt.Sprintf("%s req %d region %d cp %d version %q", kind, s.req.RequestId, s.req.RegionId, s.req.CheckpointTs, s.req.GetHeader().GetTicdcVersion())
	}
	var parts []string
	for _, e := range s.ev.Events {
		switch p := e.Event.(type) {
		case *cdcpb.Event_Entries_:
			var rs []string
			for _, r := range p.Entries.Entries {
				rs = append(rs, fmtRow(r))
			}
			parts = append(parts, fmt.Sprintf("[req %d region %d: %s]", e.RequestId, e.RegionId, strings.Join(rs, "; ")))
		case *cdcpb.Event_Error:
			parts = append(parts, fmt.Sprintf("[req %d region %d: error %s]", e.RequestId, e.RegionId, errKind(p.Error)))
		case *cdcpb.Event_ResolvedTs:
			parts = append(parts, fmt.Sprintf("[req %d region %d: legacy resolved %d]", e.RequestId, e.RegionId, p.ResolvedTs))
		default:
			parts = append(parts, fmt.Sprintf("[req %d region %d: %T]", e.RequestId, e.RegionId, e.Event))
		}
	}
	if r := s.ev.ResolvedTs; r != nil {
		parts = append(parts, fmt.Sprintf("resolved %d req %d regions %v", r.Ts, r.RequestId, r.Regions))
	}
	return strings.Join(parts, " ")
}
