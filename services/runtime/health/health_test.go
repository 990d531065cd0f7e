package health_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/tidestream/tidestream/services/runtime/health"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const pullerSvc = "tidestream.v1.PullerService"

// serve starts a real gRPC server with the checker on a loopback port and
// returns a health client connected to it.
func serve(t *testing.T, c *health.Checker) healthpb.HealthClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	c.Register(srv)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, conn.Close())
		srv.Stop()
		require.NoError(t, <-done)
	})
	return healthpb.NewHealthClient(conn)
}

func check(t *testing.T, cl healthpb.HealthClient, svc string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cl.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
	require.NoError(t, err)
	return resp.GetStatus()
}

func requireAll(t *testing.T, cl healthpb.HealthClient, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	require.Equal(t, want, check(t, cl, health.Overall), "overall")
	require.Equal(t, want, check(t, cl, pullerSvc), pullerSvc)
}

func TestTransitionsOverGRPC(t *testing.T) {
	c := health.New(nil, pullerSvc)
	cl := serve(t, c)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	watch, err := cl.Watch(ctx, &healthpb.HealthCheckRequest{Service: pullerSvc})
	require.NoError(t, err)
	nextWatched := func() healthpb.HealthCheckResponse_ServingStatus {
		resp, err := watch.Recv()
		require.NoError(t, err)
		return resp.GetStatus()
	}

	requireAll(t, cl, healthpb.HealthCheckResponse_NOT_SERVING)
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, nextWatched())
	require.False(t, c.Serving())

	c.SetReady()
	requireAll(t, cl, healthpb.HealthCheckResponse_SERVING)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, nextWatched())
	require.True(t, c.Serving())

	c.Drain()
	requireAll(t, cl, healthpb.HealthCheckResponse_NOT_SERVING)
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, nextWatched())
	require.True(t, c.Draining())

	// Drain is final: a dependency coming up late must not re-advertise us.
	c.SetReady()
	require.NoError(t, c.SetServiceStatus(pullerSvc, true))
	requireAll(t, cl, healthpb.HealthCheckResponse_NOT_SERVING)

	_, err = cl.Check(ctx, &healthpb.HealthCheckRequest{Service: "no.such.Service"})
	require.Equal(t, codes.NotFound, status.Code(err))
}

func TestNotReadyIsReversible(t *testing.T) {
	c := health.New(nil, pullerSvc)
	cl := serve(t, c)
	c.SetReady()
	c.SetNotReady()
	requireAll(t, cl, healthpb.HealthCheckResponse_NOT_SERVING)
	c.SetReady()
	requireAll(t, cl, healthpb.HealthCheckResponse_SERVING)
}

func TestSetServiceStatus(t *testing.T) {
	c := health.New(nil, pullerSvc, "tidestream.v1.SorterService")
	cl := serve(t, c)
	c.SetReady()
	require.NoError(t, c.SetServiceStatus(pullerSvc, false))
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, check(t, cl, pullerSvc))
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, check(t, cl, "tidestream.v1.SorterService"))
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, check(t, cl, health.Overall))

	err := c.SetServiceStatus("tidestream.v1.Typo", true)
	require.ErrorContains(t, err, `unknown service "tidestream.v1.Typo"`)
	require.ErrorContains(t, err, pullerSvc)
}

func get(t *testing.T, h http.Handler) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	body, err := io.ReadAll(rec.Result().Body)
	require.NoError(t, err)
	return rec.Code, string(body)
}

func TestHTTPHandlers(t *testing.T) {
	c := health.New(nil, pullerSvc)

	code, _ := get(t, c.HealthzHandler())
	require.Equal(t, http.StatusServiceUnavailable, code)
	code, body := get(t, c.ReadyzHandler())
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, pullerSvc+": NOT_SERVING")
	code, _ = get(t, c.LivezHandler())
	require.Equal(t, http.StatusOK, code)

	c.SetReady()
	code, _ = get(t, c.HealthzHandler())
	require.Equal(t, http.StatusOK, code)
	code, body = get(t, c.ReadyzHandler())
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, pullerSvc+": SERVING")

	// One role down: the process as a whole still answers, readiness not.
	require.NoError(t, c.SetServiceStatus(pullerSvc, false))
	code, _ = get(t, c.HealthzHandler())
	require.Equal(t, http.StatusOK, code)
	code, _ = get(t, c.ReadyzHandler())
	require.Equal(t, http.StatusServiceUnavailable, code)

	c.Drain()
	code, body = get(t, c.HealthzHandler())
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "overall: NOT_SERVING\n", body)
	code, _ = get(t, c.LivezHandler())
	require.Equal(t, http.StatusOK, code)
}
