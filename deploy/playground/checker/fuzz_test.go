package checker

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/pingcap/kvproto/pkg/cdcpb"
)

// A mutation breaks a legal stream in one place so that rule must fire.
// apply returns the mutated ops, or false when the stream has no place for it.
type mutation struct {
	name  string
	rule  string
	apply func(m *model, pick func(int) int) ([]step, bool)
}

func cloneEvent(ev *cdcpb.ChangeDataEvent) *cdcpb.ChangeDataEvent {
	b, err := ev.Marshal()
	if err != nil {
		panic(err)
	}
	out := &cdcpb.ChangeDataEvent{}
	if err := out.Unmarshal(b); err != nil {
		panic(err)
	}
	return out
}

func insertAfter(ops []step, i int, s step) []step {
	out := slices.Clone(ops[:i+1])
	out = append(out, s)
	return append(out, ops[i+1:]...)
}

// editOp replaces ops[i]'s message by an edited copy.
func editOp(ops []step, i int, edit func(ev *cdcpb.ChangeDataEvent)) []step {
	out := slices.Clone(ops)
	ev := cloneEvent(ops[i].ev)
	edit(ev)
	out[i].ev = ev
	return out
}

func editRow(ops []step, d delivery, edit func(r *cdcpb.Event_Row)) []step {
	return editOp(ops, d.op, func(ev *cdcpb.ChangeDataEvent) {
		edit(ev.Events[d.ev].GetEntries().Entries[d.row])
	})
}

func choose[T any](xs []T, pick func(int) int) (T, bool) {
	if len(xs) == 0 {
		var zero T
		return zero, false
	}
	return xs[pick(len(xs))], true
}

func (m *model) rowsWhere(f func(d delivery) bool) []delivery {
	var out []delivery
	for _, d := range m.deliveries {
		if d.kind == dRow && f(d) {
			out = append(out, d)
		}
	}
	return out
}

func (m *model) resolvedWhere(f func(d delivery) bool) []delivery {
	var out []delivery
	for _, d := range m.deliveries {
		if d.kind == dResolved && f(d) {
			out = append(out, d)
		}
	}
	return out
}

func isType(t cdcpb.Event_LogType) func(delivery) bool {
	return func(d delivery) bool { return d.r.Type == t }
}

func anyOf(ts ...cdcpb.Event_LogType) func(delivery) bool {
	return func(d delivery) bool { return slices.Contains(ts, d.r.Type) }
}

