// Package pgharness runs deploy/playground as a child process for the
// puller's integration tests. The playground is its own module (TiDB's
// dependency set cannot share a build list with ours), so the tests talk to it
// only over the network, exactly as the puller talks to a real cluster.
//
// Every port is a loopback port picked at run time, the data dir is the test's
// temp dir, and the process is stopped by PID when the test ends.
package pgharness

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // the playground's SQL port speaks MySQL
)

const (
	// readyTimeout bounds the wait for the ready line. A warm start takes
	// about 2 s; the margin is for a loaded CI machine.
	readyTimeout = 3 * time.Minute
	// stopTimeout bounds a clean shutdown after SIGTERM before SIGKILL.
	stopTimeout = 60 * time.Second
	// maxOutput keeps the tail of the process output for failure reports
	// without letting a chatty TiDB log grow the test's memory.
	maxOutput = 4 << 20
)

// Playground is one running playground process.
type Playground struct {
	t       testing.TB
	bin     string
	dataDir string
	args    []string
	ports   [4]int // sql, status, pd, kv

	db *sql.DB

	mu   sync.Mutex
	out  []byte
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been waited for
}

// Start builds (once per test process) or locates the playground binary,
// starts it on fresh loopback ports with t.TempDir() as its data dir and
// extraArgs appended (e.g. "--resolved-ts-interval", "200ms"), and waits for
// its ready line. The process is stopped when t ends; its output is logged if
// t failed.
func Start(t testing.TB, extraArgs ...string) *Playground {
	t.Helper()
	p := &Playground{t: t, bin: binary(t), dataDir: t.TempDir(), args: extraArgs}
	p.ports = freePorts(t)
	t.Cleanup(func() {
		if p.db != nil {
			_ = p.db.Close()
		}
		if err := p.Stop(); err != nil {
			t.Errorf("pgharness: stop: %v", err)
		}
		if t.Failed() {
			t.Logf("--- playground output (tail) ---\n%s", p.output())
		}
	})
	p.start()
	return p
}

// PDAddr is the PD endpoint (host:port) for pd client / client-go.
func (p *Playground) PDAddr() string { return addr(p.ports[2]) }

// KVAddr is the TiKV endpoint: KV RPCs and ChangeData.
func (p *Playground) KVAddr() string { return addr(p.ports[3]) }

// SQLAddr is the MySQL protocol endpoint of the embedded TiDB.
func (p *Playground) SQLAddr() string { return addr(p.ports[0]) }

// StatusURL is the base URL of TiDB's status port, which also serves the
// playground's /fault/ and /cdc/ endpoints.
func (p *Playground) StatusURL() string { return "http://" + addr(p.ports[1]) }

// DB returns a connection pool to the SQL port as root, with no default
// database. It is shared by callers and closed when the test ends; it
// reconnects by itself after Restart.
func (p *Playground) DB() *sql.DB {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.db == nil {
		db, err := sql.Open("mysql", "root@tcp("+p.SQLAddr()+")/")
		if err != nil {
			p.t.Fatalf("pgharness: open sql: %v", err)
		}
		p.db = db
	}
	return p.db
}

// Fault POSTs to a fault endpoint, e.g. Fault("/fault/split",
// "table=104&handle=50", nil), and decodes the JSON answer into out when out
// is not nil. A non-200 answer is an error carrying the body.
func (p *Playground) Fault(path, query string, out any) error {
	u := p.StatusURL() + path
	if query != "" {
		u += "?" + query
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("pgharness: POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("pgharness: POST %s: read body: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pgharness: POST %s: %s: %s", path, resp.Status, body)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("pgharness: POST %s: decode %q: %w", path, body, err)
	}
	return nil
}

// Stop sends SIGTERM and waits for a clean exit; after stopTimeout it kills
// the whole process group. Stopping a stopped playground is a no-op.
func (p *Playground) Stop() error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return nil
	case <-time.After(stopTimeout):
		// Negative PID: the group made by Setpgid, so nothing the
		// playground started outlives it.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return fmt.Errorf("pgharness: playground pid %d ignored SIGTERM for %v, killed", cmd.Process.Pid, stopTimeout)
	}
}

