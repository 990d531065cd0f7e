package placement

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// Role is a stage role a pipeline needs one member of.
type Role string

// The stage roles, as members list them in their Roles.
const (
	RolePuller   Role = "puller"
	RoleSorter   Role = "sorter"
	RoleEncoder  Role = "encoder"
	RoleProducer Role = "producer"
)

const numRoles = 4

// stageRoles fixes the order roles are placed and balanced in: the plan
// depends on it, and must not depend on anything that varies between
// owners.
var stageRoles = [numRoles]Role{RolePuller, RoleSorter, RoleEncoder, RoleProducer}

// defaultNamespace is what an empty namespace means: it must equal
// store.DefaultNamespace, under which the store keys such a record, so a
// record written with "" and a pipeline named "default" are one pipeline
// (a test checks the two agree).
const defaultNamespace = "default"

// Member is a live member: its member key exists, so its lease is alive.
type Member struct {
	ID   string
	Addr string
	// Roles it runs; names that are not stage roles (coordinator) are
	// ignored.
	Roles []string
}

// Pipeline is a pipeline that should run.
type Pipeline struct {
	Namespace  string
	Changefeed string
	ID         int64
	Spans      []*pb.Span
	Schema     string
	Table      string
	TableID    int64
	// PDAddrs is the upstream the puller reads from.
	PDAddrs []string
	// Checkpoint is where a (re)assignment starts: the pipeline's last
	// written checkpoint, or the changefeed's checkpoint for a pipeline
	// that never ran.
	Checkpoint uint64
	// LastEpoch is the highest epoch the pipeline is known to have run at
	// (its progress record's), 0 if none. A pipeline that comes back after
	// a pause has no assignment record, but stages still remember its old
	// epoch and would refuse a lower one as a zombie.
	LastEpoch uint64
	// Spread, when not 0, names a group whose pipelines are placed on
	// different members of each role where there are enough: the pieces
	// of a table split to spread its load. A new or moved pipeline of a
	// group goes to the member carrying fewest of the group, then the
	// least loaded; balance moves do not look at groups.
	Spread int64
}

// Key names a pipeline; an empty namespace is the default one.
type Key struct {
	Namespace  string
	Changefeed string
	ID         int64
}

func (k Key) String() string { return fmt.Sprintf("%s/%s/%d", k.Namespace, k.Changefeed, k.ID) }

func (k Key) compare(o Key) int {
	if c := cmp.Compare(k.Namespace, o.Namespace); c != 0 {
		return c
	}
	if c := cmp.Compare(k.Changefeed, o.Changefeed); c != 0 {
		return c
	}
	return cmp.Compare(k.ID, o.ID)
}

func keyOf(namespace, changefeed string, id int64) Key {
	if namespace == "" {
		namespace = defaultNamespace
	}
	return Key{Namespace: namespace, Changefeed: changefeed, ID: id}
}

// RecordKey is the pipeline a record belongs to.
func RecordKey(a *pb.PipelineAssignment) Key {
	return keyOf(a.GetNamespace(), a.GetChangefeedId(), a.GetPipelineId())
}

// Key is the pipeline's key.
func (p *Pipeline) Key() Key { return keyOf(p.Namespace, p.Changefeed, p.ID) }

// Input is everything a placement decision depends on.
type Input struct {
	Pipelines []Pipeline
	Members   []Member
	// Current is every assignment record in etcd.
	Current []*pb.PipelineAssignment
	// MaxMoves bounds how many running, healthy pipelines one call may
	// restart elsewhere for balance (0: none). Rewrites forced by a gone
	// member, a new address or new spans are not counted: they must
	// happen whatever the budget.
	MaxMoves int
}

// Op is one assignment write. Exactly one of Assign and Unassign is set.
type Op struct {
	// Assign is the record to put, epoch set.
	Assign *pb.PipelineAssignment
	// From is the producer member the pipeline leaves ("" if it stays):
	// its key must be deleted in the same transaction (store.Assign).
	From string
	// Unassign is the record to delete, under its producer member and
	// RecordKey(Unassign).Namespace: store.Unassign, unlike store.Assign,
	// does not turn an empty namespace into the default one.
	Unassign *pb.PipelineAssignment
	// Reason says why, for logs: "new", "member gone: m1",
	// "m1 no longer runs sorter", "address changed: m1", "spans changed",
	// "upstream changed", "balance", "removed", "duplicate"; several
	// joined by "; ".
	Reason string
}

