package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// clusterFake answers query, processor list and capture list with fixed
// data; old behaves as a server from before Query.
type clusterFake struct {
	pb.UnimplementedChangefeedServiceServer
	pb.UnimplementedClusterServiceServer
	old bool
}

var (
	cpTS   = uint64(time.Date(2024, 4, 20, 17, 0, 55, 645e6, time.UTC).UnixMilli()) << 18
	cfInfo = &pb.ChangefeedInfo{Namespace: "default", Id: "cf", UpstreamId: 7, StartTs: cpTS - 10, CheckpointTs: cpTS,
		State: pb.ChangefeedState_CHANGEFEED_STATE_NORMAL, CreatorVersion: "test"}
)

func (f *clusterFake) Get(context.Context, *pb.GetChangefeedRequest) (*pb.ChangefeedInfo, error) {
	return cfInfo, nil
}

func (f *clusterFake) Query(context.Context, *pb.GetChangefeedRequest) (*pb.ChangefeedDetail, error) {
	if f.old {
		return nil, status.Error(codes.Unimplemented, "unknown method Query")
	}
	pipe := func(id int64, table, producer string, cp uint64) *pb.TablePipeline {
		return &pb.TablePipeline{PipelineId: id, TableId: id, SchemaName: "tpcc", TableName: table, Epoch: 2,
			StartTs: cpTS - 10, CheckpointTs: cp, ResolvedTs: cp + 5,
			PullerMember: "pl", SorterMember: "so", EncoderMember: "en", ProducerMember: producer}
	}
	failing := pipe(73, "orders", "m1", cpTS)
	failing.Error = &pb.RunningError{Addr: "10.0.0.4:8300", Code: "CDC:ErrKafka", Message: "broker down"}
	return &pb.ChangefeedDetail{Info: cfInfo, Pipelines: []*pb.TablePipeline{
		pipe(71, "customer", "m2", cpTS+1), pipe(72, "district", "m1", cpTS+2), failing,
	}}, nil
}

func (f *clusterFake) ListProcessors(context.Context, *pb.ListProcessorsRequest) (*pb.ListProcessorsResponse, error) {
	return &pb.ListProcessorsResponse{Processors: []*pb.Processor{
		{Namespace: "default", ChangefeedId: "cf", MemberId: "m1"},
		{Namespace: "default", ChangefeedId: "cf", MemberId: "m2"},
	}}, nil
}

func (f *clusterFake) Members(context.Context, *pb.MembersRequest) (*pb.MembersResponse, error) {
	return &pb.MembersResponse{ClusterId: "default", Members: []*pb.Member{
		{Id: "m1", Addr: "10.0.0.1:8300", Roles: []string{"coordinator", "producer"}, IsOwner: true},
		{Id: "m2", Addr: "10.0.0.2:8300"},
	}}, nil
}

func serveCluster(t *testing.T, f *clusterFake) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	gs := grpc.NewServer()
	pb.RegisterChangefeedServiceServer(gs, f)
	pb.RegisterClusterServiceServer(gs, f)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

func runCmd(t *testing.T, cmd *cobra.Command, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, cmd.ExecuteContext(ctx), out.String())
	return out.String()
}

func cpTime(ts uint64) string { return tsoTime(ts).Local().Format(checkpointFormat) }

