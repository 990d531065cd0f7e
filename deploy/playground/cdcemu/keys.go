package cdcemu

import (
	"bytes"

	"github.com/pingcap/kvproto/pkg/cdcpb"
	"github.com/pingcap/kvproto/pkg/errorpb"
	"github.com/pingcap/kvproto/pkg/metapb"
	"github.com/pingcap/tidb/pkg/util/codec"
)

// Raw keys compare in the same order as their memcomparable encodings, so the
// emulator keeps every bound decoded and compares event keys directly.
// An empty start is -inf and a nil/empty end is +inf.

func keyInRange(key, start, end []byte) bool {
	return bytes.Compare(key, start) >= 0 && (len(end) == 0 || bytes.Compare(key, end) < 0)
}

func rangesOverlap(s1, e1, s2, e2 []byte) bool {
	return (len(e2) == 0 || bytes.Compare(s1, e2) < 0) && (len(e1) == 0 || bytes.Compare(s2, e1) < 0)
}

// decodeBound turns a memcomparable bound into a raw key; empty stays empty.
func decodeBound(enc []byte) ([]byte, bool) {
	if len(enc) == 0 {
		return nil, true
	}
	_, raw, err := codec.DecodeBytes(enc, nil)
	if err != nil {
		return nil, false
	}
	if raw == nil {
		raw = []byte{}
	}
	return raw, true
}

// covers reports whether the observed range [oStart, oEnd) holds the whole
// region [rStart, rEnd), as TiKV's ObservedRange::update_region_key_range
// decides it: an unbounded region end is covered only by an unbounded
// observed end.
func covers(oStart, oEnd, rStart, rEnd []byte) bool {
	return bytes.Compare(oStart, rStart) <= 0 &&
		(len(oEnd) == 0 || (len(rEnd) != 0 && bytes.Compare(rEnd, oEnd) <= 0))
}

// intersect returns [max(s1,s2), min(e1,e2)) and whether it is non-empty.
func intersect(s1, e1, s2, e2 []byte) ([]byte, []byte, bool) {
	s := s1
	if bytes.Compare(s2, s1) > 0 {
		s = s2
	}
	e := e1
	switch {
	case len(e1) == 0:
		e = e2
	case len(e2) != 0 && bytes.Compare(e2, e1) < 0:
		e = e2
	}
	if len(e) != 0 && bytes.Compare(s, e) >= 0 {
		return s, e, false
	}
	return s, e, true
}

func regionNotFound(id uint64) *cdcpb.Error {
	return &cdcpb.Error{RegionNotFound: &errorpb.RegionNotFound{RegionId: id}}
}

func epochNotMatch(regions []*metapb.Region) *cdcpb.Error {
	return &cdcpb.Error{EpochNotMatch: &errorpb.EpochNotMatch{CurrentRegions: regions}}
}

func notLeader(id uint64, leader *metapb.Peer) *cdcpb.Error {
	return &cdcpb.Error{NotLeader: &errorpb.NotLeader{RegionId: id, Leader: leader}}
}

func serverIsBusy(reason string, backoffMs uint64) *cdcpb.Error {
	return &cdcpb.Error{ServerIsBusy: &errorpb.ServerIsBusy{Reason: reason, BackoffMs: backoffMs}}
}
