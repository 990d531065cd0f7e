package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tidestream/tidestream/coordinator/upstream/pdfake"
	"github.com/tidestream/tidestream/e2e/harness"
)

// The seed guide's secrets: none of them may appear in any output.
const (
	kafkaPassword = "kafka-Secret+/Pw"
	srSecret      = "sr+Secret/Value=="
)

var srSecretEncoded = strings.NewReplacer("+", "%2B", "/", "%2F", "=", "%3D").Replace(srSecret)

const changefeedConf = `[sink]
dispatchers = [{matcher = ['*.*'], topic = "tidb_{schema}_{table}", partition="index-value"}]
`

type server struct {
	proc    *harness.Proc
	addr    string
	dataDir string
}

func startPD(t *testing.T) *pdfake.Server {
	pd, err := pdfake.Start(context.Background(), pdfake.Options{})
	require.NoError(t, err)
	t.Cleanup(pd.Stop)
	return pd
}

// startServer runs `cdc server` on embedded etcd in dataDir, or in a new
// temp dir when dataDir is "" (a new one for each start attempt, see
// harness.StartOnFreePorts; a restart on a given dataDir reuses it).
func startServer(t *testing.T, name, dataDir, pdURL string) *server {
	t.Helper()
	dir := dataDir
	p, addrs := harness.StartOnFreePorts(t, harness.Launch{Name: name, Bin: harness.CDC(t), Addrs: 2,
		Args: func(addrs []string) []string {
			if dataDir == "" {
				dir = t.TempDir()
			}
			return []string{"server", "--addr", addrs[0], "--status-addr", addrs[1],
				"--data-dir", dir, "--pd", pdURL, "--log-level", "debug"}
		},
		Ready: harness.Serving(60 * time.Second),
	})
	return &server{proc: p, addr: addrs[0], dataDir: dir}
}

func (s *server) cli(t *testing.T, args ...string) harness.Result {
	t.Helper()
	full := append([]string{"cli", "changefeed"}, args...)
	full = append(full, "--server=http://"+s.addr)
	return harness.Run(t, 90*time.Second, "", harness.CDC(t), full...)
}

type listEntry struct {
	ID        string `json:"id"`
	Namespace string `json:"namespace"`
	Summary   struct {
		State      string          `json:"state"`
		TSO        uint64          `json:"tso"`
		Checkpoint string          `json:"checkpoint"`
		Error      json.RawMessage `json:"error"`
	} `json:"summary"`
}

func (s *server) list(t *testing.T) []listEntry {
	t.Helper()
	r := s.cli(t, "list")
	require.Equal(t, 0, r.ExitCode, r.Stderr)
	var out []listEntry
	require.NoError(t, json.Unmarshal([]byte(r.Stdout), &out), r.Stdout)
	return out
}

