package pdfake

import (
	"context"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/pingcap/kvproto/pkg/pdpb"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// These tests talk to the fake with a raw pdpb client, to pin down the wire
// behaviour the real pd client relies on; package upstream's tests run the
// real client against it.

func start(t *testing.T, opts Options) (*Server, pdpb.PDClient) {
	t.Helper()
	srv, err := Start(t.Context(), opts)
	require.NoError(t, err)
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, cc.Close()) })
	return srv, pdpb.NewPDClient(cc)
}

func hdr(srv *Server) *pdpb.RequestHeader {
	return &pdpb.RequestHeader{ClusterId: srv.ClusterID()}
}

func TestOptionsValidate(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:0": true,
		"localhost:0": true,
		"[::1]:0":     true,
		"0.0.0.0:0":   false,
		"10.1.2.3:0":  false,
		":2379":       false,
		"127.0.0.1":   false,
	} {
		err := Options{ListenAddr: addr}.Validate()
		if ok {
			require.NoError(t, err, addr)
		} else {
			require.ErrorContains(t, err, "ListenAddr", addr)
		}
	}
	_, err := Start(t.Context(), Options{ListenAddr: "0.0.0.0:0"})
	require.Error(t, err)
}

func TestMembersNameItselfLeader(t *testing.T) {
	srv, pd := start(t, Options{ClusterID: 42})
	require.EqualValues(t, 42, srv.ClusterID())
	require.Equal(t, "http://"+srv.Addr(), srv.URL())

	resp, err := pd.GetMembers(t.Context(), &pdpb.GetMembersRequest{})
	require.NoError(t, err)
	require.EqualValues(t, 42, resp.GetHeader().GetClusterId())
	require.Equal(t, []string{srv.URL()}, resp.GetLeader().GetClientUrls())
	require.Len(t, resp.GetMembers(), 1)

	info, err := pd.GetClusterInfo(t.Context(), &pdpb.GetClusterInfoRequest{})
	require.NoError(t, err)
	require.Equal(t, []pdpb.ServiceMode{pdpb.ServiceMode_PD_SVC_MODE}, info.GetServiceModes())
}

// tso sends one request on stream and returns the last ts of the batch.
func tso(t *testing.T, stream pdpb.PD_TsoClient, h *pdpb.RequestHeader, count uint32) (physical, logical int64) {
	t.Helper()
	require.NoError(t, stream.Send(&pdpb.TsoRequest{Header: h, Count: count}))
	resp, err := stream.Recv()
	require.NoError(t, err)
	require.Equal(t, count, resp.GetCount())
	return resp.GetTimestamp().GetPhysical(), resp.GetTimestamp().GetLogical()
}

func less(p1, l1, p2, l2 int64) bool { return p1 < p2 || (p1 == p2 && l1 < l2) }

func TestTsoBatchesIncreaseAcrossStreams(t *testing.T) {
	srv, pd := start(t, Options{})
	s1, err := pd.Tso(t.Context())
	require.NoError(t, err)
	s2, err := pd.Tso(t.Context())
	require.NoError(t, err)

	before := time.Now()
	p, l := tso(t, s1, hdr(srv), 1)
	require.WithinDuration(t, before, time.UnixMilli(p), time.Second)
	for i := range 100 {
		s := s1
		if i%2 == 1 {
			s = s2
		}
		count := uint32(i%7 + 1)
		np, nl := tso(t, s, hdr(srv), count)
		// The batch is [nl-count+1, nl]: its first must follow the last
		// timestamp handed out before.
		require.True(t, less(p, l, np, nl-int64(count)+1), "batch (%d,%d)x%d not after (%d,%d)", np, nl, count, p, l)
		p, l = np, nl
	}
	require.Equal(t, 2, srv.Calls("Tso"))
}

