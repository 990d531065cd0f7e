package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"

	"github.com/tidestream/tidestream/services/runtime/logging"
)

// Config configures New.
type Config struct {
	// ServiceName becomes the service.name resource attribute, exported on
	// the target_info metric. Default "tidestream".
	ServiceName string
	// ServiceInstanceID, when set, becomes service.instance.id, so that
	// several processes behind one scrape job can be told apart even when
	// the scraper's instance label is rewritten.
	ServiceInstanceID string
	// Namespace is prefixed to every OTel metric name ("tidestream" turns
	// "puller.batches" into "tidestream_puller_batches_total"). It must be
	// empty or match [a-zA-Z_][a-zA-Z0-9_]*. Default empty: component
	// meters already carry a stage prefix in their instrument names.
	Namespace string
	// DisableRuntimeCollectors leaves out the Go runtime (go_*) and process
	// (process_*) collectors. Only tests that compare exact scrapes want it.
	DisableRuntimeCollectors bool
}

// DefaultConfig returns the Config main starts from.
func DefaultConfig() Config {
	return Config{ServiceName: "tidestream"}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.ServiceName == "" {
		return errors.New("telemetry: Config.ServiceName must not be empty")
	}
	if c.Namespace != "" && !validMetricPrefix(c.Namespace) {
		return fmt.Errorf("telemetry: Config.Namespace %q must be empty or match [a-zA-Z_][a-zA-Z0-9_]*", c.Namespace)
	}
	return nil
}

// Telemetry is the metrics pipeline of one process.
type Telemetry struct {
	// MeterProvider is what components get their Meter from. Pass it (or a
	// Meter made from it) explicitly; it is not installed globally.
	MeterProvider *sdkmetric.MeterProvider
	// Registry is private to this Telemetry. Components that still speak
	// client_golang (franz-go's kprom plugin, for one) register here.
	Registry *prometheus.Registry
	// Handler serves Registry in the Prometheus exposition format; mount it
	// on /metrics.
	Handler http.Handler
}

// New builds the MeterProvider, registry and handler. It starts no
// goroutines: the Prometheus exporter collects on scrape.
func New(cfg Config, logger *slog.Logger) (*Telemetry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger = logging.Component(logger, "telemetry")

	reg := prometheus.NewRegistry()
	if !cfg.DisableRuntimeCollectors {
		if err := reg.Register(collectors.NewGoCollector()); err != nil {
			return nil, fmt.Errorf("telemetry: register go collector: %w", err)
		}
		if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
			return nil, fmt.Errorf("telemetry: register process collector: %w", err)
		}
	}

	opts := []otelprom.Option{otelprom.WithRegisterer(reg)}
	if cfg.Namespace != "" {
		opts = append(opts, otelprom.WithNamespace(cfg.Namespace))
	}
	exporter, err := otelprom.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
	}

	// Schemaless on purpose: merging with resource.Default() would pin a
	// semconv schema URL, and a later otel upgrade that changes it would
	// make the merge fail at start-up.
	attrs := []attribute.KeyValue{attribute.String("service.name", cfg.ServiceName)}
	if cfg.ServiceInstanceID != "" {
		attrs = append(attrs, attribute.String("service.instance.id", cfg.ServiceInstanceID))
	}
	mp := sdkmetric.NewMeterProvider(
		sdkmetric.WithReader(exporter),
		sdkmetric.WithResource(resource.NewSchemaless(attrs...)),
	)

	handler := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: promLogger{logger},
		// One broken collector must not blank the whole scrape: lag and
		// checkpoint metrics are what an operator needs most when
		// something else is already wrong.
		ErrorHandling: promhttp.ContinueOnError,
		// Bounds work per scrape if several scrapers (or a stuck one that
		// retries) hit the endpoint at once.
		MaxRequestsInFlight: 4,
	})

	return &Telemetry{MeterProvider: mp, Registry: reg, Handler: handler}, nil
}

// Shutdown stops the MeterProvider; instruments become no-ops and scrapes
// return only the client_golang collectors. Call it after every component
// that records metrics has returned.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	if err := t.MeterProvider.Shutdown(ctx); err != nil {
		return fmt.Errorf("telemetry: shutdown: %w", err)
	}
	return nil
}

// promLogger adapts slog to promhttp's Println-style error log.
type promLogger struct{ l *slog.Logger }

func (p promLogger) Println(v ...any) {
	p.l.Warn("metrics scrape error", "detail", fmt.Sprint(v...))
}

// validMetricPrefix reports whether s matches [a-zA-Z_][a-zA-Z0-9_]*, the
// legacy Prometheus name alphabet that every scraper accepts.
func validMetricPrefix(s string) bool {
	for i, r := range s {
		switch {
		case r == '_', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return s != ""
}