var mutations = []mutation{
	{name: "row or resolved ts after Error", rule: RuleAfterError, apply: func(m *model, pick func(int) int) ([]step, bool) {
		var ended []*modelSub
		for _, s := range m.subs {
			if s.endOp >= 0 {
				ended = append(ended, s)
			}
		}
		s, ok := choose(ended, pick)
		if !ok {
			return nil, false
		}
		ev := rows(s.req, s.region, initRow())
		if pick(2) == 0 {
			ev = resolvedFor(s, 1)
		}
		return insertAfter(m.ops, s.endOp, EC(s.conn.id, ev)), true
	}},
	{name: "resolved ts before INITIALIZED", rule: RuleResolvedBeforeInit, apply: func(m *model, pick func(int) int) ([]step, bool) {
		type gap struct {
			s        *modelSub
			from, to int // insert after an op in [from, to)
		}
		var gaps []gap
		for _, s := range m.subs {
			limit := s.initOp
			if limit < 0 {
				limit = s.endOp
			}
			if limit < 0 {
				continue // never initialised nor ended: impossible after finish
			}
			gaps = append(gaps, gap{s, s.regOp, limit})
		}
		g, ok := choose(gaps, pick)
		if !ok {
			return nil, false
		}
		at := g.from + pick(g.to-g.from)
		return insertAfter(m.ops, at, EC(g.s.conn.id, resolvedFor(g.s, 1+uint64(pick(1000))))), true
	}},
	{name: "row at a resolved ts", rule: RuleRowNotAboveResolved, apply: func(m *model, pick func(int) int) ([]step, bool) {
		d, ok := choose(m.resolvedWhere(func(d delivery) bool { return d.ts >= 2 }), pick)
		if !ok {
			return nil, false
		}
		s := d.sub
		key := tk(int64(s.region-1) * keysPerRegion)
		ev := rows(s.req, s.region, cd(key, d.ts-1, d.ts-uint64(pick(2))))
		return insertAfter(m.ops, d.op, EC(s.conn.id, ev)), true
	}},
	{name: "resolved ts overtakes a later commit", rule: RuleRowNotAboveResolved, apply: func(m *model, pick func(int) int) ([]step, bool) {
		type pair struct{ rts, row delivery }
		var pairs []pair
		for _, d := range m.resolvedWhere(func(delivery) bool { return true }) {
			later := m.rowsWhere(func(e delivery) bool {
				return e.sub == d.sub && e.op > d.op && (e.r.Type == cdcpb.Event_COMMIT || e.r.Type == cdcpb.Event_COMMITTED)
			})
			if len(later) > 0 {
				pairs = append(pairs, pair{d, later[0]})
			}
		}
		p, ok := choose(pairs, pick)
		if !ok {
			return nil, false
		}
		ts := p.row.r.CommitTs + uint64(pick(3))
		return editOp(m.ops, p.rts.op, func(ev *cdcpb.ChangeDataEvent) {
			if p.rts.ev < 0 {
				ev.ResolvedTs.Ts = ts
			} else {
				ev.Events[p.rts.ev].Event = &cdcpb.Event_ResolvedTs{ResolvedTs: ts}
			}
		}), true
	}},
	{name: "second INITIALIZED", rule: RuleDuplicateInitialized, apply: func(m *model, pick func(int) int) ([]step, bool) {
		d, ok := choose(m.rowsWhere(isType(cdcpb.Event_INITIALIZED)), pick)
		if !ok {
			return nil, false
		}
		return insertAfter(m.ops, d.op, EC(d.sub.conn.id, rows(d.sub.req, d.sub.region, initRow()))), true
	}},
	{name: "INITIALIZED dropped", rule: RuleResolvedBeforeInit, apply: func(m *model, pick func(int) int) ([]step, bool) {
		d, ok := choose(m.rowsWhere(func(d delivery) bool {
			return d.r.Type == cdcpb.Event_INITIALIZED && len(m.resolvedWhere(func(e delivery) bool { return e.sub == d.sub })) > 0
		}), pick)
		if !ok {
			return nil, false
		}
		return editOp(m.ops, d.op, func(ev *cdcpb.ChangeDataEvent) {
			e := ev.Events[d.ev].GetEntries()
			e.Entries = slices.Delete(e.Entries, d.row, d.row+1)
		}), true
	}},
	{name: "PREWRITE dropped", rule: RuleCommitWithoutPrewrite, apply: func(m *model, pick func(int) int) ([]step, bool) {
		d, ok := choose(m.rowsWhere(func(d delivery) bool {
			if d.r.Type != cdcpb.Event_PREWRITE {
				return false
			}
			commits := m.rowsWhere(func(e delivery) bool {
				return e.sub == d.sub && e.r.Type == cdcpb.Event_COMMIT && string(e.r.Key) == string(d.r.Key) && e.r.StartTs == d.r.StartTs
			})
			// A COMMIT before INITIALIZED is only judged at INITIALIZED.
			return len(commits) > 0 && d.sub.initOp >= 0
		}), pick)
		if !ok {
			return nil, false
		}
		return editOp(m.ops, d.op, func(ev *cdcpb.ChangeDataEvent) {
			e := ev.Events[d.ev].GetEntries()
			e.Entries = slices.Delete(e.Entries, d.row, d.row+1)
		}), true
	}},
	{name: "COMMITTED at the checkpoint", rule: RuleCommittedNotAboveCheckpoint, apply: func(m *model, pick func(int) int) ([]step, bool) {
		d, ok := choose(m.rowsWhere(isType(cdcpb.Event_COMMITTED)), pick)
		if !ok {
			return nil, false
		}
		return editRow(m.ops, d, func(r *cdcpb.Event_Row) { r.CommitTs = d.sub.checkpoint - min(d.sub.checkpoint, uint64(pick(2))) }), true
	}},
	{name: "commit_ts not above start_ts", rule: RuleCommitNotAboveStart, apply: func(m *model, pick func(int) int) ([]step, bool) {
		d, ok := choose(m.rowsWhere(anyOf(cdcpb.Event_COMMIT, cdcpb.Event_COMMITTED)), pick)
		if !ok {
			return nil, false
		}
		return editRow(m.ops, d, func(r *cdcpb.Event_Row) { r.StartTs = r.CommitTs + uint64(pick(2)) }), true
	}},
	{name: "ROLLBACK with commit_ts", rule: RuleUnexpectedCommitTs, apply: func(m *model, pick func(int) int) ([]step, bool) {
		d, ok := choose(m.rowsWhere(anyOf(cdcpb.Event_ROLLBACK, cdcpb.Event_PREWRITE)), pick)
		if !ok {
			return nil, false
		}
		return editRow(m.ops, d, func(r *cdcpb.Event_Row) { r.CommitTs = r.StartTs + 1 }), true
	}},
	{name: "op UNKNOWN", rule: RuleBadOpType, apply: func(m *model, pick func(int) int) ([]step, bool) {
		d, ok := choose(m.rowsWhere(anyOf(cdcpb.Event_PREWRITE, cdcpb.Event_COMMIT, cdcpb.Event_COMMITTED)), pick)
		if !ok {
			return nil, false
		}
		return editRow(m.ops, d, func(r *cdcpb.Event_Row) { r.OpType = cdcpb.Event_Row_UNKNOWN }), true
	}},
	{name: "row type UNKNOWN", rule: RuleBadLogType, apply: func(m *model, pick func(int) int) ([]step, bool) {
		// Not INITIALIZED: with its fields all empty, as UNKNOWN it would be
		// the legal row of a committed Lock record.
		d, ok := choose(m.rowsWhere(func(d delivery) bool { return d.r.Type != cdcpb.Event_INITIALIZED }), pick)
		if !ok {
			return nil, false
		}
		return editRow(m.ops, d, func(r *cdcpb.Event_Row) { r.Type = cdcpb.Event_LogType([]int32{0, 6, 99}[pick(3)]) }), true
	}},
	{name: "key outside the region", rule: RuleKeyOutOfRange, apply: func(m *model, pick func(int) int) ([]step, bool) {
		d, ok := choose(m.rowsWhere(func(d delivery) bool { return d.r.Type != cdcpb.Event_INITIALIZED }), pick)
		if !ok {
			return nil, false
		}
		other := (int64(d.sub.region) + int64(pick(modelRegions-1))) % modelRegions // another region's index
		return editRow(m.ops, d, func(r *cdcpb.Event_Row) { r.Key = tk(other*keysPerRegion + int64(pick(keysPerRegion))) }), true
	}},
	{name: "unregistered request id", rule: RuleUnregistered, apply: func(m *model, pick func(int) int) ([]step, bool) {
		d, ok := choose(m.rowsWhere(func(delivery) bool { return true }), pick)
		if !ok {
			return nil, false
		}
		return editOp(m.ops, d.op, func(ev *cdcpb.ChangeDataEvent) { ev.Events[d.ev].RequestId = 999 }), true
	}},
	{name: "events and resolved ts in one message", rule: RuleMixedMessage, apply: func(m *model, pick func(int) int) ([]step, bool) {
		d, ok := choose(m.rowsWhere(func(delivery) bool { return true }), pick)
		if !ok {
			return nil, false
		}
		return editOp(m.ops, d.op, func(ev *cdcpb.ChangeDataEvent) { ev.ResolvedTs = &cdcpb.ResolvedTs{} }), true
	}},
	{name: "resolved ts in the other form", rule: RuleResolvedTsForm, apply: func(m *model, pick func(int) int) ([]step, bool) {
		d, ok := choose(m.resolvedWhere(func(delivery) bool { return true }), pick)
		if !ok {
			return nil, false
		}
		s := d.sub
		ev := legacyRts(s.req, s.region, d.ts)
		if s.conn.compat {
			ev = rts(0, d.ts, s.region)
		}
		return insertAfter(m.ops, d.op, EC(s.conn.id, ev)), true
	}},
}

