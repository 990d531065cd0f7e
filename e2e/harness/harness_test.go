package harness

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as a fake server (see TestMain): with fakeEnv set
// it binds the addresses it is given as arguments the way `cdc` does.
const (
	fakeEnv     = "HARNESS_FAKE"      // "listen", "taken:<runs>:<addr>" or "fail"
	fakeRunsEnv = "HARNESS_FAKE_RUNS" // a file each run appends its arguments to
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeEnv); mode != "" {
		os.Exit(fakeServer(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeServer runs the fake and returns its exit code. "listen" binds every
// address and, once all are bound, serves until SIGTERM; a bind that fails
// is logged as `cdc` logs it, with exit code 1. "taken:<runs>:<addr>" first
// binds <addr> (one the test holds) in its first <runs> runs, then does what
// "listen" does. "fail" exits 1 with an error that is not about a port.
func fakeServer(mode string, addrs []string) int {
	runs := 0
	if path := os.Getenv(fakeRunsEnv); path != "" {
		prev, _ := os.ReadFile(path)
		runs = strings.Count(string(prev), "\n") + 1
		f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			fmt.Fprintln(os.Stderr, "Error:", err)
			return 1
		}
		fmt.Fprintln(f, strings.Join(addrs, " "))
		f.Close()
	}
	if rest, ok := strings.CutPrefix(mode, "taken:"); ok {
		n, addr, _ := strings.Cut(rest, ":")
		if limit, _ := strconv.Atoi(n); runs <= limit {
			addrs = append([]string{addr}, addrs...)
		}
		mode = "listen"
	}
	if mode != "listen" {
		fmt.Fprintln(os.Stderr, "Error: --pd: dial PD: context deadline exceeded")
		return 1
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	for _, a := range addrs {
		l, err := net.Listen("tcp", a)
		if err != nil {
			fmt.Fprintf(os.Stderr, "Error: --addr %s: server: listen on %s: %v\n", a, a, err)
			return 1
		}
		defer l.Close()
	}
	fmt.Println("serving")
	<-stop
	return 0
}

// fake is a Launch of the fake on two addresses, ready once the first
// accepts connections; runs lists the arguments of each run.
func fake(t *testing.T, mode string) (l Launch, runs func() []string) {
	t.Setenv(fakeEnv, mode)
	file := filepath.Join(t.TempDir(), "runs")
	t.Setenv(fakeRunsEnv, file)
	l = Launch{Name: "fake", Bin: os.Args[0], Addrs: 2,
		Args: func(addrs []string) []string { return addrs },
		Ready: func(p *Proc, addrs []string) error {
			return Await(p, 30*time.Second, "listening", func() error {
				c, err := net.DialTimeout("tcp", addrs[0], time.Second)
				if err != nil {
					return err
				}
				return c.Close()
			})
		},
	}
	return l, func() []string {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	}
}

// hold binds a loopback port for the rest of the test.
func hold(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().String()
}

// The log of a bind to an address someone holds is classified as a taken
// port, the one start failure StartOnFreePorts retries; other failures are
// not.
func TestPortTaken(t *testing.T) {
	held := hold(t)
	_, err := net.Listen("tcp", held)
	if err == nil {
		t.Fatal("bound an address that is held")
	}
	log := `{"level":"INFO","msg":"embedded etcd ready"}` + "\nError: --addr " + held + ": server: listen on " + held + ": " + err.Error() + "\n"
	if !PortTaken(log) {
		t.Errorf("not classified as a taken port: %q", log)
	}
	for _, other := range []string{
		"",
		"Error: --pd: dial PD: context deadline exceeded\n",
		"panic: runtime error: invalid memory address or nil pointer dereference\n",
		"Error: listen tcp 127.0.0.1:80: bind: permission denied\n",
	} {
		if PortTaken(other) {
			t.Errorf("classified as a taken port: %q", other)
		}
	}
}

// A port bound by someone else between picking and starting is classified
// as taken from the log of the process that exited, and retried: with a
// port held on every attempt, StartOnFreePorts gives up after three, naming
// the port. With CDC_BIN, PLAYGROUND_BIN or etcd at hand, for the real
// binaries too.
func TestLaunchReportsATakenPort(t *testing.T) {
	check := func(t *testing.T, l Launch, which int) {
		held := hold(t)
		args := l.Args
		l.Args = func(addrs []string) []string {
			addrs = append([]string(nil), addrs...)
			addrs[which] = held
			return args(addrs)
		}
		p, _, err := startOnFreePorts(t, l)
		if err == nil {
			t.Fatalf("%s (pid %d) started on %s, which someone else holds", l.Name, p.PID(), held)
		}
		if !strings.Contains(err.Error(), "on all 3 attempts, each on a taken port") {
			t.Fatalf("not classified as a taken port: %v", err)
		}
		if !strings.Contains(err.Error(), held) {
			t.Fatalf("the error does not name %s: %v", held, err)
		}
	}
	t.Run("fake", func(t *testing.T) {
		l, runs := fake(t, "listen")
		check(t, l, 1)
		if n := len(runs()); n != 3 {
			t.Fatalf("%d attempts, want 3", n)
		}
	})
	t.Run("cdc", func(t *testing.T) {
		bin := os.Getenv("CDC_BIN")
		if bin == "" {
			t.Skip("CDC_BIN is not set")
		}
		check(t, Launch{Name: "cdc", Bin: bin, Addrs: 3,
			Args: func(addrs []string) []string {
				return []string{"server", "--addr", addrs[0], "--status-addr", addrs[1],
					"--data-dir", t.TempDir(), "--pd", "http://" + addrs[2]}
			},
			Ready: Serving(60 * time.Second),
		}, 0)
	})
	t.Run("playground", func(t *testing.T) {
		bin := os.Getenv("PLAYGROUND_BIN")
		if bin == "" {
			t.Skip("PLAYGROUND_BIN is not set")
		}
		port := func(a string) string { return a[len("127.0.0.1:"):] }
		check(t, Launch{Name: "playground", Bin: bin, Addrs: 4,
			Args: func(addrs []string) []string {
				return []string{"--data-dir", t.TempDir(),
					"--sql-port", port(addrs[0]), "--status-port", port(addrs[1]),
					"--pd-port", port(addrs[2]), "--kv-port", port(addrs[3])}
			},
			Ready: func(p *Proc, addrs []string) error {
				return Await(p, 3*time.Minute, "playground SQL port", func() error {
					c, err := net.DialTimeout("tcp", addrs[0], time.Second)
					if err != nil {
						return err
					}
					return c.Close()
				})
			},
		}, 2) // PD's
	})
	t.Run("etcd", func(t *testing.T) {
		bin, err := exec.LookPath("etcd")
		if err != nil {
			t.Skip("etcd is not installed")
		}
		check(t, Launch{Name: "etcd", Bin: bin, Addrs: 2,
			Args: func(addrs []string) []string {
				client, peer := "http://"+addrs[0], "http://"+addrs[1]
				return []string{"--name", "t", "--data-dir", filepath.Join(t.TempDir(), "etcd"),
					"--listen-client-urls", client, "--advertise-client-urls", client,
					"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
					"--initial-cluster", "t=" + peer}
			},
			Ready: func(p *Proc, addrs []string) error {
				return Await(p, 30*time.Second, "etcd client port", func() error {
					c, err := net.DialTimeout("tcp", addrs[0], time.Second)
					if err != nil {
						return err
					}
					return c.Close()
				})
			},
		}, 0)
	})
}

// Launch.Env reaches the process and wins over the variable it inherits:
// the fake records its run in the file Env names, not in the one the test
// process's environment names.
func TestLaunchEnv(t *testing.T) {
	l, inherited := fake(t, "listen")
	file := filepath.Join(t.TempDir(), "runs-from-env")
	l.Env = []string{fakeRunsEnv + "=" + file}
	p, addrs, err := startOnFreePorts(t, l)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("the run was not recorded where Env says: %v", err)
	}
	if got, want := strings.TrimSpace(string(b)), strings.Join(addrs, " "); got != want {
		t.Fatalf("recorded %q, want %q", got, want)
	}
	if _, err := os.Stat(os.Getenv(fakeRunsEnv)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the inherited %s was used too (stat: %v); runs %q", fakeRunsEnv, err, inherited())
	}
}

// StartOnFreePorts retries a taken port on fresh addresses and a fresh
// command line, and retries nothing else.
func TestStartOnFreePortsRetriesOnlyATakenPort(t *testing.T) {
	t.Run("taken twice", func(t *testing.T) {
		l, runs := fake(t, "taken:2:"+hold(t))
		var dirs []string
		args := l.Args
		l.Args = func(addrs []string) []string {
			dirs = append(dirs, t.TempDir())
			return args(addrs)
		}
		p, addrs, err := startOnFreePorts(t, l)
		if err != nil {
			t.Fatal(err)
		}
		if p.Exited() || len(addrs) != 2 {
			t.Fatalf("exited %v, addresses %q", p.Exited(), addrs)
		}
		r := runs()
		if len(r) != 3 || len(dirs) != 3 || dirs[0] == dirs[1] || dirs[1] == dirs[2] {
			t.Fatalf("want 3 runs with 3 command lines made anew, got runs %q, dirs %q", r, dirs)
		}
		seen := map[string]bool{}
		for _, run := range r {
			for _, a := range strings.Fields(run) {
				if seen[a] {
					t.Fatalf("address %s used twice: %q", a, r)
				}
				seen[a] = true
			}
		}
		if err := p.Stop(10 * time.Second); err != nil {
			t.Fatalf("stop: %v", err)
		}
	})
	t.Run("other failure", func(t *testing.T) {
		l, runs := fake(t, "fail")
		_, _, err := startOnFreePorts(t, l)
		if err == nil || !strings.Contains(err.Error(), "on attempt 1 (only a taken port is retried)") ||
			!strings.Contains(err.Error(), "dial PD") {
			t.Fatalf("want a failure on attempt 1 with the log, got %v", err)
		}
		if n := len(runs()); n != 1 {
			t.Fatalf("%d attempts, want 1", n)
		}
	})
	t.Run("not ready", func(t *testing.T) {
		// A process still running when Ready gives up is not retried.
		l, runs := fake(t, "listen")
		errNotReady := errors.New("never ready")
		ready := l.Ready
		l.Ready = func(p *Proc, addrs []string) error {
			if err := ready(p, addrs); err != nil {
				return err
			}
			return errNotReady
		}
		_, _, err := startOnFreePorts(t, l)
		if !errors.Is(err, errNotReady) || !strings.Contains(err.Error(), "on attempt 1") {
			t.Fatalf("want the Ready error on attempt 1, got %v", err)
		}
		if n := len(runs()); n != 1 {
			t.Fatalf("%d attempts, want 1", n)
		}
	})
}
