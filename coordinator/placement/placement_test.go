package placement_test

import (
	"cmp"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/tidestream/tidestream/coordinator/placement"
	"github.com/tidestream/tidestream/coordinator/store"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

var allRoles = []placement.Role{placement.RolePuller, placement.RoleSorter, placement.RoleEncoder, placement.RoleProducer}

func member(id string, roles ...placement.Role) placement.Member {
	m := placement.Member{ID: id, Addr: id + ":8300"}
	for _, r := range roles {
		m.Roles = append(m.Roles, string(r))
	}
	return m
}

// servers are n `cdc server`-like members running every role.
func servers(n int) []placement.Member {
	var ms []placement.Member
	for i := range n {
		ms = append(ms, member(fmt.Sprintf("m%02d", i), allRoles...))
	}
	return ms
}

// perRole are n single-role members per role.
func perRole(n int) []placement.Member {
	var ms []placement.Member
	for _, r := range allRoles {
		for i := range n {
			ms = append(ms, member(fmt.Sprintf("%s%02d", r, i), r))
		}
	}
	return ms
}

func pipelines(cf string, n int) []placement.Pipeline {
	ps := make([]placement.Pipeline, n)
	for i := range ps {
		ps[i] = placement.Pipeline{
			Changefeed: cf, ID: int64(i + 1),
			Spans:  []*pb.Span{{StartKey: fmt.Appendf(nil, "t%d_", i), EndKey: fmt.Appendf(nil, "t%d`", i)}},
			Schema: "db", Table: fmt.Sprintf("t%d", i), TableID: int64(100 + i),
			PDAddrs: []string{"pd:2379"}, Checkpoint: 1000,
		}
	}
	return ps
}

// etcd plays the assignment keys: one record per (producer, pipeline),
// written the way the owner applies ops with store.Assign / Unassign.
type etcd map[string]*pb.PipelineAssignment

func etcdKey(producer string, k placement.Key) string { return producer + "|" + k.String() }

func (e etcd) apply(t testing.TB, ops []placement.Op) {
	t.Helper()
	for _, op := range ops {
		if a := op.Unassign; a != nil {
			k := etcdKey(a.GetProducerMember(), placement.RecordKey(a))
			require.Contains(t, e, k, "unassign of a record that is not there")
			delete(e, k)
			continue
		}
		a := op.Assign
		require.NotNil(t, a)
		if op.From != "" {
			require.NotEqual(t, op.From, a.GetProducerMember(), "From names the new producer")
			delete(e, etcdKey(op.From, placement.RecordKey(a)))
		}
		e[etcdKey(a.GetProducerMember(), placement.RecordKey(a))] = a
	}
}

func (e etcd) records() []*pb.PipelineAssignment {
	var out []*pb.PipelineAssignment
	for _, k := range slices.Sorted(maps.Keys(e)) {
		out = append(out, e[k])
	}
	return out
}

func (e etcd) byPipeline() map[placement.Key][]*pb.PipelineAssignment {
	out := map[placement.Key][]*pb.PipelineAssignment{}
	for _, a := range e {
		out[placement.RecordKey(a)] = append(out[placement.RecordKey(a)], a)
	}
	return out
}

func plan(t testing.TB, in placement.Input) placement.Result {
	t.Helper()
	res, err := placement.Plan(in)
	require.NoError(t, err)
	return res
}

// converge plans and applies until a plan makes no write, and returns the
// records.
func converge(t testing.TB, in placement.Input) etcd {
	t.Helper()
	e := etcd{}
	for _, a := range in.Current {
		e[etcdKey(a.GetProducerMember(), placement.RecordKey(a))] = a
	}
	for range 1000 {
		in.Current = e.records()
		res := plan(t, in)
		if len(res.Ops) == 0 {
			return e
		}
		e.apply(t, res.Ops)
	}
	t.Fatal("placement did not converge")
	return nil
}

func roleMember(a *pb.PipelineAssignment, r placement.Role) string {
	switch r {
	case placement.RolePuller:
		return a.GetPullerMember()
	case placement.RoleSorter:
		return a.GetSorterMember()
	case placement.RoleEncoder:
		return a.GetEncoderMember()
	default:
		return a.GetProducerMember()
	}
}

// loads counts pipelines per member in role r, including live members of
// the role that carry none.
func loads(recs []*pb.PipelineAssignment, members []placement.Member, r placement.Role) map[string]int {
	l := map[string]int{}
	for _, m := range members {
		if slices.Contains(m.Roles, string(r)) {
			l[m.ID] = 0
		}
	}
	for _, a := range recs {
		l[roleMember(a, r)]++
	}
	return l
}

func spread(l map[string]int) int {
	if len(l) == 0 {
		return 0
	}
	v := slices.Collect(maps.Values(l))
	return slices.Max(v) - slices.Min(v)
}

func requireBalanced(t testing.TB, recs []*pb.PipelineAssignment, members []placement.Member) {
	t.Helper()
	for _, r := range allRoles {
		l := loads(recs, members, r)
		require.LessOrEqual(t, spread(l), 1, "role %s loads %v", r, l)
	}
}

func assigns(ops []placement.Op) map[placement.Key]placement.Op {
	out := map[placement.Key]placement.Op{}
	for _, op := range ops {
		if op.Assign != nil {
			out[placement.RecordKey(op.Assign)] = op
		}
	}
	return out
}

func TestNewPlacementIsBalancedAndComplete(t *testing.T) {
	for _, tc := range []struct {
		name      string
		members   []placement.Member
		pipelines int
	}{
		{"one server", servers(1), 5},
		{"three servers", servers(3), 100},
		{"per role, uneven count", perRole(7), 50},
		{"fewer pipelines than members", perRole(5), 3},
		{"mixed roles", []placement.Member{
			member("a", placement.RolePuller, placement.RoleSorter),
			member("b", placement.RoleSorter, placement.RoleEncoder, placement.RoleProducer),
			member("c", placement.RolePuller, placement.RoleProducer),
			member("d", placement.RoleEncoder),
			{ID: "coord", Addr: "coord:1", Roles: []string{"coordinator"}},
		}, 31},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps := pipelines("cf", tc.pipelines)
			res := plan(t, placement.Input{Pipelines: ps, Members: tc.members})
			require.Empty(t, res.Unplaced)
			require.Len(t, res.Ops, len(ps))
			addrs := map[string]string{}
			for _, m := range tc.members {
				addrs[m.ID] = m.Addr
			}
			var recs []*pb.PipelineAssignment
			for i, op := range res.Ops {
				a := op.Assign
				require.NotNil(t, a)
				require.Equal(t, "new", op.Reason)
				require.Empty(t, op.From)
				p := ps[i] // key order is id order here
				require.Equal(t, p.ID, a.GetPipelineId())
				require.EqualValues(t, 1, a.GetEpoch())
				require.Equal(t, p.Checkpoint, a.GetStartTs())
				require.True(t, proto.Equal(p.Spans[0], a.GetSpans()[0]))
				require.Equal(t, p.PDAddrs, a.GetRoute().GetPdAddrs())
				require.Equal(t, p.Table, a.GetTableName())
				require.Equal(t, p.TableID, a.GetTableId())
				require.Equal(t, addrs[a.GetPullerMember()], a.GetRoute().GetPullerAddr())
				require.Equal(t, addrs[a.GetSorterMember()], a.GetRoute().GetSorterAddr())
				require.Equal(t, addrs[a.GetEncoderMember()], a.GetRoute().GetEncoderAddr())
				recs = append(recs, a)
			}
			requireBalanced(t, recs, tc.members)
		})
	}
}

