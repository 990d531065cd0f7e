package pdserver

import (
	"bytes"
	"context"

	"github.com/pingcap/kvproto/pkg/metapb"
	"github.com/pingcap/kvproto/pkg/pdpb"
)

// Region keys are passed through as they are: unistore's region manager keeps them
// in the same (memcomparable-encoded) form as PD, and client-go's codec PD client
// encodes request keys and decodes response keys itself.

// leaderOf is the region's leader: unistore has one peer per region, its first.
func leaderOf(r *metapb.Region) *metapb.Peer {
	if r == nil || len(r.GetPeers()) == 0 {
		return nil
	}
	return r.GetPeers()[0]
}

// GetRegion returns the region containing the key and its leader, or no region
// (and no error, like PD) when none contains it.
func (s *service) GetRegion(_ context.Context, req *pdpb.GetRegionRequest) (*pdpb.GetRegionResponse, error) {
	if err := s.checkHeader(req.GetHeader()); err != nil {
		return nil, err
	}
	r, _, _, _ := s.st.Regions.GetRegionByKey(req.GetRegionKey())
	return &pdpb.GetRegionResponse{Header: s.header(), Region: r, Leader: leaderOf(r)}, nil
}

// GetPrevRegion returns the region before the one containing the key (the region
// whose end key is that region's start key), as PD does. client-go asks it with a
// region's start key when it locates a range's end key.
func (s *service) GetPrevRegion(_ context.Context, req *pdpb.GetRegionRequest) (*pdpb.GetRegionResponse, error) {
	if err := s.checkHeader(req.GetHeader()); err != nil {
		return nil, err
	}
	resp := &pdpb.GetRegionResponse{Header: s.header()}
	cur, _, _, _ := s.st.Regions.GetRegionByKey(req.GetRegionKey())
	if cur == nil || len(cur.GetStartKey()) == 0 {
		return resp, nil
	}
	prev, _ := s.st.Regions.GetRegionByEndKey(cur.GetStartKey())
	if prev != nil && bytes.Equal(prev.GetEndKey(), cur.GetStartKey()) {
		resp.Region, resp.Leader = prev, leaderOf(prev)
	}
	return resp, nil
}

// GetRegionByID returns the region with the id, or no region when there is none.
func (s *service) GetRegionByID(ctx context.Context, req *pdpb.GetRegionByIDRequest) (*pdpb.GetRegionResponse, error) {
	if err := s.checkHeader(req.GetHeader()); err != nil {
		return nil, err
	}
	resp := &pdpb.GetRegionResponse{Header: s.header()}
	r, err := s.st.PD.GetRegionByID(ctx, req.GetRegionId())
	if err == nil && r != nil && r.Meta != nil {
		resp.Region, resp.Leader = r.Meta, r.Leader
	}
	return resp, nil
}

// ScanRegions returns up to Limit regions (0: all) from the one containing
// StartKey, stopping before EndKey ("" = no end), in both the current Regions
// field and the legacy RegionMetas/Leaders fields older clients read.
func (s *service) ScanRegions(_ context.Context, req *pdpb.ScanRegionsRequest) (*pdpb.ScanRegionsResponse, error) {
	if err := s.checkHeader(req.GetHeader()); err != nil {
		return nil, err
	}
	resp := &pdpb.ScanRegionsResponse{Header: s.header()}
	for _, r := range s.st.Regions.ScanRegions(req.GetStartKey(), req.GetEndKey(), int(req.GetLimit())) {
		leader := r.Leader
		if leader == nil {
			leader = &metapb.Peer{}
		}
		resp.RegionMetas = append(resp.RegionMetas, r.Meta)
		resp.Leaders = append(resp.Leaders, leader)
		resp.Regions = append(resp.Regions, &pdpb.Region{Region: r.Meta, Leader: leader})
	}
	return resp, nil
}

