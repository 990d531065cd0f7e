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
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tidestream/tidestream/coordinator/store"
	"github.com/tidestream/tidestream/e2e/harness"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// `cdc cli capture list`, `processor list` and `changefeed query` through
// the real binary, against a lone `cdc coordinator` on external etcd. With
// pdfake (no TiKV) and no stage member alive the owner cannot place
// pipelines itself, so the test writes the assignment and progress records
// the owner and a producer would, straight into etcd; the owner leaves
// records it cannot place alone, and retires them when the changefeed is
// paused.
func TestClusterViewsThroughCLI(t *testing.T) {
	etcd := harness.StartEtcd(t)
	pd := startPD(t)
	_, addr := startRole(t, "coordinator", "coord", etcd.Endpoint, pd.URL())
	cli := func(args ...string) string {
		t.Helper()
		r := harness.Run(t, 60*time.Second, "", harness.CDC(t), append(append([]string{"cli"}, args...), "--server=http://"+addr)...)
		require.Equal(t, 0, r.ExitCode, "cdc cli %v: %s", args, r.Stderr)
		return r.Stdout
	}

	harness.Eventually(t, 30*time.Second, "coordinator is the owner", func() error {
		var caps []map[string]any
		if err := json.Unmarshal([]byte(cli("capture", "list")), &caps); err != nil {
			return err
		}
		want := []map[string]any{{"id": "coord", "is_owner": true, "address": addr, "cluster_id": "multi", "roles": []any{"coordinator"}}}
		if fmt.Sprint(caps) != fmt.Sprint(want) {
			return fmt.Errorf("capture list %v, want %v", caps, want)
		}
		return nil
	})
	require.Equal(t, "[]\n", cli("processor", "list"))

	conf := filepath.Join(t.TempDir(), "changefeed.conf")
	require.NoError(t, os.WriteFile(conf, []byte(changefeedConf), 0o600))

	cli("changefeed", "create", "--pd="+pd.URL(), "--changefeed-id=cf", "--no-confirm",
		"--sink-uri=kafka://127.0.0.1:9092/t?protocol=avro", "--schema-registry=http://127.0.0.1:8081",
		"--config", conf)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ec, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.Endpoint}, DialTimeout: 5 * time.Second})
	require.NoError(t, err)
	defer ec.Close()
	keys, err := store.NewKeys("multi")
	require.NoError(t, err)
	cf, err := store.New(ec, keys).Get(ctx, "default", "cf")
	require.NoError(t, err)
	start := cf.Status.GetCheckpointTs()
	put := func(key string, m proto.Message) {
		b, err := protojson.Marshal(m)
		require.NoError(t, err)
		_, err = ec.Put(ctx, key, string(b))
		require.NoError(t, err)
	}
	for i, producer := range []string{"producer-2", "producer-1", "producer-1"} {
		id := int64(71 + i)
		put(keys.Assignment(producer, "default", "cf", id), &tidestreamv1.PipelineAssignment{
			Namespace: "default", ChangefeedId: "cf", PipelineId: id, TableId: id, SchemaName: "tpcc", TableName: fmt.Sprint("t", id),
			Epoch: 5, StartTs: start, ChangefeedEpoch: cf.Status.GetEpoch(),
			Route:        &tidestreamv1.Route{PullerAddr: "127.0.0.1:1", SorterAddr: "127.0.0.1:2", EncoderAddr: "127.0.0.1:3", PdAddrs: cf.Info.GetPdAddrs()},
			PullerMember: "puller-1", SorterMember: "sorter-1", EncoderMember: "encoder-1", ProducerMember: producer,
		})
	}
	put(keys.Progress("default", "cf", 72), &tidestreamv1.PipelineStatus{Epoch: 5, CheckpointTs: start + 100<<18, ResolvedTs: start + 200<<18,
		ProducerMember: "producer-1", Error: &tidestreamv1.RunningError{Code: "CDC:ErrKafka", Message: "broker unreachable"}})
	put(keys.Progress("default", "cf", 73), &tidestreamv1.PipelineStatus{Epoch: 4, CheckpointTs: start + 900<<18, ProducerMember: "producer-1"})

	require.Equal(t, `[
  {
    "changefeed_id": "cf",
    "namespace": "default",
    "capture_id": "producer-1"
  },
  {
    "changefeed_id": "cf",
    "namespace": "default",
    "capture_id": "producer-2"
  }
]
`, cli("processor", "list"))

	var q struct {
		ID         string `json:"id"`
		TaskStatus []struct {
			CaptureID string  `json:"capture_id"`
			TableIDs  []int64 `json:"table_ids"`
		} `json:"task_status"`
		Pipelines []struct {
			TableID        int64  `json:"table_id"`
			SchemaName     string `json:"schema_name"`
			TableName      string `json:"table_name"`
			Epoch          uint64 `json:"epoch"`
			CheckpointTso  uint64 `json:"checkpoint_tso"`
			CheckpointTime string `json:"checkpoint_time"`
			ResolvedTs     uint64 `json:"resolved_ts"`
			PullerMember   string `json:"puller_member"`
			ProducerMember string `json:"producer_member"`
			Error          *struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		} `json:"tidestream_pipelines"`
	}
	out := cli("changefeed", "query", "-c", "cf")
	require.NoError(t, json.Unmarshal([]byte(out), &q), out)
	require.Equal(t, "cf", q.ID)
	require.Len(t, q.TaskStatus, 2, out)
	require.Equal(t, "producer-1", q.TaskStatus[0].CaptureID)
	require.Equal(t, []int64{72, 73}, q.TaskStatus[0].TableIDs)
	require.Equal(t, "producer-2", q.TaskStatus[1].CaptureID)
	require.Equal(t, []int64{71}, q.TaskStatus[1].TableIDs)
	require.Len(t, q.Pipelines, 3, out)
	p71, p72, p73 := q.Pipelines[0], q.Pipelines[1], q.Pipelines[2]
	require.Equal(t, int64(71), p71.TableID)
	require.Equal(t, "tpcc", p71.SchemaName)
	require.Equal(t, "t71", p71.TableName)
	require.Equal(t, start, p71.CheckpointTso, "no report yet: its start ts")
	require.Equal(t, "puller-1", p71.PullerMember)
	require.Nil(t, p71.Error)
	require.Equal(t, start+100<<18, p72.CheckpointTso)
	require.Equal(t, start+200<<18, p72.ResolvedTs)
	require.Equal(t, uint64(5), p72.Epoch)
	_, err = time.ParseInLocation("2006-01-02 15:04:05.000", p72.CheckpointTime, time.Local)
	require.NoError(t, err)
	require.NotNil(t, p72.Error)
	require.Equal(t, "CDC:ErrKafka", p72.Error.Code)
	require.Equal(t, start, p73.CheckpointTso, "a report of epoch 4 is not epoch 5's")

	// -s is unchanged: TiCDC's short form only.
	short := cli("changefeed", "query", "-c", "cf", "-s")
	require.NotContains(t, short, "task_status")
	require.NotContains(t, short, "tidestream_pipelines")

	// Paused, the changefeed runs nothing: the owner retires its records.
	cli("changefeed", "pause", "-c", "cf")
	harness.Eventually(t, 30*time.Second, "owner retires the paused changefeed's assignments", func() error {
		if out := cli("processor", "list"); out != "[]\n" {
			return fmt.Errorf("processor list: %s", out)
		}
		return nil
	})
	out = cli("changefeed", "query", "-c", "cf")
	require.True(t, strings.HasSuffix(out, "\"task_status\": [],\n  \"tidestream_pipelines\": []\n}\n"), out)
}