// checkStream runs the model's stream through a checker and its rows
// through assemblers, and fails on any violation or history mismatch.
func checkStream(t *testing.T, m *model) {
	t.Helper()
	c := New()
	for _, s := range m.ops {
		s.apply(c)
	}
	if vs := c.Violations(); len(vs) > 0 {
		t.Fatalf("legal stream flagged:\n%s\nstream:\n%s", dump(vs), m.dump(m.ops))
	}
	for _, s := range m.subs {
		if !s.initialized {
			continue // scan cut short by an Error: its history is incomplete by design
		}
		a := NewAssembler()
		var got []Change
		for _, r := range s.received {
			chs, err := a.Rows(r)
			if err != nil {
				t.Fatalf("%s: %v\nstream:\n%s", s, err, m.dump(m.ops))
			}
			got = append(got, chs...)
		}
		var want []Change
		for _, ch := range m.history {
			h := mustHandle(ch.Key)
			if regionOf(h) == s.region {
				want = append(want, ch)
			}
		}
		if err := CompareExactlyOnce(want, got, s.checkpoint, s.endTS); err != nil {
			t.Fatalf("%s: %v\nstream:\n%s", s, err, m.dump(m.ops))
		}
		for _, ch := range got {
			if ch.CommitTS <= s.checkpoint || ch.CommitTS > s.endTS {
				t.Fatalf("%s: assembled %s outside (%d, %d]", s, ch, s.checkpoint, s.endTS)
			}
		}
	}
}

