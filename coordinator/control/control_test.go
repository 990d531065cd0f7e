package control_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tidestream/tidestream/coordinator/control"
	"github.com/tidestream/tidestream/coordinator/internal/etcdtest"
	"github.com/tidestream/tidestream/coordinator/store"
	"github.com/tidestream/tidestream/coordinator/upstream"
	"github.com/tidestream/tidestream/coordinator/upstream/pdfake"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

const (
	kafkaSecret = "kafkaPassw0rd"
	srSecret    = "srSecr3t"
	seedSink    = "kafka://127.0.0.1:9092/ticdc-meta?protocol=avro&replication-factor=3&enable-tls=true&auto-create-topic=true&sasl-mechanism=plain&sasl-user=K&sasl-password=" + kafkaSecret
	seedSR      = "https://KEY:" + srSecret + "@127.0.0.1:8081"
	seedConf    = "[sink]\ndispatchers = [{matcher = ['*.*'], topic = \"tidb_{schema}_{table}\", partition=\"index-value\"}]\n"
)

type env struct {
	pd     *pdfake.Server
	pdAddr string
	cf     pb.ChangefeedServiceClient
	cl     pb.ClusterServiceClient
	st     *store.Store
	ctx    context.Context
}

// setup serves the control API against pdfake, whose cluster has no TiKV:
// the schema read is replaced by one that finds every table eligible.
func setup(t *testing.T) *env {
	t.Helper()
	return setupWith(t, func(context.Context, []string, uint64, control.TableFilter) ([]control.TableName, error) {
		return nil, nil
	}, nil)
}

// setupWith serves the control API with the given schema read, against
// open's upstream, or pdfake's when open is nil (env.pd is then set).
func setupWith(t *testing.T, tables control.IneligibleTableLister, open control.UpstreamOpener) *env {
	t.Helper()
	cli := etcdtest.Start(t).Client(t)
	keys, err := store.NewKeys("test")
	require.NoError(t, err)
	st := store.New(cli, keys)
	var pd *pdfake.Server
	pdAddr := "127.0.0.1:2379"
	if open == nil {
		pd, err = pdfake.Start(context.Background(), pdfake.Options{})
		require.NoError(t, err)
		t.Cleanup(pd.Stop)
		pdAddr = pd.URL()
		open = func(ctx context.Context, addrs []string) (control.Upstream, error) {
			cfg := upstream.DefaultConfig()
			cfg.PDAddrs = addrs
			return upstream.Open(ctx, cfg)
		}
	}
	srv, err := control.NewChangefeedServer(control.Config{
		Store:            st,
		OpenUpstream:     open,
		IneligibleTables: tables,
		Addr:             "127.0.0.1:1", Version: "test", ClusterID: "test",
		DefaultPDAddrs: []string{pdAddr},
	})
	require.NoError(t, err)
	gs := grpc.NewServer()
	pb.RegisterChangefeedServiceServer(gs, srv)
	pb.RegisterClusterServiceServer(gs, control.NewClusterServer(st))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return &env{pd: pd, pdAddr: pdAddr, cf: pb.NewChangefeedServiceClient(conn), cl: pb.NewClusterServiceClient(conn), st: st, ctx: ctx}
}

func seed(id string) *pb.CreateChangefeedRequest {
	return &pb.CreateChangefeedRequest{Id: id, SinkUri: seedSink, SchemaRegistry: seedSR, ConfigToml: seedConf}
}

func requireNoSecret(t *testing.T, info *pb.ChangefeedInfo) {
	t.Helper()
	b, err := protojson.Marshal(info)
	require.NoError(t, err)
	require.NotContains(t, string(b), kafkaSecret)
	require.NotContains(t, string(b), srSecret)
}

