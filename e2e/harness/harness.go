// Package harness starts the real pieces of an end-to-end test as processes
// on loopback ports chosen at run time — the `cdc` binary, an external etcd —
// and stops every one of them by PID when the test ends. It asserts on state
// by polling with deadlines, never on sleeps.
package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// FreeAddr returns 127.0.0.1:<port> with a port that was free a moment ago.
// The process under test binds it right after, but another process may
// take it in between: StartOnFreePorts picks its addresses with FreeAddrs
// and retries that failure, so prefer it for a process that listens.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pick a port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// FreeAddrs returns n distinct loopback addresses that were free a moment
// ago, for one process's ports: every listener stays open until all are
// picked, so the kernel cannot hand the same port out twice.
func FreeAddrs(t testing.TB, n int) []string {
	t.Helper()
	addrs := make([]string, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("pick a port: %v", err)
		}
		defer l.Close()
		addrs = append(addrs, l.Addr().String())
	}
	return addrs
}

// Proc is a process started by a test.
type Proc struct {
	Name        string
	LogPath     string
	cmd         *exec.Cmd
	done        chan struct{}
	waitErr     error
	startFailed bool // a failed StartOnFreePorts attempt: its log is in the test's messages already
}

// Start runs bin with args, its stdout and stderr appended to a log file in
// the test's temp dir, and registers a cleanup that stops it.
func Start(t testing.TB, name, bin string, args ...string) *Proc {
	t.Helper()
	p, err := start(t, name, nil, bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// start is Start returning its error; env, "KEY=value" entries, is added
// to the test process's environment, a later entry winning over the
// inherited one.
func start(t testing.TB, name string, env []string, bin string, args ...string) (*Proc, error) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%s: log file: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: a kill reaches only what this test started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("%s: start %s: %w", name, bin, err)
	}
	p := &Proc{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		_ = logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() && !p.startFailed {
			t.Logf("--- log of %s (pid %d) ---\n%s", name, cmd.Process.Pid, p.Log())
		}
	})
	return p, nil
}

// Launch is a process that listens on loopback addresses picked for it.
type Launch struct {
	Name, Bin string
	// Addrs is how many loopback addresses (127.0.0.1:<port>) to pick.
	Addrs int
	// Args is the command line on the picked addresses. It is called once
	// per attempt, so a data dir it makes with t.TempDir is fresh each time.
	Args func(addrs []string) []string
	// Env is added to the environment the process inherits from the
	// test, as "KEY=value" entries; an entry overrides an inherited
	// variable of the same name (SSL_CERT_FILE, to make a test CA one of
	// Go's system roots). Nil inherits the environment unchanged.
	Env []string
	// Ready waits until the process serves (Serving, Await, AwaitServing)
	// and returns an error if it exits first or does not serve in time.
	Ready func(p *Proc, addrs []string) error
}

// startAttempts bounds the launches StartOnFreePorts makes when a port is
// taken.
const startAttempts = 3

// StartOnFreePorts picks l.Addrs loopback addresses, starts the process on
// them as Start does and waits until l.Ready says it serves. It returns the
// process and its addresses.
//
// The addresses are free when picked but released before the process binds
// them, and tests run as parallel processes that pick ports too, so one may
// be taken in between. That failure alone, a process that exited before it
// was ready with PortTaken in its log, is retried on fresh addresses with a
// fresh command line (l.Args is called again), at most 3 attempts in all.
// Any other failure fails the test at once.
func StartOnFreePorts(t testing.TB, l Launch) (*Proc, []string) {
	t.Helper()
	p, addrs, err := startOnFreePorts(t, l)
	if err != nil {
		t.Fatal(err)
	}
	return p, addrs
}

func startOnFreePorts(t testing.TB, l Launch) (*Proc, []string, error) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		addrs := FreeAddrs(t, l.Addrs)
		p, err := start(t, l.Name, l.Env, l.Bin, l.Args(addrs)...)
		if err != nil {
			return nil, nil, err
		}
		err = l.Ready(p, addrs)
		if err == nil {
			return p, addrs, nil
		}
		exited := p.Exited()
		p.Kill()
		p.startFailed = true
		log := p.Log()
		switch {
		case !exited || !PortTaken(log):
			return nil, nil, fmt.Errorf("%s (pid %d) failed to start on attempt %d (only a taken port is retried): %w\n--- its log ---\n%s",
				l.Name, p.PID(), attempt, err, tail(log, 20000))
		case attempt == startAttempts:
			return nil, nil, fmt.Errorf("%s failed to start on all %d attempts, each on a taken port; the last (pid %d): %w\n--- its log ---\n%s",
				l.Name, attempt, p.PID(), err, tail(log, 20000))
		}
		t.Logf("%s: start attempt %d of %d: %s; retrying on other ports", l.Name, attempt, startAttempts, lineWith(log, inUse))
	}
}

