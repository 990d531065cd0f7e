package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tidestream/tidestream/e2e/harness"
	"github.com/tidestream/tidestream/proto/contract"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
	"google.golang.org/grpc/status"
)

// TestServerStopsPromptlyWithActivePipeline sends SIGTERM to `cdc server`
// while an encoder-side subscriber reads a sorter pipeline whose upstream is
// the same process's puller. The process must exit 0 within 3 s, and the
// subscriber's stream must end with the sorter's own transient status (the
// stream was ended, not cut by a hard stop), so it would retry elsewhere.
// Before, the graceful stop waited its whole 15 s drain for those streams.
func TestServerStopsPromptlyWithActivePipeline(t *testing.T) {
	pg := startPlayground(t)
	srv := startServer(t, "cdc-server", "", "http://"+pg.pdAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, q := range []string{"CREATE DATABASE stop", "CREATE TABLE stop.t (id BIGINT PRIMARY KEY, v VARCHAR(32))"} {
		_, err := pg.db.ExecContext(ctx, q)
		require.NoError(t, err, q)
	}
	conn, err := pg.db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	from := currentTS(ctx, t, conn)
	client := tidestreamv1.NewSorterServiceClient(harness.Dial(t, srv.addr))
	stream, err := client.Subscribe(ctx, &tidestreamv1.SubscribeRequest{
		ChangefeedId: "stop", PipelineId: 1, Epoch: 1, FromTs: from, Spans: []*tidestreamv1.Span{recordSpan(ctx, t, pg.db, "stop", "t")},
	})
	require.NoError(t, err)
	_, err = conn.ExecContext(ctx, "INSERT INTO stop.t VALUES (1, 'x')")
	require.NoError(t, err)
	target := currentTS(ctx, t, conn)
	rows := 0
	for resolved := uint64(0); resolved < target; {
		b, err := stream.Recv()
		require.NoError(t, err)
		rows += len(b.Events)
		resolved = max(resolved, b.ResolvedTs)
	}
	require.Equal(t, 1, rows, "the row written before the stop")

	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				ended <- err
				return
			}
		}
	}()
	began := time.Now()
	require.NoError(t, srv.proc.Stop(15*time.Second), "cdc server exit status after SIGTERM")
	exited := time.Since(began)
	var streamErr error
	select {
	case streamErr = <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the subscriber's stream did not end after the server exited")
	}
	t.Logf("cdc server exited %v after SIGTERM; the subscriber's stream ended with %v", exited.Round(time.Millisecond), streamErr)
	require.Less(t, exited, 3*time.Second, "exit after SIGTERM with an active pipeline")
	require.Equal(t, contract.Transient, contract.Classify(streamErr), "%v", streamErr)
	require.True(t, strings.Contains(status.Convert(streamErr).Message(), "sorter"),
		"the stream was ended by the sorter, not cut: %v", streamErr)
}
