package cdcemu

import (
	"bytes"
	"fmt"
	"math"
	"time"

	"github.com/pingcap/badger"
	"github.com/pingcap/kvproto/pkg/cdcpb"
	"github.com/pingcap/kvproto/pkg/kvrpcpb"
	"github.com/pingcap/kvproto/pkg/metapb"
	"github.com/pingcap/tidb/pkg/store/mockstore/unistore/tikv/mvcc"
)

// getRegion returns the region with id, or nil. The region manager's own
// GetRegion dereferences a missing entry, so a stale id would panic.
func getRegion(b *Backend, id uint64) (r *metapb.Region) {
	defer func() {
		if recover() != nil {
			r = nil
		}
	}()
	return b.Regions.GetRegion(id)
}

// register follows TiKV's on_register checks in order (spec §2.2); the first
// failing one answers with an Error event and creates nothing.
func (e *Emulator) register(c *conn, req *cdcpb.ChangeDataRequest) {
	b := e.backend.Load()
	e.applyMu.Lock()
	c.setGates(req.GetHeader())
	ds, rows, errEv := e.registerLocked(b, c, req)
	e.applyMu.Unlock()
	e.stats.Registers.Add(1)
	if errEv != nil {
		e.stats.Errors.Add(1)
		c.enqueueError(req.GetRequestId(), req.GetRegionId(), errEv)
		return
	}
	e.pendingScans.Add(1)
	go e.emitScan(ds, rows)
}

func (e *Emulator) registerLocked(b *Backend, c *conn, req *cdcpb.ChangeDataRequest) (*downstream, []*cdcpb.Event_Row, *cdcpb.Error) {
	regionID := req.GetRegionId()
	if c.validateClusterID && req.GetHeader().GetClusterId() != b.ClusterID {
		return nil, nil, &cdcpb.Error{ClusterIdMismatch: &cdcpb.ClusterIDMismatch{
			Current: b.ClusterID, Request: req.GetHeader().GetClusterId(),
		}}
	}
	if req.GetKvApi() != cdcpb.ChangeDataRequest_TiDB {
		return nil, nil, &cdcpb.Error{Compatibility: &cdcpb.Compatibility{RequiredVersion: "6.2.0"}}
	}
	if int(e.pendingScans.Load()) >= e.faults.pendingLimitOr(e.cfg.PendingScanLimit) {
		return nil, nil, serverIsBusy("too many pending incremental scans", 0)
	}
	if inj := e.faults.takeRegisterError(regionID); inj != nil {
		return nil, nil, inj
	}
	region := getRegion(b, regionID)
	if region == nil {
		return nil, nil, regionNotFound(regionID)
	}
	if _, dup := c.subs[subKey{req.GetRequestId(), regionID}]; dup {
		// The live subscription under this key keeps streaming (spec §2.10).
		e.stats.DuplicateRegisters.Add(1)
		return nil, nil, &cdcpb.Error{DuplicateRequest: &cdcpb.DuplicateRequest{RegionId: regionID}}
	}
	if req.GetRegionEpoch().GetVersion() != region.GetRegionEpoch().GetVersion() {
		return nil, nil, epochNotMatch([]*metapb.Region{region})
	}

	rStart, ok1 := decodeBound(region.GetStartKey())
	rEnd, ok2 := decodeBound(region.GetEndKey())
	if !ok1 || !ok2 {
		return nil, nil, regionNotFound(regionID)
	}
	// Observed range ∩ region; undecodable bounds fall back to the whole
	// region, as TiKV does.
	oStart, okS := decodeBound(req.GetStartKey())
	oEnd, okE := decodeBound(req.GetEndKey())
	if !okS || !okE {
		e.log.Warn("observed range is not memcomparable; observing the whole region", "region", regionID)
		oStart, oEnd = nil, nil
	}
	start, end, _ := intersect(rStart, rEnd, oStart, oEnd)

	d := e.delegateByRegion(regionID)
	if d != nil && d.region.GetRegionEpoch().GetVersion() != region.GetRegionEpoch().GetVersion() {
		e.stopDelegate(d, epochNotMatch([]*metapb.Region{region}))
		d = nil
	}
	// TiKV decides whether a downstream's observed range covers its region
	// once, when the delegate's lock scan finishes, for the downstreams
	// present then. Here the lock scan runs inside this call, so only the
	// registration that creates the delegate is present; one joining a live
	// delegate never gets the flag, as in TiKV.
	newDelegate := d == nil
	if newDelegate {
		d = &delegate{region: region, rawStart: rStart, rawEnd: rEnd}
		e.addDelegate(d)
	}
	ds := &downstream{
		conn: c, requestID: req.GetRequestId(), regionID: regionID, delegate: d,
		rawStart: start, rawEnd: end, checkpoint: req.GetCheckpointTs(),
		coversRegion:    newDelegate && covers(oStart, oEnd, rStart, rEnd),
		observedFromMin: len(oStart) == 0,
		lockKeys:        make(map[string]uint64), lockTS: make(map[uint64]int),
	}
	ds.state.Store(stateInitializing)
	rows, err := e.snapshot(b, ds)
	if err != nil {
		e.log.Error("incremental scan failed", "region", regionID, "err", err)
		if len(d.downs) == 0 {
			e.removeDelegate(d)
		}
		return nil, nil, regionNotFound(regionID)
	}
	d.downs = append(d.downs, ds)
	c.subs[subKey{ds.requestID, regionID}] = ds
	return ds, rows, nil
}

