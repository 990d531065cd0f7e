package node

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A changefeed start subscribes every pipeline at once; one PD read must
// answer them all, and an old answer must be refreshed, never lowered.
func TestSafePointCacheReadsOnceForConcurrentSubscribes(t *testing.T) {
	c := newSafePointCache()
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	var reads atomic.Int32
	release := make(chan struct{})
	next := uint64(100)
	read := func(context.Context) (uint64, error) {
		reads.Add(1)
		<-release
		return next, nil
	}
	var wg sync.WaitGroup
	got := make([]uint64, 50)
	for i := range got {
		wg.Go(func() {
			ts, err := c.get(context.Background(), read)
			require.NoError(t, err)
			got[i] = ts
		})
	}
	time.Sleep(10 * time.Millisecond) // let callers queue behind the first read; the assertion below holds either way
	close(release)
	wg.Wait()
	require.Equal(t, int32(1), reads.Load())
	for _, ts := range got {
		require.Equal(t, uint64(100), ts)
	}

	now = now.Add(safePointMaxAge)
	next = 90 // a lower answer (another PD member lagging) keeps the higher bound
	ts, err := c.get(context.Background(), read)
	require.NoError(t, err)
	require.Equal(t, uint64(100), ts)
	require.Equal(t, int32(2), reads.Load())

	now = now.Add(safePointMaxAge)
	fail := errors.New("pd down")
	_, err = c.get(context.Background(), func(context.Context) (uint64, error) { return 0, fail })
	require.ErrorIs(t, err, fail)
	next = 200
	ts, err = c.get(context.Background(), read) // the failure was not cached
	require.NoError(t, err)
	require.Equal(t, uint64(200), ts)
}

func TestSafePointCacheWaitHonoursContext(t *testing.T) {
	c := newSafePointCache()
	blocked := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = c.get(context.Background(), func(context.Context) (uint64, error) { <-blocked; return 1, nil })
	}()
	require.Eventually(t, func() bool { return len(c.turn) == 1 }, 5*time.Second, time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.get(ctx, func(context.Context) (uint64, error) { t.Fatal("read while another read runs"); return 0, nil })
	require.ErrorIs(t, err, context.Canceled)
	close(blocked)
	<-done
}
