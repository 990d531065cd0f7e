package owner_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/goleak"

	"github.com/tidestream/tidestream/coordinator/internal/etcdtest"
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
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(2))
	require.NoError(t, err)
	c := &candidate{id: id, session: sess, done: make(chan error, 1), elected: make(chan store.Fence, 4)}
	el, err := owner.New(owner.Config{Session: sess, Keys: keys, MemberID: id, Knobs: owner.Knobs{
		OnElected: func(f store.Fence) { c.elected <- f },
	}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go func() {
		c.done <- el.Run(ctx, func(ctx context.Context, _ store.Fence) error {
			<-ctx.Done()
			return ctx.Err()
		})
	}()
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
// return an error: the process must stop acting as owner.
func TestSessionLossEndsOwnership(t *testing.T) {
	cl := etcdtest.Start(t)
	cli := cl.Client(t)
	keys, err := store.NewKeys("t")
	require.NoError(t, err)
	a := start(t, cli, keys, "a")
	waitElected(t, a)
	_, err = cli.Revoke(context.Background(), a.session.Lease())
	require.NoError(t, err)
	select {
	case err := <-a.done:
		require.Error(t, err)
		a.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("owner kept running after its session was lost")
	}
}
