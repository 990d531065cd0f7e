package kvclient

import (
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tidestream/tidestream/puller/internal/pgharness"
	"github.com/tidestream/tidestream/puller/matcher"
	"github.com/tikv/client-go/v2/util/codec"
)

// countSink counts events and keeps nothing.
type countSink struct {
	events   atomic.Int64
	resolved atomic.Uint64
}

func (s *countSink) Events(_ context.Context, evs []matcher.Event) error {
	s.events.Add(int64(len(evs)))
	return nil
}

func (s *countSink) Resolved(_ context.Context, ts uint64) error {
	s.resolved.Store(ts)
	return nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkFeedSynthetic measures the client against the playground's
// synthetic source (row changes generated straight into the streams, as
// PREWRITE + COMMIT pairs): events/s delivered to sinks and this process's
// CPU per event. One subscription per table, all on one multiplexed stream.
func BenchmarkFeedSynthetic(b *testing.B) {
	for _, tc := range []struct{ tables, regions int }{{1, 1}, {100, 10}} {
		b.Run(fmt.Sprintf("tables=%d/regions=%d", tc.tables, tc.regions), func(b *testing.B) {
			pg := pgharness.Start(b, "--resolved-ts-interval", "200ms",
				"--synthetic", "--synthetic-tables", fmt.Sprint(tc.tables), "--synthetic-regions", fmt.Sprint(tc.regions),
				"--synthetic-rate", "2000000", "--synthetic-txn-rows", "16", "--synthetic-report", "1h")
			rows, err := pg.DB().Query("SELECT TIDB_TABLE_ID FROM information_schema.tables WHERE table_schema = 'synthetic'")
			if err != nil {
				b.Fatal(err)
			}
			var ids []int64
			for rows.Next() {
				var id int64
				if err := rows.Scan(&id); err != nil {
					b.Fatal(err)
				}
				ids = append(ids, id)
			}
			rows.Close()
			if len(ids) != tc.tables {
				b.Fatalf("%d synthetic tables, want %d", len(ids), tc.tables)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			c, err := New(ctx, Config{PDAddrs: []string{pg.PDAddr()}})
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			startTs, err := c.kv.CurrentTimestamp("global")
			if err != nil {
				b.Fatal(err)
			}
			sink := &countSink{}
			sctx, stop := context.WithCancel(context.Background())
			done := make(chan error, len(ids))
			for _, id := range ids {
				prefix := append([]byte{'t'}, codec.EncodeInt(nil, id)...)
				span := Span{Start: codec.EncodeBytes(nil, append(prefix, "_r"...)), End: codec.EncodeBytes(nil, append(prefix, "_s"...))}
				go func() { done <- c.Subscribe(sctx, span, startTs, sink) }()
			}
			deadline := time.Now().Add(time.Minute)
			for sink.resolved.Load() == 0 && sink.events.Load() == 0 {
				if time.Now().After(deadline) {
					b.Fatal("no event or resolved ts within a minute")
				}
				time.Sleep(50 * time.Millisecond)
			}
			b.ResetTimer()
			const window = 10 * time.Second
			n0, cpu0, t0 := sink.events.Load(), cpuTime(), time.Now()
			time.Sleep(window) // the measurement window
			n1, cpu1, el := sink.events.Load(), cpuTime(), time.Since(t0)
			b.StopTimer()
			stop()
			for range ids {
				if err := <-done; err != nil {
					b.Errorf("Subscribe: %v", err)
				}
			}
			n, cpu := n1-n0, cpu1-cpu0
			if n == 0 {
				b.Fatal("no events in the window")
			}
			rate := float64(n) / el.Seconds()
			b.ReportMetric(rate, "events/s")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(n), "cpu-ns/event")
			b.ReportMetric(float64(n)/cpu.Seconds(), "events/cpu-s")
			b.Logf("%d tables × %d regions: %d events in %v = %.0f events/s; CPU %v = %.0f ns/event, %.0f events per CPU-second",
				tc.tables, tc.regions, n, el.Round(time.Millisecond), rate, cpu.Round(time.Millisecond),
				float64(cpu.Nanoseconds())/float64(n), float64(n)/cpu.Seconds())
		})
	}
}
