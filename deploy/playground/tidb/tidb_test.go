package tidb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"github.com/pingcap/kvproto/pkg/tikvpb"
	"github.com/tidestream/tidestream/deploy/playground/kvserver"
	"github.com/tidestream/tidestream/deploy/playground/pdserver"
	"github.com/tidestream/tidestream/deploy/playground/store"
	"google.golang.org/grpc"
)

// readyGoal is the acceptance goal for a warm start of the whole cluster.
const readyGoal = 15 * time.Second

// freeAddr returns 127.0.0.1 with a port that was free a moment ago (PD and the
// store need their addresses before they listen).
// freeAddrs returns n distinct loopback addresses that were free a moment
// ago. Every listener stays open until all are picked: closed one by one,
// the kernel may hand the same port out twice (it did: the KV port and PD's
// etcd collided).
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	addrs := make([]string, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		addrs = append(addrs, l.Addr().String())
	}
	return addrs
}

// kvWrites counts transactional writes that crossed the KV port, unary or inside
// BatchCommands, to show that TiDB writes over the network.
type kvWrites struct {
	prewrites, commits atomic.Int64
}

func (w *kvWrites) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	switch {
	case strings.HasSuffix(info.FullMethod, "/KvPrewrite"):
		w.prewrites.Add(1)
	case strings.HasSuffix(info.FullMethod, "/KvCommit"):
		w.commits.Add(1)
	}
	return next(ctx, req)
}

func (w *kvWrites) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, next grpc.StreamHandler) error {
	return next(srv, &countingStream{ServerStream: ss, w: w})
}

type countingStream struct {
	grpc.ServerStream
	w *kvWrites
}

func (s *countingStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if req, ok := m.(*tikvpb.BatchCommandsRequest); ok && err == nil {
		for _, r := range req.Requests {
			switch r.Cmd.(type) {
			case *tikvpb.BatchCommandsRequest_Request_Prewrite:
				s.w.prewrites.Add(1)
			case *tikvpb.BatchCommandsRequest_Request_Commit:
				s.w.commits.Add(1)
			}
		}
	}
	return err
}

// cluster is store + KV port + PD port + TiDB, the way the playground binary
// wires them.
type cluster struct {
	dir            string
	kvAddr, pdAddr string
	st             *store.Store
	kv             *kvserver.Server
	pd             *pdserver.Server
	db             *Server
	writes         *kvWrites
	extra          map[string]http.Handler
}

func newCluster(t *testing.T) *cluster {
	addrs := freeAddrs(t, 2)
	c := &cluster{
		dir:    t.TempDir(),
		kvAddr: addrs[0],
		pdAddr: addrs[1],
		writes: &kvWrites{},
	}
	// TiDB's own log is the first thing to read when a test fails;
	// PLAYGROUND_TEST_LOGS=<dir> keeps a copy of it either way.
	t.Cleanup(func() {
		b, err := os.ReadFile(filepath.Join(c.dir, "tidb", logFile))
		if err != nil {
			return
		}
		if keep := os.Getenv("PLAYGROUND_TEST_LOGS"); keep != "" {
			if err := os.WriteFile(filepath.Join(keep, t.Name()+"-"+logFile), b, 0o644); err != nil {
				t.Logf("keep %s: %v", logFile, err)
			}
		}
		if t.Failed() {
			t.Logf("tail of %s:\n%s", logFile, tail(b, 8000))
		}
	})
	return c
}

// start starts everything on c's dirs and addresses and returns how long TiDB
// took and how long the whole cluster took.
func (c *cluster) start(t *testing.T) (tidbTook, total time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	began := time.Now()
	var err error
	c.st, err = store.Open(store.Config{Dir: filepath.Join(c.dir, "store"), StoreAddr: c.kvAddr, PDAddr: c.pdAddr})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	c.kv, err = kvserver.Start(kvserver.Config{
		Addr:   c.kvAddr,
		KV:     c.st.Server,
		Unary:  []grpc.UnaryServerInterceptor{c.writes.unary},
		Stream: []grpc.StreamServerInterceptor{c.writes.stream},
	})
	if err != nil {
		c.stop(t)
		t.Fatalf("start kv port: %v", err)
	}
	c.pd, err = pdserver.Start(ctx, pdserver.Config{Dir: filepath.Join(c.dir, "pd"), ClientAddr: c.pdAddr, Store: c.st})
	if err != nil {
		c.stop(t)
		t.Fatalf("start PD: %v", err)
	}
	tidbBegan := time.Now()
	c.db, err = Start(ctx, Config{PDAddr: c.pdAddr, Dir: filepath.Join(c.dir, "tidb"), ExtraStatusHandlers: c.extra})
	if err != nil {
		c.stop(t)
		t.Fatalf("start TiDB: %v", err)
	}
	return time.Since(tidbBegan), time.Since(began)
}

