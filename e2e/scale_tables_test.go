package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tikv/client-go/v2/oracle"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tidestream/tidestream/coordinator/store"
	"github.com/tidestream/tidestream/e2e/harness"
	"github.com/tidestream/tidestream/services/devstack"
)

// The scale check of issue 14: how one changefeed over many tables fares
// on one `cdc server`. Not part of `make test`: `make scale` runs it.
//
//	TIDESTREAM_SCALE_TABLES   table counts, comma-separated (unset: skip), e.g. 1000,10000
//	TIDESTREAM_SCALE_RATE     synthetic row changes per second over all tables (default 100)
//	TIDESTREAM_SCALE_WARMUP   steady state begins this long after the first checkpoint advance (default 30s)
//	TIDESTREAM_SCALE_WINDOW   the steady-state window measured (default 30s)
//	TIDESTREAM_SCALE_TIMEOUT  bound on placing every table and the first checkpoint advance (default 20m)
//	TIDESTREAM_SCALE_OUT      where CPU and heap profiles are kept (default a new temp dir)
//	TIDESTREAM_SCALE_SESSION_TTL  the server's --session-ttl (default its own, 10s)
//	TIDESTREAM_SCALE_SERVER_ARGS  more `cdc server` flags, space-separated (e.g. --local-streams=false, to compare)
const (
	scaleTablesEnv = "TIDESTREAM_SCALE_TABLES"
	manyCF         = "many"
	manyConf       = `[filter]
rules = ['synthetic.*']
[sink]
dispatchers = [{matcher = ['*.*'], topic = "tidb_{schema}_{table}", partition="index-value"}]
`
)

// scaleFigures is what one run measured.
type scaleFigures struct {
	tables int
	rate   float64

	setup       time.Duration // playground start until its synthetic tables exist
	create      time.Duration // `cdc cli changefeed create`, run to completion
	placed      time.Duration // create until every table has an assignment
	reporting   time.Duration // create until every table has a progress record
	firstAdv    time.Duration // create until the changefeed checkpoint first moves
	timedOut    string        // what did not happen within the timeout
	placeProf   groupShares
	steadyProf  groupShares
	window      time.Duration
	cpuServer   float64 // cores used by `cdc server` over the window
	cpuPG       float64 // cores used by the playground over the window
	lagP50      time.Duration
	lagMax      time.Duration
	lagSamples  int
	rss, hwm    int64 // `cdc server` VmRSS and VmHWM at the end, bytes
	goHeap      int64 // Go heap in use (inuse_space) at the end, bytes
	dbSize      int64 // etcd backend size
	dbInUse     int64 // etcd backend size in use
	revRate     float64
	revision    int64
	prefixes    []prefixStat
	assignments int
	progress    int
}

type prefixStat struct {
	name         string
	keys         int
	keyB, valueB int64
}

// groupShares is the share of CPU samples with a frame in each group.
type groupShares struct {
	total   time.Duration
	percent map[string]float64
	file    string
}

// cpuGroups are the parts of `cdc server` a profile is split into; a
// sample counts for every group with a frame on its stack.
var cpuGroups = []struct{ name, focus string }{
	{"owner (scheduler, placement)", `tidestream/coordinator/(scheduler|placement|owner)\.`},
	{"puller", `tidestream/puller/`},
	{"sorter", `tidestream/sorter/`},
	{"encoder", `tidestream/encoder/`},
	{"producer", `tidestream/producer/`},
	{"progress writes (store.WriteProgress)", `store\.\(\*Store\)\.WriteProgress`},
	{"embedded etcd server", `go\.etcd\.io/etcd/server`},
	{"gRPC", `google\.golang\.org/grpc`},
	{"GC", `runtime\.(gcBgMarkWorker|gcDrain|markroot|gcAssist)`},
}

