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
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// FreeAddr returns 127.0.0.1:<port> with a port that was free a moment ago.
// The process under test binds it right after; the short race with another
// process on the machine is accepted.
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
	Name    string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// Start runs bin with args, its stdout and stderr appended to a log file in
// the test's temp dir, and registers a cleanup that stops it.
func Start(t testing.TB, name, bin string, args ...string) *Proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("%s: log file: %v", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: a kill reaches only what this test started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		t.Fatalf("%s: start %s: %v", name, bin, err)
	}
	p := &Proc{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		_ = logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("--- log of %s (pid %d) ---\n%s", name, cmd.Process.Pid, p.Log())
		}
	})
	return p
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
	conn := Dial(t, addr)
	hc := healthpb.NewHealthClient(conn)
	Eventually(t, timeout, p.Name+" serving on "+addr, func() error {
		if p.Exited() {
			t.Fatalf("%s exited before serving: %v\n%s", p.Name, p.waitErr, p.Log())
		}
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

// StartEtcd starts `etcd` on loopback ports chosen now, with its data in a
// temp dir, and waits until it answers.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("etcd not installed (make deps installs Debian's etcd-server): %v", err)
	}
	client := "http://" + FreeAddr(t)
	peer := "http://" + FreeAddr(t)
	p := Start(t, "etcd", bin,
		"--name", "e2e",
		"--data-dir", filepath.Join(t.TempDir(), "etcd"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "e2e="+peer,
		"--log-level", "warn")
	e := &Etcd{Proc: p, Endpoint: client}
	Eventually(t, 30*time.Second, "etcd healthy", func() error {
		if p.Exited() {
			t.Fatalf("etcd exited: %s", p.Log())
		}
		conn, err := net.DialTimeout("tcp", client[len("http://"):], time.Second)
		if err != nil {
			return err
		}
		return conn.Close()
	})
	return e
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
