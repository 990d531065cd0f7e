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
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tidestream/tidestream/coordinator/store"
	"github.com/tidestream/tidestream/e2e/harness"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
	"github.com/tidestream/tidestream/services/devstack"
)

// TestLifecycleActsOnRunningPipelines drives pause, resume (plain and with
// --overwrite-checkpoint-ts), update and remove, and a target ts, through
// the CLI against one `cdc server` replicating into devstack, as TiCDC's
// users do: pause stops the pipelines and keeps the checkpoint, resume
// restarts them from it (or from the overwritten one), an update made while
// paused takes effect on resume, the changefeed finishes at its target ts
// with nothing after it produced, and remove deletes its pipelines.
func TestLifecycleActsOnRunningPipelines(t *testing.T) {
	pg := startPlayground(t)
	etcd := harness.StartEtcd(t)
	dev := startDevstack(t, devstack.DefaultConfig())
	_, addr := startCDCServer(t, etcd.Endpoint, pg.pdAddr, t.TempDir(), nil)
	srv := &server{addr: addr}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	conn, err := pg.db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	sql := func(q string, args ...any) {
		_, err := conn.ExecContext(ctx, q, args...)
		require.NoError(t, err, q)
	}
	insert := func(from, to int) uint64 {
		for i := from; i < to; i++ {
			sql("INSERT INTO life.t VALUES (?, ?)", i, fmt.Sprint("v", i))
		}
		return currentTS(ctx, t, conn)
	}
	sql("CREATE DATABASE life")
	sql("CREATE TABLE life.t (id BIGINT PRIMARY KEY, v VARCHAR(20))")

	dir := t.TempDir()
	conf := filepath.Join(dir, "changefeed.conf")
	require.NoError(t, os.WriteFile(conf, []byte(changefeedConf), 0o600))
	r := harness.Run(t, 90*time.Second, "", harness.CDC(t), "cli", "changefeed", "create",
		"--server=http://"+srv.addr, "--sink-uri=kafka://"+strings.Join(dev.Kafka, ",")+"/meta?protocol=avro&auto-create-topic=true&partition-num=1&replication-factor=1",
		"--schema-registry="+dev.Registry, "--changefeed-id=life", "--config", conf)
	require.Equal(t, 0, r.ExitCode, "stderr: %s", r.Stderr)

	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.Endpoint}, DialTimeout: 5 * time.Second})
	require.NoError(t, err)
	defer cli.Close()
	keys, err := store.NewKeys("default")
	require.NoError(t, err)
	st := store.New(cli, keys)
	status := func() *pb.ChangefeedStatus {
		cf, err := st.Get(ctx, "default", "life")
		require.NoError(t, err)
		return cf.Status
	}
	awaitCheckpoint := func(ts uint64) {
		harness.Eventually(t, 60*time.Second, "checkpoint past the last write", func() error {
			if s := status(); s.GetCheckpointTs() < ts {
				return fmt.Errorf("%s at %d < %d (%s)", s.GetState(), s.GetCheckpointTs(), ts, s.GetError().GetMessage())
			}
			return nil
		})
	}
	pipelines := func() int {
		as, _, err := st.Assignments(ctx, "")
		require.NoError(t, err)
		return len(as)
	}
	rc, err := sr.NewClient(sr.URLs(dev.Registry))
	require.NoError(t, err)
	decode := avroReader(ctx, t, rc)
	adm, err := kgo.NewClient(kgo.SeedBrokers(dev.Kafka...))
	require.NoError(t, err)
	defer adm.Close()
	// ids returns the ids in topic, in order, once it holds at least n
	// records.
	ids := func(topic string, n int) []int64 {
		var out []int64
		harness.Eventually(t, 60*time.Second, fmt.Sprintf("%d records in %s", n, topic), func() error {
			ends, err := kadm.NewClient(adm).ListEndOffsets(ctx, topic)
			if err != nil {
				return err
			}
			var total int64
			ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
			if total < int64(n) {
				return fmt.Errorf("%d records", total)
			}
			kc, err := kgo.NewClient(kgo.SeedBrokers(dev.Kafka...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			if err != nil {
				return err
			}
			defer kc.Close()
			out = out[:0]
			for int64(len(out)) < total {
				fs := kc.PollFetches(ctx)
				if err := fs.Err0(); err != nil {
					return err
				}
				fs.EachRecord(func(r *kgo.Record) { out = append(out, decode(r.Key)["id"].(int64)) })
			}
			return nil
		})
		return out
	}
	seq := func(from, to int64) []int64 {
		var out []int64
		for i := from; i < to; i++ {
			out = append(out, i)
		}
		return out
	}

	awaitCheckpoint(insert(0, 5))
	overwriteTo := currentTS(ctx, t, conn) // before rows 5..9
	awaitCheckpoint(insert(5, 10))
	require.Equal(t, seq(0, 10), ids("tidb_life_t", 10))

	// Pause: the pipelines stop, the checkpoint stays; rows written
	// meanwhile wait.
	p := srv.cli(t, "pause", "-c", "life")
	require.Equal(t, 0, p.ExitCode, p.Stderr)
	harness.Eventually(t, 10*time.Second, "paused changefeed's pipelines stopped", func() error {
		if n := pipelines(); n != 0 {
			return fmt.Errorf("%d pipelines", n)
		}
		return nil
	})
	paused := status().GetCheckpointTs()
	insert(10, 20)
	require.Equal(t, paused, status().GetCheckpointTs(), "a paused changefeed's checkpoint stays")
	require.Equal(t, "stopped", srv.state(t, "life"))

	// Resume from an overwritten, earlier checkpoint: rows 5.. arrive
	// again, then the ones written while paused.
	res := harness.Run(t, 90*time.Second, "", harness.CDC(t), "cli", "changefeed", "resume", "-c", "life",
		"--overwrite-checkpoint-ts", fmt.Sprint(overwriteTo), "--no-confirm", "--server=http://"+srv.addr)
	require.Equal(t, 0, res.ExitCode, res.Stderr)
	awaitCheckpoint(currentTS(ctx, t, conn))
	require.Equal(t, append(seq(0, 10), seq(5, 20)...), ids("tidb_life_t", 25), "replayed from the overwritten checkpoint")

	// Update while paused: a new topic and a target ts. Rows up to the
	// target go to the new topic on resume; none after it is produced.
	p = srv.cli(t, "pause", "-c", "life")
	require.Equal(t, 0, p.ExitCode, p.Stderr)
	harness.Eventually(t, 10*time.Second, "pipelines stopped", func() error {
		if n := pipelines(); n != 0 {
			return fmt.Errorf("%d pipelines", n)
		}
		return nil
	})
	target := insert(20, 30)
	insert(30, 40)
	conf2 := filepath.Join(dir, "changefeed2.conf")
	require.NoError(t, os.WriteFile(conf2, []byte(strings.Replace(changefeedConf, "tidb_{schema}_{table}", "v2_{schema}_{table}", 1)), 0o600))
	up := harness.Run(t, 90*time.Second, "", harness.CDC(t), "cli", "changefeed", "update", "-c", "life",
		"--config", conf2, "--target-ts", fmt.Sprint(target), "--no-confirm", "--server=http://"+srv.addr)
	require.Equal(t, 0, up.ExitCode, up.Stderr)
	res = srv.cli(t, "resume", "-c", "life")
	require.Equal(t, 0, res.ExitCode, res.Stderr)
	harness.Eventually(t, 60*time.Second, "finished at the target ts", func() error {
		s := status()
		if s.GetState() != pb.ChangefeedState_CHANGEFEED_STATE_FINISHED {
			return fmt.Errorf("%s at %d (%s)", s.GetState(), s.GetCheckpointTs(), s.GetError().GetMessage())
		}
		return nil
	})
	require.Equal(t, target, status().GetCheckpointTs(), "finished exactly at the target")
	require.Equal(t, seq(20, 30), ids("v2_life_t", 10), "the update took effect on resume; nothing after the target")
	require.Len(t, ids("tidb_life_t", 25), 25, "the old topic got nothing more")
	harness.Eventually(t, 10*time.Second, "finished changefeed's pipelines stopped", func() error {
		if n := pipelines(); n != 0 {
			return fmt.Errorf("%d pipelines", n)
		}
		return nil
	})

	// Remove: its records go, progress included.
	rm := srv.cli(t, "remove", "-c", "life")
	require.Equal(t, 0, rm.ExitCode, rm.Stderr)
	harness.Eventually(t, 10*time.Second, "removed changefeed's progress deleted", func() error {
		prog, err := st.PipelineProgress(ctx, "default", "life")
		if err != nil {
			return err
		}
		if len(prog) != 0 || pipelines() != 0 {
			return fmt.Errorf("%d progress records, %d pipelines", len(prog), pipelines())
		}
		return nil
	})
}
