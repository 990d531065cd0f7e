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
	"github.com/twmb/franz-go/pkg/kadm"
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

// TestChangefeedBeforeTPCCPrepare is the seed guide's order of steps: the
// changefeed exists before `go-tpc tpcc prepare` creates and loads its nine
// tables, and every row of the eight with a key reaches its topic (history
// has none: ineligible, as with TiCDC).
func TestChangefeedBeforeTPCCPrepare(t *testing.T) {
	goTPC := os.Getenv("GO_TPC")
	if goTPC == "" {
		t.Skip("GO_TPC is not set: `make e2e` installs go-tpc and sets it")
	}
	pg := startPlayground(t)
	dev := startDevstack(t, devstack.DefaultConfig())
	_, addr := startCDCServer(t, "", pg.pdAddr, t.TempDir(), nil)
	srv := &server{addr: addr}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	_, err := pg.db.ExecContext(ctx, "CREATE DATABASE tpcc")
	require.NoError(t, err)

	createGuideChangefeed(t, srv.addr, dev.Kafka, dev.Registry, "tpcc")

	began := time.Now()
	r := harness.Run(t, 5*time.Minute, "", goTPC, tpccArgs(pg, "prepare")...)
	require.Equal(t, 0, r.ExitCode, "go-tpc tpcc prepare:\n%s\n%s", tail(r.Stdout, 3000), tail(r.Stderr, 3000))
	t.Logf("go-tpc tpcc --warehouses 1 prepare took %s", time.Since(began).Round(100*time.Millisecond))
	conn, err := pg.db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	until := currentTS(ctx, t, conn)
	began = time.Now()
	harness.Eventually(t, 5*time.Minute, "checkpoint past the end of prepare", func() error {
		r := srv.cli(t, "query", "-c", "tpcc", "-s")
		var q struct {
			State      string `json:"state"`
			Checkpoint uint64 `json:"checkpoint_tso"`
		}
		if err := json.Unmarshal([]byte(r.Stdout), &q); err != nil {
			return fmt.Errorf("%v: %s", err, r.Stderr)
		}
		if q.Checkpoint < until {
			return fmt.Errorf("%s at %d < %d", q.State, q.Checkpoint, until)
		}
		return nil
	})
	t.Logf("checkpoint passed the end of prepare %s after it", time.Since(began).Round(100*time.Millisecond))

	adm, err := kgo.NewClient(kgo.SeedBrokers(dev.Kafka...))
	require.NoError(t, err)
	defer adm.Close()
	total, replicated := 0, 0
	for _, tbl := range tpccTables {
		var rows int64
		require.NoError(t, conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM tpcc."+tbl).Scan(&rows))
		require.Positive(t, rows, tbl)
		ends, err := kadm.NewClient(adm).ListEndOffsets(ctx, "tidb_tpcc_"+tbl)
		require.NoError(t, err)
		var records int64
		ends.Each(func(o kadm.ListedOffset) { records += o.Offset })
		if tbl == "history" {
			// No primary key and no NOT NULL unique key: no Kafka key, so
			// not eligible, as with TiCDC's Avro sink.
			require.Zero(t, records, "the ineligible history table is not replicated")
			continue
		}
		require.GreaterOrEqual(t, records, rows, "topic tidb_tpcc_%s: every row of the table (at least once)", tbl)
		total += int(rows)
		replicated++
	}
	t.Logf("all %d rows of the %d eligible TPC-C tables are in their topics (history has no key)", total, replicated)
}