// TestScaleManyTables measures one changefeed over N synthetic tables on
// one `cdc server` with its embedded etcd, for each N in
// TIDESTREAM_SCALE_TABLES: the time to place every table and until the
// checkpoint first advances, the etcd data size and its keys, the server's
// CPU and the checkpoint lag at steady state, and its memory. It prints the
// figures and asserts nothing about them, only that the changefeed gets
// there.
func TestScaleManyTables(t *testing.T) {
	spec := os.Getenv(scaleTablesEnv)
	if spec == "" {
		t.Skip(scaleTablesEnv + " is not set (e.g. 1000,10000): `make scale` runs this")
	}
	if os.Getenv("PLAYGROUND_BIN") == "" {
		t.Skip("PLAYGROUND_BIN is not set: `make scale` builds deploy/playground and sets it")
	}
	var counts []int
	for f := range strings.SplitSeq(spec, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		require.NoError(t, err, scaleTablesEnv)
		require.Positive(t, n, scaleTablesEnv)
		counts = append(counts, n)
	}
	rate := envFloat(t, "TIDESTREAM_SCALE_RATE", 100)
	warmup := envDuration(t, "TIDESTREAM_SCALE_WARMUP", 30*time.Second)
	window := envDuration(t, "TIDESTREAM_SCALE_WINDOW", 30*time.Second)
	timeout := envDuration(t, "TIDESTREAM_SCALE_TIMEOUT", 20*time.Minute)
	out := os.Getenv("TIDESTREAM_SCALE_OUT")
	if out == "" {
		var err error
		out, err = os.MkdirTemp("", "tidestream-scale-")
		require.NoError(t, err)
	}
	require.NoError(t, os.MkdirAll(out, 0o755))
	t.Logf("profiles in %s", out)

	var all []*scaleFigures
	for _, n := range counts {
		f := &scaleFigures{tables: n, rate: rate, window: window}
		all = append(all, f)
		t.Run(fmt.Sprintf("tables=%d", n), func(t *testing.T) {
			runScale(t, f, warmup, timeout, out)
			t.Log("\n" + f.table())
		})
	}
	if len(all) > 1 {
		t.Log("\n" + compareFigures(all))
	}
}

