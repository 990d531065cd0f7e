package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tikv/client-go/v2/oracle"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/tidestream/tidestream/e2e/harness"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
	"github.com/tidestream/tidestream/services/devstack"
)

// The faults of issue 15, each followed by a clean `cdc diff`.
const (
	outageCF       = "out"            // the changefeed
	outageFor      = 20 * time.Second // how long Kafka or the registry is gone (R5: 20 s)
	outageKeys     = 5000             // ids per table the load writes: most writes stay a key's last version, so a lost one shows in the diff
	outageLagLimit = 10 * time.Second // "caught up" (the recovery target: lag < 10 s within 60 s of fault removal)
)

// outageRig is what the outage tests share: the playground, one `cdc
// server` (every role, embedded etcd) and a changefeed over every table,
// tables t00… of sqlLoad's shape in scaleDB.
type outageRig struct {
	t    *testing.T
	ctx  context.Context
	pg   *playground
	srv  *server
	feed *changefeedWatch
	conn *sql.Conn // DDL, one-off writes and TSOs; the load has its own
	exec func(q string, args ...any)
}

// newOutageRig starts `cdc server`, creates tables t00…t<tables-1> and the
// changefeed into brokers with registry, and waits until its checkpoint has
// passed a TSO taken after that.
func newOutageRig(ctx context.Context, t *testing.T, pg *playground, brokers []string, registry string, tables int) *outageRig {
	t.Helper()
	proc, addr := startCDCServer(t, "", pg.pdAddr, t.TempDir(), nil)
	conn, err := pg.db.Conn(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	r := &outageRig{t: t, ctx: ctx, pg: pg, srv: &server{proc: proc, addr: addr},
		feed: watchChangefeed(t, addr, outageCF), conn: conn, exec: execOn(ctx, t, conn)}
	r.exec("CREATE DATABASE " + scaleDB)
	for i := range tables {
		r.exec(fmt.Sprintf("CREATE TABLE %s.%s (id BIGINT PRIMARY KEY, v VARCHAR(32), n INT NOT NULL DEFAULT 0)", scaleDB, scaleTable(i)))
	}
	createGuideChangefeed(t, addr, brokers, registry, outageCF)
	r.awaitCheckpoint("changefeed running", r.tso(), 90*time.Second)
	return r
}

// stoppableKafka is Kafka in a devstack of its own, on a data dir of its
// own, which a test stops and starts again on the same port and data;
// the registry is a separate devstack that stays up (it keeps schemas in
// memory, and a real registry keeps them in its _schemas topic).
type stoppableKafka struct {
	registry string
	brokers  []string
	cfg      devstack.Config
	stop     func() error // the running Kafka's
}

func startStoppableKafka(t *testing.T) *stoppableKafka {
	t.Helper()
	reg := startDevstack(t, devstack.DefaultConfig()) // its registry only
	k := &stoppableKafka{registry: reg.Registry, cfg: devstack.DefaultConfig()}
	k.cfg.DataDir = t.TempDir()
	k.start(t)
	_, port, err := net.SplitHostPort(k.brokers[0])
	require.NoError(t, err)
	k.cfg.KafkaPort, err = strconv.Atoi(port)
	require.NoError(t, err)
	return k
}

// start runs Kafka: on a free port the first time, then on that port.
func (k *stoppableKafka) start(t *testing.T) {
	t.Helper()
	addrs, stop := runDevstack(t, k.cfg)
	k.brokers, k.stop = addrs.Kafka, stop
}

func (r *outageRig) tso() uint64 { return currentTS(r.ctx, r.t, r.conn) }

// startLoad starts the write load over the first tables tables on a
// connection of its own and waits until the changefeed caught up under it.
// stop ends the load (idempotent; also run when the test ends).
func (r *outageRig) startLoad(tables int) (load *sqlLoad, stop func()) {
	r.t.Helper()
	conn, err := r.pg.db.Conn(r.ctx)
	require.NoError(r.t, err)
	load = &sqlLoad{tables: tables, keys: outageKeys}
	stop = load.start(r.ctx, conn)
	r.t.Cleanup(func() {
		stop()
		_ = conn.Close()
	})
	r.awaitCheckpoint("caught up under the load", r.tso(), 60*time.Second)
	return load, stop
}

// info is the changefeed as the server reports it (what `cdc cli changefeed
// query` prints), over gRPC: polled often, and a process per poll would
// cost the shared cores more than the server under test.
func (r *outageRig) info() (*pb.ChangefeedInfo, error) { return r.feed.get(r.ctx) }

// awaitCheckpoint polls until the changefeed checkpoint is at least ts and
// returns when it saw that.
func (r *outageRig) awaitCheckpoint(what string, ts uint64, timeout time.Duration) time.Time {
	r.t.Helper()
	r.feed.await(r.ctx, r.t, ts, timeout, what)
	return time.Now()
}

// recover polls until the checkpoint passes ts, a TSO taken when the fault
// was removed at removed, and returns how long after removed the
// checkpoint lag first fell under outageLagLimit and how long it took to
// pass ts.
func (r *outageRig) recover(removed time.Time, ts uint64, timeout time.Duration) (lagOK, passed time.Duration) {
	r.t.Helper()
	lagOK = -1
	harness.Eventually(r.t, timeout, "checkpoint past the TSO at the fault's removal", func() error {
		info, err := r.info()
		if err != nil {
			return err
		}
		cp := info.GetCheckpointTs()
		if lag := time.Since(oracle.GetTimeFromTS(cp)); lagOK < 0 && lag < outageLagLimit {
			lagOK = time.Since(removed)
		}
		if cp < ts {
			return fmt.Errorf("checkpoint %d < %d (state %s, error %q)", cp, ts, info.GetState(), info.GetError().GetMessage())
		}
		return nil
	})
	passed = time.Since(removed)
	if lagOK < 0 {
		lagOK = passed
	}
	return lagOK, passed
}

// cpSample is the changefeed seen during an outage, at its offset into it.
type cpSample struct {
	at    time.Duration
	cp    uint64
	state pb.ChangefeedState
}

// sampleOutage reads the changefeed about every 250 ms until d has passed
// since began: the outage lasts d whatever the samples show.
func (r *outageRig) sampleOutage(began time.Time, d time.Duration) []cpSample {
	r.t.Helper()
	var out []cpSample
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for time.Since(began) < d {
		if info, err := r.info(); err == nil {
			out = append(out, cpSample{at: time.Since(began), cp: info.GetCheckpointTs(), state: info.GetState()})
		} else {
			r.t.Logf("changefeed during the outage: %v", err)
		}
		<-tick.C
	}
	require.NotEmpty(r.t, out, "no changefeed sample during the outage")
	return out
}

// describeSamples says when the checkpoint last moved and which states
// were seen.
func describeSamples(s []cpSample, since uint64) string {
	last := s[0]
	states := map[pb.ChangefeedState]int{}
	for _, x := range s {
		if x.cp != last.cp {
			last = x
		}
		states[x.state]++
	}
	return fmt.Sprintf("%d samples; checkpoint last moved %s into the outage, to %s past the fault's TSO; states %v",
		len(s), last.at.Round(10*time.Millisecond), time.Duration(oracle.ExtractPhysical(last.cp)-oracle.ExtractPhysical(since))*time.Millisecond, states)
}

// diffClean runs `cdc diff` at the changefeed checkpoint against the topics
// replayed from kafka with registry and requires every row of scaleDB's
// tables to match. Writes must have stopped: the rows counted now are the
// rows at the checkpoint.
func (r *outageRig) diffClean(kafka []string, registry string) {
	r.t.Helper()
	t := r.t
	var tables, rows int
	names, err := r.conn.QueryContext(r.ctx, "SELECT table_name FROM information_schema.tables WHERE table_schema = ?", scaleDB)
	require.NoError(t, err)
	var list []string
	for names.Next() {
		var name string
		require.NoError(t, names.Scan(&name))
		list = append(list, name)
	}
	require.NoError(t, names.Err())
	names.Close()
	for _, name := range list {
		var n int
		require.NoError(t, r.conn.QueryRowContext(r.ctx, fmt.Sprintf("SELECT COUNT(*) FROM %s.%s", scaleDB, name)).Scan(&n))
		tables, rows = tables+1, rows+n
	}
	began := time.Now()
	verdict := fmt.Sprintf("all %d rows in %d tables match TiDB", rows, tables)
	cleanDiff(t, []string{"--upstream=mysql://root@" + r.pg.sqlAddr + "/", "--changefeed-id=" + outageCF, "--server=http://" + r.srv.addr,
		"--schemas=" + scaleDB, "--kafka=" + strings.Join(kafka, ","), "--schema-registry=" + registry}, verdict)
	t.Logf("cdc diff (%s): %s", time.Since(began).Round(100*time.Millisecond), verdict)
}

// verifyWrites requires every write of the load to be in Kafka: the diff
// sees only each key's last version, this every version. extra is how many
// rows of the load's tables the test wrote itself, once each.
func (r *outageRig) verifyWrites(brokers []string, registry string, load *sqlLoad, tables, extra int) {
	r.t.Helper()
	info, err := r.info()
	require.NoError(r.t, err)
	rc, err := sr.NewClient(sr.URLs(registry))
	require.NoError(r.t, err)
	kv := newKafkaView(r.t, brokers, rc)
	defer kv.close()
	kv.tables = tables
	require.NoError(r.t, kv.catchUp(r.ctx, 60*time.Second))
	writes := load.snapshot()
	require.NoError(r.t, kv.verify(writes, info.GetCheckpointTs()), "writes at or below the checkpoint in Kafka")
	require.NoError(r.t, kv.verifyOrder(writes), "per key, first occurrences in commit order")
	r.t.Logf("%d writes of the load, %d records read (%d duplicates)", len(writes), kv.records, kv.records-len(writes)-extra)
}

// firstWriteAfter is the first write the load committed after ts.
func firstWriteAfter(t *testing.T, load *sqlLoad, ts uint64) scaleWrite {
	t.Helper()
	for _, w := range load.snapshot() {
		if w.ts > ts {
			return w
		}
	}
	t.Fatalf("the load committed nothing after %d: it must keep writing through the outage", ts)
	return scaleWrite{}
}

// TestKafkaOutageThenDiff stops Kafka for 20 s under a write load and
// starts it again on the same port and data dir, as a broker restart does.
// While it is gone the checkpoint must not pass what Kafka acknowledged:
// never up to the first write committed after the stop, and not moving at
// all in the outage's second half, and the changefeed must not fail. Once
// Kafka is back the changefeed catches up by itself and is normal again,
// every write is in Kafka, and `cdc diff` finds the replayed topics equal
// to TiDB.
//
// Kafka and the registry are two devstacks and only Kafka's is bounced:
// the registry keeps its subjects in memory, so restarting it would hand
// out new ids for the same schemas and break records already written — a
// real registry keeps them in its _schemas topic, and R5 is a Kafka
// outage, not a registry one. devstack runs in the test process (as
// everywhere in e2e), so "stopped" is its Run ending: kfake closes every
// connection and its listeners, and writes its data dir; a client sees
// connections refused, as R5 has it.
func TestKafkaOutageThenDiff(t *testing.T) {
	began := time.Now()
	pg := startPlayground(t)
	k := startStoppableKafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const tables = 2
	r := newOutageRig(ctx, t, pg, k.brokers, k.registry, tables)

	load, stopLoad := r.startLoad(tables)

	require.NoError(t, k.stop())
	downAt, downTS := time.Now(), r.tso()
	samples := r.sampleOutage(downAt, outageFor)
	k.start(t) // same port, same data dir
	upAt, upTS := time.Now(), r.tso()
	require.NoError(t, load.failure(), "load")

	first := firstWriteAfter(t, load, downTS)
	pid := r.srv.proc.PID()
	t.Logf("Kafka down %s: %s; cdc server RSS %s, peak %s", upAt.Sub(downAt).Round(100*time.Millisecond),
		describeSamples(samples, downTS), mib(procMem(t, pid, "VmRSS")), mib(procMem(t, pid, "VmHWM")))
	for _, s := range samples {
		require.Less(t, s.cp, first.ts, "checkpoint %s into the outage is at or past a write committed after Kafka stopped (%+v)", s.at, first)
		require.NotEqual(t, pb.ChangefeedState_CHANGEFEED_STATE_FAILED, s.state, "%s into the outage", s.at)
	}
	var frozen []cpSample
	for _, s := range samples {
		if s.at >= outageFor/2 {
			frozen = append(frozen, s)
		}
	}
	require.NotEmpty(t, frozen)
	for _, s := range frozen {
		require.Equal(t, frozen[0].cp, s.cp, "checkpoint moved in the outage's second half (%s in)", s.at)
	}

	lagOK, passed := r.recover(upAt, upTS, 90*time.Second)
	harness.Figure(t, "after Kafka's restart: checkpoint lag < %s after %s, past the restart's TSO after %s (target: lag < 10 s within 60 s)",
		outageLagLimit, lagOK.Round(100*time.Millisecond), passed.Round(100*time.Millisecond))

	stopLoad()
	require.NoError(t, load.failure(), "load")
	writes := load.snapshot()
	r.awaitCheckpoint("checkpoint past the last write", writes[len(writes)-1].ts, 60*time.Second)
	harness.Eventually(t, 30*time.Second, "changefeed normal", func() error {
		if s := r.srv.state(t, outageCF); s != "normal" {
			return fmt.Errorf("state %s", s)
		}
		return nil
	})
	r.verifyWrites(k.brokers, k.registry, load, tables, 0)
	r.diffClean(k.brokers, k.registry)
	t.Logf("wall time %s", time.Since(began).Round(100*time.Millisecond))
}

// TestRegistryOutageThenDiff cuts the Schema Registry off for 20 s — a
// proxy in front of it resets every connection, open or new — while a load
// writes and a new table is created and written and another is altered, so
// the encoder needs schemas it cannot register. The checkpoint must stay
// below the first row of the new table; once the proxy forwards again the
// changefeed recovers by itself (no resume), passes the last write and is
// normal, and `cdc diff`, reading schemas from the registry itself, finds
// the replayed topics equal to TiDB.
func TestRegistryOutageThenDiff(t *testing.T) {
	began := time.Now()
	pg := startPlayground(t)
	dev := startDevstack(t, devstack.DefaultConfig())
	u, err := url.Parse(dev.Registry)
	require.NoError(t, err)
	proxy := startCutProxy(t, u.Host)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const tables = 2
	r := newOutageRig(ctx, t, pg, dev.Kafka, "http://"+proxy.addr(), tables)

	load, stopLoad := r.startLoad(tables)

	proxy.cut()
	cutAt := time.Now()
	// A new table and its rows, and a new column on a table the load
	// writes: three schemas (the new table's key and value, t01's value)
	// the registry has never seen.
	r.exec(fmt.Sprintf("CREATE TABLE %s.fresh (id BIGINT PRIMARY KEY, v VARCHAR(32))", scaleDB))
	r.exec(fmt.Sprintf("INSERT INTO %s.fresh VALUES (0, 'f0')", scaleDB))
	freshTS, err := lastCommitTS(ctx, r.conn, 0)
	require.NoError(t, err)
	for i := 1; i < 50; i++ {
		r.exec(fmt.Sprintf("INSERT INTO %s.fresh VALUES (?, ?)", scaleDB), i, fmt.Sprint("f", i))
	}
	r.exec(fmt.Sprintf("ALTER TABLE %s.%s ADD COLUMN c INT NOT NULL DEFAULT 5", scaleDB, scaleTable(1)))
	for i := range 20 { // ids above the load's
		r.exec(fmt.Sprintf("INSERT INTO %s.%s (id, v, c) VALUES (?, ?, ?)", scaleDB, scaleTable(1)), outageKeys+i, fmt.Sprint("c", i), i)
	}
	r.exec(fmt.Sprintf("UPDATE %s.fresh SET v = 'g' WHERE id %% 3 = 0", scaleDB))
	samples := r.sampleOutage(cutAt, outageFor)
	rc, err := sr.NewClient(sr.URLs(dev.Registry))
	require.NoError(t, err)
	subjects, err := rc.Subjects(ctx)
	require.NoError(t, err)
	require.NotContains(t, subjects, "tidb_"+scaleDB+"_fresh-value", "registered around the cut proxy")
	proxy.restore()
	upAt, upTS := time.Now(), r.tso()
	require.NoError(t, load.failure(), "load")

	t.Logf("registry cut off %s (%d connections reset): %s", upAt.Sub(cutAt).Round(100*time.Millisecond),
		proxy.resets(), describeSamples(samples, freshTS))
	for _, s := range samples {
		require.Less(t, s.cp, freshTS, "checkpoint %s into the outage is at or past the new table's first row, whose schema the registry never had", s.at)
		require.NotEqual(t, pb.ChangefeedState_CHANGEFEED_STATE_FAILED, s.state, "%s into the outage", s.at)
	}
	require.Positive(t, proxy.resets(), "nothing reached the registry during the outage")

	lagOK, passed := r.recover(upAt, upTS, 90*time.Second)
	harness.Figure(t, "after the registry came back: checkpoint lag < %s after %s, past the TSO at its return after %s",
		outageLagLimit, lagOK.Round(100*time.Millisecond), passed.Round(100*time.Millisecond))

	stopLoad()
	require.NoError(t, load.failure(), "load")
	r.awaitCheckpoint("checkpoint past the last write", r.tso(), 60*time.Second)
	// What the user sees: the changefeed is normal again, by itself.
	harness.Eventually(t, 30*time.Second, "changefeed normal", func() error {
		if s := r.srv.state(t, outageCF); s != "normal" {
			return fmt.Errorf("state %s", s)
		}
		return nil
	})
	for _, e := range r.srv.list(t) {
		require.Equal(t, "normal", e.Summary.State, "changefeed list: %+v", e)
	}
	r.verifyWrites(dev.Kafka, dev.Registry, load, tables, 20)
	r.diffClean(dev.Kafka, dev.Registry)
	t.Logf("wall time %s", time.Since(began).Round(100*time.Millisecond))
}

// TestLargeTransactionThenDiff commits one transaction of 100,000 small
// rows while a load writes another table, then requires the checkpoint to
// pass its commit and `cdc diff` to find the topics equal to TiDB. It logs
// the server's peak RSS (VmHWM) before and after the transaction and how
// long after the commit the checkpoint passed it.
func TestLargeTransactionThenDiff(t *testing.T) {
	began := time.Now()
	pg := startPlayground(t)
	dev := startDevstack(t, devstack.DefaultConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const tables = 1
	r := newOutageRig(ctx, t, pg, dev.Kafka, dev.Registry, tables)
	r.exec(fmt.Sprintf("CREATE TABLE %s.big (id BIGINT PRIMARY KEY, v VARCHAR(16))", scaleDB))

	load, stopLoad := r.startLoad(tables)

	pid := r.srv.proc.PID()
	hwmBefore, rssBefore := procMem(t, pid, "VmHWM"), procMem(t, pid, "VmRSS")
	const rows = 100_000
	// One statement, one transaction: a recursive CTE numbers the rows.
	r.exec("SET SESSION cte_max_recursion_depth = 1000000")
	start := time.Now()
	r.exec(fmt.Sprintf(`INSERT INTO %s.big (id, v)
		WITH RECURSIVE s (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < %d)
		SELECT n, CONCAT('b', n) FROM s`, scaleDB, rows))
	committedAt := time.Now()
	commitTS, err := lastCommitTS(ctx, r.conn, 0)
	require.NoError(t, err)
	var n int
	require.NoError(t, r.conn.QueryRowContext(ctx, fmt.Sprintf("SELECT COUNT(*) FROM %s.big", scaleDB)).Scan(&n))
	require.Equal(t, rows, n)
	passedAt := r.awaitCheckpoint("checkpoint past the large transaction", commitTS, 3*time.Minute)
	hwmAfter, rssAfter := procMem(t, pid, "VmHWM"), procMem(t, pid, "VmRSS")
	harness.Figure(t, "%d-row transaction: statement %s; checkpoint past its commit %s after it; cdc server peak RSS (VmHWM) %s before, %s after (RSS %s before, %s after)",
		rows, committedAt.Sub(start).Round(100*time.Millisecond), passedAt.Sub(committedAt).Round(100*time.Millisecond),
		mib(hwmBefore), mib(hwmAfter), mib(rssBefore), mib(rssAfter))

	stopLoad()
	require.NoError(t, load.failure(), "load")
	writes := load.snapshot()
	firstWriteAfter(t, load, commitTS) // the small writes went on past the commit
	r.awaitCheckpoint("checkpoint past the last write", writes[len(writes)-1].ts, 60*time.Second)
	r.verifyWrites(dev.Kafka, dev.Registry, load, tables, 0)
	r.diffClean(dev.Kafka, dev.Registry)
	t.Logf("wall time %s", time.Since(began).Round(100*time.Millisecond))
}

// cutProxy forwards TCP connections from a loopback port to a target until
// cut, and again after restore. While cut it keeps listening but resets
// every connection, those open at the cut and each new one, so a client
// sees "connection reset by peer" (and no other process can take the port
// meanwhile).
type cutProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu     sync.Mutex
	isCut  bool
	conns  map[net.Conn]net.Conn // client side → its upstream
	nReset int
}

// startCutProxy listens on a free loopback port and forwards to target; the
// test's cleanup stops it.
func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &cutProxy{ln: ln, target: target, conns: map[net.Conn]net.Conn{}}
	p.wg.Go(p.serve)
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		for c, up := range p.conns {
			_ = c.Close()
			_ = up.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed by the cleanup
		}
		p.mu.Lock()
		cut := p.isCut
		if cut {
			p.nReset++
		}
		p.mu.Unlock()
		if cut {
			reset(c)
			continue
		}
		p.wg.Go(func() { p.forward(c) })
	}
}

// forward pipes c to a new connection to the target, both ways, until
// either side ends or the proxy is cut.
func (p *cutProxy) forward(c net.Conn) {
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		reset(c)
		return
	}
	if !p.track(c, up) {
		reset(c)
		_ = up.Close()
		return
	}
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			_ = c.Close()
			_ = up.Close()
		})
	}
	var both sync.WaitGroup
	both.Go(func() {
		_, _ = io.Copy(up, c)
		closeBoth()
	})
	both.Go(func() {
		_, _ = io.Copy(c, up)
		closeBoth()
	})
	both.Wait()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// track registers a forwarded pair, unless the proxy was cut meanwhile.
func (p *cutProxy) track(c, up net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.isCut {
		p.nReset++
		return false
	}
	p.conns[c] = up
	return true
}

// cut resets every open connection and every new one until restore.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.isCut = true
	for c, up := range p.conns {
		reset(c)
		_ = up.Close()
		p.nReset++
	}
}

func (p *cutProxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.isCut = false
}

// resets is how many connections the proxy has reset.
func (p *cutProxy) resets() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nReset
}

// reset closes c with an RST rather than a FIN.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}
