package e2e

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hamba "github.com/hamba/avro/v2"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
	"google.golang.org/grpc"

	"github.com/tidestream/tidestream/e2e/harness"
	"github.com/tidestream/tidestream/proto/contract"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// TestEncoderThroughCDCServer subscribes to `cdc server`'s EncoderService as
// a producer would, for a changefeed created with the CLI. The server's
// encoder reads the changefeed from etcd, loads the schema from TiKV and
// follows the DDL-job span through its own sorter and puller: a row written
// after ADD COLUMN carries the column, rows written before it do not, and an
// update of the primary key is a tombstone and then the new row. Records
// are decoded with the schema fetched from the registry by the id in each.
func TestEncoderThroughCDCServer(t *testing.T) {
	pg := startPlayground(t)
	db := pg.db
	srv := startServer(t, "cdc-server", "", "http://"+pg.pdAddr)
	registry := srfake.New()
	t.Cleanup(registry.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	conf := filepath.Join(t.TempDir(), "changefeed.conf")
	require.NoError(t, os.WriteFile(conf, []byte(changefeedConf), 0o600))
	r := harness.Run(t, 90*time.Second, "", harness.CDC(t), "cli", "changefeed", "create",
		"--server=http://"+srv.addr, "--sink-uri=kafka://127.0.0.1:9092/meta?protocol=avro",
		"--schema-registry="+registry.URL(), "--changefeed-id=enc", "--config", conf)
	require.Equal(t, 0, r.ExitCode, "stderr: %s", r.Stderr)

	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	exec := func(q string) {
		_, err := conn.ExecContext(ctx, q)
		require.NoError(t, err, q)
	}
	exec("CREATE DATABASE e")
	exec("CREATE TABLE e.t (id BIGINT PRIMARY KEY, v VARCHAR(20))")
	span := recordSpan(ctx, t, db, "e", "t")
	from := currentTS(ctx, t, conn)

	client := tidestreamv1.NewEncoderServiceClient(harness.Dial(t, srv.addr))
	stream, err := client.Subscribe(ctx, &tidestreamv1.SubscribeRequest{
		ChangefeedId: "enc", PipelineId: 1, Epoch: 1, FromTs: from, Spans: []*tidestreamv1.Span{span},
	})
	require.NoError(t, err)

	exec("INSERT INTO e.t VALUES (1, 'a')")
	exec("ALTER TABLE e.t ADD COLUMN c INT DEFAULT 7")
	exec("INSERT INTO e.t (id, v) VALUES (2, 'b')")
	exec("INSERT INTO e.t VALUES (3, 'c', 9)")
	exec("UPDATE e.t SET id = 10 WHERE id = 1")
	exec("DELETE FROM e.t WHERE id = 2")
	until := currentTS(ctx, t, conn)

	cl, err := sr.NewClient(sr.URLs(registry.URL()))
	require.NoError(t, err)
	decode := avroReader(ctx, t, cl)

	type rec struct {
		id    int64
		value map[string]any // nil: tombstone
	}
	var got []rec
	var resolved, lastCommit uint64
	for resolved < until {
		b, err := stream.Recv()
		require.NoError(t, err)
		require.Empty(t, b.GetWarning())
		for _, r := range b.GetRecords() {
			require.Equal(t, "tidb_e_t", r.GetTopic())
			require.GreaterOrEqual(t, r.GetCommitTs(), lastCommit, "commit ts order")
			require.Greater(t, r.GetCommitTs(), resolved, "a record after the resolved ts covering it")
			lastCommit = r.GetCommitTs()
			k := decode(r.GetKey())
			x := rec{id: k["id"].(int64)}
			if !r.GetTombstone() {
				x.value = decode(r.GetValue())
			} else {
				require.Empty(t, r.GetValue())
			}
			got = append(got, x)
		}
		resolved = max(resolved, b.GetResolvedTs())
	}
	want := []rec{
		{1, map[string]any{"id": int64(1), "v": "a"}},
		{2, map[string]any{"id": int64(2), "v": "b", "c": 7}},
		{3, map[string]any{"id": int64(3), "v": "c", "c": 9}},
		{1, nil},
		{10, map[string]any{"id": int64(10), "v": "a", "c": 7}},
		{2, nil},
	}
	require.Equal(t, want, got)

	versions, err := cl.SubjectVersions(ctx, "tidb_e_t-value")
	require.NoError(t, err)
	require.Len(t, versions, 2, "one value schema before ADD COLUMN, one after")

	// The server's own log shows the DDL stream was followed, not guessed.
	require.False(t, strings.Contains(srv.proc.Log(), "schema history failed"), "history failed:\n%s", srv.proc.Log())
}

// avroReader decodes a Confluent-framed record with the schema the registry
// holds under the id in its header, as any consumer does; nullable unions
// come unwrapped.
func avroReader(ctx context.Context, t *testing.T, cl *sr.Client) func([]byte) map[string]any {
	schemas := map[uint32]hamba.Schema{}
	return func(msg []byte) map[string]any {
		t.Helper()
		require.GreaterOrEqual(t, len(msg), 5)
		require.Equal(t, byte(0), msg[0], "Confluent magic byte")
		id := binary.BigEndian.Uint32(msg[1:5])
		s := schemas[id]
		if s == nil {
			got, err := cl.SchemaByID(ctx, int(id))
			require.NoError(t, err)
			s, err = hamba.Parse(got.Schema)
			require.NoError(t, err)
			schemas[id] = s
		}
		var v map[string]any
		require.NoError(t, hamba.Unmarshal(s, msg[5:], &v))
		for k, x := range v {
			if m, ok := x.(map[string]any); ok && len(m) == 1 {
				for _, inner := range m {
					v[k] = inner
				}
			}
		}
		return v
	}
}

// TestEncoderInItsOwnProcess runs `cdc coordinator`, `cdc puller`, `cdc
// sorter` and `cdc encoder` as four processes on one external etcd. A
// producer's place subscribes the encoder with a route through the other
// two, for a changefeed created through the coordinator; the encoder reads
// the changefeed from etcd and follows the DDL stream through the routed
// sorter. Then the sorter is killed with -9 and replaced: the pipeline is
// subscribed again with epoch 2, the new route and its last resolved ts,
// and the encoder's schema history moves its DDL stream to the new sorter
// too — a column added while the first sorter was gone is in the rows
// written after it, and no row is lost.
func TestEncoderInItsOwnProcess(t *testing.T) {
	etcd := harness.StartEtcd(t)
	pg := startPlayground(t)
	registry := srfake.New()
	t.Cleanup(registry.Close)
	_, coordAddr := startRole(t, "coordinator", "coord", etcd.Endpoint, pg.pdAddr)
	_, pullerAddr := startRole(t, "puller", "puller-1", etcd.Endpoint, pg.pdAddr)
	sorter, sorterAddr := startRole(t, "sorter", "sorter-1", etcd.Endpoint, pg.pdAddr)
	_, encoderAddr := startRole(t, "encoder", "encoder-1", etcd.Endpoint, pg.pdAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	conf := filepath.Join(t.TempDir(), "changefeed.conf")
	require.NoError(t, os.WriteFile(conf, []byte(changefeedConf), 0o600))
	r := harness.Run(t, 90*time.Second, "", harness.CDC(t), "cli", "changefeed", "create",
		"--server=http://"+coordAddr, "--sink-uri=kafka://127.0.0.1:9092/meta?protocol=avro",
		"--schema-registry="+registry.URL(), "--changefeed-id=multi", "--config", conf)
	require.Equal(t, 0, r.ExitCode, "stderr: %s", r.Stderr)

	conn, err := pg.db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	exec := execOn(ctx, t, conn)
	exec("CREATE DATABASE m")
	exec("CREATE TABLE m.t (id BIGINT PRIMARY KEY, v VARCHAR(20))")
	span := recordSpan(ctx, t, pg.db, "m", "t")
	cl, err := sr.NewClient(sr.URLs(registry.URL()))
	require.NoError(t, err)
	decode := avroReader(ctx, t, cl)
	encoder := tidestreamv1.NewEncoderServiceClient(harness.Dial(t, encoderAddr))
	subscribe := func(epoch, from uint64, sorter string) grpc.ServerStreamingClient[tidestreamv1.EncodedBatch] {
		st, err := encoder.Subscribe(ctx, &tidestreamv1.SubscribeRequest{
			ChangefeedId: "multi", PipelineId: 1, Epoch: epoch, FromTs: from, Spans: []*tidestreamv1.Span{span},
			Route: &tidestreamv1.Route{PullerAddr: pullerAddr, SorterAddr: sorter, EncoderAddr: encoderAddr, PdAddrs: []string{pg.pdAddr}},
		})
		require.NoError(t, err)
		return st
	}
	rows := map[int64]map[string]any{}
	readUntil := func(st grpc.ServerStreamingClient[tidestreamv1.EncodedBatch], from, target uint64) uint64 {
		resolved := from
		for resolved < target {
			b, err := st.Recv()
			require.NoError(t, err)
			for _, rec := range b.GetRecords() {
				require.Greater(t, rec.GetCommitTs(), resolved)
				k := decode(rec.GetKey())["id"].(int64)
				require.NotContains(t, rows, k, "row %d delivered twice", k)
				rows[k] = decode(rec.GetValue())
			}
			resolved = max(resolved, b.GetResolvedTs())
		}
		return resolved
	}

	start := currentTS(ctx, t, conn)
	first := subscribe(1, start, sorterAddr)
	for i := range 50 {
		exec("INSERT INTO m.t VALUES (?, 'before')", i)
	}
	resolved := readUntil(first, start, currentTS(ctx, t, conn))
	require.Len(t, rows, 50)

	sorter.Kill()
	exec("ALTER TABLE m.t ADD COLUMN c INT DEFAULT 7")
	for i := 50; i < 100; i++ {
		exec("INSERT INTO m.t VALUES (?, 'during', ?)", i, i)
	}
	_, sorterAddr2 := startRole(t, "sorter", "sorter-2", etcd.Endpoint, pg.pdAddr)
	second := subscribe(2, resolved, sorterAddr2)
	for i := 100; i < 150; i++ {
		exec("INSERT INTO m.t VALUES (?, 'after', ?)", i, i)
	}
	readUntil(second, resolved, currentTS(ctx, t, conn))
	require.Len(t, rows, 150, "every row once across the sorter's death")
	for i := range int64(150) {
		if i < 50 {
			require.NotContains(t, rows[i], "c", "row %d was written before ADD COLUMN", i)
		} else {
			require.Equal(t, int(i), rows[i]["c"], "row %d", i)
		}
	}
	_, err = first.Recv()
	for err == nil {
		_, err = first.Recv()
	}
	require.Equal(t, contract.Fenced, contract.Classify(err), "the epoch-1 stream ends fenced: %v", err)
}