func runScale(t *testing.T, f *scaleFigures, warmup, timeout time.Duration, out string) {
	began := time.Now()
	pg := startSyntheticPlayground(t, f.tables, f.rate)
	f.setup = time.Since(began)
	t.Logf("playground with %d synthetic tables up in %s", f.tables, f.setup.Round(100*time.Millisecond))
	dev := startDevstack(t, devstack.DefaultConfig())
	dataDir := t.TempDir()
	srv, srvAddr, statusAddr := startScaleServer(t, pg.pdAddr, dataDir, os.Getenv("TIDESTREAM_SCALE_SESSION_TTL"))
	etcdURL := embeddedEtcdURL(t, srv)

	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcdURL}, DialTimeout: 5 * time.Second})
	require.NoError(t, err)
	defer cli.Close()
	keys, err := store.NewKeys("default")
	require.NoError(t, err)
	st := store.New(cli, keys)
	// Every etcd read is bounded: the etcd is the server's, and a server
	// that died must fail the test, not hang it. Generous: at 10k tables
	// the embedded etcd has answered a read only after more than 10 s.
	bounded := func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		t.Cleanup(cancel)
		return ctx
	}
	alive := func() {
		if srv.Exited() {
			log := srv.Log()
			t.Fatalf("cdc server exited; its log ends:\n%s", log[max(0, len(log)-4000):])
		}
	}
	getCF := func() *store.Changefeed {
		alive()
		cf, err := st.Get(bounded(), store.DefaultNamespace, manyCF)
		require.NoError(t, err)
		return cf
	}

	conf := filepath.Join(t.TempDir(), "changefeed.conf")
	require.NoError(t, os.WriteFile(conf, []byte(manyConf), 0o600))
	created := time.Now()
	// The owner's first round may already run while the CLI still prints;
	// a profile from now covers placement.
	placeProf := make(chan groupShares, 1)
	go func() {
		placeProf <- profileGroups(t, statusAddr, 30*time.Second, filepath.Join(out, fmt.Sprintf("cpu-place-%d.pprof", f.tables)))
	}()
	r := harness.Run(t, 10*time.Minute, "", harness.CDC(t), "cli", "changefeed", "create",
		"--server=http://"+srvAddr,
		"--sink-uri=kafka://"+strings.Join(dev.Kafka, ",")+"/meta?protocol=avro&auto-create-topic=true&partition-num=1&replication-factor=1",
		"--schema-registry="+dev.Registry, "--changefeed-id="+manyCF, "--config", conf, "--no-confirm")
	require.Equal(t, 0, r.ExitCode, "stderr: %s", r.Stderr)
	f.create = time.Since(created)
	startCP := getCF().Status.GetCheckpointTs()

	// Placement: counts only, so the polling itself stays cheap at 10k.
	count := func(prefix string) int {
		alive()
		resp, err := cli.Get(bounded(), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		require.NoError(t, err)
		return int(resp.Count)
	}
	lastLog := time.Now()
	deadline := created.Add(timeout)
	for f.placed == 0 || f.reporting == 0 || f.firstAdv == 0 {
		now := time.Now()
		el := now.Sub(created)
		a := count(keys.AssignmentPrefix(""))
		p := count(keys.ProgressPrefix(store.DefaultNamespace, manyCF))
		cf := getCF()
		if f.placed == 0 && a >= f.tables {
			f.placed = el
		}
		if f.reporting == 0 && p >= f.tables {
			f.reporting = el
		}
		if f.firstAdv == 0 && cf.Status.GetCheckpointTs() > startCP {
			f.firstAdv = el
		}
		if now.Sub(lastLog) >= 10*time.Second {
			lastLog = now
			t.Logf("%s after create: %d/%d assigned, %d/%d reporting, state %s, checkpoint advanced %v, server rss %s",
				el.Round(time.Second), a, f.tables, p, f.tables, cf.Status.GetState(), cf.Status.GetCheckpointTs() > startCP,
				mib(procMem(t, srv.PID(), "VmRSS")))
		}
		if now.After(deadline) {
			f.timedOut = fmt.Sprintf("after %s: %d/%d assigned, %d/%d reporting, checkpoint advanced %v, state %s, error %q",
				timeout, a, f.tables, p, f.tables, cf.Status.GetCheckpointTs() > startCP, cf.Status.GetState(), cf.Status.GetError().GetMessage())
			f.placeProf = <-placeProf
			f.measureEtcd(t, cli, etcdURL, keys)
			f.rss, f.hwm = procMem(t, srv.PID(), "VmRSS"), procMem(t, srv.PID(), "VmHWM")
			f.goHeap = heapInUse(t, statusAddr, filepath.Join(out, fmt.Sprintf("heap-%d.pprof", f.tables)))
			t.Log("\n" + f.table())
			t.Fatalf("the changefeed did not get going: %s", f.timedOut)
		}
		time.Sleep(500 * time.Millisecond)
	}
	f.placeProf = <-placeProf
	t.Logf("placed in %s, reporting in %s, first checkpoint advance in %s; steady state from %s on",
		f.placed.Round(time.Millisecond), f.reporting.Round(time.Millisecond), f.firstAdv.Round(time.Millisecond), warmup)
	time.Sleep(warmup)

	// Steady state: CPU over the window (and a profile of it), the lag
	// sampled every second, etcd's revision rate.
	rev0 := f.etcdRevision(t, cli, etcdURL)
	cpu0, pg0, t0 := procCPU(t, srv.PID()), procCPU(t, pg.pid), time.Now()
	steadyProf := make(chan groupShares, 1)
	go func() {
		steadyProf <- profileGroups(t, statusAddr, f.window, filepath.Join(out, fmt.Sprintf("cpu-steady-%d.pprof", f.tables)))
	}()
	var lags []time.Duration
	tick := time.NewTicker(time.Second)
	for ; time.Since(t0) < f.window; <-tick.C {
		cf := getCF()
		lags = append(lags, time.Since(time.UnixMilli(oracle.ExtractPhysical(cf.Status.GetCheckpointTs()))))
	}
	tick.Stop()
	el := time.Since(t0)
	f.cpuServer = (procCPU(t, srv.PID()) - cpu0) / el.Seconds()
	f.cpuPG = (procCPU(t, pg.pid) - pg0) / el.Seconds()
	f.steadyProf = <-steadyProf
	rev1 := f.etcdRevision(t, cli, etcdURL)
	f.revRate = float64(rev1-rev0) / el.Seconds()
	slices.Sort(lags)
	f.lagSamples = len(lags)
	f.lagP50, f.lagMax = lags[len(lags)/2], lags[len(lags)-1]
	f.rss, f.hwm = procMem(t, srv.PID(), "VmRSS"), procMem(t, srv.PID(), "VmHWM")
	f.goHeap = heapInUse(t, statusAddr, filepath.Join(out, fmt.Sprintf("heap-%d.pprof", f.tables)))
	f.measureEtcd(t, cli, etcdURL, keys)
}

// syntheticPlayground is a playground with the synthetic source on.
type syntheticPlayground struct {
	pdAddr string
	pid    int
}

