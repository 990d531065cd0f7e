package feedclient_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/pingcap/tidb/pkg/kv"
	"github.com/pingcap/tidb/pkg/tablecodec"
	"github.com/pingcap/tidb/pkg/types"
	"github.com/pingcap/tidb/pkg/util/rowcodec"
	"github.com/tidestream/tidestream/deploy/playground/internal/feedclient"
	"google.golang.org/grpc/codes"
)

// val is a row value in TiDB's row format: unistore re-encodes anything
// else written to a record key.
func val(format string, args ...any) []byte {
	var enc rowcodec.Encoder
	b, err := enc.Encode(time.UTC, []int64{2}, []types.Datum{types.NewStringDatum(fmt.Sprintf(format, args...))}, nil, nil)
	if err != nil {
		panic(err)
	}
	return b
}

func TestDeliversScanAndRealtimeChanges(t *testing.T) {
	for _, mux := range []bool{true, false} {
		t.Run(fmt.Sprintf("multiplex=%v", mux), func(t *testing.T) {
			e := newEnv(t, 50*time.Millisecond)
			for h := range int64(10) {
				e.write(rowKey(h), val("v0-%d", h), twoPC)
			}
			checkpoint := e.ts()
			e.forget(checkpoint)
			// Committed after the checkpoint: delivered by the scan.
			for h := range int64(5) {
				e.write(rowKey(h), val("v1-%d", h), twoPC)
			}
			e.write(rowKey(5), nil, twoPC)
			for h := int64(10); h < 15; h++ {
				e.write(rowKey(h), val("new-%d", h), twoPC)
			}
			// An open lock: its PREWRITE comes with the scan, its COMMIT later.
			lockStart, commitLock := e.openLock(rowKey(20), val("locked"))
			// Outside the span.
			e.write(tablecodec.EncodeRowKeyWithHandle(tableID+1, kv.IntHandle(1)), val("x"), twoPC)

			c, chk, _ := e.runClient(checkpoint, mux)
			eventually(t, "span resolved ts", func() bool { return c.ResolvedTs() > checkpoint })
			if rt := c.ResolvedTs(); rt > lockStart {
				t.Fatalf("resolved ts %d passed the open lock at %d", rt, lockStart)
			}

			// Realtime: updates with old values, 1PC, async commit, a delete,
			// a rolled back write and the long lock's commit.
			for h := range int64(5) {
				e.write(rowKey(h), val("v2-%d", h), twoPC)
			}
			e.write(rowKey(6), val("1pc"), onePC)
			e.write(rowKey(7), val("async"), asyncCommit)
			e.write(rowKey(8), nil, twoPC)
			rbStart := e.ts()
			e.prewrite(rowKey(9), rbStart, val("rolled back"), twoPC)
			e.rollback(rowKey(9), rbStart)
			commitLock()
			e.write(rowKey(5), val("back"), onePC)
			last := e.write(rowKey(30), val("last"), twoPC)
			waitResolved(t, c, last)
			e.check(c, chk)
			if h := c.ResolvedHistory(); len(h) < 2 {
				t.Errorf("resolved ts advanced %d times", len(h))
			}
			if errs := c.RegionErrors(); len(errs) > 0 {
				t.Errorf("region errors without faults: %v", errs)
			}
		})
	}
}

func TestResolvedTsAdvancesWhileIdle(t *testing.T) {
	e := newEnv(t, 100*time.Millisecond)
	e.write(rowKey(1), val("a"), twoPC)
	checkpoint := e.ts()
	e.forget(checkpoint)
	c, chk, _ := e.runClient(checkpoint, true)
	waitResolved(t, c, e.ts())
	before := len(c.ResolvedHistory())
	time.Sleep(time.Second)
	h := c.ResolvedHistory()
	if len(h)-before < 5 {
		t.Fatalf("resolved ts advanced %d times in 1s with 100ms rounds", len(h)-before)
	}
	for i := 1; i < len(h); i++ {
		if h[i].Ts <= h[i-1].Ts {
			t.Fatalf("resolved history not increasing: %v", h)
		}
	}
	e.check(c, chk)
}

