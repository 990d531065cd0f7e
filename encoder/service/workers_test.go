package service

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pingcap/tidb/pkg/kv"
	"github.com/pingcap/tidb/pkg/meta/model"
	pmodel "github.com/pingcap/tidb/pkg/parser/model"
	"github.com/pingcap/tidb/pkg/tablecodec"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/tidestream/tidestream/encoder/schema"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// A chunk waiting on the schema registry holds no worker. It used to hold
// one through the HTTP round trips, so with one worker per CPU the first
// rows of a new changefeed's tables (1,000 tables: 2,000 schemas) ran their
// registrations two at a time on a 2-CPU host and stalled every pipeline of
// the process, tables long registered included: the scale check's
// checkpoint lag grew past 90 s at 100 rows/s while the encoder used 2% of
// a core. Here there is one worker, table t's registration hangs, and
// table u's row must still come out.
func TestRegistryWaitHoldsNoWorker(t *testing.T) {
	ctx := testCtx(t)
	const otherID = tableID + 1
	other := keyedTable()
	other.ID, other.Name = otherID, pmodel.NewCIStr("u")
	const commit = snapTs + 2
	script := func(req *tidestreamv1.SubscribeRequest, st grpc.ServerStreamingServer[tidestreamv1.SortedBatch]) error {
		ev := put(t, 1, 10, snapTs+1, commit)
		if req.GetPipelineId() == 2 {
			ev.Key = tablecodec.EncodeRowKeyWithHandle(otherID, kv.IntHandle(1))
		}
		return sendAll(&tidestreamv1.SortedBatch{Events: []*tidestreamv1.RawKVEvent{ev}, ResolvedTs: commit})(req, st)
	}
	e := newEnv(t, keyedTable(), script, func(c *Config) {
		c.Workers = 1
		c.LoadSnapshot = func(_ context.Context, _ []string, ts uint64) (*schema.Snapshot, error) {
			return &schema.Snapshot{
				Ts: ts, SchemaVersion: 10,
				DBs:      []*model.DBInfo{{ID: 1, Name: pmodel.NewCIStr("test"), State: model.StatePublic}},
				Tables:   map[int64][]*model.TableInfo{1: {keyedTable(), other}},
				JobTable: jobTableInfo(),
			}, nil
		}
	})

	// The registry as the encoder sees it: calls for table t's subjects
	// hang until release.
	target, err := url.Parse(e.registry.URL())
	require.NoError(t, err)
	proxy := httputil.NewSingleHostReverseProxy(target)
	hung := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/subjects/tidb_test_t-") {
			once.Do(func() { close(hung) })
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	var releaseOnce sync.Once
	unhang := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unhang) // before srv.Close, which waits for the hung handler
	e.info.Config.Sink.SchemaRegistry = srv.URL
	e.resolveDDL(commit)

	subscribe := func(id int64) grpc.ServerStreamingClient[tidestreamv1.EncodedBatch] {
		st, err := e.client.Subscribe(ctx, &tidestreamv1.SubscribeRequest{ChangefeedId: "cf", PipelineId: id, Epoch: 1, FromTs: snapTs, Spans: tableSpan()})
		require.NoError(t, err)
		return st
	}
	stT := subscribe(1)
	select {
	case <-hung:
	case <-ctx.Done():
		t.Fatal("table t's registration never started")
	}

	// Table u's row needs the one worker that t's chunk took.
	uctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	stU, err := e.client.Subscribe(uctx, &tidestreamv1.SubscribeRequest{ChangefeedId: "cf", PipelineId: 2, Epoch: 1, FromTs: snapTs, Spans: tableSpan()})
	require.NoError(t, err)
	recs := e.collect(uctx, t, stU, 1, commit)
	require.Len(t, recs, 1)
	require.Equal(t, "tidb_test_u", recs[0].rec.GetTopic())

	// And t's row follows once the registry answers.
	unhang()
	recs = e.collect(ctx, t, stT, 1, commit)
	require.Len(t, recs, 1)
	require.Equal(t, "tidb_test_t", recs[0].rec.GetTopic())
}
