package local_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tidestream/tidestream/proto/contract"
	"github.com/tidestream/tidestream/proto/contract/local"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// Plain testing helpers: this module keeps its dependencies to what the
// generated code needs.
func noErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
}

func equal[T comparable](t *testing.T, want, got T, what string, args ...any) {
	t.Helper()
	if want != got {
		t.Fatalf("%s: want %v, got %v", fmt.Sprintf(what, args...), want, got)
	}
}

func isTrue(t *testing.T, ok bool, what string, args ...any) {
	t.Helper()
	if !ok {
		t.Fatalf(what, args...)
	}
}

// encoder is an EncoderService whose Subscribe sends n batches (resolved
// ts 1..n) and then returns end, or, with block, waits for its context.
type encoder struct {
	tidestreamv1.UnimplementedEncoderServiceServer
	n       int
	end     error
	block   bool
	started chan *tidestreamv1.SubscribeRequest
	ended   chan error
	acks    chan *tidestreamv1.PipelineProgress
}

func newEncoder(n int, end error) *encoder {
	return &encoder{n: n, end: end, started: make(chan *tidestreamv1.SubscribeRequest, 16), ended: make(chan error, 16), acks: make(chan *tidestreamv1.PipelineProgress, 16)}
}

func (e *encoder) Subscribe(req *tidestreamv1.SubscribeRequest, st grpc.ServerStreamingServer[tidestreamv1.EncodedBatch]) error {
	e.started <- req
	for i := 1; i <= e.n; i++ {
		if err := st.Send(&tidestreamv1.EncodedBatch{ResolvedTs: uint64(i)}); err != nil {
			e.ended <- err
			return err
		}
	}
	if e.block {
		<-st.Context().Done()
		e.ended <- st.Context().Err()
		return st.Context().Err()
	}
	e.ended <- e.end
	return e.end
}

func (e *encoder) Ack(_ context.Context, p *tidestreamv1.PipelineProgress) (*tidestreamv1.AckResponse, error) {
	p.CheckpointTs++ // a server may change what it got: the caller must not see it
	e.acks <- p
	if p.GetPipelineId() < 0 {
		return nil, errors.New("plain failure")
	}
	return &tidestreamv1.AckResponse{}, nil
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Over gRPC and in process a caller sees the same thing: every batch in
// order, then the handler's outcome as gRPC would report it.
func TestStreamEndsAsOverGRPC(t *testing.T) {
	for _, c := range []struct {
		name string
		end  error
		code codes.Code
		msg  string
	}{
		{"ok", nil, codes.OK, ""},
		{"status", contract.Status(contract.Transient, codes.Unavailable, "encoder stopping"), codes.Unavailable, "encoder stopping"},
		{"wrapped status", fmt.Errorf("pipe: %w", status.Error(codes.FailedPrecondition, "fenced")), codes.FailedPrecondition, "pipe: rpc error: code = FailedPrecondition desc = fenced"},
		{"plain", errors.New("boom"), codes.Unknown, "boom"},
		{"context", context.Canceled, codes.Canceled, "context canceled"},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, via := range []string{"grpc", "local"} {
				t.Run(via, func(t *testing.T) {
					ctx := ctxT(t)
					srv := newEncoder(3, c.end)
					cl := client(t, via, srv)
					st, err := cl.Subscribe(ctx, &tidestreamv1.SubscribeRequest{PipelineId: 7})
					noErr(t, err)
					for i := 1; i <= 3; i++ {
						b, err := st.Recv()
						noErr(t, err)
						equal(t, uint64(i), b.GetResolvedTs(), "resolved ts")
					}
					_, err = st.Recv()
					if c.code == codes.OK {
						isTrue(t, errors.Is(err, io.EOF), "want io.EOF, got %v", err)
						return
					}
					equal(t, c.code, status.Code(err), "code of %v", err)
					equal(t, c.msg, status.Convert(err).Message(), "message")
					_, again := st.Recv()
					equal(t, c.code, status.Code(again), "the end stays the end")
				})
			}
		})
	}
}

