package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tidestream/tidestream/coordinator/store"
)

// A process whose etcd session is lost (its lease revoked behind its back,
// as etcd does when a starved process misses its keep-alives) restarts in
// place instead of exiting: a new registration appears, on a new lease,
// under the same id when --member-id was given and a new one otherwise,
// every role serves again on the same --addr (with an embedded etcd
// reopened on the same data dir), Serve keeps running, and it returns nil
// on cancel.
func TestServeRestartsInPlaceAfterSessionLoss(t *testing.T) {
	for _, tc := range []struct {
		name     string
		external bool
	}{
		{name: "embedded etcd, fixed member id"},
		{name: "external etcd, generated member ids", external: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var etcdEndpoints []string
			if tc.external {
				etcdEndpoints = startEtcd(t).Endpoints()
			}
			logs := &syncBuffer{}
			first, started, done := serveOnFreePorts(t, ctx, slog.New(slog.NewJSONHandler(logs, nil)), func(cfg *Config) {
				if tc.external {
					cfg.Etcd = etcdEndpoints
					cfg.MemberID = ""
				}
			})
			awaitServing(t, first, done)
			lost := onlyMember(t, first)
			require.Equal(t, first.member, lost.id)
			revoke(t, first, lost.lease)

			var second incarnation
			select {
			case second = <-started:
			case err := <-done:
				t.Fatalf("Serve returned %v after the session was lost; want a restart in place", err)
			case <-time.After(60 * time.Second):
				t.Fatal("no restart within 60s of the session loss")
			}
			require.Equal(t, first.addr, second.addr, "the restart binds the same --addr")
			if tc.external {
				require.NotEqual(t, first.member, second.member, "a generated id is new per incarnation")
			} else {
				require.Equal(t, first.member, second.member, "--member-id is kept")
			}
			awaitServing(t, second, done)
			now := onlyMember(t, second)
			require.Equal(t, second.member, now.id, "the old member key went with its lease")
			require.NotEqual(t, lost.lease, now.lease)

			line := logLine(logs.String(), "etcd session lost")
			require.NotEmpty(t, line, "the restart is logged")
			require.Contains(t, line, `"member":"`+first.member+`"`)
			require.Contains(t, line, `"ran":"`)

			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(30 * time.Second):
				t.Fatal("Serve did not return after cancel")
			}
		})
	}
}

