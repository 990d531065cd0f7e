package e2e

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	hamba "github.com/hamba/avro/v2"
	"github.com/stretchr/testify/require"
	"github.com/tikv/client-go/v2/oracle"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tidestream/tidestream/coordinator/store"
	"github.com/tidestream/tidestream/e2e/harness"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
	"github.com/tidestream/tidestream/services/devstack"
)

// Shape of TestFailoverOfEveryRoleLosesNothing.
const (
	scaleTables   = 20
	scaleKeys     = 100                    // ids per table the load writes
	scaleDB       = "sc"                   // the database of the tables
	scaleCF       = "scale"                // the changefeed
	scaleCluster  = "scale"                // --cluster-id
	scaleLagLimit = 10 * time.Second       // "caught up": checkpoint lag under this
	scaleRecovery = 60 * time.Second       // a kill must be recovered from within this
	scaleTick     = 200 * time.Millisecond // lag polling
)

// TestFailoverOfEveryRoleLosesNothing runs every role in its own `cdc`
// process on one external etcd — coordinator ×2, puller ×2, sorter ×1,
// encoder ×2, producer ×2 — with a changefeed over 20 tables into
// devstack's Kafka, under a steady SQL load whose every statement's commit
// ts is recorded. One member of each role in turn (the busiest puller, the
// sorter, the busiest encoder, the busiest producer, then the owner
// coordinator) is killed with -9; the changefeed must catch up again
// within 60 s, and the killed process is restarted under its member id once
// its member key has expired. Then a third encoder joins and pipelines move
// onto it in bounded rounds until 20 pipelines sit 6-7 per encoder.
//
// Catching up after a kill means: the changefeed checkpoint has passed the
// TSO read right after the kill (every row committed before it is in
// Kafka, the dead member's pipelines' too) and lags the TSO by less than
// 10 s. Right after a kill the lag is still small, so "lag < 10 s" alone
// would prove nothing. The sorter, the only one, is measured from its kill
// as well: its pipelines wait for its member key to expire and for its
// restart.
//
// Throughout, a checker samples the changefeed checkpoint C every ~500 ms,
// reads every table's topic up to its end offsets, and asserts that every
// recorded write with commit ts <= C is in Kafka: the checkpoint never
// passes a row Kafka has not acknowledged. At the end every row in TiDB
// must equal the last version of its key in Kafka (a deleted row a
// tombstone), every write must be there, and per key the first occurrences
// of the versions must follow commit order; duplicates are counted.
func TestFailoverOfEveryRoleLosesNothing(t *testing.T) {
	began := time.Now()
	etcd := harness.StartEtcd(t)
	pg := startPlayground(t)
	dev := startDevstack(t, devstack.DefaultConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	c := &roleCluster{t: t, etcd: etcd.Endpoint, pd: "http://" + pg.pdAddr, members: map[string]*roleMember{}}
	for _, m := range []struct{ role, id string }{
		{"coordinator", "coord-1"}, {"coordinator", "coord-2"},
		{"puller", "puller-1"}, {"puller", "puller-2"},
		{"sorter", "sorter-1"},
		{"encoder", "encoder-1"}, {"encoder", "encoder-2"},
		{"producer", "producer-1"}, {"producer", "producer-2"},
	} {
		c.start(m.role, m.id)
	}
	t.Logf("etcd, playground, devstack and 9 cdc processes up in %s", time.Since(began).Round(100*time.Millisecond))

	st := c.openStore()

	conn, err := pg.db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	exec := execOn(ctx, t, conn)
	exec("CREATE DATABASE " + scaleDB)
	for i := range scaleTables {
		exec(fmt.Sprintf("CREATE TABLE %s.%s (id BIGINT PRIMARY KEY, v VARCHAR(32), n INT NOT NULL DEFAULT 0)", scaleDB, scaleTable(i)))
	}
	conf := filepath.Join(t.TempDir(), "changefeed.conf")
	require.NoError(t, os.WriteFile(conf, []byte(changefeedConf), 0o600))
	r := harness.Run(t, 90*time.Second, "", harness.CDC(t), "cli", "changefeed", "create",
		"--server=http://"+c.byID("coord-1").addr,
		"--sink-uri=kafka://"+strings.Join(dev.Kafka, ",")+"/meta?protocol=avro&auto-create-topic=true&partition-num=3&replication-factor=1",
		"--schema-registry="+dev.Registry, "--changefeed-id="+scaleCF, "--config", conf)
	require.Equal(t, 0, r.ExitCode, "stderr: %s", r.Stderr)

	// The TSO through TiDB, on a connection of its own: the load owns conn
	// from here on.
	tsoConn, err := pg.db.Conn(ctx)
	require.NoError(t, err)
	defer tsoConn.Close()
	tso := func() uint64 { return currentTS(ctx, t, tsoConn) }
	checkpoint := func() (uint64, *store.Changefeed) {
		cf, err := st.Get(ctx, store.DefaultNamespace, scaleCF)
		require.NoError(t, err)
		return cf.Status.GetCheckpointTs(), cf
	}
	var maxLag time.Duration
	// caughtUp polls until the checkpoint has passed ts and lags the TSO by
	// less than 10 s; it returns when that became true and the largest lag
	// seen meanwhile.
	caughtUp := func(what string, ts uint64, timeout time.Duration) (time.Time, time.Duration) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		var worst time.Duration
		for {
			cp, cf := checkpoint()
			lag := tsLag(tso(), cp)
			worst, maxLag = max(worst, lag), max(maxLag, lag)
			if cp >= ts && lag < scaleLagLimit {
				return time.Now(), worst
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: checkpoint %d (lag %s, state %s, error %q) not past %d with lag < %s within %s; pipelines behind: %s",
					what, cp, lag.Round(time.Millisecond), cf.Status.GetState(), cf.Status.GetError().GetMessage(), ts, scaleLagLimit, timeout,
					c.behind(ctx, ts))
			}
			time.Sleep(scaleTick)
		}
	}

	// The load: one connection, about 100 statements a second over the 20
	// tables, each statement's commit ts recorded.
	load := &sqlLoad{}
	stopLoad := load.start(ctx, conn)
	defer stopLoad()

	// The checker: it samples the checkpoint and holds Kafka to it.
	rc, err := sr.NewClient(sr.URLs(dev.Registry))
	require.NoError(t, err)
	kv := newKafkaView(t, dev.Kafka, rc)
	defer kv.close()
	chk := &checkpointChecker{kv: kv, load: load, checkpoint: c.checkpoint}
	stopChecker := chk.start(ctx)
	stopCheck := func() {
		stopChecker()
		require.NoError(t, chk.failure(), "checkpoint sample")
	}
	defer stopChecker()
	// A failed sample stops the test at the next step.
	assertChecks := func() {
		t.Helper()
		require.NoError(t, chk.failure(), "checkpoint sample")
		require.NoError(t, load.failure(), "load")
	}

	start := time.Now()
	c.waitPlaced(ctx, 60*time.Second)
	at, _ := caughtUp("initial catch-up", tso(), 90*time.Second)
	t.Logf("changefeed created and caught up (all %d pipelines placed, lag < %s) in %s", scaleTables, scaleLagLimit, at.Sub(start).Round(100*time.Millisecond))
	assertChecks()

	type recovery struct {
		role, victim string
		took, worst  time.Duration
		note         string
	}
	var recoveries []recovery

	// A role with two members: kill the busiest, the survivor takes its
	// pipelines once its member key expires; restart it under its id so
	// the role keeps two members, and wait for the balance to come back.
	for _, role := range []string{"puller", "sorter", "encoder", "producer"} {
		var rebalance *moveWatch // onto the restarted member of a role with two
		c.waitBalanced(ctx, role, 30*time.Second)
		victim := c.busiest(ctx, role)
		victim.proc.Kill()
		killedAt := time.Now()
		killTS := tso()
		t.Logf("kill -9 %s (%s role, pid %d)", victim.id, role, victim.proc.PID())
		if role == "sorter" {
			// The only sorter: its pipelines have nowhere to go until it
			// comes back, which it can under its id only once its member
			// key has expired.
			c.waitMemberGone(ctx, victim.id)
			gone := time.Since(killedAt)
			c.restart(victim)
			restartedAt := time.Now()
			at, worst := caughtUp("after the sorter's restart", killTS, scaleRecovery)
			rec := recovery{role: role, victim: victim.id, took: at.Sub(killedAt), worst: worst,
				note: fmt.Sprintf("member key gone %s after the kill; restarted, serving after %s; caught up %s after the restart",
					gone.Round(100*time.Millisecond), restartedAt.Sub(killedAt).Round(100*time.Millisecond), at.Sub(restartedAt).Round(100*time.Millisecond))}
			recoveries = append(recoveries, rec)
			t.Logf("%s recovered %s after its kill (largest lag %s): %s", role, rec.took.Round(100*time.Millisecond), worst.Round(100*time.Millisecond), rec.note)
			require.Less(t, rec.took, scaleRecovery)
		} else {
			at, worst := caughtUp("after kill -9 of "+victim.id, killTS, scaleRecovery)
			rec := recovery{role: role, victim: victim.id, took: at.Sub(killedAt), worst: worst}
			require.Empty(t, c.pipelinesOn(ctx, role, victim.id), "pipelines still placed on the killed %s", victim.id)
			recoveries = append(recoveries, rec)
			t.Logf("%s recovered %s after kill -9 of %s (largest lag %s)", role, rec.took.Round(100*time.Millisecond), victim.id, worst.Round(100*time.Millisecond))
			c.waitMemberGone(ctx, victim.id)
			rebalance = c.watchMoves(ctx, role)
			c.restart(victim)
		}
		assertChecks()
		restartedAt := time.Now()
		balancedAt := c.waitBalanced(ctx, role, 30*time.Second)
		how := ""
		if rebalance != nil {
			rounds := rebalance.stop()
			require.Equal(t, len(c.pipelinesOn(ctx, role, victim.id)), rounds.onto(victim.id), "every pipeline on %s moved there once", victim.id)
			how = fmt.Sprintf(" %s after it served, by %s", balancedAt.Sub(restartedAt).Round(10*time.Millisecond), rounds.describe(t, victim.id))
		}
		caughtUp("after the restart of "+victim.id, tso(), scaleRecovery)
		t.Logf("%s restarted under its id; %s pipelines balanced%s: %v", victim.id, role, how, c.loads(ctx, role))
	}

	// The owner coordinator: the other one takes over once its key
	// expires; meanwhile the pipelines run on, but nobody folds their
	// progress into the changefeed checkpoint.
	owner := c.owner(ctx)
	owner.proc.Kill()
	killedAt := time.Now()
	killTS := tso()
	t.Logf("kill -9 %s (the owner, pid %d)", owner.id, owner.proc.PID())
	at, worst := caughtUp("after kill -9 of the owner", killTS, scaleRecovery)
	newOwner := c.owner(ctx)
	require.NotEqual(t, owner.id, newOwner.id)
	rec := recovery{role: "coordinator (owner)", victim: owner.id, took: at.Sub(killedAt), worst: worst, note: "new owner " + newOwner.id}
	recoveries = append(recoveries, rec)
	t.Logf("owner recovered %s after kill -9 of %s (largest lag %s); new owner %s", rec.took.Round(100*time.Millisecond), owner.id, worst.Round(100*time.Millisecond), newOwner.id)
	c.waitMemberGone(ctx, owner.id)
	c.restart(owner)
	assertChecks()

	// A third encoder joins: pipelines move onto it in bounded rounds.
	moves := c.watchMoves(ctx, "encoder")
	joinedAt := time.Now()
	c.start("encoder", "encoder-3")
	servingAt := time.Now()
	balancedAt := c.waitBalanced(ctx, "encoder", 60*time.Second)
	rounds := moves.stop()
	loads := c.loads(ctx, "encoder")
	for id, n := range loads {
		require.True(t, n == 6 || n == 7, "encoder %s carries %d of 20 pipelines: %v", id, n, loads)
	}
	require.Equal(t, loads["encoder-3"], rounds.onto("encoder-3"), "every pipeline on encoder-3 moved there once")
	t.Logf("encoder-3 started; serving after %s, encoders balanced %s after the start, by %s: %v",
		servingAt.Sub(joinedAt).Round(10*time.Millisecond), balancedAt.Sub(joinedAt).Round(10*time.Millisecond), rounds.describe(t, "encoder-3"), loads)
	caughtUp("after encoder-3 joined", tso(), scaleRecovery)
	assertChecks()

	// The end: stop the load, wait for the checkpoint to pass its last
	// write, then read every topic and hold it against TiDB.
	stopLoad()
	require.NoError(t, load.failure(), "load")
	writes := load.snapshot()
	require.NotEmpty(t, writes)
	last := writes[len(writes)-1].ts
	caughtUp("checkpoint past the last write", last, 90*time.Second)
	stopCheck()
	final, _ := checkpoint()
	require.NoError(t, kv.catchUp(ctx, 60*time.Second))
	require.NoError(t, kv.verify(writes, final), "every write at or below the final checkpoint %d", final)
	require.NoError(t, kv.verifyOrder(writes), "per key, first occurrences in commit order")
	rows := readScaleTables(ctx, t, pg.db, scaleTables)
	require.NoError(t, kv.verifyState(rows), "TiDB's rows against the last version of each key in Kafka")

	upserts, deletes := 0, 0
	for _, w := range writes {
		if w.del {
			deletes++
		} else {
			upserts++
		}
	}
	t.Logf("kill recoveries (kill -9 until checkpoint past the TSO at the kill and lag < %s):", scaleLagLimit)
	for _, r := range recoveries {
		t.Logf("  %-20s %-11s %6s (largest lag %s) %s", r.role, r.victim, r.took.Round(100*time.Millisecond), r.worst.Round(100*time.Millisecond), r.note)
	}
	t.Logf("checkpoint samples verified: %d (each: checkpoint, end offsets, every recorded write at or below it present); largest lag seen %s",
		chk.samples(), maxLag.Round(100*time.Millisecond))
	t.Logf("rows written: %d statements (%d upserts, %d deletes) over %d tables, %.0f/s; records read: %d; duplicates: %d; keys in TiDB at the end: %d",
		len(writes), upserts, deletes, scaleTables, float64(len(writes))/writes[len(writes)-1].at.Sub(writes[0].at).Seconds(),
		kv.records, kv.records-len(writes), len(rows))
	t.Logf("wall time of the test: %s", time.Since(began).Round(100*time.Millisecond))
}