// The full query: TiCDC's keys in TiCDC's order, task_status grouping the
// tables by the member running them, then our per-table list.
func TestQueryShowsTaskStatusAndPipelines(t *testing.T) {
	addr := serveCluster(t, &clusterFake{})
	out := runCmd(t, NewChangefeedCommand(), "query", "-c", "cf", "--server=http://"+addr)

	keys := []string{`"upstream_id"`, `"namespace"`, `"id"`, `"sink_uri"`, `"config"`, `"create_time"`, `"start_ts"`,
		`"resolved_ts"`, `"target_ts"`, `"checkpoint_tso"`, `"checkpoint_time"`, `"state"`, `"error"`, `"creator_version"`,
		`"task_status"`, `"tidestream_pipelines"`}
	at := -1
	for _, k := range keys {
		i := strings.Index(out, "\n  "+k+":")
		require.Greater(t, i, at, "top-level key %s out of order in\n%s", k, out)
		at = i
	}

	var got struct {
		TaskStatus []struct {
			CaptureID string  `json:"capture_id"`
			TableIDs  []int64 `json:"table_ids"`
		} `json:"task_status"`
		Pipelines []map[string]any `json:"tidestream_pipelines"`
	}
	dec := json.NewDecoder(strings.NewReader(out))
	dec.UseNumber()
	require.NoError(t, dec.Decode(&got))
	require.Len(t, got.TaskStatus, 2)
	require.Equal(t, "m1", got.TaskStatus[0].CaptureID)
	require.Equal(t, []int64{72, 73}, got.TaskStatus[0].TableIDs)
	require.Equal(t, "m2", got.TaskStatus[1].CaptureID)
	require.Equal(t, []int64{71}, got.TaskStatus[1].TableIDs)

	require.Len(t, got.Pipelines, 3)
	first := got.Pipelines[0]
	require.Equal(t, map[string]any{
		"table_id": json.Number("71"), "schema_name": "tpcc", "table_name": "customer", "pipeline_id": json.Number("71"),
		"epoch": json.Number("2"), "checkpoint_tso": json.Number(jsonUint(cpTS + 1)), "checkpoint_time": cpTime(cpTS + 1),
		"resolved_ts": json.Number(jsonUint(cpTS + 6)), "puller_member": "pl", "sorter_member": "so", "encoder_member": "en",
		"producer_member": "m2", "error": nil,
	}, first)
	failing := got.Pipelines[2]["error"].(map[string]any)
	require.Equal(t, "CDC:ErrKafka", failing["code"])
	require.Equal(t, "broker down", failing["message"])
	require.Equal(t, "10.0.0.4:8300", failing["addr"])
}

func jsonUint(v uint64) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// -s stays TiCDC's short form; a server from before Query still answers
// the full form, with nothing placed to show.
func TestQuerySimpleAndOlderServer(t *testing.T) {
	addr := serveCluster(t, &clusterFake{old: true})
	out := runCmd(t, NewChangefeedCommand(), "query", "-c", "cf", "-s", "--server=http://"+addr)
	require.Equal(t, "{\n  \"upstream_id\": 7,\n  \"namespace\": \"default\",\n  \"id\": \"cf\",\n  \"state\": \"normal\",\n"+
		"  \"checkpoint_tso\": "+jsonUint(cpTS)+",\n  \"checkpoint_time\": \""+cpTime(cpTS)+"\",\n  \"error\": null\n}\n", out)

	out = runCmd(t, NewChangefeedCommand(), "query", "-c", "cf", "--server=http://"+addr)
	require.Contains(t, out, "\"task_status\": [],\n  \"tidestream_pipelines\": []\n}\n")
}

func TestProcessorListShape(t *testing.T) {
	addr := serveCluster(t, &clusterFake{})
	out := runCmd(t, NewProcessorCommand(), "list", "--server=http://"+addr, "--pd=http://127.0.0.1:2379")
	require.Equal(t, `[
  {
    "changefeed_id": "cf",
    "namespace": "default",
    "capture_id": "m1"
  },
  {
    "changefeed_id": "cf",
    "namespace": "default",
    "capture_id": "m2"
  }
]
`, out)
}

func TestCaptureListShape(t *testing.T) {
	addr := serveCluster(t, &clusterFake{})
	out := runCmd(t, NewCaptureCommand(), "list", "--server=http://"+addr)
	require.Equal(t, `[
  {
    "id": "m1",
    "is_owner": true,
    "address": "10.0.0.1:8300",
    "cluster_id": "default",
    "roles": [
      "coordinator",
      "producer"
    ]
  },
  {
    "id": "m2",
    "is_owner": false,
    "address": "10.0.0.2:8300",
    "cluster_id": "default",
    "roles": []
  }
]
`, out)
}
