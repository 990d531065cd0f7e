package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"
	"github.com/tidestream/tidestream/e2e/harness"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
	"github.com/tikv/client-go/v2/util/codec"
)

// playground is a running deploy/playground.
type playground struct {
	sqlAddr    string // TiDB's MySQL protocol
	statusAddr string // TiDB's status HTTP port, which also serves /cdc/ and /fault/
	pdAddr     string
	db         *sql.DB
}

// startPlayground runs deploy/playground (PLAYGROUND_BIN, which `make e2e`
// builds) on ports picked now and waits until its SQL port answers.
func startPlayground(t *testing.T) *playground {
	t.Helper()
	bin := os.Getenv("PLAYGROUND_BIN")
	if bin == "" {
		t.Skip("PLAYGROUND_BIN is not set: `make e2e` builds deploy/playground and sets it")
	}
	port := func(a string) string { return a[len("127.0.0.1:"):] }
	var db *sql.DB
	_, addrs := harness.StartOnFreePorts(t, harness.Launch{Name: "playground", Bin: bin, Addrs: 4,
		Args: func(addrs []string) []string {
			return []string{"--data-dir", t.TempDir(),
				"--sql-port", port(addrs[0]), "--status-port", port(addrs[1]),
				"--pd-port", port(addrs[2]), "--kv-port", port(addrs[3]),
				"--resolved-ts-interval", "200ms", "--check-invariants"}
		},
		Ready: func(p *harness.Proc, addrs []string) error {
			d, err := sql.Open("mysql", "root@tcp("+addrs[0]+")/")
			if err != nil {
				return err
			}
			if err := harness.Await(p, 3*time.Minute, "playground SQL port", d.Ping); err != nil {
				d.Close()
				return err
			}
			db = d
			return nil
		},
	})
	t.Cleanup(func() { db.Close() })
	return &playground{sqlAddr: addrs[0], statusAddr: addrs[1], pdAddr: addrs[2], db: db}
}

// currentTS reads a fresh TSO through TiDB (it is 0 outside a transaction).
// execOn runs statements on c, failing the test on an error.
func execOn(ctx context.Context, t *testing.T, c *sql.Conn) func(q string, args ...any) {
	return func(q string, args ...any) {
		t.Helper()
		_, err := c.ExecContext(ctx, q, args...)
		require.NoError(t, err, q)
	}
}

func currentTS(ctx context.Context, t *testing.T, c *sql.Conn) uint64 {
	t.Helper()
	var ts uint64
	_, err := c.ExecContext(ctx, "BEGIN")
	require.NoError(t, err)
	require.NoError(t, c.QueryRowContext(ctx, "SELECT @@tidb_current_ts").Scan(&ts))
	_, err = c.ExecContext(ctx, "COMMIT")
	require.NoError(t, err)
	return ts
}

// recordSpan is the record key range of table db.table, memcomparable, as a
// pipeline span.
func recordSpan(ctx context.Context, t *testing.T, db *sql.DB, schema, table string) *tidestreamv1.Span {
	t.Helper()
	var id int64
	require.NoError(t, db.QueryRowContext(ctx,
		"SELECT TIDB_TABLE_ID FROM information_schema.tables WHERE table_schema = ? AND table_name = ?", schema, table).Scan(&id))
	prefix := append([]byte{'t'}, codec.EncodeInt(nil, id)...)
	return &tidestreamv1.Span{
		StartKey: codec.EncodeBytes(nil, append(append([]byte(nil), prefix...), "_r"...)),
		EndKey:   codec.EncodeBytes(nil, append(append([]byte(nil), prefix...), "_s"...)),
	}
}

// TestPullerThroughCDCServer subscribes to `cdc server`'s PullerService as a
// sorter would and receives rows written through TiDB.
func TestPullerThroughCDCServer(t *testing.T) {
	pg := startPlayground(t)
	db := pg.db
	srv := startServer(t, "cdc-server", "", "http://"+pg.pdAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	for _, q := range []string{"CREATE DATABASE p", "CREATE TABLE p.t (id INT PRIMARY KEY, v VARCHAR(8))"} {
		_, err := db.ExecContext(ctx, q)
		require.NoError(t, err, q)
	}
	span := recordSpan(ctx, t, db, "p", "t")
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	tso := func() uint64 { return currentTS(ctx, t, conn) }
	from := tso()
	client := tidestreamv1.NewPullerServiceClient(harness.Dial(t, srv.addr))
	stream, err := client.Subscribe(ctx, &tidestreamv1.SubscribeRequest{
		ChangefeedId: "e2e", PipelineId: 1, Epoch: 1, FromTs: from, Spans: []*tidestreamv1.Span{span},
	})
	require.NoError(t, err)

	for i := range 50 {
		_, err := conn.ExecContext(ctx, "INSERT INTO p.t VALUES (?, 'x')", i)
		require.NoError(t, err)
	}
	last := tso()
	seen := map[string]bool{}
	var resolved uint64
	for resolved < last {
		b, err := stream.Recv()
		require.NoError(t, err)
		for _, e := range b.Events {
			require.Greater(t, e.CommitTs, resolved, "event after the resolved ts that covers it")
			require.Equal(t, tidestreamv1.OpType_OP_TYPE_PUT, e.Op)
			seen[fmt.Sprintf("%x", e.Key)] = true
		}
		resolved = max(resolved, b.ResolvedTs)
	}
	require.Len(t, seen, 50, "every inserted row once")
}