// Restart stops the playground and starts it again on the same ports and
// data dir; tables, rows, splits, the cluster id and the TSO survive.
func (p *Playground) Restart() {
	p.t.Helper()
	if err := p.Stop(); err != nil {
		p.t.Fatal(err)
	}
	p.start()
}

func (p *Playground) start() {
	p.t.Helper()
	args := []string{
		"--data-dir", p.dataDir,
		"--sql-port", strconv.Itoa(p.ports[0]),
		"--status-port", strconv.Itoa(p.ports[1]),
		"--pd-port", strconv.Itoa(p.ports[2]),
		"--kv-port", strconv.Itoa(p.ports[3]),
	}
	cmd := exec.Command(p.bin, append(args, p.args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("pgharness: start %s: %v", p.bin, err)
	}
	done := make(chan struct{})
	var waitErr error
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()

	ready := make(chan struct{})
	go p.collect(pr, ready)
	go func() {
		waitErr = cmd.Wait()
		pw.Close()
		close(done)
	}()

	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case <-ready:
	case <-done:
		p.t.Fatalf("pgharness: playground exited before ready: %v\n%s", waitErr, p.output())
	case <-timer.C:
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		p.t.Fatalf("pgharness: playground not ready within %v\n%s", readyTimeout, p.output())
	}
}

// collect keeps the output's tail and signals ready on the line the
// playground prints last at startup.
func (p *Playground) collect(r io.Reader, ready chan<- struct{}) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	signalled := false
	for sc.Scan() {
		line := sc.Bytes()
		p.mu.Lock()
		p.out = append(p.out, line...)
		p.out = append(p.out, '\n')
		if len(p.out) > maxOutput {
			p.out = append(p.out[:0], p.out[len(p.out)-maxOutput/2:]...)
		}
		p.mu.Unlock()
		if !signalled && strings.HasPrefix(string(line), "TiKV ") {
			signalled = true
			close(ready)
		}
	}
	// A line over 1 MiB stops the scanner; keep draining so the child
	// never blocks on a full pipe.
	_, _ = io.Copy(io.Discard, r)
}

func (p *Playground) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return string(p.out)
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// freePorts holds four listeners open together so the ports are distinct,
// then releases them for the playground. Another process could take one in
// between; the playground then fails to start and the test says so.
func freePorts(t testing.TB) [4]int {
	t.Helper()
	var ports [4]int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("pgharness: pick port: %v", err)
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}

// builder builds the binary at most once per test process.
type builder struct {
	once sync.Once
	path string
	err  error
}

// build is the one process-wide value: a test binary that starts several
// playgrounds must not link TiDB several times.
var build builder

// binary returns $PLAYGROUND_BIN, or the playground built from this
// repository's deploy/playground.
func binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("PLAYGROUND_BIN"); p != "" {
		return p
	}
	build.once.Do(func() { build.path, build.err = buildPlayground() })
	if build.err != nil {
		t.Fatalf("pgharness: %v", build.err)
	}
	return build.path
}

// buildPlayground runs `go build` in deploy/playground with GOWORK=off
// (its dependency set is TiDB's, not the workspace's). The result goes to one
// well-known path under the temp dir, renamed into place atomically, so
// concurrent test processes never run a half-written file and repeated runs
// leave one binary behind rather than one per process.
func buildPlayground() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	outDir := filepath.Join(os.TempDir(), "tidestream-pgharness")
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(outDir, "build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "playground")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = filepath.Join(root, "deploy", "playground")
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build playground in %s: %w\n%s", cmd.Dir, err, out)
	}
	final := filepath.Join(outDir, "playground")
	if err := os.Rename(bin, final); err != nil {
		return "", err
	}
	return final, nil
}

// repoRoot walks up from the working directory (a package dir under
// puller/ when run by go test) to the folder holding deploy/playground.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "deploy", "playground", "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("deploy/playground not found above the working directory; set PLAYGROUND_BIN")
		}
		dir = parent
	}
}
