package cli

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// fakeControl refuses creates that do not ignore ineligible tables, as the
// coordinator does when the upstream has keyless tables.
type fakeControl struct {
	pb.UnimplementedChangefeedServiceServer
	tables []string

	mu   sync.Mutex
	reqs []*pb.CreateChangefeedRequest
}

func (f *fakeControl) Create(_ context.Context, req *pb.CreateChangefeedRequest) (*pb.ChangefeedInfo, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()
	if len(f.tables) > 0 && !req.IgnoreIneligibleTable {
		return nil, cdcerr.ToStatus(&cdcerr.IneligibleTablesError{Tables: f.tables})
	}
	return &pb.ChangefeedInfo{
		Namespace: "default", Id: "cf", StartTs: 1,
		Config: &pb.ReplicaConfig{IgnoreIneligibleTable: req.IgnoreIneligibleTable},
	}, nil
}

func (f *fakeControl) requests() []*pb.CreateChangefeedRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reqs
}

func serveFake(t *testing.T, f *fakeControl) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	gs := grpc.NewServer()
	pb.RegisterChangefeedServiceServer(gs, f)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

type runResult struct {
	out string
	err error
}

func runCreate(t *testing.T, addr, stdin string, args ...string) runResult {
	t.Helper()
	cmd := NewChangefeedCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(append([]string{"create", "--server=http://" + addr, "--sink-uri=kafka://127.0.0.1:9092/t?protocol=avro", "--changefeed-id=cf"}, args...))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	return runResult{out: out.String(), err: err}
}

const question = "Could you agree to ignore those tables, and continue to replicate [Y/N]\n"

func TestCreateAsksAboutIneligibleTables(t *testing.T) {
	for _, answer := range []string{"Y\n", "y", "yes\n"} {
		f := &fakeControl{tables: []string{"test.a", "test.b"}}
		r := runCreate(t, serveFake(t, f), answer)
		require.NoError(t, r.err, r.out)
		require.Contains(t, r.out, "[WARN] some tables are not eligible to replicate, because they have neither a primary key nor a not-null unique key: test.a, test.b\n")
		require.Contains(t, r.out, question)
		require.Contains(t, r.out, "Create changefeed successfully!")
		require.Contains(t, r.out, `"ignore_ineligible_table":true`)
		reqs := f.requests()
		require.Len(t, reqs, 2, "asked once, then created again with the tables ignored")
		require.False(t, reqs[0].IgnoreIneligibleTable)
		require.True(t, reqs[1].IgnoreIneligibleTable)
		require.Equal(t, reqs[0].SinkUri, reqs[1].SinkUri, "the same request otherwise")
	}
}

func TestCreateCancelledWhenIneligibleTablesAreRefused(t *testing.T) {
	for _, answer := range []string{"N\n", "", "maybe\n"} {
		f := &fakeControl{tables: []string{"test.a"}}
		r := runCreate(t, serveFake(t, f), answer)
		require.EqualError(t, r.err, "create changefeed cancelled by user")
		require.Contains(t, r.out, "test.a")
		require.Contains(t, r.out, question)
		require.Contains(t, r.out, "No changefeed is created because you don't want to ignore some tables.")
		require.NotContains(t, r.out, "Create changefeed successfully!")
		require.Len(t, f.requests(), 1)
	}
}

func TestCreateNoConfirmNeverAsks(t *testing.T) {
	for _, flag := range []string{"--no-confirm", "--ignore-ineligible-table"} {
		f := &fakeControl{tables: []string{"test.a"}}
		r := runCreate(t, serveFake(t, f), "N\n", flag)
		require.NoError(t, r.err, r.out)
		require.NotContains(t, r.out, question)
		reqs := f.requests()
		require.Len(t, reqs, 1)
		require.True(t, reqs[0].IgnoreIneligibleTable, flag)
	}
}

// Both prompts in one command, answered through one pipe: the second
// answer must not be lost to the first prompt's read buffer.
func TestCreateTwoPromptsShareTheInput(t *testing.T) {
	f := &fakeControl{tables: []string{"test.a"}}
	old := uint64(time.Now().Add(-48*time.Hour).UnixMilli()) << 18
	r := runCreate(t, serveFake(t, f), "Y\nY\n", "--start-ts="+strconv.FormatUint(old, 10))
	require.NoError(t, r.err, r.out)
	require.Contains(t, r.out, "larger than 1 days")
	require.Contains(t, r.out, question)
	require.Len(t, f.requests(), 2)
}

// A server-side UNAVAILABLE (its PD or TiKV is down) is not reported as an
// unreachable server.
func TestCreateKeepsServerUnavailableMessage(t *testing.T) {
	srv := &unavailableControl{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	gs := grpc.NewServer()
	pb.RegisterChangefeedServiceServer(gs, srv)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	r := runCreate(t, lis.Addr().String(), "")
	require.Error(t, r.err)
	require.Contains(t, r.err.Error(), "upstream 127.0.0.1:2379")
	require.NotContains(t, r.err.Error(), "cannot reach tidestream server")
}

type unavailableControl struct {
	pb.UnimplementedChangefeedServiceServer
}

func (unavailableControl) Create(context.Context, *pb.CreateChangefeedRequest) (*pb.ChangefeedInfo, error) {
	return nil, cdcerr.ToStatus(fmt.Errorf("check table eligibility: read the schema of upstream 127.0.0.1:2379: no TiKV: %w", cdcerr.ErrUnavailable))
}
