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

	"github.com/tidestream/tidestream/e2e/harness"
	"github.com/tidestream/tidestream/services/dbtest"
	"github.com/tidestream/tidestream/services/devstack"
)

// TestConsumerAndDiff is the downstream half of the user's path: a table
// with a broad mix of TiDB types (and one with a composite string key) is
// written through the playground — inserts, updates, a key change,
// deletes — and replicated by `cdc server`; `cdc consumer --catch-up`
// applies the topics to a real MariaDB and a real PostgreSQL as the
// Confluent JDBC sink would; `cdc diff` at the changefeed checkpoint then
// finds every row equal in both databases and in the topics replayed in
// memory. A row changed by hand downstream is named by the next diff.
func TestConsumerAndDiff(t *testing.T) {
	pg := startPlayground(t)
	dev := startDevstack(t, devstack.DefaultConfig())
	_, srvAddr := startCDCServer(t, "", pg.pdAddr, t.TempDir(), nil)
	maria := dbtest.StartMariaDB(t)
	postgres := dbtest.StartPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	conn, err := pg.db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	exec := execOn(ctx, t, conn)
	exec("SET time_zone = '+00:00'")
	exec("CREATE DATABASE mix")
	exec(`CREATE TABLE mix.t (
		id BIGINT PRIMARY KEY,
		ti TINYINT, si SMALLINT UNSIGNED, mi MEDIUMINT, i INT NOT NULL DEFAULT 7, iu INT UNSIGNED,
		bi BIGINT, bu BIGINT UNSIGNED,
		dc DECIMAL(20,6), dz DECIMAL(5,0), fl FLOAT, db DOUBLE,
		c CHAR(10), vc VARCHAR(100) DEFAULT 'dflt', tx TEXT, bl BLOB, bn BINARY(4), vb VARBINARY(10),
		d DATE, dt DATETIME(3), ts TIMESTAMP(6) NULL, tm TIME(2), y YEAR,
		e ENUM('a','b,c','d'), s SET('x','y','z'), bt BIT(10), j JSON
	)`)
	exec(`CREATE TABLE mix.k (a VARCHAR(20) NOT NULL, b INT NOT NULL, v TEXT, PRIMARY KEY (a, b))`)

	conf := filepath.Join(t.TempDir(), "changefeed.conf")
	require.NoError(t, os.WriteFile(conf, []byte(changefeedConf), 0o600))
	r := harness.Run(t, 90*time.Second, "", harness.CDC(t), "cli", "changefeed", "create",
		"--server=http://"+srvAddr, "--sink-uri=kafka://"+strings.Join(dev.Kafka, ",")+"/meta?protocol=avro&auto-create-topic=true&partition-num=3&replication-factor=1",
		"--schema-registry="+dev.Registry, "--changefeed-id=mix", "--config", conf)
	require.Equal(t, 0, r.ExitCode, "stderr: %s", r.Stderr)

	const n = 60
	for i := 1; i <= n; i++ {
		if i%10 == 0 { // NULLs and defaults
			exec("INSERT INTO mix.t (id) VALUES (?)", i)
			continue
		}
		neg := 1 - 2*(i%2)
		exec(`INSERT INTO mix.t VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			i, neg*(i%128), i*1000%65536, neg*i*1000, neg*i*100000, uint32(4294967295-i),
			int64(neg)*(int64(1)<<62+int64(i)), fmt.Sprint(uint64(18446744073709551615)-uint64(i)),
			fmt.Sprintf("%d.%06d", neg*i*12345, i), fmt.Sprint(neg*i), float32(i)/7, float64(i)/3*1e10,
			fmt.Sprintf("c%d", i), fmt.Sprintf("vc 'quoted' \\ %d é", i), strings.Repeat("text ", i), []byte{0, byte(i), 0xff, '\\'},
			[]byte{byte(i), 0, 1}, []byte{0xfe, byte(i)},
			fmt.Sprintf("20%02d-%02d-%02d", i%100, i%12+1, i%28+1), fmt.Sprintf("2024-02-29 23:59:%02d.%03d", i%60, i),
			fmt.Sprintf("2025-06-%02d 12:00:00.%06d", i%28+1, i*7), fmt.Sprintf("%d:%02d:%02d.%02d", neg*i*13, i%60, i%60, i),
			1901+i, []string{"a", "b,c", "d"}[i%3], []string{"", "x", "x,z", "y,z"}[i%4], i*7%1024,
			fmt.Sprintf(`{"n": %d, "s": "x<y>&", "a": [1, 2.5, null, true], "o": {"z": 1, "b": "%d"}}`, i, i))
	}
	for i := 1; i <= 20; i++ {
		exec("INSERT INTO mix.k VALUES (?, ?, ?)", []string{"a", "A", "b"}[i%3]+fmt.Sprint(i%5), i%4, fmt.Sprint("v", i))
	}
	exec("UPDATE mix.t SET vc = 'updated', fl = 0.5, j = '[]' WHERE id % 7 = 0")
	exec("UPDATE mix.t SET id = id + 1000 WHERE id = 5") // a key change: delete + insert
	exec("DELETE FROM mix.t WHERE id % 11 = 0")
	exec("UPDATE mix.k SET v = NULL WHERE b = 1")
	exec("DELETE FROM mix.k WHERE b = 2")
	until := currentTS(ctx, t, conn)

	srv := &server{addr: srvAddr}
	checkpoint := func() uint64 {
		r := srv.cli(t, "query", "-c", "mix", "-s")
		require.Equal(t, 0, r.ExitCode, r.Stderr)
		var q struct {
			Checkpoint uint64 `json:"checkpoint_tso"`
		}
		require.NoError(t, json.Unmarshal([]byte(r.Stdout), &q), r.Stdout)
		return q.Checkpoint
	}
	harness.Eventually(t, 2*time.Minute, "checkpoint past the writes", func() error {
		if cp := checkpoint(); cp < until {
			return fmt.Errorf("checkpoint %d < %d", cp, until)
		}
		return nil
	})
	cp := checkpoint()
	var rows int
	require.NoError(t, conn.QueryRowContext(ctx, "SELECT (SELECT COUNT(*) FROM mix.t) + (SELECT COUNT(*) FROM mix.k)").Scan(&rows))

	kafka := "--kafka=" + strings.Join(dev.Kafka, ",")
	registry := "--schema-registry=" + dev.Registry
	upstream := "--upstream=mysql://root@" + pg.sqlAddr + "/"
	verdict := fmt.Sprintf("all %d rows in 2 tables match TiDB", rows)
	lastLine := func(s string) string {
		lines := strings.Split(strings.TrimSpace(s), "\n")
		return lines[len(lines)-1]
	}
	for _, target := range []*dbtest.Server{maria, postgres} {
		start := time.Now()
		r := harness.Run(t, 2*time.Minute, "", harness.CDC(t), "consumer", kafka, registry, "--target="+target.URL, "--catch-up")
		require.Equal(t, 0, r.ExitCode, "consumer into %s: %s", target.URL, r.Stderr)
		t.Logf("consumer into %s: %s (%s)", target.URL, strings.TrimSpace(r.Stdout), time.Since(start).Round(time.Millisecond))

		// The snapshot from --snapshot-ts for one, from the changefeed's
		// checkpoint for the other.
		snap := fmt.Sprintf("--snapshot-ts=%d", cp)
		if target == postgres {
			snap = "--changefeed-id=mix"
		}
		r = harness.Run(t, 2*time.Minute, "", harness.CDC(t), "diff", upstream, snap, "--server=http://"+srvAddr,
			"--schemas=mix", "--target="+target.URL)
		require.Equal(t, 0, r.ExitCode, "diff against %s:\n%s\n%s", target.URL, r.Stdout, r.Stderr)
		require.Equal(t, verdict, lastLine(r.Stdout), r.Stdout)
	}
	r = harness.Run(t, 2*time.Minute, "", harness.CDC(t), "diff", upstream, fmt.Sprintf("--snapshot-ts=%d", cp),
		"--schemas=mix", kafka, registry)
	require.Equal(t, 0, r.ExitCode, "diff against the replayed topics:\n%s\n%s", r.Stdout, r.Stderr)
	require.Equal(t, verdict, lastLine(r.Stdout), r.Stdout)
	t.Logf("cdc diff (replay):\n%s", r.Stdout)

	// A row changed by hand in MariaDB, one deleted in PostgreSQL.
	mdb := maria.Open(t)
	_, err = mdb.ExecContext(ctx, "UPDATE tidb_mix_t SET db = db + 1 WHERE id = 13")
	require.NoError(t, err)
	pdb := postgres.Open(t)
	_, err = pdb.ExecContext(ctx, `DELETE FROM tidb_mix_k WHERE a = 'A2' AND b = 3`)
	require.NoError(t, err)
	for target, want := range map[*dbtest.Server]string{maria: "id=13: values differ", postgres: "(a=A2, b=3): missing downstream"} {
		r := harness.Run(t, 2*time.Minute, "", harness.CDC(t), "diff", upstream, fmt.Sprintf("--snapshot-ts=%d", cp),
			"--schemas=mix", "--target="+target.URL)
		require.Equal(t, 1, r.ExitCode, "diff against %s:\n%s\n%s", target.URL, r.Stdout, r.Stderr)
		require.Contains(t, r.Stdout, want)
		t.Logf("cdc diff against %s after a hand edit:\n%s", target.URL, r.Stdout)
		require.Regexp(t, `^1 rows differ in 1 of 2 tables: tidb_mix_[tk]$`, lastLine(r.Stdout))
	}
}