func scaleTable(i int) string { return fmt.Sprintf("t%02d", i) }

func scaleTopic(i int) string { return "tidb_" + scaleDB + "_" + scaleTable(i) }

// tsLag is how far behind now ts is, by the physical part of both.
func tsLag(now, ts uint64) time.Duration {
	if ts >= now {
		return 0
	}
	return time.Duration(oracle.ExtractPhysical(now)-oracle.ExtractPhysical(ts)) * time.Millisecond
}

// roleMember is one `cdc <role>` process of the cluster.
type roleMember struct {
	role, id, dataDir string
	proc              *harness.Proc
	addr              string
}

// roleCluster is the processes of a one-role-per-process cluster on one
// external etcd.
type roleCluster struct {
	t        *testing.T
	etcd, pd string
	st       *store.Store
	keys     store.Keys
	mu       sync.Mutex
	members  map[string]*roleMember
}

// start runs `cdc <role>` as member id with a data dir of its own and waits
// until it serves.
func (c *roleCluster) start(role, id string) *roleMember {
	c.t.Helper()
	m := &roleMember{role: role, id: id, dataDir: c.t.TempDir()}
	c.launch(m)
	c.mu.Lock()
	c.members[id] = m
	c.mu.Unlock()
	return m
}

// restart runs a killed member again: same role, id and data dir, new
// ports.
func (c *roleCluster) restart(m *roleMember) {
	c.t.Helper()
	require.True(c.t, m.proc.Exited(), "%s still runs", m.id)
	c.launch(m)
}