// startSyntheticPlayground runs the playground with n synthetic tables
// (one region each) whose changes are generated at rate rows/s, and waits
// until the tables exist.
func startSyntheticPlayground(t *testing.T, n int, rate float64) *syntheticPlayground {
	t.Helper()
	port := func(a string) string { return a[len("127.0.0.1:"):] }
	p, addrs := harness.StartOnFreePorts(t, harness.Launch{Name: "playground", Bin: os.Getenv("PLAYGROUND_BIN"), Addrs: 4,
		Args: func(addrs []string) []string {
			return []string{"--data-dir", t.TempDir(),
				"--sql-port", port(addrs[0]), "--status-port", port(addrs[1]),
				"--pd-port", port(addrs[2]), "--kv-port", port(addrs[3]),
				"--synthetic", "--synthetic-tables", strconv.Itoa(n), "--synthetic-rate", strconv.FormatFloat(rate, 'f', -1, 64),
				"--synthetic-report", "1m"}
		},
		Ready: func(p *harness.Proc, _ []string) error {
			return harness.Await(p, 60*time.Minute, "playground ready (synthetic tables created)", func() error {
				if !strings.Contains(p.Log(), "playground ready in") {
					return fmt.Errorf("not yet")
				}
				return nil
			})
		},
	})
	return &syntheticPlayground{pdAddr: addrs[2], pid: p.PID()}
}

// startScaleServer starts `cdc server` (every role, embedded etcd) with
// its defaults but the addresses, and returns it, its gRPC and its status
// address.
func startScaleServer(t *testing.T, pdAddr, dataDir, sessionTTL string) (*harness.Proc, string, string) {
	t.Helper()
	proc, addrs := harness.StartOnFreePorts(t, harness.Launch{Name: "cdc-server", Bin: harness.CDC(t), Addrs: 2,
		Args: func(addrs []string) []string {
			args := []string{"server", "--addr", addrs[0], "--status-addr", addrs[1], "--data-dir", dataDir,
				"--member-id", "srv", "--pd", "http://" + pdAddr, "--log-level", "info"}
			if sessionTTL != "" {
				args = append(args, "--session-ttl", sessionTTL)
			}
			return append(args, strings.Fields(os.Getenv("TIDESTREAM_SCALE_SERVER_ARGS"))...)
		},
		Ready: harness.Serving(60 * time.Second),
	})
	return proc, addrs[0], addrs[1]
}

var etcdURLRe = regexp.MustCompile(`"embedded etcd ready".*?"client_url":"(http://[^"]+)"`)

// embeddedEtcdURL is the client URL the server's embedded etcd logged.
func embeddedEtcdURL(t *testing.T, srv *harness.Proc) string {
	t.Helper()
	var url string
	harness.Eventually(t, 30*time.Second, "embedded etcd URL in the server's log", func() error {
		m := etcdURLRe.FindStringSubmatch(srv.Log())
		if m == nil {
			return fmt.Errorf("no %q line", "embedded etcd ready")
		}
		url = m[1]
		return nil
	})
	return url
}

func (f *scaleFigures) etcdRevision(t *testing.T, cli *clientv3.Client, url string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := cli.Status(ctx, url)
	require.NoError(t, err)
	return s.Header.Revision
}

// measureEtcd reads the backend size and counts the keys and bytes under
// each prefix of the cluster's layout.
func (f *scaleFigures) measureEtcd(t *testing.T, cli *clientv3.Client, url string, keys store.Keys) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := cli.Status(ctx, url)
	require.NoError(t, err)
	f.dbSize, f.dbInUse, f.revision = s.DbSize, s.DbSizeInUse, s.Header.Revision
	resp, err := cli.Get(ctx, keys.Prefix()+"/", clientv3.WithPrefix())
	require.NoError(t, err)
	by := map[string]*prefixStat{}
	for _, kv := range resp.Kvs {
		rest := strings.TrimPrefix(string(kv.Key), keys.Prefix()+"/")
		name, _, _ := strings.Cut(rest, "/")
		if name == "changefeed" {
			parts := strings.SplitN(rest, "/", 3)
			if len(parts) > 1 {
				name += "/" + parts[1]
			}
		}
		p := by[name]
		if p == nil {
			p = &prefixStat{name: name}
			by[name] = p
		}
		p.keys++
		p.keyB += int64(len(kv.Key))
		p.valueB += int64(len(kv.Value))
	}
	f.prefixes = f.prefixes[:0]
	for _, p := range by {
		f.prefixes = append(f.prefixes, *p)
	}
	slices.SortFunc(f.prefixes, func(a, b prefixStat) int { return strings.Compare(a.name, b.name) })
	f.assignments, f.progress = by["assignment"].count(), by["progress"].count()
}