func TestSteadyStateAndOwnerChangeWriteNothing(t *testing.T) {
	members := perRole(3)
	in := placement.Input{Pipelines: pipelines("cf", 40), Members: members, MaxMoves: 5}
	e := converge(t, in)
	in.Current = e.records()
	require.Empty(t, plan(t, in).Ops, "steady state")

	// A new owner reads the same records in another order and builds its
	// pipeline and member lists another way; checkpoints moved on.
	rng := rand.New(rand.NewPCG(1, 2))
	in2 := placement.Input{
		Pipelines: slices.Clone(in.Pipelines),
		Members:   slices.Clone(members),
		Current:   slices.Clone(in.Current),
		MaxMoves:  5,
	}
	for i := range in2.Pipelines {
		in2.Pipelines[i].Checkpoint = 5000
		in2.Pipelines[i].LastEpoch = 1
	}
	rng.Shuffle(len(in2.Pipelines), func(i, j int) { in2.Pipelines[i], in2.Pipelines[j] = in2.Pipelines[j], in2.Pipelines[i] })
	rng.Shuffle(len(in2.Members), func(i, j int) { in2.Members[i], in2.Members[j] = in2.Members[j], in2.Members[i] })
	rng.Shuffle(len(in2.Current), func(i, j int) { in2.Current[i], in2.Current[j] = in2.Current[j], in2.Current[i] })
	require.Empty(t, plan(t, in2).Ops, "owner change")
}

func TestMemberGoneMovesOnlyItsPipelines(t *testing.T) {
	for _, tc := range []struct {
		name string
		gone string
		role placement.Role // the role the gone member ran; "" = all
	}{
		{"producer", "producer01", placement.RoleProducer},
		{"puller", "puller00", placement.RolePuller},
		{"encoder", "encoder02", placement.RoleEncoder},
	} {
		t.Run(tc.name, func(t *testing.T) {
			members := perRole(3)
			ps := pipelines("cf", 60)
			e := converge(t, placement.Input{Pipelines: ps, Members: members})
			before := e.byPipeline()
			for i := range ps {
				ps[i].Checkpoint = 2000 + uint64(i)
			}
			alive := slices.DeleteFunc(slices.Clone(members), func(m placement.Member) bool { return m.ID == tc.gone })
			in := placement.Input{Pipelines: ps, Members: alive, Current: e.records()}
			res := plan(t, in)
			require.Empty(t, res.Unplaced)
			got := assigns(res.Ops)
			require.Len(t, res.Ops, len(got), "only assigns")
			for _, p := range ps {
				old := before[p.Key()][0]
				op, moved := got[p.Key()]
				if roleMember(old, tc.role) != tc.gone {
					require.False(t, moved, "pipeline %d did not run on %s", p.ID, tc.gone)
					continue
				}
				require.True(t, moved, "pipeline %d ran on %s", p.ID, tc.gone)
				a := op.Assign
				require.Equal(t, "member gone: "+tc.gone, op.Reason)
				require.Equal(t, old.GetEpoch()+1, a.GetEpoch())
				require.Equal(t, p.Checkpoint, a.GetStartTs())
				for _, r := range allRoles {
					if r == tc.role {
						require.NotEqual(t, tc.gone, roleMember(a, r))
					} else {
						require.Equal(t, roleMember(old, r), roleMember(a, r), "live %s kept", r)
					}
				}
				if tc.role == placement.RoleProducer {
					require.Equal(t, tc.gone, op.From)
				} else {
					require.Empty(t, op.From)
				}
			}
			e.apply(t, res.Ops)
			requireBalanced(t, e.records(), alive)
		})
	}
}

