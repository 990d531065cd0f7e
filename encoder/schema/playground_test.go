package schema

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// playground is a deploy/playground process (TiDB + PD + a TiKV-compatible
// KV endpoint) on loopback ports picked at run time, stopped by PID when the
// test ends. Same pattern as the puller's pgharness, which this module cannot
// import (it is internal to the puller module).
type playground struct {
	sqlAddr, pdAddr, kvAddr string
}

func startPlayground(t *testing.T) *playground {
	t.Helper()
	bin := os.Getenv("PLAYGROUND_BIN")
	if bin == "" {
		t.Skip("PLAYGROUND_BIN is unset: set it to a built deploy/playground binary (e.g. bin/playground) to run the snapshot integration test")
	}
	ports := freePorts(t, 4)
	addr := func(p int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)) }
	cmd := exec.Command(bin,
		"--data-dir", t.TempDir(),
		"--sql-port", strconv.Itoa(ports[0]),
		"--status-port", strconv.Itoa(ports[1]),
		"--pd-port", strconv.Itoa(ports[2]),
		"--kv-port", strconv.Itoa(ports[3]),
		"--log-level", "warn",
	)
	// Own process group, so a SIGKILL fallback reaches anything it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	pw.Close()

	var (
		mu  sync.Mutex
		out bytes.Buffer
	)
	ready := make(chan struct{})
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			mu.Lock()
			if out.Len() < 1<<20 {
				out.WriteString(line + "\n")
			}
			mu.Unlock()
			// The playground prints its TiKV address last when ready.
			if !signalled && strings.HasPrefix(line, "TiKV ") {
				signalled = true
				close(ready)
			}
		}
	}()
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()

	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		pr.Close()
		<-drained
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			mu.Lock()
			t.Logf("--- playground output ---\n%s", out.String())
			mu.Unlock()
		}
	})
	select {
	case <-ready:
	case <-exited:
		t.Fatal("playground exited before it was ready")
	case <-time.After(3 * time.Minute):
		t.Fatal("playground not ready within 3m")
	}
	return &playground{sqlAddr: addr(ports[0]), pdAddr: addr(ports[2]), kvAddr: addr(ports[3])}
}

// freePorts holds n listeners open together so the ports are distinct, then
// releases them for the playground.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
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
