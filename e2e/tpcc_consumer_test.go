package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/tidestream/tidestream/e2e/harness"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
	"github.com/tidestream/tidestream/services/dbtest"
	"github.com/tidestream/tidestream/services/devstack"
)

// TestTPCCIntoMariaDBAndPostgres is the seed guide's flow end to end, down
// to the databases: `cdc server` on the playground and devstack, the
// guide's changefeed, then go-tpc's TPC-C at one warehouse — prepare, then
// a short run, the checkpoint lag sampled meanwhile (logged, not
// asserted). A `cdc consumer` fills MariaDB from the start, in its
// consumer group, until it is stopped halfway through the run; a final
// --catch-up resumes from the group's offsets, and another fills
// PostgreSQL from scratch. `cdc diff` at
// the checkpoint must then find every row of the eight keyed TPC-C tables
// in MariaDB, in PostgreSQL and in the topics replayed (history, without
// a key, is not replicated and is listed as skipped).
func TestTPCCIntoMariaDBAndPostgres(t *testing.T) {
	goTPC := os.Getenv("GO_TPC")
	if goTPC == "" {
		t.Skip("GO_TPC is not set: `make e2e` installs go-tpc and sets it")
	}
	began := time.Now()
	pg := startPlayground(t)
	dev := startDevstack(t, devstack.DefaultConfig())
	_, srvAddr := startCDCServer(t, "", pg.pdAddr, t.TempDir(), nil)
	maria := dbtest.StartMariaDB(t)
	postgres := dbtest.StartPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	conn, err := pg.db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	tso := func() uint64 { return currentTS(ctx, t, conn) }
	execOn(ctx, t, conn)("CREATE DATABASE tpcc")
	createGuideChangefeed(t, srvAddr, dev.Kafka, dev.Registry, "tpcc")
	feed := watchChangefeed(t, srvAddr, "tpcc")
	t.Logf("playground, devstack, cdc server, MariaDB and PostgreSQL up, changefeed created in %s", time.Since(began).Round(100*time.Millisecond))

	kafka := "--kafka=" + strings.Join(dev.Kafka, ",")
	registry := "--schema-registry=" + dev.Registry
	// MariaDB is filled while the load runs, offsets committed to the
	// consumer's default group for that database.
	live := harness.Start(t, "consumer-mariadb", harness.CDC(t), "consumer", kafka, registry, "--target="+maria.URL)

	phase := time.Now()
	r := harness.Run(t, 6*time.Minute, "", goTPC, tpccArgs(pg, "prepare")...)
	require.Equal(t, 0, r.ExitCode, "go-tpc tpcc prepare:\n%s\n%s", tail(r.Stdout, 3000), tail(r.Stderr, 3000))
	t.Logf("go-tpc tpcc --warehouses 1 prepare took %s", time.Since(phase).Round(100*time.Millisecond))
	phase = time.Now()
	feed.await(ctx, t, tso(), 6*time.Minute, "checkpoint past the end of prepare")
	t.Logf("checkpoint passed the end of prepare %s after it", time.Since(phase).Round(100*time.Millisecond))

	// --ignore-error: a deadlock or lock wait timeout on one warehouse
	// ends go-tpc's worker otherwise; a failed transaction commits nothing.
	const runTime = 20 * time.Second
	phase = time.Now()
	tpc := harness.Start(t, "go-tpc-run", goTPC, tpccArgs(pg, "run", "--time", runTime.String(), "--ignore-error")...)
	// The live consumer is stopped halfway through the run, SIGTERM by
	// PID, and must exit 0; MariaDB's catch-up after the run then resumes
	// from the offsets its group committed, with the second half to apply.
	stopLive := sync.OnceFunc(func() {
		require.False(t, live.Exited(), "the MariaDB consumer stopped by itself:\n%s", tail(live.Log(), 3000))
		require.NoError(t, live.Stop(time.Minute), "the MariaDB consumer on SIGTERM:\n%s", tail(live.Log(), 3000))
		t.Logf("stopped the live MariaDB consumer %s into the run", time.Since(phase).Round(100*time.Millisecond))
	})
	var lags []time.Duration
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for !tpc.Exited() {
		select {
		case <-ctx.Done():
			t.Fatalf("go-tpc run did not end: %v\n%s", ctx.Err(), tail(tpc.Log(), 3000))
		case <-tick.C:
		}
		// Checkpoint first, TSO after: the gap between the reads can only
		// add to the lag measured.
		cp, err := feed.checkpoint(ctx)
		if err != nil {
			t.Logf("checkpoint sample: %v", err)
			continue
		}
		lags = append(lags, tsLag(tso(), cp))
		if time.Since(phase) >= runTime/2 {
			stopLive()
		}
	}
	require.NoError(t, tpc.Stop(time.Second), "go-tpc tpcc run:\n%s", tail(tpc.Log(), 3000))
	stopLive() // if the run ended early
	if m := regexp.MustCompile(`tpmC: [0-9.]+.*`).FindString(tpc.Log()); m != "" {
		t.Logf("go-tpc run (%s): %s", time.Since(phase).Round(100*time.Millisecond), m)
	}
	require.NotEmpty(t, lags)
	slices.Sort(lags)
	// A figure, not an assertion: a timed bound would flake on a busy machine.
	harness.Figure(t, "checkpoint lag behind TSO during the TPC-C run over %d samples: p50 %s, p99 %s, max %s (target p99 < 3s)",
		len(lags), percentile(lags, 0.50), percentile(lags, 0.99), lags[len(lags)-1])

	end := tso()
	phase = time.Now()
	feed.await(ctx, t, end, 3*time.Minute, "checkpoint past the end of the run")
	t.Logf("checkpoint passed the end of the run %s after it", time.Since(phase).Round(100*time.Millisecond))
	cp, err := feed.checkpoint(ctx)
	require.NoError(t, err)
	records := topicRecords(ctx, t, dev.Kafka, "tidb_tpcc_")
	var rows int64
	for _, tbl := range tpccTables {
		if tbl == "history" {
			continue
		}
		var n int64
		require.NoError(t, conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM tpcc."+tbl).Scan(&n))
		rows += n
	}
	require.Greater(t, rows, int64(500000), "TPC-C at one warehouse has over half a million rows in its keyed tables")
	verdict := fmt.Sprintf("all %d rows in 8 tables match TiDB", rows)
	upstream := "--upstream=mysql://root@" + pg.sqlAddr + "/"
	catchUp := func(target *dbtest.Server) []string {
		return []string{"consumer", kafka, registry, "--target=" + target.URL, "--catch-up"}
	}
	diffOf := func(down ...string) []string {
		return append([]string{"diff", upstream, "--schemas=tpcc"}, down...)
	}

	// PostgreSQL, a new group, from the start of every topic and then its
	// diff at the checkpoint the server reports, beside MariaDB's steps:
	// two cores take the two at once in about the time of the longer.
	pgSteps := make(chan []cdcStep, 1)
	go func() {
		var s []cdcStep
		defer func() { pgSteps <- s }() // also after a t.Fatal in harness.Run
		s = runCDCSteps(t, catchUp(postgres), diffOf("--target="+postgres.URL, "--changefeed-id=tpcc", "--server=http://"+srvAddr))
	}()
	snap := fmt.Sprintf("--snapshot-ts=%d", cp)
	steps := runCDCSteps(t, catchUp(maria), diffOf("--target="+maria.URL, snap), diffOf(kafka, registry, snap))
	steps = append(steps, <-pgSteps...)

	applied := map[string]int64{}
	for _, s := range steps {
		require.Equal(t, 0, s.ExitCode, "cdc %s:\n%s\n%s", strings.Join(s.args, " "), tail(s.Stdout, 5000), tail(s.Stderr, 3000))
		out := strings.TrimSpace(s.Stdout)
		last := out[strings.LastIndex(out, "\n")+1:]
		switch s.args[0] {
		case "consumer":
			t.Logf("cdc consumer %s --catch-up (%s): %s", s.args[3], s.took, last)
			m := regexp.MustCompile(`^caught up: (\d+) records`).FindStringSubmatch(last)
			require.NotNil(t, m, s.Stdout)
			applied[s.args[3]], _ = strconv.ParseInt(m[1], 10, 64)
		case "diff":
			require.Equal(t, verdict, last, s.Stdout)
			require.Regexp(t, `(?m)^tpcc\.history\s+skipped: `, s.Stdout)
			t.Logf("cdc diff %s (%s): %s", s.args[3], s.took, last)
		}
	}
	resumed := applied["--target="+maria.URL]
	require.Positive(t, resumed, "the run's second half, written after the live consumer stopped, is left for MariaDB's catch-up")
	require.Less(t, resumed, records, "the MariaDB catch-up resumes from the offsets the live consumer committed")
	require.GreaterOrEqual(t, applied["--target="+postgres.URL], records, "the PostgreSQL catch-up, a new group, reads every record")
	t.Logf("%d records in the TPC-C topics; wall time %s", records, time.Since(began).Round(100*time.Millisecond))
}

// cdcStep is one `cdc` command run to its end.
type cdcStep struct {
	harness.Result
	args []string
	took time.Duration
}

// runCDCSteps runs `cdc` commands one after the other, each given as its
// arguments, and returns their results unchecked: it may run in a
// goroutine of its own, the test checking them after.
func runCDCSteps(t *testing.T, steps ...[]string) []cdcStep {
	out := make([]cdcStep, len(steps))
	for i, args := range steps {
		start := time.Now()
		out[i] = cdcStep{Result: harness.Run(t, 5*time.Minute, "", harness.CDC(t), args...), args: args}
		out[i].took = time.Since(start).Round(100 * time.Millisecond)
	}
	return out
}

// TestKill9ServerDuringLoadThenDiff kills `cdc server` with SIGKILL while
// a write load (upserts and deletes over four tables) runs, lets the load
// go on while it is down, restarts it on the same data dir (embedded etcd
// included) and lets the load go on again. Once the checkpoint passes the
// last write, every write is in Kafka (duplicates allowed, logged), and
// `cdc diff` finds TiDB's rows both in the topics replayed and in
// PostgreSQL filled by `cdc consumer --catch-up`.
func TestKill9ServerDuringLoadThenDiff(t *testing.T) {
	began := time.Now()
	pg := startPlayground(t)
	dev := startDevstack(t, devstack.DefaultConfig())
	dataDir := t.TempDir()
	srv, srvAddr := startCDCServer(t, "", pg.pdAddr, dataDir, nil)
	postgres := dbtest.StartPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	conn, err := pg.db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	exec := execOn(ctx, t, conn)
	const tables = 4
	exec("CREATE DATABASE " + scaleDB)
	for i := range tables {
		exec(fmt.Sprintf("CREATE TABLE %s.%s (id BIGINT PRIMARY KEY, v VARCHAR(32), n INT NOT NULL DEFAULT 0)", scaleDB, scaleTable(i)))
	}
	createGuideChangefeed(t, srvAddr, dev.Kafka, dev.Registry, "kill9")
	feed := watchChangefeed(t, srvAddr, "kill9")

	// The load has its own connection: conn reads TSOs meanwhile.
	loadConn, err := pg.db.Conn(ctx)
	require.NoError(t, err)
	defer loadConn.Close()
	load := &sqlLoad{tables: tables, keys: 200}
	stopLoad := load.start(ctx, loadConn)
	defer stopLoad()
	// writesPast waits until the load has committed n more writes.
	writesPast := func(n int, what string) {
		from := len(load.snapshot())
		harness.Eventually(t, 2*time.Minute, what, func() error {
			if err := load.failure(); err != nil {
				t.Fatalf("load: %v", err)
			}
			if got := len(load.snapshot()) - from; got < n {
				return fmt.Errorf("%d of %d writes", got, n)
			}
			return nil
		})
	}

	writesPast(100, "writes before the kill")
	feed.await(ctx, t, currentTS(ctx, t, conn), 2*time.Minute, "checkpoint past the first writes")
	// The kill lands among writes the checkpoint has not passed yet: the
	// load keeps writing throughout.
	writesPast(50, "writes in flight at the kill")
	srv.Kill()
	killed := time.Now()
	t.Logf("kill -9 cdc server (pid %d) after %d writes", srv.PID(), len(load.snapshot()))
	writesPast(100, "writes while the server is down")

	_, srvAddr = startCDCServer(t, "", pg.pdAddr, dataDir, nil)
	feed = watchChangefeed(t, srvAddr, "kill9")
	feed.await(ctx, t, currentTS(ctx, t, conn), 3*time.Minute, "checkpoint past the restart")
	harness.Figure(t, "after kill -9 of cdc server and its restart: checkpoint past the restart's TSO %s after the kill", time.Since(killed).Round(100*time.Millisecond))
	writesPast(100, "writes after the restart")
	stopLoad()
	require.NoError(t, load.failure(), "load")
	writes := load.snapshot()
	end := max(writes[len(writes)-1].ts, currentTS(ctx, t, conn))
	feed.await(ctx, t, end, 3*time.Minute, "checkpoint past the last write")
	cp, err := feed.checkpoint(ctx)
	require.NoError(t, err)

	// No write lost: each upsert's version and each delete's tombstone
	// is in its topic; what is read beyond the writes is duplicates.
	rc, err := sr.NewClient(sr.URLs(dev.Registry))
	require.NoError(t, err)
	kv := newKafkaView(t, dev.Kafka, rc)
	kv.tables = tables
	defer kv.close()
	require.NoError(t, kv.catchUp(ctx, 2*time.Minute))
	require.NoError(t, kv.verify(writes, cp))
	require.NoError(t, kv.verifyOrder(writes), "per key, first occurrences in commit order")
	require.GreaterOrEqual(t, kv.records, len(writes))

	var rows int
	for i := range tables {
		var n int
		require.NoError(t, conn.QueryRowContext(ctx, fmt.Sprintf("SELECT COUNT(*) FROM %s.%s", scaleDB, scaleTable(i))).Scan(&n))
		rows += n
	}
	verdict := fmt.Sprintf("all %d rows in %d tables match TiDB", rows, tables)
	upstream := "--upstream=mysql://root@" + pg.sqlAddr + "/"
	snap := fmt.Sprintf("--snapshot-ts=%d", cp)
	kafka := "--kafka=" + strings.Join(dev.Kafka, ",")
	registry := "--schema-registry=" + dev.Registry
	cleanDiff(t, []string{upstream, snap, "--schemas=" + scaleDB, kafka, registry}, verdict)
	r := harness.Run(t, 3*time.Minute, "", harness.CDC(t), "consumer", kafka, registry, "--target="+postgres.URL, "--catch-up")
	require.Equal(t, 0, r.ExitCode, "consumer --catch-up into %s: %s", postgres.URL, r.Stderr)
	cleanDiff(t, []string{upstream, snap, "--schemas=" + scaleDB, "--target=" + postgres.URL}, verdict)
	t.Logf("%d writes, %d records in Kafka (%d duplicates), %d rows match in the replay and in PostgreSQL; wall time %s",
		len(writes), kv.records, kv.records-len(writes), rows, time.Since(began).Round(100*time.Millisecond))
}

// createGuideChangefeed creates changefeed id on the server at addr with
// the seed guide's shape: Avro with the registry, a topic per table.
func createGuideChangefeed(t *testing.T, addr string, brokers []string, registry, id string) {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "changefeed.conf")
	require.NoError(t, os.WriteFile(conf, []byte(changefeedConf), 0o600))
	r := harness.Run(t, 90*time.Second, "", harness.CDC(t), "cli", "changefeed", "create",
		"--server=http://"+addr, "--sink-uri=kafka://"+strings.Join(brokers, ",")+"/meta?protocol=avro&auto-create-topic=true&partition-num=3&replication-factor=1",
		"--schema-registry="+registry, "--changefeed-id="+id, "--config", conf)
	require.Equal(t, 0, r.ExitCode, "stderr: %s", r.Stderr)
}