// The client gives a session up once no keep-alive is answered for a TTL,
// which etcd may not have expired yet: the restart revokes that lease
// itself, or a fixed --member-id on an external etcd could not register
// again until it expired.
func TestRestartRevokesTheLostLease(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cli := startEtcd(t)
	endpoints := cli.Endpoints()
	keys, err := store.NewKeys("nodetest")
	require.NoError(t, err)
	old, err := cli.Grant(ctx, 60)
	require.NoError(t, err)
	_, err = cli.Put(ctx, keys.Member("node-test"), "previous incarnation", clientv3.WithLease(old.ID))
	require.NoError(t, err)

	n, err := onFreePorts(t, func(cfg Config) (*Node, error) {
		cfg.Etcd = endpoints
		return Start(ctx, cfg, nil)
	})
	require.NoError(t, err)
	n.lostLease = old.ID
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()

	waitFor(t, done, 60*time.Second, "registered on a new lease", func() error {
		resp, err := cli.Get(ctx, keys.Member("node-test"))
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 || clientv3.LeaseID(resp.Kvs[0].Lease) == old.ID {
			return errors.New("still the previous incarnation's key")
		}
		return nil
	})
	ttl, err := cli.TimeToLive(ctx, old.ID)
	require.NoError(t, err)
	require.EqualValues(t, -1, ttl.TTL, "the lost lease is revoked")

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// Quick losses in a row double the wait up to the cap; an incarnation that
// ran long starts it over.
func TestRestartBackoff(t *testing.T) {
	quick := time.Second
	var got []time.Duration
	var d time.Duration
	for range 7 {
		d = nextRestartDelay(d, quick)
		got = append(got, d)
	}
	s := time.Second
	require.Equal(t, []time.Duration{s, 2 * s, 4 * s, 8 * s, 16 * s, 30 * s, 30 * s}, got)
	require.Equal(t, restartBackoffMin, nextRestartDelay(restartBackoffMax, restartBackoffReset))
	require.Equal(t, restartBackoffMax, nextRestartDelay(restartBackoffMax, restartBackoffReset-time.Second))
}

// incarnation is what a test needs of one Start of Serve, copied while it
// is current.
type incarnation struct {
	addr   string
	etcd   []string
	member string
}

// serveOnFreePorts runs serve on testConfig (edited by edit) and returns its
// first incarnation, the channel of later ones and Serve's result; again
// on fresh ports while a port freeAddr picked was taken meanwhile.
func serveOnFreePorts(t *testing.T, ctx context.Context, log *slog.Logger, edit func(*Config)) (incarnation, <-chan incarnation, <-chan error) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		cfg := testConfig(t)
		edit(&cfg)
		started := make(chan incarnation, 8)
		done := make(chan error, 1)
		go func() {
			done <- serve(ctx, cfg, log, serveHooks{specs: roleSpecs(), started: func(n *Node) {
				started <- incarnation{addr: n.Addr().String(), etcd: n.etcd.Endpoints(), member: n.cfg.MemberID}
			}})
		}()
		select {
		case inc := <-started:
			return inc, started, done
		case err := <-done:
			if attempt == 5 || !errors.Is(err, syscall.EADDRINUSE) {
				t.Fatalf("Serve returned before its first start: %v", err)
			}
			t.Logf("attempt %d: %v; again on other ports", attempt, err)
		case <-time.After(60 * time.Second):
			t.Fatal("Serve did not start within 60s")
		}
	}
}

// waitFor polls cond until it holds, failing at once if Serve (or Run)
// returns meanwhile.
func waitFor(t *testing.T, done <-chan error, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.After(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		select {
		case err := <-done:
			t.Fatalf("%s: returned %v while waiting", what, err)
		case <-deadline:
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		case <-tick.C:
		}
	}
}

func awaitServing(t *testing.T, inc incarnation, done <-chan error) {
	t.Helper()
	cc, err := grpc.NewClient(inc.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	waitFor(t, done, 60*time.Second, "every role SERVING", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if s := servingStatus(ctx, hc, ""); s != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("overall status %s", s)
		}
		return nil
	})
}

type memberKey struct {
	id    string
	lease clientv3.LeaseID
}

// onlyMember returns the one member registered in inc's etcd.
func onlyMember(t *testing.T, inc incarnation) memberKey {
	t.Helper()
	cli := etcdClient(t, inc.etcd)
	defer cli.Close()
	keys, err := store.NewKeys("nodetest")
	require.NoError(t, err)
	resp, err := cli.Get(context.Background(), keys.MemberPrefix(), clientv3.WithPrefix())
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1, "one member per process")
	kv := resp.Kvs[0]
	return memberKey{id: strings.TrimPrefix(string(kv.Key), keys.MemberPrefix()), lease: clientv3.LeaseID(kv.Lease)}
}

// revoke ends a lease as etcd does when it expires.
func revoke(t *testing.T, inc incarnation, lease clientv3.LeaseID) {
	t.Helper()
	cli := etcdClient(t, inc.etcd)
	defer cli.Close()
	_, err := cli.Revoke(context.Background(), lease)
	require.NoError(t, err)
}

// etcdClient dials endpoints; the caller closes it.
func etcdClient(t *testing.T, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	require.NoError(t, err)
	return cli
}

// logLine returns the first line of logs containing s.
func logLine(logs, s string) string {
	for l := range strings.SplitSeq(logs, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

// syncBuffer is a log destination the test reads while the process writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
