package member_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tidestream/tidestream/coordinator/internal/etcdtest"
	"github.com/tidestream/tidestream/coordinator/member"
	"github.com/tidestream/tidestream/coordinator/store"
)

func cfg(id string) member.Config {
	return member.Config{ID: id, Addr: "127.0.0.1:1", Roles: []string{"coordinator"}, TTL: 2 * time.Second}
}

func TestGracefulStopRemovesMemberAtOnce(t *testing.T) {
	cl := etcdtest.Start(t)
	cli := cl.Client(t)
	keys, err := store.NewKeys("t")
	require.NoError(t, err)
	st := store.New(cli, keys)
	ctx, cancel := context.WithCancel(context.Background())
	reg, err := member.Register(ctx, cli, keys, cfg("m1"))
	require.NoError(t, err)
	ms, err := st.Members(context.Background())
	require.NoError(t, err)
	require.Len(t, ms, 1)
	require.Equal(t, "m1", ms[0].Id)

	// A second live process with the same id is refused.
	_, err = member.Register(context.Background(), cli, keys, cfg("m1"))
	require.ErrorContains(t, err, "already registered")

	done := make(chan error, 1)
	go func() { done <- reg.Run(ctx) }()
	cancel()
	require.NoError(t, <-done, "a graceful stop is not a lost session")
	// Revoked, not left to expire: gone well before the 2 s TTL.
	ms, err = st.Members(context.Background())
	require.NoError(t, err)
	require.Empty(t, ms)
}

func TestLostSessionIsReported(t *testing.T) {
	cl := etcdtest.Start(t)
	cli := cl.Client(t)
	keys, err := store.NewKeys("t")
	require.NoError(t, err)
	reg, err := member.Register(context.Background(), cli, keys, cfg("m2"))
	require.NoError(t, err)
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { done <- reg.Run(ctx) }()
	// What a long GC pause or a partition looks like from etcd's side.
	_, err = cli.Revoke(context.Background(), reg.Session().Lease())
	require.NoError(t, err)
	select {
	case err := <-done:
		require.True(t, errors.Is(err, member.ErrSessionLost), "got %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not notice the lost session")
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []member.Config{
		{Addr: "a", TTL: 5 * time.Second},
		{ID: "x", TTL: 5 * time.Second},
		{ID: "x", Addr: "a", TTL: time.Second},
		{ID: "x", Addr: "a", TTL: time.Hour},
	} {
		require.Error(t, c.Validate(), "%+v", c)
	}
}

// Close ends the session on paths that never reach Run (the caller failed
// after Register): the lease and the member key go at once. It is safe to
// call again, and after Run.
func TestCloseWithoutRunRevokes(t *testing.T) {
	cl := etcdtest.Start(t)
	cli := cl.Client(t)
	keys, err := store.NewKeys("t")
	require.NoError(t, err)
	reg, err := member.Register(context.Background(), cli, keys, cfg("m3"))
	require.NoError(t, err)

	reg.Close()
	reg.Close()
	leases, err := cli.Leases(context.Background())
	require.NoError(t, err)
	require.Empty(t, leases.Leases)
	ms, err := store.New(cli, keys).Members(context.Background())
	require.NoError(t, err)
	require.Empty(t, ms)
	select {
	case <-reg.Session().Done():
	default:
		t.Fatal("the keep-alive still runs after Close")
	}
}

// A restart on its own embedded etcd takes over from the incarnation
// killed before its lease expired: that lease is revoked, so its keys go
// at once, and the new one registers.
func TestTakeOverRevokesThePreviousIncarnation(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	keys, err := store.NewKeys("t")
	require.NoError(t, err)
	ctx := context.Background()
	long := cfg("m1")
	long.TTL = time.Minute
	killed, err := member.Register(ctx, cli, keys, long)
	require.NoError(t, err)
	t.Cleanup(killed.Close)
	// Its owner key, under the same lease, goes with it.
	_, err = cli.Put(ctx, keys.OwnerPrefix()+"x", "m1", clientv3.WithLease(killed.Session().Lease()))
	require.NoError(t, err)

	_, err = member.Register(ctx, cli, keys, cfg("m1"))
	require.ErrorContains(t, err, "already registered", "without TakeOver the live key is respected")

	again := cfg("m1")
	again.TakeOver = true
	reg, err := member.Register(ctx, cli, keys, again)
	require.NoError(t, err)
	t.Cleanup(reg.Close)
	resp, err := cli.Get(ctx, keys.OwnerPrefix(), clientv3.WithPrefix())
	require.NoError(t, err)
	require.Empty(t, resp.Kvs, "the previous incarnation's owner key is gone")
	resp, err = cli.Get(ctx, keys.Member("m1"))
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1)
	require.Equal(t, int64(reg.Session().Lease()), resp.Kvs[0].Lease, "registered under the new lease")
}
