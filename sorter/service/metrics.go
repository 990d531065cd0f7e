package service

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// metrics are the service's instruments. Memory and disk use are the
// engine's own gauges (tidestream.sorter.engine.memory / .disk, from the same
// numbers as engine.Stats); exporting them here too would double-report.
// Lag is computed at collection time,
// from each pipeline's resolved ts at input (what the puller resolved) and
// output (what the encoder was sent), so a stuck pipeline shows up as a
// growing gauge rather than as missing samples.
type metrics struct {
	eventsIn, eventsOut metric.Int64Counter
	violations          metric.Int64Counter
	retries             metric.Int64Counter
	blocked             metric.Float64Counter
	reg                 metric.Registration
}

var (
	sideInput  = metric.WithAttributes(attribute.String("side", "input"))
	sideOutput = metric.WithAttributes(attribute.String("side", "output"))
)

func (m *metrics) init(s *Service) error {
	meter := s.cfg.Meter
	var err, e error
	m.eventsIn, e = meter.Int64Counter("tidestream.sorter.events.in",
		metric.WithDescription("events received from pullers and written to the engine"))
	err = errors.Join(err, e)
	m.eventsOut, e = meter.Int64Counter("tidestream.sorter.events.out",
		metric.WithDescription("events sent to encoders in commit-ts order"))
	err = errors.Join(err, e)
	m.violations, e = meter.Int64Counter("tidestream.sorter.upstream.violations",
		metric.WithDescription("events the puller sent at or below a resolved ts it had already sent; each restarts the pipeline"))
	err = errors.Join(err, e)
	m.retries, e = meter.Int64Counter("tidestream.sorter.upstream.retries",
		metric.WithDescription("re-subscriptions to the puller after a transient failure"))
	err = errors.Join(err, e)
	m.blocked, e = meter.Float64Counter("tidestream.sorter.downstream.blocked",
		metric.WithUnit("s"), metric.WithDescription("time spent in Send to the encoder (gRPC flow control)"))
	err = errors.Join(err, e)
	lag, e := meter.Float64ObservableGauge("tidestream.sorter.resolved_lag",
		metric.WithUnit("s"), metric.WithDescription("largest wall-clock lag of a pipeline's resolved ts, at input (from the puller) and output (sent to the encoder)"))
	err = errors.Join(err, e)
	if err != nil {
		return err
	}
	m.reg, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		in, out := s.maxLag(time.Now())
		o.ObserveFloat64(lag, in.Seconds(), sideInput)
		o.ObserveFloat64(lag, out.Seconds(), sideOutput)
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

// maxLag returns the largest input and output lag over live pipelines.
func (s *Service) maxLag(now time.Time) (in, out time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.pipes {
		if st.pipe == nil {
			continue
		}
		r := st.pipe.Resolved()
		if r != 0 {
			in = max(in, now.Sub(physical(r)))
		}
		if o := max(st.sentResolved.Load(), st.lowTs()); o != 0 {
			out = max(out, now.Sub(physical(o)))
		}
	}
	return in, out
}