// snapshot captures the lock set and the incremental-scan rows of ds while
// applyMu is held, so no write can fall between the snapshot and the start
// of observation (spec §6.2).
func (e *Emulator) snapshot(b *Backend, ds *downstream) ([]*cdcpb.Event_Row, error) {
	locks := make(map[string]mvcc.Lock)
	var lockKeys [][]byte // ascending, as the lock store iterates
	it := b.Bundle.LockStore.NewIterator()
	for it.Seek(ds.rawStart); it.Valid(); it.Next() {
		k := it.Key()
		if len(ds.rawEnd) != 0 && bytes.Compare(k, ds.rawEnd) >= 0 {
			break
		}
		l := mvcc.DecodeLock(it.Value())
		if !rowLock(l.Op) {
			continue
		}
		key := append([]byte(nil), k...)
		l.Value = append([]byte(nil), l.Value...)
		locks[string(key)] = l
		lockKeys = append(lockKeys, key)
		ds.addLock(key, l.StartTS)
	}

	txn := b.Bundle.DB.NewTransaction(false)
	defer txn.Discard()
	txn.SetReadTS(math.MaxUint64)
	opts := badger.DefaultIteratorOptions
	opts.AllVersions = true
	iter := txn.NewIterator(opts)
	defer iter.Close()

	var rows []*cdcpb.Event_Row
	old := newOldReader(b)
	defer old.close()
	li := 0
	emitLocksBefore := func(key []byte) {
		for li < len(lockKeys) && (key == nil || bytes.Compare(lockKeys[li], key) < 0) {
			rows = append(rows, e.prewriteRow(old, lockKeys[li], locks[string(lockKeys[li])], nil))
			li++
		}
	}

	var cur []byte
	var versions []version
	flush := func() {
		if cur == nil {
			return
		}
		emitLocksBefore(cur)
		if li < len(lockKeys) && bytes.Equal(lockKeys[li], cur) {
			l := locks[string(cur)]
			rows = append(rows, e.prewriteRow(old, cur, l, versions))
			li++
		}
		for i, v := range versions {
			if v.commitTS <= ds.checkpoint {
				break
			}
			var old []byte
			if i+1 < len(versions) {
				old = versions[i+1].value
			}
			rows = append(rows, committedRow(cur, v, old))
		}
		cur, versions = nil, nil
	}
	for iter.Seek(ds.rawStart); iter.Valid(); iter.Next() {
		item := iter.Item()
		k := item.Key()
		if len(ds.rawEnd) != 0 && bytes.Compare(k, ds.rawEnd) >= 0 {
			break
		}
		um := item.UserMeta()
		if len(k) > 0 && k[0] == 0xff || len(um) != 16 {
			continue // unistore's own metadata
		}
		meta := mvcc.DBUserMeta(um)
		if item.Version() == meta.StartTS() {
			continue // rollback / op-lock marker (extra txn status key)
		}
		if cur == nil || !bytes.Equal(cur, k) {
			flush()
			cur = append([]byte(nil), k...)
		}
		val, err := item.ValueCopy(nil)
		if err != nil {
			return nil, fmt.Errorf("read %x@%d: %w", k, item.Version(), err)
		}
		versions = append(versions, version{startTS: meta.StartTS(), commitTS: meta.CommitTS(), value: val})
	}
	flush()
	emitLocksBefore(nil)
	rows = append(rows, &cdcpb.Event_Row{Type: cdcpb.Event_INITIALIZED})
	return rows, nil
}

type version struct {
	startTS, commitTS uint64
	value             []byte // empty = delete
}

func rowLock(op uint8) bool {
	return op == uint8(kvrpcpb.Op_Put) || op == uint8(kvrpcpb.Op_Del) || op == uint8(kvrpcpb.Op_Insert)
}