func (p *prefixStat) count() int {
	if p == nil {
		return 0
	}
	return p.keys
}

// procCPU is the user+system CPU seconds of process pid so far.
func procCPU(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	require.NoError(t, err)
	// Fields after the command (which may hold spaces), from field 3 on.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, err := strconv.ParseInt(fields[11], 10, 64)
	require.NoError(t, err)
	stime, err := strconv.ParseInt(fields[12], 10, 64)
	require.NoError(t, err)
	const clkTck = 100 // USER_HZ on Linux
	return float64(utime+stime) / clkTck
}

// procMem is a /proc/<pid>/status memory field (VmRSS, VmHWM) in bytes.
func procMem(t *testing.T, pid int, field string) int64 {
	t.Helper()
	fh, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			require.NoError(t, err)
			return kb << 10
		}
	}
	return 0
}

// profileGroups takes a CPU profile of d from the server's pprof endpoint,
// keeps it in file and splits it into cpuGroups with `go tool pprof`. A
// failure only leaves the shares empty.
func profileGroups(t *testing.T, statusAddr string, d time.Duration, file string) groupShares {
	g := groupShares{percent: map[string]float64{}, file: file}
	if err := fetch(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", statusAddr, int(d.Seconds())), file, d+time.Minute); err != nil {
		t.Logf("cpu profile: %v", err)
		return g
	}
	for _, grp := range cpuGroups {
		secs, total, err := pprofFocus(file, grp.focus)
		if err != nil {
			t.Logf("pprof %s: %v", file, err)
			return g
		}
		g.total = total
		if total > 0 {
			g.percent[grp.name] = 100 * secs.Seconds() / total.Seconds()
		}
	}
	return g
}

func fetch(url, file string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	fh, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(fh, resp.Body); err != nil {
		fh.Close()
		return err
	}
	return fh.Close()
}

var showingRe = regexp.MustCompile(`Showing nodes accounting for ([0-9.]+)(\w+), [0-9.]+% of ([0-9.]+)(\w+) total`)

// pprofFocus is the CPU time of the samples with a frame matching focus,
// and the profile's total.
func pprofFocus(file, focus string) (time.Duration, time.Duration, error) {
	out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=1000000", "-nodefraction=0", "-edgefraction=0",
		"-focus="+focus, file).CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("%v: %s", err, out)
	}
	m := showingRe.FindStringSubmatch(string(out))
	if m == nil {
		if strings.Contains(string(out), "no samples") || strings.Contains(string(out), "Showing nodes accounting for 0") {
			return 0, 0, nil
		}
		// A focus nothing matches leaves no nodes.
		return 0, 0, nil
	}
	d, err := pprofDuration(m[1], m[2])
	if err != nil {
		return 0, 0, err
	}
	total, err := pprofDuration(m[3], m[4])
	return d, total, err
}

// pprofDuration reads pprof's scaled durations: 980ms, 12.5s, 1.2mins.
func pprofDuration(v, unit string) (time.Duration, error) {
	switch unit {
	case "mins":
		unit = "m"
	case "hrs":
		unit = "h"
	}
	return time.ParseDuration(v + unit)
}