func (c *roleCluster) launch(m *roleMember) {
	c.t.Helper()
	p, addrs := harness.StartOnFreePorts(c.t, harness.Launch{Name: m.id, Bin: harness.CDC(c.t), Addrs: 2,
		Args: func(addrs []string) []string {
			args := []string{m.role, "--etcd", c.etcd, "--member-id", m.id, "--cluster-id", scaleCluster,
				"--addr", addrs[0], "--status-addr", addrs[1], "--data-dir", m.dataDir, "--session-ttl", "3s"}
			switch m.role {
			case "coordinator", "puller", "encoder":
				args = append(args, "--pd", c.pd)
			case "producer":
				args = append(args, "--producer-progress-interval", "200ms")
			}
			return args
		},
		Ready: harness.Serving(60 * time.Second),
	})
	c.mu.Lock()
	m.proc, m.addr = p, addrs[0]
	c.mu.Unlock()
}

// openStore connects to the cluster's etcd (c.st, c.keys) until the test
// ends.
func (c *roleCluster) openStore() *store.Store {
	c.t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.etcd}, DialTimeout: 5 * time.Second})
	require.NoError(c.t, err)
	c.t.Cleanup(func() { _ = cli.Close() })
	keys, err := store.NewKeys(scaleCluster)
	require.NoError(c.t, err)
	c.st, c.keys = store.New(cli, keys), keys
	return c.st
}