func (s *server) state(t *testing.T, id string) string {
	t.Helper()
	r := s.cli(t, "query", "-c", id, "-s")
	require.Equal(t, 0, r.ExitCode, r.Stderr)
	var q struct {
		State string `json:"state"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.Stdout), &q), r.Stdout)
	return q.State
}

func assertNoSecrets(t *testing.T, where, text string) {
	t.Helper()
	for _, secret := range []string{kafkaPassword, srSecret, srSecretEncoded} {
		require.NotContains(t, text, secret, "secret leaked into %s", where)
	}
}

// The seed guide's create command, pointed at loopback, then the whole
// lifecycle, across a restart of the server on the same data dir.
func TestChangefeedLifecycleSurvivesRestart(t *testing.T) {
	pd := startPD(t)
	srv := startServer(t, "cdc-server", "", pd.URL())
	dataDir := srv.dataDir
	procs := []*harness.Proc{srv.proc}

	conf := filepath.Join(t.TempDir(), "changefeed.conf")
	require.NoError(t, os.WriteFile(conf, []byte(changefeedConf), 0o600))
	sinkURI := "kafka://127.0.0.1:9092/ticdc-meta?protocol=avro&replication-factor=3&enable-tls=true&auto-create-topic=true&sasl-mechanism=plain&sasl-user=K&sasl-password=" + strings.NewReplacer("+", "%2B", "/", "%2F").Replace(kafkaPassword)
	registry := "https://KEY:" + srSecretEncoded + "@127.0.0.1:8081"

	// --no-confirm: pdfake has no TiKV, so the table eligibility check
	// cannot read a schema; with the ineligible tables ignored the list is
	// only logged, and so is the failure to read it.
	r := harness.Run(t, 90*time.Second, "", harness.CDC(t), "cli", "changefeed", "create",
		"--server=http://"+srv.addr, "--pd="+pd.URL(),
		"--sink-uri="+sinkURI, "--schema-registry="+registry,
		"--changefeed-id=confluent-changefeed", "--config", conf, "--no-confirm")
	require.Equal(t, 0, r.ExitCode, "stderr: %s", r.Stderr)
	lines := strings.Split(strings.TrimRight(r.Stdout, "\n"), "\n")
	require.Len(t, lines, 3, r.Stdout)
	require.Equal(t, "Create changefeed successfully!", lines[0])
	require.Equal(t, "ID: confluent-changefeed", lines[1])
	require.True(t, strings.HasPrefix(lines[2], "Info: {"), lines[2])
	var info map[string]any
	dec := json.NewDecoder(strings.NewReader(strings.TrimPrefix(lines[2], "Info: ")))
	dec.UseNumber() // TSOs and cluster ids do not fit a float64
	require.NoError(t, dec.Decode(&info))
	require.Equal(t, "confluent-changefeed", info["id"])
	require.Equal(t, "default", info["namespace"])
	require.Equal(t, "normal", info["state"])
	require.Equal(t, json.Number(fmt.Sprint(pd.ClusterID())), info["upstream_id"])
	require.Contains(t, info["sink_uri"], "sasl-password=")
	require.NotZero(t, info["start_ts"])
	cfg := info["config"].(map[string]any)
	sink := cfg["sink"].(map[string]any)
	require.Equal(t, "avro", sink["protocol"])
	disp := sink["dispatchers"].([]any)[0].(map[string]any)
	require.Equal(t, "tidb_{schema}_{table}", disp["topic"])
	require.Equal(t, "index-value", disp["partition"])
	assertNoSecrets(t, "create output", r.Stdout+r.Stderr)

	// The ctl-style alias sees the same changefeed.
	alias := harness.Run(t, 30*time.Second, "", harness.CDC(t), "changefeed", "list", "--server="+srv.addr)
	require.Equal(t, 0, alias.ExitCode, alias.Stderr)
	require.Contains(t, alias.Stdout, `"confluent-changefeed"`)

	entries := srv.list(t)
	require.Len(t, entries, 1)
	require.Equal(t, "confluent-changefeed", entries[0].ID)
	// The owner may already have tried to read the new changefeed's tables
	// (pdfake has no TiKV) and shown it as warning, with the reason.
	switch e := entries[0].Summary; e.State {
	case "normal":
		require.Equal(t, "null", string(e.Error), "TiCDC shows no error on a normal changefeed")
	case "warning":
		require.Contains(t, string(e.Error), "tables of changefeed default/confluent-changefeed")
	default:
		t.Fatalf("state %s after create, error %s", e.State, e.Error)
	}
	require.NotZero(t, entries[0].Summary.TSO)
	_, err := time.ParseInLocation("2006-01-02 15:04:05.000", entries[0].Summary.Checkpoint, time.Local)
	require.NoError(t, err)

	q := srv.cli(t, "query", "-c", "confluent-changefeed")
	require.Equal(t, 0, q.ExitCode, q.Stderr)
	require.Contains(t, q.Stdout, `"checkpoint_tso"`)
	assertNoSecrets(t, "query output", q.Stdout)

	p := srv.cli(t, "pause", "-c", "confluent-changefeed")
	require.Equal(t, 0, p.ExitCode, p.Stderr)
	require.Equal(t, "stopped", srv.state(t, "confluent-changefeed"))
	again := srv.cli(t, "pause", "-c", "confluent-changefeed")
	require.NotEqual(t, 0, again.ExitCode, "pausing a paused changefeed must fail")
	require.Contains(t, again.Stderr, "stopped")

	// Restart on the same data dir: the paused changefeed is still there.
	require.NoError(t, srv.proc.Stop(30*time.Second), "graceful stop")
	srv = startServer(t, "cdc-server-2", dataDir, pd.URL())
	procs = append(procs, srv.proc)
	require.Equal(t, "stopped", srv.state(t, "confluent-changefeed"))

	res := srv.cli(t, "resume", "-c", "confluent-changefeed")
	require.Equal(t, 0, res.ExitCode, res.Stderr)
	require.Contains(t, []string{"normal", "warning"}, srv.state(t, "confluent-changefeed"), "running again (warning once the owner fails to read its tables)")

	// And again, after the resume. It runs: the owner tries to place its
	// pipelines, and since pdfake has no TiKV to read the tables from, it
	// shows the changefeed as warning with the reason.
	require.NoError(t, srv.proc.Stop(30*time.Second))
	srv = startServer(t, "cdc-server-3", dataDir, pd.URL())
	procs = append(procs, srv.proc)
	harness.Eventually(t, 30*time.Second, "running changefeed warns that its tables cannot be read", func() error {
		e := srv.list(t)[0].Summary
		if e.State != "warning" || !strings.Contains(string(e.Error), "tables of changefeed default/confluent-changefeed") {
			return fmt.Errorf("state %s, error %s", e.State, e.Error)
		}
		return nil
	})

	rm := srv.cli(t, "remove", "-c", "confluent-changefeed")
	require.Equal(t, 0, rm.ExitCode, rm.Stderr)
	require.True(t, strings.HasPrefix(rm.Stdout, "Changefeed remove successfully.\nID: confluent-changefeed\nCheckpointTs: "), rm.Stdout)
	assertNoSecrets(t, "remove output", rm.Stdout)
	require.Empty(t, srv.list(t))
	gone := srv.cli(t, "query", "-c", "confluent-changefeed")
	require.NotEqual(t, 0, gone.ExitCode)
	require.Contains(t, gone.Stderr, "not found")

	require.NoError(t, srv.proc.Stop(30*time.Second))
	srv = startServer(t, "cdc-server-4", dataDir, pd.URL())
	procs = append(procs, srv.proc)
	require.Empty(t, srv.list(t), "removed changefeed came back after restart")
	require.NoError(t, srv.proc.Stop(30*time.Second))

	// Every server logged the requests it served (create with its sink URI
	// at info); no secret may be in any of the logs.
	for _, p := range procs {
		assertNoSecrets(t, p.Name+" log", p.Log())
	}
	require.Contains(t, procs[0].Log(), "changefeed created", "the create must be logged for this check to mean something")
}

// Bad input through the real CLI: non-zero exit, one line on stderr naming
// the field, no secret echoed.
func TestCreateRejectsBadInputThroughCLI(t *testing.T) {
	pd := startPD(t)
	srv := startServer(t, "cdc-server", "", pd.URL())
	badConf := filepath.Join(t.TempDir(), "bad.conf")
	require.NoError(t, os.WriteFile(badConf, []byte("[sink]\ndispatchers = [{matcher = ['*.*'], topic = \"tidb_{schema}\", partition=\"index-value\"}]\n"), 0o600))
	unknownKey := filepath.Join(t.TempDir(), "unknown.conf")
	require.NoError(t, os.WriteFile(unknownKey, []byte("[sink]\ndispatcherz = []\n"), 0o600))
	good := filepath.Join(t.TempDir(), "good.conf")
	require.NoError(t, os.WriteFile(good, []byte(changefeedConf), 0o600))
	sr := "--schema-registry=https://KEY:" + srSecretEncoded + "@127.0.0.1:8081"
	base := "kafka://127.0.0.1:9092/ticdc-meta?protocol=avro&sasl-mechanism=plain&sasl-user=K&sasl-password=" + kafkaPassword

	cases := []struct {
		name  string
		args  []string
		field string
	}{
		{"unknown protocol", []string{"--sink-uri=kafka://127.0.0.1:9092/t?protocol=avor", sr, "--config", good}, "protocol"},
		{"avro without registry", []string{"--sink-uri=" + base, "--config", good}, "schema-registry"},
		{"topic without table", []string{"--sink-uri=" + base, sr, "--config", badConf}, "topic"},
		{"unknown toml key", []string{"--sink-uri=" + base, sr, "--config", unknownKey}, "dispatcherz"},
		{"replication factor 0", []string{"--sink-uri=" + base + "&replication-factor=0", sr, "--config", good}, "replication-factor"},
		{"bad registry encoding", []string{"--sink-uri=" + base, "--schema-registry=https://KEY:bad%zz@127.0.0.1:8081", "--config", good}, "schema-registry"},
		{"bad id", []string{"--sink-uri=" + base, sr, "--config", good, "--changefeed-id=bad_id"}, "changefeed-id"},
		{"target before start", []string{"--sink-uri=" + base, sr, "--config", good, "--start-ts=1000", "--target-ts=10", "--no-confirm"}, "target-ts"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"cli", "changefeed", "create", "--server=http://" + srv.addr, "--pd=" + pd.URL()}, c.args...)
			r := harness.Run(t, 60*time.Second, "", harness.CDC(t), args...)
			require.NotEqual(t, 0, r.ExitCode, "accepted: %s", r.Stdout)
			require.Equal(t, 1, strings.Count(strings.TrimRight(r.Stderr, "\n"), "\n")+1, "one line on stderr: %q", r.Stderr)
			require.Contains(t, r.Stderr, c.field)
			assertNoSecrets(t, "stderr", r.Stderr)
		})
	}

	// Duplicate id: the second create is refused and names the id.
	// (--no-confirm: pdfake has no TiKV for the table check, see above.)
	args := []string{"cli", "changefeed", "create", "--server=http://" + srv.addr, "--pd=" + pd.URL(), "--sink-uri=" + base, sr, "--config", good, "--changefeed-id=dup", "--no-confirm"}
	r := harness.Run(t, 60*time.Second, "", harness.CDC(t), args...)
	require.Equal(t, 0, r.ExitCode, r.Stderr)
	r = harness.Run(t, 60*time.Second, "", harness.CDC(t), args...)
	require.NotEqual(t, 0, r.ExitCode)
	require.Contains(t, r.Stderr, "changefeed-id")
	require.Contains(t, r.Stderr, "already exists")

	require.NoError(t, srv.proc.Stop(30*time.Second))
	assertNoSecrets(t, "server log", srv.proc.Log())
	require.Contains(t, srv.proc.Log(), "create changefeed refused", "the server should log refusals (so the no-secret check means something)")
}
