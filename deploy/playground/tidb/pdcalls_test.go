package tidb

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pingcap/kvproto/pkg/pdpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// A PD that serves nothing: every pdpb call is answered Unimplemented, which
// the interceptors must report, for unary calls and for streams alike.
func TestPDCallLogReportsUnimplemented(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	go gs.Serve(lis)
	defer gs.Stop()

	var buf bytes.Buffer
	calls := pdCallLog{log: slog.New(slog.NewTextHandler(&buf, nil))}
	conn, err := grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainUnaryInterceptor(calls.unary),
		grpc.WithChainStreamInterceptor(calls.stream))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	pdc := pdpb.NewPDClient(conn)
	if _, err := pdc.GetMembers(ctx, &pdpb.GetMembersRequest{}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("GetMembers: %v", err)
	}
	tso, err := pdc.Tso(ctx)
	if err == nil {
		_, err = tso.Recv()
	}
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("Tso: %v", err)
	}
	for _, method := range []string{"/pdpb.PD/GetMembers", "/pdpb.PD/Tso"} {
		if !strings.Contains(buf.String(), "method="+method) {
			t.Errorf("no report of %s in %q", method, buf.String())
		}
	}
}
