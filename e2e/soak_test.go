package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tikv/client-go/v2/oracle"

	"github.com/tidestream/tidestream/e2e/harness"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
	"github.com/tidestream/tidestream/services/devstack"
)

// The long reliability soaks of specs/performance-and-reliability.md §5,
// R5 (Kafka outage, repeated) and R16 (large transaction). Not part of
// `make test`: `make soak` runs them, one after the other.
//
//	TIDESTREAM_SOAK            set (to anything): run the soaks (unset: skip)
//	TIDESTREAM_SOAK_QUOTA      the cdc server's memory budget in bytes (default 536870912, 512 MiB; see soakServerEnv)
//	TIDESTREAM_SOAK_RSS_LIMIT  the peak RSS (VmHWM) the server may reach, bytes (default the quota plus a quarter)
//	TIDESTREAM_SOAK_ROWS       R16: rows in the one transaction (default 1,000,000)
//	TIDESTREAM_SOAK_ROW_BYTES  R16: bytes of each row's v (default 1000: about 1 GB in all)
//	TIDESTREAM_SOAK_TXN_TIMEOUT  R16: bound on the checkpoint passing the transaction's commit (default 15m)
//	TIDESTREAM_SOAK_OUTAGES    R5: how many Kafka outages (default 5)
//	TIDESTREAM_SOAK_PERIOD     R5: one outage at the start of each period (default 2m)
//	TIDESTREAM_SOAK_OUTAGE     R5: how long Kafka refuses connections (default 20s)
//	TIDESTREAM_SOAK_LAG        R5: the checkpoint must pass the TSO taken at Kafka's return within this, and its
//	                           lag stay under it until the next outage (default 60s)
//
// A quick R5: TIDESTREAM_SOAK_OUTAGES=2 TIDESTREAM_SOAK_PERIOD=1m.
const soakEnv = "TIDESTREAM_SOAK"

// soakGate skips the test unless `make soak` (or the variables it sets)
// asked for it.
func soakGate(t *testing.T) {
	t.Helper()
	if os.Getenv(soakEnv) == "" {
		t.Skip(soakEnv + " is not set: `make soak` runs this")
	}
	if os.Getenv("PLAYGROUND_BIN") == "" {
		t.Skip("PLAYGROUND_BIN is not set: `make soak` builds deploy/playground and sets it")
	}
}

func envInt(t *testing.T, name string, def int64) int64 {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(strings.ReplaceAll(v, "_", ""), 10, 64)
	require.NoError(t, err, name)
	require.Positive(t, n, name)
	return n
}

// soakServerEnv puts the memory budget a user would give `cdc server` for
// "a 512 MB memory quota" into the environment the server inherits, and
// returns the budget and a function that takes it out again once the
// server has started (so `cdc diff` and `cdc cli` run without it).
//
// What a user has for that, and what this chooses:
//   - the changefeed file's `memory-quota` (TiCDC's knob, default 1 GiB) is
//     accepted and stored, but no stage reads it, so it bounds nothing and
//     is left at its default here;
//   - --puller-memory-quota (default 256 MiB): change events the puller
//     holds for its subscribers. Chosen: a quarter of the budget, 128 MiB;
//   - --puller-prewrite-memory (default 64 MiB): uncommitted transactions'
//     writes the puller holds until their commit; beyond it they wait on
//     disk. Chosen: an eighth of the budget, 64 MiB;
//   - --sorter-memory-quota (default 512 MiB): pebble's memtables, block
//     cache and headroom; beyond it events spill to --data-dir. Chosen:
//     half of the budget, 256 MiB;
//   - GOMEMLIMIT: the Go runtime's soft limit for the whole process, as
//     for a Go service in a container of that size. Chosen: the budget.
//
// The flags are set through their TIDESTREAM_<FLAG> variables, which `cdc
// server` reads for any flag not on its command line.
func soakServerEnv(t *testing.T) (quota int64, unset func()) {
	t.Helper()
	quota = envInt(t, "TIDESTREAM_SOAK_QUOTA", 512<<20)
	vars := map[string]string{
		"TIDESTREAM_PULLER_MEMORY_QUOTA":    strconv.FormatInt(quota/4, 10),
		"TIDESTREAM_PULLER_PREWRITE_MEMORY": strconv.FormatInt(quota/8, 10),
		"TIDESTREAM_SORTER_MEMORY_QUOTA":    strconv.FormatInt(quota/2, 10),
		"GOMEMLIMIT":                        strconv.FormatInt(quota, 10),
	}
	for k, v := range vars {
		t.Setenv(k, v)
	}
	t.Logf("cdc server memory budget %s: --puller-memory-quota %s, --puller-prewrite-memory %s, --sorter-memory-quota %s, GOMEMLIMIT %s (the changefeed's memory-quota is not enforced by any stage)",
		mib(quota), mib(quota/4), mib(quota/8), mib(quota/2), mib(quota))
	return quota, func() {
		for k := range vars {
			require.NoError(t, os.Unsetenv(k))
		}
	}
}

