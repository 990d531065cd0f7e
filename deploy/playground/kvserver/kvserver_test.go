package kvserver

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pingcap/kvproto/pkg/kvrpcpb"
	"github.com/pingcap/kvproto/pkg/tikvpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
)

// fakeKV answers KvGet and echoes BatchCommands Get requests. With ignoreCtx its
// stream handler behaves like unistore's: it only ever waits in Recv.
type fakeKV struct {
	tikvpb.UnimplementedTikvServer
	ignoreCtx bool
	handled   atomic.Int64  // BatchCommands requests handed to the handler
	ctxEnded  chan struct{} // receives once per BatchCommands handler whose context ended
	returned  chan struct{} // receives once per BatchCommands handler that returned
}

func newFakeKV(ignoreCtx bool) *fakeKV {
	return &fakeKV{ignoreCtx: ignoreCtx, ctxEnded: make(chan struct{}, 16), returned: make(chan struct{}, 16)}
}

func (f *fakeKV) KvGet(_ context.Context, req *kvrpcpb.GetRequest) (*kvrpcpb.GetResponse, error) {
	return &kvrpcpb.GetResponse{Value: append([]byte("v:"), req.Key...)}, nil
}

func (f *fakeKV) BatchCommands(stream tikvpb.Tikv_BatchCommandsServer) error {
	defer func() { f.returned <- struct{}{} }()
	if !f.ignoreCtx {
		go func() {
			<-stream.Context().Done()
			f.ctxEnded <- struct{}{}
		}()
	}
	for {
		req, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		f.handled.Add(1)
		resp := &tikvpb.BatchCommandsResponse{RequestIds: req.RequestIds}
		for _, r := range req.Requests {
			g, _ := f.KvGet(stream.Context(), r.GetGet())
			resp.Responses = append(resp.Responses, &tikvpb.BatchCommandsResponse_Response{
				Cmd: &tikvpb.BatchCommandsResponse_Response_Get{Get: g},
			})
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

type harness struct {
	srv    *Server
	kv     tikvpb.TikvClient
	health healthpb.HealthClient
	refl   reflectionpb.ServerReflectionClient
	unary  atomic.Int64 // calls seen by the caller's unary interceptor
	stream atomic.Int64 // streams seen by the caller's stream interceptor
}

func start(t *testing.T, kv *fakeKV) *harness {
	t.Helper()
	h := &harness{}
	srv, err := Start(Config{
		Addr: "127.0.0.1:0",
		KV:   kv,
		// An extra service with a stream, as the change-data service will be.
		Register: []func(*grpc.Server){func(g *grpc.Server) { reflection.Register(g) }},
		Unary: []grpc.UnaryServerInterceptor{func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
			h.unary.Add(1)
			return next(ctx, req)
		}},
		Stream: []grpc.StreamServerInterceptor{func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, next grpc.StreamHandler) error {
			h.stream.Add(1)
			return next(srv, ss)
		}},
	})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	h.srv = srv
	h.kv = tikvpb.NewTikvClient(conn)
	h.health = healthpb.NewHealthClient(conn)
	h.refl = reflectionpb.NewServerReflectionClient(conn)
	return h
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// roundTrip sends one Get on a BatchCommands stream and checks the echo.
func roundTrip(stream tikvpb.Tikv_BatchCommandsClient, id uint64) error {
	err := stream.Send(&tikvpb.BatchCommandsRequest{
		RequestIds: []uint64{id},
		Requests: []*tikvpb.BatchCommandsRequest_Request{{
			Cmd: &tikvpb.BatchCommandsRequest_Request_Get{Get: &kvrpcpb.GetRequest{Key: []byte("k")}},
		}},
	})
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	// On io.EOF the server has ended the stream; Recv has its status.
	resp, err := stream.Recv()
	if err != nil {
		return err
	}
	if len(resp.RequestIds) != 1 || resp.RequestIds[0] != id || string(resp.Responses[0].GetGet().Value) != "v:k" {
		return errors.New("unexpected batch response")
	}
	return nil
}

// listServices asks the reflection service (registered through Config.Register)
// for the services on the port, over a fresh or given stream.
func listServices(stream reflectionpb.ServerReflection_ServerReflectionInfoClient) ([]string, error) {
	err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	})
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	return names, nil
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if status.Code(err) != want {
		t.Fatalf("%s: got %v, want code %v", what, err, want)
	}
}

func waitFor(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []Config{
		{KV: newFakeKV(false)},
		{Addr: "nonsense", KV: newFakeKV(false)},
		{Addr: "127.0.0.1:0"},
		{Addr: "127.0.0.1:0", KV: newFakeKV(false), Register: []func(*grpc.Server){nil}},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", c)
		}
	}
}