func TestSurvivesSplitsErrorsAndReconnects(t *testing.T) {
	for _, mux := range []bool{true, false} {
		t.Run(fmt.Sprintf("multiplex=%v", mux), func(t *testing.T) {
			e := newEnv(t, 50*time.Millisecond)
			for h := range int64(40) {
				e.write(rowKey(h), val("v0-%d", h), twoPC)
			}
			checkpoint := e.ts()
			e.forget(checkpoint)
			c, chk, _ := e.runClient(checkpoint, mux)
			waitResolved(t, c, e.ts())

			round := 0
			// step applies a fault, writes while the client recovers from it,
			// and waits until the span's resolved ts covers every write.
			step := func(name string, opt writeOpt, fault func()) {
				t.Helper()
				round++
				fault()
				var last uint64
				for h := range int64(40) {
					if h%4 == int64(round%4) {
						last = e.write(rowKey(h), val("r%d-%d", round, h), opt)
					}
				}
				last = max(last, e.write(rowKey(100+int64(round)), val("new"), opt))
				waitResolved(t, c, last)
				t.Logf("%s: errors %v reconnects %d", name, c.RegionErrors(), c.Reconnects())
			}
			step("split", twoPC, func() {
				if _, err := e.emu.Split(rowKey(20)); err != nil {
					t.Fatal(err)
				}
			})
			step("second split", twoPC, func() {
				if _, err := e.emu.Split(rowKey(10)); err != nil {
					t.Fatal(err)
				}
			})
			if n := c.RegionErrors()["epoch_not_match"]; n < 2 {
				t.Fatalf("splits produced %d epoch_not_match", n)
			}
			for _, kind := range []string{"not_leader", "epoch_not_match", "region_not_found", "congested"} {
				step(kind, twoPC, func() {
					if n, err := e.emu.InjectError(kind, 0, 0); err != nil || n != 3 {
						t.Fatalf("inject %s: %d %v", kind, n, err)
					}
				})
				if c.RegionErrors()[kind] == 0 {
					t.Fatalf("no %s counted", kind)
				}
			}
			step("server_is_busy", twoPC, func() {
				if err := e.emu.InjectRegisterError("server_is_busy", 0, 4, 0); err != nil {
					t.Fatal(err)
				}
				if _, err := e.emu.InjectError("region_not_found", 0, 0); err != nil {
					t.Fatal(err)
				}
			})
			if n := c.RegionErrors()["server_is_busy"]; n != 4 {
				t.Fatalf("server_is_busy counted %d times, want 4", n)
			}
			step("streams closed", twoPC, func() {
				if n := e.emu.CloseStreams(codes.Unavailable, ""); n != 1 {
					t.Fatalf("closed %d streams", n)
				}
			})
			step("store unavailable", inProcess, func() { e.kvs.SetUnavailable(700 * time.Millisecond) })
			if n := c.Reconnects(); n < 3 {
				t.Fatalf("reconnects = %d, want at least 3 (one close, two or more refused opens)", n)
			}
			e.check(c, chk)
		})
	}
}

func TestFatalErrorStopsRun(t *testing.T) {
	e := newEnv(t, 50*time.Millisecond)
	c, _, done := e.runClient(e.ts(), true)
	waitResolved(t, c, e.ts())
	if _, err := e.emu.InjectError("cluster_id_mismatch", 0, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, feedclient.ErrFatal) {
			t.Fatalf("Run = %v, want ErrFatal", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop on cluster_id_mismatch")
	}
}

func TestRunStopsItsGoroutines(t *testing.T) {
	e := newEnv(t, 50*time.Millisecond)
	before := runtime.NumGoroutine()
	start, end := span()
	c, err := feedclient.New(context.Background(), feedclient.Config{PDAddrs: []string{e.pd.Addr()}, Start: start, End: end, Multiplex: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	waitResolved(t, c, e.ts())
	// A stream failure leaves backoff timers behind; they must end too.
	e.emu.CloseStreams(codes.Unavailable, "")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	c.Close()
	eventually(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}

// TiDB's explicit transactions are pessimistic, and small ones commit in one
// phase: the pessimistic lock then sits in the lock CF with the 1PC's start
// ts, which must still come out as COMMITTED, not as a COMMIT without PREWRITE.
func TestPessimisticTransactions(t *testing.T) {
	for _, onePC := range []bool{false, true} {
		t.Run(fmt.Sprintf("1pc=%v", onePC), func(t *testing.T) {
			e := newEnv(t, 50*time.Millisecond)
			e.write(rowKey(1), val("a"), twoPC)
			e.write(rowKey(2), val("b"), twoPC)
			checkpoint := e.ts()
			e.forget(checkpoint)
			c, chk, _ := e.runClient(checkpoint, true)
			waitResolved(t, c, e.ts())
			e.writePessimistic(rowKey(1), val("a2"), onePC)
			last := e.writePessimistic(rowKey(2), nil, onePC)
			waitResolved(t, c, last)
			e.check(c, chk)
		})
	}
}