// A repaired pipeline restarts anyway, so balance may move its other
// stages for free even with no budget: the whole chain re-subscribes.
func TestRepairRebalancesForFree(t *testing.T) {
	// Every pipeline sits on puller a; producer x dies.
	var current []*pb.PipelineAssignment
	ps := pipelines("cf", 10)
	for _, p := range ps {
		current = append(current, &pb.PipelineAssignment{
			ChangefeedId: "cf", PipelineId: p.ID, Epoch: 3, StartTs: 900, Spans: p.Spans,
			Route:        &pb.Route{PullerAddr: "a:8300", SorterAddr: "s:8300", EncoderAddr: "e:8300", PdAddrs: p.PDAddrs},
			PullerMember: "a", SorterMember: "s", EncoderMember: "e", ProducerMember: "x",
		})
	}
	members := []placement.Member{
		member("a", placement.RolePuller), member("b", placement.RolePuller),
		member("s", placement.RoleSorter), member("e", placement.RoleEncoder),
		member("y", placement.RoleProducer),
	}
	res := plan(t, placement.Input{Pipelines: ps, Members: members, Current: current, MaxMoves: 0})
	require.Len(t, res.Ops, 10)
	var recs []*pb.PipelineAssignment
	for _, op := range res.Ops {
		require.Equal(t, "x", op.From)
		require.True(t, strings.HasPrefix(op.Reason, "member gone: x"), op.Reason)
		recs = append(recs, op.Assign)
	}
	requireBalanced(t, recs, members)
}

// Free moves come before paid ones, and need no budget: of ten pipelines
// piled on puller a, the five whose producer died move to the new puller
// b, the five running fine stay.
func TestFreeMovesFirst(t *testing.T) {
	ps := pipelines("cf", 10)
	var current []*pb.PipelineAssignment
	for _, p := range ps {
		producer := "y"
		if p.ID <= 5 {
			producer = "x"
		}
		current = append(current, &pb.PipelineAssignment{
			ChangefeedId: "cf", PipelineId: p.ID, Epoch: 1, StartTs: 900, Spans: p.Spans,
			Route:        &pb.Route{PullerAddr: "a:8300", SorterAddr: "s:8300", EncoderAddr: "e:8300", PdAddrs: p.PDAddrs},
			PullerMember: "a", SorterMember: "s", EncoderMember: "e", ProducerMember: producer,
		})
	}
	members := []placement.Member{
		member("a", placement.RolePuller), member("b", placement.RolePuller),
		member("s", placement.RoleSorter), member("e", placement.RoleEncoder),
		member("y", placement.RoleProducer),
	}
	res := plan(t, placement.Input{Pipelines: ps, Members: members, Current: current})
	require.Len(t, res.Ops, 5)
	for i, op := range res.Ops {
		require.EqualValues(t, i+1, op.Assign.GetPipelineId())
		require.Equal(t, "member gone: x; balance", op.Reason)
		require.Equal(t, "b", op.Assign.GetPullerMember())
		require.Equal(t, "b:8300", op.Assign.GetRoute().GetPullerAddr())
		require.Equal(t, "x", op.From)
	}

	// Without a dead producer nothing is free, and no budget means no move.
	members = append(members, member("x", placement.RoleProducer))
	require.Empty(t, plan(t, placement.Input{Pipelines: ps, Members: members, Current: current}).Ops)
	res = plan(t, placement.Input{Pipelines: ps, Members: members, Current: current, MaxMoves: 2})
	require.Len(t, res.Ops, 2)
	for _, op := range res.Ops {
		require.Equal(t, "balance", op.Reason)
		require.Empty(t, op.From)
	}
}

func TestMemberJoinsConvergesWithinBudget(t *testing.T) {
	for _, maxMoves := range []int{1, 3, 1000} {
		t.Run(fmt.Sprint(maxMoves), func(t *testing.T) {
			members := perRole(2)
			ps := pipelines("cf", 90)
			e := converge(t, placement.Input{Pipelines: ps, Members: members})
			members = append(members, member("sorter09", placement.RoleSorter), member("producer09", placement.RoleProducer))
			var rounds, moves int
			for ; rounds < 200; rounds++ {
				before := e.byPipeline()
				res := plan(t, placement.Input{Pipelines: ps, Members: members, Current: e.records(), MaxMoves: maxMoves})
				if len(res.Ops) == 0 {
					break
				}
				require.LessOrEqual(t, len(res.Ops), maxMoves)
				for _, op := range res.Ops {
					require.Equal(t, "balance", op.Reason)
					old := before[placement.RecordKey(op.Assign)][0]
					require.Equal(t, old.GetEpoch()+1, op.Assign.GetEpoch())
					if old.GetProducerMember() != op.Assign.GetProducerMember() {
						require.Equal(t, old.GetProducerMember(), op.From)
					}
				}
				moves += len(res.Ops)
				e.apply(t, res.Ops)
			}
			requireBalanced(t, e.records(), members)
			// 90 pipelines over 3 instead of 2: 30 move in each of two roles.
			// A pipeline moved for the sorter moves its producer in the same
			// write, so between 30 and 60 writes, never a pipeline moved back.
			require.GreaterOrEqual(t, moves, 30)
			require.LessOrEqual(t, moves, 60)
			require.LessOrEqual(t, rounds, (60+maxMoves-1)/maxMoves+1)
		})
	}
}

func TestRemovedPipelineIsUnassignedFirst(t *testing.T) {
	members := servers(2)
	ps := pipelines("cf", 6)
	e := converge(t, placement.Input{Pipelines: ps, Members: members})
	gone := e.byPipeline()[ps[2].Key()][0]
	ps = slices.Delete(ps, 2, 3)
	ps = append(ps, pipelines("cf2", 1)...)
	res := plan(t, placement.Input{Pipelines: ps, Members: members, Current: e.records()})
	require.Len(t, res.Ops, 2)
	require.Same(t, gone, res.Ops[0].Unassign)
	require.Equal(t, "removed", res.Ops[0].Reason)
	require.Equal(t, "new", res.Ops[1].Reason)
	// The freed slot is taken: the new pipeline lands where the old one was.
	require.Equal(t, gone.GetProducerMember(), res.Ops[1].Assign.GetProducerMember())
}

