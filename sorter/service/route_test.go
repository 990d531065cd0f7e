package service

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tidestream/tidestream/proto/contract"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
	"github.com/tidestream/tidestream/sorter/engine"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// servePullerTCP serves fp on a loopback port and returns its address.
func servePullerTCP(t *testing.T, fp *fakePuller) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	g := grpc.NewServer()
	tidestreamv1.RegisterPullerServiceServer(g, fp)
	served := make(chan struct{})
	go func() { defer close(served); _ = g.Serve(lis) }()
	t.Cleanup(func() { g.Stop(); <-served })
	return lis.Addr().String()
}

// Each pipeline pulls from the puller its route names, over one connection
// per address, and the route goes to the puller unchanged; with no route
// and no default puller the request is refused as a bad request.
func TestPipelinesPullFromTheirRoute(t *testing.T) {
	oneEvent := func(key string) func(context.Context, int, *tidestreamv1.SubscribeRequest, func(*tidestreamv1.PullerBatch) error) error {
		return func(ctx context.Context, _ int, req *tidestreamv1.SubscribeRequest, send func(*tidestreamv1.PullerBatch) error) error {
			err := send(&tidestreamv1.PullerBatch{ResolvedTs: req.FromTs + 10, Events: []*tidestreamv1.RawKVEvent{
				{Key: []byte(key), Op: tidestreamv1.OpType_OP_TYPE_PUT, StartTs: req.FromTs + 1, CommitTs: req.FromTs + 2}}})
			if err != nil {
				return err
			}
			<-ctx.Done()
			return nil
		}
	}
	a, b := &fakePuller{gen: oneEvent("from-a")}, &fakePuller{gen: oneEvent("from-b")}
	addrA, addrB := servePullerTCP(t, a), servePullerTCP(t, b)

	eng, err := engine.Open(engine.Config{Dir: t.TempDir(), MemoryQuota: 16 << 20})
	require.NoError(t, err)
	svc, err := New(Config{Engine: eng, RetryBackoff: 5 * time.Millisecond})
	require.NoError(t, err)
	down := serveBufconn(t, svc.Register)
	t.Cleanup(func() { require.NoError(t, eng.Close()) })
	t.Cleanup(svc.Close)
	client := tidestreamv1.NewSorterServiceClient(down)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	for i, tc := range []struct {
		addr, key string
		fp        *fakePuller
	}{{addrA, "from-a", a}, {addrB, "from-b", b}, {addrA, "from-a", a}} {
		route := &tidestreamv1.Route{PullerAddr: tc.addr, PdAddrs: []string{"127.0.0.1:2379"}}
		r := subReq(int64(i+1), 1, 100)
		r.Route = route
		st, err := client.Subscribe(ctx, r)
		require.NoError(t, err)
		c := &consumer{t: t}
		c.until(st, 110)
		require.Len(t, c.got, 1)
		require.Equal(t, tc.key, string(c.got[0].Key), "pipeline %d pulled from its route's puller", i+1)
		reqs := tc.fp.requests()
		got := reqs[len(reqs)-1].GetRoute()
		require.Equal(t, tc.addr, got.GetPullerAddr(), "the route is passed on")
		require.Equal(t, []string{"127.0.0.1:2379"}, got.GetPdAddrs(), "the route is passed on")
	}
	require.Equal(t, 2, svc.conns.Len(), "one connection per puller address")

	st, err := client.Subscribe(ctx, subReq(9, 1, 100))
	require.NoError(t, err)
	_, err = st.Recv()
	require.Equal(t, contract.Fatal, contract.Classify(err), "%v", err)
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), "route.puller_addr")
}