// newSoakRig is newOutageRig for a `cdc server` under the soak's memory
// budget (soakServerEnv), with its RSS watched from the start.
func newSoakRig(ctx context.Context, t *testing.T, pg *playground, brokers []string, registry string, tables int) (*outageRig, *rssWatch, int64) {
	t.Helper()
	quota, unset := soakServerEnv(t)
	r := newOutageRig(ctx, t, pg, brokers, registry, tables)
	unset()
	return r, watchRSS(t, r.srv.proc), quota
}

// rssLimit is the peak RSS the soaks allow the server: the quota plus a
// quarter for what no quota covers (Go runtime, gRPC buffers, embedded etcd,
// the encoder's and producer's batches in flight).
func rssLimit(t *testing.T, quota int64) int64 {
	return envInt(t, "TIDESTREAM_SOAK_RSS_LIMIT", quota+quota/4)
}

// rssWatch polls a process's VmRSS every 200 ms and keeps its peak (VmHWM
// is read as well at the end: it also catches a peak between polls).
type rssWatch struct {
	t    *testing.T
	proc *harness.Proc

	mu     sync.Mutex
	peak   int64
	peakAt time.Time
	stop   func()
}

func watchRSS(t *testing.T, proc *harness.Proc) *rssWatch {
	w := &rssWatch{t: t, proc: proc}
	halt, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			if !proc.Exited() {
				if rss := procMem(t, proc.PID(), "VmRSS"); rss > 0 {
					w.mu.Lock()
					if rss > w.peak {
						w.peak, w.peakAt = rss, time.Now()
					}
					w.mu.Unlock()
				}
			}
			select {
			case <-halt:
				return
			case <-tick.C:
			}
		}
	}()
	w.stop = sync.OnceFunc(func() {
		close(halt)
		<-done
	})
	t.Cleanup(w.stop)
	return w
}

// figures is the peak RSS polled, VmHWM and the current VmRSS.
func (w *rssWatch) figures() (peak int64, peakAt time.Time, hwm, rss int64) {
	pid := w.proc.PID()
	hwm, rss = procMem(w.t, pid, "VmHWM"), procMem(w.t, pid, "VmRSS")
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peak, w.peakAt, hwm, rss
}

// alive fails the test at once if the server has ended: an OOM kill or a
// crash must not pass for a slow checkpoint.
func (r *outageRig) alive() {
	r.t.Helper()
	if r.srv.proc.Exited() {
		r.t.Fatalf("cdc server (pid %d) has exited: %v\nlog tail:\n%s", r.srv.proc.PID(), r.srv.proc.Wait(time.Second), tail(r.srv.proc.Log(), 4000))
	}
}

