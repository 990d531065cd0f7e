package server_test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tidestream/tidestream/services/runtime/health"
	"github.com/tidestream/tidestream/services/runtime/server"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// runAsync starts run and returns a channel that yields its result.
func runAsync(run func(context.Context) error, ctx context.Context) <-chan error {
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	return done
}

func waitRun(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

func loopbackHTTP() server.HTTPConfig {
	cfg := server.DefaultHTTPConfig()
	cfg.Addr = "127.0.0.1:0"
	return cfg
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

func TestStatusServerRoutes(t *testing.T) {
	checker := health.New(nil, "tidestream.v1.PullerService")
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "fake_metric 1\n")
	})
	s, err := server.NewHTTPServer(loopbackHTTP(),
		server.NewStatusMux(server.StatusRoutes{Metrics: metrics, Health: checker, Pprof: true}), nil)
	require.NoError(t, err)
	addr, err := s.Listen()
	require.NoError(t, err)
	require.NotContains(t, addr.String(), ":0", "bound port is observable")
	require.Equal(t, addr, s.Addr())
	base := "http://" + addr.String()

	ctx, cancel := context.WithCancel(context.Background())
	done := runAsync(s.Run, ctx)

	code, body := httpGet(t, base+"/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "fake_metric 1\n", body)

	code, _ = httpGet(t, base+"/healthz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	code, _ = httpGet(t, base+"/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	code, _ = httpGet(t, base+"/livez")
	require.Equal(t, http.StatusOK, code)
	checker.SetReady()
	code, _ = httpGet(t, base+"/healthz")
	require.Equal(t, http.StatusOK, code)
	code, _ = httpGet(t, base+"/readyz")
	require.Equal(t, http.StatusOK, code)

	code, body = httpGet(t, base+"/debug/pprof/")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "goroutine")

	code, _ = httpGet(t, base+"/nope")
	require.Equal(t, http.StatusNotFound, code)

	cancel()
	require.NoError(t, waitRun(t, done))
}

func TestStatusMuxWithoutPprof(t *testing.T) {
	s, err := server.NewHTTPServer(loopbackHTTP(), server.NewStatusMux(server.StatusRoutes{}), nil)
	require.NoError(t, err)
	addr, err := s.Listen()
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := runAsync(s.Run, ctx)
	code, _ := httpGet(t, "http://"+addr.String()+"/debug/pprof/")
	require.Equal(t, http.StatusNotFound, code)
	cancel()
	require.NoError(t, waitRun(t, done))
}

func TestHTTPRunDrainsInFlightRequest(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		close(entered)
		<-release
		_, _ = io.WriteString(w, "finished")
	})
	s, err := server.NewHTTPServer(loopbackHTTP(), h, nil)
	require.NoError(t, err)
	addr, err := s.Listen()
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	done := runAsync(s.Run, ctx)

	type result struct {
		code int
		body string
		err  error
	}
	resc := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + addr.String() + "/")
		if err != nil {
			resc <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		resc <- result{code: resp.StatusCode, body: string(b), err: err}
	}()
	<-entered

	cancel()
	select {
	case err := <-done:
		t.Fatalf("Run returned %v while a request was in flight", err)
	case <-time.After(200 * time.Millisecond):
	}

	close(release)
	res := <-resc
	require.NoError(t, res.err)
	require.Equal(t, http.StatusOK, res.code)
	require.Equal(t, "finished", res.body)
	require.NoError(t, waitRun(t, done))
}

func TestHTTPDrainTimeoutStopsHard(t *testing.T) {
	entered := make(chan struct{})
	h := http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done() // a stuck handler: only a closed connection frees it
	})
	cfg := loopbackHTTP()
	cfg.DrainTimeout = 100 * time.Millisecond
	s, err := server.NewHTTPServer(cfg, h, nil)
	require.NoError(t, err)
	addr, err := s.Listen()
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := runAsync(s.Run, ctx)

	clientErr := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + addr.String() + "/")
		if err == nil {
			resp.Body.Close()
		}
		clientErr <- err
	}()
	<-entered
	start := time.Now()
	cancel()
	require.NoError(t, waitRun(t, done))
	require.Less(t, time.Since(start), 5*time.Second)
	require.Error(t, <-clientErr, "the stuck request was cut off")
}

func TestRunTwiceAndListenTwice(t *testing.T) {
	s, err := server.NewHTTPServer(loopbackHTTP(), http.NotFoundHandler(), nil)
	require.NoError(t, err)
	_, err = s.Listen()
	require.NoError(t, err)
	_, err = s.Listen()
	require.ErrorContains(t, err, "already listening")

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // already cancelled: Run must still return nil and release the port
	require.NoError(t, s.Run(ctx))
	require.ErrorContains(t, s.Run(context.Background()), "Run called twice")
}

