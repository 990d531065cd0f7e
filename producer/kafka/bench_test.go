package kafka

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// BenchmarkProduce produces 200 B records (40 B key + 160 B value) into a
// kfake topic of 6 partitions, once through Producer and once through a
// bare franz-go loop with the same acks, idempotence, compression and
// manual partitioning, and prints records/s, MB/s and the ratio.
func BenchmarkProduce(b *testing.B) {
	const (
		topic     = "bench"
		keyLen    = 40
		valueLen  = 160
		recordLen = keyLen + valueLen
	)
	// A fresh cluster per run: kfake keeps every record in memory, and a
	// heap grown by the previous run would slow the next one's GC.
	cluster := func(b *testing.B) *kfake.Cluster {
		return newCluster(b, kfake.NumBrokers(1), kfake.SeedTopics(6, topic))
	}
	key := make([]byte, keyLen)
	value := make([]byte, valueLen)
	rates := map[string]float64{}

	report := func(b *testing.B, name string, d time.Duration) {
		rps := float64(b.N) / d.Seconds()
		b.ReportMetric(rps, "records/s")
		b.ReportMetric(rps*recordLen/1e6, "MB/s")
		rates[name] = rps
	}

	b.Run("bare-kgo", func(b *testing.B) {
		c := cluster(b)
		cl, err := kgo.NewClient(
			kgo.SeedBrokers(c.ListenAddrs()...),
			kgo.RecordPartitioner(kgo.ManualPartitioner()),
			kgo.ProducerBatchCompression(kgo.NoCompression()),
			kgo.ProducerLinger(0),
		)
		require.NoError(b, err)
		defer cl.Close()
		ctx := context.Background()
		var wg sync.WaitGroup
		b.ResetTimer()
		start := time.Now()
		for i := range b.N {
			wg.Add(1)
			r := &kgo.Record{Topic: topic, Key: key, Value: value, Partition: int32(uint64(i) % 6)}
			cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
				if err != nil {
					b.Error(err)
				}
				wg.Done()
			})
		}
		wg.Wait()
		report(b, "bare-kgo", time.Since(start))
	})

	b.Run("producer", func(b *testing.B) {
		c := cluster(b)
		p := newProducer(b, sink(c.ListenAddrs(), topic))
		ctx := context.Background()
		require.NoError(b, p.CheckDefaultTopic(ctx))
		var wg sync.WaitGroup
		b.ResetTimer()
		start := time.Now()
		for i := range b.N {
			wg.Add(1)
			rec := &tidestreamv1.EncodedRecord{Topic: topic, Key: key, Value: value, PartitionHash: uint64(i), CommitTs: uint64(i)}
			if err := p.Produce(ctx, rec, func(err error) {
				if err != nil {
					b.Error(err)
				}
				wg.Done()
			}); err != nil {
				b.Fatal(err)
			}
		}
		wg.Wait()
		report(b, "producer", time.Since(start))
	})

	if bare, ours := rates["bare-kgo"], rates["producer"]; bare > 0 && ours > 0 {
		// Printed, not logged: a parent benchmark's log is not shown.
		fmt.Printf("BenchmarkProduce: 200 B records: producer %.0f records/s (%.1f MB/s), bare franz-go %.0f records/s (%.1f MB/s), ratio %.2f\n",
			ours, ours*recordLen/1e6, bare, bare*recordLen/1e6, ours/bare)
	}
}