// heapInUse fetches a heap profile into file and returns the bytes in use.
func heapInUse(t *testing.T, statusAddr, file string) int64 {
	if err := fetch("http://"+statusAddr+"/debug/pprof/heap", file, time.Minute); err != nil {
		t.Logf("heap profile: %v", err)
		return 0
	}
	out, err := exec.Command("go", "tool", "pprof", "-top", "-sample_index=inuse_space", "-nodecount=1", file).CombinedOutput()
	if err != nil {
		t.Logf("pprof heap: %v: %s", err, out)
		return 0
	}
	m := regexp.MustCompile(`of ([0-9.]+)(B|kB|MB|GB) total`).FindStringSubmatch(string(out))
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	mult := map[string]float64{"B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}[m[2]]
	return int64(v * mult)
}

func (f *scaleFigures) table() string {
	var b strings.Builder
	w := func(k, format string, args ...any) { fmt.Fprintf(&b, "  %-44s %s\n", k, fmt.Sprintf(format, args...)) }
	fmt.Fprintf(&b, "scale check: %d tables, one changefeed, one `cdc server` (embedded etcd), synthetic source %.0f rows/s\n", f.tables, f.rate)
	w("playground: create the tables", "%s", f.setup.Round(100*time.Millisecond))
	w("cli changefeed create", "%s", f.create.Round(time.Millisecond))
	w("create -> every table assigned", "%s", durOr(f.placed))
	w("create -> every table reporting progress", "%s", durOr(f.reporting))
	w("create -> changefeed checkpoint first advances", "%s", durOr(f.firstAdv))
	if f.timedOut != "" {
		w("NOT REACHED", "%s", f.timedOut)
	}
	if f.lagSamples > 0 {
		w(fmt.Sprintf("checkpoint lag over %s (1/s)", f.window), "p50 %s, max %s (%d samples)", f.lagP50.Round(time.Millisecond), f.lagMax.Round(time.Millisecond), f.lagSamples)
		w("cdc server CPU at steady state", "%.2f cores (playground %.2f cores; machine has 2)", f.cpuServer, f.cpuPG)
		w("etcd writes at steady state", "%.0f revisions/s", f.revRate)
	}
	w("cdc server memory", "RSS %s, peak RSS %s, Go heap in use %s", mib(f.rss), mib(f.hwm), mib(f.goHeap))
	w("etcd backend", "db size %s, in use %s, revision %d", mib(f.dbSize), mib(f.dbInUse), f.revision)
	for _, p := range f.prefixes {
		w("  keys under "+p.name, "%d keys, %s keys + %s values", p.keys, kib(p.keyB), kib(p.valueB))
	}
	for _, s := range []struct {
		what string
		g    groupShares
	}{{"CPU profile, first 30 s after create", f.placeProf}, {"CPU profile, steady-state window", f.steadyProf}} {
		if len(s.g.percent) == 0 {
			continue
		}
		w(s.what, "%s of samples (%.2f cores), %s", s.g.total.Round(10*time.Millisecond),
			s.g.total.Seconds()/max(1, profSeconds(s.what, f.window)), s.g.file)
		for _, grp := range cpuGroups {
			w("  "+grp.name, "%.1f%%", s.g.percent[grp.name])
		}
	}
	return b.String()
}

func profSeconds(what string, window time.Duration) float64 {
	if strings.Contains(what, "first 30 s") {
		return 30
	}
	return window.Seconds()
}

// compareFigures puts the headline figures of every run side by side.
func compareFigures(all []*scaleFigures) string {
	var b strings.Builder
	row := func(k string, v func(f *scaleFigures) string) {
		fmt.Fprintf(&b, "  %-40s", k)
		for _, f := range all {
			fmt.Fprintf(&b, " %22s", v(f))
		}
		b.WriteString("\n")
	}
	row("tables", func(f *scaleFigures) string { return strconv.Itoa(f.tables) })
	row("playground table creation", func(f *scaleFigures) string { return f.setup.Round(time.Second).String() })
	row("create -> all assigned", func(f *scaleFigures) string { return durOr(f.placed) })
	row("create -> all reporting", func(f *scaleFigures) string { return durOr(f.reporting) })
	row("create -> first checkpoint advance", func(f *scaleFigures) string { return durOr(f.firstAdv) })
	row("etcd db size / in use", func(f *scaleFigures) string { return mib(f.dbSize) + " / " + mib(f.dbInUse) })
	row("etcd keys (assignment, progress)", func(f *scaleFigures) string { return fmt.Sprintf("%d, %d", f.assignments, f.progress) })
	row("etcd revisions/s at steady state", func(f *scaleFigures) string { return fmt.Sprintf("%.0f", f.revRate) })
	row("server CPU at steady state (cores)", func(f *scaleFigures) string { return fmt.Sprintf("%.2f", f.cpuServer) })
	row("  owner share of server CPU", func(f *scaleFigures) string {
		return fmt.Sprintf("%.1f%%", f.steadyProf.percent[cpuGroups[0].name])
	})
	row("checkpoint lag p50 / max", func(f *scaleFigures) string {
		return f.lagP50.Round(100*time.Millisecond).String() + " / " + f.lagMax.Round(100*time.Millisecond).String()
	})
	row("server RSS (peak)", func(f *scaleFigures) string { return mib(f.rss) + " (" + mib(f.hwm) + ")" })
	return "scale check, side by side\n" + b.String()
}

func durOr(d time.Duration) string {
	if d == 0 {
		return "not reached"
	}
	return d.Round(time.Millisecond).String()
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
func kib(b int64) string { return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10)) }

func envFloat(t *testing.T, name string, def float64) float64 {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	require.NoError(t, err, name)
	return f
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	require.NoError(t, err, name)
	return d
}
