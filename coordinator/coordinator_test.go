package coordinator_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tidestream/tidestream/coordinator"
	"github.com/tidestream/tidestream/coordinator/control"
	"github.com/tidestream/tidestream/coordinator/internal/etcdtest"
	"github.com/tidestream/tidestream/coordinator/member"
	"github.com/tidestream/tidestream/coordinator/scheduler"
	"github.com/tidestream/tidestream/coordinator/store"
	"github.com/tidestream/tidestream/coordinator/upstream"
	"github.com/tidestream/tidestream/coordinator/upstream/pdfake"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

func openUpstream(ctx context.Context, addrs []string) (control.Upstream, error) {
	cfg := upstream.DefaultConfig()
	cfg.PDAddrs = addrs
	return upstream.Open(ctx, cfg)
}

// noIneligibleTables stands in for the schema read: pdfake has no TiKV, and
// these tests are about ownership, not the create-time table check.
func noIneligibleTables(context.Context, []string, uint64, control.TableFilter) ([]control.TableName, error) {
	return nil, nil
}

// noTables stands in for the owner's table read: no changefeed here has
// tables, so nothing is placed.
func noTables(context.Context, *store.Changefeed, uint64) ([]scheduler.Table, error) {
	return nil, nil
}

type running struct {
	c *coordinator.Coordinator
	// done receives Run's result (buffered); whoever takes it puts it back
	// for stop.
	done chan error
	stop func() error
}

func startCoordinator(t *testing.T, cl *etcdtest.Cluster, id string) *running {
	return startCoordinatorOn(t, cl.Client(t), id)
}

func startCoordinatorOn(t *testing.T, cli *clientv3.Client, id string) *running {
	cfg := coordinator.DefaultConfig()
	cfg.Etcd = cli
	cfg.ClusterID = "t"
	cfg.Addr = "127.0.0.1:1"
	cfg.GCInterval = 100 * time.Millisecond
	cfg.OpenUpstream = openUpstream
	cfg.IneligibleTables = noIneligibleTables
	cfg.PipelineTables = noTables
	c, err := coordinator.New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// As a process does: it owns the member registration, the coordinator
	// campaigns on it, and the registration is closed once Run returned.
	reg, err := member.Register(ctx, cli, c.Store().Keys(), member.Config{
		ID: id, Addr: cfg.Addr, Roles: []string{"coordinator"}, TTL: 2 * time.Second,
	})
	require.NoError(t, err)
	go func() {
		err := c.Run(ctx, reg)
		reg.Close()
		done <- err
	}()
	var (
		once   sync.Once
		runErr error
	)
	r := &running{c: c, done: done, stop: func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
		})
		return runErr
	}}
	t.Cleanup(func() { _ = r.stop() })
	return r
}

func eventually(t *testing.T, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestOwnerKeepsGCSafePointAndFinishesAtTarget(t *testing.T) {
	cl := etcdtest.Start(t)
	pd, err := pdfake.Start(context.Background(), pdfake.Options{})
	require.NoError(t, err)
	t.Cleanup(pd.Stop)

	a := startCoordinator(t, cl, "a")
	b := startCoordinator(t, cl, "b")
	var owner, other *running
	eventually(t, 10*time.Second, func() error {
		switch {
		case a.c.IsOwner() && !b.c.IsOwner():
			owner, other = a, b
		case b.c.IsOwner() && !a.c.IsOwner():
			owner, other = b, a
		default:
			return fmt.Errorf("want exactly one owner, a=%v b=%v", a.c.IsOwner(), b.c.IsOwner())
		}
		return nil
	})

	st := owner.c.Store()
	ctx := context.Background()
	mk := func(id string, ckpt, target uint64) {
		require.NoError(t, st.Create(ctx,
			&pb.ChangefeedInfo{Namespace: "default", Id: id, PdAddrs: []string{pd.URL()}, StartTs: ckpt, TargetTs: target},
			&pb.ChangefeedStatus{State: pb.ChangefeedState_CHANGEFEED_STATE_NORMAL, CheckpointTs: ckpt, Epoch: 1}))
	}
	mk("slow", 1000, 0)
	mk("fast", 5000, 0)
	mk("done", 7000, 6000)

	// The service safepoint follows the slowest live changefeed.
	eventually(t, 10*time.Second, func() error {
		if got := pd.ServiceSafePoints()["tidestream-t"]; got != 1000 {
			return fmt.Errorf("service safepoint %d, want 1000 (all: %v)", got, pd.ServiceSafePoints())
		}
		return nil
	})
	// A changefeed past its target ts is finished by the owner.
	eventually(t, 10*time.Second, func() error {
		cf, err := st.Get(ctx, "default", "done")
		if err != nil {
			return err
		}
		if cf.Status.State != pb.ChangefeedState_CHANGEFEED_STATE_FINISHED {
			return fmt.Errorf("state %s", cf.Status.State)
		}
		return nil
	})

	// The owner steps down; the other takes over and keeps the upkeep.
	require.NoError(t, owner.stop(), "a graceful stop is not an error")
	eventually(t, 10*time.Second, func() error {
		if !other.c.IsOwner() {
			return fmt.Errorf("no takeover")
		}
		return nil
	})
	_, err = st.UpdateStatus(ctx, "default", "slow", store.Fence{}, func(cf *store.Changefeed) error {
		cf.Status.CheckpointTs = 4000
		return nil
	})
	require.NoError(t, err)
	eventually(t, 10*time.Second, func() error {
		if got := pd.ServiceSafePoints()["tidestream-t"]; got != 4000 {
			return fmt.Errorf("service safepoint %d, want 4000", got)
		}
		return nil
	})

	// GC passed a running changefeed's checkpoint (its safepoint expired,
	// the owner gone longer than gc-ttl): it fails with TiCDC's reason
	// rather than run on with data missing.
	up, err := openUpstream(ctx, []string{pd.URL()})
	require.NoError(t, err)
	defer up.Close()
	_, err = up.UpdateServiceGCSafePoint(ctx, "tidestream-t", 0, 0) // as if expired
	require.NoError(t, err)
	pd.SetGCSafePoint(4500)
	eventually(t, 10*time.Second, func() error {
		cf, err := st.Get(ctx, "default", "slow")
		if err != nil {
			return err
		}
		if cf.Status.State != pb.ChangefeedState_CHANGEFEED_STATE_FAILED || cf.Status.GetError().GetCode() != "CDC:ErrSnapshotLostByGC" {
			return fmt.Errorf("state %s, error %v", cf.Status.State, cf.Status.GetError())
		}
		return nil
	})
	fast, err := st.Get(ctx, "default", "fast")
	require.NoError(t, err)
	require.Equal(t, pb.ChangefeedState_CHANGEFEED_STATE_NORMAL, fast.Status.State, "its checkpoint 5000 is above GC")

	// The upstream's last live changefeeds removed: the owner lets go of
	// its safepoint instead of holding GC back for gc-ttl.
	for _, id := range []string{"slow", "fast"} {
		_, err := st.Delete(ctx, "default", id, store.Fence{}, func(*store.Changefeed) error { return nil })
		require.NoError(t, err)
	}
	eventually(t, 10*time.Second, func() error {
		if sp, ok := pd.ServiceSafePoints()["tidestream-t"]; ok {
			return fmt.Errorf("service safepoint still at %d", sp)
		}
		return nil
	})
}

func waitOwner(t *testing.T, r *running) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		if !r.c.IsOwner() {
			return fmt.Errorf("not owner yet")
		}
		return nil
	})
}

