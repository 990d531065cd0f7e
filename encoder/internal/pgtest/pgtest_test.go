package pgtest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// The test binary doubles as a fake playground (see TestMain): with
// fakeEnv set it takes the playground's flags, binds its ports the way the
// playground does and prints what the playground prints.
const (
	fakeEnv     = "PGTEST_FAKE_PLAYGROUND" // "listen", "taken:<runs>:<port>" or "fail"
	fakeRunsEnv = "PGTEST_FAKE_RUNS"       // a file each run appends its --data-dir and ports to
)

// fakePlayground runs the fake and returns its exit code. "listen" binds
// the four ports and, once all are bound, prints the ready line and serves
// until SIGTERM; a bind that fails is printed as the playground prints it
// ("Error: ...") with exit code 1. "taken:<runs>:<port>" first binds <port>
// (one the test holds) in its first <runs> runs, then does what "listen"
// does. "fail" exits 1 with an error that is not about a port.
func fakePlayground(mode string) int {
	flags := map[string]string{}
	for i := 0; i+1 < len(os.Args); i++ {
		if strings.HasPrefix(os.Args[i], "--") {
			flags[os.Args[i]] = os.Args[i+1]
		}
	}
	ports := []string{flags["--sql-port"], flags["--status-port"], flags["--pd-port"], flags["--kv-port"]}
	runs := 0
	if path := os.Getenv(fakeRunsEnv); path != "" {
		prev, _ := os.ReadFile(path)
		runs = strings.Count(string(prev), "\n") + 1
		f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			fmt.Fprintln(os.Stderr, "Error:", err)
			return 1
		}
		fmt.Fprintln(f, flags["--data-dir"], strings.Join(ports, " "))
		f.Close()
	}
	if rest, ok := strings.CutPrefix(mode, "taken:"); ok {
		n, port, _ := strings.Cut(rest, ":")
		if limit, _ := strconv.Atoi(n); runs <= limit {
			ports = append([]string{port}, ports...)
		}
		mode = "listen"
	}
	if mode != "listen" {
		fmt.Fprintln(os.Stderr, "Error: tidb: bootstrap: context deadline exceeded")
		return 1
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	for _, port := range ports {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
		if err != nil {
			fmt.Fprintln(os.Stderr, "Error: kvserver: listen on 127.0.0.1:"+port+":", err)
			return 1
		}
		defer l.Close()
	}
	fmt.Println("TiKV   127.0.0.1:" + ports[len(ports)-1])
	<-stop
	return 0
}

func fake(t *testing.T, mode string) (bin, runsFile string) {
	t.Setenv(fakeEnv, mode)
	runsFile = t.TempDir() + "/runs"
	t.Setenv(fakeRunsEnv, runsFile)
	return os.Args[0], runsFile
}

// runs is what each run of the fake recorded: its data dir and ports.
func runs(t *testing.T, file string) []string {
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	return strings.Split(strings.TrimRight(string(b), "\n"), "\n")
}

func hold(t *testing.T) (net.Listener, int) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	return l, l.Addr().(*net.TCPAddr).Port
}

// The output of a bind to a port someone holds is classified as a taken
// port, the one failure start retries; other failures are not.
func TestPortTaken(t *testing.T) {
	_, held := hold(t)
	_, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(held)))
	require.Error(t, err, "bound a port that is held")
	out := "[INFO] starting\nError: pdserver: start etcd on 127.0.0.1:" + strconv.Itoa(held) + ": " + err.Error() + "\n"
	require.True(t, portTaken(out), "not classified as a taken port: %q", out)

	for _, other := range []string{
		"",
		"Error: tidb: bootstrap: context deadline exceeded\n",
		"panic: runtime error: invalid memory address or nil pointer dereference\n",
		"Error: listen tcp 127.0.0.1:4000: bind: permission denied\n",
	} {
		require.False(t, portTaken(other), "classified as a taken port: %q", other)
	}
}

// A port bound by someone else between picking and starting is reported as
// a taken port by launch, from the output of the process that exited; with
// PLAYGROUND_BIN set, by the real playground too.
func TestLaunchReportsATakenPort(t *testing.T) {
	check := func(t *testing.T, bin string, which int) {
		_, held := hold(t)
		ports := FreePorts(t, 4)
		ports[which] = held
		p, err := launch(t, bin, t.TempDir(), ports)
		require.Error(t, err, "started on a port someone else holds")
		require.Nil(t, p)
		var le *launchError
		require.True(t, errors.As(err, &le), "%v", err)
		require.True(t, le.portTaken, "not classified as a taken port: %v", err)
		require.Contains(t, err.Error(), strconv.Itoa(held))
	}
	t.Run("fake", func(t *testing.T) {
		bin, _ := fake(t, "listen")
		for which := range 4 {
			check(t, bin, which)
		}
		// On free ports the fake starts: the check above can fail.
		p, err := launch(t, bin, t.TempDir(), FreePorts(t, 4))
		require.NoError(t, err)
		require.NotNil(t, p)
	})
	t.Run("playground", func(t *testing.T) {
		bin := os.Getenv("PLAYGROUND_BIN")
		if bin == "" {
			t.Skip("PLAYGROUND_BIN is not set")
		}
		for which := range 4 {
			check(t, bin, which)
		}
	})
}

// start retries a taken port on fresh ports and a fresh data dir, at most
// three launches in all, and retries nothing else.
func TestStartRetriesOnlyATakenPort(t *testing.T) {
	t.Run("taken twice", func(t *testing.T) {
		_, held := hold(t)
		bin, file := fake(t, "taken:2:"+strconv.Itoa(held))
		p, err := start(t, bin)
		require.NoError(t, err)
		require.NotNil(t, p)
		r := runs(t, file)
		require.Len(t, r, 3)
		seen := map[string]bool{}
		for _, run := range r {
			for _, f := range strings.Fields(run) {
				require.False(t, seen[f], "data dir or port %s used twice: %q", f, r)
				seen[f] = true
			}
		}
	})
	t.Run("taken every time", func(t *testing.T) {
		_, held := hold(t)
		bin, file := fake(t, "taken:9:"+strconv.Itoa(held))
		_, err := start(t, bin)
		require.Error(t, err)
		require.Contains(t, err.Error(), "all 3 attempts")
		require.Contains(t, err.Error(), "127.0.0.1:"+strconv.Itoa(held)+": bind: address already in use", "the last output")
		require.Len(t, runs(t, file), 3)
	})
	t.Run("other failure", func(t *testing.T) {
		bin, file := fake(t, "fail")
		_, err := start(t, bin)
		require.Error(t, err)
		require.Contains(t, err.Error(), "attempt 1")
		require.Contains(t, err.Error(), "context deadline exceeded", "the output")
		require.Len(t, runs(t, file), 1)
	})
}
