package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tidestream/tidestream/e2e/harness"
	"github.com/tidestream/tidestream/services/dbtest"
	"github.com/tidestream/tidestream/services/devstack"
)

// TestPauseResumeWithDDLThenDiff: a table is written before a pause, while
// paused (with ADD COLUMN … DEFAULT, so rows written before carry no value
// for it) and after the resume (MODIFY COLUMN to a wider type, DROP COLUMN,
// ADD INDEX, a table created after the resume), and replicated by `cdc
// server`. `cdc consumer --catch-up` applies the topics to MariaDB and
// PostgreSQL as the Confluent JDBC sink would; `cdc diff` then finds both
// databases, and the topics replayed in memory, equal to TiDB at the
// changefeed checkpoint. Nothing is lost across the pause, and the schemas
// each DDL registered read back as TiDB holds the rows.
func TestPauseResumeWithDDLThenDiff(t *testing.T) {
	pg := startPlayground(t)
	dev := startDevstack(t, devstack.DefaultConfig())
	proc, addr := startCDCServer(t, "", pg.pdAddr, t.TempDir(), nil)
	srv := &server{proc: proc, addr: addr}
	maria := dbtest.StartMariaDB(t)
	postgres := dbtest.StartPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	conn, err := pg.db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	exec := execOn(ctx, t, conn)
	tso := func() uint64 { return currentTS(ctx, t, conn) }

	exec("CREATE DATABASE pr")
	exec("CREATE TABLE pr.t (id BIGINT PRIMARY KEY, a INT, b VARCHAR(20))")
	createGuideChangefeed(t, addr, dev.Kafka, dev.Registry, "pr")
	feed := watchChangefeed(t, addr, "pr")
	for i := range 30 {
		exec("INSERT INTO pr.t VALUES (?, ?, ?)", i, i, fmt.Sprint("b", i))
	}
	feed.await(ctx, t, tso(), 90*time.Second, "rows before the pause replicated")

	r := srv.cli(t, "pause", "-c", "pr")
	require.Equal(t, 0, r.ExitCode, r.Stderr)
	require.Equal(t, "stopped", srv.state(t, "pr"))
	exec("ALTER TABLE pr.t ADD COLUMN c INT NOT NULL DEFAULT 5")
	for i := 30; i < 40; i++ {
		exec("INSERT INTO pr.t VALUES (?, ?, ?, ?)", i, i, fmt.Sprint("b", i), i)
	}
	exec("UPDATE pr.t SET a = a + 100 WHERE id < 10")
	exec("DELETE FROM pr.t WHERE id BETWEEN 10 AND 14")
	paused, err := feed.checkpoint(ctx)
	require.NoError(t, err)

	r = srv.cli(t, "resume", "-c", "pr")
	require.Equal(t, 0, r.ExitCode, r.Stderr)
	exec("ALTER TABLE pr.t MODIFY COLUMN a BIGINT")
	exec("UPDATE pr.t SET a = a + 5000000000 WHERE id BETWEEN 20 AND 24")
	exec("ALTER TABLE pr.t DROP COLUMN b")
	exec("ALTER TABLE pr.t ADD INDEX ia (a)")
	for i := 40; i < 50; i++ {
		exec("INSERT INTO pr.t VALUES (?, ?, ?)", i, i, i)
	}
	exec("UPDATE pr.t SET c = c + 1 WHERE id % 3 = 0")
	exec("CREATE TABLE pr.u (k VARCHAR(10) PRIMARY KEY, v INT)")
	exec("INSERT INTO pr.u VALUES ('x', 1), ('y', 2), ('z', 3)")
	exec("DELETE FROM pr.u WHERE k = 'y'")
	last := tso()
	feed.await(ctx, t, last, 2*time.Minute, "everything after the resume replicated")
	cp, err := feed.checkpoint(ctx)
	require.NoError(t, err)
	require.Greater(t, cp, paused)
	require.Equal(t, "normal", srv.state(t, "pr"))

	var rows int
	require.NoError(t, conn.QueryRowContext(ctx, "SELECT (SELECT COUNT(*) FROM pr.t) + (SELECT COUNT(*) FROM pr.u)").Scan(&rows))
	verdict := fmt.Sprintf("all %d rows in 2 tables match TiDB", rows)
	kafka := "--kafka=" + strings.Join(dev.Kafka, ",")
	registry := "--schema-registry=" + dev.Registry
	upstream := "--upstream=mysql://root@" + pg.sqlAddr + "/"
	snap := fmt.Sprintf("--snapshot-ts=%d", cp)
	for _, target := range []*dbtest.Server{maria, postgres} {
		r := harness.Run(t, 2*time.Minute, "", harness.CDC(t), "consumer", kafka, registry, "--target="+target.URL, "--catch-up")
		require.Equal(t, 0, r.ExitCode, "consumer into %s: %s", target.URL, r.Stderr)
		cleanDiff(t, []string{upstream, snap, "--schemas=pr", "--target=" + target.URL}, verdict)
	}
	cleanDiff(t, []string{upstream, snap, "--schemas=pr", kafka, registry}, verdict)
}