// stop closes clients before servers: TiDB, then the ports, then the store.
func (c *cluster) stop(t *testing.T) {
	t.Helper()
	if c.db != nil {
		if err := c.db.Close(); err != nil {
			t.Errorf("close TiDB: %v", err)
		}
		c.db = nil
	}
	if c.pd != nil {
		if err := c.pd.Close(); err != nil {
			t.Errorf("close PD: %v", err)
		}
		c.pd = nil
	}
	if c.kv != nil {
		if err := c.kv.Close(); err != nil {
			t.Errorf("close kv port: %v", err)
		}
		c.kv = nil
	}
	if c.st != nil {
		if err := c.st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
		c.st = nil
	}
}

func (c *cluster) sqlDB(t *testing.T, database string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", fmt.Sprintf("root@tcp(%s)/%s?timeout=10s", c.db.SQLAddr(), database))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func mustExec(t *testing.T, db *sql.DB, query string, args ...any) {
	t.Helper()
	if _, err := db.Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// rows returns "id=v" for every row of t.t in id order.
func rows(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rs, err := db.Query("SELECT id, v FROM t ORDER BY id")
	if err != nil {
		t.Fatalf("select: %v", err)
	}
	defer rs.Close()
	var out []string
	for rs.Next() {
		var id int
		var v string
		if err := rs.Scan(&id, &v); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%d=%s", id, v))
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestValidate(t *testing.T) {
	for _, c := range []Config{
		{Dir: "d"},
		{PDAddr: "nonsense", Dir: "d"},
		{PDAddr: "127.0.0.1:2379"},
		{PDAddr: "127.0.0.1:2379", Dir: "d", SQLPort: 70000},
		{PDAddr: "127.0.0.1:2379", Dir: "d", SQLPort: 4000, StatusPort: 4000},
		{PDAddr: "127.0.0.1:2379", Dir: "d", ExtraStatusHandlers: map[string]http.Handler{"/": http.NotFoundHandler()}},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", c)
		}
	}
}

func TestSQLSplitAndRestart(t *testing.T) {
	c := newCluster(t)
	c.extra = map[string]http.Handler{"/playground/ping": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "pong")
	})}
	tidbTook, total := c.start(t)
	t.Logf("cold start: TiDB %v, whole cluster %v", tidbTook.Round(time.Millisecond), total.Round(time.Millisecond))
	t.Cleanup(func() { c.stop(t) })

	if _, err := Start(context.Background(), Config{PDAddr: c.pdAddr, Dir: t.TempDir()}); err == nil {
		t.Fatal("a second TiDB started in the same process")
	}

	db := c.sqlDB(t, "")
	for _, v := range []string{"tidb_enable_async_commit", "tidb_enable_1pc"} {
		var on int
		if err := db.QueryRow("SELECT @@global." + v).Scan(&on); err != nil || on != 1 {
			t.Fatalf("@@global.%s = %d, %v; want 1 (TiDB's TiKV default)", v, on, err)
		}
	}
	mustExec(t, db, "CREATE DATABASE pg")
	db = c.sqlDB(t, "pg")
	regionsBefore := len(c.st.Regions.ScanRegions(nil, nil, 0))
	mustExec(t, db, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(64))")
	// TiDB splits the new table's region in the background (tidb_scatter_region
	// is off), as on a real cluster.
	waitUntil(t, "CREATE TABLE to split a region", func() bool {
		return len(c.st.Regions.ScanRegions(nil, nil, 0)) > regionsBefore
	})

	writesBefore := c.writes.prewrites.Load()
	for i := 1; i <= 20; i++ {
		mustExec(t, db, "INSERT INTO t VALUES (?, ?)", i, fmt.Sprintf("v%d", i))
	}
	mustExec(t, db, "UPDATE t SET v = 'updated' WHERE id <= 5")
	mustExec(t, db, "DELETE FROM t WHERE id > 10")
	// A multi-statement transaction, not eligible for 1PC's single round trip.
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"INSERT INTO t VALUES (100, 'tx')", "UPDATE t SET v = 'tx6' WHERE id = 6"} {
		if _, err := tx.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	want := []string{"1=updated", "2=updated", "3=updated", "4=updated", "5=updated",
		"6=tx6", "7=v7", "8=v8", "9=v9", "10=v10", "100=tx"}
	if got := rows(t, db); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("rows = %v, want %v", got, want)
	}
	if n := c.writes.prewrites.Load() - writesBefore; n < 23 {
		t.Fatalf("%d prewrites crossed the KV port for 23 write transactions", n)
	}
	t.Logf("KV port saw %d prewrites, %d commits (1PC and async commit need no commit RPC for the primary)",
		c.writes.prewrites.Load(), c.writes.commits.Load())

	regionsBefore = len(c.st.Regions.ScanRegions(nil, nil, 0))
	var newRegions, ratio float64
	// TiDB refuses record regions narrower than 1000 handles, so (0)..(1000) in 4
	// regions would fail on a real cluster too.
	if err := db.QueryRow("SPLIT TABLE t BETWEEN (0) AND (100000) REGIONS 4").Scan(&newRegions, &ratio); err != nil {
		t.Fatalf("SPLIT TABLE: %v", err)
	}
	regionsAfter := len(c.st.Regions.ScanRegions(nil, nil, 0))
	t.Logf("SPLIT TABLE: %v new regions reported; store regions %d -> %d", newRegions, regionsBefore, regionsAfter)
	if newRegions < 3 || regionsAfter < regionsBefore+3 {
		t.Fatalf("SPLIT TABLE made %v regions (store: %d -> %d), want 3 more", newRegions, regionsBefore, regionsAfter)
	}
	if got := rows(t, db); len(got) != len(want) {
		t.Fatalf("after split: %d rows, want %d", len(got), len(want))
	}

	checkStatus(t, "http://"+c.db.StatusAddr())

	// TiDB rides out a store outage the way it does on a real cluster: client-go
	// backs off, probes the store's health and retries. A write racing the fault
	// may fail; an async-commit / 1PC one then reports its result undetermined
	// and TiDB closes the connection, as with a TiKV that died mid-request.
	mustExec(t, db, "CREATE TABLE f (id INT PRIMARY KEY, n INT)")
	mustExec(t, db, "INSERT INTO f VALUES (1, 0)")
	c.kv.SetUnavailable(time.Second)
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := db.ExecContext(ctx, "UPDATE f SET n = n + 1"); err != nil {
		t.Logf("write during the outage failed: %v", err)
	}
	for {
		_, err := db.ExecContext(ctx, "INSERT INTO f VALUES (2, 0)")
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no write succeeded within a minute of a 1s store outage: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("first write after a 1s store outage succeeded after %v", time.Since(began).Round(time.Millisecond))
	var n int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM f").Scan(&n); err != nil || n != 2 {
		t.Fatalf("after the outage: %d rows, %v", n, err)
	}

	c.stop(t)
	tidbTook, total2 := c.start(t)
	t.Logf("warm restart: TiDB %v, whole cluster %v", tidbTook.Round(time.Millisecond), total2.Round(time.Millisecond))
	if total2 > readyGoal {
		t.Errorf("warm restart took %v, goal %v", total2, readyGoal)
	}
	db = c.sqlDB(t, "pg")
	if got := rows(t, db); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("after restart rows = %v, want %v", got, want)
	}
	mustExec(t, db, "INSERT INTO t VALUES (200, 'after restart')")
	if got := rows(t, db); len(got) != len(want)+1 {
		t.Fatalf("after restart and insert: %v", got)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkStatus checks that the status port serves both TiDB's API and the extra
// handler.
func checkStatus(t *testing.T, base string) {
	t.Helper()
	get := func(path string) string {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %q %v", path, resp.StatusCode, b, err)
		}
		return string(b)
	}
	if s := get("/status"); !strings.Contains(s, `"connections"`) {
		t.Errorf("GET /status = %q, want TiDB's status JSON", s)
	}
	if s := get("/playground/ping"); s != "pong" {
		t.Errorf("GET /playground/ping = %q", s)
	}
	if s := get("/schema/pg/t"); !strings.Contains(s, `"name"`) {
		t.Errorf("GET /schema/pg/t = %.200q, want the table info", s)
	}
}