func TestNoLiveMemberOfARole(t *testing.T) {
	members := servers(2)
	ps := pipelines("cf", 4)
	e := converge(t, placement.Input{Pipelines: ps, Members: members})
	before := e.records()
	// The producers are gone; a new pipeline and a removed one arrive.
	noProducer := []placement.Member{member("m00", placement.RolePuller, placement.RoleSorter, placement.RoleEncoder), member("m01", placement.RolePuller, placement.RoleSorter, placement.RoleEncoder)}
	want := append(slices.Clone(ps[1:]), pipelines("cf2", 1)...)
	res := plan(t, placement.Input{Pipelines: want, Members: noProducer, Current: before, MaxMoves: 10})
	require.Len(t, res.Ops, 1)
	require.Equal(t, "removed", res.Ops[0].Reason)
	require.Len(t, res.Unplaced, len(want))
	for _, u := range res.Unplaced {
		require.Equal(t, "no live producer member", u.Reason)
	}

	// No members at all: every role is named.
	res = plan(t, placement.Input{Pipelines: want[:1], Current: before})
	require.Equal(t, "no live puller or sorter or encoder or producer member", res.Unplaced[0].Reason)

	// A producer comes back: everything is placed.
	back := append(noProducer, member("p", placement.RoleProducer))
	res = plan(t, placement.Input{Pipelines: want, Members: back, Current: before})
	require.Empty(t, res.Unplaced)
	require.Len(t, res.Ops, 1+len(want))
}

func TestUnplacedSortedByKey(t *testing.T) {
	ps := append(pipelines("b", 3), pipelines("a", 3)...)
	ps[4].Namespace = "ns"
	res := plan(t, placement.Input{Pipelines: ps})
	var got []string
	for _, u := range res.Unplaced {
		got = append(got, u.Pipeline.String())
	}
	require.Equal(t, []string{"default/a/1", "default/a/3", "default/b/1", "default/b/2", "default/b/3", "ns/a/2"}, got)
}

func TestRewrites(t *testing.T) {
	base := func() ([]placement.Member, []placement.Pipeline, etcd) {
		members := perRole(2)
		ps := pipelines("cf", 8)
		return members, ps, converge(t, placement.Input{Pipelines: ps, Members: members})
	}
	for _, tc := range []struct {
		name   string
		change func(ms []placement.Member, ps []placement.Pipeline)
		reason string
		n      int // pipelines rewritten
	}{
		{"sorter address", func(ms []placement.Member, _ []placement.Pipeline) { ms[2].Addr = "10.0.0.9:8300" }, "address changed: sorter00", 4},
		{"producer address is not routed", func(ms []placement.Member, _ []placement.Pipeline) { ms[6].Addr = "10.0.0.9:8300" }, "", 0},
		{"spans", func(_ []placement.Member, ps []placement.Pipeline) {
			ps[3].Spans = append(ps[3].Spans, &pb.Span{StartKey: []byte("x"), EndKey: []byte("y")})
		}, "spans changed", 1},
		{"upstream", func(_ []placement.Member, ps []placement.Pipeline) { ps[5].PDAddrs = []string{"pd2:2379"} }, "upstream changed", 1},
		{"table name alone is not placement", func(_ []placement.Member, ps []placement.Pipeline) { ps[5].Table = "renamed" }, "", 0},
		{"member drops a role", func(ms []placement.Member, _ []placement.Pipeline) {
			ms[0].Roles = []string{string(placement.RoleSorter)}
		}, "puller00 no longer runs puller", 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			members, ps, e := base()
			before := e.byPipeline()
			tc.change(members, ps)
			res := plan(t, placement.Input{Pipelines: ps, Members: members, Current: e.records()})
			require.Len(t, res.Ops, tc.n)
			addrs := map[string]string{}
			for _, m := range members {
				addrs[m.ID] = m.Addr
			}
			for _, op := range res.Ops {
				// The rewrite may also rebalance for free (TestRepairRebalancesForFree).
				require.True(t, strings.HasPrefix(op.Reason, tc.reason), op.Reason)
				a := op.Assign
				old := before[placement.RecordKey(a)][0]
				require.Equal(t, old.GetEpoch()+1, a.GetEpoch())
				require.Equal(t, addrs[a.GetSorterMember()], a.GetRoute().GetSorterAddr())
				if !strings.Contains(tc.reason, "no longer") {
					for _, r := range allRoles {
						require.Equal(t, roleMember(old, r), roleMember(a, r))
					}
				}
			}
		})
	}
}

func TestEpochAndStartTs(t *testing.T) {
	members := servers(1)
	p := pipelines("cf", 1)
	p[0].LastEpoch = 7 // ran before a pause; stages remember epoch 7
	res := plan(t, placement.Input{Pipelines: p, Members: members})
	require.EqualValues(t, 8, res.Ops[0].Assign.GetEpoch())

	// A record whose start ts is above the (stale) checkpoint, and a
	// LastEpoch above the record's.
	rec := proto.CloneOf(res.Ops[0].Assign)
	rec.StartTs = 5000
	rec.ProducerMember = "gone"
	p[0].Checkpoint = 4000
	p[0].LastEpoch = 9
	res = plan(t, placement.Input{Pipelines: p, Members: members, Current: []*pb.PipelineAssignment{rec}})
	require.EqualValues(t, 10, res.Ops[0].Assign.GetEpoch())
	require.EqualValues(t, 5000, res.Ops[0].Assign.GetStartTs())
	require.Equal(t, "gone", res.Ops[0].From)
	require.Equal(t, "member gone: gone", res.Ops[0].Reason)
}