func TestCreateUsesUpstreamTSOAndRedacts(t *testing.T) {
	e := setup(t)
	before := uint64(time.Now().Add(-time.Second).UnixMilli()) << 18
	info, err := e.cf.Create(e.ctx, seed("confluent-changefeed"))
	require.NoError(t, err)
	require.Equal(t, "default", info.Namespace)
	require.Equal(t, e.pd.ClusterID(), info.UpstreamId)
	require.Greater(t, info.StartTs, before, "start ts must come from the upstream's TSO")
	require.Equal(t, info.StartTs, info.CheckpointTs)
	require.Equal(t, pb.ChangefeedState_CHANGEFEED_STATE_NORMAL, info.State)
	require.Equal(t, "test", info.CreatorVersion)
	require.EqualValues(t, 3, info.Kafka.ReplicationFactor)
	require.True(t, info.Kafka.Tls.Enabled)
	require.Equal(t, "K", info.Kafka.Sasl.User)
	require.Empty(t, info.ConfigToml, "raw TOML must not be returned")
	requireNoSecret(t, info)

	// The start ts is protected from GC while the owner has not yet taken
	// over the changefeed.
	sps := e.pd.ServiceSafePoints()
	require.Equal(t, info.StartTs, sps["tidestream-creating-test-default-confluent-changefeed"], "service safepoints: %v", sps)

	// Stored with the secrets (the producer will need them), read back
	// without.
	got, err := e.cf.Get(e.ctx, &pb.GetChangefeedRequest{Id: "confluent-changefeed"})
	require.NoError(t, err)
	requireNoSecret(t, got)
	stored, err := e.st.Get(e.ctx, "default", "confluent-changefeed")
	require.NoError(t, err)
	require.Equal(t, kafkaSecret, stored.Info.Kafka.Sasl.Password)
}

func TestCreateRefusals(t *testing.T) {
	e := setup(t)
	_, err := e.cf.Create(e.ctx, seed("dup"))
	require.NoError(t, err)

	tso, err := e.cf.Get(e.ctx, &pb.GetChangefeedRequest{Id: "dup"})
	require.NoError(t, err)
	future := tso.StartTs + uint64(time.Hour.Milliseconds())<<18

	e.pd.SetGCSafePoint(tso.StartTs - 1000)
	cases := []struct {
		name  string
		req   *pb.CreateChangefeedRequest
		code  codes.Code
		field string
	}{
		{"duplicate id", seed("dup"), codes.AlreadyExists, "changefeed-id"},
		{"bad id", seed("a_b"), codes.InvalidArgument, "changefeed-id"},
		{"bad namespace", func() *pb.CreateChangefeedRequest { r := seed("x"); r.Namespace = "a/b"; return r }(), codes.InvalidArgument, "namespace"},
		{"target before start", func() *pb.CreateChangefeedRequest { r := seed("x"); r.StartTs, r.TargetTs = 2000, 1000; return r }(), codes.InvalidArgument, "target-ts"},
		{"target before current tso", func() *pb.CreateChangefeedRequest { r := seed("x"); r.TargetTs = 5; return r }(), codes.InvalidArgument, "target-ts"},
		{"start below GC safepoint", func() *pb.CreateChangefeedRequest { r := seed("x"); r.StartTs = tso.StartTs - 5000; return r }(), codes.InvalidArgument, "start-ts"},
		{"start in the future", func() *pb.CreateChangefeedRequest { r := seed("x"); r.StartTs = future; return r }(), codes.InvalidArgument, "start-ts"},
		{"no sink", func() *pb.CreateChangefeedRequest { r := seed("x"); r.SinkUri = ""; return r }(), codes.InvalidArgument, "sink-uri"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.cf.Create(e.ctx, c.req)
			require.Error(t, err)
			require.Equal(t, c.code, status.Code(err), err.Error())
			require.Contains(t, status.Convert(err).Message(), c.field)
			require.NotContains(t, err.Error(), kafkaSecret)
		})
	}
	// GC check can be disabled, as TiCDC's --disable-gc-check.
	r := seed("nogc")
	r.StartTs = tso.StartTs - 5000
	r.DisableGcCheck = true
	_, err = e.cf.Create(e.ctx, r)
	require.NoError(t, err)
}

