// Package pgtest runs the playground binary as a process for tests: on
// loopback ports picked at run time, waiting for its ready line, stopping it by
// PID (SIGTERM, then SIGKILL) when the test ends. It also drives the fault API.
package pgtest

import (
	"bufio"
	"bytes"
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

	_ "github.com/go-sql-driver/mysql" // SQL port
)

// Binary returns the playground binary: $PLAYGROUND_BIN, or one built once
// per test process into dir.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("PLAYGROUND_BIN"); p != "" {
		return p
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "playground-bin-")
		if err != nil {
			buildErr = err
			return
		}
		bin := filepath.Join(dir, "playground")
		cmd := exec.Command("go", "build", "-o", bin, "github.com/tidestream/tidestream/deploy/playground")
		cmd.Env = append(os.Environ(), "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build playground: %v\n%s", err, out)
			return
		}
		builtBin = bin
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// FreePorts returns n distinct loopback ports that were free a moment ago.
// Every listener stays open until all are picked: closed one by one, the
// kernel may hand the same port out twice (PD's and the status port once
// collided).
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

// Playground is a running playground process.
type Playground struct {
	t                                   testing.TB
	DataDir                             string
	SQLPort, StatusPort, PDPort, KVPort int
	Args                                []string
	ReadyIn                             time.Duration // wall time from start to the ready line

	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	mu      sync.Mutex
	out     bytes.Buffer
}

// Options tunes Start.
type Options struct {
	DataDir string   // "" = a new temp dir
	Args    []string // extra flags
}

// Start runs a playground and waits (up to 3 minutes: a cold start compiles
// nothing, but CI machines are slow) for its ready line.
func Start(t testing.TB, o Options) *Playground {
	t.Helper()
	p := &Playground{t: t, DataDir: o.DataDir, Args: o.Args}
	bin := Binary(t)
	// The ports are free when picked but released before the child binds
	// them, and parallel test processes pick ports too: one may take a port
	// in between. Only that case is retried, on fresh ports.
	for attempt := 1; ; attempt++ {
		if o.DataDir == "" {
			p.DataDir = t.TempDir() // nothing of a failed attempt carries over
		}
		ports := FreePorts(t, 4)
		p.SQLPort, p.StatusPort, p.PDPort, p.KVPort = ports[0], ports[1], ports[2], ports[3]
		err := p.launch(bin)
		if err == nil {
			break
		}
		if !errors.Is(err, errPortTaken) || attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("playground start %d: %v; retrying on other ports", attempt, err)
		p.mu.Lock()
		p.out.Reset()
		p.mu.Unlock()
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			out := p.Output()
			if len(out) > 20000 {
				out = "...\n" + out[len(out)-20000:]
			}
			t.Logf("--- playground output ---\n%s", out)
		}
	})
	return p
}

// Restart stops the process (SIGTERM) and starts it again on the same ports
// and data dir.
func (p *Playground) Restart() {
	p.t.Helper()
	if err := p.Stop(); err != nil {
		p.t.Fatalf("stop before restart: %v", err)
	}
	p.start(Binary(p.t))
}

func (p *Playground) start(bin string) {
	p.t.Helper()
	if err := p.launch(bin); err != nil {
		p.t.Fatal(err)
	}
}

// errPortTaken: the process exited before ready because a port it was
// given was bound by someone else meanwhile.
var errPortTaken = errors.New("a port was taken before the playground bound it")

// launch starts the process and waits for its ready line.
func (p *Playground) launch(bin string) error {
	args := []string{
		"--data-dir", p.DataDir,
		"--sql-port", strconv.Itoa(p.SQLPort), "--status-port", strconv.Itoa(p.StatusPort),
		"--pd-port", strconv.Itoa(p.PDPort), "--kv-port", strconv.Itoa(p.KVPort),
	}
	args = append(args, p.Args...)
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	cmd.Stderr = pw
	began := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start playground: %w", err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.out.WriteString(line + "\n")
			p.mu.Unlock()
			if strings.HasPrefix(line, "TiKV ") {
				once.Do(func() { close(ready) })
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		p.waitErr = cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	select {
	case <-ready:
		p.ReadyIn = time.Since(began)
		return nil
	case <-p.done:
		out := p.Output()
		if strings.Contains(out, "address already in use") {
			return fmt.Errorf("%w: %v", errPortTaken, lastLine(out))
		}
		return fmt.Errorf("playground exited before ready: %v\n%s", p.waitErr, out)
	case <-time.After(3 * time.Minute):
		p.Kill()
		return fmt.Errorf("playground not ready in 3m\n%s", p.Output())
	}
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// Output is everything the process printed so far.
func (p *Playground) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Stop sends SIGTERM and waits up to 60 s for a clean exit.
func (p *Playground) Stop() error {
	if p.cmd == nil {
		return nil
	}
	select {
	case <-p.done:
		return p.waitErr
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.waitErr
	case <-time.After(60 * time.Second):
		p.Kill()
		return fmt.Errorf("playground did not exit within 60s of SIGTERM")
	}
}

// Kill stops the process group at once (cleanup path).
func (p *Playground) Kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Addresses.
func (p *Playground) SQLAddr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.SQLPort)) }
func (p *Playground) PDAddr() string  { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.PDPort)) }
func (p *Playground) KVAddr() string  { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.KVPort)) }
func (p *Playground) StatusURL() string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(p.StatusPort))
}

// DB opens a MySQL connection pool to the SQL port (database db, may be "").
func (p *Playground) DB(db string) *sql.DB {
	p.t.Helper()
	d, err := sql.Open("mysql", "root@tcp("+p.SQLAddr()+")/"+db+"?parseTime=true")
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { d.Close() })
	return d
}

// Fault POSTs to a fault endpoint (path like "/fault/split", query without
// "?") and decodes the JSON answer into out (may be nil).
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
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s: %s", path, resp.Status, body)
	}
	if out != nil {
		return json.Unmarshal(body, out)
	}
	return nil
}

// Get GETs a status path and decodes JSON into out.
func (p *Playground) Get(path string, out any) error {
	resp, err := http.Get(p.StatusURL() + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return json.Unmarshal(body, out)
}

// Eventually polls cond until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