// checkpoint is the test changefeed's checkpoint.
func (c *roleCluster) checkpoint(ctx context.Context) (uint64, error) {
	cf, err := c.st.Get(ctx, store.DefaultNamespace, scaleCF)
	if err != nil {
		return 0, err
	}
	return cf.Status.GetCheckpointTs(), nil
}

func (c *roleCluster) byID(id string) *roleMember {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[id]
}

// ofRole is the members of role, by id.
func (c *roleCluster) ofRole(role string) map[string]*roleMember {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]*roleMember{}
	for id, m := range c.members {
		if m.role == role {
			out[id] = m
		}
	}
	return out
}

// memberOf is the member a record places role on, and the address its
// route gives for it ("" for the producer, which the route does not name).
func memberOf(a *pb.PipelineAssignment, role string) (id, addr string) {
	switch role {
	case "puller":
		return a.GetPullerMember(), a.GetRoute().GetPullerAddr()
	case "sorter":
		return a.GetSorterMember(), a.GetRoute().GetSorterAddr()
	case "encoder":
		return a.GetEncoderMember(), a.GetRoute().GetEncoderAddr()
	case "producer":
		return a.GetProducerMember(), ""
	}
	panic("unknown role " + role)
}

func (c *roleCluster) assignments(ctx context.Context) []*store.Assignment {
	c.t.Helper()
	as, _, err := c.st.Assignments(ctx, "")
	require.NoError(c.t, err)
	return as
}

// loads is how many pipelines each member of role carries.
func (c *roleCluster) loads(ctx context.Context, role string) map[string]int {
	out := map[string]int{}
	for id := range c.ofRole(role) {
		out[id] = 0
	}
	for _, a := range c.assignments(ctx) {
		id, _ := memberOf(a.Record, role)
		out[id]++
	}
	return out
}

// busiest is the member of role that carries the most pipelines.
func (c *roleCluster) busiest(ctx context.Context, role string) *roleMember {
	c.t.Helper()
	loads := c.loads(ctx, role)
	var best string
	for id, n := range loads {
		if best == "" || n > loads[best] || n == loads[best] && id < best {
			best = id
		}
	}
	require.Positive(c.t, loads[best], "no %s carries a pipeline: %v", role, loads)
	return c.byID(best)
}

// pipelinesOn lists the pipelines whose record places role on member id.
func (c *roleCluster) pipelinesOn(ctx context.Context, role, id string) []int64 {
	var out []int64
	for _, a := range c.assignments(ctx) {
		if m, _ := memberOf(a.Record, role); m == id {
			out = append(out, a.Record.GetPipelineId())
		}
	}
	return out
}

// placedErr says why the records do not place every table once on the
// current members of each stage role at their current addresses, or nil.
func (c *roleCluster) placedErr(as []*store.Assignment) error {
	if len(as) != scaleTables {
		return fmt.Errorf("%d assignment records, want %d", len(as), scaleTables)
	}
	for _, a := range as {
		for _, role := range []string{"puller", "sorter", "encoder", "producer"} {
			id, addr := memberOf(a.Record, role)
			m := c.byID(id)
			if m == nil || m.role != role {
				return fmt.Errorf("pipeline %d: %s %q is not one of ours", a.Record.GetPipelineId(), role, id)
			}
			if role != "producer" && addr != m.addr {
				return fmt.Errorf("pipeline %d: route to %s %s is %s, it serves on %s", a.Record.GetPipelineId(), role, id, addr, m.addr)
			}
		}
	}
	return nil
}

// waitPlaced waits until every table has a pipeline placed on current
// members.
func (c *roleCluster) waitPlaced(ctx context.Context, timeout time.Duration) {
	c.t.Helper()
	harness.Eventually(c.t, timeout, "every table placed", func() error {
		as, _, err := c.st.Assignments(ctx, "")
		if err != nil {
			return err
		}
		return c.placedErr(as)
	})
}

// waitBalanced waits until every table is placed on current members and
// the members of role carry their pipelines within one of each other; it
// returns when that became true.
func (c *roleCluster) waitBalanced(ctx context.Context, role string, timeout time.Duration) time.Time {
	c.t.Helper()
	harness.Eventually(c.t, timeout, role+" pipelines balanced", func() error {
		as, _, err := c.st.Assignments(ctx, "")
		if err != nil {
			return err
		}
		if err := c.placedErr(as); err != nil {
			return err
		}
		loads := map[string]int{}
		for id := range c.ofRole(role) {
			loads[id] = 0
		}
		for _, a := range as {
			id, _ := memberOf(a.Record, role)
			loads[id]++
		}
		lo, hi := scaleTables, 0
		for _, n := range loads {
			lo, hi = min(lo, n), max(hi, n)
		}
		if hi-lo > 1 {
			return fmt.Errorf("%s loads %v", role, loads)
		}
		return nil
	})
	return time.Now()
}