func TestLifecycle(t *testing.T) {
	e := setup(t)
	ref := &pb.ChangefeedRef{Id: "cf"}
	_, err := e.cf.Create(e.ctx, seed("cf"))
	require.NoError(t, err)

	// Update needs a paused changefeed.
	newSink := strings.Replace(seedSink, "replication-factor=3", "replication-factor=2", 1)
	_, err = e.cf.Update(e.ctx, &pb.UpdateChangefeedRequest{Id: "cf", SinkUri: &newSink})
	require.Equal(t, codes.FailedPrecondition, status.Code(err))

	info, err := e.cf.Pause(e.ctx, ref)
	require.NoError(t, err)
	require.Equal(t, pb.ChangefeedState_CHANGEFEED_STATE_STOPPED, info.State)
	_, err = e.cf.Pause(e.ctx, ref)
	require.Equal(t, codes.FailedPrecondition, status.Code(err))

	info, err = e.cf.Update(e.ctx, &pb.UpdateChangefeedRequest{Id: "cf", SinkUri: &newSink})
	require.NoError(t, err)
	require.EqualValues(t, 2, info.Kafka.ReplicationFactor)
	require.Equal(t, "index-value", info.Config.Sink.Dispatchers[0].Partition, "config kept across a sink-only update")
	requireNoSecret(t, info)
	badConf := "[sink]\ndispatchers = [{matcher = ['*.*'], topic = \"literal\"}]\n"
	_, err = e.cf.Update(e.ctx, &pb.UpdateChangefeedRequest{Id: "cf", ConfigToml: &badConf})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "update revalidates")
	_, err = e.cf.Update(e.ctx, &pb.UpdateChangefeedRequest{Id: "cf"})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "empty update")

	before, err := e.cf.Get(e.ctx, &pb.GetChangefeedRequest{Id: "cf"})
	require.NoError(t, err)
	info, err = e.cf.Resume(e.ctx, &pb.ResumeChangefeedRequest{Id: "cf", OverwriteCheckpointNow: true})
	require.NoError(t, err)
	require.Equal(t, pb.ChangefeedState_CHANGEFEED_STATE_NORMAL, info.State)
	require.Greater(t, info.CheckpointTs, before.CheckpointTs)
	stored, err := e.st.Get(e.ctx, "default", "cf")
	require.NoError(t, err)
	require.EqualValues(t, 2, stored.Status.Epoch, "resume starts a new epoch")

	_, err = e.cf.Pause(e.ctx, ref)
	require.NoError(t, err)
	_, err = e.cf.Resume(e.ctx, &pb.ResumeChangefeedRequest{Id: "cf", OverwriteCheckpointTs: info.CheckpointTs + uint64(time.Hour.Milliseconds())<<18})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "overwrite into the future")
	require.Contains(t, status.Convert(err).Message(), "overwrite-checkpoint-ts")

	list, err := e.cf.List(e.ctx, &pb.ListChangefeedsRequest{})
	require.NoError(t, err)
	require.Len(t, list.Changefeeds, 1)

	info, err = e.cf.Remove(e.ctx, ref)
	require.NoError(t, err)
	require.Equal(t, pb.ChangefeedState_CHANGEFEED_STATE_REMOVED, info.State)
	requireNoSecret(t, info)
	_, err = e.cf.Get(e.ctx, &pb.GetChangefeedRequest{Id: "cf"})
	require.Equal(t, codes.NotFound, status.Code(err))
	_, err = e.cf.Remove(e.ctx, ref)
	require.Equal(t, codes.NotFound, status.Code(err))
	list, err = e.cf.List(e.ctx, &pb.ListChangefeedsRequest{All: true})
	require.NoError(t, err)
	require.Empty(t, list.Changefeeds)
}

func TestClusterServiceWithoutOwner(t *testing.T) {
	e := setup(t)
	h, err := e.cl.Health(e.ctx, &pb.ClusterHealthRequest{})
	require.NoError(t, err)
	require.True(t, h.EtcdReachable)
	require.False(t, h.Healthy)
	require.Equal(t, "no owner elected", h.Reason)
	o, err := e.cl.Owner(e.ctx, &pb.OwnerRequest{})
	require.NoError(t, err)
	require.Nil(t, o.Owner)
}