// Unplaced is a wanted pipeline Plan could not place; its record, if it
// has one, is left as it is.
type Unplaced struct {
	Pipeline Key
	Reason   string
}

// Result is a placement decision.
type Result struct {
	// Ops must be applied in order: deletions come first, so a deleted
	// duplicate record never removes a record this plan puts under the
	// same producer.
	Ops []Op
	// Unplaced are sorted by key.
	Unplaced []Unplaced
}

// holder is a live member in one role.
type holder struct {
	id, addr string
	load     int
	pos      [2]int // position in the role's min (0) and max (1) heap
	// Balance candidates, in key order, taken from the end: free ones are
	// rewritten this round anyway, paid ones would restart a running
	// pipeline.
	free, paid []*slot
}

// slot is a wanted pipeline during planning.
type slot struct {
	p       *Pipeline
	key     Key
	rec     *pb.PipelineAssignment
	at      [numRoles]*holder
	placed  bool
	reasons []string // why the record must be rewritten, balance aside
	moved   bool     // a balance move changed one of its members
}

// rewritten reports whether the slot's record is written this round, so
// that moving it more costs no extra restart.
func (s *slot) rewritten() bool { return len(s.reasons) > 0 || s.moved }

func recordMember(a *pb.PipelineAssignment, r int) string {
	switch stageRoles[r] {
	case RolePuller:
		return a.GetPullerMember()
	case RoleSorter:
		return a.GetSorterMember()
	case RoleEncoder:
		return a.GetEncoderMember()
	default:
		return a.GetProducerMember()
	}
}

// routeAddr is the address the record's route holds for role r; the
// producer has none, nobody dials it.
func routeAddr(a *pb.PipelineAssignment, r int) (string, bool) {
	switch stageRoles[r] {
	case RolePuller:
		return a.GetRoute().GetPullerAddr(), true
	case RoleSorter:
		return a.GetRoute().GetSorterAddr(), true
	case RoleEncoder:
		return a.GetRoute().GetEncoderAddr(), true
	default:
		return "", false
	}
}

// Plan decides the assignment writes that bring Current in line with
// Pipelines and Members (see the package comment for the rules). It fails
// only on malformed input; a pipeline that cannot be placed is reported in
// Result.Unplaced and the rest are planned.
func Plan(in Input) (Result, error) {
	if in.MaxMoves < 0 {
		return Result{}, fmt.Errorf("placement: MaxMoves is %d, must not be negative", in.MaxMoves)
	}
	roles, known, err := indexMembers(in.Members)
	if err != nil {
		return Result{}, err
	}
	slots, byKey, err := indexPipelines(in.Pipelines)
	if err != nil {
		return Result{}, err
	}
	var res Result
	drops, err := attachRecords(in.Current, byKey)
	if err != nil {
		return Result{}, err
	}
	res.Ops = drops

	// Sticky records count before any choice is made, so a new pipeline
	// early in key order does not land on a member that later turns out
	// to carry most of the old ones.
	for _, s := range slots {
		var missing []string
		for r := range numRoles {
			if s.rec != nil {
				s.at[r] = roles[r].live[recordMember(s.rec, r)]
			}
			if s.at[r] == nil && len(roles[r].heap.h) == 0 {
				missing = append(missing, string(stageRoles[r]))
			}
		}
		if len(missing) > 0 {
			// Its live members' load is not counted: nothing runs the
			// pipeline while a stage is missing, and balance must not
			// move a pipeline it cannot write.
			res.Unplaced = append(res.Unplaced, Unplaced{Pipeline: s.key, Reason: "no live " + strings.Join(missing, " or ") + " member"})
			continue
		}
		s.placed = true
		for r, h := range s.at {
			if h != nil {
				h.load++
				roles[r].count(s.p, h)
			}
		}
	}
	for r := range numRoles {
		roles[r].heap.init()
	}

	for _, s := range slots {
		if s.placed {
			place(s, &roles, known)
		}
	}
	balance(slots, &roles, in.MaxMoves)

	for _, s := range slots {
		if op, ok := emit(s); ok {
			res.Ops = append(res.Ops, op)
		}
	}
	return res, nil
}

