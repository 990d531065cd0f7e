package telemetry_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/goleak"

	"github.com/tidestream/tidestream/services/runtime/telemetry"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(body)
}

func TestMetricsEndpointServesRecordedCounter(t *testing.T) {
	cfg := telemetry.DefaultConfig()
	cfg.Namespace = "tidestream"
	tel, err := telemetry.New(cfg, nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, tel.Shutdown(context.Background())) }()

	c, err := tel.MeterProvider.Meter("puller").Int64Counter("puller.batches",
		metric.WithDescription("batches sent downstream"))
	require.NoError(t, err)
	c.Add(context.Background(), 3, metric.WithAttributes(attribute.String("changefeed", "cf1")))

	body := scrape(t, tel.Handler)
	require.Contains(t, body, "# HELP tidestream_puller_batches_total batches sent downstream")
	require.Regexp(t, `tidestream_puller_batches_total\{changefeed="cf1",[^}]*\} 3\n`, body)
	require.Contains(t, body, `service_name="tidestream"`, "target_info carries the resource")
	require.Contains(t, body, "go_goroutines")
	require.Contains(t, body, "process_")
}

func TestRegistriesArePrivate(t *testing.T) {
	// Two instances in one process (the in-process e2e runner) must not
	// collide, and neither may touch the default registerer.
	a, err := telemetry.New(telemetry.DefaultConfig(), nil)
	require.NoError(t, err)
	b, err := telemetry.New(telemetry.DefaultConfig(), nil)
	require.NoError(t, err)
	require.NotSame(t, a.Registry, b.Registry)

	c, err := a.MeterProvider.Meter("x").Int64Counter("only.in.a")
	require.NoError(t, err)
	c.Add(context.Background(), 1)
	require.Regexp(t, `only_in_a_total\{[^}]*\} 1\n`, scrape(t, a.Handler))
	require.NotContains(t, scrape(t, b.Handler), "only_in_a")

	mfs, err := prometheus.DefaultGatherer.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		require.NotContains(t, mf.GetName(), "only_in_a")
	}
	require.NoError(t, a.Shutdown(context.Background()))
	require.NoError(t, b.Shutdown(context.Background()))
}

func TestConfigValidate(t *testing.T) {
	cfg := telemetry.DefaultConfig()
	require.NoError(t, cfg.Validate())

	cfg.ServiceName = ""
	require.ErrorContains(t, cfg.Validate(), "Config.ServiceName")

	cfg = telemetry.DefaultConfig()
	for _, ns := range []string{"9lives", "a-b", "é"} {
		cfg.Namespace = ns
		require.ErrorContains(t, cfg.Validate(), "Config.Namespace", ns)
	}
	cfg.Namespace = "_ok_9"
	require.NoError(t, cfg.Validate())
}