// pipelineFailures counts the "pipeline failed" warnings in the server's
// log and returns the last one's error, ", last: …", or "": for a pipeline
// that restarts over and over, the changefeed's warning says why, and the
// log how often and for which table.
func (r *outageRig) pipelineFailures() (int, string) {
	var n int
	var last string
	for line := range strings.Lines(r.srv.proc.Log()) {
		if !strings.Contains(line, `"msg":"pipeline failed"`) {
			continue
		}
		n++
		var rec struct {
			Table string `json:"table"`
			Err   string `json:"err"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil {
			last = fmt.Sprintf(", last: %s: %s", rec.Table, rec.Err)
		}
	}
	return n, last
}

// TestSoakLargeTransaction is R16: one transaction of TIDESTREAM_SOAK_ROWS
// rows (1,000,000 of about 1 KB by default, ~1 GB) while a small load
// writes another table, through one `cdc server` given a 512 MiB memory
// budget (soakServerEnv). The server must stay up, its checkpoint pass the
// transaction's commit, every write of the load be in Kafka and `cdc diff`
// find all rows equal to TiDB. The server's peak RSS is polled throughout
// and must stay under TIDESTREAM_SOAK_RSS_LIMIT; it is checked last, after
// every figure is printed.
func TestSoakLargeTransaction(t *testing.T) {
	soakGate(t)
	began := time.Now()
	rows := envInt(t, "TIDESTREAM_SOAK_ROWS", 1_000_000)
	rowBytes := envInt(t, "TIDESTREAM_SOAK_ROW_BYTES", 1000)
	txnTimeout := envDuration(t, "TIDESTREAM_SOAK_TXN_TIMEOUT", 15*time.Minute)
	pg := startPlayground(t)
	dev := startDevstack(t, devstack.DefaultConfig())
	ctx, cancel := context.WithTimeout(context.Background(), txnTimeout+30*time.Minute)
	defer cancel()
	const tables = 1
	r, mem, quota := newSoakRig(ctx, t, pg, dev.Kafka, dev.Registry, tables)
	// v is the row's id, then MD5 hex digests up to rowBytes.
	reps := max(rowBytes/32, 1)
	r.exec(fmt.Sprintf("CREATE TABLE %s.big (id BIGINT PRIMARY KEY, v TEXT)", scaleDB))

	load, stopLoad := r.startLoad(tables)
	_, _, hwmBefore, rssBefore := mem.figures()

	// One optimistic transaction of several INSERT … SELECT statements,
	// each numbering chunk rows with a recursive CTE: one statement of a
	// million rows would hold TiDB's CTE and its insert buffers at once.
	const chunk = 50_000
	txn, err := pg.db.Conn(ctx)
	require.NoError(t, err)
	defer txn.Close()
	texec := execOn(ctx, t, txn)
	texec("SET SESSION cte_max_recursion_depth = 1000000")
	texec("SET SESSION tidb_mem_quota_query = 8589934592")
	start := time.Now()
	texec("BEGIN OPTIMISTIC")
	for base := int64(0); base < rows; base += chunk {
		n := min(chunk, rows-base)
		texec(fmt.Sprintf(`INSERT INTO %s.big (id, v)
			WITH RECURSIVE s (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < %d)
			SELECT %d + n, CONCAT(%d + n, ':', REPEAT(MD5(%d + n), %d)) FROM s`, scaleDB, n, base, base, base, reps))
		r.alive()
	}
	inserted := time.Now()
	texec("COMMIT")
	committedAt := time.Now()
	commitTS, err := lastCommitTS(ctx, txn, 0)
	require.NoError(t, err)
	var count, bytes int64
	require.NoError(t, txn.QueryRowContext(ctx, fmt.Sprintf("SELECT COUNT(*), SUM(LENGTH(v)) FROM %s.big", scaleDB)).Scan(&count, &bytes))
	require.Equal(t, rows, count)
	t.Logf("R16 transaction: %d rows, %s of v, statements %s, COMMIT %s, commit ts %d",
		count, mib(bytes), inserted.Sub(start).Round(100*time.Millisecond), committedAt.Sub(inserted).Round(100*time.Millisecond), commitTS)

	// The checkpoint, polled until it passes the commit; the server must
	// stay up meanwhile. Progress is printed every 30 s.
	lastLog, failures := time.Now(), ""
	harness.Eventually(t, txnTimeout, "checkpoint past the large transaction", func() error {
		r.alive()
		info, err := r.info()
		if err != nil {
			return err
		}
		cp := info.GetCheckpointTs()
		if info.GetState() == pb.ChangefeedState_CHANGEFEED_STATE_FAILED {
			t.Fatalf("changefeed failed: %q", info.GetError().GetMessage())
		}
		if cp >= commitTS {
			return nil
		}
		if time.Since(lastLog) >= 30*time.Second {
			lastLog = time.Now()
			peak, _, _, rss := mem.figures()
			n, last := r.pipelineFailures()
			failures = fmt.Sprintf("%d pipeline failures in the server's log%s", n, last)
			t.Logf("  %s after COMMIT: checkpoint %s behind the commit, state %s; cdc server RSS %s, peak so far %s; %s",
				time.Since(committedAt).Round(time.Second), tsLag(commitTS, cp), info.GetState(), mib(rss), mib(peak), failures)
		}
		return fmt.Errorf("checkpoint %d < commit %d (%s behind), state %s, error %q; %s",
			cp, commitTS, tsLag(commitTS, cp), info.GetState(), info.GetError().GetMessage(), failures)
	})
	passedAt := time.Now()
	peak, peakAt, hwm, rss := mem.figures()
	t.Logf("R16 checkpoint past the commit %s after COMMIT returned (%s after the first INSERT)",
		passedAt.Sub(committedAt).Round(100*time.Millisecond), passedAt.Sub(start).Round(100*time.Millisecond))
	t.Logf("R16 cdc server memory: before the txn RSS %s (VmHWM %s); peak RSS polled %s at %s from the first INSERT; VmHWM %s; RSS now %s; limit %s (budget %s)",
		mib(rssBefore), mib(hwmBefore), mib(peak), peakAt.Sub(start).Round(time.Second), mib(hwm), mib(rss), mib(rssLimit(t, quota)), mib(quota))

	stopLoad()
	require.NoError(t, load.failure(), "load")
	writes := load.snapshot()
	firstWriteAfter(t, load, commitTS) // the small writes went on past the commit
	r.awaitCheckpoint("checkpoint past the last write", writes[len(writes)-1].ts, 2*time.Minute)
	r.alive()
	r.verifyWrites(dev.Kafka, dev.Registry, load, tables, 0)
	r.diffClean(dev.Kafka, dev.Registry)
	r.alive()
	mem.stop()
	peak, _, hwm, _ = mem.figures()
	t.Logf("R16 wall time %s; cdc server peak RSS %s polled, VmHWM %s", time.Since(began).Round(time.Second), mib(peak), mib(hwm))
	require.LessOrEqual(t, max(peak, hwm), rssLimit(t, quota), "cdc server peak RSS over the limit (budget %s)", mib(quota))
}

// outageFigures is what one R5 outage measured.
type outageFigures struct {
	down        time.Duration // how long Kafka was gone
	samples     string        // describeSamples
	lagAtUp     time.Duration // checkpoint lag when Kafka came back
	lagOK       time.Duration // after the return, until lag < outageLagLimit
	passed      time.Duration // after the return, until the checkpoint passed the TSO taken then
	maxLagAfter time.Duration // the largest lag from then until the next outage
	rss         int64         // server RSS right after the return
}

// TestSoakKafkaOutages is R5: Kafka refuses connections for
// TIDESTREAM_SOAK_OUTAGE (20 s) at the start of each TIDESTREAM_SOAK_PERIOD
// (2 min), TIDESTREAM_SOAK_OUTAGES (5) times, while a load writes two
// tables, through one `cdc server` with the 512 MiB budget of soakServerEnv.
// Kafka is stopped and started again on its port and data dir, as in
// TestKafkaOutageThenDiff, with the registry in a devstack of its own.
//
// During each outage the checkpoint must stay below the first write
// committed after Kafka stopped and not move in the outage's second half,
// and the changefeed must never be failed. After each return the
// checkpoint must pass the TSO taken at the return within TIDESTREAM_SOAK_LAG
// (60 s) and its lag stay under that until the next outage, the state
// never failed (polled every second). At the end every write is in Kafka,
// `cdc diff` is clean and the server's peak RSS is under
// TIDESTREAM_SOAK_RSS_LIMIT.
func TestSoakKafkaOutages(t *testing.T) {
	soakGate(t)
	began := time.Now()
	outages := int(envInt(t, "TIDESTREAM_SOAK_OUTAGES", 5))
	period := envDuration(t, "TIDESTREAM_SOAK_PERIOD", 2*time.Minute)
	outage := envDuration(t, "TIDESTREAM_SOAK_OUTAGE", outageFor)
	lagLimit := envDuration(t, "TIDESTREAM_SOAK_LAG", 60*time.Second)
	require.Greater(t, period, outage+lagLimit/2, "TIDESTREAM_SOAK_PERIOD leaves too little time between outages")

	pg := startPlayground(t)
	kafka := startStoppableKafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(outages)*period+15*time.Minute)
	defer cancel()
	const tables = 2
	r, mem, quota := newSoakRig(ctx, t, pg, kafka.brokers, kafka.registry, tables)

	load, stopLoad := r.startLoad(tables)

	soakStart := time.Now()
	var figs []outageFigures
	for k := range outages {
		if k > 0 {
			figs[k-1].maxLagAfter = r.steady(soakStart.Add(time.Duration(k)*period), lagLimit)
		}
		require.NoError(t, kafka.stop())
		downAt, downTS := time.Now(), r.tso()
		samples := r.sampleOutage(downAt, outage)
		kafka.start(t) // same port, same data dir
		upAt, upTS := time.Now(), r.tso()
		r.alive()
		require.NoError(t, load.failure(), "load")

		first := firstWriteAfter(t, load, downTS)
		for _, s := range samples {
			require.Less(t, s.cp, first.ts, "outage %d: checkpoint %s into it is at or past a write committed after Kafka stopped (%+v)", k+1, s.at, first)
			require.NotEqual(t, pb.ChangefeedState_CHANGEFEED_STATE_FAILED, s.state, "outage %d, %s in", k+1, s.at)
		}
		var frozen []cpSample
		for _, s := range samples {
			if s.at >= outage/2 {
				frozen = append(frozen, s)
			}
		}
		require.NotEmpty(t, frozen)
		for _, s := range frozen {
			require.Equal(t, frozen[0].cp, s.cp, "outage %d: checkpoint moved in its second half (%s in)", k+1, s.at)
		}
		f := outageFigures{down: upAt.Sub(downAt), samples: describeSamples(samples, downTS),
			lagAtUp: time.Since(oracle.GetTimeFromTS(samples[len(samples)-1].cp))}
		f.lagOK, f.passed = r.recover(upAt, upTS, lagLimit)
		_, _, _, f.rss = mem.figures()
		t.Logf("R5 outage %d/%d: Kafka down %s: %s; lag at its return %s, < %s after %s, past the return's TSO after %s; cdc server RSS %s",
			k+1, outages, f.down.Round(100*time.Millisecond), f.samples, f.lagAtUp.Round(100*time.Millisecond), outageLagLimit,
			f.lagOK.Round(100*time.Millisecond), f.passed.Round(100*time.Millisecond), mib(f.rss))
		figs = append(figs, f)
	}
	figs[outages-1].maxLagAfter = r.steady(soakStart.Add(time.Duration(outages)*period), lagLimit)

	stopLoad()
	require.NoError(t, load.failure(), "load")
	writes := load.snapshot()
	r.awaitCheckpoint("checkpoint past the last write", writes[len(writes)-1].ts, lagLimit)
	harness.Eventually(t, 30*time.Second, "changefeed normal", func() error {
		if s := r.srv.state(t, outageCF); s != "normal" {
			return fmt.Errorf("state %s", s)
		}
		return nil
	})
	r.alive()
	mem.stop()
	peak, peakAt, hwm, rss := mem.figures()
	r.verifyWrites(kafka.brokers, kafka.registry, load, tables, 0)
	r.diffClean(kafka.brokers, kafka.registry)

	var sum strings.Builder
	fmt.Fprintf(&sum, "R5 summary: %d outages of %s every %s, %d writes of the load\n", outages, outage, period, len(writes))
	fmt.Fprintf(&sum, "  outage  down     lag at return  lag<%s after  past return TSO after  max lag until next  RSS after return\n", outageLagLimit)
	for i, f := range figs {
		fmt.Fprintf(&sum, "  %-6d  %-7s  %-13s  %-14s  %-21s  %-18s  %s\n", i+1, f.down.Round(100*time.Millisecond),
			f.lagAtUp.Round(100*time.Millisecond), f.lagOK.Round(100*time.Millisecond), f.passed.Round(100*time.Millisecond),
			f.maxLagAfter.Round(100*time.Millisecond), mib(f.rss))
	}
	fmt.Fprintf(&sum, "  cdc server RSS: peak polled %s (%s into the soak), VmHWM %s, at the end %s; limit %s (budget %s); wall time %s",
		mib(peak), peakAt.Sub(soakStart).Round(time.Second), mib(hwm), mib(rss), mib(rssLimit(t, quota)), mib(quota),
		time.Since(began).Round(time.Second))
	t.Log(sum.String())
	require.LessOrEqual(t, max(peak, hwm), rssLimit(t, quota), "cdc server peak RSS over the limit (budget %s)", mib(quota))
}

// steady polls the changefeed every second until until, requiring it never
// failed and its checkpoint lag under limit, and returns the largest lag
// seen. The polling is the wait between outages.
func (r *outageRig) steady(until time.Time, limit time.Duration) time.Duration {
	r.t.Helper()
	var worst time.Duration
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for time.Now().Before(until) {
		r.alive()
		info, err := r.info()
		require.NoError(r.t, err, "changefeed between outages")
		require.NotEqual(r.t, pb.ChangefeedState_CHANGEFEED_STATE_FAILED, info.GetState(), "between outages: %q", info.GetError().GetMessage())
		lag := time.Since(oracle.GetTimeFromTS(info.GetCheckpointTs()))
		require.Less(r.t, lag, limit, "checkpoint lag between outages (state %s, error %q)", info.GetState(), info.GetError().GetMessage())
		worst = max(worst, lag)
		select {
		case <-r.ctx.Done():
			r.t.Fatalf("between outages: %v", r.ctx.Err())
		case <-tick.C:
		}
	}
	return worst
}
