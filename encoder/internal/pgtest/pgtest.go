// Package pgtest is the encoder module's test harness for the playground
// (TiDB + PD + a TiKV-compatible KV endpoint in one process): it starts the
// binary on loopback ports picked at run time, opens database/sql pools on
// its SQL port, and reads committed row changes of a key span straight from
// the KV endpoint's change-data stream, as the puller would deliver them.
//
// Only _test files import it. It lives in the encoder module, not shared
// with the puller's or the playground's own harnesses, because a stage
// module must not import another stage (e2e/layout_test.go enforces that,
// test imports included), and those harnesses are internal to their
// modules anyway.
package pgtest

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/tikv/client-go/v2/oracle"
	pd "github.com/tikv/pd/client"
	"github.com/tikv/pd/client/opt"
	"github.com/tikv/pd/client/pkg/caller"
)

// Playground is a running playground process, stopped when its test ends.
type Playground struct {
	SQLAddr, StatusAddr, PDAddr, KVAddr string

	t      testing.TB
	cmd    *exec.Cmd
	exited chan struct{}

	mu  sync.Mutex
	out bytes.Buffer

	pdOnce sync.Once
	pd     pd.Client
	pdErr  error
}

// Start runs $PLAYGROUND_BIN and waits for it to be ready. Without the
// variable the test is skipped rather than failed: these tests need a built
// binary that plain `go test` does not provide.
func Start(t testing.TB) *Playground {
	t.Helper()
	bin := os.Getenv("PLAYGROUND_BIN")
	if bin == "" {
		t.Skip("PLAYGROUND_BIN is unset: set it to a built deploy/playground binary (e.g. bin/playground) to run this playground test")
	}
	p, err := start(t, bin)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startAttempts bounds the launches start makes when a port is taken.
const startAttempts = 3

// start launches bin on fresh ports and a fresh data dir. The ports are
// free when FreePorts picks them but released before the child binds them,
// and parallel test processes pick ports too, so one may be taken in
// between: only that failure is retried, on other ports and another data
// dir (nothing of a failed attempt carries over), at most startAttempts
// times in all.
func start(t testing.TB, bin string) (*Playground, error) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p, err := launch(t, bin, t.TempDir(), FreePorts(t, 4))
		if err == nil {
			return p, nil
		}
		var le *launchError
		if !errors.As(err, &le) || !le.portTaken {
			return nil, fmt.Errorf("playground start failed on attempt %d (a failure other than a taken port is not retried): %w", attempt, err)
		}
		if attempt == startAttempts {
			return nil, fmt.Errorf("playground start failed on all %d attempts, each time on a taken port; the last: %w", attempt, err)
		}
		t.Logf("playground start, attempt %d of %d: %s; retrying on other ports", attempt, startAttempts, le.reason)
	}
}

// launchError is a launch that failed after the process started: why, and
// everything the process printed.
type launchError struct {
	reason    string
	output    string
	portTaken bool // see portTaken
}

func (e *launchError) Error() string {
	return e.reason + "\n--- playground output ---\n" + tail(e.output, 20000)
}

// portTaken classifies a launch failure from the process's output, read
// once it has exited before its ready line: a port it was given was bound
// by someone else in the meantime. Every listener of the playground (SQL,
// status, PD's etcd, KV) fails with Go's net error, printed as
// "Error: ...: listen tcp 127.0.0.1:<port>: bind: address already in use"
// before the process exits 1.
func portTaken(output string) bool {
	return strings.Contains(output, inUse)
}

// inUse is how Go (syscall.EADDRINUSE) words a bind to a taken port.
const inUse = "address already in use"

// lineWith is the first line of s that contains sub.
func lineWith(s, sub string) string {
	for line := range strings.Lines(s) {
		if strings.Contains(line, sub) {
			return strings.TrimRight(line, "\n")
		}
	}
	return ""
}

// launch runs bin on ports (SQL, status, PD, KV) and dataDir and waits (up
// to 3 minutes: CI machines are slow) for its ready line. On success the
// process is stopped when the test ends; on failure it has already been
// stopped, and the error is a *launchError unless bin did not start at all.
func launch(t testing.TB, bin, dataDir string, ports []int) (*Playground, error) {
	t.Helper()
	addr := func(p int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)) }
	p := &Playground{
		SQLAddr: addr(ports[0]), StatusAddr: addr(ports[1]), PDAddr: addr(ports[2]), KVAddr: addr(ports[3]),
		t: t, exited: make(chan struct{}),
	}
	p.cmd = exec.Command(bin,
		"--data-dir", dataDir,
		"--sql-port", strconv.Itoa(ports[0]),
		"--status-port", strconv.Itoa(ports[1]),
		"--pd-port", strconv.Itoa(ports[2]),
		"--kv-port", strconv.Itoa(ports[3]),
		"--log-level", "warn",
	)
	// Its own process group, so the SIGKILL fallback reaches anything it
	// started and a Ctrl-C of `go test` does not hit it twice.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	ready := make(chan struct{})
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			if p.out.Len() < 1<<20 {
				p.out.WriteString(line + "\n")
			}
			p.mu.Unlock()
			// The playground prints its TiKV address last, once every
			// component serves.
			if !signalled && strings.HasPrefix(line, "TiKV ") {
				signalled = true
				close(ready)
			}
		}
		// A line longer than the buffer stops the scanner; keep draining so
		// the process never blocks on a full pipe.
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		_ = p.cmd.Wait()
		pw.Close()
		close(p.exited)
	}()
	var failed *launchError
	select {
	case <-ready:
	case <-p.exited:
		<-drained // the whole output, for the classification
		out := p.Output()
		failed = &launchError{reason: fmt.Sprintf("playground exited before it was ready (%v)", p.cmd.ProcessState), output: out}
		if portTaken(out) {
			failed.portTaken = true
			failed.reason += ": " + lineWith(out, inUse)
		}
	case <-time.After(3 * time.Minute):
		p.stop()
		<-drained
		failed = &launchError{reason: "playground not ready within 3m", output: p.Output()}
	}
	if failed != nil {
		return nil, failed
	}
	t.Cleanup(func() {
		if p.pd != nil {
			p.pd.Close()
		}
		p.stop()
		<-drained
		if t.Failed() {
			t.Logf("--- playground output ---\n%s", tail(p.Output(), 20000))
		}
	})
	return p, nil
}

