package contract

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// failingPuller answers every Subscribe with the error under test.
type failingPuller struct {
	tidestreamv1.UnimplementedPullerServiceServer
	err error
}

func (p failingPuller) Subscribe(*tidestreamv1.SubscribeRequest, grpc.ServerStreamingServer[tidestreamv1.PullerBatch]) error {
	return p.err
}

// overWire returns what a client's Recv gets when the server's handler
// returns err.
func overWire(t *testing.T, err error) error {
	t.Helper()
	lis, lerr := net.Listen("tcp", "127.0.0.1:0")
	if lerr != nil {
		t.Fatal(lerr)
	}
	srv := grpc.NewServer()
	tidestreamv1.RegisterPullerServiceServer(srv, failingPuller{err: err})
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	cc, derr := grpc.NewClient(lis.Addr().String(), append(DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if derr != nil {
		t.Fatal(derr)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, serr := tidestreamv1.NewPullerServiceClient(cc).Subscribe(ctx, &tidestreamv1.SubscribeRequest{})
	if serr != nil {
		return serr
	}
	_, rerr := stream.Recv()
	return rerr
}

// Every outcome, with its default code and with codes chosen for meaning,
// comes back as itself: locally, through %w wrapping, over a real stream,
// and relayed by a middle stage.
func TestOutcomeRoundTrip(t *testing.T) {
	cases := []struct {
		o    Outcome
		code codes.Code
	}{
		{Transient, 0}, {Transient, codes.Unavailable},
		{Restart, 0}, {Restart, codes.Aborted}, {Restart, codes.Internal}, {Restart, codes.DataLoss},
		// A restart carried by a code that alone would read as fenced:
		// the detail decides.
		{Restart, codes.FailedPrecondition},
		{Fatal, 0}, {Fatal, codes.OutOfRange}, {Fatal, codes.InvalidArgument},
		{Fenced, 0}, {Fenced, codes.FailedPrecondition},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%v/%v", tc.o, tc.code), func(t *testing.T) {
			err := Status(tc.o, tc.code, "stage: pipeline 7: %s", "why")
			if tc.code != 0 && status.Code(err) != tc.code {
				t.Fatalf("code %v, want %v", status.Code(err), tc.code)
			}
			for name, e := range map[string]error{
				"local":   err,
				"wrapped": fmt.Errorf("stage: %w", err),
				"wire":    overWire(t, err),
				"relayed": overWire(t, Relay("sorter", overWire(t, err))),
			} {
				if got := Classify(e); got != tc.o {
					t.Errorf("%s: Classify(%v) = %v, want %v", name, e, got, tc.o)
				}
			}
			if relayed := Relay("sorter", err); status.Code(relayed) != status.Code(err) {
				t.Errorf("Relay changed the code from %v to %v", status.Code(err), status.Code(relayed))
			}
		})
	}
}

// Statuses without the detail — gRPC's own, or an older peer's — are
// classified by code; errors that are no status at all are local failures
// whose effect on delivered data is unknown: restart.
func TestClassifyWithoutDetail(t *testing.T) {
	cases := []struct {
		err  error
		want Outcome
	}{
		{nil, OK},
		{io.EOF, Transient},
		{fmt.Errorf("recv: %w", io.EOF), Transient},
		{context.Canceled, Transient},
		{status.Error(codes.Unavailable, "connection refused"), Transient},
		{status.Error(codes.Canceled, "server shutting down"), Transient},
		{status.Error(codes.DeadlineExceeded, "slow"), Transient},
		{status.Error(codes.FailedPrecondition, "epoch"), Fenced},
		{status.Error(codes.OutOfRange, "gc"), Fatal},
		{status.Error(codes.InvalidArgument, "bad"), Fatal},
		{status.Error(codes.Unimplemented, "old peer"), Fatal},
		{status.Error(codes.Aborted, "aborted"), Restart},
		{status.Error(codes.ResourceExhausted, "message larger than max"), Restart},
		{status.Error(codes.Internal, "engine"), Restart},
		{status.Error(codes.Unknown, "?"), Restart},
		{errors.New("pebble: disk full"), Restart},
	}
	for _, tc := range cases {
		if got := Classify(tc.err); got != tc.want {
			t.Errorf("Classify(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	if Relay("sorter", nil) != nil {
		t.Error("Relay(nil) is not nil")
	}
	if got := Classify(Relay("sorter", errors.New("pebble: disk full"))); got != Restart {
		t.Errorf("a relayed local failure is %v, want RESTART", got)
	}
}

func TestValidate(t *testing.T) {
	span := &tidestreamv1.Span{StartKey: []byte("a"), EndKey: []byte("b")}
	good := &tidestreamv1.SubscribeRequest{ChangefeedId: "cf", Epoch: 1, Spans: []*tidestreamv1.Span{span}}
	if err := Validate("puller", good); err != nil {
		t.Fatalf("good request: %v", err)
	}
	unbounded := &tidestreamv1.SubscribeRequest{ChangefeedId: "cf", Epoch: 1, Spans: []*tidestreamv1.Span{{StartKey: []byte("a")}}}
	if err := Validate("puller", unbounded); err != nil {
		t.Fatalf("unbounded span: %v", err)
	}
	for name, req := range map[string]*tidestreamv1.SubscribeRequest{
		"nil request":   nil,
		"changefeed_id": {Epoch: 1, Spans: good.Spans},
		"epoch":         {ChangefeedId: "cf", Spans: good.Spans},
		"spans":         {ChangefeedId: "cf", Epoch: 1},
		"spans[1]": {ChangefeedId: "cf", Epoch: 1, Spans: []*tidestreamv1.Span{span,
			{StartKey: []byte("c"), EndKey: []byte("c")}}},
	} {
		err := Validate("puller", req)
		if Classify(err) != Fatal || status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want a FATAL INVALID_ARGUMENT", name, err)
			continue
		}
		if msg := status.Convert(err).Message(); !strings.Contains(msg, name) || !strings.Contains(msg, "puller") {
			t.Errorf("%s: message %q does not name the stage and the field", name, msg)
		}
	}
}

func TestFits(t *testing.T) {
	switch {
	case !Fits(0, MaxBatchBytes*3):
		t.Error("an oversized item must go alone into an empty batch")
	case !Fits(MaxBatchBytes-10, 10):
		t.Error("an item that fills the batch exactly must fit")
	case Fits(MaxBatchBytes-10, 11):
		t.Error("an item past the cap must not fit")
	case MaxMessageBytes < 120<<20+MaxBatchBytes:
		t.Error("receivers must accept TiDB's largest entry")
	}
}