func TestDuplicateRecords(t *testing.T) {
	members := servers(2)
	p := pipelines("cf", 1)
	res := plan(t, placement.Input{Pipelines: p, Members: members})
	newer := res.Ops[0].Assign
	older := proto.CloneOf(newer)
	older.Epoch = 0
	older.ProducerMember = "m01"
	if newer.GetProducerMember() == "m01" {
		older.ProducerMember = "m00"
	}
	for _, current := range [][]*pb.PipelineAssignment{{newer, older}, {older, newer}} {
		res = plan(t, placement.Input{Pipelines: p, Members: members, Current: current})
		require.Len(t, res.Ops, 1)
		require.Same(t, older, res.Ops[0].Unassign)
		require.Equal(t, "duplicate", res.Ops[0].Reason)
	}

	// Both copies of a removed pipeline go, in producer order.
	res = plan(t, placement.Input{Members: members, Current: []*pb.PipelineAssignment{newer, older}})
	require.Len(t, res.Ops, 2)
	require.Equal(t, "m00", res.Ops[0].Unassign.GetProducerMember())
	require.Equal(t, "m01", res.Ops[1].Unassign.GetProducerMember())
}

// A record missing a member (written by hand, or by an older owner) is
// repaired like one naming a gone member.
func TestRecordWithoutAMember(t *testing.T) {
	members := servers(1)
	p := pipelines("cf", 1)
	rec := plan(t, placement.Input{Pipelines: p, Members: members}).Ops[0].Assign
	rec.SorterMember = ""
	res := plan(t, placement.Input{Pipelines: p, Members: members, Current: []*pb.PipelineAssignment{rec}})
	require.Len(t, res.Ops, 1)
	require.Equal(t, "member gone: (none)", res.Ops[0].Reason)
	require.Equal(t, "m00", res.Ops[0].Assign.GetSorterMember())
}

func TestBadInput(t *testing.T) {
	rec := &pb.PipelineAssignment{ChangefeedId: "cf", PipelineId: 1, Epoch: 1, ProducerMember: "m"}
	for _, tc := range []struct {
		name string
		in   placement.Input
		err  string
	}{
		{"empty member id", placement.Input{Members: []placement.Member{{Addr: "h:1"}}}, `member 0 (addr "h:1") has an empty id`},
		{"member twice", placement.Input{Members: []placement.Member{{ID: "a"}, {ID: "a"}}}, "member a is listed twice"},
		{"pipeline twice", placement.Input{Pipelines: []placement.Pipeline{{Changefeed: "cf", ID: 1}, {Namespace: "default", Changefeed: "cf", ID: 1}}}, "pipeline default/cf/1 is listed twice"},
		{"pipeline without changefeed", placement.Input{Pipelines: []placement.Pipeline{{ID: 4}}}, "pipeline 4 (index 0) has no changefeed"},
		{"nil record", placement.Input{Current: []*pb.PipelineAssignment{rec, nil}}, "current record 1 is nil"},
		{"record without changefeed", placement.Input{Current: []*pb.PipelineAssignment{{PipelineId: 3}}}, "current record 0 (pipeline 3) has no changefeed"},
		{"same record twice", placement.Input{Pipelines: []placement.Pipeline{{Changefeed: "cf", ID: 1}}, Current: []*pb.PipelineAssignment{rec, rec}}, `pipeline default/cf/1 has two current records under producer "m"`},
		{"negative budget", placement.Input{MaxMoves: -1}, "MaxMoves is -1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := placement.Plan(tc.in)
			require.ErrorContains(t, err, "placement: "+tc.err)
		})
	}
}

func TestDefaultNamespaceIsTheStores(t *testing.T) {
	require.Equal(t, store.DefaultNamespace, placement.RecordKey(&pb.PipelineAssignment{}).Namespace)
}

func TestDeterministicWhateverTheInputOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for seed := range 50 {
		in := randomInput(rand.New(rand.NewPCG(uint64(seed), 3)))
		want := plan(t, in)
		for range 3 {
			in2 := in
			in2.Pipelines = slices.Clone(in.Pipelines)
			in2.Members = slices.Clone(in.Members)
			in2.Current = slices.Clone(in.Current)
			rng.Shuffle(len(in2.Pipelines), func(i, j int) { in2.Pipelines[i], in2.Pipelines[j] = in2.Pipelines[j], in2.Pipelines[i] })
			rng.Shuffle(len(in2.Members), func(i, j int) { in2.Members[i], in2.Members[j] = in2.Members[j], in2.Members[i] })
			rng.Shuffle(len(in2.Current), func(i, j int) { in2.Current[i], in2.Current[j] = in2.Current[j], in2.Current[i] })
			got := plan(t, in2)
			require.Equal(t, want.Unplaced, got.Unplaced, "seed %d", seed)
			require.Len(t, got.Ops, len(want.Ops), "seed %d", seed)
			for i := range want.Ops {
				w, g := want.Ops[i], got.Ops[i]
				require.Equal(t, w.Reason, g.Reason, "seed %d op %d", seed, i)
				require.Equal(t, w.From, g.From)
				require.True(t, proto.Equal(w.Assign, g.Assign), "seed %d op %d", seed, i)
				require.True(t, proto.Equal(w.Unassign, g.Unassign), "seed %d op %d", seed, i)
			}
		}
	}
}