// PortTaken classifies a start failure by the log of the process, once it
// has exited before it was ready: one of the addresses it was given was
// bound by someone else in the meantime. Go's listeners (`cdc`, the
// playground, etcd) all fail with the same net error,
// "listen tcp 127.0.0.1:<port>: bind: address already in use", and the
// process logs it and exits.
func PortTaken(log string) bool {
	return strings.Contains(log, inUse)
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

// tail is the last n bytes of s, marked as cut when they are not all of it.
func tail(s string, n int) string {
	if len(s) > n {
		return "...\n" + s[len(s)-n:]
	}
	return s
}

// PID of the process.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Log returns what the process has written so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM and waits up to timeout for a graceful exit, then
// kills. It returns the exit error (nil for exit status 0).
func (p *Proc) Stop(timeout time.Duration) error {
	if p.Exited() {
		return p.waitErr
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.waitErr
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("%s did not exit within %s of SIGTERM", p.Name, timeout)
	}
}

// Signal sends sig to the process (not its group).
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Wait waits up to timeout for the process to exit and returns its exit
// error (nil for exit status 0).
func (p *Proc) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.waitErr
	case <-time.After(timeout):
		return fmt.Errorf("%s did not exit within %s", p.Name, timeout)
	}
}

// Kill sends SIGKILL (kill -9) to the process and waits for it.
func (p *Proc) Kill() {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Eventually polls cond every 50 ms until it returns nil or timeout passes,
// then fails the test with the last error.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if last = cond(); last == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within %s: %v", what, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Dial returns a gRPC client connection to addr, closed with the test.
func Dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// WaitServing polls the standard gRPC health service at addr until it
// reports SERVING; it fails the test if p exits first.
func WaitServing(t testing.TB, p *Proc, addr string, timeout time.Duration) {
	t.Helper()
	if err := AwaitServing(p, addr, timeout); err != nil {
		t.Fatal(err)
	}
}

// Await polls cond every 50 ms until it returns nil. It returns an error if
// p exits first or timeout passes.
func Await(p *Proc, timeout time.Duration, what string, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		if p.Exited() {
			return fmt.Errorf("%s exited before %s: %v", p.Name, what, p.waitErr)
		}
		last := cond()
		if last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not true within %s: %v", what, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// AwaitServing polls the standard gRPC health service at addr until it
// reports SERVING. It returns an error if p exits first or timeout passes.
func AwaitServing(p *Proc, addr string, timeout time.Duration) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	return Await(p, timeout, p.Name+" serving on "+addr, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if resp.Status != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("status %s", resp.Status)
		}
		return nil
	})
}

// Serving is a Launch.Ready for a gRPC server on the first address: it
// waits up to timeout for AwaitServing.
func Serving(timeout time.Duration) func(p *Proc, addrs []string) error {
	return func(p *Proc, addrs []string) error { return AwaitServing(p, addrs[0], timeout) }
}

// Result is the outcome of a command run to completion.
type Result struct {
	Stdout, Stderr string
	ExitCode       int
}

// Run runs bin with args to completion (bounded by timeout) with stdin
// input.
func Run(t testing.TB, timeout time.Duration, stdin string, bin string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = bytes.NewBufferString(stdin)
	err := cmd.Run()
	res := Result{Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.ExitCode = ee.ExitCode()
	default:
		t.Fatalf("run %s %v: %v", bin, args, err)
	}
	return res
}

// Etcd is an external etcd server process (Debian's etcd-server).
type Etcd struct {
	*Proc
	Endpoint string
}

// StartEtcd starts `etcd` on loopback ports chosen now (StartOnFreePorts),
// with its data in a temp dir, and waits until it answers.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("etcd not installed (make deps installs Debian's etcd-server): %v", err)
	}
	p, addrs := StartOnFreePorts(t, Launch{Name: "etcd", Bin: bin, Addrs: 2,
		Args: func(addrs []string) []string {
			client, peer := "http://"+addrs[0], "http://"+addrs[1]
			return []string{"--name", "e2e",
				"--data-dir", filepath.Join(t.TempDir(), "etcd"),
				"--listen-client-urls", client, "--advertise-client-urls", client,
				"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
				"--initial-cluster", "e2e=" + peer,
				"--log-level", "warn"}
		},
		Ready: func(p *Proc, addrs []string) error {
			return Await(p, 30*time.Second, "etcd healthy", func() error {
				conn, err := net.DialTimeout("tcp", addrs[0], time.Second)
				if err != nil {
					return err
				}
				return conn.Close()
			})
		},
	})
	return &Etcd{Proc: p, Endpoint: "http://" + addrs[0]}
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// CDC returns the path of the `cdc` binary: $CDC_BIN when set (make e2e
// builds it once), otherwise a build into a temp dir shared by the tests of
// this package run.
func CDC(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("CDC_BIN"); p != "" {
		return p
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tidestream-e2e-bin")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "cdc")
		cmd := exec.Command("go", "build", "-o", buildPath, "github.com/tidestream/tidestream/services/cmd/cdc")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build cdc: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// Itoa is strconv.Itoa, for building argument lists.
func Itoa(i int) string { return strconv.Itoa(i) }