func TestUnaryAndStream(t *testing.T) {
	h := start(t, newFakeKV(false))
	ctx := ctxT(t)

	resp, err := h.kv.KvGet(ctx, &kvrpcpb.GetRequest{Key: []byte("a")})
	if err != nil || string(resp.Value) != "v:a" {
		t.Fatalf("KvGet = %v, %v", resp, err)
	}
	hc, err := h.health.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hc.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health check = %v, %v; want SERVING", hc, err)
	}
	refl, err := h.refl.ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names, err := listServices(refl)
	if err != nil {
		t.Fatalf("registered stream service: %v", err)
	}
	if got := strings.Join(names, ","); !strings.Contains(got, "tikvpb.Tikv") || !strings.Contains(got, "grpc.health.v1.Health") {
		t.Fatalf("services on the port: %s", got)
	}
	stream, err := h.kv.BatchCommands(ctx)
	if err != nil {
		t.Fatalf("BatchCommands: %v", err)
	}
	for id := uint64(1); id <= 3; id++ {
		if err := roundTrip(stream, id); err != nil {
			t.Fatalf("round trip %d: %v", id, err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after CloseSend: %v, want EOF", err)
	}
	if h.unary.Load() != 2 || h.stream.Load() != 2 {
		t.Fatalf("caller interceptors saw %d unary, %d stream calls; want 2, 2", h.unary.Load(), h.stream.Load())
	}
}

func TestSetUnavailableRejectsThenRecovers(t *testing.T) {
	h := start(t, newFakeKV(false))
	ctx := ctxT(t)

	h.srv.SetUnavailable(500 * time.Millisecond)
	if on, until := h.srv.Unavailable(); !on || until.IsZero() {
		t.Fatalf("Unavailable() = %v, %v; want a window", on, until)
	}
	_, err := h.kv.KvGet(ctx, &kvrpcpb.GetRequest{Key: []byte("a")})
	wantCode(t, "KvGet in window", err, codes.Unavailable)
	if status.Convert(err).Message() != "store unavailable (fault injection)" {
		t.Fatalf("message %q", status.Convert(err).Message())
	}
	// client-go's liveness probe must see the store down too.
	_, err = h.health.Check(ctx, &healthpb.HealthCheckRequest{})
	wantCode(t, "health check in window", err, codes.Unavailable)
	refl, err := h.refl.ServerReflectionInfo(ctx)
	if err == nil {
		_, err = listServices(refl)
	}
	wantCode(t, "registered service in window", err, codes.Unavailable)
	stream, err := h.kv.BatchCommands(ctx)
	if err == nil {
		err = roundTrip(stream, 1)
	}
	wantCode(t, "stream in window", err, codes.Unavailable)
	if h.unary.Load() != 0 || h.stream.Load() != 0 {
		t.Fatal("rejected calls reached the caller's interceptors")
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := h.kv.KvGet(ctx, &kvrpcpb.GetRequest{Key: []byte("a")})
		if err == nil {
			break
		}
		wantCode(t, "KvGet while recovering", err, codes.Unavailable)
		if time.Now().After(deadline) {
			t.Fatal("store did not recover")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if on, _ := h.srv.Unavailable(); on {
		t.Fatal("Unavailable() still true after the window")
	}
	stream, err = h.kv.BatchCommands(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(stream, 2); err != nil {
		t.Fatalf("stream after recovery: %v", err)
	}
}

func TestSetUnavailableEndsOpenStreams(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ignoreCtx bool
	}{{"handler watches context", false}, {"handler only receives", true}} {
		t.Run(tc.name, func(t *testing.T) {
			kv := newFakeKV(tc.ignoreCtx)
			h := start(t, kv)
			ctx := ctxT(t)

			stream, err := h.kv.BatchCommands(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := roundTrip(stream, 1); err != nil {
				t.Fatal(err)
			}
			watch, err := h.health.Watch(ctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := watch.Recv(); err != nil {
				t.Fatalf("first health update: %v", err)
			}
			refl, err := h.refl.ServerReflectionInfo(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := listServices(refl); err != nil {
				t.Fatal(err)
			}

			h.srv.SetUnavailable(time.Minute)
			_, err = stream.Recv()
			wantCode(t, "open BatchCommands stream", err, codes.Unavailable)
			_, err = watch.Recv()
			wantCode(t, "open health watch", err, codes.Unavailable)
			_, err = refl.Recv()
			wantCode(t, "open registered stream", err, codes.Unavailable)
			if !tc.ignoreCtx {
				waitFor(t, "handler context to end", kv.ctxEnded)
			}
			// Even a handler blind to its context returns once the RPC has ended.
			waitFor(t, "handler to return", kv.returned)

			h.srv.SetUnavailable(0)
			if on, _ := h.srv.Unavailable(); on {
				t.Fatal("window not cleared")
			}
			stream, err = h.kv.BatchCommands(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := roundTrip(stream, 2); err != nil {
				t.Fatalf("new stream after clearing: %v", err)
			}
		})
	}
}

// A request the client sends on a stream it has not yet seen fail must not reach
// the handler once the store is down.
func TestNoRequestExecutedAfterSetUnavailable(t *testing.T) {
	kv := newFakeKV(true)
	h := start(t, kv)
	ctx := ctxT(t)
	stream, err := h.kv.BatchCommands(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(stream, 1); err != nil {
		t.Fatal(err)
	}
	h.srv.SetUnavailable(time.Minute)
	err = roundTrip(stream, 2)
	wantCode(t, "request after SetUnavailable", err, codes.Unavailable)
	waitFor(t, "handler to return", kv.returned)
	if n := kv.handled.Load(); n != 1 {
		t.Fatalf("handler got %d requests, want only the one before the fault", n)
	}
}

func TestCloseEndsOpenStreams(t *testing.T) {
	kv := newFakeKV(true)
	h := start(t, kv)
	ctx := ctxT(t)
	stream, err := h.kv.BatchCommands(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(stream, 1); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	if err := h.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(began); d > closeGrace {
		t.Fatalf("Close took %v with an open stream", d)
	}
	_, err = stream.Recv()
	wantCode(t, "stream after Close", err, codes.Unavailable)
	waitFor(t, "handler to return", kv.returned)
}
