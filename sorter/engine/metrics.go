package engine

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// metrics are the engine's instruments. Totals per process: per-pipeline
// figures are in Stats, since a label per pipeline would multiply series by
// the number of tables.
type metrics struct {
	eventsIn, eventsOut, bytesIn, compactions metric.Int64Counter
	reg                                       metric.Registration
}

func newMetrics(m metric.Meter, e *Engine) (*metrics, error) {
	if m == nil {
		m = noop.NewMeterProvider().Meter("")
	}
	var (
		out  metrics
		errs [7]error
		mem  metric.Int64ObservableGauge
		disk metric.Int64ObservableGauge
	)
	out.eventsIn, errs[0] = m.Int64Counter("tidestream.sorter.engine.events_in",
		metric.WithDescription("Events written to the sorter store"), metric.WithUnit("{event}"))
	out.eventsOut, errs[1] = m.Int64Counter("tidestream.sorter.engine.events_out",
		metric.WithDescription("Events read out of the sorter store in order"), metric.WithUnit("{event}"))
	out.bytesIn, errs[2] = m.Int64Counter("tidestream.sorter.engine.bytes_in",
		metric.WithDescription("Event payload bytes written to the sorter store"), metric.WithUnit("By"))
	out.compactions, errs[3] = m.Int64Counter("tidestream.sorter.engine.compactions",
		metric.WithDescription("Compactions of acknowledged (deleted) ranges"), metric.WithUnit("{compaction}"))
	mem, errs[4] = m.Int64ObservableGauge("tidestream.sorter.engine.memory",
		metric.WithDescription("Bytes held by memtables and the block cache"), metric.WithUnit("By"))
	disk, errs[5] = m.Int64ObservableGauge("tidestream.sorter.engine.disk",
		metric.WithDescription("Bytes used on disk by the sorter store"), metric.WithUnit("By"))
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("sorter engine: create instruments: %w", err)
		}
	}
	out.reg, errs[6] = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		if err := e.acquire(); err != nil {
			return nil // closing: report nothing
		}
		defer e.release()
		pm := e.db.Metrics()
		o.ObserveInt64(mem, int64(pm.MemTable.Size)+pm.BlockCache.Size)
		o.ObserveInt64(disk, int64(pm.DiskSpaceUsage()))
		return nil
	}, mem, disk)
	if errs[6] != nil {
		return nil, fmt.Errorf("sorter engine: register callback: %w", errs[6])
	}
	return &out, nil
}

func (m *metrics) unregister() {
	if m.reg != nil {
		_ = m.reg.Unregister()
	}
}
