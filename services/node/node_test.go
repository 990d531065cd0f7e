package node

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"
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
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n, err := onFreePorts(t, func(cfg Config) (*Node, error) { return Start(ctx, cfg, nil) })
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()

	hc := healthClient(t, n)
	require.Eventually(t, func() bool {
		for _, svc := range []string{"", "tidestream.v1.ChangefeedService", "tidestream.v1.PullerService", "tidestream.v1.SorterService"} {
			if servingStatus(ctx, hc, svc) != healthpb.HealthCheckResponse_SERVING {
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

func testConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	cfg.Roles = []string{RoleCoordinator, RolePuller, RoleSorter}
	cfg.Addr, cfg.StatusAddr = freeAddr(t), freeAddr(t)
	cfg.DataDir = t.TempDir()
	cfg.MemberID = "node-test"
	cfg.ClusterID = "nodetest"
	cfg.SessionTTL = 2 * time.Second
	return cfg
}

// onFreePorts starts a node on testConfig's ports, again on fresh ones
// while a port freeAddr picked was taken meanwhile by another test process
// (tests of several packages run at once).
func onFreePorts(t *testing.T, start func(Config) (*Node, error)) (*Node, error) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		n, err := start(testConfig(t))
		if err == nil || attempt == 5 || !errors.Is(err, syscall.EADDRINUSE) {
			return n, err
		}
		t.Logf("attempt %d: %v; again on other ports", attempt, err)
	}
}

func healthClient(t *testing.T, n *Node) healthpb.HealthClient {
	cc, err := grpc.NewClient(n.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { cc.Close() })
	return healthpb.NewHealthClient(cc)
}

func servingStatus(ctx context.Context, hc healthpb.HealthClient, svc string) healthpb.HealthCheckResponse_ServingStatus {
	resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN
	}
	return resp.Status
}

// gateRole is ready only when its gate opens.
type gateRole struct{ gate chan struct{} }

func (gateRole) Name() string          { return "gate" }
func (gateRole) Register(*grpc.Server) {}
func (r gateRole) Run(ctx context.Context, env Env) error {
	select {
	case <-r.gate:
		env.Ready()
	case <-ctx.Done():
	}
	<-ctx.Done()
	return nil
}
func (gateRole) Stop()        {}
func (gateRole) Close() error { return nil }

// Readiness is per role: each role's services turn SERVING when that role
// is ready, whatever the others do, and the process (overall status) only
// when all are.
func TestReadinessIsPerRole(t *testing.T) {
	gate := make(chan struct{})
	specs := append(roleSpecs(), roleSpec{
		name: "gate", services: []string{"test.Gate"},
		addFlags: func(*Config, *pflag.FlagSet) {}, validate: func(*Config) error { return nil },
		build: func(*Node) (Role, error) { return gateRole{gate: gate}, nil },
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n, err := onFreePorts(t, func(cfg Config) (*Node, error) {
		cfg.Roles = append(cfg.Roles, "gate")
		return start(ctx, cfg, nil, specs)
	})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()

	hc := healthClient(t, n)
	require.Eventually(t, func() bool {
		for _, svc := range []string{"tidestream.v1.ChangefeedService", "tidestream.v1.PullerService", "tidestream.v1.SorterService"} {
			if servingStatus(ctx, hc, svc) != healthpb.HealthCheckResponse_SERVING {
				return false
			}
		}
		return true
	}, 30*time.Second, 50*time.Millisecond, "the ready roles' services SERVING while another role is not ready")
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, servingStatus(ctx, hc, "test.Gate"))
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, servingStatus(ctx, hc, ""), "the process is not ready while a role is not")

	close(gate)
	require.Eventually(t, func() bool {
		return servingStatus(ctx, hc, "") == healthpb.HealthCheckResponse_SERVING &&
			servingStatus(ctx, hc, "test.Gate") == healthpb.HealthCheckResponse_SERVING
	}, 30*time.Second, 50*time.Millisecond, "ready once every role is")
}