type roleState struct {
	live map[string]*holder
	heap loadHeap // least loaded on top
	// spread counts, per Pipeline.Spread group, its pipelines on each
	// member.
	spread map[int64]map[*holder]int
}

// choose is the member a pipeline without one in role r goes to: the
// least loaded, or for a Spread group the one carrying fewest of it.
func (rs *roleState) choose(p *Pipeline) *holder {
	if p.Spread == 0 {
		return rs.heap.top()
	}
	group := rs.spread[p.Spread]
	best := rs.heap.top()
	for _, h := range rs.heap.h {
		if n, b := group[h], group[best]; n < b || n == b && (h.load < best.load || h.load == best.load && h.id < best.id) {
			best = h
		}
	}
	return best
}

// count notes that a pipeline of p's group runs on h.
func (rs *roleState) count(p *Pipeline, h *holder) {
	if p.Spread == 0 || h == nil {
		return
	}
	if rs.spread == nil {
		rs.spread = map[int64]map[*holder]int{}
	}
	if rs.spread[p.Spread] == nil {
		rs.spread[p.Spread] = map[*holder]int{}
	}
	rs.spread[p.Spread][h]++
}

func indexMembers(members []Member) (roles [numRoles]roleState, known map[string]bool, err error) {
	known = make(map[string]bool, len(members))
	for r := range numRoles {
		roles[r].live = make(map[string]*holder)
	}
	for i, m := range members {
		if m.ID == "" {
			return roles, nil, fmt.Errorf("placement: member %d (addr %q) has an empty id", i, m.Addr)
		}
		if known[m.ID] {
			return roles, nil, fmt.Errorf("placement: member %s is listed twice", m.ID)
		}
		known[m.ID] = true
		for _, name := range m.Roles {
			r := slices.Index(stageRoles[:], Role(name))
			if r < 0 || roles[r].live[m.ID] != nil {
				continue
			}
			h := &holder{id: m.ID, addr: m.Addr}
			roles[r].live[m.ID] = h
			roles[r].heap.h = append(roles[r].heap.h, h)
		}
	}
	return roles, known, nil
}

func indexPipelines(pipelines []Pipeline) ([]*slot, map[Key]*slot, error) {
	// One allocation for all: at 10k pipelines per tick, per-slot
	// allocations were most of the steady state's garbage.
	backing := make([]slot, len(pipelines))
	slots := make([]*slot, 0, len(pipelines))
	byKey := make(map[Key]*slot, len(pipelines))
	for i := range pipelines {
		p := &pipelines[i]
		if p.Changefeed == "" {
			return nil, nil, fmt.Errorf("placement: pipeline %d (index %d) has no changefeed", p.ID, i)
		}
		k := p.Key()
		if byKey[k] != nil {
			return nil, nil, fmt.Errorf("placement: pipeline %s is listed twice", k)
		}
		s := &backing[i]
		s.p, s.key = p, k
		byKey[k] = s
		slots = append(slots, s)
	}
	// Key order, not input order: an owner that builds the list from a map
	// must still get the plan its predecessor got.
	slices.SortFunc(slots, func(a, b *slot) int { return a.key.compare(b.key) })
	return slots, byKey, nil
}

// attachRecords gives each wanted pipeline its record and returns the
// deletions: records of pipelines no longer wanted, and all but the newest
// of several records of one pipeline (under different producers, which
// only a write outside the owner's fenced Assign can leave).
func attachRecords(current []*pb.PipelineAssignment, byKey map[Key]*slot) ([]Op, error) {
	var drops []Op
	for i, a := range current {
		if a == nil {
			return nil, fmt.Errorf("placement: current record %d is nil", i)
		}
		if a.GetChangefeedId() == "" {
			return nil, fmt.Errorf("placement: current record %d (pipeline %d) has no changefeed", i, a.GetPipelineId())
		}
		k := RecordKey(a)
		s := byKey[k]
		if s == nil {
			drops = append(drops, Op{Unassign: a, Reason: "removed"})
			continue
		}
		if s.rec == nil {
			s.rec = a
			continue
		}
		if s.rec.GetProducerMember() == a.GetProducerMember() {
			return nil, fmt.Errorf("placement: pipeline %s has two current records under producer %q", k, a.GetProducerMember())
		}
		keep, drop := s.rec, a
		if a.GetEpoch() > keep.GetEpoch() || a.GetEpoch() == keep.GetEpoch() && a.GetProducerMember() < keep.GetProducerMember() {
			keep, drop = a, keep
		}
		s.rec = keep
		drops = append(drops, Op{Unassign: drop, Reason: "duplicate"})
	}
	slices.SortFunc(drops, func(a, b Op) int {
		if c := RecordKey(a.Unassign).compare(RecordKey(b.Unassign)); c != 0 {
			return c
		}
		return cmp.Compare(a.Unassign.GetProducerMember(), b.Unassign.GetProducerMember())
	})
	return drops, nil
}

