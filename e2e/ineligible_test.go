package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/tidestream/tidestream/e2e/harness"
)

// TestCreateAsksAboutIneligibleTables runs TiCDC's ineligible-table dialogue
// against a real cluster: the server reads the schema at the start ts, and
// the CLI names the tables Avro cannot key and asks whether to ignore them.
// Only tables the filter selects count, and only for want of a key: a view
// or a table with a NOT NULL unique key is not asked about.
func TestCreateAsksAboutIneligibleTables(t *testing.T) {
	pg := startPlayground(t)
	srv := startServer(t, "cdc-server", "", "http://"+pg.pdAddr)
	registry := srfake.New()
	t.Cleanup(registry.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, q := range []string{
		"CREATE DATABASE ie",
		"CREATE TABLE ie.keyless (a INT, b VARCHAR(20))",
		"CREATE TABLE ie.keyed (id BIGINT PRIMARY KEY, v INT)",
		"CREATE TABLE ie.nullable_uk (a INT, UNIQUE KEY (a))",
		"CREATE TABLE ie.notnull_uk (a INT NOT NULL, UNIQUE KEY (a))",
		"CREATE VIEW ie.v AS SELECT a FROM ie.keyless",
		"CREATE DATABASE other",
		"CREATE TABLE other.keyless (a INT)", // filtered out
	} {
		_, err := pg.db.ExecContext(ctx, q)
		require.NoError(t, err, q)
	}

	conf := filepath.Join(t.TempDir(), "changefeed.conf")
	require.NoError(t, os.WriteFile(conf, []byte(changefeedConf+"[filter]\nrules = ['ie.*']\n"), 0o600))
	create := func(stdin string) harness.Result {
		return harness.Run(t, 90*time.Second, stdin, harness.CDC(t), "cli", "changefeed", "create",
			"--server=http://"+srv.addr, "--sink-uri=kafka://127.0.0.1:9092/meta?protocol=avro",
			"--schema-registry="+registry.URL(), "--changefeed-id=ie", "--config", conf)
	}
	const warn = "[WARN] some tables are not eligible to replicate, because they have neither a primary key nor a not-null unique key: ie.keyless, ie.nullable_uk\n" +
		"Could you agree to ignore those tables, and continue to replicate [Y/N]\n"

	no := create("N\n")
	t.Logf("answer N:\n%s%s", no.Stdout, no.Stderr)
	require.NotEqual(t, 0, no.ExitCode, "created although the user said no: %s", no.Stdout)
	require.Equal(t, warn+"No changefeed is created because you don't want to ignore some tables.\n", no.Stdout)
	require.Contains(t, no.Stderr, "create changefeed cancelled by user")
	require.Empty(t, srv.list(t), "nothing created on N")

	yes := create("Y\n")
	t.Logf("answer Y:\n%s%s", yes.Stdout, yes.Stderr)
	require.Equal(t, 0, yes.ExitCode, "stderr: %s", yes.Stderr)
	require.True(t, strings.HasPrefix(yes.Stdout, warn), yes.Stdout)
	lines := strings.Split(strings.TrimRight(strings.TrimPrefix(yes.Stdout, warn), "\n"), "\n")
	require.Len(t, lines, 3, yes.Stdout)
	require.Equal(t, "Create changefeed successfully!", lines[0])
	require.Equal(t, "ID: ie", lines[1])
	var info struct {
		Config struct {
			IgnoreIneligibleTable bool `json:"ignore_ineligible_table"`
		} `json:"config"`
	}
	require.NoError(t, json.Unmarshal([]byte(strings.TrimPrefix(lines[2], "Info: ")), &info), lines[2])
	require.True(t, info.Config.IgnoreIneligibleTable, lines[2])
	require.Equal(t, "normal", srv.state(t, "ie"))
	require.Contains(t, srv.proc.Log(), "changefeed ignores ineligible tables", "the server logs what it ignores")

	// --no-confirm never asks: it ignores the tables outright.
	quiet := harness.Run(t, 90*time.Second, "", harness.CDC(t), "cli", "changefeed", "create",
		"--server=http://"+srv.addr, "--sink-uri=kafka://127.0.0.1:9092/meta?protocol=avro",
		"--schema-registry="+registry.URL(), "--changefeed-id=ie-quiet", "--config", conf, "--no-confirm")
	require.Equal(t, 0, quiet.ExitCode, "stderr: %s", quiet.Stderr)
	require.True(t, strings.HasPrefix(quiet.Stdout, "Create changefeed successfully!\n"), quiet.Stdout)
	require.Contains(t, quiet.Stdout, `"ignore_ineligible_table":true`)
}