func TestRunReportsListenError(t *testing.T) {
	a, err := server.NewHTTPServer(loopbackHTTP(), http.NotFoundHandler(), nil)
	require.NoError(t, err)
	addr, err := a.Listen()
	require.NoError(t, err)

	cfg := loopbackHTTP()
	cfg.Addr = addr.String() // taken
	b, err := server.NewHTTPServer(cfg, http.NotFoundHandler(), nil)
	require.NoError(t, err)
	require.ErrorContains(t, b.Run(context.Background()), "listen on "+addr.String())

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, a.Run(ctx))
}

func TestConfigValidate(t *testing.T) {
	require.NoError(t, server.DefaultHTTPConfig().Validate())
	require.NoError(t, server.DefaultGRPCConfig().Validate())

	h := server.DefaultHTTPConfig()
	h.Addr = "8300"
	require.ErrorContains(t, h.Validate(), "HTTPConfig.Addr")
	h = server.DefaultHTTPConfig()
	h.DrainTimeout = time.Hour
	require.ErrorContains(t, h.Validate(), "HTTPConfig.DrainTimeout 1h0m0s out of range [0, 10m]")

	g := server.DefaultGRPCConfig()
	g.MaxRecvMsgSize = 1024
	require.ErrorContains(t, g.Validate(), "GRPCConfig.MaxRecvMsgSize 1024 out of range [1048576 (1 MiB)")
	g = server.DefaultGRPCConfig()
	g.KeepaliveMinTime = 0
	require.ErrorContains(t, g.Validate(), "GRPCConfig.KeepaliveMinTime 0s out of range [1s, 5m]")
	g = server.DefaultGRPCConfig()
	g.Addr = ""
	require.ErrorContains(t, g.Validate(), "GRPCConfig.Addr")

	_, err := server.NewGRPCServer(server.DefaultGRPCConfig(), nil, nil)
	require.ErrorContains(t, err, "nil health checker")
}

// grpcFixture runs a GRPCServer on a loopback port and connects a health
// client to it.
type grpcFixture struct {
	checker *health.Checker
	client  healthpb.HealthClient
	cancel  context.CancelFunc
	done    <-chan error
}

func startGRPC(t *testing.T, cfg server.GRPCConfig) *grpcFixture {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	checker := health.New(nil, "tidestream.v1.SorterService")
	s, err := server.NewGRPCServer(cfg, checker, nil)
	require.NoError(t, err)
	addr, err := s.Listen()
	require.NoError(t, err)
	require.Equal(t, addr, s.Addr())

	conn, err := grpc.NewClient(addr.String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithKeepaliveParams(server.DefaultClientKeepalive()))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, conn.Close()) })

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return &grpcFixture{checker: checker, client: healthpb.NewHealthClient(conn), cancel: cancel, done: runAsync(s.Run, ctx)}
}

func (f *grpcFixture) check(t *testing.T) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := f.client.Check(ctx, &healthpb.HealthCheckRequest{Service: "tidestream.v1.SorterService"})
	require.NoError(t, err)
	return resp.GetStatus()
}

func TestGRPCRunDrainsStreamThenReturnsNil(t *testing.T) {
	f := startGRPC(t, server.DefaultGRPCConfig())
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, f.check(t))
	f.checker.SetReady()
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, f.check(t))

	// A Watch is a long-lived server stream, like Subscribe.
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	watch, err := f.client.Watch(wctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	resp, err := watch.Recv()
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus())

	start := time.Now()
	f.cancel()
	// The in-flight stream sees the drain before anything closes.
	resp, err = watch.Recv()
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, resp.GetStatus())
	select {
	case err := <-f.done:
		t.Fatalf("Run returned %v while a stream was in flight", err)
	case <-time.After(200 * time.Millisecond):
	}

	wcancel() // the stream ends on its own, well inside DrainTimeout
	require.NoError(t, waitRun(t, f.done))
	require.Less(t, time.Since(start), server.DefaultGRPCConfig().DrainTimeout)
	require.True(t, f.checker.Draining())
}

func TestGRPCDrainTimeoutStopsHard(t *testing.T) {
	cfg := server.DefaultGRPCConfig()
	cfg.DrainTimeout = 100 * time.Millisecond
	f := startGRPC(t, cfg)
	f.checker.SetReady()

	watch, err := f.client.Watch(context.Background(), &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	_, err = watch.Recv()
	require.NoError(t, err)

	f.cancel()
	require.NoError(t, waitRun(t, f.done))
	// The stream never ended by itself; the hard stop cut it.
	for err == nil {
		_, err = watch.Recv()
	}
	require.Error(t, err)
}

func TestGRPCRunWithCancelledContext(t *testing.T) {
	cfg := server.DefaultGRPCConfig()
	cfg.Addr = "127.0.0.1:0"
	checker := health.New(nil)
	s, err := server.NewGRPCServer(cfg, checker, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, s.Run(ctx))
	require.True(t, checker.Draining())
	require.ErrorContains(t, s.Run(context.Background()), "Run called twice")
}