// behind describes the pipelines whose progress record is below ts: where
// they are placed and how far they got.
func (c *roleCluster) behind(ctx context.Context, ts uint64) string {
	progress, err := c.st.PipelineProgress(ctx, store.DefaultNamespace, scaleCF)
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, a := range c.assignments(ctx) {
		r := a.Record
		p := progress[r.GetPipelineId()]
		if p.GetCheckpointTs() >= ts {
			continue
		}
		out = append(out, fmt.Sprintf("%d (epoch %d, progress epoch %d, checkpoint %d, error %q; puller %s sorter %s encoder %s producer %s)",
			r.GetPipelineId(), r.GetEpoch(), p.GetEpoch(), p.GetCheckpointTs(), p.GetError().GetMessage(),
			r.GetPullerMember(), r.GetSorterMember(), r.GetEncoderMember(), r.GetProducerMember()))
	}
	slices.Sort(out)
	return fmt.Sprintf("%d: %s", len(out), strings.Join(out, "; "))
}

// waitMemberGone waits until a killed member's key has expired with its
// lease, so its id can register again.
func (c *roleCluster) waitMemberGone(ctx context.Context, id string) {
	c.t.Helper()
	harness.Eventually(c.t, 30*time.Second, id+"'s member key expired", func() error {
		resp, err := c.st.Client().Get(ctx, c.keys.Member(id))
		if err != nil {
			return err
		}
		if len(resp.Kvs) > 0 {
			return errors.New("member key still there")
		}
		return nil
	})
}

// owner asks the live coordinators who the owner is, until they agree on
// one that is a member of ours.
func (c *roleCluster) owner(ctx context.Context) *roleMember {
	c.t.Helper()
	var owner *roleMember
	harness.Eventually(c.t, 30*time.Second, "an owner", func() error {
		var ids []string
		for _, m := range c.ofRole("coordinator") {
			if m.proc.Exited() {
				continue
			}
			conn := harness.Dial(c.t, m.addr)
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			resp, err := pb.NewClusterServiceClient(conn).Owner(rctx, &pb.OwnerRequest{})
			cancel()
			_ = conn.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", m.id, err)
			}
			ids = append(ids, resp.GetOwner().GetId())
		}
		if len(ids) == 0 || ids[0] == "" || slices.ContainsFunc(ids, func(id string) bool { return id != ids[0] }) {
			return fmt.Errorf("coordinators name owners %q", ids)
		}
		owner = c.byID(ids[0])
		if owner == nil || owner.proc.Exited() {
			return fmt.Errorf("owner %q is not a live coordinator of ours", ids[0])
		}
		return nil
	})
	return owner
}

// moveRound is one assignment write (one etcd revision) that changed the
// member of the watched role of some pipelines.
type moveRound struct {
	rev   int64
	moves int
	onto  map[string]int
}

type moveRounds []moveRound

// describe asserts that no write moved more than the owner's balance
// budget (scheduler.DefaultMaxMoves, 16 a round) and says what moved.
func (rs moveRounds) describe(t *testing.T, onto string) string {
	t.Helper()
	total := 0
	var each []string
	for _, r := range rs {
		require.LessOrEqual(t, r.moves, 16, "balance moves in one owner round (etcd revision %d)", r.rev)
		total += r.moves
		each = append(each, fmt.Sprintf("rev %d: %d (%d onto %s)", r.rev, r.moves, r.onto[onto], onto))
	}
	return fmt.Sprintf("%d moves in %d assignment writes [%s]", total, len(rs), strings.Join(each, "; "))
}

func (rs moveRounds) onto(id string) int {
	n := 0
	for _, r := range rs {
		n += r.onto[id]
	}
	return n
}

// moveWatch collects the owner's changes of one role's member per
// assignment write.
type moveWatch struct {
	cancel func()
	done   chan struct{}
	rounds moveRounds
}

func (w *moveWatch) stop() moveRounds {
	w.cancel()
	<-w.done
	return w.rounds
}

// watchMoves watches the assignment records from now on and counts, per
// etcd revision (each owner round writes its records in one transaction),
// the pipelines whose member of role changed.
func (c *roleCluster) watchMoves(ctx context.Context, role string) *moveWatch {
	c.t.Helper()
	cli := c.st.Client()
	resp, err := cli.Get(ctx, c.keys.AssignmentPrefix(""), clientv3.WithPrefix())
	require.NoError(c.t, err)
	member := map[int64]string{}
	for _, kv := range resp.Kvs {
		a := &pb.PipelineAssignment{}
		require.NoError(c.t, protojson.Unmarshal(kv.Value, a))
		member[a.GetPipelineId()], _ = memberOf(a, role)
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &moveWatch{cancel: cancel, done: make(chan struct{})}
	wch := cli.Watch(wctx, c.keys.AssignmentPrefix(""), clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	go func() {
		defer close(w.done)
		for wr := range wch {
			for _, ev := range wr.Events {
				if ev.Type != clientv3.EventTypePut {
					continue
				}
				a := &pb.PipelineAssignment{}
				if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(ev.Kv.Value, a); err != nil {
					c.t.Errorf("decode assignment %s: %v", ev.Kv.Key, err)
					continue
				}
				to, _ := memberOf(a, role)
				if from := member[a.GetPipelineId()]; from == to {
					continue
				}
				member[a.GetPipelineId()] = to
				if n := len(w.rounds); n == 0 || w.rounds[n-1].rev != ev.Kv.ModRevision {
					w.rounds = append(w.rounds, moveRound{rev: ev.Kv.ModRevision, onto: map[string]int{}})
				}
				r := &w.rounds[len(w.rounds)-1]
				r.moves++
				r.onto[to]++
			}
		}
	}()
	return w
}

// scaleWrite is one committed statement of the load.
type scaleWrite struct {
	table int
	id    int64
	v     string // the row's new v, unique per write; "" for a delete
	del   bool
	ts    uint64 // commit ts
	at    time.Time
}

// sqlLoad writes rows over the tables and records every committed
// statement.
type sqlLoad struct {
	// tables and keys are how many tables it writes (t00 on) and ids per
	// table; 0 means scaleTables and scaleKeys.
	tables int
	keys   int64

	mu     sync.Mutex
	writes []scaleWrite
	err    error
}

// start runs the load aside on conn; stop ends it and returns once it has
// (further calls do nothing).
func (l *sqlLoad) start(ctx context.Context, conn *sql.Conn) (stop func()) {
	halt, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		l.run(ctx, halt, conn)
	}()
	return sync.OnceFunc(func() {
		close(halt)
		<-done
	})
}

func (l *sqlLoad) snapshot() []scaleWrite {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.writes)
}