// randomInput builds a cluster that has been running (records from an
// earlier plan) and then changed: members died, joined, restarted on a
// new address or dropped roles; pipelines were added, removed or resplit;
// checkpoints advanced.
func randomInput(rng *rand.Rand) placement.Input {
	var members []placement.Member
	for i := range 1 + rng.IntN(8) {
		var roles []placement.Role
		for _, r := range allRoles {
			if rng.IntN(3) > 0 {
				roles = append(roles, r)
			}
		}
		members = append(members, member(fmt.Sprintf("m%d", i), roles...))
	}
	var ps []placement.Pipeline
	for c := range 1 + rng.IntN(3) {
		ps = append(ps, pipelines(fmt.Sprintf("cf%d", c), rng.IntN(30))...)
	}
	for i := range ps {
		ps[i].Checkpoint = uint64(1000 + rng.IntN(100))
		if rng.IntN(5) == 0 {
			ps[i].LastEpoch = uint64(rng.IntN(4))
		}
	}
	var current []*pb.PipelineAssignment
	if res, err := placement.Plan(placement.Input{Pipelines: ps, Members: members, MaxMoves: rng.IntN(5)}); err == nil {
		for _, op := range res.Ops {
			a := op.Assign
			a.Epoch += uint64(rng.IntN(3))
			current = append(current, a)
		}
	}
	// Skew: some records are piled onto one member.
	if len(current) > 0 && rng.IntN(2) == 0 {
		pile := members[rng.IntN(len(members))]
		for _, a := range current[:rng.IntN(len(current))] {
			if slices.Contains(pile.Roles, string(placement.RolePuller)) {
				a.PullerMember, a.Route.PullerAddr = pile.ID, pile.Addr
			}
		}
	}
	// Changes.
	for range rng.IntN(4) {
		switch i := rng.IntN(len(members)); rng.IntN(4) {
		case 0:
			members = slices.Delete(members, i, i+1)
		case 1:
			members[i].Addr = fmt.Sprintf("new%d:1", rng.IntN(1000))
		case 2:
			members[i].Roles = members[i].Roles[:rng.IntN(len(members[i].Roles)+1)]
		}
		members = append(members, member(fmt.Sprintf("j%d", rng.IntN(1000)), allRoles[rng.IntN(4)]))
	}
	members = slices.CompactFunc(slices.SortedFunc(slices.Values(members), func(a, b placement.Member) int { return strings.Compare(a.ID, b.ID) }),
		func(a, b placement.Member) bool { return a.ID == b.ID })
	rng.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
	if len(ps) > 0 {
		ps = ps[:len(ps)-rng.IntN(min(len(ps), 4))]
	}
	ps = append(ps, pipelines("cf9", rng.IntN(5))...)
	for i := range ps {
		ps[i].Checkpoint += uint64(rng.IntN(50))
		if rng.IntN(20) == 0 {
			ps[i].Spans = ps[i].Spans[:0]
		}
		if rng.IntN(20) == 0 {
			ps[i].PDAddrs = []string{"pd9:1"}
		}
	}
	return placement.Input{Pipelines: ps, Members: members, Current: current, MaxMoves: rng.IntN(6)}
}

// TestPlanProperties checks the invariants of one plan over random
// clusters, and that applying it reaches a fixed point.
func TestPlanProperties(t *testing.T) {
	for seed := range 3000 {
		rng := rand.New(rand.NewPCG(uint64(seed), 11))
		in := randomInput(rng)
		checkPlan(t, seed, in)
	}
}

func checkPlan(t *testing.T, seed int, in placement.Input) {
	res := plan(t, in)
	roleOf := map[placement.Role]map[string]string{}
	for _, r := range allRoles {
		roleOf[r] = map[string]string{}
	}
	for _, m := range in.Members {
		for _, r := range m.Roles {
			roleOf[placement.Role(r)][m.ID] = m.Addr
		}
	}
	allPlaceable := true
	for _, r := range allRoles {
		allPlaceable = allPlaceable && len(roleOf[r]) > 0
	}
	wanted := map[placement.Key]placement.Pipeline{}
	for _, p := range in.Pipelines {
		wanted[p.Key()] = p
	}
	cur := map[placement.Key]*pb.PipelineAssignment{}
	for _, a := range in.Current {
		cur[placement.RecordKey(a)] = a
	}

	// Deletions come first; at most one write per pipeline.
	seen := map[placement.Key]bool{}
	assigning := false
	paid := 0
	for _, op := range res.Ops {
		if op.Unassign != nil {
			require.False(t, assigning, "seed %d: unassign after an assign", seed)
			require.NotContains(t, wanted, placement.RecordKey(op.Unassign), "seed %d", seed)
			continue
		}
		assigning = true
		a := op.Assign
		k := placement.RecordKey(a)
		require.False(t, seen[k], "seed %d: two writes for %s", seed, k)
		seen[k] = true
		p, ok := wanted[k]
		require.True(t, ok, "seed %d", seed)
		old := cur[k]
		require.Greater(t, a.GetEpoch(), p.LastEpoch, "seed %d", seed)
		if old == nil {
			require.Equal(t, p.Checkpoint, a.GetStartTs())
			require.Empty(t, op.From)
		} else {
			require.Greater(t, a.GetEpoch(), old.GetEpoch(), "seed %d: epochs only grow", seed)
			require.Equal(t, max(p.Checkpoint, old.GetStartTs()), a.GetStartTs())
			if old.GetProducerMember() != a.GetProducerMember() {
				require.Equal(t, old.GetProducerMember(), op.From)
			} else {
				require.Empty(t, op.From)
			}
			if validRecord(old, p, roleOf) {
				require.Contains(t, op.Reason, "balance", "seed %d: a valid record rewritten: %s", seed, op.Reason)
			}
		}
		if op.Reason == "balance" {
			paid++
		}
	}
	require.LessOrEqual(t, paid, in.MaxMoves, "seed %d", seed)

	e := etcd{}
	for _, a := range in.Current {
		e[etcdKey(a.GetProducerMember(), placement.RecordKey(a))] = a
	}
	e.apply(t, res.Ops)
	after := e.byPipeline()
	unplaced := map[placement.Key]bool{}
	for _, u := range res.Unplaced {
		unplaced[u.Pipeline] = true
	}
	require.Len(t, unplaced, len(res.Unplaced))
	for k, p := range wanted {
		if !allPlaceable {
			require.True(t, unplaced[k], "seed %d", seed)
			require.NotContains(t, seen, k, "seed %d", seed)
			continue
		}
		require.False(t, unplaced[k], "seed %d", seed)
		require.Len(t, after[k], 1, "seed %d: %s placed once", seed, k)
		require.True(t, validRecord(after[k][0], p, roleOf), "seed %d: %s", seed, k)
	}
	for k := range after {
		require.Contains(t, wanted, k, "seed %d", seed)
	}

	// Applying the plan is a fixed point once balance is off: nothing
	// forced is left.
	in2 := in
	in2.Current = e.records()
	in2.MaxMoves = 0
	require.Empty(t, plan(t, in2).Ops, "seed %d", seed)

	// And with budget, balance converges.
	if allPlaceable {
		in2.MaxMoves = 1 + seed%3
		final := converge(t, in2)
		requireBalanced(t, final.records(), in.Members)
	}
}

