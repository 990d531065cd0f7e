package service

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// vmRSS reads the process's resident set size from /proc/self/status.
func vmRSS() (int64, error) { return procStatus("VmRSS:") }

// procStatus reads one kB field of /proc/self/status, in bytes.
func procStatus(field string) (int64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("%s not found in /proc/self/status", field)
}

// TestMemoryStaysUnderQuota is issue 5's memory acceptance test: with a
// 64 MiB engine quota, 2 GiB of events flow through one pipeline while the
// encoder does not read for the first half; the process RSS (fake puller,
// service, engine and consumer together) must stay under quota + 100 MiB.
// Afterwards everything drains in order and acks bring the disk back near
// zero.
//
// The engine pins glibc's mmap threshold when it opens (see
// engine/malloc_linux.go); without that, RSS drifts ~100 MiB above what is
// in use (peak 202-237 MiB untuned vs 94-123 MiB pinned, same workload).
//
// Opt-in (SORTER_MEMORY_TEST=1) because it moves 2 GiB through gRPC and
// pebble, and not under -race, whose shadow memory multiplies RSS:
//
//	SORTER_MEMORY_TEST=1 go test -count=1 -run TestMemoryStaysUnderQuota -v ./sorter/service/
func TestMemoryStaysUnderQuota(t *testing.T) {
	if os.Getenv("SORTER_MEMORY_TEST") != "1" {
		t.Skip("set SORTER_MEMORY_TEST=1 to run the 2 GiB memory test (not under -race)")
	}
	if raceEnabled {
		t.Skip("the race detector's shadow memory inflates RSS several times; run the memory test without -race")
	}
	const (
		quota      = 64 << 20
		total      = 2 << 30
		payload    = 1000 // value bytes per event
		perTxn     = 4    // events sharing a commit ts
		perBatch   = 1024 // events per PullerBatch, a multiple of perTxn
		limitBytes = quota + 100<<20
	)
	// Values are slices of a random pool, so pebble's block compression
	// cannot shrink 2 GiB to nothing; nothing generated is retained.
	pool := make([]byte, 4<<20)
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := 0; i+8 <= len(pool); i += 8 {
		binary.LittleEndian.PutUint64(pool[i:], rnd.Uint64())
	}
	var produced atomic.Int64 // payload bytes sent by the fake puller
	var lastTs atomic.Uint64
	eventCount := int64(total / payload)
	eventCount -= eventCount % perBatch
	fp := &fakePuller{gen: func(ctx context.Context, _ int, req *tidestreamv1.SubscribeRequest, send func(*tidestreamv1.PullerBatch) error) error {
		ts := req.FromTs
		r := rand.New(rand.NewPCG(3, 4))
		for n := int64(0); n < eventCount; {
			b := &tidestreamv1.PullerBatch{Events: make([]*tidestreamv1.RawKVEvent, 0, perBatch)}
			for i := range perBatch {
				if i%perTxn == 0 {
					ts++
				}
				off := r.IntN(len(pool) - payload)
				b.Events = append(b.Events, &tidestreamv1.RawKVEvent{Key: fmt.Appendf(nil, "t_r%012d", n+int64(i)),
					Value: pool[off : off+payload], Op: tidestreamv1.OpType_OP_TYPE_PUT, StartTs: ts - 1, CommitTs: ts})
			}
			b.ResolvedTs = ts
			if err := send(b); err != nil {
				return err
			}
			n += perBatch
			produced.Add(perBatch * payload)
		}
		lastTs.Store(ts)
		<-ctx.Done()
		return nil
	}}
	rg := newRig(t, fp, quota, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	var maxRSS atomic.Int64
	var peak atomic.Value
	samplerDone := make(chan struct{})
	sctx, stopSampler := context.WithCancel(ctx)
	go func() {
		defer close(samplerDone)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			if rss, err := vmRSS(); err == nil && rss > maxRSS.Load() {
				maxRSS.Store(rss)
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				es := rg.eng.Stats()
				anon, _ := procStatus("RssAnon:")
				peak.Store(fmt.Sprintf("rss %d MiB (anonymous %d MiB): go heap in use %d MiB, go sys %d MiB, engine memtables %d MiB + cache %d MiB",
					rss>>20, anon>>20, ms.HeapInuse>>20, ms.Sys>>20, es.MemTableBytes>>20, es.BlockCacheBytes>>20))
			}
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	defer func() { stopSampler(); <-samplerDone }()

	began := time.Now()
	st, err := rg.client.Subscribe(ctx, subReq(1, 1, 1000))
	require.NoError(t, err)
	// Paused consumer: nothing is read until half the data was pulled.
	for produced.Load() < total/2 {
		time.Sleep(50 * time.Millisecond)
		require.NoError(t, ctx.Err())
	}
	paused := time.Since(began)
	stats := rg.eng.Stats()
	t.Logf("paused phase: %d MiB pulled in %s; engine memory %d MiB, disk %d MiB; max RSS so far %d MiB",
		produced.Load()>>20, paused.Round(time.Millisecond), stats.MemoryBytes>>20, stats.DiskBytes>>20, maxRSS.Load()>>20)
	require.Less(t, maxRSS.Load(), int64(limitBytes), "RSS over quota + 100 MiB while the consumer was paused")

	// Resume: drain everything, in order, acking as an encoder would.
	var got int64
	var prevTs, prevStart uint64
	var prevKey []byte
	var resolved, acked uint64
	for got < eventCount || resolved < lastTs.Load() || lastTs.Load() == 0 {
		b, err := st.Recv()
		require.NoError(t, err)
		for _, e := range b.Events {
			switch {
			case e.CommitTs < prevTs, e.CommitTs == prevTs && e.StartTs < prevStart,
				e.CommitTs == prevTs && e.StartTs == prevStart && string(e.Key) <= string(prevKey):
				t.Fatalf("out of order after %d events: (%d,%d,%s) then (%d,%d,%s)", got, prevTs, prevStart, prevKey, e.CommitTs, e.StartTs, e.Key)
			}
			require.LessOrEqual(t, len(e.Value), payload)
			prevTs, prevStart, prevKey = e.CommitTs, e.StartTs, e.Key
			got++
		}
		if b.ResolvedTs != 0 {
			resolved = b.ResolvedTs
			if resolved-acked > 1<<14 {
				_, err := rg.client.Ack(ctx, &tidestreamv1.PipelineProgress{ChangefeedId: "cf", PipelineId: 1, Epoch: 1, CheckpointTs: resolved})
				require.NoError(t, err)
				acked = resolved
			}
		}
	}
	elapsed := time.Since(began)
	require.Equal(t, eventCount, got, "every event exactly once")
	_, err = rg.client.Ack(ctx, &tidestreamv1.PipelineProgress{ChangefeedId: "cf", PipelineId: 1, Epoch: 1, CheckpointTs: resolved})
	require.NoError(t, err)
	t.Logf("drained %d events (%d MiB payload) in %s total (%.0f events/s end to end)",
		got, int64(got)*payload>>20, elapsed.Round(time.Millisecond), float64(got)/elapsed.Seconds())

	// Disk returns near zero once acks are compacted away.
	var disk uint64
	require.Eventually(t, func() bool {
		disk = rg.eng.Stats().DiskBytes
		return disk < 8<<20
	}, 2*time.Minute, 200*time.Millisecond, "disk use after the final ack")
	t.Logf("disk after acks: %d KiB", disk>>10)
	t.Logf("at the peak: %v", peak.Load())
	t.Logf("MAX RSS %d MiB (limit %d MiB = quota %d MiB + 100 MiB)", maxRSS.Load()>>20, limitBytes>>20, quota>>20)
	require.Less(t, maxRSS.Load(), int64(limitBytes), "RSS over quota + 100 MiB")
}