func client(t *testing.T, via string, srv *encoder) tidestreamv1.EncoderServiceClient {
	if via == "local" {
		s := local.New()
		t.Cleanup(s.Close)
		return s.Encoder(srv)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	noErr(t, err)
	g := grpc.NewServer()
	tidestreamv1.RegisterEncoderServiceServer(g, srv)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	noErr(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	return tidestreamv1.NewEncoderServiceClient(cc)
}

// Batches the handler sent before it returned are all received, even when
// the handler is long gone by the time the client reads them.
func TestBufferedBatchesOutliveTheHandler(t *testing.T) {
	ctx := ctxT(t)
	s := local.New()
	defer s.Close()
	srv := newEncoder(local.Buffer, nil)
	st, err := s.Encoder(srv).Subscribe(ctx, &tidestreamv1.SubscribeRequest{})
	noErr(t, err)
	noErr(t, <-srv.ended)
	for i := 1; i <= local.Buffer; i++ {
		b, err := st.Recv()
		noErr(t, err)
		equal(t, uint64(i), b.GetResolvedTs(), "resolved ts")
	}
	_, err = st.Recv()
	isTrue(t, errors.Is(err, io.EOF), "want io.EOF, got %v", err)
}

// Cancelling the client's context cancels the handler's, which a handler
// blocked in Send (nobody reading) sees too.
func TestClientCancelEndsTheHandler(t *testing.T) {
	for _, blockedInSend := range []bool{false, true} {
		s := local.New()
		srv := newEncoder(0, nil)
		srv.block = true
		if blockedInSend {
			srv.n, srv.block = local.Buffer+1, false
		}
		ctx, cancel := context.WithCancel(ctxT(t))
		st, err := s.Encoder(srv).Subscribe(ctx, &tidestreamv1.SubscribeRequest{})
		noErr(t, err)
		<-srv.started
		cancel()
		ended := <-srv.ended
		isTrue(t, errors.Is(ended, context.Canceled) || status.Code(ended) == codes.Canceled, "handler ended with %v", ended)
		for {
			if _, err := st.Recv(); err != nil {
				equal(t, codes.Canceled, status.Code(err), "code of %v", err)
				break
			}
		}
		s.Close()
	}
}

// Close ends open streams (their handlers' contexts end) and waits for
// the handlers; afterwards every call is UNAVAILABLE, as from a stopped
// server, so callers retry elsewhere.
func TestCloseEndsStreamsAndRefusesNewOnes(t *testing.T) {
	ctx := ctxT(t)
	s := local.New()
	srv := newEncoder(1, nil)
	srv.block = true
	cl := s.Encoder(srv)
	st, err := cl.Subscribe(ctx, &tidestreamv1.SubscribeRequest{})
	noErr(t, err)
	<-srv.started
	s.Close()
	ended := <-srv.ended
	isTrue(t, errors.Is(ended, context.Canceled), "the handler returned before Close did: %v", ended)
	b, err := st.Recv()
	noErr(t, err)
	equal(t, uint64(1), b.GetResolvedTs(), "resolved ts")
	_, err = st.Recv()
	equal(t, codes.Canceled, status.Code(err), "code of %v", err)
	_, err = cl.Subscribe(ctx, &tidestreamv1.SubscribeRequest{})
	equal(t, codes.Unavailable, status.Code(err), "code of %v", err)
	_, err = cl.Ack(ctx, &tidestreamv1.PipelineProgress{})
	equal(t, codes.Unavailable, status.Code(err), "code of %v", err)
}

// Requests are the callee's own: a server that changes what it got does
// not change the caller's message, nor does a caller that reuses its
// request change what the server holds.
func TestRequestsAreCopied(t *testing.T) {
	ctx := ctxT(t)
	s := local.New()
	defer s.Close()
	srv := newEncoder(0, nil)
	cl := s.Encoder(srv)
	p := &tidestreamv1.PipelineProgress{PipelineId: 1, CheckpointTs: 10}
	_, err := cl.Ack(ctx, p)
	noErr(t, err)
	equal(t, uint64(10), p.GetCheckpointTs(), "the caller's request")
	equal(t, uint64(11), (<-srv.acks).GetCheckpointTs(), "what the server made of it")

	_, err = cl.Ack(ctx, &tidestreamv1.PipelineProgress{PipelineId: -1})
	equal(t, codes.Unknown, status.Code(err), "a plain error is UNKNOWN, as over gRPC")

	req := &tidestreamv1.SubscribeRequest{PipelineId: 5, FromTs: 100}
	st, err := cl.Subscribe(ctx, req)
	noErr(t, err)
	req.FromTs = 200
	got := <-srv.started
	equal(t, uint64(100), got.GetFromTs(), "the request the server got")
	_, err = st.Recv()
	isTrue(t, errors.Is(err, io.EOF), "want io.EOF, got %v", err)
}

// streamer sends b.N batches of events events each.
type streamer struct {
	tidestreamv1.UnimplementedEncoderServiceServer
	n, events int
}

func (s *streamer) Subscribe(_ *tidestreamv1.SubscribeRequest, st grpc.ServerStreamingServer[tidestreamv1.EncodedBatch]) error {
	for i := range s.n {
		b := &tidestreamv1.EncodedBatch{ResolvedTs: uint64(i + 1)}
		for range s.events {
			b.Records = append(b.Records, &tidestreamv1.EncodedRecord{Topic: "tidb_test_t", Key: make([]byte, 16), Value: make([]byte, 100), CommitTs: uint64(i + 1)})
		}
		if err := st.Send(b); err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkStream is one pipeline's stream over loopback gRPC and in
// process, in the same run: resolved-ts-only batches (an idle table's
// traffic) and batches of 100 records.
func BenchmarkStream(b *testing.B) {
	for _, events := range []int{0, 100} {
		for _, via := range []string{"grpc", "local"} {
			b.Run(fmt.Sprintf("records=%d/%s", events, via), func(b *testing.B) {
				srv := &streamer{n: b.N, events: events}
				var cl tidestreamv1.EncoderServiceClient
				if via == "local" {
					s := local.New()
					defer s.Close()
					cl = s.Encoder(srv)
				} else {
					lis, err := net.Listen("tcp", "127.0.0.1:0")
					if err != nil {
						b.Fatal(err)
					}
					g := grpc.NewServer()
					tidestreamv1.RegisterEncoderServiceServer(g, srv)
					go func() { _ = g.Serve(lis) }()
					defer g.Stop()
					cc, err := grpc.NewClient(lis.Addr().String(), append(contract.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
					if err != nil {
						b.Fatal(err)
					}
					defer cc.Close()
					cl = tidestreamv1.NewEncoderServiceClient(cc)
				}
				b.ReportAllocs()
				b.ResetTimer()
				st, err := cl.Subscribe(context.Background(), &tidestreamv1.SubscribeRequest{})
				if err != nil {
					b.Fatal(err)
				}
				for {
					if _, err := st.Recv(); err != nil {
						if !errors.Is(err, io.EOF) {
							b.Fatal(err)
						}
						break
					}
				}
			})
		}
	}
}