func mustHandle(k []byte) int64 {
	for h := range int64(modelKeys) {
		if string(tk(h)) == string(k) {
			return h
		}
	}
	panic("key outside the model")
}

// checkMutations applies every mutation that has a place in the stream, at
// a place chosen by seed, and requires its rule to fire.
func checkMutations(t *testing.T, m *model, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	pick := func(n int) int {
		if n <= 1 {
			return 0
		}
		return rng.IntN(n)
	}
	for _, mu := range mutations {
		ops, ok := mu.apply(m, pick)
		if !ok {
			continue
		}
		c := New()
		for _, s := range ops {
			s.apply(c)
		}
		found := false
		for _, v := range c.Violations() {
			found = found || v.Rule == mu.rule
		}
		if !found {
			t.Fatalf("mutation %q not caught as %s; violations:\n%s\nmutated stream:\n%s",
				mu.name, mu.rule, dump(c.Violations()), m.dump(ops))
		}
	}
}

func FuzzChecker(f *testing.F) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 8, 64, 256, 1024} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		f.Add(uint64(n), b)
	}
	f.Fuzz(func(t *testing.T, seed uint64, data []byte) {
		m := generate(data)
		checkStream(t, m)
		checkMutations(t, m, seed)
	})
}

// TestRandomStreams runs the fuzz body over many random inputs so plain
// `go test` covers it broadly.
func TestRandomStreams(t *testing.T) {
	n := 1000
	if testing.Short() {
		n = 200
	}
	rng := rand.New(rand.NewPCG(3, 4))
	caught := map[string]int{}
	for i := range n {
		b := make([]byte, 64+rng.IntN(2000))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		m := generate(b)
		checkStream(t, m)
		checkMutations(t, m, uint64(i))
		for _, mu := range mutations {
			if _, ok := mu.apply(m, func(int) int { return 0 }); ok {
				caught[mu.name]++
			}
		}
		if t.Failed() {
			return
		}
	}
	// Every mutation must have found a place in some stream, or the
	// generator lost coverage.
	for _, mu := range mutations {
		if caught[mu.name] == 0 {
			t.Errorf("mutation %q never applicable", mu.name)
		}
	}
}