func (l *sqlLoad) failure() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// run writes until stop is closed, one autocommit statement every 10 ms
// at most: an upsert of a random key with a new unique v, or one in twenty
// the delete of a key that exists. After each statement it reads the
// commit ts from @@tidb_last_txn_info. Stopping never interrupts a
// statement: one cancelled mid-way may have committed unrecorded.
func (l *sqlLoad) run(ctx context.Context, stop <-chan struct{}, conn *sql.Conn) {
	fail := func(err error) {
		l.mu.Lock()
		l.err = err
		l.mu.Unlock()
	}
	rng := rand.New(rand.NewPCG(13, 13))
	exists := map[[2]int64]bool{}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var lastTS uint64
	tables, keys := cmp.Or(l.tables, scaleTables), cmp.Or(l.keys, scaleKeys)
	for seq := 0; ; seq++ {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		w := scaleWrite{table: rng.IntN(tables), id: rng.Int64N(keys)}
		k := [2]int64{int64(w.table), w.id}
		var res sql.Result
		var err error
		if exists[k] && rng.IntN(20) == 0 {
			w.del = true
			res, err = conn.ExecContext(ctx, fmt.Sprintf("DELETE FROM %s.%s WHERE id = ?", scaleDB, scaleTable(w.table)), w.id)
		} else {
			w.v = "w" + strconv.Itoa(seq)
			res, err = conn.ExecContext(ctx, fmt.Sprintf("INSERT INTO %s.%s (id, v) VALUES (?, ?) ON DUPLICATE KEY UPDATE v = VALUES(v), n = n + 1",
				scaleDB, scaleTable(w.table)), w.id, w.v)
		}
		if err != nil {
			fail(fmt.Errorf("write %d: %w", seq, err))
			return
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			fail(fmt.Errorf("write %d (%+v) changed no row (%d, %v)", seq, w, n, err))
			return
		}
		ts, err := lastCommitTS(ctx, conn, lastTS)
		if err != nil {
			fail(fmt.Errorf("write %d: %w", seq, err))
			return
		}
		lastTS = ts
		w.ts, w.at = ts, time.Now()
		exists[k] = !w.del
		l.mu.Lock()
		l.writes = append(l.writes, w)
		l.mu.Unlock()
	}
}

// lastCommitTS is the commit ts of the last statement on conn, read from
// @@tidb_last_txn_info. One connection commits one statement after the
// other, so a ts not above after (the previous one) is a stale read of the
// variable, an error.
func lastCommitTS(ctx context.Context, conn *sql.Conn, after uint64) (uint64, error) {
	var info string
	if err := conn.QueryRowContext(ctx, "SELECT @@tidb_last_txn_info").Scan(&info); err != nil {
		return 0, fmt.Errorf("@@tidb_last_txn_info: %w", err)
	}
	var txn struct {
		CommitTS uint64 `json:"commit_ts"`
	}
	if err := json.Unmarshal([]byte(info), &txn); err != nil || txn.CommitTS == 0 {
		return 0, fmt.Errorf("@@tidb_last_txn_info %q: no commit_ts (%v)", info, err)
	}
	if txn.CommitTS <= after {
		return 0, fmt.Errorf("commit ts %d not above the previous %d", txn.CommitTS, after)
	}
	return txn.CommitTS, nil
}

// scaleKey is one row key: table index and id.
type scaleKey struct {
	table int
	id    int64
}

// scaleRecord is one Kafka record of a key, as read: its v, or a tombstone.
type scaleRecord struct {
	v         string
	tombstone bool
}

// kafkaView reads the tables' topics incrementally, from the start, and
// keeps every key's records in the order its partition holds them.
type kafkaView struct {
	tables  int // topics of tables t00 on it reads; scaleTables by default
	cl      *kgo.Client
	adm     *kadm.Client
	decode  func([]byte) (map[string]any, error)
	added   map[string]bool
	next    map[string]map[int32]int64 // next offset to read, per partition
	byKey   map[scaleKey][]scaleRecord
	part    map[scaleKey]int32
	present map[string]bool // "table/id/v" of every version read
	tombs   map[scaleKey]int
	records int
}

func newKafkaView(t *testing.T, brokers []string, rc *sr.Client) *kafkaView {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200*time.Millisecond), kgo.MetadataMinAge(100*time.Millisecond))
	require.NoError(t, err)
	return &kafkaView{tables: scaleTables, cl: cl, adm: kadm.NewClient(cl), decode: avroDecoder(rc),
		added: map[string]bool{}, next: map[string]map[int32]int64{}, byKey: map[scaleKey][]scaleRecord{},
		part: map[scaleKey]int32{}, present: map[string]bool{}, tombs: map[scaleKey]int{}}
}

func (k *kafkaView) close() { k.cl.Close() }

