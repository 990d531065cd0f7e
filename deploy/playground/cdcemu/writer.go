package cdcemu

import (
	"github.com/pingcap/kvproto/pkg/cdcpb"
	"github.com/pingcap/kvproto/pkg/kvrpcpb"
	"github.com/pingcap/tidb/pkg/store/mockstore/unistore/tikv/mvcc"
)

// shortValueMax is TiKV's short-value limit: values up to it live in the
// write CF, so a COMMIT row carries them; longer ones come only with the
// PREWRITE.
const shortValueMax = 255

// WrapWriter returns the writer unistore's MVCC store must use: it applies
// each batch through inner and turns it into change-data rows (spec §6.1).
// Pass it as store.Config.WrapWriter.
func (e *Emulator) WrapWriter(inner mvcc.DBWriter) mvcc.DBWriter {
	return &writer{e: e, inner: inner}
}

type writer struct {
	e     *Emulator
	inner mvcc.DBWriter
}

type opKind uint8

const (
	opPrewrite opKind = iota + 1
	opCommit
	opRollback
)

type op struct {
	kind opKind
	key  []byte
	lock mvcc.Lock // prewrite / commit
}

type batch struct {
	inner    mvcc.WriteBatch
	startTS  uint64
	commitTS uint64
	ops      []op
}

func (b *batch) Prewrite(key []byte, lock *mvcc.Lock) {
	b.inner.Prewrite(key, lock)
	b.ops = append(b.ops, op{kind: opPrewrite, key: key, lock: *lock})
}

func (b *batch) Commit(key []byte, lock *mvcc.Lock) {
	b.inner.Commit(key, lock)
	b.ops = append(b.ops, op{kind: opCommit, key: key, lock: *lock})
}

func (b *batch) Rollback(key []byte, deleteLock bool) {
	b.inner.Rollback(key, deleteLock)
	b.ops = append(b.ops, op{kind: opRollback, key: key})
}

// Pessimistic locks never reach CDC; lock rewrites by heartbeat and
// check_txn_status also arrive here in unistore, matching TiKV's "prewrite
// without value" filter.
func (b *batch) PessimisticLock(key []byte, lock *mvcc.Lock) { b.inner.PessimisticLock(key, lock) }
func (b *batch) PessimisticRollback(key []byte)              { b.inner.PessimisticRollback(key) }

func (w *writer) Open()  { w.inner.Open() }
func (w *writer) Close() { w.inner.Close() }

func (w *writer) DeleteRange(start, end []byte, h mvcc.LatchHandle) error {
	return w.inner.DeleteRange(start, end, h)
}

func (w *writer) NewWriteBatch(startTS, commitTS uint64, ctx *kvrpcpb.Context) mvcc.WriteBatch {
	return &batch{inner: w.inner.NewWriteBatch(startTS, commitTS, ctx), startTS: startTS, commitTS: commitTS}
}

