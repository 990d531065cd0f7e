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
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/tidestream/tidestream/e2e/harness"
	"github.com/tidestream/tidestream/services/devstack"
)

// TestTablesCreatedAfterTheChangefeed: a changefeed created before its
// tables (as TPC-C's own prepare does) replicates a table created after
// it, and after TRUNCATE the rows of the new table follow the old ones in
// the same topic, never ahead of them.
func TestTablesCreatedAfterTheChangefeed(t *testing.T) {
	pg := startPlayground(t)
	dev := startDevstack(t, devstack.DefaultConfig())
	_, addr := startCDCServer(t, "", pg.pdAddr, t.TempDir(), nil)
	srv := &server{addr: addr}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	conn, err := pg.db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	sql := func(q string, args ...any) {
		_, err := conn.ExecContext(ctx, q, args...)
		require.NoError(t, err, q)
	}
	sql("CREATE DATABASE late")

	conf := filepath.Join(t.TempDir(), "changefeed.conf")
	require.NoError(t, os.WriteFile(conf, []byte(changefeedConf), 0o600))
	r := harness.Run(t, 90*time.Second, "", harness.CDC(t), "cli", "changefeed", "create",
		"--server=http://"+srv.addr, "--sink-uri=kafka://"+strings.Join(dev.Kafka, ",")+"/meta?protocol=avro&auto-create-topic=true&partition-num=1&replication-factor=1",
		"--schema-registry="+dev.Registry, "--changefeed-id=late", "--config", conf)
	require.Equal(t, 0, r.ExitCode, "stderr: %s", r.Stderr)

	sql("CREATE TABLE late.t (id BIGINT PRIMARY KEY, v VARCHAR(20))")
	for i := range 5 {
		sql("INSERT INTO late.t VALUES (?, 'before')", i)
	}
	sql("TRUNCATE TABLE late.t")
	for i := range 5 {
		sql("INSERT INTO late.t VALUES (?, 'after')", i)
	}
	until := currentTS(ctx, t, conn)

	checkpoint := func() (uint64, string) {
		r := srv.cli(t, "query", "-c", "late", "-s")
		require.Equal(t, 0, r.ExitCode, r.Stderr)
		var q struct {
			State      string `json:"state"`
			Checkpoint uint64 `json:"checkpoint_tso"`
		}
		require.NoError(t, json.Unmarshal([]byte(r.Stdout), &q), r.Stdout)
		return q.Checkpoint, q.State
	}
	harness.Eventually(t, 90*time.Second, "checkpoint past the writes to the late table", func() error {
		if cp, state := checkpoint(); cp < until {
			return fmt.Errorf("%s at %d < %d", state, cp, until)
		}
		return nil
	})

	rc, err := sr.NewClient(sr.URLs(dev.Registry))
	require.NoError(t, err)
	decode := avroReader(ctx, t, rc)
	kc, err := kgo.NewClient(kgo.SeedBrokers(dev.Kafka...), kgo.ConsumeTopics("tidb_late_t"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer kc.Close()
	var got []string
	for len(got) < 10 {
		fs := kc.PollFetches(ctx)
		require.NoError(t, fs.Err0())
		fs.EachRecord(func(r *kgo.Record) {
			v := decode(r.Value)
			got = append(got, fmt.Sprintf("%d:%s", decode(r.Key)["id"], v["v"]))
		})
	}
	require.Equal(t, []string{"0:before", "1:before", "2:before", "3:before", "4:before",
		"0:after", "1:after", "2:after", "3:after", "4:after"}, got, "the truncated table's rows first, then its replacement's")
}
