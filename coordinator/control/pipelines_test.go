package control_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// putRecord writes a record as the owner or a producer would, straight
// into etcd at its KEYS.md key: the API must answer from what is there.
func (e *env) putRecord(t *testing.T, key string, m proto.Message) {
	t.Helper()
	b, err := protojson.Marshal(m)
	require.NoError(t, err)
	_, err = e.st.Client().Put(e.ctx, key, string(b))
	require.NoError(t, err)
}

func (e *env) assign(t *testing.T, cf, producer, schema, table string, id int64, epoch, startTS uint64) {
	t.Helper()
	e.putRecord(t, e.st.Keys().Assignment(producer, "default", cf, id), &pb.PipelineAssignment{
		Namespace: "default", ChangefeedId: cf, PipelineId: id, TableId: id, SchemaName: schema, TableName: table,
		Epoch: epoch, StartTs: startTS, ChangefeedEpoch: 1,
		Route:        &pb.Route{PullerAddr: "10.0.0.1:8300", SorterAddr: "10.0.0.2:8300", EncoderAddr: "10.0.0.3:8300"},
		PullerMember: "puller-" + producer, SorterMember: "sorter-" + producer, EncoderMember: "encoder-" + producer,
		ProducerMember: producer,
	})
}

func (e *env) progress(t *testing.T, cf string, id int64, st *pb.PipelineStatus) {
	t.Helper()
	e.putRecord(t, e.st.Keys().Progress("default", cf, id), st)
}

// Query joins each assignment with its progress record only when the
// record was written under the assignment's epoch; otherwise (and before
// any record) the pipeline stands at its start ts. The pipelines of other
// changefeeds, on the same members, are not its.
func TestQueryShowsTablePipelines(t *testing.T) {
	e := setup(t)
	for _, id := range []string{"cf", "cf-2", "idle"} {
		_, err := e.cf.Create(e.ctx, seed(id))
		require.NoError(t, err)
	}
	const start = uint64(1000)
	// Written out of table order, across two producers.
	e.assign(t, "cf", "p1", "test", "c", 13, 1, start)
	e.assign(t, "cf", "p1", "test", "b", 12, 3, start)
	e.assign(t, "cf", "p2", "test", "a", 11, 2, start)
	e.assign(t, "cf", "p2", "test", "d", 14, 1, start+5)
	e.assign(t, "cf-2", "p1", "test", "a", 11, 1, start)
	e.assign(t, "cf-2", "p3", "test", "z", 99, 1, start)

	// b: reported under its epoch.
	e.progress(t, "cf", 12, &pb.PipelineStatus{Epoch: 3, CheckpointTs: 1500, ResolvedTs: 1600, ProducerMember: "p1"})
	// a: a report of an earlier epoch, with an error, counts for nothing.
	e.progress(t, "cf", 11, &pb.PipelineStatus{Epoch: 1, CheckpointTs: 5000, ResolvedTs: 5000, ProducerMember: "p2",
		Error: &pb.RunningError{Message: "old run"}})
	// c: failing fatally; its producer's text is masked where it looks
	// like a credential.
	e.progress(t, "cf", 13, &pb.PipelineStatus{Epoch: 1, CheckpointTs: 900, ResolvedTs: 1200, ProducerMember: "p1", Fatal: true,
		Error: &pb.RunningError{Time: timestamppb.Now(), Addr: "10.0.0.4:8300", Code: "CDC:ErrKafkaAuth",
			Message: "dial kafka://k:9092/t?sasl-user=K&sasl-password=" + kafkaSecret + ": SASL_AUTHENTICATION_FAILED"}})
	// d has not reported.

	d, err := e.cf.Query(e.ctx, &pb.GetChangefeedRequest{Id: "cf"})
	require.NoError(t, err)
	require.Equal(t, "cf", d.GetInfo().GetId())
	requireNoSecret(t, d.GetInfo())
	b, err := protojson.Marshal(d)
	require.NoError(t, err)
	require.NotContains(t, string(b), kafkaSecret)

	got := d.GetPipelines()
	require.Len(t, got, 4)
	var tables []int64
	for _, p := range got {
		tables = append(tables, p.GetTableId())
	}
	require.Equal(t, []int64{11, 12, 13, 14}, tables, "ordered by table id")

	a, bb, c, dd := got[0], got[1], got[2], got[3]
	require.Equal(t, "a", a.GetTableName())
	require.EqualValues(t, 2, a.GetEpoch())
	require.Equal(t, start, a.GetCheckpointTs(), "a report of another epoch does not count")
	require.Equal(t, start, a.GetResolvedTs())
	require.Nil(t, a.GetError())
	require.Equal(t, "p2", a.GetProducerMember())

	require.Equal(t, "test", bb.GetSchemaName())
	require.EqualValues(t, 1500, bb.GetCheckpointTs())
	require.EqualValues(t, 1600, bb.GetResolvedTs())
	require.EqualValues(t, 3, bb.GetEpoch())
	require.Equal(t, []string{"puller-p1", "sorter-p1", "encoder-p1", "p1"},
		[]string{bb.GetPullerMember(), bb.GetSorterMember(), bb.GetEncoderMember(), bb.GetProducerMember()})

	require.Equal(t, start, c.GetCheckpointTs(), "never below the start ts")
	require.EqualValues(t, 1200, c.GetResolvedTs())
	require.True(t, c.GetFatal())
	require.Equal(t, "CDC:ErrKafkaAuth", c.GetError().GetCode())
	require.Equal(t, "10.0.0.4:8300", c.GetError().GetAddr())
	require.Contains(t, c.GetError().GetMessage(), "SASL_AUTHENTICATION_FAILED")

	require.Equal(t, start+5, dd.GetCheckpointTs(), "no report yet: its start ts")
	require.Equal(t, start+5, dd.GetStartTs())
	require.Nil(t, dd.GetError())

	idle, err := e.cf.Query(e.ctx, &pb.GetChangefeedRequest{Id: "idle"})
	require.NoError(t, err)
	require.Empty(t, idle.GetPipelines())
	require.Equal(t, "idle", idle.GetInfo().GetId())

	_, err = e.cf.Query(e.ctx, &pb.GetChangefeedRequest{Id: "missing"})
	require.Equal(t, codes.NotFound, status.Code(err))
	_, err = e.cf.Query(e.ctx, &pb.GetChangefeedRequest{Id: "cf", Namespace: "a/b"})
	require.Equal(t, codes.InvalidArgument, status.Code(err))

	// A pipeline moved to another producer shows once, at its new place.
	_, err = e.st.Client().Delete(e.ctx, e.st.Keys().Assignment("p1", "default", "cf", 12))
	require.NoError(t, err)
	e.assign(t, "cf", "p3", "test", "b", 12, 4, 1500)
	d, err = e.cf.Query(e.ctx, &pb.GetChangefeedRequest{Id: "cf"})
	require.NoError(t, err)
	require.Len(t, d.GetPipelines(), 4)
	require.Equal(t, "p3", d.GetPipelines()[1].GetProducerMember())
	require.EqualValues(t, 1500, d.GetPipelines()[1].GetCheckpointTs(), "the epoch-3 report is not epoch 4's; the new run starts at 1500")
}