// Write applies the batch and queues its rows before returning, so the RPC
// that caused it is acknowledged only after its rows are ahead of any later
// resolved ts on every connection.
func (w *writer) Write(wb mvcc.WriteBatch) error {
	b := wb.(*batch)
	e := w.e
	be := e.backend.Load()
	if be == nil || len(b.ops) == 0 {
		return w.inner.Write(b.inner)
	}
	e.applyMu.Lock()
	defer e.applyMu.Unlock()

	// Decide each op's row before the write changes the lock store.
	type planned struct {
		op         *op
		dss        []*downstream
		row        *cdcpb.Event_Row
		lock       bool // commit of a tracked 2PC lock
		lockRecord bool // commit of a key only locked: no lock set holds it
	}
	plans := make([]planned, 0, len(b.ops))
	old := newOldReader(be)
	defer old.close()
	for i := range b.ops {
		o := &b.ops[i]
		d := e.findDelegate(o.key)
		var dss []*downstream
		if d != nil {
			for _, ds := range d.downs {
				if ds.contains(o.key) {
					dss = append(dss, ds)
				}
			}
		}
		p := planned{op: o, dss: dss}
		if o.kind == opCommit && o.lock.Op == uint8(kvrpcpb.Op_Lock) {
			// TiKV builds a row for every write-CF put before it learns the
			// record is a Lock and drops it, and sends the row it left
			// behind: type UNKNOWN, empty key, zero timestamps (spec §2.5).
			// Its range check of that empty key decides who gets it.
			p.dss, p.lockRecord = p.dss[:0], true
			if d != nil {
				for _, ds := range d.downs {
					if ds.takesLockRows() {
						p.dss = append(p.dss, ds)
					}
				}
			}
			if len(p.dss) > 0 {
				p.row = &cdcpb.Event_Row{}
			}
			plans = append(plans, p)
			continue
		}
		switch o.kind {
		case opPrewrite:
			if !rowLock(o.lock.Op) {
				continue
			}
			e.stats.Prewrites.Add(1)
			if len(dss) > 0 {
				p.row = e.prewriteRow(old, copyKey(o.key), o.lock, nil)
			}
		case opCommit:
			if !rowLock(o.lock.Op) {
				continue
			}
			// A 2PC commit finds its own Put/Delete lock. 1PC finds none, or
			// (pessimistic transactions) its pessimistic lock, which CDC never saw.
			if cur := be.Bundle.LockStore.Get(o.key, nil); cur != nil {
				l := mvcc.DecodeLock(cur)
				p.lock = l.StartTS == b.startTS && rowLock(l.Op)
			}
			if len(dss) == 0 {
				break
			}
			key := copyKey(o.key)
			if p.lock {
				e.stats.Commits.Add(1)
				p.row = &cdcpb.Event_Row{
					StartTs: b.startTS, CommitTs: b.commitTS, Type: cdcpb.Event_COMMIT,
					OpType: opType(o.lock.Op), Key: key,
				}
				if p.row.OpType == cdcpb.Event_Row_PUT && len(o.lock.Value) <= shortValueMax {
					p.row.Value = o.lock.Value
				}
			} else {
				// No lock: unistore's 1PC commits straight into the write CF.
				e.stats.Committed.Add(1)
				p.row = committedRow(key, version{startTS: b.startTS, commitTS: b.commitTS, value: lockValue(o.lock)},
					old.at(o.key, b.commitTS-1))
			}
		case opRollback:
			e.stats.Rollbacks.Add(1)
			if len(dss) > 0 {
				p.row = &cdcpb.Event_Row{StartTs: b.startTS, Type: cdcpb.Event_ROLLBACK, Key: copyKey(o.key)}
			}
		}
		plans = append(plans, p)
	}

	if err := w.inner.Write(b.inner); err != nil {
		return err
	}

	var order []*downstream
	rows := make(map[*downstream][]*cdcpb.Event_Row)
	for _, p := range plans {
		for _, ds := range p.dss {
			switch {
			case p.lockRecord:
			case p.op.kind == opPrewrite:
				ds.addLock(p.row.Key, b.startTS)
			case p.op.kind == opCommit, p.op.kind == opRollback:
				ds.removeLock(p.op.key, b.startTS)
			}
			if p.row == nil {
				continue
			}
			if _, ok := rows[ds]; !ok {
				order = append(order, ds)
			}
			rows[ds] = append(rows[ds], p.row)
		}
	}
	for _, ds := range order {
		e.sendRealtime(ds, rows[ds])
	}
	return nil
}

// sendRealtime queues the rows of one applied command for ds as one Event:
// TiKV does not size-split realtime rows (only scan output), so a large
// command makes one Event of several MiB (spec §1.5). An exhausted sink quota
// deregisters ds with `congested` (TiKV ≥ 8.x). applyMu held.
func (e *Emulator) sendRealtime(ds *downstream, rows []*cdcpb.Event_Row) {
	if ds.state.Load() == stateStopped {
		return
	}
	ev := &cdcpb.Event{
		RegionId: ds.regionID, RequestId: ds.requestID,
		Event: &cdcpb.Event_Entries_{Entries: &cdcpb.Event_Entries{Entries: rows}},
	}
	if !ds.conn.enqueue(item{ev: ev, size: int64(ev.Size())}) {
		e.stats.Errors.Add(1)
		e.stopDownstream(ds, &cdcpb.Error{Congested: &cdcpb.Congested{RegionId: ds.regionID}})
		return
	}
	for _, r := range rows {
		if r.Type == cdcpb.Event_UNKNOWN {
			e.stats.UnknownRows.Add(1)
		}
	}
}

func lockValue(l mvcc.Lock) []byte {
	if l.Op == uint8(kvrpcpb.Op_Del) {
		return nil
	}
	return l.Value
}

func copyKey(k []byte) []byte { return append([]byte(nil), k...) }
