package kvclient

import (
	"context"

	"fmt"
	"github.com/pingcap/kvproto/pkg/cdcpb"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// metrics are the client's instruments. Attribute sets are built per call:
// the cardinality is stores × error kinds, small.
type metrics struct {
	regions      metric.Int64UpDownCounter
	events       metric.Int64Counter
	rows         metric.Int64Counter
	regionErrors metric.Int64Counter
	reconnects   metric.Int64Counter
	resolvedLag  metric.Float64Histogram
	lockResolves metric.Int64Counter
	sinkBlocked  metric.Float64Counter
	// rowTypeOpts are prebuilt per LogType: rows are counted per message
	// and building an attribute set per row would cost more than the row.
	rowTypeOpts [numLogTypes]metric.AddOption
}

// rowCounts counts rows by LogType within one message.
type rowCounts [numLogTypes]int64

func (r *rowCounts) add(t cdcpb.Event_LogType) {
	if int(t) >= 0 && int(t) < len(r) {
		r[t]++
	}
}

// record adds the counts to the rows counter and zeroes them.
func (r *rowCounts) record(m *metrics) {
	for t, n := range r {
		if n > 0 {
			m.rows.Add(context.Background(), n, m.rowTypeOpts[t])
			r[t] = 0
		}
	}
}

func newMetrics(m metric.Meter) (*metrics, error) {
	if m == nil {
		m = noop.NewMeterProvider().Meter("")
	}
	var (
		out  metrics
		errs [8]error
	)
	out.regions, errs[0] = m.Int64UpDownCounter("tidestream.puller.kv.regions",
		metric.WithDescription("Region subscriptions held, by store"), metric.WithUnit("{region}"))
	out.events, errs[1] = m.Int64Counter("tidestream.puller.kv.events",
		metric.WithDescription("Committed events passed to sinks"), metric.WithUnit("{event}"))
	out.rows, errs[2] = m.Int64Counter("tidestream.puller.kv.rows",
		metric.WithDescription("Change-data rows received, by log type"), metric.WithUnit("{row}"))
	out.regionErrors, errs[3] = m.Int64Counter("tidestream.puller.kv.errors",
		metric.WithDescription("Region errors and stream failures, by kind"), metric.WithUnit("{error}"))
	out.reconnects, errs[4] = m.Int64Counter("tidestream.puller.kv.stream_reconnects",
		metric.WithDescription("Change-data streams that ended and were re-opened, by store"), metric.WithUnit("{stream}"))
	out.resolvedLag, errs[5] = m.Float64Histogram("tidestream.puller.kv.resolved_lag",
		metric.WithDescription("Wall clock minus the span resolved ts at each advance"), metric.WithUnit("s"))
	out.lockResolves, errs[6] = m.Int64Counter("tidestream.puller.kv.lock_resolves",
		metric.WithDescription("Lock-resolve runs on regions whose resolved ts was stuck, by outcome"), metric.WithUnit("{run}"))
	out.sinkBlocked, errs[7] = m.Float64Counter("tidestream.puller.kv.sink_blocked",
		metric.WithDescription("Time spent inside Sink calls"), metric.WithUnit("s"))
	for t := range out.rowTypeOpts {
		name := cdcpb.Event_LogType_name[int32(t)]
		out.rowTypeOpts[t] = metric.WithAttributeSet(attribute.NewSet(attribute.String("type", name)))
	}
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("kvclient: create instruments: %w", err)
		}
	}
	return &out, nil
}

func storeAttr(addr string) metric.MeasurementOption {
	return metric.WithAttributes(attribute.String("store", addr))
}

func kindAttr(kind string) metric.MeasurementOption {
	return metric.WithAttributes(attribute.String("kind", kind))
}

// numLogTypes covers UNKNOWN … INITIALIZED.
const numLogTypes = int(cdcpb.Event_INITIALIZED) + 1
