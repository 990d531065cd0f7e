package schema

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/pingcap/tidb/pkg/meta/model"
	"github.com/stretchr/testify/require"
)

// The history checked against a naive model: random DDL sequences, delivered
// shuffled, early and duplicated, must give at every ts and for every id what
// a full copy of the expected physical-id map taken after each job gives.

type modelEntry struct {
	logical int64
	schema  int64
	name    string
	comment string // identifies the version
	gone    bool
}

type modelTable struct {
	schema  int64
	name    string
	parts   []int64
	comment string
}

type modelStep struct {
	ts   uint64
	phys map[int64]modelEntry
}

type modelGen struct {
	r       *rand.Rand
	nextID  int64
	ver     int64
	ts      uint64
	dbs     []int64 // live user databases
	tables  map[int64]*modelTable
	phys    map[int64]modelEntry
	steps   []modelStep
	jobs    []JobEvent
	history []*model.Job
}

func (g *modelGen) id() int64 { g.nextID++; return g.nextID }

func (g *modelGen) info(id int64, t *modelTable) *model.TableInfo {
	info := keyed(id, t.name)
	setParts(info, t.parts...)
	info.Comment = t.comment
	return info
}

func (g *modelGen) set(id int64, t *modelTable) {
	e := modelEntry{logical: id, schema: t.schema, name: t.name, comment: t.comment}
	g.phys[id] = e
	for _, p := range t.parts {
		g.phys[p] = e
	}
	g.tables[id] = t
}

func (g *modelGen) drop(id int64) {
	t := g.tables[id]
	e := modelEntry{logical: id, gone: true}
	g.phys[id] = e
	for _, p := range t.parts {
		g.phys[p] = e
	}
	delete(g.tables, id)
}

func (g *modelGen) live() []int64 { return slices.Sorted(maps.Keys(g.tables)) }

