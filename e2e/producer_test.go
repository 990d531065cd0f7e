package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/tidestream/tidestream/e2e/harness"
	"github.com/tidestream/tidestream/services/devstack"
)

// startDevstack runs devstack's Kafka and registry, configured by cfg, in
// the test process.
func startDevstack(t *testing.T, cfg devstack.Config) devstack.Addrs {
	t.Helper()
	addrs, _ := runDevstack(t, cfg)
	return addrs
}

// runDevstack is startDevstack that also returns stop, which stops the
// stack before the test ends (kfake's Close writes cfg.DataDir) and
// returns Run's error; later calls return the same, and the test's cleanup
// calls it too.
func runDevstack(t *testing.T, cfg devstack.Config) (devstack.Addrs, func() error) {
	t.Helper()
	s, err := devstack.New(cfg, nil)
	require.NoError(t, err)
	addrs, err := s.Listen()
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
		})
		return runErr
	}
	t.Cleanup(func() { require.NoError(t, stop()) })
	return addrs, stop
}

// startCDCServer starts `cdc server` (every role, member "srv") on free
// loopback ports against etcdEndpoint ("": its embedded etcd) and the
// upstream's PD, with env added to its environment, and returns it and its
// gRPC address.
func startCDCServer(t *testing.T, etcdEndpoint, pdAddr, dataDir string, env []string) (*harness.Proc, string) {
	t.Helper()
	proc, addrs := harness.StartOnFreePorts(t, harness.Launch{Name: "cdc-server", Bin: harness.CDC(t), Addrs: 2,
		Args: func(addrs []string) []string {
			args := []string{"server", "--addr", addrs[0], "--status-addr", addrs[1], "--data-dir", dataDir,
				"--member-id", "srv", "--pd", "http://" + pdAddr,
				"--producer-progress-interval", "100ms", "--log-level", "debug"}
			if etcdEndpoint != "" {
				args = append(args, "--etcd", etcdEndpoint)
			}
			return args
		},
		Env:   env,
		Ready: harness.Serving(60 * time.Second),
	})
	return proc, addrs[0]
}

