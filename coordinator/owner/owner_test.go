package owner_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/goleak"

	"github.com/tidestream/tidestream/coordinator/internal/etcdtest"
	"github.com/tidestream/tidestream/coordinator/member"
	"github.com/tidestream/tidestream/coordinator/owner"
	"github.com/tidestream/tidestream/coordinator/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The embedded etcd server and its clients keep background
		// goroutines briefly after Close; they are etcd's, not ours.
		goleak.IgnoreAnyFunction("go.etcd.io/etcd/client/v3.(*watchGRPCStream).run"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreAnyFunction("go.etcd.io/etcd/pkg/v3/schedule.(*fifo).run"),
	)
}

type candidate struct {
	id      string
	session *concurrency.Session
	cancel  context.CancelFunc
	done    chan error
	elected chan store.Fence
}

func start(t *testing.T, cli *clientv3.Client, keys store.Keys, id string) *candidate {
	return startWith(t, cli, keys, id, 0, func(ctx context.Context, _ store.Fence) error {
		<-ctx.Done()
		return ctx.Err()
	})
}

func startWith(t *testing.T, cli *clientv3.Client, keys store.Keys, id string, retryPause time.Duration, duty owner.Duty) *candidate {
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(2))
	require.NoError(t, err)
	c := &candidate{id: id, session: sess, done: make(chan error, 1), elected: make(chan store.Fence, 4)}
	el, err := owner.New(owner.Config{Session: sess, Keys: keys, MemberID: id, RetryPause: retryPause, Knobs: owner.Knobs{
		OnElected: func(f store.Fence) { c.elected <- f },
	}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go func() { c.done <- el.Run(ctx, duty) }()
	t.Cleanup(func() {
		cancel()
		<-c.done
		_ = sess.Close()
	})
	return c
}

func TestOneOwnerAndHandover(t *testing.T) {
	cl := etcdtest.Start(t)
	cli := cl.Client(t)
	keys, err := store.NewKeys("t")
	require.NoError(t, err)
	a := start(t, cli, keys, "a")
	b := start(t, cli, keys, "b")

	first := waitElected(t, a, b)
	ctx := context.Background()
	cur, err := owner.Current(ctx, cli, keys)
	require.NoError(t, err)
	require.Equal(t, first.id, cur)

	other := b
	if first == b {
		other = a
	}
	select {
	case <-other.elected:
		t.Fatal("two owners at once")
	case <-time.After(500 * time.Millisecond):
	}

	// Graceful stop resigns: the other takes over without waiting a TTL.
	stopAt := time.Now()
	first.cancel()
	require.NoError(t, <-first.done)
	first.done <- nil // for Cleanup
	select {
	case <-other.elected:
	case <-time.After(5 * time.Second):
		t.Fatal("no handover after resign")
	}
	require.Less(t, time.Since(stopAt), 2*time.Second)
	cur, err = owner.Current(ctx, cli, keys)
	require.NoError(t, err)
	require.Equal(t, other.id, cur)
}

func waitElected(t *testing.T, cs ...*candidate) *candidate {
	t.Helper()
	var (
		mu  sync.Mutex
		won *candidate
	)
	deadline := time.After(10 * time.Second)
	for won == nil {
		for _, c := range cs {
			select {
			case <-c.elected:
				mu.Lock()
				won = c
				mu.Unlock()
			default:
			}
		}
		select {
		case <-deadline:
			t.Fatal("nobody elected")
		case <-time.After(20 * time.Millisecond):
		}
	}
	return won
}

// When the session dies (lease revoked, as after a long pause), Run must
// return an error wrapping member.ErrSessionLost, whatever the elector was
// doing: the process stops acting on that sentinel (Coordinator.Run), so a
// bare error would leave it running.
func TestSessionLossIsErrSessionLost(t *testing.T) {
	t.Run("owner", func(t *testing.T) {
		cl := etcdtest.Start(t)
		cli := cl.Client(t)
		keys, err := store.NewKeys("t")
		require.NoError(t, err)
		a := start(t, cli, keys, "a")
		waitElected(t, a)
		requireSessionLost(t, cli, a)
	})
	t.Run("campaigning", func(t *testing.T) {
		cl := etcdtest.Start(t)
		cli := cl.Client(t)
		keys, err := store.NewKeys("t")
		require.NoError(t, err)
		a := start(t, cli, keys, "a")
		waitElected(t, a)
		b := start(t, cli, keys, "b")
		// b is now (or soon) waiting behind a's key; Campaign alone would
		// wait forever on a dead lease.
		require.Eventually(t, func() bool {
			resp, err := cli.Get(context.Background(), keys.OwnerPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
			return err == nil && resp.Count == 2
		}, 5*time.Second, 10*time.Millisecond)
		requireSessionLost(t, cli, b)
		cur, err := owner.Current(context.Background(), cli, keys)
		require.NoError(t, err)
		require.Equal(t, "a", cur)
	})
	t.Run("between campaigns", func(t *testing.T) {
		cl := etcdtest.Start(t)
		cli := cl.Client(t)
		keys, err := store.NewKeys("t")
		require.NoError(t, err)
		// The duty fails at once, so the elector resigns and sits in its
		// retry pause, far longer than the test.
		a := startWith(t, cli, keys, "a", time.Hour, func(context.Context, store.Fence) error {
			return errors.New("duty failed")
		})
		waitElected(t, a)
		require.Eventually(t, func() bool {
			cur, err := owner.Current(context.Background(), cli, keys)
			return err == nil && cur == ""
		}, 5*time.Second, 10*time.Millisecond, "the elector did not resign after its duty failed")
		requireSessionLost(t, cli, a)
	})
}

// requireSessionLost revokes c's lease and requires Run to return promptly
// with an error that is member.ErrSessionLost, also once wrapped again.
func requireSessionLost(t *testing.T, cli *clientv3.Client, c *candidate) {
	t.Helper()
	_, err := cli.Revoke(context.Background(), c.session.Lease())
	require.NoError(t, err)
	select {
	case err := <-c.done:
		c.done <- err // for Cleanup
		require.ErrorIs(t, err, member.ErrSessionLost)
		require.ErrorIs(t, fmt.Errorf("node: %w", err), member.ErrSessionLost)
	case <-time.After(5 * time.Second):
		t.Fatal("the elector kept running after its session was lost")
	}
}