func (g *modelGen) pick(filter func(*modelTable) bool) (int64, bool) {
	var ids []int64
	for _, id := range g.live() {
		if filter == nil || filter(g.tables[id]) {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return 0, false
	}
	return ids[g.r.IntN(len(ids))], true
}

// emit records a job and the model state after it. Occasionally the job
// shares the previous job's ts, as concurrent DDLs with async commit may.
func (g *modelGen) emit(j *model.Job) {
	if len(g.jobs) == 0 || g.r.IntN(8) != 0 {
		g.ts += uint64(1 + g.r.IntN(3))
	}
	g.jobs = append(g.jobs, JobEvent{Job: j, CommitTs: g.ts})
	if n := len(g.steps); n > 0 && g.steps[n-1].ts == g.ts {
		g.steps[n-1].phys = maps.Clone(g.phys)
		return
	}
	g.steps = append(g.steps, modelStep{ts: g.ts, phys: maps.Clone(g.phys)})
}

func (g *modelGen) step() {
	g.ver++
	rev := fmt.Sprint("v", g.ver)
	newParts := func(n int) []int64 {
		var ps []int64
		for range n {
			ps = append(ps, g.id())
		}
		return ps
	}
	partitionedOnly := func(t *modelTable) bool { return len(t.parts) > 0 }
	switch g.r.IntN(12) {
	case 0, 1: // create table
		schema := g.dbs[g.r.IntN(len(g.dbs))]
		id := g.id()
		t := &modelTable{schema: schema, name: fmt.Sprint("t", id), comment: rev}
		if g.r.IntN(2) == 0 {
			t.parts = newParts(1 + g.r.IntN(3))
		}
		g.set(id, t)
		g.emit(job(model.ActionCreateTable, schema, id, g.ver, g.info(id, t)))
	case 2: // drop table
		if id, ok := g.pick(nil); ok {
			schema := g.tables[id].schema
			g.drop(id)
			g.emit(job(model.ActionDropTable, schema, id, g.ver, nil))
		}
	case 3: // truncate table
		if id, ok := g.pick(nil); ok {
			old := g.tables[id]
			t := &modelTable{schema: old.schema, name: old.name, comment: rev, parts: newParts(len(old.parts))}
			g.drop(id)
			nid := g.id()
			g.set(nid, t)
			g.emit(job(model.ActionTruncateTable, t.schema, id, g.ver, g.info(nid, t)))
		}
	case 4: // rename, sometimes into the system schema mysql (3)
		if id, ok := g.pick(nil); ok {
			old := g.tables[id]
			t := &modelTable{schema: g.dbs[g.r.IntN(len(g.dbs))], name: fmt.Sprint("r", g.ver), parts: old.parts, comment: rev}
			if g.r.IntN(6) == 0 {
				t.schema = 3
				g.drop(id)
			} else {
				g.set(id, t)
			}
			g.emit(job(model.ActionRenameTable, t.schema, id, g.ver, g.info(id, t)))
		}
	case 5: // add column
		if id, ok := g.pick(nil); ok {
			t := *g.tables[id]
			t.comment = rev
			g.set(id, &t)
			g.emit(job(model.ActionAddColumn, t.schema, id, g.ver, g.info(id, &t)))
		}
	case 6: // add partition
		if id, ok := g.pick(partitionedOnly); ok {
			t := *g.tables[id]
			t.parts = append(slices.Clone(t.parts), g.id())
			t.comment = rev
			g.set(id, &t)
			g.emit(job(model.ActionAddTablePartition, t.schema, id, g.ver, g.info(id, &t)))
		}
	case 7: // drop partition
		if id, ok := g.pick(func(t *modelTable) bool { return len(t.parts) > 1 }); ok {
			t := *g.tables[id]
			i := g.r.IntN(len(t.parts))
			g.phys[t.parts[i]] = modelEntry{logical: id, gone: true}
			t.parts = slices.Delete(slices.Clone(t.parts), i, i+1)
			t.comment = rev
			g.set(id, &t)
			g.emit(job(model.ActionDropTablePartition, t.schema, id, g.ver, g.info(id, &t)))
		}
	case 8, 9: // truncate or reorganize one partition into a new id
		if id, ok := g.pick(partitionedOnly); ok {
			t := *g.tables[id]
			i := g.r.IntN(len(t.parts))
			g.phys[t.parts[i]] = modelEntry{logical: id, gone: true}
			t.parts = slices.Clone(t.parts)
			t.parts[i] = g.id()
			t.comment = rev
			g.set(id, &t)
			tp := model.ActionTruncateTablePartition
			if g.r.IntN(2) == 0 {
				tp = model.ActionReorganizePartition
			}
			g.emit(job(tp, t.schema, id, g.ver, g.info(id, &t)))
		}
	case 10: // exchange partition
		pt, ok1 := g.pick(partitionedOnly)
		nt, ok2 := g.pick(func(t *modelTable) bool { return len(t.parts) == 0 })
		if ok1 && ok2 {
			p := *g.tables[pt]
			n := *g.tables[nt]
			i := g.r.IntN(len(p.parts))
			part := p.parts[i]
			p.parts = slices.Clone(p.parts)
			p.parts[i] = nt
			p.comment = rev
			delete(g.tables, nt)
			g.set(pt, &p)
			g.set(part, &n)
			g.emit(job(model.ActionExchangeTablePartition, n.schema, nt, g.ver, g.info(pt, &p)))
		}
	case 11: // create or drop a database
		if len(g.dbs) > 1 && g.r.IntN(2) == 0 {
			i := 1 + g.r.IntN(len(g.dbs)-1) // keep database 1
			db := g.dbs[i]
			g.dbs = slices.Delete(g.dbs, i, i+1)
			for _, id := range g.live() {
				if g.tables[id].schema == db {
					g.drop(id)
				}
			}
			g.emit(job(model.ActionDropSchema, db, 0, g.ver, nil))
			return
		}
		db := 10 + g.id() // database ids are distinct from the fixture's 1..3
		g.dbs = append(g.dbs, db)
		j := job(model.ActionCreateSchema, db, 0, g.ver, nil)
		j.BinlogInfo.DBInfo = dbInfo(db, fmt.Sprint("db", db))
		g.emit(j)
	}
}

func TestHistoryAgainstModel(t *testing.T) {
	for seed := range uint64(150) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { checkAgainstModel(t, seed) })
	}
}

