package service

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/metric"
)

// metrics are the service's instruments. The registry's own stalls show
// as EncodedBatch warnings and in its logs.
type metrics struct {
	eventsIn, recordsOut metric.Int64Counter
	skipped              metric.Int64Counter
	elsewhere            metric.Int64Counter
	retries              metric.Int64Counter
	streams              metric.Int64UpDownCounter
	reg                  metric.Registration
}

func (m *metrics) init(s *Service) error {
	meter := s.cfg.Meter
	var err, e error
	m.eventsIn, e = meter.Int64Counter("tidestream.encoder.events.in",
		metric.WithDescription("raw events received from sorters"))
	err = errors.Join(err, e)
	m.recordsOut, e = meter.Int64Counter("tidestream.encoder.records.out",
		metric.WithDescription("encoded records sent to producers"))
	err = errors.Join(err, e)
	m.skipped, e = meter.Int64Counter("tidestream.encoder.rows.skipped",
		metric.WithDescription("rows of table versions that are not replicated (no unique key, filtered, system schema)"))
	err = errors.Join(err, e)
	m.elsewhere, e = meter.Int64Counter("tidestream.encoder.rows.elsewhere",
		metric.WithDescription("rows of a physical id that another table's pipeline delivers: it belongs to that table at their commit ts (EXCHANGE PARTITION)"))
	err = errors.Join(err, e)
	m.retries, e = meter.Int64Counter("tidestream.encoder.upstream.retries",
		metric.WithDescription("re-subscriptions to a sorter after a transient failure"))
	err = errors.Join(err, e)
	m.streams, e = meter.Int64UpDownCounter("tidestream.encoder.streams",
		metric.WithDescription("open producer streams"))
	err = errors.Join(err, e)
	lag, e := meter.Float64ObservableGauge("tidestream.encoder.resolved_lag",
		metric.WithUnit("s"), metric.WithDescription("largest wall-clock lag of a pipeline's resolved ts sent to the producer"))
	err = errors.Join(err, e)
	if err != nil {
		return err
	}
	m.reg, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveFloat64(lag, s.maxLag(time.Now()).Seconds())
		return nil
	}, lag)
	return err
}

func (m *metrics) close() {
	if m.reg != nil {
		_ = m.reg.Unregister()
	}
}

// physical is the wall-clock time of a TSO timestamp: the upper bits are
// milliseconds since the epoch, the low 18 a logical counter.
func physical(ts uint64) time.Time { return time.UnixMilli(int64(ts >> 18)) }

func (s *Service) maxLag(now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var lag time.Duration
	for _, p := range s.pipes {
		if r := max(p.sentResolved.Load(), p.acked.Load()); r != 0 {
			lag = max(lag, now.Sub(physical(r)))
		}
	}
	return lag
}
