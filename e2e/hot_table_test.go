package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/tidestream/tidestream/coordinator/scheduler"
	"github.com/tidestream/tidestream/coordinator/store"
	"github.com/tidestream/tidestream/e2e/harness"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
	"github.com/tidestream/tidestream/services/devstack"
)

// TestHotTableSplitAcrossProcesses: one table of four regions, a
// changefeed with scheduler.enable-table-across-nodes and a
// write-key-threshold of 1,200 rows a minute (region-threshold stays at its
// default, far above), and a cluster of one coordinator, puller and sorter
// and two encoders and producers, each its own `cdc` process. A load
// upserts and deletes rows over 1,000 keys, about 3,000 a minute, with
// every commit ts recorded; once the producers' row counts show it, the
// owner splits the table into two key-range pieces, each on its own
// encoder and producer. Then the producer of one piece is killed with -9.
// Throughout, every write at or below a sampled changefeed checkpoint must
// be in Kafka; at the end every key's versions must first arrive in commit
// order and TiDB's rows must equal each key's last record.
func TestHotTableSplitAcrossProcesses(t *testing.T) {
	began := time.Now()
	etcd := harness.StartEtcd(t)
	pg := startPlayground(t)
	dev := startDevstack(t, devstack.DefaultConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	c := &roleCluster{t: t, etcd: etcd.Endpoint, pd: "http://" + pg.pdAddr, members: map[string]*roleMember{}}
	for _, m := range []struct{ role, id string }{
		{"coordinator", "coord-1"}, {"puller", "puller-1"}, {"sorter", "sorter-1"},
		{"encoder", "encoder-1"}, {"encoder", "encoder-2"},
		{"producer", "producer-1"}, {"producer", "producer-2"},
	} {
		c.start(m.role, m.id)
	}
	st := c.openStore()

	conn, err := pg.db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	exec := execOn(ctx, t, conn)
	exec("CREATE DATABASE " + scaleDB)
	exec(fmt.Sprintf("CREATE TABLE %s.t00 (id BIGINT PRIMARY KEY, v VARCHAR(32), n INT NOT NULL DEFAULT 0)", scaleDB))
	exec(fmt.Sprintf("SPLIT TABLE %s.t00 BY (250), (500), (750)", scaleDB))
	conf := filepath.Join(t.TempDir(), "changefeed.conf")
	require.NoError(t, os.WriteFile(conf, []byte(changefeedConf+"[scheduler]\nenable-table-across-nodes = true\nwrite-key-threshold = 1200\n"), 0o600))
	r := harness.Run(t, 90*time.Second, "", harness.CDC(t), "cli", "changefeed", "create",
		"--server=http://"+c.byID("coord-1").addr,
		"--sink-uri=kafka://"+strings.Join(dev.Kafka, ",")+"/meta?protocol=avro&auto-create-topic=true&partition-num=3&replication-factor=1",
		"--schema-registry="+dev.Registry, "--changefeed-id="+scaleCF, "--config", conf)
	require.Equal(t, 0, r.ExitCode, "stderr: %s", r.Stderr)

	tsoConn, err := pg.db.Conn(ctx)
	require.NoError(t, err)
	defer tsoConn.Close()
	tso := func() uint64 { return currentTS(ctx, t, tsoConn) }
	caughtUp := func(what string, ts uint64, timeout time.Duration) time.Time {
		t.Helper()
		harness.Eventually(t, timeout, what, func() error {
			cf, err := st.Get(ctx, store.DefaultNamespace, scaleCF)
			if err != nil {
				return err
			}
			if cp := cf.Status.GetCheckpointTs(); cp < ts {
				return fmt.Errorf("checkpoint %d < %d (state %s, error %q); behind: %s", cp, ts,
					cf.Status.GetState(), cf.Status.GetError().GetMessage(), c.behind(ctx, ts))
			}
			return nil
		})
		return time.Now()
	}

	load := &sqlLoad{tables: 1, keys: 1000}
	stopLoad := load.start(ctx, conn)
	defer stopLoad()
	rc, err := sr.NewClient(sr.URLs(dev.Registry))
	require.NoError(t, err)
	kv := newKafkaView(t, dev.Kafka, rc)
	kv.tables = 1
	defer kv.close()
	chk := &checkpointChecker{kv: kv, load: load, checkpoint: c.checkpoint}
	stopChecker := chk.start(ctx)
	defer stopChecker()

	// The split: two pieces of the table, apart on both stage roles that
	// have two members.
	var pieces []*pb.PipelineAssignment
	harness.Eventually(t, 60*time.Second, "the table split into two pieces on different encoders and producers", func() error {
		pieces = pieces[:0]
		for _, a := range c.assignments(ctx) {
			pieces = append(pieces, a.Record)
		}
		if len(pieces) != 2 {
			return fmt.Errorf("%d pipelines", len(pieces))
		}
		for _, p := range pieces {
			if _, _, k, _, ok := scheduler.PieceOf(p.GetPipelineId()); !ok || k != 2 {
				return fmt.Errorf("pipeline %d is not a piece of two", p.GetPipelineId())
			}
		}
		if pieces[0].GetProducerMember() == pieces[1].GetProducerMember() || pieces[0].GetEncoderMember() == pieces[1].GetEncoderMember() {
			return fmt.Errorf("pieces share a member: %v / %v", pieces[0], pieces[1])
		}
		return nil
	})
	split := time.Since(began)
	caughtUp("caught up after the split", tso(), 60*time.Second)
	require.NoError(t, chk.failure(), "checkpoint sample")
	require.NoError(t, load.failure(), "load")

	victim := c.byID(pieces[0].GetProducerMember())
	victim.proc.Kill()
	killedAt, killTS := time.Now(), tso()
	t.Logf("kill -9 %s (producer of piece %d, pid %d)", victim.id, pieces[0].GetPipelineId(), victim.proc.PID())
	recovered := caughtUp("after kill -9 of a piece's producer", killTS, 60*time.Second)
	require.Empty(t, c.pipelinesOn(ctx, "producer", victim.id), "pieces still on the killed producer")
	require.NoError(t, chk.failure(), "checkpoint sample")

	stopLoad()
	require.NoError(t, load.failure(), "load")
	writes := load.snapshot()
	require.NotEmpty(t, writes)
	caughtUp("checkpoint past the last write", writes[len(writes)-1].ts, 60*time.Second)
	stopChecker()
	require.NoError(t, chk.failure(), "checkpoint sample")
	require.NoError(t, kv.catchUp(ctx, 60*time.Second))
	cf, err := st.Get(ctx, store.DefaultNamespace, scaleCF)
	require.NoError(t, err)
	require.NoError(t, kv.verify(writes, cf.Status.GetCheckpointTs()))
	require.NoError(t, kv.verifyOrder(writes), "per key, first occurrences in commit order")
	rows := readScaleTables(ctx, t, pg.db, 1)
	require.NoError(t, kv.verifyState(rows), "TiDB's rows against the last version of each key in Kafka")
	t.Logf("split into 2 pieces %s after the start; after kill -9 of %s the checkpoint passed the kill's TSO in %s; "+
		"%d writes, %d records read (%d duplicates), %d checkpoint samples; wall time %s",
		split.Round(100*time.Millisecond), victim.id, recovered.Sub(killedAt).Round(100*time.Millisecond),
		len(writes), kv.records, kv.records-len(writes), chk.samples(), time.Since(began).Round(100*time.Millisecond))
}