func checkAgainstModel(t *testing.T, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	g := &modelGen{r: r, nextID: 100, ver: 10, ts: snapTs, dbs: []int64{1, 2}, tables: map[int64]*modelTable{}, phys: map[int64]modelEntry{}}
	// The snapshot: a few tables in test (1).
	var snapTables []*model.TableInfo
	for range 3 {
		id := g.id()
		tb := &modelTable{schema: 1, name: fmt.Sprint("t", id), comment: "snap"}
		if r.IntN(2) == 0 {
			tb.parts = []int64{g.id(), g.id()}
		}
		g.set(id, tb)
		snapTables = append(snapTables, g.info(id, tb))
	}
	g.steps = []modelStep{{ts: snapTs, phys: maps.Clone(g.phys)}}
	for range 60 {
		g.step()
	}
	h := newHistory(t, Options{}, snapTables...)

	// Deliver: windows ending at a random resolved ts; each window's jobs
	// shuffled, plus replays of older jobs and some early arrivals.
	jobs := g.jobs
	for i := 0; i < len(jobs); {
		end := min(len(jobs), i+1+r.IntN(6))
		for end < len(jobs) && jobs[end].CommitTs == jobs[end-1].CommitTs {
			end++ // a resolved ts covers every job at its ts
		}
		batch := slices.Clone(jobs[i:end])
		for range r.IntN(3) {
			batch = append(batch, jobs[r.IntN(end)]) // replay or duplicate
		}
		if end < len(jobs) && r.IntN(2) == 0 {
			batch = append(batch, jobs[end]) // arrives before its resolved ts
		}
		r.Shuffle(len(batch), func(a, b int) { batch[a], batch[b] = batch[b], batch[a] })
		for _, ev := range batch {
			// Each delivery is a fresh decode of the same row.
			require.NoError(t, h.AddJob(JobEvent{Job: roundTrip(t, ev.Job), CommitTs: ev.CommitTs}))
		}
		require.NoError(t, h.AdvanceResolved(jobs[end-1].CommitTs))
		i = end
	}
	final := g.ts
	require.Equal(t, final, h.Resolved())

	ids := map[int64]bool{}
	for _, s := range g.steps {
		for id := range s.phys {
			ids[id] = true
		}
	}
	check := func(from uint64) {
		for ts := from; ts <= final; ts++ {
			i := sort0(g.steps, ts)
			for id := range ids {
				want, known := g.steps[i].phys[id]
				if !known {
					want, known = modelBeforeItsDDL(g.steps, i, id)
				}
				v, err := h.Lookup(id, ts)
				switch {
				case !known:
					require.ErrorIs(t, err, ErrUnknown, "id %d ts %d", id, ts)
				case want.gone:
					require.ErrorIs(t, err, ErrDropped, "id %d ts %d", id, ts)
				default:
					require.NoError(t, err, "id %d ts %d", id, ts)
					got := modelEntry{logical: v.LogicalID, schema: v.SchemaID, name: v.Table.Name, comment: v.Table.Info.Comment}
					require.Equal(t, want, got, "id %d ts %d", id, ts)
				}
			}
		}
	}
	check(snapTs)

	f := snapTs + (final-snapTs)/2
	h.Forget(f)
	check(f)
	_, err := h.Lookup(slices.Collect(maps.Keys(ids))[0], f-1)
	require.True(t, errors.Is(err, ErrTooOld))
}

// modelBeforeItsDDL is what an id unknown at step i reads as
// (History.partitionBeforeItsDDL): its logical table's entry at step i when
// the id's first entry is a live partition of a table that is live and
// partitioned at step i.
func modelBeforeItsDDL(steps []modelStep, i int, id int64) (modelEntry, bool) {
	for _, s := range steps[i+1:] {
		first, ok := s.phys[id]
		if !ok {
			continue
		}
		if first.gone || first.logical == id {
			return modelEntry{}, false
		}
		lv, ok := steps[i].phys[first.logical]
		if !ok || lv.gone || lv.logical != first.logical {
			return modelEntry{}, false
		}
		for p, e := range steps[i].phys {
			if p != first.logical && e.logical == first.logical && !e.gone {
				return lv, true
			}
		}
		return modelEntry{}, false
	}
	return modelEntry{}, false
}

// sort0 is the index of the last step with ts ≤ the given ts.
func sort0(steps []modelStep, ts uint64) int {
	i := 0
	for j, s := range steps {
		if s.ts <= ts {
			i = j
		}
	}
	return i
}
