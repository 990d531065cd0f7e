package store

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for the TSO.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

func compose(p, l int64) uint64 { return uint64(p)<<logicalBits | uint64(l) }

func TestTSOBatchConsecutiveAndIncreasing(t *testing.T) {
	clk := &fakeClock{now: time.UnixMilli(1_700_000_000_000)}
	path := filepath.Join(t.TempDir(), "tso")
	ts, err := openTSO(path, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	pd := &PD{tso: ts}
	ctx := context.Background()

	var last uint64
	check := func(p, l int64, n int64) {
		t.Helper()
		first := compose(p, l-n+1)
		if l-n+1 < 0 {
			t.Fatalf("batch of %d ends at logical %d: first logical negative", n, l)
		}
		if first <= last {
			t.Fatalf("batch (%d,%d) n=%d starts at %d, not above last issued %d", p, l, n, first, last)
		}
		last = compose(p, l)
	}
	// Same millisecond: batches continue the logical sequence.
	p, l, err := pd.GetTSBatch(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if p != clk.Now().UnixMilli() || l != 9 {
		t.Fatalf("first batch = (%d,%d), want (%d,9)", p, l, clk.Now().UnixMilli())
	}
	check(p, l, 10)
	p, l, err = pd.GetTSBatch(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	if l != 14 {
		t.Fatalf("second batch last logical = %d, want 14", l)
	}
	check(p, l, 5)
	// Single timestamps interleave with batches.
	sp, sl, err := pd.GetTS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	check(sp, sl, 1)

	// A batch that would overflow the logical part moves to the next millisecond.
	p, l, err = pd.GetTSBatch(ctx, MaxTSBatch-5)
	if err != nil {
		t.Fatal(err)
	}
	if p != clk.Now().UnixMilli()+1 || l != MaxTSBatch-6 {
		t.Fatalf("overflowing batch = (%d,%d)", p, l)
	}
	check(p, l, MaxTSBatch-5)

	// Clock moving back does not move timestamps back.
	clk.Set(clk.Now().Add(-time.Hour))
	p, l, err = pd.GetTSBatch(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	check(p, l, 3)

	// Invalid sizes.
	if _, _, err := pd.GetTSBatch(ctx, 0); err == nil {
		t.Fatal("batch of 0 accepted")
	}
	if _, _, err := pd.GetTSBatch(ctx, MaxTSBatch+1); err == nil {
		t.Fatal("batch above MaxTSBatch accepted")
	}

	// A restart on the same file with the clock still behind stays above.
	ts2, err := openTSO(path, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	pd2 := &PD{tso: ts2}
	p, l, err = pd2.GetTSBatch(ctx, 7)
	if err != nil {
		t.Fatal(err)
	}
	check(p, l, 7)
}

func TestTSOBatchConcurrent(t *testing.T) {
	ts, err := openTSO(filepath.Join(t.TempDir(), "tso"), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	pd := &PD{tso: ts}
	const workers, rounds = 8, 200
	var mu sync.Mutex
	seen := make(map[uint64]bool)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				n := int64(1 + (w+i)%17)
				p, l, err := pd.GetTSBatch(context.Background(), uint32(n))
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				for k := l - n + 1; k <= l; k++ {
					c := compose(p, k)
					if seen[c] {
						mu.Unlock()
						t.Errorf("timestamp %d issued twice", c)
						return
					}
					seen[c] = true
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
