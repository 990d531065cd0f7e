package kafka

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// BenchmarkEnsureTopics creates 2,000 topics with concurrent calls, as a
// changefeed of 2,000 tables does at its start, and prints topics/s and
// the metadata, CreateTopics and DescribeConfigs requests the broker saw:
// EnsureTopic alone, and load (EnsureTopic plus the topic's
// max.message.bytes: what the first record of a table waits for).
func BenchmarkEnsureTopics(b *testing.B) {
	b.Run("EnsureTopic", func(b *testing.B) {
		benchTopics(b, func(ctx context.Context, p *Producer, topic string) error {
			_, err := p.EnsureTopic(ctx, topic)
			return err
		})
	})
	b.Run("load", func(b *testing.B) {
		benchTopics(b, func(ctx context.Context, p *Producer, topic string) error {
			_, err := p.load(ctx, topic)
			return err
		})
	})
}

func benchTopics(b *testing.B, do func(context.Context, *Producer, string) error) {
	const topics = 2000
	var total time.Duration
	for i := range b.N {
		c := newCluster(b, kfake.NumBrokers(1))
		counts := map[kmsg.Key]*atomic.Int64{}
		for _, k := range []kmsg.Key{kmsg.Metadata, kmsg.CreateTopics, kmsg.DescribeConfigs} {
			n := new(atomic.Int64)
			counts[k] = n
			c.ControlKey(int16(k), func(kmsg.Request) (kmsg.Response, error, bool) {
				n.Add(1)
				return nil, nil, false
			})
		}
		p := newProducer(b, sink(c.ListenAddrs(), "ticdc-meta"))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		var wg sync.WaitGroup
		start := time.Now()
		for j := range topics {
			wg.Go(func() {
				if err := do(ctx, p, fmt.Sprintf("tidb_bench_t%d", j)); err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
		took := time.Since(start)
		total += took
		cancel()
		// Printed, not logged: a benchmark's log is shown only with -v.
		fmt.Printf("%s run %d: %d topics in %v: %.0f topics/s; requests: %d Metadata, %d CreateTopics, %d DescribeConfigs\n",
			b.Name(), i, topics, took.Round(time.Millisecond), topics/took.Seconds(),
			counts[kmsg.Metadata].Load(), counts[kmsg.CreateTopics].Load(), counts[kmsg.DescribeConfigs].Load())
	}
	b.ReportMetric(float64(topics*b.N)/total.Seconds(), "topics/s")
}
