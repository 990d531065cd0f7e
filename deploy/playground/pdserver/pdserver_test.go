package pdserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pingcap/kvproto/pkg/keyspacepb"
	"github.com/pingcap/kvproto/pkg/meta_storagepb"
	"github.com/pingcap/kvproto/pkg/metapb"
	"github.com/pingcap/kvproto/pkg/pdpb"
	rmpb "github.com/pingcap/kvproto/pkg/resource_manager"
	"github.com/pingcap/tidb/pkg/util/codec"
	"github.com/tikv/client-go/v2/kv"
	"github.com/tikv/client-go/v2/oracle"
	"github.com/tikv/client-go/v2/tikv"
	pd "github.com/tikv/pd/client"
	pdhttp "github.com/tikv/pd/client/http"
	rmclient "github.com/tikv/pd/client/resource_group/controller"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/tidestream/tidestream/deploy/playground/store"
)

// cluster is a store plus a PD server on it, both on dirs under one root.
type cluster struct {
	st  *store.Store
	srv *Server
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("PDSERVER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// startCluster opens the store under root/store and PD under root/pd on pdAddr.
// The caller stops it with stop (also registered as cleanup; stopping twice is
// fine).
func startCluster(t *testing.T, root, pdAddr string) *cluster {
	t.Helper()
	st, err := store.Open(store.Config{
		Dir:       filepath.Join(root, "store"),
		StoreAddr: "127.0.0.1:1", // nothing dials it in these tests
		PDAddr:    pdAddr,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := Start(ctx, Config{
		Dir:        filepath.Join(root, "pd"),
		ClientAddr: pdAddr,
		Store:      st,
		Logger:     testLogger(t),
	})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	c := &cluster{st: st, srv: srv}
	t.Cleanup(c.stop)
	return c
}

func (c *cluster) stop() {
	if c.srv != nil {
		c.srv.Close()
		c.srv = nil
	}
	if c.st != nil {
		c.st.Close()
		c.st = nil
	}
}

func newPDClient(t *testing.T, addr string) pd.Client {
	t.Helper()
	// The context is the client's lifetime, not a dial timeout.
	cli, err := pd.NewClientWithContext(context.Background(), []string{addr}, pd.SecurityOption{},
		pd.WithCustomTimeoutOption(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cli.Close)
	return cli
}

// rawConn is a plain gRPC connection to the PD port, for calls the PD client
// does not expose (or checks the client would hide).
func rawConn(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func compose(p, l int64) uint64 { return oracle.ComposeTS(p, l) }

// versionAtLeast compares dotted numeric versions ("8.5.0" >= "8.5.0").
func versionAtLeast(t *testing.T, v, min string) bool {
	t.Helper()
	parse := func(s string) []int {
		var out []int
		for _, part := range strings.Split(strings.TrimPrefix(s, "v"), ".") {
			n, err := strconv.Atoi(strings.SplitN(part, "-", 2)[0])
			if err != nil {
				t.Fatalf("bad version %q", s)
			}
			out = append(out, n)
		}
		return out
	}
	a, b := parse(v), parse(min)
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return a[i] > b[i]
		}
	}
	return len(a) >= len(b)
}

func TestConfigValidate(t *testing.T) {
	st := &store.Store{}
	ok := Config{Dir: "d", ClientAddr: "127.0.0.1:2379", Store: st}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	for name, c := range map[string]Config{
		"no dir":         {ClientAddr: "127.0.0.1:2379", Store: st},
		"no addr":        {Dir: "d", Store: st},
		"port 0":         {Dir: "d", ClientAddr: "127.0.0.1:0", Store: st},
		"no port":        {Dir: "d", ClientAddr: "127.0.0.1", Store: st},
		"no store":       {Dir: "d", ClientAddr: "127.0.0.1:2379"},
		"peer port 0":    {Dir: "d", ClientAddr: "127.0.0.1:2379", PeerAddr: "127.0.0.1:0", Store: st},
		"peer is client": {Dir: "d", ClientAddr: "127.0.0.1:2379", PeerAddr: "127.0.0.1:2379", Store: st},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestMembersAndClusterInfo(t *testing.T) {
	addr := freeAddr(t)
	c := startCluster(t, t.TempDir(), addr)
	cli := newPDClient(t, addr)
	ctx := ctxTimeout(t, 30*time.Second)

	if got := cli.GetClusterID(ctx); got != c.st.ClusterID {
		t.Fatalf("cluster id = %d, want %d", got, c.st.ClusterID)
	}
	if got := c.srv.Addr(); got != addr {
		t.Fatalf("Addr() = %q, want %q", got, addr)
	}
	members, err := cli.GetAllMembers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(members) != 1 || len(members[0].GetClientUrls()) != 1 || members[0].GetClientUrls()[0] != "http://"+addr {
		t.Fatalf("members = %v", members)
	}
	if got := cli.GetLeaderURL(); got != "http://"+addr {
		t.Fatalf("leader url = %q", got)
	}

	// The PD client marks a member unreachable unless gRPC health says SERVING.
	conn := rawConn(t, addr)
	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v", h, err)
	}
	pdc := pdpb.NewPDClient(conn)
	resp, err := pdc.GetMembers(ctx, &pdpb.GetMembersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetHeader().GetClusterId() != c.st.ClusterID || resp.GetLeader().GetMemberId() == 0 ||
		resp.GetLeader().GetMemberId() != resp.GetMembers()[0].GetMemberId() {
		t.Fatalf("GetMembers = %v", resp)
	}
	info, err := pdc.GetClusterInfo(ctx, &pdpb.GetClusterInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(info.GetServiceModes()) != 1 || info.GetServiceModes()[0] != pdpb.ServiceMode_PD_SVC_MODE {
		t.Fatalf("GetClusterInfo = %v", info)
	}
	hdr := &pdpb.RequestHeader{ClusterId: c.st.ClusterID}
	boot, err := pdc.IsBootstrapped(ctx, &pdpb.IsBootstrappedRequest{Header: hdr})
	if err != nil || !boot.GetBootstrapped() {
		t.Fatalf("IsBootstrapped = %v, %v", boot, err)
	}
	cfg, err := pdc.GetClusterConfig(ctx, &pdpb.GetClusterConfigRequest{Header: hdr})
	if err != nil || cfg.GetCluster().GetId() != c.st.ClusterID || cfg.GetCluster().GetMaxPeerCount() != 1 {
		t.Fatalf("GetClusterConfig = %v, %v", cfg, err)
	}
	id1, err := pdc.AllocID(ctx, &pdpb.AllocIDRequest{Header: hdr})
	if err != nil {
		t.Fatal(err)
	}
	id2, err := pdc.AllocID(ctx, &pdpb.AllocIDRequest{Header: hdr})
	if err != nil {
		t.Fatal(err)
	}
	if id2.GetId() <= id1.GetId() {
		t.Fatalf("AllocID not increasing: %d then %d", id1.GetId(), id2.GetId())
	}
	if _, err := pdc.ScatterRegion(ctx, &pdpb.ScatterRegionRequest{Header: hdr, RegionsId: []uint64{1}}); err != nil {
		t.Fatal(err)
	}
	op, err := pdc.GetOperator(ctx, &pdpb.GetOperatorRequest{Header: hdr, RegionId: 7})
	if err != nil || op.GetStatus() != pdpb.OperatorStatus_SUCCESS || op.GetRegionId() != 7 {
		t.Fatalf("GetOperator = %v, %v", op, err)
	}
	if _, err := pdc.StoreHeartbeat(ctx, &pdpb.StoreHeartbeatRequest{Header: hdr, Stats: &pdpb.StoreStats{StoreId: c.st.StoreID}}); err != nil {
		t.Fatal(err)
	}
	hb, err := pdc.RegionHeartbeat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := hb.Send(&pdpb.RegionHeartbeatRequest{Header: hdr}); err != nil {
		t.Fatal(err)
	}
	if err := hb.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := hb.Recv(); err != io.EOF {
		t.Fatalf("region heartbeat stream ended with %v, want EOF", err)
	}
}

func TestClusterIDMismatchAndUnimplemented(t *testing.T) {
	addr := freeAddr(t)
	c := startCluster(t, t.TempDir(), addr)
	pdc := pdpb.NewPDClient(rawConn(t, addr))
	wrong := &pdpb.RequestHeader{ClusterId: c.st.ClusterID + 1}

	ctx := ctxTimeout(t, 10*time.Second)
	_, err := pdc.GetRegion(ctx, &pdpb.GetRegionRequest{Header: wrong, RegionKey: []byte("a")})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "mismatch cluster id") {
		t.Fatalf("GetRegion with wrong cluster id: %v", err)
	}
	stream, err := pdc.Tso(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pdpb.TsoRequest{Header: wrong, Count: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("Tso with wrong cluster id: %v", err)
	}

	// Methods the server does not implement answer at once.
	short, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = pdc.GetDCLocationInfo(short, &pdpb.GetDCLocationInfoRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("GetDCLocationInfo: %v, want Unimplemented", err)
	}
	_, err = pdc.SplitRegions(short, &pdpb.SplitRegionsRequest{Header: &pdpb.RequestHeader{ClusterId: c.st.ClusterID}})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("SplitRegions: %v, want Unimplemented", err)
	}
	_, err = keyspacepb.NewKeyspaceClient(rawConn(t, addr)).LoadKeyspace(short, &keyspacepb.LoadKeyspaceRequest{Name: "x"})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("LoadKeyspace: %v, want Unimplemented", err)
	}
}

func TestTSO(t *testing.T) {
	root, addr := t.TempDir(), freeAddr(t)
	c := startCluster(t, root, addr)
	cli := newPDClient(t, addr)
	ctx := ctxTimeout(t, 60*time.Second)

	var last uint64
	for i := range 500 {
		p, l, err := cli.GetTS(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ts := compose(p, l)
		if ts <= last {
			t.Fatalf("ts %d: %d not above %d", i, ts, last)
		}
		last = ts
	}
	// Concurrent requests are batched by the client into one Tso request of count
	// N; every timestamp must still be unique.
	const workers, each = 16, 200
	results := make(chan uint64, workers*each)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				p, l, err := cli.GetTSAsync(ctx).Wait()
				if err != nil {
					t.Error(err)
					return
				}
				results <- compose(p, l)
			}
		}()
	}
	wg.Wait()
	close(results)
	seen := make(map[uint64]bool)
	for ts := range results {
		if seen[ts] {
			t.Fatalf("timestamp %d issued twice", ts)
		}
		if ts <= last {
			t.Fatalf("concurrent timestamp %d not above the earlier %d", ts, last)
		}
		seen[ts] = true
	}
	for ts := range seen {
		last = max(last, ts)
	}

	// GetMinTS in PD mode is a plain timestamp.
	p, l, err := cli.GetMinTS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if compose(p, l) <= last {
		t.Fatalf("GetMinTS %d not above %d", compose(p, l), last)
	}
	last = compose(p, l)

	// Restart everything on the same dirs: timestamps continue above.
	cli.Close()
	c.stop()
	c = startCluster(t, root, addr)
	cli2 := newPDClient(t, addr)
	for range 100 {
		p, l, err := cli2.GetTS(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ts := compose(p, l); ts <= last {
			t.Fatalf("after restart: %d not above %d", ts, last)
		} else {
			last = ts
		}
	}
}

// splitAt splits the region containing the raw key at that key (encoded the way
// TiDB keys are) and returns the left and right halves.
func splitAt(t *testing.T, st *store.Store, rawKey []byte) (left, right *metapb.Region) {
	t.Helper()
	enc := codec.EncodeBytes(nil, rawKey)
	r, _, _, _ := st.Regions.GetRegionByKey(enc)
	if r == nil {
		t.Fatalf("no region contains %q", rawKey)
	}
	newID, peerID := st.Regions.AllocID(), st.Regions.AllocID()
	st.Regions.Split(r.GetId(), newID, rawKey, []uint64{peerID}, peerID)
	return st.Regions.GetRegion(r.GetId()), st.Regions.GetRegion(newID)
}

func TestRegions(t *testing.T) {
	root, addr := t.TempDir(), freeAddr(t)
	c := startCluster(t, root, addr)
	cli := newPDClient(t, addr)
	ctx := ctxTimeout(t, 30*time.Second)
	enc := func(s string) []byte { return codec.EncodeBytes(nil, []byte(s)) }

	before, err := cli.GetRegion(ctx, enc("a"))
	if err != nil {
		t.Fatal(err)
	}
	if before == nil || len(before.Meta.GetStartKey()) != 0 || len(before.Meta.GetEndKey()) != 0 {
		t.Fatalf("initial region = %v", before)
	}
	if before.Leader.GetStoreId() != c.st.StoreID || before.Leader.GetId() != before.Meta.GetPeers()[0].GetId() {
		t.Fatalf("initial leader = %v", before.Leader)
	}

	left, right := splitAt(t, c.st, []byte("m"))
	if left.GetRegionEpoch().GetVersion() != before.Meta.GetRegionEpoch().GetVersion()+1 {
		t.Fatalf("left epoch %v, before %v", left.GetRegionEpoch(), before.Meta.GetRegionEpoch())
	}

	ra, err := cli.GetRegion(ctx, enc("a"))
	if err != nil {
		t.Fatal(err)
	}
	rz, err := cli.GetRegion(ctx, enc("z"))
	if err != nil {
		t.Fatal(err)
	}
	if ra.Meta.GetId() != left.GetId() || !bytes.Equal(ra.Meta.GetEndKey(), enc("m")) ||
		ra.Meta.GetRegionEpoch().GetVersion() != left.GetRegionEpoch().GetVersion() {
		t.Fatalf("region of a = %v, want %v", ra.Meta, left)
	}
	if rz.Meta.GetId() != right.GetId() || !bytes.Equal(rz.Meta.GetStartKey(), enc("m")) {
		t.Fatalf("region of z = %v, want %v", rz.Meta, right)
	}
	if rz.Leader == nil || rz.Leader.GetStoreId() != c.st.StoreID {
		t.Fatalf("leader of right = %v", rz.Leader)
	}

	byID, err := cli.GetRegionByID(ctx, right.GetId())
	if err != nil || byID == nil || byID.Meta.GetId() != right.GetId() {
		t.Fatalf("GetRegionByID = %v, %v", byID, err)
	}
	missing, err := cli.GetRegionByID(ctx, 1<<40)
	if err != nil || missing != nil {
		t.Fatalf("GetRegionByID(unknown) = %v, %v; want no region, no error", missing, err)
	}
	prev, err := cli.GetPrevRegion(ctx, enc("m"))
	if err != nil || prev == nil || prev.Meta.GetId() != left.GetId() {
		t.Fatalf("GetPrevRegion(m) = %v, %v", prev, err)
	}
	prev, err = cli.GetPrevRegion(ctx, enc("x"))
	if err != nil || prev == nil || prev.Meta.GetId() != left.GetId() {
		t.Fatalf("GetPrevRegion(x) = %v, %v", prev, err)
	}
	prev, err = cli.GetPrevRegion(ctx, enc("a"))
	if err != nil || prev != nil {
		t.Fatalf("GetPrevRegion(a) = %v, %v; want none", prev, err)
	}

	all, err := cli.ScanRegions(ctx, nil, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].Meta.GetId() != left.GetId() || all[1].Meta.GetId() != right.GetId() {
		t.Fatalf("ScanRegions = %v", all)
	}
	one, err := cli.ScanRegions(ctx, enc("n"), nil, 1)
	if err != nil || len(one) != 1 || one[0].Meta.GetId() != right.GetId() {
		t.Fatalf("ScanRegions(n, limit 1) = %v, %v", one, err)
	}
	upTo, err := cli.ScanRegions(ctx, nil, enc("m"), 0)
	if err != nil || len(upTo) != 1 || upTo[0].Meta.GetId() != left.GetId() {
		t.Fatalf("ScanRegions(.., m) = %v, %v", upTo, err)
	}
	// Legacy fields are filled too.
	pdc := pdpb.NewPDClient(rawConn(t, addr))
	raw, err := pdc.ScanRegions(ctx, &pdpb.ScanRegionsRequest{Header: &pdpb.RequestHeader{ClusterId: c.st.ClusterID}})
	if err != nil || len(raw.GetRegionMetas()) != 2 || len(raw.GetLeaders()) != 2 || len(raw.GetRegions()) != 2 {
		t.Fatalf("raw ScanRegions = %v, %v", raw, err)
	}

	// BatchScanRegions: two ranges inside the two regions, one range spanning
	// both (the region it shares with the previous range is returned once).
	batch, err := cli.BatchScanRegions(ctx, []pd.KeyRange{
		{StartKey: enc("a"), EndKey: enc("b")},
		{StartKey: enc("c"), EndKey: enc("p")},
		{StartKey: enc("q"), EndKey: enc("r")},
	}, 10, pd.WithOutputMustContainAllKeyRange())
	if err != nil {
		t.Fatal(err)
	}
	if len(batch) != 2 || batch[0].Meta.GetId() != left.GetId() || batch[1].Meta.GetId() != right.GetId() {
		t.Fatalf("BatchScanRegions = %v", batch)
	}
	limited, err := cli.BatchScanRegions(ctx, []pd.KeyRange{{StartKey: nil, EndKey: nil}}, 1)
	if err != nil || len(limited) != 1 {
		t.Fatalf("BatchScanRegions(limit 1) = %v, %v", limited, err)
	}
	if _, err := cli.BatchScanRegions(ctx, []pd.KeyRange{
		{StartKey: enc("c"), EndKey: enc("p")},
		{StartKey: enc("a"), EndKey: enc("b")},
	}, 10); err == nil || !strings.Contains(err.Error(), "overlapped") {
		t.Fatalf("unsorted ranges: %v", err)
	}

	// After a restart PD serves the split regions with the same epochs.
	cli.Close()
	c.stop()
	startCluster(t, root, addr)
	cli = newPDClient(t, addr)
	all, err = cli.ScanRegions(ctx, nil, nil, 0)
	if err != nil || len(all) != 2 || all[0].Meta.GetRegionEpoch().GetVersion() != left.GetRegionEpoch().GetVersion() ||
		all[1].Meta.GetId() != right.GetId() {
		t.Fatalf("regions after restart = %v, %v", all, err)
	}
}

func TestStores(t *testing.T) {
	addr := freeAddr(t)
	c := startCluster(t, t.TempDir(), addr)
	cli := newPDClient(t, addr)
	ctx := ctxTimeout(t, 30*time.Second)

	st, err := cli.GetStore(ctx, c.st.StoreID)
	if err != nil {
		t.Fatal(err)
	}
	if st.GetAddress() != "127.0.0.1:1" || st.GetState() != metapb.StoreState_Up ||
		st.GetNodeState() != metapb.NodeState_Serving || !versionAtLeast(t, st.GetVersion(), "8.5.0") {
		t.Fatalf("store = %v", st)
	}
	all, err := cli.GetAllStores(ctx, pd.WithExcludeTombstone())
	if err != nil || len(all) != 1 || all[0].GetId() != c.st.StoreID || all[0].GetVersion() != st.GetVersion() {
		t.Fatalf("GetAllStores = %v, %v", all, err)
	}
	_, err = cli.GetStore(ctx, c.st.StoreID+1000)
	if err == nil || !strings.Contains(err.Error(), "invalid store ID") || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("GetStore(unknown) = %v; want PD's not-found error", err)
	}
}

func TestClientGo(t *testing.T) {
	addr := freeAddr(t)
	c := startCluster(t, t.TempDir(), addr)
	cli := newPDClient(t, addr)
	splitAt(t, c.st, []byte("m"))

	kvs, err := tikv.NewTestTiKVStore(tikv.NewRPCClient(), cli, nil, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer kvs.Close()

	bo := tikv.NewBackoffer(ctxTimeout(t, 30*time.Second), 20000)
	loc, err := kvs.GetRegionCache().LocateKey(bo, []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	if len(loc.StartKey) != 0 || string(loc.EndKey) != "m" {
		t.Fatalf("location of a = [%q, %q)", loc.StartKey, loc.EndKey)
	}
	loc, err = kvs.GetRegionCache().LocateKey(bo, []byte("zz"))
	if err != nil {
		t.Fatal(err)
	}
	if string(loc.StartKey) != "m" || len(loc.EndKey) != 0 {
		t.Fatalf("location of zz = [%q, %q)", loc.StartKey, loc.EndKey)
	}
	locs, err := kvs.GetRegionCache().LocateKeyRange(bo, []byte("b"), []byte("y"))
	if err != nil || len(locs) != 2 {
		t.Fatalf("LocateKeyRange = %v, %v", locs, err)
	}
	// The store address comes from PD.
	rpcCtx, err := kvs.GetRegionCache().GetTiKVRPCContext(bo, loc.Region, kv.ReplicaReadLeader, 0)
	if err != nil || rpcCtx == nil || rpcCtx.Addr != "127.0.0.1:1" {
		t.Fatalf("rpc context = %v, %v", rpcCtx, err)
	}

	ts1, err := kvs.CurrentTimestamp(oracle.GlobalTxnScope)
	if err != nil {
		t.Fatal(err)
	}
	ts2, err := kvs.GetOracle().GetTimestamp(ctxTimeout(t, 10*time.Second), &oracle.Option{TxnScope: oracle.GlobalTxnScope})
	if err != nil || ts2 <= ts1 {
		t.Fatalf("oracle: %d then %d, %v", ts1, ts2, err)
	}
}

func TestGCSafePoint(t *testing.T) {
	root, addr := t.TempDir(), freeAddr(t)
	c := startCluster(t, root, addr)
	cli := newPDClient(t, addr)
	ctx := ctxTimeout(t, 30*time.Second)
	pdc := pdpb.NewPDClient(rawConn(t, addr))
	hdr := &pdpb.RequestHeader{ClusterId: c.st.ClusterID}

	get := func() uint64 {
		t.Helper()
		resp, err := pdc.GetGCSafePoint(ctx, &pdpb.GetGCSafePointRequest{Header: hdr})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetSafePoint()
	}
	if sp := get(); sp != 0 {
		t.Fatalf("initial GC safepoint = %d", sp)
	}
	if sp, err := cli.UpdateGCSafePoint(ctx, 100); err != nil || sp != 100 {
		t.Fatalf("UpdateGCSafePoint(100) = %d, %v", sp, err)
	}
	if sp, err := cli.UpdateGCSafePoint(ctx, 50); err != nil || sp != 100 {
		t.Fatalf("UpdateGCSafePoint(50) = %d, %v; must not move back", sp, err)
	}
	if sp := get(); sp != 100 {
		t.Fatalf("GC safepoint = %d, want 100", sp)
	}
	if sp, _ := c.st.PD.GetGCSafePoint(ctx); sp != 100 {
		t.Fatalf("unistore's GC safepoint = %d, want 100", sp)
	}

	// The external timestamp (tidb_external_ts) only moves forward, up to now.
	p, l, err := cli.GetTS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	now := compose(p, l)
	if err := cli.SetExternalTimestamp(ctx, now); err != nil {
		t.Fatal(err)
	}
	if err := cli.SetExternalTimestamp(ctx, now-1); err == nil || !strings.Contains(err.Error(), "cannot decrease") {
		t.Fatalf("moving the external timestamp back: %v", err)
	}
	if err := cli.SetExternalTimestamp(ctx, now+1<<40); err == nil {
		t.Fatal("external timestamp above the TSO accepted")
	}
	if ts, err := cli.GetExternalTimestamp(ctx); err != nil || ts != now {
		t.Fatalf("external timestamp = %d, %v; want %d", ts, err, now)
	}

	// Kept in PD's etcd layout, and across a restart.
	etcd := etcdClient(t, addr)
	res, err := etcd.Get(ctx, "/pd/"+strconv.FormatUint(c.st.ClusterID, 10)+"/gc/safe_point")
	if err != nil || len(res.Kvs) != 1 || string(res.Kvs[0].Value) != "64" {
		t.Fatalf("etcd GC safepoint = %v, %v", res, err)
	}
	cli.Close()
	c.stop()
	c = startCluster(t, root, addr)
	pdc = pdpb.NewPDClient(rawConn(t, addr))
	if sp := get(); sp != 100 {
		t.Fatalf("GC safepoint after restart = %d, want 100", sp)
	}
	if sp, _ := c.st.PD.GetGCSafePoint(ctx); sp != 100 {
		t.Fatalf("unistore's GC safepoint after restart = %d, want 100", sp)
	}
}

func TestServiceSafePoints(t *testing.T) {
	root, addr := t.TempDir(), freeAddr(t)
	c := startCluster(t, root, addr)
	cli := newPDClient(t, addr)
	ctx := ctxTimeout(t, 60*time.Second)
	pdc := pdpb.NewPDClient(rawConn(t, addr))
	hdr := &pdpb.RequestHeader{ClusterId: c.st.ClusterID}

	update := func(id string, ttl int64, sp uint64) *pdpb.UpdateServiceGCSafePointResponse {
		t.Helper()
		resp, err := pdc.UpdateServiceGCSafePoint(ctx, &pdpb.UpdateServiceGCSafePointRequest{
			Header: hdr, ServiceId: []byte(id), TTL: ttl, SafePoint: sp,
		})
		if err != nil {
			t.Fatalf("UpdateServiceGCSafePoint(%s, %d, %d): %v", id, ttl, sp, err)
		}
		return resp
	}
	expectMin := func(resp *pdpb.UpdateServiceGCSafePointResponse, id string, sp uint64) {
		t.Helper()
		if string(resp.GetServiceId()) != id || resp.GetMinSafePoint() != sp {
			t.Fatalf("min = %s@%d, want %s@%d", resp.GetServiceId(), resp.GetMinSafePoint(), id, sp)
		}
	}

	// First call: gc_worker is created at 0 and is the minimum.
	resp := update("cdc", 60, 100)
	expectMin(resp, "gc_worker", 0)
	if resp.GetTTL() < math.MaxInt64/2 {
		t.Fatalf("gc_worker TTL = %d, want effectively infinite", resp.GetTTL())
	}
	// Through the PD client: the min safepoint comes back.
	min, err := cli.UpdateServiceGCSafePoint(ctx, "gc_worker", math.MaxInt64, 50)
	if err != nil || min != 50 {
		t.Fatalf("gc_worker -> 50: min = %d, %v", min, err)
	}
	// Below the minimum: not saved, the minimum is returned.
	expectMin(update("br", 60, 40), "gc_worker", 50)
	if got := update("probe", 0, 0); string(got.GetServiceId()) != "gc_worker" {
		t.Fatalf("br was saved below the minimum: min now %v", got)
	}
	// Moving the minimum service forward reloads the minimum.
	expectMin(update("cdc", 60, 200), "gc_worker", 50)
	resp = update("gc_worker", math.MaxInt64, 300)
	expectMin(resp, "cdc", 200)
	if resp.GetTTL() <= 0 || resp.GetTTL() > 60 {
		t.Fatalf("cdc TTL = %d, want (0, 60]", resp.GetTTL())
	}
	// TTL <= 0 removes.
	expectMin(update("cdc", 0, 0), "gc_worker", 300)
	// gc_worker cannot be removed, nor get a finite TTL.
	if _, err := cli.UpdateServiceGCSafePoint(ctx, "gc_worker", 0, 0); err == nil {
		t.Fatal("removing gc_worker's safepoint succeeded")
	}
	if _, err := cli.UpdateServiceGCSafePoint(ctx, "gc_worker", 10, 400); err == nil {
		t.Fatal("gc_worker safepoint with a finite TTL accepted")
	}

	// Expiry: a short-lived minimum disappears once its TTL has passed.
	update("short", 1, 350)
	resp = update("gc_worker", math.MaxInt64, 500)
	expectMin(resp, "short", 350)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp = update("probe", 0, 0)
		if string(resp.GetServiceId()) == "gc_worker" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("short-lived safepoint did not expire: min %v", resp)
		}
		time.Sleep(100 * time.Millisecond)
	}
	expectMin(resp, "gc_worker", 500)

	// Stored as PD stores them, and kept across a restart.
	update("cdc", 3600, 600)
	etcd := etcdClient(t, addr)
	res, err := etcd.Get(ctx, "/pd/"+strconv.FormatUint(c.st.ClusterID, 10)+"/gc/safe_point/service/cdc")
	if err != nil || len(res.Kvs) != 1 {
		t.Fatalf("etcd service safepoint: %v, %v", res, err)
	}
	var stored struct {
		ServiceID string `json:"service_id"`
		ExpiredAt int64  `json:"expired_at"`
		SafePoint uint64 `json:"safe_point"`
	}
	if err := json.Unmarshal(res.Kvs[0].Value, &stored); err != nil || stored.ServiceID != "cdc" || stored.SafePoint != 600 {
		t.Fatalf("stored = %s (%v)", res.Kvs[0].Value, err)
	}
	cli.Close()
	c.stop()
	c = startCluster(t, root, addr)
	pdc = pdpb.NewPDClient(rawConn(t, addr))
	expectMin(update("gc_worker", math.MaxInt64, 700), "cdc", 600)
}

func etcdClient(t *testing.T, addr string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"http://" + addr},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func TestEtcdOnPDPort(t *testing.T) {
	root, addr := t.TempDir(), freeAddr(t)
	c := startCluster(t, root, addr)
	ctx := ctxTimeout(t, 30*time.Second)
	cli := etcdClient(t, addr)
	if _, err := cli.Put(ctx, "/tidb/cdc/test", "v1"); err != nil {
		t.Fatal(err)
	}
	res, err := cli.Get(ctx, "/tidb/cdc/test")
	if err != nil || len(res.Kvs) != 1 || string(res.Kvs[0].Value) != "v1" {
		t.Fatalf("get = %v, %v", res, err)
	}
	// Sessions (leases, keepalive) work: TiDB and TiCDC rely on them.
	lease, err := cli.Grant(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.KeepAliveOnce(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	// The data survives a restart.
	cli.Close()
	c.stop()
	startCluster(t, root, addr)
	cli = etcdClient(t, addr)
	res, err = cli.Get(ctx, "/tidb/cdc/test")
	if err != nil || len(res.Kvs) != 1 || string(res.Kvs[0].Value) != "v1" {
		t.Fatalf("get after restart = %v, %v", res, err)
	}
}

func TestMetaStorageAndResourceGroups(t *testing.T) {
	addr := freeAddr(t)
	startCluster(t, t.TempDir(), addr)
	cli := newPDClient(t, addr)
	ctx := ctxTimeout(t, 30*time.Second)

	// Meta storage: the resource group controller's calls.
	groups, rev, err := cli.LoadResourceGroups(ctx)
	if err != nil || len(groups) != 1 || groups[0].GetName() != "default" || rev == 0 {
		t.Fatalf("LoadResourceGroups = %v, %d, %v", groups, rev, err)
	}
	if groups[0].GetRUSettings().GetRU().GetSettings().GetBurstLimit() >= 0 {
		t.Fatalf("default group is limited: %v", groups[0])
	}
	watch, err := cli.Watch(ctx, pd.GroupSettingsPathPrefixBytes, pd.WithRev(rev+1), pd.WithPrefix(), pd.WithPrevKV())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, []byte("x/y"), []byte("z")); err != nil {
		t.Fatal(err)
	}
	got, err := cli.Get(ctx, []byte("x/y"))
	if err != nil || len(got.GetKvs()) != 1 || string(got.GetKvs()[0].GetValue()) != "z" {
		t.Fatalf("meta storage get = %v, %v", got, err)
	}

	// Resource manager: CRUD, and the change shows up on the watch.
	rg := &rmpb.ResourceGroup{
		Name: "rg1", Mode: rmpb.GroupMode_RUMode, Priority: 8,
		RUSettings: &rmpb.GroupRequestUnitSettings{RU: &rmpb.TokenBucket{Settings: &rmpb.TokenLimitSettings{FillRate: 1000}}},
	}
	if _, err := cli.AddResourceGroup(ctx, rg); err != nil {
		t.Fatal(err)
	}
	select {
	case evs := <-watch:
		if len(evs) != 1 || evs[0].GetType() != meta_storagepb.Event_PUT || !strings.HasSuffix(string(evs[0].GetKv().GetKey()), "/rg1") {
			t.Fatalf("watch events = %v", evs)
		}
	case <-ctx.Done():
		t.Fatal("no watch event for the new resource group")
	}
	g, err := cli.GetResourceGroup(ctx, "rg1")
	if err != nil || g.GetRUSettings().GetRU().GetSettings().GetFillRate() != 1000 {
		t.Fatalf("GetResourceGroup = %v, %v", g, err)
	}
	rg.RUSettings.RU.Settings.FillRate = 2000
	if _, err := cli.ModifyResourceGroup(ctx, rg); err != nil {
		t.Fatal(err)
	}
	list, err := cli.ListResourceGroups(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("ListResourceGroups = %v, %v", list, err)
	}
	if _, err := cli.GetResourceGroup(ctx, "nope"); err == nil || !strings.Contains(err.Error(), "resource group not found") {
		t.Fatalf("GetResourceGroup(nope) = %v", err)
	}
	if _, err := cli.DeleteResourceGroup(ctx, "default"); err == nil {
		t.Fatal("deleting the default group succeeded")
	}
	if _, err := cli.DeleteResourceGroup(ctx, "rg1"); err != nil {
		t.Fatal(err)
	}

	// Token requests are granted in full.
	resp, err := cli.AcquireTokenBuckets(ctx, &rmpb.TokenBucketsRequest{Requests: []*rmpb.TokenBucketRequest{{
		ResourceGroupName: "default",
		Request: &rmpb.TokenBucketRequest_RuItems{RuItems: &rmpb.TokenBucketRequest_RequestRU{
			RequestRU: []*rmpb.RequestUnitItem{{Type: rmpb.RequestUnitType_RU, Value: 123}},
		}},
		ConsumptionSinceLastRequest: &rmpb.Consumption{RRU: 5, WRU: 2},
	}}})
	if err != nil || len(resp) != 1 || len(resp[0].GetGrantedRUTokens()) != 1 ||
		resp[0].GetGrantedRUTokens()[0].GetGrantedTokens().GetTokens() != 123 {
		t.Fatalf("AcquireTokenBuckets = %v, %v", resp, err)
	}
	// Reported consumption shows up in the RU statistics.
	withStats, err := cli.ListResourceGroups(ctx, pd.WithRUStats)
	if err != nil || len(withStats) != 1 || withStats[0].GetRUStats().GetRRU() != 5 || withStats[0].GetRUStats().GetWRU() != 2 {
		t.Fatalf("ListResourceGroups(WithRUStats) = %v, %v", withStats, err)
	}

	// TiDB's domain builds this controller at start; it must come up and serve
	// the default group.
	ctl, err := rmclient.NewResourceGroupController(ctx, 1, cli, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctl.Start(ctx)
	defer func() {
		if err := ctl.Stop(); err != nil {
			t.Error(err)
		}
	}()
	if _, err := ctl.GetResourceGroup("default"); err != nil {
		t.Fatal(err)
	}
}

// Close must not wait for clients to hang up: TSO and watch streams stay open.
func TestCloseWithOpenStreams(t *testing.T) {
	addr := freeAddr(t)
	c := startCluster(t, t.TempDir(), addr)
	cli := newPDClient(t, addr)
	ctx := ctxTimeout(t, 30*time.Second)
	if _, _, err := cli.GetTS(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Watch(ctx, []byte("a"), pd.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := c.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Close took %v", d)
	}
	c.srv = nil
}

func TestHTTPAPI(t *testing.T) {
	root, addr := t.TempDir(), freeAddr(t)
	c := startCluster(t, root, addr)
	ctx := ctxTimeout(t, 30*time.Second)
	newHTTP := func() pdhttp.Client {
		cli := pdhttp.NewClient("pdserver-test", []string{"http://" + addr})
		t.Cleanup(cli.Close)
		return cli
	}
	cli := newHTTP()

	if v, err := cli.GetPDVersion(ctx); err != nil || !versionAtLeast(t, v, "8.5.0") {
		t.Fatalf("version = %q, %v", v, err)
	}
	if hs, err := cli.GetHealthStatus(ctx); err != nil || len(hs) != 1 || !hs[0].Health {
		t.Fatalf("health = %v, %v", hs, err)
	}
	stores, err := cli.GetStores(ctx)
	if err != nil || stores.Count != 1 || stores.Stores[0].Store.ID != int64(c.st.StoreID) ||
		stores.Stores[0].Store.StateName != "Up" || stores.Stores[0].Store.Address != "127.0.0.1:1" {
		t.Fatalf("stores = %+v, %v", stores, err)
	}
	if rc, err := cli.GetReplicateConfig(ctx); err != nil || rc["max-replicas"] != float64(1) {
		t.Fatalf("replicate config = %v, %v", rc, err)
	}

	// Region label rules, as TiDB's DDL uses them.
	if rules, err := cli.GetAllRegionLabelRules(ctx); err != nil || len(rules) != 0 {
		t.Fatalf("initial label rules = %v, %v", rules, err)
	}
	rule := &pdhttp.LabelRule{
		ID: "schema/test/t1", Labels: []pdhttp.RegionLabel{{Key: "k", Value: "v"}}, RuleType: "key-range",
		Data: []any{map[string]any{"start_key": "7480", "end_key": "7481"}},
	}
	if err := cli.SetRegionLabelRule(ctx, rule); err != nil {
		t.Fatal(err)
	}
	got, err := cli.GetRegionLabelRulesByIDs(ctx, []string{"schema/test/t1", "schema/test/missing"})
	if err != nil || len(got) != 1 || got[0].ID != rule.ID || got[0].Labels[0].Value != "v" {
		t.Fatalf("label rules by ids = %v, %v", got, err)
	}
	renamed := *rule
	renamed.ID = "schema/test/t2"
	if err := cli.PatchRegionLabelRules(ctx, &pdhttp.LabelRulePatch{
		SetRules: []*pdhttp.LabelRule{&renamed}, DeleteRules: []string{rule.ID, "schema/test/missing"},
	}); err != nil {
		t.Fatal(err)
	}
	all, err := cli.GetAllRegionLabelRules(ctx)
	if err != nil || len(all) != 1 || all[0].ID != renamed.ID {
		t.Fatalf("label rules after patch = %v, %v", all, err)
	}
	// DROP DATABASE of a large schema deletes the rules of every table at once.
	many := make([]string, 500)
	for i := range many {
		many[i] = fmt.Sprintf("schema/big/t%d", i)
	}
	if err := cli.PatchRegionLabelRules(ctx, &pdhttp.LabelRulePatch{DeleteRules: many}); err != nil {
		t.Fatalf("patch deleting 500 rules: %v", err)
	}

	// Placement: PD's default rule, TiFlash's rule group, partial bundle updates.
	bundles, err := cli.GetAllPlacementRuleBundles(ctx)
	if err != nil || len(bundles) != 1 || bundles[0].ID != "pd" || len(bundles[0].Rules) != 1 || bundles[0].Rules[0].Count != 1 {
		t.Fatalf("initial bundles = %v, %v", bundles, err)
	}
	g, err := cli.GetPlacementRuleGroupByID(ctx, "tiflash")
	if err != nil || g.ID != "tiflash" || g.Index != 0 {
		t.Fatalf("unknown rule group = %v, %v", g, err)
	}
	if err := cli.SetPlacementRuleGroup(ctx, &pdhttp.RuleGroup{ID: "tiflash", Index: 120}); err != nil {
		t.Fatal(err)
	}
	if g, err := cli.GetPlacementRuleGroupByID(ctx, "tiflash"); err != nil || g.Index != 120 {
		t.Fatalf("rule group = %v, %v", g, err)
	}
	if err := cli.SetPlacementRuleBundles(ctx, []*pdhttp.GroupBundle{{
		ID: "TiDB_DDL_100", Index: 40, Override: true,
		Rules: []*pdhttp.Rule{{ID: "table_rule_100_0", Role: pdhttp.Voter, Count: 1, StartKey: []byte("t1"), EndKey: []byte("t2")}},
	}}, true); err != nil {
		t.Fatal(err)
	}
	b, err := cli.GetPlacementRuleBundleByGroup(ctx, "TiDB_DDL_100")
	if err != nil || b.Index != 40 || !b.Override || len(b.Rules) != 1 || b.Rules[0].GroupID != "TiDB_DDL_100" || string(b.Rules[0].StartKey) != "t1" {
		t.Fatalf("bundle = %+v, %v", b, err)
	}
	// A bundle without rules removes the group.
	if err := cli.SetPlacementRuleBundles(ctx, []*pdhttp.GroupBundle{{ID: "TiDB_DDL_100"}}, true); err != nil {
		t.Fatal(err)
	}
	if b, err := cli.GetPlacementRuleBundleByGroup(ctx, "TiDB_DDL_100"); err != nil || len(b.Rules) != 0 {
		t.Fatalf("bundle after removal = %+v, %v", b, err)
	}
	if err := cli.DeletePlacementRule(ctx, "tiflash", "table-1-r"); err != nil {
		t.Fatal(err)
	}

	// Paths the playground does not serve answer 404, quickly.
	if _, err := cli.GetRegionByID(ctx, 1); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("unserved path: %v", err)
	}

	// Rules survive a restart.
	c.stop()
	startCluster(t, root, addr)
	cli = newHTTP()
	all, err = cli.GetAllRegionLabelRules(ctx)
	if err != nil || len(all) != 1 || all[0].ID != renamed.ID {
		t.Fatalf("label rules after restart = %v, %v", all, err)
	}
}

func TestGlobalConfig(t *testing.T) {
	addr := freeAddr(t)
	startCluster(t, t.TempDir(), addr)
	cli := newPDClient(t, addr)
	ctx := ctxTimeout(t, 30*time.Second)

	_, rev, err := cli.LoadGlobalConfig(ctx, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	// The PD client's WatchGlobalConfig cancels its own stream when it returns
	// (a client bug in this version), so watch with a raw client, as TiKV does.
	watch, err := pdpb.NewPDClient(rawConn(t, addr)).WatchGlobalConfig(ctx, &pdpb.WatchGlobalConfigRequest{Revision: rev + 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.StoreGlobalConfig(ctx, "", []pd.GlobalConfigItem{
		{Name: "source_id", Value: "7", EventType: pdpb.EventType_PUT},
	}); err != nil {
		t.Fatal(err)
	}
	items, _, err := cli.LoadGlobalConfig(ctx, []string{"source_id", "missing"}, "")
	if err != nil || len(items) != 2 || items[0].Value != "7" {
		t.Fatalf("LoadGlobalConfig = %v, %v", items, err)
	}
	resp, err := watch.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetChanges()) != 1 || resp.GetChanges()[0].GetName() != "/global/config/source_id" ||
		string(resp.GetChanges()[0].GetPayload()) != "7" {
		t.Fatalf("watch = %v", resp)
	}
}

func TestStartErrors(t *testing.T) {
	st, err := store.Open(store.Config{Dir: filepath.Join(t.TempDir(), "store"), StoreAddr: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := ctxTimeout(t, 30*time.Second)

	if _, err := Start(ctx, Config{Dir: t.TempDir(), ClientAddr: "127.0.0.1:0", Store: st}); err == nil {
		t.Fatal("port 0 accepted")
	}
	// A busy port fails Start at once.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	start := time.Now()
	if srv, err := Start(ctx, Config{Dir: t.TempDir(), ClientAddr: l.Addr().String(), Store: st}); err == nil {
		srv.Close()
		t.Fatal("Start on a busy port succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Start on a busy port took %v", d)
	}

	// etcd data of another cluster is refused.
	pdDir, addr := t.TempDir(), freeAddr(t)
	srv, err := Start(ctx, Config{Dir: pdDir, ClientAddr: addr, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
	other, err := store.Open(store.Config{Dir: filepath.Join(t.TempDir(), "store"), StoreAddr: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if srv, err := Start(ctx, Config{Dir: pdDir, ClientAddr: addr, Store: other}); err == nil {
		srv.Close()
		t.Fatal("etcd data of another cluster accepted")
	} else if !strings.Contains(err.Error(), "belongs to cluster") {
		t.Fatalf("wrong error for a foreign data dir: %v", err)
	}
}