// changefeedWatch reads a changefeed's checkpoint from a server's
// ChangefeedService, as `cdc diff --changefeed-id` does.
type changefeedWatch struct {
	client pb.ChangefeedServiceClient
	id     string
}

func watchChangefeed(t *testing.T, addr, id string) *changefeedWatch {
	return &changefeedWatch{client: pb.NewChangefeedServiceClient(harness.Dial(t, addr)), id: id}
}

func (w *changefeedWatch) get(ctx context.Context) (*pb.ChangefeedInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return w.client.Get(ctx, &pb.GetChangefeedRequest{Namespace: "default", Id: w.id})
}

func (w *changefeedWatch) checkpoint(ctx context.Context) (uint64, error) {
	info, err := w.get(ctx)
	return info.GetCheckpointTs(), err
}

// await polls until the checkpoint reaches ts.
func (w *changefeedWatch) await(ctx context.Context, t *testing.T, ts uint64, timeout time.Duration, what string) {
	t.Helper()
	harness.Eventually(t, timeout, what, func() error {
		info, err := w.get(ctx)
		if err != nil {
			return err
		}
		if cp := info.GetCheckpointTs(); cp < ts {
			return fmt.Errorf("%s, checkpoint %d < %d (%s behind), error %q", info.GetState(), cp, ts,
				tsLag(ts, cp), info.GetError().GetMessage())
		}
		return nil
	})
}

// topicRecords is the number of records in the topics named with prefix:
// the sum of their end offsets.
func topicRecords(ctx context.Context, t *testing.T, brokers []string, prefix string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	listed, err := adm.ListTopics(ctx)
	require.NoError(t, err)
	var topics []string
	for _, name := range listed.Names() {
		if strings.HasPrefix(name, prefix) {
			topics = append(topics, name)
		}
	}
	require.NotEmpty(t, topics)
	ends, err := adm.ListEndOffsets(ctx, topics...)
	require.NoError(t, err)
	require.NoError(t, ends.Error())
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

// cleanDiff runs `cdc diff` with args, requires exit 0 and verdict as its
// last line, and returns its output.
func cleanDiff(t *testing.T, args []string, verdict string) string {
	t.Helper()
	r := harness.Run(t, 5*time.Minute, "", harness.CDC(t), append([]string{"diff"}, args...)...)
	require.Equal(t, 0, r.ExitCode, "cdc diff %s:\n%s\n%s", strings.Join(args, " "), tail(r.Stdout, 5000), tail(r.Stderr, 3000))
	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	require.Equal(t, verdict, lines[len(lines)-1], r.Stdout)
	return r.Stdout
}
