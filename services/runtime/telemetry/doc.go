// Package telemetry builds the OpenTelemetry MeterProvider a tidestream
// process records its metrics through, exported in the Prometheus text
// format on a private registry.
//
// It is responsible for: one sdk MeterProvider whose only reader is the OTel
// Prometheus exporter, a private prometheus.Registry holding that exporter
// plus the Go runtime and process collectors, and the http.Handler that
// serves the registry on /metrics.
//
// It is not responsible for: installing anything globally (main decides
// whether to call otel.SetMeterProvider; nothing here touches the default
// Prometheus registerer, so several processes' worth of telemetry can live
// in one test binary), defining the product's metrics (each component
// creates its own instruments from the Meter it is given), tracing, or
// serving HTTP (see the server package).
package telemetry
