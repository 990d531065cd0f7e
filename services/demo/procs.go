package demo

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// proc is one process the demo started: its own process group, its output
// in <work>/<name>.log.
type proc struct {
	name, log string
	cmd       *exec.Cmd
	done      chan struct{}
	err       error
}

// start runs bin with args as name, output to its log file.
func (d *demo) start(name string, env []string, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(d.work, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s: log file: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	// Its own process group: Ctrl-C in the terminal reaches the demo,
	// which stops its children in order, not all at once. Should the demo
	// itself be killed, the children get SIGTERM rather than live on.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("%s: start %s: %w", name, bin, err)
	}
	p := &proc{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	d.mu.Lock()
	d.procs = append(d.procs, p)
	d.mu.Unlock()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the process group: SIGTERM, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// stopAll stops the processes in the reverse order of their start, so the
// changefeed's server goes before the Kafka and TiDB it talks to.
func (d *demo) stopAll() {
	d.mu.Lock()
	procs := d.procs
	d.procs = nil
	d.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop(10 * time.Second)
	}
}

// tail is the last n lines of a process's log.
func (p *proc) tail(n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// lastLine is the process's last non-empty output line, shortened.
func (p *proc) lastLine() string {
	l := strings.TrimSpace(p.tail(1))
	if len(l) > 100 {
		l = l[:97] + "..."
	}
	return l
}

// waitLine waits for a line of the process's output with prefix and
// returns it; it fails when the process exits first or within timeout.
func (p *proc) waitLine(ctx context.Context, prefix string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		if f, err := os.Open(p.log); err == nil {
			sc := bufio.NewScanner(f)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), prefix) {
					_ = f.Close()
					return sc.Text(), nil
				}
			}
			_ = f.Close()
		}
		if p.exited() {
			return "", fmt.Errorf("%s exited (%v) before printing %q; its output ends:\n%s", p.name, p.err, prefix, p.tail(20))
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s did not print %q within %s; its output ends:\n%s", p.name, prefix, timeout, p.tail(20))
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return "", err
		}
	}
}

// waitHTTP waits until url answers 200.
func (p *proc) waitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	hc := &http.Client{Timeout: time.Second}
	defer hc.CloseIdleConnections()
	for {
		if resp, err := hc.Get(url); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if p.exited() {
			return fmt.Errorf("%s exited (%v) before serving; its output ends:\n%s", p.name, p.err, p.tail(20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready at %s within %s; its output ends:\n%s", p.name, url, timeout, p.tail(20))
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// run runs a command to its end, output to name's log, and returns its
// error with the end of that output.
func (d *demo) run(ctx context.Context, name string, bin string, args ...string) error {
	p, err := d.start(name, nil, bin, args...)
	if err != nil {
		return err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		p.stop(5 * time.Second)
		return ctx.Err()
	}
	if p.err != nil {
		return fmt.Errorf("%s: %w; its output ends:\n%s", name, p.err, p.tail(20))
	}
	return nil
}

// freePorts reserves n distinct free loopback ports. They are released
// before the processes bind them; another program could take one in
// between, which then shows as that process failing to start.
func freePorts(n int) ([]int, error) {
	var lis []net.Listener
	defer func() {
		for _, l := range lis {
			_ = l.Close()
		}
	}()
	out := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		lis = append(lis, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
