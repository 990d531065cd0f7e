package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/tidestream/tidestream/coordinator/store"
	"github.com/tidestream/tidestream/e2e/harness"
	"github.com/tidestream/tidestream/proto/contract"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// startRole runs `cdc <role>` on external etcd and waits until it serves.
func startRole(t *testing.T, role, id, etcd, pd string) (*harness.Proc, string) {
	t.Helper()
	p, addrs := harness.StartOnFreePorts(t, harness.Launch{Name: id, Bin: harness.CDC(t), Addrs: 2,
		Args: func(addrs []string) []string {
			args := []string{role, "--etcd", etcd, "--member-id", id, "--cluster-id", "multi",
				"--addr", addrs[0], "--status-addr", addrs[1], "--data-dir", t.TempDir(), "--session-ttl", "3s"}
			if role != "sorter" {
				args = append(args, "--pd", pd) // a sorter reads no PD and has no such flag
			}
			return args
		},
		Ready: harness.Serving(60 * time.Second),
	})
	return p, addrs[0]
}

// TestStagesInSeparateProcesses runs `cdc coordinator`, `cdc puller` and
// `cdc sorter` as three processes on one external etcd. A subscriber (the
// encoder's place) asks the sorter for a table with a route through the
// puller process and gets every row written by SQL once, in (commit ts,
// start ts, key) order. After kill -9 of the puller, a new puller on another
// port and a re-subscription with the new route and the next epoch from the
// last resolved ts lose nothing and keep the order. Only the coordinator
// ever campaigns: every owner key in etcd is its.
func TestStagesInSeparateProcesses(t *testing.T) {
	etcd := harness.StartEtcd(t)
	pg := startPlayground(t)
	startRole(t, "coordinator", "coord", etcd.Endpoint, pg.pdAddr)
	puller, pullerAddr := startRole(t, "puller", "puller-1", etcd.Endpoint, pg.pdAddr)
	_, sorterAddr := startRole(t, "sorter", "sorter-1", etcd.Endpoint, pg.pdAddr)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	for _, q := range []string{"CREATE DATABASE multi", "CREATE TABLE multi.t (id BIGINT PRIMARY KEY, v VARCHAR(32))"} {
		_, err := pg.db.ExecContext(ctx, q)
		require.NoError(t, err, q)
	}
	span := recordSpan(ctx, t, pg.db, "multi", "t")
	conn, err := pg.db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	sorter := tidestreamv1.NewSorterServiceClient(harness.Dial(t, sorterAddr))
	subscribe := func(epoch, from uint64, puller string) grpc.ServerStreamingClient[tidestreamv1.SortedBatch] {
		st, err := sorter.Subscribe(ctx, &tidestreamv1.SubscribeRequest{
			ChangefeedId: "multi", PipelineId: 1, Epoch: epoch, FromTs: from, Spans: []*tidestreamv1.Span{span},
			Route: &tidestreamv1.Route{PullerAddr: puller, SorterAddr: sorterAddr, PdAddrs: []string{pg.pdAddr}},
		})
		require.NoError(t, err)
		return st
	}
	insert := func(from, to int) {
		for i := from; i < to; i++ {
			_, err := conn.ExecContext(ctx, "INSERT INTO multi.t VALUES (?, ?)", i, fmt.Sprintf("v%d", i))
			require.NoError(t, err)
		}
	}
	seen := map[string]bool{}
	// readUntil reads st until its resolved ts passes target, checking the
	// stream's promises, and returns the resolved ts reached.
	readUntil := func(st grpc.ServerStreamingClient[tidestreamv1.SortedBatch], from, target uint64) uint64 {
		resolved := from
		var last *tidestreamv1.RawKVEvent
		for resolved < target {
			b, err := st.Recv()
			require.NoError(t, err)
			for _, e := range b.Events {
				require.Greater(t, e.CommitTs, resolved, "event at or below a resolved ts already received")
				if last != nil {
					require.True(t, less(last, e), "out of order: (%d,%d,%x) then (%d,%d,%x)", last.CommitTs, last.StartTs, last.Key, e.CommitTs, e.StartTs, e.Key)
				}
				last = e
				require.False(t, seen[string(e.Key)], "row %x delivered twice", e.Key)
				seen[string(e.Key)] = true
			}
			if b.ResolvedTs != 0 {
				require.Greater(t, b.ResolvedTs, resolved, "resolved ts must advance")
				resolved = b.ResolvedTs
			}
		}
		return resolved
	}

	start := currentTS(ctx, t, conn)
	first := subscribe(1, start, pullerAddr)
	insert(0, 100)
	resolved := readUntil(first, start, currentTS(ctx, t, conn))
	require.Len(t, seen, 100, "rows written before the puller died")

	puller.Kill()
	insert(100, 200) // committed while no puller runs
	_, pullerAddr2 := startRole(t, "puller", "puller-2", etcd.Endpoint, pg.pdAddr)
	// What the owner does on a dead member: the pipeline again, epoch + 1,
	// from its checkpoint, routed through the new puller.
	second := subscribe(2, resolved, pullerAddr2)
	insert(200, 300)
	readUntil(second, resolved, currentTS(ctx, t, conn))
	require.Len(t, seen, 300, "every row once across the puller's death")
	_, err = first.Recv()
	for err == nil {
		_, err = first.Recv()
	}
	require.Equal(t, contract.Fenced, contract.Classify(err), "the epoch-1 stream ends fenced: %v", err)

	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.Endpoint}, DialTimeout: 5 * time.Second})
	require.NoError(t, err)
	defer cli.Close()
	keys, err := store.NewKeys("multi")
	require.NoError(t, err)
	owners, err := cli.Get(ctx, keys.OwnerPrefix(), clientv3.WithPrefix())
	require.NoError(t, err)
	require.NotEmpty(t, owners.Kvs, "the coordinator campaigned")
	for _, kv := range owners.Kvs {
		require.Equal(t, "coord", string(kv.Value), "owner key %s was created by a stage process", kv.Key)
	}
	// Every live process is a member, whatever its roles; the killed
	// puller's record goes with its lease (TTL 3 s).
	harness.Eventually(t, 15*time.Second, "members are the live processes", func() error {
		members, err := cli.Get(ctx, keys.MemberPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return err
		}
		var ids []string
		for _, kv := range members.Kvs {
			ids = append(ids, string(kv.Key[len(keys.MemberPrefix()):]))
		}
		slices.Sort(ids)
		if want := []string{"coord", "puller-2", "sorter-1"}; !slices.Equal(ids, want) {
			return fmt.Errorf("members %v, want %v", ids, want)
		}
		return nil
	})
}