// goTPC finds the go-tpc binary: $GO_TPC, then /tmp/gotpc/bin/go-tpc, then PATH.
func goTPC() (string, error) {
	if p := os.Getenv("GO_TPC"); p != "" {
		return p, nil
	}
	if _, err := os.Stat("/tmp/gotpc/bin/go-tpc"); err == nil {
		return "/tmp/gotpc/bin/go-tpc", nil
	}
	return exec.LookPath("go-tpc")
}

func TestGoTPCPrepare(t *testing.T) {
	bin, err := goTPC()
	if err != nil {
		t.Skip("go-tpc not found: set GO_TPC=/path/to/go-tpc or put it on PATH " +
			"(go install github.com/pingcap/go-tpc/cmd/go-tpc@v1.0.12)")
	}
	c := newCluster(t)
	c.start(t)
	t.Cleanup(func() { c.stop(t) })
	host, port, _ := net.SplitHostPort(c.db.SQLAddr())
	_, statusPort, _ := net.SplitHostPort(c.db.StatusAddr())

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	began := time.Now()
	cmd := exec.CommandContext(ctx, bin, "tpcc", "--warehouses", "1", "prepare",
		"-H", host, "-P", port, "-S", statusPort, "-D", "tpcc", "-T", "4",
		"--retry-count", "5", "--retry-interval", "2s")
	out, err := cmd.CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) || ctx.Err() != nil {
			t.Fatalf("go-tpc prepare failed after %v: %v\n%s", time.Since(began), err, tail(out, 4000))
		}
		t.Fatalf("run go-tpc: %v", err)
	}
	t.Logf("go-tpc tpcc --warehouses 1 prepare took %v", time.Since(began).Round(time.Second))

	db := c.sqlDB(t, "tpcc")
	for table, want := range map[string]int{"warehouse": 1, "district": 10, "item": 100000, "stock": 100000, "customer": 30000} {
		var n int
		if err := db.QueryRow("SELECT COUNT(*) FROM " + table).Scan(&n); err != nil {
			t.Fatalf("count %s: %v", table, err)
		}
		if n != want {
			t.Errorf("%s has %d rows, want %d", table, n, want)
		}
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