// tail is the last n bytes of s, marked as cut when they are not all of it.
func tail(s string, n int) string {
	if len(s) > n {
		return "...\n" + s[len(s)-n:]
	}
	return s
}

// stop sends SIGTERM to the process it started (by PID) and, if it has not
// exited within a minute, SIGKILL to its process group.
func (p *Playground) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(60 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
}

// Output is what the process printed so far (its first MiB).
func (p *Playground) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// FreePorts returns n distinct loopback ports that were free a moment ago.
// Every listener stays open until all are picked: released one by one, the
// kernel may hand the same port out twice.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// DB opens a pool on the SQL port as root, closed when the test ends.
// Session variables (e.g. "time_zone": "'+08:00'", quoted as SQL) are set
// by the driver on every connection it opens, so they hold whichever pooled
// connection a statement lands on.
func (p *Playground) DB(t testing.TB, sessionVars map[string]string) *sql.DB {
	t.Helper()
	cfg := mysql.NewConfig()
	cfg.User = "root"
	cfg.Net = "tcp"
	cfg.Addr = p.SQLAddr
	cfg.Params = sessionVars
	// Temporal columns come back as TiDB's text, the form the encoder's Avro
	// strings are compared with; parseTime would turn them into time.Time
	// and lose TIME values and zero dates.
	cfg.ParseTime = false
	// Placeholders are filled in by the driver so that a query with
	// arguments still uses the text protocol: the binary protocol's
	// temporal values would be formatted by the driver, not by TiDB.
	cfg.InterpolateParams = true
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	t.Cleanup(func() { db.Close() })
	return db
}

// Conn is what Exec and Query run on: a *sql.DB, or a *sql.Conn when
// statements depend on session state (sql_mode, tidb_snapshot).
type Conn interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// Exec runs each statement in order, failing the test on the first error.
func Exec(t testing.TB, db Conn, stmts ...string) {
	t.Helper()
	for _, q := range stmts {
		if _, err := db.ExecContext(context.Background(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// Query returns a result set as strings, NULL as nil.
func Query(t testing.TB, db Conn, q string, args ...any) [][]*string {
	t.Helper()
	rows, err := db.QueryContext(context.Background(), q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]*string
	for rows.Next() {
		raw := make([]sql.RawBytes, len(cols))
		dst := make([]any, len(cols))
		for i := range raw {
			dst[i] = &raw[i]
		}
		if err := rows.Scan(dst...); err != nil {
			t.Fatal(err)
		}
		r := make([]*string, len(cols))
		for i, b := range raw {
			if b != nil {
				s := string(b)
				r[i] = &s
			}
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return out
}

// Strings is Query for result sets without NULLs.
func Strings(t testing.TB, db Conn, q string, args ...any) [][]string {
	t.Helper()
	var out [][]string
	for _, r := range Query(t, db, q, args...) {
		s := make([]string, len(r))
		for i, v := range r {
			if v == nil {
				t.Fatalf("%s: unexpected NULL in column %d", q, i)
			}
			s[i] = *v
		}
		out = append(out, s)
	}
	return out
}

// PD returns a PD client of the playground, opened once and closed when
// the test ends. Region routing goes through the unary calls: the
// playground's PD (8.5) answers the streaming router RPC UNIMPLEMENTED.
func (p *Playground) PD(ctx context.Context) (pd.Client, error) {
	p.pdOnce.Do(func() {
		p.pd, p.pdErr = pd.NewClientWithContext(context.WithoutCancel(ctx), caller.Component("tidestream-encoder-test"),
			[]string{p.PDAddr}, pd.SecurityOption{}, opt.WithEnableRouterClient(false))
	})
	return p.pd, p.pdErr
}

// CurrentTS returns a fresh TSO from PD: every transaction committed before
// the call has a smaller commit ts.
func (p *Playground) CurrentTS(ctx context.Context) (uint64, error) {
	cli, err := p.PD(ctx)
	if err != nil {
		return 0, err
	}
	phys, logical, err := cli.GetTS(ctx)
	if err != nil {
		return 0, fmt.Errorf("pgtest: get ts: %w", err)
	}
	return oracle.ComposeTS(phys, logical), nil
}

// SessionZone is the DB session variables that set the session time zone,
// a name ("Asia/Shanghai") or an offset ("+08:00").
func SessionZone(zone string) map[string]string {
	return map[string]string{"time_zone": "'" + zone + "'"}
}