// A process takes the flags of its roles only, and validates only those.
func TestFlagsAndValidationArePerRole(t *testing.T) {
	flags := func(roles ...string) *pflag.FlagSet {
		cfg := DefaultConfig()
		cfg.Roles = roles
		fs := pflag.NewFlagSet("cdc", pflag.ContinueOnError)
		cfg.AddFlags(fs)
		return fs
	}
	has := func(fs *pflag.FlagSet, name string) bool { return fs.Lookup(name) != nil }
	server := flags(RoleCoordinator, RolePuller, RoleSorter, RoleEncoder)
	for _, f := range []string{"addr", "etcd", "pd", "gc-ttl", "puller-memory-quota", "sorter-memory-quota", "encoder-workers", "schema-registry-ca"} {
		require.True(t, has(server, f), "cdc server --%s", f)
	}
	puller := flags(RolePuller)
	require.True(t, has(puller, "pd"))
	require.True(t, has(puller, "puller-memory-quota"))
	require.True(t, has(puller, "puller-prewrite-memory"))
	require.False(t, has(puller, "sorter-memory-quota"))
	require.False(t, has(puller, "gc-ttl"))
	sorter := flags(RoleSorter)
	require.True(t, has(sorter, "sorter-memory-quota"))
	require.False(t, has(sorter, "pd"), "a sorter reads no PD")
	require.ErrorContains(t, sorter.Parse([]string{"--gc-ttl=1h"}), "unknown flag: --gc-ttl")
	prod := flags(RoleProducer)
	require.True(t, has(prod, "producer-progress-interval"))
	require.False(t, has(prod, "pd"), "a producer reads no PD")
	enc := flags(RoleEncoder)
	require.True(t, has(enc, "pd"), "an encoder reads schemas from the upstream")
	require.True(t, has(enc, "schema-registry-cert"))
	require.False(t, has(enc, "sorter-memory-quota"))
	coord := flags(RoleCoordinator)
	require.True(t, has(coord, "gc-ttl"))
	require.False(t, has(coord, "puller-memory-quota"))

	cfg := DefaultConfig()
	cfg.Roles = []string{RolePuller}
	cfg.Etcd = []string{"http://127.0.0.1:2379"}
	cfg.Sorter.MemoryQuota = 1          // not this process's role: not checked
	cfg.Coordinator.GCTTL = time.Second // nor this
	require.NoError(t, cfg.Validate())
	cfg.Puller.PrewriteMemory = -1
	require.ErrorContains(t, cfg.Validate(), "--puller-prewrite-memory")
	cfg.Puller.PrewriteMemory = 0
	require.NoError(t, cfg.Validate(), "0: every uncommitted write on disk")
	cfg.Puller.MemoryQuota = 0
	require.ErrorContains(t, cfg.Validate(), "--puller-memory-quota")
	cfg.Roles = []string{RoleSorter}
	require.ErrorContains(t, cfg.Validate(), "--sorter-memory-quota")
	cfg.Roles = []string{RoleCoordinator}
	require.ErrorContains(t, cfg.Validate(), "--gc-ttl")
	cfg.Roles = []string{RoleSorter, RoleSorter}
	cfg.Sorter.MemoryQuota = 64 << 20
	require.ErrorContains(t, cfg.Validate(), "named twice")
	cfg.Roles = []string{RoleEncoder}
	cfg.Encoder.RegistryCert = "client.pem"
	require.ErrorContains(t, cfg.Validate(), "--schema-registry-key")
	cfg.Encoder.RegistryKey = "client.key"
	require.NoError(t, cfg.Validate())
	cfg.Roles = []string{RoleProducer}
	cfg.Producer.ProgressInterval = time.Hour
	require.ErrorContains(t, cfg.Validate(), "--producer-progress-interval")
	cfg.Roles = []string{"consumer"}
	require.ErrorContains(t, cfg.Validate(), `"consumer" is not available yet`)
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
