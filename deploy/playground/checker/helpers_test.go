package checker

import (
	"github.com/pingcap/kvproto/pkg/cdcpb"
	"github.com/pingcap/kvproto/pkg/errorpb"
	"github.com/pingcap/tidb/pkg/util/codec"
)

const testTable = 1

// tableKey is the raw record key of handle h in table tid.
func tableKey(tid, h int64) []byte {
	k := codec.EncodeInt([]byte{'t'}, tid)
	k = append(k, '_', 'r')
	return codec.EncodeInt(k, h)
}

// tk is a record key of the test table.
func tk(h int64) []byte { return tableKey(testTable, h) }

func tablePrefix(tid int64, suffix byte) []byte {
	k := codec.EncodeInt([]byte{'t'}, tid)
	return append(k, '_', suffix)
}

func enc(raw []byte) []byte { return codec.EncodeBytes(nil, raw) }

// Memcomparable bounds of the whole test table's record range.
var (
	tableStart = enc(tablePrefix(testTable, 'r'))
	tableEnd   = enc(tablePrefix(testTable, 's'))
)

const modernVersion = "8.5.0"

func regV(version string, req, region, checkpoint uint64, start, end []byte) *cdcpb.ChangeDataRequest {
	return &cdcpb.ChangeDataRequest{
		Header:       &cdcpb.Header{ClusterId: 1, TicdcVersion: version},
		RegionId:     region,
		RequestId:    req,
		CheckpointTs: checkpoint,
		StartKey:     start,
		EndKey:       end,
		Request:      &cdcpb.ChangeDataRequest_Register_{Register: &cdcpb.ChangeDataRequest_Register{}},
	}
}

func reg(req, region, checkpoint uint64) *cdcpb.ChangeDataRequest {
	return regV(modernVersion, req, region, checkpoint, tableStart, tableEnd)
}

func dereg(req, region uint64) *cdcpb.ChangeDataRequest {
	return &cdcpb.ChangeDataRequest{
		Header:    &cdcpb.Header{ClusterId: 1, TicdcVersion: modernVersion},
		RegionId:  region,
		RequestId: req,
		Request:   &cdcpb.ChangeDataRequest_Deregister_{Deregister: &cdcpb.ChangeDataRequest_Deregister{}},
	}
}

func entries(req, region uint64, rs ...*cdcpb.Event_Row) *cdcpb.Event {
	return &cdcpb.Event{RegionId: region, RequestId: req,
		Event: &cdcpb.Event_Entries_{Entries: &cdcpb.Event_Entries{Entries: rs}}}
}

func msg(evs ...*cdcpb.Event) *cdcpb.ChangeDataEvent { return &cdcpb.ChangeDataEvent{Events: evs} }

func rows(req, region uint64, rs ...*cdcpb.Event_Row) *cdcpb.ChangeDataEvent {
	return msg(entries(req, region, rs...))
}

func val(start uint64) []byte { return []byte{'v', byte(start >> 8), byte(start)} }

func pw(key []byte, start uint64, op cdcpb.Event_Row_OpType) *cdcpb.Event_Row {
	r := &cdcpb.Event_Row{Type: cdcpb.Event_PREWRITE, Key: key, StartTs: start, OpType: op}
	if op == cdcpb.Event_Row_PUT {
		r.Value = val(start)
	}
	return r
}

func put(key []byte, start uint64) *cdcpb.Event_Row { return pw(key, start, cdcpb.Event_Row_PUT) }

func cm(key []byte, start, commit uint64) *cdcpb.Event_Row {
	return &cdcpb.Event_Row{Type: cdcpb.Event_COMMIT, Key: key, StartTs: start, CommitTs: commit, OpType: cdcpb.Event_Row_PUT}
}

func cmDel(key []byte, start, commit uint64) *cdcpb.Event_Row {
	r := cm(key, start, commit)
	r.OpType = cdcpb.Event_Row_DELETE
	return r
}

func cd(key []byte, start, commit uint64) *cdcpb.Event_Row {
	return &cdcpb.Event_Row{Type: cdcpb.Event_COMMITTED, Key: key, StartTs: start, CommitTs: commit,
		OpType: cdcpb.Event_Row_PUT, Value: val(start)}
}

func cdDel(key []byte, start, commit uint64) *cdcpb.Event_Row {
	return &cdcpb.Event_Row{Type: cdcpb.Event_COMMITTED, Key: key, StartTs: start, CommitTs: commit,
		OpType: cdcpb.Event_Row_DELETE}
}

func rb(key []byte, start uint64) *cdcpb.Event_Row {
	return &cdcpb.Event_Row{Type: cdcpb.Event_ROLLBACK, Key: key, StartTs: start}
}

func initRow() *cdcpb.Event_Row { return &cdcpb.Event_Row{Type: cdcpb.Event_INITIALIZED} }

func rts(req, ts uint64, regions ...uint64) *cdcpb.ChangeDataEvent {
	return &cdcpb.ChangeDataEvent{ResolvedTs: &cdcpb.ResolvedTs{Regions: regions, Ts: ts, RequestId: req}}
}

func legacyRtsEvent(req, region, ts uint64) *cdcpb.Event {
	return &cdcpb.Event{RegionId: region, RequestId: req, Event: &cdcpb.Event_ResolvedTs{ResolvedTs: ts}}
}

func legacyRts(req, region, ts uint64) *cdcpb.ChangeDataEvent {
	return msg(legacyRtsEvent(req, region, ts))
}

func errEvent(req, region uint64, e *cdcpb.Error) *cdcpb.Event {
	return &cdcpb.Event{RegionId: region, RequestId: req, Event: &cdcpb.Event_Error{Error: e}}
}

func epochErr(req, region uint64) *cdcpb.ChangeDataEvent {
	return msg(errEvent(req, region, &cdcpb.Error{EpochNotMatch: &errorpb.EpochNotMatch{}}))
}

func notFoundErr(req, region uint64) *cdcpb.ChangeDataEvent {
	return msg(errEvent(req, region, &cdcpb.Error{RegionNotFound: &errorpb.RegionNotFound{RegionId: region}}))
}

func dupErr(req, region uint64) *cdcpb.ChangeDataEvent {
	return msg(errEvent(req, region, &cdcpb.Error{DuplicateRequest: &cdcpb.DuplicateRequest{RegionId: region}}))
}

// step is one tap call.
type step struct {
	conn  uint64
	req   *cdcpb.ChangeDataRequest
	ev    *cdcpb.ChangeDataEvent
	mux   *bool
	close bool
}

func (s step) apply(c *Checker) {
	switch {
	case s.mux != nil:
		c.SetMultiplexing(s.conn, *s.mux)
	case s.close:
		c.CloseConn(s.conn)
	case s.req != nil:
		c.Request(s.conn, s.req)
	case s.ev != nil:
		c.Event(s.conn, s.ev)
	}
}

// Steps on connection 1 unless said otherwise.
func R(req *cdcpb.ChangeDataRequest) step               { return step{conn: 1, req: req} }
func E(ev *cdcpb.ChangeDataEvent) step                  { return step{conn: 1, ev: ev} }
func RC(conn uint64, req *cdcpb.ChangeDataRequest) step { return step{conn: conn, req: req} }
func EC(conn uint64, ev *cdcpb.ChangeDataEvent) step    { return step{conn: conn, ev: ev} }
func Mux(conn uint64, on bool) step                     { return step{conn: conn, mux: &on} }
func Close(conn uint64) step                            { return step{conn: conn, close: true} }