// place fills the roles a placed slot lacks with the least-loaded member
// and notes why its record must be rewritten.
func place(s *slot, roles *[numRoles]roleState, known map[string]bool) {
	if s.rec == nil {
		s.reasons = append(s.reasons, "new")
	}
	var gone, left, readdr []string
	for r := range numRoles {
		if h := s.at[r]; h != nil {
			if addr, ok := routeAddr(s.rec, r); ok && addr != h.addr && !slices.Contains(readdr, h.id) {
				readdr = append(readdr, h.id)
			}
			continue
		}
		if s.rec != nil {
			id := recordMember(s.rec, r)
			switch {
			case id == "":
				gone = append(gone, "(none)")
			case known[id]:
				left = append(left, id+" no longer runs "+string(stageRoles[r]))
			case !slices.Contains(gone, id):
				gone = append(gone, id)
			}
		}
		h := roles[r].choose(s.p)
		s.at[r] = h
		h.load++
		roles[r].heap.fix(h)
		roles[r].count(s.p, h)
	}
	if len(gone) > 0 {
		s.reasons = append(s.reasons, "member gone: "+strings.Join(gone, ", "))
	}
	s.reasons = append(s.reasons, left...)
	if len(readdr) > 0 {
		s.reasons = append(s.reasons, "address changed: "+strings.Join(readdr, ", "))
	}
	if s.rec == nil {
		return
	}
	if !sameSpans(s.rec.GetSpans(), s.p.Spans) {
		s.reasons = append(s.reasons, "spans changed")
	}
	if !slices.Equal(s.rec.GetRoute().GetPdAddrs(), s.p.PDAddrs) {
		s.reasons = append(s.reasons, "upstream changed")
	}
}

func sameSpans(a, b []*pb.Span) bool {
	return slices.EqualFunc(a, b, func(x, y *pb.Span) bool {
		return bytes.Equal(x.GetStartKey(), y.GetStartKey()) && bytes.Equal(x.GetEndKey(), y.GetEndKey())
	})
}

// balance moves pipelines from the most- to the least-loaded member of
// each role until they differ by at most one. Moving a pipeline that is
// rewritten anyway is free; other moves spend budget, and when it is gone
// only free moves are made.
//
// A move from the most to the least loaded of two members whose loads
// differ by two or more lowers the sum of squared loads, so the loop ends
// even on free moves alone.
func balance(slots []*slot, roles *[numRoles]roleState, budget int) {
	for r := range numRoles {
		rs := &roles[r]
		if len(rs.heap.h) < 2 {
			continue
		}
		for _, h := range rs.heap.h {
			h.free, h.paid = h.free[:0], h.paid[:0]
		}
		for _, s := range slots {
			if !s.placed {
				continue
			}
			if h := s.at[r]; s.rewritten() {
				h.free = append(h.free, s)
			} else {
				h.paid = append(h.paid, s)
			}
		}
		most := loadHeap{max: true, h: slices.Clone(rs.heap.h)}
		most.init()
		for {
			hi, lo := most.top(), rs.heap.top()
			if hi.load-lo.load <= 1 {
				break
			}
			s, paid := hi.take(budget > 0)
			if s == nil {
				break
			}
			if paid {
				budget--
			}
			// lo is not made a source of this role's moves: its load stays
			// within one of the minimum, which never falls, so it is never
			// the most loaded by two. No pipeline moves twice in a role, and
			// none moves back to where its record has it.
			s.at[r] = lo
			s.moved = true
			// One load change, then its fixes: fixing a position assumes
			// the rest of the heap is in order.
			hi.load--
			most.fix(hi)
			rs.heap.fix(hi)
			lo.load++
			most.fix(lo)
			rs.heap.fix(lo)
		}
	}
}