func validRecord(a *pb.PipelineAssignment, p placement.Pipeline, roleOf map[placement.Role]map[string]string) bool {
	for _, r := range allRoles {
		if _, ok := roleOf[r][roleMember(a, r)]; !ok {
			return false
		}
	}
	rt := a.GetRoute()
	return rt.GetPullerAddr() == roleOf[placement.RolePuller][a.GetPullerMember()] &&
		rt.GetSorterAddr() == roleOf[placement.RoleSorter][a.GetSorterMember()] &&
		rt.GetEncoderAddr() == roleOf[placement.RoleEncoder][a.GetEncoderMember()] &&
		slices.Equal(rt.GetPdAddrs(), p.PDAddrs) &&
		slices.EqualFunc(a.GetSpans(), p.Spans, func(x, y *pb.Span) bool { return proto.Equal(x, y) })
}

// The model below is the rules of the package comment written the naive
// way: linear scans for the least- and most-loaded member, no heaps, no
// indexes. Plan must make exactly its decisions; a heap left out of order
// (a load changed without its fix) picks another member and shows here.

type modelSlot struct {
	p       placement.Pipeline
	rec     *pb.PipelineAssignment
	at      [4]string
	reasons []string
	moved   bool
}

func modelPlan(in placement.Input) ([]placement.Op, []placement.Unplaced) {
	addr := map[placement.Role]map[string]string{}
	known := map[string]bool{}
	for _, r := range allRoles {
		addr[r] = map[string]string{}
	}
	for _, m := range in.Members {
		known[m.ID] = true
		for _, r := range m.Roles {
			if _, ok := addr[placement.Role(r)]; ok {
				addr[placement.Role(r)][m.ID] = m.Addr
			}
		}
	}
	load := map[placement.Role]map[string]int{}
	for _, r := range allRoles {
		load[r] = map[string]int{}
		for id := range addr[r] {
			load[r][id] = 0
		}
	}
	least := func(r placement.Role) string {
		best := ""
		for id, l := range load[r] {
			if best == "" || l < load[r][best] || l == load[r][best] && id < best {
				best = id
			}
		}
		return best
	}
	most := func(r placement.Role) string {
		best := ""
		for id, l := range load[r] {
			if best == "" || l > load[r][best] || l == load[r][best] && id < best {
				best = id
			}
		}
		return best
	}
	keyCmp := func(a, b placement.Key) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Changefeed, b.Changefeed), cmp.Compare(a.ID, b.ID))
	}

	recs := map[placement.Key]*pb.PipelineAssignment{}
	for _, a := range in.Current {
		recs[placement.RecordKey(a)] = a
	}
	ps := slices.SortedFunc(slices.Values(in.Pipelines), func(a, b placement.Pipeline) int { return keyCmp(a.Key(), b.Key()) })
	var ops []placement.Op
	wanted := map[placement.Key]bool{}
	for _, p := range ps {
		wanted[p.Key()] = true
	}
	for _, a := range slices.SortedFunc(slices.Values(in.Current), func(a, b *pb.PipelineAssignment) int {
		return keyCmp(placement.RecordKey(a), placement.RecordKey(b))
	}) {
		if !wanted[placement.RecordKey(a)] {
			ops = append(ops, placement.Op{Unassign: a, Reason: "removed"})
		}
	}

	var unplaced []placement.Unplaced
	var slots []*modelSlot
	for _, p := range ps {
		s := &modelSlot{p: p, rec: recs[p.Key()]}
		var missing []string
		for i, r := range allRoles {
			if len(addr[r]) == 0 {
				missing = append(missing, string(r))
			} else if s.rec != nil {
				if _, ok := addr[r][roleMember(s.rec, r)]; ok {
					s.at[i] = roleMember(s.rec, r)
				}
			}
		}
		if len(missing) > 0 {
			unplaced = append(unplaced, placement.Unplaced{Pipeline: p.Key(), Reason: "no live " + strings.Join(missing, " or ") + " member"})
			continue
		}
		for i, r := range allRoles {
			if s.at[i] != "" {
				load[r][s.at[i]]++
			}
		}
		slots = append(slots, s)
	}
	for _, s := range slots {
		if s.rec == nil {
			s.reasons = append(s.reasons, "new")
		}
		var gone, left, readdr []string
		for i, r := range allRoles {
			if id := s.at[i]; id != "" {
				var routed string
				switch r {
				case placement.RolePuller:
					routed = s.rec.GetRoute().GetPullerAddr()
				case placement.RoleSorter:
					routed = s.rec.GetRoute().GetSorterAddr()
				case placement.RoleEncoder:
					routed = s.rec.GetRoute().GetEncoderAddr()
				default:
					continue
				}
				if routed != addr[r][id] && !slices.Contains(readdr, id) {
					readdr = append(readdr, id)
				}
				continue
			}
			if s.rec != nil {
				switch id := roleMember(s.rec, r); {
				case id == "":
					gone = append(gone, "(none)")
				case known[id]:
					left = append(left, id+" no longer runs "+string(r))
				case !slices.Contains(gone, id):
					gone = append(gone, id)
				}
			}
			s.at[i] = least(r)
			load[r][s.at[i]]++
		}
		if len(gone) > 0 {
			s.reasons = append(s.reasons, "member gone: "+strings.Join(gone, ", "))
		}
		s.reasons = append(s.reasons, left...)
		if len(readdr) > 0 {
			s.reasons = append(s.reasons, "address changed: "+strings.Join(readdr, ", "))
		}
		if s.rec != nil {
			if !slices.EqualFunc(s.rec.GetSpans(), s.p.Spans, func(x, y *pb.Span) bool { return proto.Equal(x, y) }) {
				s.reasons = append(s.reasons, "spans changed")
			}
			if !slices.Equal(s.rec.GetRoute().GetPdAddrs(), s.p.PDAddrs) {
				s.reasons = append(s.reasons, "upstream changed")
			}
		}
	}

	budget := in.MaxMoves
	for i, r := range allRoles {
		free, paid := map[string][]*modelSlot{}, map[string][]*modelSlot{}
		for _, s := range slots {
			if len(s.reasons) > 0 || s.moved {
				free[s.at[i]] = append(free[s.at[i]], s)
			} else {
				paid[s.at[i]] = append(paid[s.at[i]], s)
			}
		}
		for len(load[r]) > 1 {
			hi, lo := most(r), least(r)
			if load[r][hi]-load[r][lo] <= 1 {
				break
			}
			var s *modelSlot
			if n := len(free[hi]); n > 0 {
				s, free[hi] = free[hi][n-1], free[hi][:n-1]
			} else if n := len(paid[hi]); n > 0 && budget > 0 {
				s, paid[hi] = paid[hi][n-1], paid[hi][:n-1]
				budget--
			} else {
				break
			}
			s.at[i] = lo
			s.moved = true
			load[r][hi]--
			load[r][lo]++
		}
	}

	for _, s := range slots {
		if len(s.reasons) == 0 && !s.moved {
			continue
		}
		p := s.p
		spans := make([]*pb.Span, len(p.Spans))
		for i, sp := range p.Spans {
			spans[i] = proto.CloneOf(sp)
		}
		a := &pb.PipelineAssignment{
			Namespace: p.Namespace, ChangefeedId: p.Changefeed, PipelineId: p.ID,
			Epoch: p.LastEpoch + 1, StartTs: p.Checkpoint, Spans: spans,
			Route: &pb.Route{
				PullerAddr: addr[placement.RolePuller][s.at[0]], SorterAddr: addr[placement.RoleSorter][s.at[1]],
				EncoderAddr: addr[placement.RoleEncoder][s.at[2]], PdAddrs: p.PDAddrs,
			},
			PullerMember: s.at[0], SorterMember: s.at[1], EncoderMember: s.at[2], ProducerMember: s.at[3],
			SchemaName: p.Schema, TableName: p.Table, TableId: p.TableID,
		}
		op := placement.Op{Assign: a}
		if s.rec != nil {
			a.Epoch = max(a.Epoch, s.rec.GetEpoch()+1)
			a.StartTs = max(a.StartTs, s.rec.GetStartTs())
			if s.rec.GetProducerMember() != s.at[3] {
				op.From = s.rec.GetProducerMember()
			}
		}
		reasons := slices.Clone(s.reasons)
		if s.moved {
			reasons = append(reasons, "balance")
		}
		op.Reason = strings.Join(reasons, "; ")
		ops = append(ops, op)
	}
	return ops, unplaced
}