// processor list: one entry per changefeed and producer member holding
// its assignments, whatever the number of pipelines.
func TestListProcessors(t *testing.T) {
	e := setup(t)
	empty, err := e.cf.ListProcessors(e.ctx, &pb.ListProcessorsRequest{})
	require.NoError(t, err)
	require.Empty(t, empty.GetProcessors())

	e.assign(t, "cf", "p2", "test", "a", 1, 1, 10)
	e.assign(t, "cf", "p1", "test", "b", 2, 1, 10)
	e.assign(t, "cf", "p1", "test", "c", 3, 1, 10)
	e.assign(t, "cf-2", "p1", "test", "a", 1, 1, 10)
	e.assign(t, "a", "p3", "test", "a", 1, 1, 10)
	resp, err := e.cf.ListProcessors(e.ctx, &pb.ListProcessorsRequest{})
	require.NoError(t, err)
	var got [][3]string
	for _, p := range resp.GetProcessors() {
		got = append(got, [3]string{p.GetNamespace(), p.GetChangefeedId(), p.GetMemberId()})
	}
	require.Equal(t, [][3]string{
		{"default", "a", "p3"},
		{"default", "cf", "p1"},
		{"default", "cf", "p2"},
		{"default", "cf-2", "p1"},
	}, got, "ordered by namespace, changefeed, member")
}

func TestMembersNameTheCluster(t *testing.T) {
	e := setup(t)
	m := &pb.Member{Id: "m1", Addr: "127.0.0.1:8300", Roles: []string{"coordinator", "producer"}}
	e.putRecord(t, e.st.Keys().Member("m1"), m)
	resp, err := e.cl.Members(e.ctx, &pb.MembersRequest{})
	require.NoError(t, err)
	require.Equal(t, "test", resp.GetClusterId())
	require.Len(t, resp.GetMembers(), 1)
	require.Equal(t, []string{"coordinator", "producer"}, resp.GetMembers()[0].GetRoles())
	require.False(t, resp.GetMembers()[0].GetIsOwner(), "no owner elected")
}