func opType(lockOp uint8) cdcpb.Event_Row_OpType {
	if lockOp == uint8(kvrpcpb.Op_Del) {
		return cdcpb.Event_Row_DELETE
	}
	return cdcpb.Event_Row_PUT
}

// prewriteRow builds a PREWRITE for a lock; versions (newest first), when the
// caller has them, save a read for the old value.
func (e *Emulator) prewriteRow(old *oldReader, key []byte, l mvcc.Lock, versions []version) *cdcpb.Event_Row {
	at := max(l.StartTS, l.ForUpdateTS)
	var prev []byte
	if versions != nil {
		for _, v := range versions {
			if v.commitTS <= at {
				prev = v.value
				break
			}
		}
	} else {
		prev = old.at(key, at)
	}
	r := &cdcpb.Event_Row{
		StartTs: l.StartTS, Type: cdcpb.Event_PREWRITE, OpType: opType(l.Op),
		Key: key, OldValue: prev,
	}
	if r.OpType == cdcpb.Event_Row_PUT {
		r.Value = l.Value
	}
	return r
}

func committedRow(key []byte, v version, old []byte) *cdcpb.Event_Row {
	r := &cdcpb.Event_Row{
		StartTs: v.startTS, CommitTs: v.commitTS, Type: cdcpb.Event_COMMITTED,
		OpType: cdcpb.Event_Row_PUT, Key: key, Value: v.value, OldValue: old,
	}
	if len(v.value) == 0 {
		r.OpType, r.Value = cdcpb.Event_Row_DELETE, nil
	}
	return r
}

// oldReader reads old values (spec §2.6) through one badger transaction per
// applied batch or scan, moving its read ts per key as unistore's own reader
// does, instead of opening a transaction per row.
type oldReader struct {
	db  *badger.DB
	txn *badger.Txn
}

func newOldReader(b *Backend) *oldReader { return &oldReader{db: b.Bundle.DB} }

// at is the newest committed Put at or below ts; a Delete or nothing gives
// empty.
func (r *oldReader) at(key []byte, ts uint64) []byte {
	if r.txn == nil {
		r.txn = r.db.NewTransaction(false)
	}
	r.txn.SetReadTS(ts)
	item, err := r.txn.Get(key)
	if err != nil || item == nil {
		return nil
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return nil
	}
	return v
}

func (r *oldReader) close() {
	if r.txn != nil {
		r.txn.Discard()
		r.txn = nil
	}
}

// emitScan streams the scan rows, then INITIALIZED; the downstream turns
// Normal once INITIALIZED has been handed to gRPC (spec §2.3).
func (e *Emulator) emitScan(ds *downstream, rows []*cdcpb.Event_Row) {
	defer e.pendingScans.Add(-1)
	select {
	case e.scanSem <- struct{}{}:
	case <-ds.conn.ctx.Done():
		return
	}
	defer func() { <-e.scanSem }()
	if d := e.faults.initDelayFor(ds.regionID); d > 0 {
		select {
		case <-time.After(d):
		case <-ds.conn.ctx.Done():
			return
		}
	}
	e.stats.ScanRows.Add(uint64(len(rows) - 1))
	for len(rows) > 0 {
		ev, n := packRows(ds, rows, scanBatchRows)
		rows = rows[n:]
		it := item{ev: ev, ds: ds, size: int64(ev.Size())}
		if len(rows) == 0 {
			it.onSent = func() { ds.state.CompareAndSwap(stateInitializing, stateNormal) }
		}
		if !ds.conn.enqueueScan(it) {
			return
		}
	}
}

// packRows puts rows into one Event up to ~32 KiB or limit rows.
func packRows(ds *downstream, rows []*cdcpb.Event_Row, limit int) (*cdcpb.Event, int) {
	n, size := 0, 0
	for n < len(rows) && n < limit {
		rs := len(rows[n].Key) + len(rows[n].Value) + len(rows[n].OldValue)
		if n > 0 && size+rs > maxEventBytes {
			break
		}
		size += rs
		n++
	}
	return &cdcpb.Event{
		RegionId: ds.regionID, RequestId: ds.requestID,
		Event: &cdcpb.Event_Entries_{Entries: &cdcpb.Event_Entries{Entries: rows[:n]}},
	}, n
}

// deregister removes one subscription or all of a request id (spec §2.11),
// each answered with region_not_found.
func (e *Emulator) deregister(c *conn, req *cdcpb.ChangeDataRequest) {
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	for k, ds := range c.subs {
		if k.requestID != req.GetRequestId() {
			continue
		}
		if req.GetRegionId() != 0 && k.regionID != req.GetRegionId() {
			continue
		}
		e.stats.Errors.Add(1)
		e.stopDownstream(ds, regionNotFound(k.regionID))
	}
}