func requireSameOps(t *testing.T, want, got []placement.Op, msg string) {
	t.Helper()
	require.Len(t, got, len(want), msg)
	for i := range want {
		w, g := want[i], got[i]
		require.Equal(t, w.Reason, g.Reason, "%s op %d", msg, i)
		require.Equal(t, w.From, g.From, "%s op %d", msg, i)
		require.True(t, proto.Equal(w.Assign, g.Assign), "%s op %d:\n%v\n%v", msg, i, w.Assign, g.Assign)
		require.True(t, proto.Equal(w.Unassign, g.Unassign), "%s op %d", msg, i)
	}
}

// TestPlanMatchesModel runs Plan and the model side by side, and feeds
// Plan's result back in for a few rounds so balance and repair meet
// records Plan wrote itself.
func TestPlanMatchesModel(t *testing.T) {
	for seed := range 2000 {
		rng := rand.New(rand.NewPCG(uint64(seed), 23))
		in := randomInput(rng)
		for round := range 3 {
			msg := fmt.Sprintf("seed %d round %d", seed, round)
			wantOps, wantUnplaced := modelPlan(in)
			res := plan(t, in)
			requireSameOps(t, wantOps, res.Ops, msg)
			require.Equal(t, wantUnplaced, res.Unplaced, msg)
			e := etcd{}
			for _, a := range in.Current {
				e[etcdKey(a.GetProducerMember(), placement.RecordKey(a))] = a
			}
			e.apply(t, res.Ops)
			in.Current = e.records()
			// Something changes between ticks: a member goes or comes.
			if i := rng.IntN(len(in.Members) + 1); i < len(in.Members) && rng.IntN(2) == 0 {
				in.Members = slices.Delete(slices.Clone(in.Members), i, i+1)
			} else {
				in.Members = append(slices.Clone(in.Members), member(fmt.Sprintf("r%d", round), allRoles[rng.IntN(4)]))
			}
		}
	}
}