// catchUp consumes every existing table topic up to the end offsets it
// has now.
func (k *kafkaView) catchUp(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var all []string
	for i := range k.tables {
		all = append(all, scaleTopic(i))
	}
	topics, err := k.adm.ListTopics(ctx, all...)
	if err != nil {
		return fmt.Errorf("list topics: %w", err)
	}
	var fresh, mine []string
	for _, name := range all {
		if td, ok := topics[name]; ok && td.Err == nil {
			if !k.added[name] {
				fresh = append(fresh, name)
				k.added[name] = true
			}
			mine = append(mine, name)
		}
	}
	if len(fresh) > 0 {
		k.cl.AddConsumeTopics(fresh...)
	}
	if len(mine) == 0 {
		return nil
	}
	ends, err := k.adm.ListEndOffsets(ctx, mine...)
	if err != nil {
		return fmt.Errorf("end offsets: %w", err)
	}
	if err := ends.Error(); err != nil {
		return fmt.Errorf("end offsets: %w", err)
	}
	behind := func() string {
		var lag string
		ends.Each(func(o kadm.ListedOffset) {
			if lag == "" && k.next[o.Topic][o.Partition] < o.Offset {
				lag = fmt.Sprintf("%s/%d at %d of %d", o.Topic, o.Partition, k.next[o.Topic][o.Partition], o.Offset)
			}
		})
		return lag
	}
	for b := behind(); b != ""; b = behind() {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		fs := k.cl.PollFetches(pctx)
		pcancel()
		if ctx.Err() != nil {
			return fmt.Errorf("reading to the end offsets: %s: %w", b, ctx.Err())
		}
		var ferr error
		fs.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) && ferr == nil {
				ferr = fmt.Errorf("fetch %s/%d: %w", topic, p, err)
			}
		})
		if ferr != nil {
			return ferr
		}
		var rerr error
		fs.EachRecord(func(r *kgo.Record) {
			if rerr == nil {
				rerr = k.note(r)
			}
		})
		if rerr != nil {
			return rerr
		}
	}
	return nil
}

// note adds one record read.
func (k *kafkaView) note(r *kgo.Record) error {
	if k.next[r.Topic] == nil {
		k.next[r.Topic] = map[int32]int64{}
	}
	k.next[r.Topic][r.Partition] = r.Offset + 1
	k.records++
	table, err := strconv.Atoi(strings.TrimPrefix(r.Topic, "tidb_"+scaleDB+"_t"))
	if err != nil {
		return fmt.Errorf("record on topic %s", r.Topic)
	}
	key, err := k.decode(r.Key)
	if err != nil {
		return fmt.Errorf("%s/%d@%d key: %w", r.Topic, r.Partition, r.Offset, err)
	}
	id, ok := key["id"].(int64)
	if !ok {
		return fmt.Errorf("%s/%d@%d key %v: no long id", r.Topic, r.Partition, r.Offset, key)
	}
	sk := scaleKey{table, id}
	if p, seen := k.part[sk]; seen && p != r.Partition {
		return fmt.Errorf("%s key %d on partitions %d and %d", r.Topic, id, p, r.Partition)
	}
	k.part[sk] = r.Partition
	rec := scaleRecord{tombstone: r.Value == nil}
	if rec.tombstone {
		k.tombs[sk]++
	} else {
		val, err := k.decode(r.Value)
		if err != nil {
			return fmt.Errorf("%s/%d@%d value: %w", r.Topic, r.Partition, r.Offset, err)
		}
		if rec.v, ok = val["v"].(string); !ok {
			return fmt.Errorf("%s/%d@%d value %v: no string v", r.Topic, r.Partition, r.Offset, val)
		}
		k.present[fmt.Sprintf("%d/%d/%s", table, id, rec.v)] = true
	}
	k.byKey[sk] = append(k.byKey[sk], rec)
	return nil
}