// BatchScanRegions scans several sorted, non-overlapping ranges at once, with PD's
// checks: overlapping or inverted ranges are an error; a region spanning two
// ranges is returned once; Limit (<=0: none) caps the total; with
// ContainAllKeyRange, a hole in the returned regions is the
// REGIONS_NOT_CONTAIN_ALL_KEY_RANGE error.
func (s *service) BatchScanRegions(_ context.Context, req *pdpb.BatchScanRegionsRequest) (*pdpb.BatchScanRegionsResponse, error) {
	if err := s.checkHeader(req.GetHeader()); err != nil {
		return nil, err
	}
	ranges := req.GetRanges()
	for i, kr := range ranges {
		if i > 0 {
			prevEnd := ranges[i-1].GetEndKey()
			if len(prevEnd) == 0 || bytes.Compare(kr.GetStartKey(), prevEnd) < 0 {
				return &pdpb.BatchScanRegionsResponse{
					Header: s.errorHeader(pdpb.ErrorType_UNKNOWN, "invalid key range, ranges overlapped"),
				}, nil
			}
		}
		if len(kr.GetEndKey()) > 0 && bytes.Compare(kr.GetStartKey(), kr.GetEndKey()) > 0 {
			return &pdpb.BatchScanRegionsResponse{
				Header: s.errorHeader(pdpb.ErrorType_UNKNOWN, "invalid key range, start key > end key"),
			}, nil
		}
	}
	limit := int(req.GetLimit())
	full := func(n int) bool { return limit > 0 && n >= limit }
	resp := &pdpb.BatchScanRegionsResponse{Header: s.header()}
	var last *metapb.Region
	for _, kr := range ranges {
		if full(len(resp.Regions)) {
			break
		}
		var prevInRange *metapb.Region
		for _, r := range s.st.Regions.ScanRegions(kr.GetStartKey(), kr.GetEndKey(), 0) {
			if req.GetContainAllKeyRange() {
				if msg := holeBefore(kr, prevInRange, r.Meta); msg != "" {
					return &pdpb.BatchScanRegionsResponse{
						Header: s.errorHeader(pdpb.ErrorType_REGIONS_NOT_CONTAIN_ALL_KEY_RANGE, "%s", msg),
					}, nil
				}
			}
			prevInRange = r.Meta
			if last != nil && last.GetId() == r.Meta.GetId() {
				continue // spans the previous range too; already returned
			}
			leader := r.Leader
			if leader == nil {
				leader = &metapb.Peer{}
			}
			resp.Regions = append(resp.Regions, &pdpb.Region{Region: r.Meta, Leader: leader})
			last = r.Meta
			if full(len(resp.Regions)) {
				break
			}
		}
		if req.GetContainAllKeyRange() && !full(len(resp.Regions)) {
			if msg := holeAfter(kr, prevInRange); msg != "" {
				return &pdpb.BatchScanRegionsResponse{
					Header: s.errorHeader(pdpb.ErrorType_REGIONS_NOT_CONTAIN_ALL_KEY_RANGE, "%s", msg),
				}, nil
			}
		}
	}
	return resp, nil
}

// holeBefore reports a gap between the previous region in the range (nil: the
// range start) and r.
func holeBefore(kr *pdpb.KeyRange, prev, r *metapb.Region) string {
	if prev == nil {
		if bytes.Compare(r.GetStartKey(), kr.GetStartKey()) > 0 {
			return "the first region does not contain the start of the key range"
		}
		return ""
	}
	if !bytes.Equal(prev.GetEndKey(), r.GetStartKey()) {
		return "regions are not adjacent"
	}
	return ""
}

// holeAfter reports a gap between the last region in the range and the range end.
func holeAfter(kr *pdpb.KeyRange, last *metapb.Region) string {
	if last == nil {
		return "no region in the key range"
	}
	end := last.GetEndKey()
	if len(end) == 0 {
		return ""
	}
	if len(kr.GetEndKey()) == 0 || bytes.Compare(end, kr.GetEndKey()) < 0 {
		return "the last region does not contain the end of the key range"
	}
	return ""
}