func TestTsoLogicalOverflowBorrowsNextMillisecond(t *testing.T) {
	frozen := time.Now()
	srv, pd := start(t, Options{Now: func() time.Time { return frozen }})
	s, err := pd.Tso(t.Context())
	require.NoError(t, err)
	p1, l1 := tso(t, s, hdr(srv), maxLogical-1)
	p2, l2 := tso(t, s, hdr(srv), maxLogical-1)
	require.Equal(t, frozen.UnixMilli(), p1)
	require.EqualValues(t, maxLogical-1, l1)
	require.Equal(t, p1+1, p2)
	require.EqualValues(t, maxLogical-1, l2)
}

func TestTsoClockGoingBackwardsStaysMonotonic(t *testing.T) {
	var (
		mu  sync.Mutex
		now = time.Now()
	)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	srv, pd := start(t, Options{Now: clock})
	s, err := pd.Tso(t.Context())
	require.NoError(t, err)
	p1, l1 := tso(t, s, hdr(srv), 1)
	mu.Lock()
	now = now.Add(-time.Minute)
	mu.Unlock()
	p2, l2 := tso(t, s, hdr(srv), 1)
	require.True(t, less(p1, l1, p2, l2))
}

func TestTsoRejectsBadRequests(t *testing.T) {
	srv, pd := start(t, Options{})
	for _, tc := range []struct {
		req  *pdpb.TsoRequest
		code codes.Code
	}{
		{&pdpb.TsoRequest{Header: hdr(srv), Count: 0}, codes.InvalidArgument},
		{&pdpb.TsoRequest{Header: &pdpb.RequestHeader{ClusterId: srv.ClusterID() + 1}, Count: 1}, codes.FailedPrecondition},
	} {
		s, err := pd.Tso(t.Context())
		require.NoError(t, err)
		require.NoError(t, s.Send(tc.req))
		_, err = s.Recv()
		require.Equal(t, tc.code, status.Code(err), err)
	}
}

