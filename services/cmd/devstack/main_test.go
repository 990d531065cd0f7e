package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuffer is stderr for run: its logger writes from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestPrintsAddressesAndStopsOnSIGTERM runs main's body as the binary
// would run it: it prints the two address lines, serves them, and a
// SIGTERM to the process stops it with exit code 0.
func TestPrintsAddressesAndStopsOnSIGTERM(t *testing.T) {
	outR, outW := io.Pipe()
	stderr := &syncBuffer{}
	code := make(chan int, 1)
	go func() {
		code <- run([]string{"--kafka-port", "0", "--registry-port", "0", "--default-partitions", "2", "--log-level", "debug"}, outW, stderr)
		outW.Close()
	}()

	lines := bufio.NewScanner(outR)
	var kafka, registry string
	for _, want := range []string{"kafka ", "registry "} {
		require.True(t, lines.Scan(), "stdout ended early; stderr: %s", stderr.String())
		line := lines.Text()
		require.True(t, strings.HasPrefix(line, want), "line %q", line)
		if want == "kafka " {
			kafka = strings.TrimPrefix(line, want)
		} else {
			registry = strings.TrimPrefix(line, want)
		}
	}
	require.True(t, strings.HasPrefix(kafka, "127.0.0.1:"), kafka)
	require.True(t, strings.HasPrefix(registry, "http://127.0.0.1:"), registry)

	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(kafka, ",")...), kgo.AllowAutoTopicCreation())
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Topic: "t", Value: []byte("v")}).FirstErr())
	cl.Close()

	hc := &http.Client{}
	resp, err := hc.Get(registry + "/config")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	hc.CloseIdleConnections()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.JSONEq(t, `{"compatibilityLevel":"BACKWARD"}`, string(body))

	// run has registered its handler (it printed after doing so), so the
	// signal reaches it instead of terminating the test binary.
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGTERM))
	select {
	case c := <-code:
		require.Equal(t, 0, c, "stderr: %s", stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("devstack did not stop on SIGTERM")
	}
	require.False(t, lines.Scan(), "nothing more on stdout")
	require.Contains(t, stderr.String(), "devstack stopped")
}

func TestBadFlagsExit2(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--brokers", "0"}, "Error: devstack: Config.Brokers 0 out of range [1, 16]"},
		{[]string{"--sasl-user", "nocolon"}, `invalid argument "nocolon" for "--sasl-user" flag: credential "nocolon" is not user:password`},
		{[]string{"extra"}, `Error: devstack takes no arguments, got "extra"`},
	} {
		var stdout, stderr bytes.Buffer
		require.Equal(t, 2, run(tc.args, &stdout, &stderr), tc.args)
		require.Contains(t, stderr.String(), tc.want)
		require.Empty(t, stdout.String())
	}
}