// take removes a balance candidate: a free one if any, else a paid one if
// allowed. The caller takes only from a member carrying two or more, so
// one is there. (A slot stacked as paid cannot turn free before it is
// taken: only a move in this role, which takes it, would rewrite it.)
func (h *holder) take(allowPaid bool) (s *slot, paid bool) {
	if n := len(h.free); n > 0 {
		s, h.free = h.free[n-1], h.free[:n-1]
		return s, false
	}
	if !allowPaid {
		return nil, false
	}
	n := len(h.paid)
	s, h.paid = h.paid[n-1], h.paid[:n-1]
	return s, true
}

// emit returns the write a slot needs, if any.
func emit(s *slot) (Op, bool) {
	if !s.placed || !s.rewritten() {
		return Op{}, false
	}
	p := s.p
	a := &pb.PipelineAssignment{
		Namespace:      p.Namespace,
		ChangefeedId:   p.Changefeed,
		PipelineId:     p.ID,
		Epoch:          p.LastEpoch + 1,
		StartTs:        p.Checkpoint,
		Spans:          make([]*pb.Span, len(p.Spans)),
		Route:          &pb.Route{PullerAddr: s.at[0].addr, SorterAddr: s.at[1].addr, EncoderAddr: s.at[2].addr, PdAddrs: slices.Clone(p.PDAddrs)},
		PullerMember:   s.at[0].id,
		SorterMember:   s.at[1].id,
		EncoderMember:  s.at[2].id,
		ProducerMember: s.at[3].id,
		SchemaName:     p.Schema,
		TableName:      p.Table,
		TableId:        p.TableID,
	}
	// The record outlives this call (the owner marshals it, tests keep it):
	// it must not share mutable spans with the caller's pipelines.
	for i, sp := range p.Spans {
		a.Spans[i] = proto.CloneOf(sp)
	}
	op := Op{Assign: a}
	reasons := s.reasons
	if s.rec != nil {
		a.Epoch = max(p.LastEpoch, s.rec.GetEpoch()) + 1
		// A checkpoint read before the record was written can lag its start
		// ts; starting below it would replay what was already delivered.
		a.StartTs = max(p.Checkpoint, s.rec.GetStartTs())
		if from := s.rec.GetProducerMember(); from != a.ProducerMember {
			op.From = from
		}
	}
	if s.moved {
		reasons = append(reasons[:len(reasons):len(reasons)], "balance")
	}
	op.Reason = strings.Join(reasons, "; ")
	return op, true
}

// loadHeap orders a role's members by load (ascending, or descending when
// max), then by id, and keeps each member's position so a load change is
// fixed in O(log n). The order is total, so the top does not depend on
// the order members were listed in.
type loadHeap struct {
	h   []*holder
	max bool
}

func (q *loadHeap) which() int {
	if q.max {
		return 1
	}
	return 0
}

func (q *loadHeap) less(i, j int) bool {
	a, b := q.h[i], q.h[j]
	if a.load != b.load {
		return (a.load < b.load) != q.max
	}
	return a.id < b.id
}

func (q *loadHeap) swap(i, j int) {
	q.h[i], q.h[j] = q.h[j], q.h[i]
	q.h[i].pos[q.which()] = i
	q.h[j].pos[q.which()] = j
}

func (q *loadHeap) init() {
	w := q.which()
	for i, h := range q.h {
		h.pos[w] = i
	}
	for i := len(q.h)/2 - 1; i >= 0; i-- {
		q.down(i)
	}
}

func (q *loadHeap) top() *holder { return q.h[0] }

func (q *loadHeap) fix(h *holder) {
	i := h.pos[q.which()]
	if !q.down(i) {
		q.up(i)
	}
}

func (q *loadHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !q.less(i, p) {
			return
		}
		q.swap(i, p)
		i = p
	}
}

// down sifts position i down and reports whether it moved.
func (q *loadHeap) down(i int) bool {
	start, n := i, len(q.h)
	for {
		c := 2*i + 1
		if c >= n {
			break
		}
		if r := c + 1; r < n && q.less(r, c) {
			c = r
		}
		if !q.less(c, i) {
			break
		}
		q.swap(i, c)
		i = c
	}
	return i > start
}