func TestUnimplementedFailsFastAndIsCounted(t *testing.T) {
	srv, pd := start(t, Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err := pd.GetAllStores(ctx, &pdpb.GetAllStoresRequest{Header: hdr(srv)})
	require.Equal(t, codes.Unimplemented, status.Code(err))
	require.Equal(t, 1, srv.Calls("GetAllStores"))
	require.Equal(t, []string{"GetAllStores"}, srv.UnimplementedCalls())
	require.Zero(t, srv.Calls("GetRegion"))
}

func TestGCSafePointCalls(t *testing.T) {
	srv, pd := start(t, Options{})
	ctx := t.Context()

	get := func() uint64 {
		resp, err := pd.GetGCSafePoint(ctx, &pdpb.GetGCSafePointRequest{Header: hdr(srv)})
		require.NoError(t, err)
		return resp.GetSafePoint()
	}
	require.Zero(t, get())

	// UpdateGCSafePoint only moves forward and answers what is in force.
	resp, err := pd.UpdateGCSafePoint(ctx, &pdpb.UpdateGCSafePointRequest{Header: hdr(srv), SafePoint: 100})
	require.NoError(t, err)
	require.EqualValues(t, 100, resp.GetNewSafePoint())
	resp, err = pd.UpdateGCSafePoint(ctx, &pdpb.UpdateGCSafePointRequest{Header: hdr(srv), SafePoint: 50})
	require.NoError(t, err)
	require.EqualValues(t, 100, resp.GetNewSafePoint())
	require.EqualValues(t, 100, get())
	require.EqualValues(t, 100, srv.GCSafePoint())

	svc := func(id string, ttl int64, sp uint64) *pdpb.UpdateServiceGCSafePointResponse {
		r, err := pd.UpdateServiceGCSafePoint(ctx, &pdpb.UpdateServiceGCSafePointRequest{
			Header: hdr(srv), ServiceId: []byte(id), TTL: ttl, SafePoint: sp,
		})
		require.NoError(t, err)
		return r
	}
	// A new cluster's gc_worker sits at 0 forever: it is the minimum.
	r := svc("cdc", 60, 200)
	require.Equal(t, "gc_worker", string(r.GetServiceId()))
	require.EqualValues(t, 0, r.GetMinSafePoint())
	require.EqualValues(t, math.MaxInt64, r.GetTTL())

	// GC wants 300; the cdc service holds it at 200.
	srv.SetGCSafePoint(300)
	require.EqualValues(t, 200, srv.GCSafePoint())
	r = svc("probe", 0, 0)
	require.Equal(t, "cdc", string(r.GetServiceId()))
	require.EqualValues(t, 200, r.GetMinSafePoint())
	require.InDelta(t, 60, r.GetTTL(), 1)

	// Empty service ids are refused in the header, as PD reports errors.
	r = svc("", 60, 1)
	require.Equal(t, pdpb.ErrorType_INVALID_VALUE, r.GetHeader().GetError().GetType())

	// Wrong cluster.
	_, err = pd.UpdateServiceGCSafePoint(ctx, &pdpb.UpdateServiceGCSafePointRequest{
		Header: &pdpb.RequestHeader{ClusterId: 1}, ServiceId: []byte("x"), TTL: 1, SafePoint: 1,
	})
	require.Equal(t, codes.FailedPrecondition, status.Code(err))
}

func TestGCStateRules(t *testing.T) {
	g := newGCState()
	t0 := time.Unix(1_800_000_000, 0)

	id, minSP, _ := g.updateService("a", 10, 500, t0)
	require.Equal(t, "gc_worker", id)
	require.EqualValues(t, 0, minSP)

	g.setGCWorker(1000, t0)
	require.EqualValues(t, 500, g.gcSafePoint()) // held back by a

	// b may not go below the minimum (a at 500) and is not stored.
	id, minSP, _ = g.updateService("b", 10, 400, t0)
	require.Equal(t, "a", id)
	require.EqualValues(t, 500, minSP)
	require.NotContains(t, g.snapshot(t0), "b")

	// Ties go to the smaller id.
	_, _, _ = g.updateService("0-early", 10, 500, t0)
	id, _, _ = g.updateService("probe", 0, 0, t0)
	require.Equal(t, "0-early", id)

	// Expiry: at exactly the deadline still alive, just after gone.
	require.Contains(t, g.snapshot(t0.Add(10*time.Second)), "a")
	require.NotContains(t, g.snapshot(t0.Add(10*time.Second+time.Nanosecond)), "a")
	id, minSP, _ = g.updateService("probe", 0, 0, t0.Add(11*time.Second))
	require.Equal(t, "gc_worker", id)
	require.EqualValues(t, 1000, minSP)

	// A huge TTL means forever, without overflow.
	_, _, ttl := g.updateService("forever", math.MaxInt64, 2000, t0)
	require.EqualValues(t, math.MaxInt64, ttl)
	require.Contains(t, g.snapshot(t0.Add(100*365*24*time.Hour)), "forever")

	// gc_worker is never removed by a TTL of 0.
	g.updateService("gc_worker", 0, 0, t0)
	require.Contains(t, g.snapshot(t0), "gc_worker")

	// The GC safepoint never moves back, even if gc_worker does.
	g.setGCWorker(10, t0.Add(time.Minute))
	require.EqualValues(t, 500, g.gcSafePoint())
}

func TestConcurrentClientsAndStop(t *testing.T) {
	srv, pd := start(t, Options{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			s, err := pd.Tso(t.Context())
			if err != nil {
				t.Error(err)
				return
			}
			for range 50 {
				if err := s.Send(&pdpb.TsoRequest{Header: hdr(srv), Count: 3}); err != nil {
					t.Error(err)
					return
				}
				if _, err := s.Recv(); err != nil {
					t.Error(err)
					return
				}
			}
			_, err = pd.UpdateServiceGCSafePoint(t.Context(), &pdpb.UpdateServiceGCSafePointRequest{
				Header: hdr(srv), ServiceId: []byte("svc"), TTL: 5, SafePoint: 1,
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()

	// A stream left open does not keep Stop waiting.
	s, err := pd.Tso(t.Context())
	require.NoError(t, err)
	_, _ = tso(t, s, hdr(srv), 1)
	srv.Stop()
	srv.Stop()
	_, err = s.Recv()
	require.Error(t, err)
	_, err = pd.GetMembers(t.Context(), &pdpb.GetMembersRequest{})
	require.Equal(t, codes.Unavailable, status.Code(err))
}