// verify checks that every write with commit ts <= cp has been read: each
// upsert's version, and per key at least as many tombstones as deletes.
func (k *kafkaView) verify(writes []scaleWrite, cp uint64) error {
	deletes := map[scaleKey]int{}
	var missing []string
	for _, w := range writes {
		if w.ts > cp {
			continue
		}
		sk := scaleKey{w.table, w.id}
		if w.del {
			deletes[sk]++
			if k.tombs[sk] < deletes[sk] {
				missing = append(missing, fmt.Sprintf("delete of %s id %d at %d (tombstone %d of the key, %d read)", scaleTable(w.table), w.id, w.ts, deletes[sk], k.tombs[sk]))
			}
		} else if !k.present[fmt.Sprintf("%d/%d/%s", w.table, w.id, w.v)] {
			missing = append(missing, fmt.Sprintf("%s id %d v %s at %d", scaleTable(w.table), w.id, w.v, w.ts))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%d writes at or below checkpoint %d are not in Kafka, e.g. %s", len(missing), cp, strings.Join(missing[:min(5, len(missing))], "; "))
	}
	return nil
}

// verifyOrder checks that per key the first occurrence of each version
// follows commit order, that every version arrived, and that each delete's
// tombstone lies between the first occurrences of the versions committed
// before and after it.
func (k *kafkaView) verifyOrder(writes []scaleWrite) error {
	events := map[scaleKey][]scaleWrite{}
	for _, w := range writes {
		sk := scaleKey{w.table, w.id}
		events[sk] = append(events[sk], w)
	}
	for sk, es := range events {
		rs := k.byKey[sk]
		first := map[string]int{}
		var got, want []string
		for i, r := range rs {
			if _, seen := first[r.v]; !r.tombstone && !seen {
				first[r.v] = i
				got = append(got, r.v)
			}
		}
		for _, e := range es {
			if !e.del {
				want = append(want, e.v)
			}
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("%s id %d: versions first read in order %v, committed in order %v", scaleTable(sk.table), sk.id, got, want)
		}
		for i, e := range es {
			if !e.del {
				continue
			}
			// The load deletes only a row that exists: a version
			// precedes every delete.
			lo, hi := first[es[i-1].v], len(rs)
			if i+1 < len(es) {
				hi = first[es[i+1].v]
			}
			if !slices.ContainsFunc(rs[lo+1:hi], func(r scaleRecord) bool { return r.tombstone }) {
				return fmt.Errorf("%s id %d: no tombstone between version %s and the next (delete committed at %d)", scaleTable(sk.table), sk.id, es[i-1].v, e.ts)
			}
		}
	}
	return nil
}

// verifyState checks TiDB's rows (table, id → v) against the last record
// of every key in Kafka.
func (k *kafkaView) verifyState(rows map[scaleKey]string) error {
	var bad []string
	for sk, v := range rows {
		rs := k.byKey[sk]
		switch {
		case len(rs) == 0:
			bad = append(bad, fmt.Sprintf("%s id %d (v %s): no record", scaleTable(sk.table), sk.id, v))
		case rs[len(rs)-1].tombstone:
			bad = append(bad, fmt.Sprintf("%s id %d (v %s): last record a tombstone", scaleTable(sk.table), sk.id, v))
		case rs[len(rs)-1].v != v:
			bad = append(bad, fmt.Sprintf("%s id %d: v %s in TiDB, last in Kafka %s", scaleTable(sk.table), sk.id, v, rs[len(rs)-1].v))
		}
	}
	for sk, rs := range k.byKey {
		if _, ok := rows[sk]; !ok && !rs[len(rs)-1].tombstone {
			bad = append(bad, fmt.Sprintf("%s id %d: not in TiDB, last in Kafka v %s", scaleTable(sk.table), sk.id, rs[len(rs)-1].v))
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		return fmt.Errorf("%d keys differ, e.g. %s", len(bad), strings.Join(bad[:min(5, len(bad))], "; "))
	}
	return nil
}

// readScaleTables is every row of the tables: (table, id) → v.
func readScaleTables(ctx context.Context, t *testing.T, db *sql.DB, tables int) map[scaleKey]string {
	t.Helper()
	out := map[scaleKey]string{}
	for i := range tables {
		rows, err := db.QueryContext(ctx, fmt.Sprintf("SELECT id, v FROM %s.%s", scaleDB, scaleTable(i)))
		require.NoError(t, err)
		for rows.Next() {
			var id int64
			var v string
			require.NoError(t, rows.Scan(&id, &v))
			out[scaleKey{i, id}] = v
		}
		require.NoError(t, rows.Err())
		rows.Close()
	}
	return out
}

// checkpointChecker samples the changefeed checkpoint about every 500 ms
// and holds Kafka to it.
type checkpointChecker struct {
	kv         *kafkaView
	load       *sqlLoad
	checkpoint func(context.Context) (uint64, error)

	mu      sync.Mutex
	checked int
	err     error
}

func (c *checkpointChecker) samples() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checked
}

func (c *checkpointChecker) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// start runs the checker aside; stop ends it and returns once it has
// (further calls do nothing).
func (c *checkpointChecker) start(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// run samples until ctx ends or a sample fails. A sample reads the
// checkpoint C first, then the end offsets: whatever Kafka acknowledged
// before C was written is below them. Then every write recorded by now
// with commit ts <= C must have been read (a write whose commit ts the load
// has not recorded yet is checked by a later sample).
func (c *checkpointChecker) run(ctx context.Context) {
	for ctx.Err() == nil {
		began := time.Now()
		err := c.sample(ctx)
		if ctx.Err() != nil {
			return
		}
		c.mu.Lock()
		if err != nil {
			c.err = err
		} else {
			c.checked++
		}
		c.mu.Unlock()
		if err != nil {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(500*time.Millisecond - time.Since(began)):
		}
	}
}

func (c *checkpointChecker) sample(ctx context.Context) error {
	cp, err := c.checkpoint(ctx)
	if err != nil {
		return err
	}
	if err := c.kv.catchUp(ctx, 30*time.Second); err != nil {
		return err
	}
	return c.kv.verify(c.load.snapshot(), cp)
}

// avroDecoder is avroReader returning its errors, for use off the test
// goroutine: it decodes a Confluent-framed record with the registry's
// schema for the id in its header, nullable unions unwrapped.
func avroDecoder(cl *sr.Client) func([]byte) (map[string]any, error) {
	schemas := map[uint32]hamba.Schema{}
	return func(msg []byte) (map[string]any, error) {
		if len(msg) < 5 || msg[0] != 0 {
			return nil, fmt.Errorf("not Confluent-framed: % x", msg[:min(len(msg), 5)])
		}
		id := binary.BigEndian.Uint32(msg[1:5])
		s := schemas[id]
		if s == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			got, err := cl.SchemaByID(ctx, int(id))
			cancel()
			if err != nil {
				return nil, fmt.Errorf("schema %d: %w", id, err)
			}
			if s, err = hamba.Parse(got.Schema); err != nil {
				return nil, fmt.Errorf("schema %d: %w", id, err)
			}
			schemas[id] = s
		}
		var v map[string]any
		if err := hamba.Unmarshal(s, msg[5:], &v); err != nil {
			return nil, err
		}
		for k, x := range v {
			if m, ok := x.(map[string]any); ok && len(m) == 1 {
				for _, inner := range m {
					v[k] = inner
				}
			}
		}
		return v, nil
	}
}
