package consumer

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestRunFollows: Run keeps applying what is produced while it runs, in
// batches of many records, and returns nil when its context ends. It
// logs the rate, a rough figure for 2 cores.
func TestRunFollows(t *testing.T) {
	const n = 20000
	for name, srv := range targets(t) {
		t.Run(name, func(t *testing.T) {
			env := newKafkaEnv(t, 4)
			c := env.consumer(t, srv.URL, "follow")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- c.Run(ctx) }()

			start := time.Now()
			var wg sync.WaitGroup
			var perr error
			var mu sync.Mutex
			for i := 0; i < n; i++ {
				r := &kgo.Record{Topic: "tidb_s_t",
					Key:   env.encode("tidb_s_t-key", keyInt, map[string]any{"id": i % (n / 2)}),
					Value: env.encode("tidb_s_t-value", valV1, row1(i%(n/2), map[string]any{"string": fmt.Sprint("v", i)}, "1.25", 0.5))}
				wg.Add(1)
				env.cl.Produce(context.Background(), r, func(_ *kgo.Record, err error) {
					if err != nil {
						mu.Lock()
						perr = err
						mu.Unlock()
					}
					wg.Done()
				})
			}
			wg.Wait()
			require.NoError(t, perr)
			db := srv.Open(t)
			q := "SELECT COUNT(*) FROM tidb_s_t WHERE name LIKE 'v1%' OR name LIKE 'v%'"
			deadline := time.Now().Add(90 * time.Second)
			for {
				var cnt int
				var last string
				err := db.QueryRow(q).Scan(&cnt)
				if err == nil && cnt == n/2 {
					// The second half of the records overwrote the first.
					require.NoError(t, db.QueryRow("SELECT name FROM tidb_s_t WHERE id = 0").Scan(&last))
					if last == fmt.Sprint("v", n/2) {
						break
					}
				}
				require.True(t, time.Now().Before(deadline), "rows: %d %v", cnt, err)
				time.Sleep(100 * time.Millisecond)
			}
			t.Logf("%s: %d records (produce + apply) in %s", name, n, time.Since(start).Round(time.Millisecond))
			cancel()
			require.NoError(t, <-done)
		})
	}
}