// TestServerReplicatesAndResumesAfterKill9 is the user's path on one `cdc
// server` (every role; the owner places the pipelines) against the
// playground and devstack: a changefeed over a table that exists at its
// start ts replicates every row into the table's topic with the registry's
// schema, a delete as a tombstone, each key's versions in order on one
// partition, and its checkpoint reaches the last write only once Kafka
// holds it all. Confluent's Python AvroConsumer reads the topic too. Then
// the server is killed with -9, rows are written while it is down, and the
// restarted server resumes from the checkpoint: nothing is lost.
func TestServerReplicatesAndResumesAfterKill9(t *testing.T) {
	pg := startPlayground(t)
	dev := startDevstack(t, devstack.DefaultConfig())
	dataDir := t.TempDir()
	// Embedded etcd, in the data dir: one process is the whole system.
	startServer := func() (*harness.Proc, string) { return startCDCServer(t, "", pg.pdAddr, dataDir, nil) }
	srv, srvAddr := startServer()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	conn, err := pg.db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	sql := func(q string, args ...any) {
		_, err := conn.ExecContext(ctx, q, args...)
		require.NoError(t, err, q)
	}
	sql("CREATE DATABASE p")
	sql("CREATE TABLE p.t (id BIGINT PRIMARY KEY, v VARCHAR(20))")

	conf := filepath.Join(t.TempDir(), "changefeed.conf")
	require.NoError(t, os.WriteFile(conf, []byte(changefeedConf), 0o600))
	brokers := strings.Join(dev.Kafka, ",")
	r := harness.Run(t, 90*time.Second, "", harness.CDC(t), "cli", "changefeed", "create",
		"--server=http://"+srvAddr, "--sink-uri=kafka://"+brokers+"/meta?protocol=avro&auto-create-topic=true&partition-num=3&replication-factor=1",
		"--schema-registry="+dev.Registry, "--changefeed-id=prod", "--config", conf)
	require.Equal(t, 0, r.ExitCode, "stderr: %s", r.Stderr)

	// What the user sees: `cdc cli changefeed query`.
	type queried struct {
		State         string          `json:"state"`
		CheckpointTso uint64          `json:"checkpoint_tso"`
		Error         json.RawMessage `json:"error"`
		Pipelines     []struct {
			TableName      string `json:"table_name"`
			EncoderMember  string `json:"encoder_member"`
			ProducerMember string `json:"producer_member"`
			Epoch          uint64 `json:"epoch"`
		} `json:"tidestream_pipelines"`
	}
	query := func() (queried, error) {
		var q queried
		r := harness.Run(t, 30*time.Second, "", harness.CDC(t), "cli", "changefeed", "query", "-c", "prod", "--server=http://"+srvAddr)
		if r.ExitCode != 0 {
			return q, fmt.Errorf("query: %s", r.Stderr)
		}
		return q, json.Unmarshal([]byte(r.Stdout), &q)
	}
	// The changefeed checkpoint reaches ts only once Kafka holds every
	// row up to it.
	awaitCheckpoint := func(ts uint64) {
		harness.Eventually(t, 90*time.Second, "changefeed checkpoint past the last write", func() error {
			q, err := query()
			if err != nil {
				return err
			}
			if q.CheckpointTso < ts {
				return fmt.Errorf("%s, checkpoint %d < %d, error %s", q.State, q.CheckpointTso, ts, q.Error)
			}
			return nil
		})
	}

	const n = 60
	for i := range n {
		sql("INSERT INTO p.t VALUES (?, ?)", i, "v0")
	}
	sql("ALTER TABLE p.t ADD COLUMN c INT DEFAULT 7")
	for i := range n / 2 {
		sql("UPDATE p.t SET v = 'v1', c = ? WHERE id = ?", i, i)
	}
	sql("DELETE FROM p.t WHERE id = 0")
	awaitCheckpoint(currentTS(ctx, t, conn))

	// The owner placed the table's pipeline on this server.
	q, err := query()
	require.NoError(t, err)
	require.Len(t, q.Pipelines, 1)
	require.Equal(t, "t", q.Pipelines[0].TableName)
	require.Equal(t, "srv", q.Pipelines[0].ProducerMember)
	firstEpoch := q.Pipelines[0].Epoch

	rc, err := sr.NewClient(sr.URLs(dev.Registry))
	require.NoError(t, err)
	decode := avroReader(ctx, t, rc)
	type version struct {
		value     map[string]any
		partition int32
	}
	// readTopic reads want records from the start and returns each key's
	// versions in the order they arrived.
	readTopic := func(want int) map[int64][]version {
		kc, err := kgo.NewClient(kgo.SeedBrokers(dev.Kafka...), kgo.ConsumeTopics("tidb_p_t"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		require.NoError(t, err)
		defer kc.Close()
		byKey := map[int64][]version{}
		for got := 0; got < want; {
			fs := kc.PollFetches(ctx)
			require.NoError(t, fs.Err0())
			fs.EachRecord(func(r *kgo.Record) {
				got++
				id := decode(r.Key)["id"].(int64)
				v := version{partition: r.Partition}
				if r.Value != nil {
					v.value = decode(r.Value)
				}
				byKey[id] = append(byKey[id], v)
			})
		}
		for id, vs := range byKey {
			for _, v := range vs {
				require.Equal(t, vs[0].partition, v.partition, "key %d on one partition", id)
			}
		}
		return byKey
	}
	want := n + n/2 + 1
	byKey := readTopic(want)
	require.Len(t, byKey, n)
	for id := range int64(n) {
		vs := byKey[id]
		switch {
		case id == 0:
			require.Len(t, vs, 3)
			require.Nil(t, vs[2].value, "the delete is a tombstone, last")
		case id < n/2:
			require.Len(t, vs, 2)
			require.Equal(t, "v0", vs[0].value["v"])
			require.Equal(t, "v1", vs[1].value["v"], "versions in commit order")
			require.Equal(t, int(id), vs[1].value["c"])
		default:
			require.Len(t, vs, 1)
			require.NotContains(t, vs[0].value, "c", "written before ADD COLUMN")
		}
	}

	// An independent consumer: Confluent's Python AvroConsumer (Debian's
	// python3-confluent-kafka), schemas by id from the registry.
	pyCount, pyTombstones := pythonAvroConsume(ctx, t, brokers, dev.Registry, "tidb_p_t", want, nil)
	require.Equal(t, want, pyCount)
	require.Equal(t, 1, pyTombstones)

	// kill -9 under load; rows written while it is down arrive after the
	// restart, which resumes from the checkpoint.
	for i := n; i < n+10; i++ {
		sql("INSERT INTO p.t (id, v) VALUES (?, 'v2')", i)
	}
	srv.Kill()
	for i := n + 10; i < n+20; i++ {
		sql("INSERT INTO p.t (id, v) VALUES (?, 'v2')", i)
	}
	sql("UPDATE p.t SET v = 'v3' WHERE id = 1")
	until := currentTS(ctx, t, conn)
	// The restart takes over its own data dir, embedded etcd included.
	_, srvAddr = startServer()
	awaitCheckpoint(until)
	q, err = query()
	require.NoError(t, err)
	require.Equal(t, "normal", q.State)
	require.Len(t, q.Pipelines, 1)
	t.Logf("pipeline epoch %d before the kill, %d after the restart", firstEpoch, q.Pipelines[0].Epoch)

	after := readTopic(want + 21)
	for id := range int64(n + 20) {
		vs := after[id]
		require.NotEmpty(t, vs, "key %d lost", id)
		last := vs[len(vs)-1]
		switch {
		case id == 0:
			require.Nil(t, last.value)
		case id == 1:
			require.Equal(t, "v3", last.value["v"])
		case id >= n:
			require.Equal(t, "v2", last.value["v"])
		}
	}
}

// pythonAvroConsume reads count records of topic with Confluent's Python
// AvroConsumer (extra: more consumer settings, e.g. SASL and TLS) and
// returns how many it read and how many were tombstones.
func pythonAvroConsume(ctx context.Context, t *testing.T, brokers, registry, topic string, count int, extra map[string]string) (records, tombstones int) {
	t.Helper()
	args := []string{"-c", avroConsumerScript, brokers, registry, topic, harness.Itoa(count)}
	if extra != nil {
		b, err := json.Marshal(extra)
		require.NoError(t, err)
		args = append(args, string(b))
	}
	py := exec.CommandContext(ctx, "/usr/bin/python3", args...)
	var out, stderr bytes.Buffer
	py.Stdout, py.Stderr = &out, &stderr
	require.NoError(t, py.Run(), "python AvroConsumer: %s", stderr.String())
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var rec struct {
			Value json.RawMessage `json:"value"`
		}
		require.NoError(t, json.Unmarshal([]byte(line), &rec), line)
		records++
		if string(rec.Value) == "null" {
			tombstones++
		}
	}
	return records, tombstones
}

// avroConsumerScript reads count records with Confluent's AvroConsumer and
// prints each as a JSON line. An optional fifth argument, a JSON object, is
// merged into the consumer's configuration (security settings).
const avroConsumerScript = `
import json, sys
from confluent_kafka.avro import AvroConsumer
brokers, registry, topic, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
conf = {"bootstrap.servers": brokers, "group.id": "e2e-python", "auto.offset.reset": "earliest",
        "schema.registry.url": registry}
if len(sys.argv) > 5:
    conf.update(json.loads(sys.argv[5]))
c = AvroConsumer(conf)
c.subscribe([topic])
seen = 0
while seen < count:
    m = c.poll(30)
    if m is None:
        sys.exit("timed out after %d records" % seen)
    if m.error():
        sys.exit(str(m.error()))
    print(json.dumps({"key": m.key(), "value": m.value()}, default=str))
    seen += 1
c.close()
`
