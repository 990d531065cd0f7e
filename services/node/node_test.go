package node

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tidestream/tidestream/coordinator/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// A process with every role registers one member carrying all of them,
// reports each role's services SERVING once it runs, and on cancel stops in
// order and releases everything: Run returns nil, the member key is gone
// with the lease, and no goroutine is left (TestMain).
func TestRolesRunOnOneMemberAndStopCleanly(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Roles = []string{RoleCoordinator, RolePuller, RoleSorter}
	cfg.Addr, cfg.StatusAddr = freeAddr(t), freeAddr(t)
	cfg.DataDir = t.TempDir()
	cfg.MemberID = "node-test"
	cfg.ClusterID = "nodetest"
	cfg.SessionTTL = 2 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n, err := Start(ctx, cfg, nil)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()

	cc, err := grpc.NewClient(n.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	require.Eventually(t, func() bool {
		for _, svc := range []string{"", "tidestream.v1.ChangefeedService", "tidestream.v1.PullerService", "tidestream.v1.SorterService"} {
			resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
			if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
				return false
			}
		}
		return true
	}, 30*time.Second, 50*time.Millisecond, "every role's services SERVING")

	cli, err := clientv3.New(clientv3.Config{Endpoints: n.embedded.Endpoints(), DialTimeout: 5 * time.Second})
	require.NoError(t, err)
	defer cli.Close()
	keys, err := store.NewKeys("nodetest")
	require.NoError(t, err)
	members, err := cli.Get(ctx, keys.MemberPrefix(), clientv3.WithPrefix())
	require.NoError(t, err)
	require.Len(t, members.Kvs, 1, "one member per process, whatever its roles")
	require.Equal(t, keys.Member("node-test"), string(members.Kvs[0].Key))
	cli.Close()

	began := time.Now()
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	t.Logf("Run returned %v after cancel", time.Since(began).Round(time.Millisecond))
}

// A process without the coordinator role must be pointed at the cluster's
// etcd: an embedded one would hold a cluster of one.
func TestStageProcessNeedsEtcd(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Roles = []string{RolePuller}
	err := cfg.Validate()
	require.Error(t, err)
	require.Contains(t, err.Error(), "--etcd")
	cfg.Etcd = []string{"http://127.0.0.1:2379"}
	require.NoError(t, cfg.Validate())
	cfg.Roles = nil
	require.ErrorContains(t, cfg.Validate(), "at least one role")
}