// awaitRun takes Run's result, failing if it takes longer than within.
func awaitRun(t *testing.T, r *running, within time.Duration) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-time.After(within):
		t.Fatalf("Run still running %s after its session was lost", within)
		return nil
	}
}

// A lost session ends Run with member.ErrSessionLost (the process exits on
// it), and leaves nothing of the member behind: no lease, no member or
// owner key.
func TestLostSessionEndsRun(t *testing.T) {
	cl := etcdtest.Start(t)
	cli := cl.Client(t)
	r := startCoordinatorOn(t, cl.Client(t), "a")
	waitOwner(t, r)
	ctx := context.Background()
	keys := r.c.Store().Keys()
	resp, err := cli.Get(ctx, keys.Member("a"))
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1)

	_, err = cli.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease))
	require.NoError(t, err)
	err = awaitRun(t, r, 5*time.Second)
	require.ErrorIs(t, err, member.ErrSessionLost)
	require.ErrorIs(t, fmt.Errorf("cdc: %w", err), member.ErrSessionLost)
	require.False(t, r.c.IsOwner())

	leases, err := cli.Leases(ctx)
	require.NoError(t, err)
	require.Empty(t, leases.Leases)
	left, err := cli.Get(ctx, keys.Prefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	require.NoError(t, err)
	require.Zero(t, left.Count)
}

// A session is usually lost because etcd is unreachable. Run must then
// return as soon as the loss is noticed, not spend a revoke timeout on a
// lease nothing refreshes any more: until Run returns, the process looks
// alive to whoever supervises it.
func TestLostSessionReturnsPromptlyWhenEtcdIsUnreachable(t *testing.T) {
	cl := etcdtest.Start(t)
	proxy := cl.Proxy(t)
	r := startCoordinatorOn(t, proxy.Client(t), "a") // SessionTTL 2 s
	waitOwner(t, r)

	proxy.Cut()
	// The owner duty stops the moment the session is noticed lost (within
	// TTL + the lessor's 1 s reaping tick); Run must follow at once, not
	// after a 3 s revoke timeout against an etcd it cannot reach.
	eventually(t, 10*time.Second, func() error {
		if r.c.IsOwner() {
			return fmt.Errorf("still owner after etcd became unreachable")
		}
		return nil
	})
	lostAt := time.Now()
	err := awaitRun(t, r, 10*time.Second)
	require.ErrorIs(t, err, member.ErrSessionLost)
	t.Logf("Run returned %s after ownership ended", time.Since(lostAt))
	require.Less(t, time.Since(lostAt), time.Second)

	// Nothing refreshes the lease: etcd expires it, and the member with it.
	cli := cl.Client(t)
	eventually(t, 10*time.Second, func() error {
		leases, err := cli.Leases(context.Background())
		if err != nil {
			return err
		}
		if len(leases.Leases) != 0 {
			return fmt.Errorf("live leases: %v", leases.Leases)
		}
		return nil
	})
}
