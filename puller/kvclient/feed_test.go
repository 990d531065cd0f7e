package kvclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tikv/client-go/v2/oracle"
	"github.com/tikv/client-go/v2/tikv"

	"github.com/tidestream/tidestream/puller/spill"
)

func httpGet(url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// TestFeedDML subscribes a table's record span and checks inserts, updates,
// deletes and a 10k-row transaction arrive exactly once with their commit ts
// and old values, then measures the idle resolved-ts lag.
func TestFeedDML(t *testing.T) {
	pg := startPlayground(t)
	c := newTestClient(t, pg, nil)
	db := pg.DB()
	tb := createTable(t, db, "dml")
	m := newModel(t, db, tb)
	m.insert(1, 21) // before the start ts: must not be delivered

	startTs := tso(t, c)
	f := subscribe(t, c, tb.span, startTs)
	f.rec.waitResolved(t, startTs+1, 30*time.Second)

	m.rows = make(map[int64][]expOp) // rows 1..20 predate the subscription
	m.update(1, 11)
	m.delete(1, 6)
	m.insert(100, 200)
	m.bigInsert(1000, 11000)
	m.bigUpdate(1000, 3000)
	m.delete(10, 21)
	m.insert(1, 3) // re-insert deleted rows

	end := tso(t, c)
	f.rec.waitResolved(t, end, 60*time.Second)
	st := verify(t, f, m, startTs)
	if st.duplicates != 0 {
		t.Errorf("%d duplicates without any fault", st.duplicates)
	}
	t.Logf("events %d, distinct %d", st.events, st.distinct)

	// Idle lag: TSO minus the span resolved ts, sampled while nothing writes.
	var lags []time.Duration
	for range 20 {
		now := tso(t, c)
		lag := oracle.GetTimeFromTS(now).Sub(oracle.GetTimeFromTS(f.rec.resolvedTs()))
		lags = append(lags, lag)
		time.Sleep(73 * time.Millisecond) // sampling spread, not synchronisation
	}
	slices.Sort(lags)
	median, worst := lags[len(lags)/2], lags[len(lags)-1]
	t.Logf("idle resolved-ts lag: median %v, max %v (resolved-ts interval %v)", median, worst, resolvedInterval)
	if median > 2*resolvedInterval {
		t.Errorf("median idle lag %v above 2 × %v", median, resolvedInterval)
	}
	f.stop(t)
	checkInvariants(t, pg)

	// Close ends a running subscription with ErrClosed and leaves no
	// goroutine of this package behind.
	rec := newRecorder()
	done := make(chan error, 1)
	go func() { done <- c.Subscribe(context.Background(), tb.span, tso(t, c), rec) }()
	rec.waitResolved(t, 1, 30*time.Second)
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("Subscribe after Close = %v, want ErrClosed", err)
	}
	if err := c.Subscribe(context.Background(), tb.span, 1, rec); !errors.Is(err, ErrClosed) {
		t.Fatalf("Subscribe on a closed client = %v, want ErrClosed", err)
	}
	buf := make([]byte, 1<<20)
	if stacks := string(buf[:runtime.Stack(buf, true)]); strings.Contains(stacks, "puller/kvclient.(") {
		t.Fatalf("goroutines of kvclient left after Close:\n%s", stacks)
	}
}

// scenario runs DML around a fault and checks nothing is lost and the
// resolved ts resumes within 5 s of the fault's end.
type scenario struct {
	name string
	// fault injects the fault while DML runs; it returns when the fault is
	// over (e.g. after a timed fault's duration).
	fault func(t *testing.T, tb table)
}

func runScenario(t *testing.T, c *Client, pg interface {
	Fault(path, query string, out any) error
}, tb table, m *model, sc scenario) stats {
	startTs := tso(t, c)
	f := subscribe(t, c, tb.span, startTs)
	f.rec.waitResolved(t, startTs+1, 30*time.Second)

	m.insert(1, 51)
	done := make(chan time.Time, 1)
	go func() {
		sc.fault(t, tb)
		done <- time.Now()
	}()
	m.update(1, 26)
	m.bigInsert(1000, 3000)
	m.delete(1, 11)
	faultEnd := <-done // DML may have been held up past it (store-unavailable)

	// The resolved ts must pass a TSO taken right after the fault within 5 s.
	after := tso(t, c)
	f.rec.waitResolved(t, after, 30*time.Second)
	resumed := time.Since(faultEnd)
	t.Logf("%s: resolved ts passed the post-fault TSO %v after the fault ended", sc.name, resumed.Round(time.Millisecond))
	if resumed > 5*time.Second {
		t.Errorf("%s: resolved ts resumed %v after the fault, want <= 5s", sc.name, resumed)
	}

	m.insert(3000, 3050)
	m.bigUpdate(1000, 1500)
	end := tso(t, c)
	f.rec.waitResolved(t, end, 60*time.Second)
	f.stop(t)
	st := verify(t, f, m, startTs)
	t.Logf("%s: events %d, distinct %d, duplicates %d", sc.name, st.events, st.distinct, st.duplicates)
	return st
}

func faultOrFail(t *testing.T, pg interface {
	Fault(path, query string, out any) error
}, path, query string) {
	t.Helper()
	if err := pg.Fault(path, query, nil); err != nil {
		t.Errorf("fault %s?%s: %v", path, query, err)
	}
}

// TestFeedFaults runs the fault catalogue against one client and
// playground, a fresh table per fault.
func TestFeedFaults(t *testing.T) {
	pg := startPlayground(t)
	c := newTestClient(t, pg, nil)
	db := pg.DB()

	scenarios := []scenario{
		{name: "split", fault: func(t *testing.T, tb table) {
			for _, h := range []int64{20, 1200, 2500, 40} {
				faultOrFail(t, pg, "/fault/split", fmt.Sprintf("table=%d&handle=%d", tb.id, h))
				time.Sleep(50 * time.Millisecond) // spread the splits over the DML
			}
		}},
		{name: "close-streams", fault: func(t *testing.T, tb table) {
			for _, code := range []string{"unavailable", "unknown", "canceled", "ok", "internal"} {
				faultOrFail(t, pg, "/fault/close-streams", "code="+code)
				time.Sleep(100 * time.Millisecond)
			}
		}},
		{name: "store-unavailable", fault: func(t *testing.T, tb table) {
			faultOrFail(t, pg, "/fault/store-unavailable", "seconds=5")
			time.Sleep(5 * time.Second) // the fault's own duration
		}},
		{name: "hold-resolved-ts", fault: func(t *testing.T, tb table) {
			faultOrFail(t, pg, "/fault/hold-resolved-ts", "seconds=3")
			time.Sleep(3 * time.Second)
		}},
		// TiKV runs its resolved-ts rounds on without a TSO and re-reports
		// every region's current value, 0 for one that never advanced
		// (spec §2.8): the span resolved ts must neither move back (the
		// recorder checks it never goes down) nor stall after.
		{name: "tso-error", fault: func(t *testing.T, tb table) {
			faultOrFail(t, pg, "/fault/tso-error", "seconds=5")
			faultOrFail(t, pg, "/fault/split", fmt.Sprintf("table=%d&handle=30", tb.id)) // a new region reports 0 first
			time.Sleep(5 * time.Second)
		}},
		{name: "register-errors", fault: func(t *testing.T, tb table) {
			faultOrFail(t, pg, "/fault/region-error", "kind=server_is_busy&when=register&count=3&backoff_ms=100")
			faultOrFail(t, pg, "/fault/region-error", "kind=region_not_found")
			time.Sleep(100 * time.Millisecond)
			faultOrFail(t, pg, "/fault/region-error", "kind=not_leader&when=register&count=2")
			faultOrFail(t, pg, "/fault/region-error", "kind=epoch_not_match")
		}},
	}
	// Region errors end a live subscription. server_is_busy is absent: TiKV
	// sends it only in answer to a Register (the register-errors scenario).
	for _, kind := range []string{"not_leader", "region_not_found", "epoch_not_match", "congested"} {
		scenarios = append(scenarios, scenario{name: "region-error-" + kind, fault: func(t *testing.T, tb table) {
			for range 3 {
				faultOrFail(t, pg, "/fault/region-error", "kind="+kind)
				time.Sleep(150 * time.Millisecond)
			}
		}})
	}
	for i, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			tb := createTable(t, db, fmt.Sprintf("f%d", i))
			runScenario(t, c, pg, tb, newModel(t, db, tb), sc)
		})
	}
	checkInvariants(t, pg)
	// Through every re-registration above — region errors, splits, stream
	// failures, register-time rejections — the client never sent a Register
	// for a key still live on its stream (spec §2.10): TiKV would have
	// answered duplicate_request and kept the old subscription.
	st := emuStats(t, pg)
	if st.DuplicateRegisters != 0 {
		t.Fatalf("the client sent %d Registers for live keys", st.DuplicateRegisters)
	}
	t.Logf("%d registrations, none for a live key; %d resolved-ts rounds without a TSO", st.Registers, st.TSOErrors)
}

// emulatorStats are the playground's change-data counters (GET /cdc/stats).
type emulatorStats struct {
	Registers, UnknownRows, DuplicateRegisters, TSOErrors uint64
}

func emuStats(t *testing.T, pg interface{ StatusURL() string }) emulatorStats {
	t.Helper()
	body, err := httpGet(pg.StatusURL() + "/cdc/stats")
	if err != nil {
		t.Fatal(err)
	}
	var st emulatorStats
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("stats %s: %v", body, err)
	}
	return st
}

// TestFeedFatalErrors: the errors that mean "retrying cannot help" end
// Subscribe with ErrFatal.
func TestFeedFatalErrors(t *testing.T) {
	pg := startPlayground(t)
	c := newTestClient(t, pg, nil)
	db := pg.DB()
	for i, kind := range []string{"duplicate_request", "cluster_id_mismatch", "compatibility"} {
		t.Run(kind, func(t *testing.T) {
			tb := createTable(t, db, fmt.Sprintf("fatal%d", i))
			startTs := tso(t, c)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			rec := newRecorder()
			done := make(chan error, 1)
			go func() { done <- c.Subscribe(ctx, tb.span, startTs, rec) }()
			rec.waitResolved(t, startTs+1, 30*time.Second)
			faultOrFail(t, pg, "/fault/region-error", "kind="+kind)
			select {
			case err := <-done:
				if !IsFatal(err) {
					t.Fatalf("Subscribe = %v, want ErrFatal", err)
				}
				t.Logf("Subscribe: %v", err)
			case <-ctx.Done():
				t.Fatal("Subscribe did not fail")
			}
		})
	}
}

// TestFeedV1Fallback: a store without EventFeedV2, or refusing
// multiplexing, is served over EventFeed with a stream per subscription.
func TestFeedV1Fallback(t *testing.T) {
	pg := startPlayground(t)
	db := pg.DB()
	for i, f := range []struct{ name, path, on, off string }{
		{"no-eventfeed-v2", "/fault/eventfeed-v2", "enabled=false", "enabled=true"},
		{"multiplexing-rejected", "/fault/multiplexing", "reject=true", "reject=false"},
	} {
		t.Run(f.name, func(t *testing.T) {
			faultOrFail(t, pg, f.path, f.on)
			defer faultOrFail(t, pg, f.path, f.off)
			c := newTestClient(t, pg, nil)
			// Two subscriptions on the same store need two v1 streams.
			tb1 := createTable(t, db, fmt.Sprintf("v1a%d", i))
			tb2 := createTable(t, db, fmt.Sprintf("v1b%d", i))
			m2 := newModel(t, db, tb2)
			startTs := tso(t, c)
			f2 := subscribe(t, c, tb2.span, startTs)
			m2.insert(1, 30)
			runScenario(t, c, pg, tb1, newModel(t, db, tb1), scenario{name: f.name, fault: func(t *testing.T, tb table) {
				faultOrFail(t, pg, "/fault/close-streams", "code=unavailable")
			}})
			f2.rec.waitResolved(t, tso(t, c), 30*time.Second)
			f2.stop(t)
			verify(t, f2, m2, startTs)
			st := c.allStores()
			if len(st) != 1 || !st[0].v1 {
				t.Fatalf("store not in v1 mode")
			}
		})
	}
}

// TestFeedManySubscriptions: several spans share one multiplexed stream and
// a small admission window.
func TestFeedManySubscriptions(t *testing.T) {
	pg := startPlayground(t)
	c := newTestClient(t, pg, func(cfg *Config) { cfg.RegionScanLimit = 2; cfg.StreamsPerStore = 2 })
	db := pg.DB()
	const n = 6
	var (
		feeds  []*feed
		models []*model
	)
	startTs := tso(t, c)
	for i := range n {
		tb := createTable(t, db, fmt.Sprintf("many%d", i))
		// Split each table so the admission window (2) is exceeded.
		for _, h := range []int64{10, 20, 30} {
			faultOrFail(t, pg, "/fault/split", fmt.Sprintf("table=%d&handle=%d", tb.id, h))
		}
		models = append(models, newModel(t, db, tb))
		feeds = append(feeds, subscribe(t, c, tb.span, startTs))
	}
	for _, m := range models {
		m.insert(1, 40)
		m.update(5, 35)
	}
	end := tso(t, c)
	for i, f := range feeds {
		f.rec.waitResolved(t, end, 60*time.Second)
		f.stop(t)
		verify(t, f, models[i], startTs)
	}
	checkInvariants(t, pg)

	// Unsubscribing deregistered every region on the shared stream, which
	// stays open (spec §3.9).
	deadline := time.Now().Add(10 * time.Second)
	for {
		body, err := httpGet(pg.StatusURL() + "/cdc/stats")
		if err != nil {
			t.Fatal(err)
		}
		var st struct {
			Conns         int64
			Subscriptions []struct{ RequestID, RegionID uint64 }
		}
		if err := json.Unmarshal(body, &st); err != nil {
			t.Fatalf("stats %s: %v", body, err)
		}
		if len(st.Subscriptions) == 0 {
			t.Logf("all subscriptions deregistered; %d connection(s) open", st.Conns)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d subscriptions still live after unsubscribe: %v", len(st.Subscriptions), st.Subscriptions)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestResolveStuckLock leaves an orphan prewrite lock in the span: the
// resolved ts stops at its start ts until the lock resolver rolls it back.
func TestResolveStuckLock(t *testing.T) {
	pg := startPlayground(t)
	c := newTestClient(t, pg, func(cfg *Config) { cfg.ResolveLockAfter = time.Second })
	db := pg.DB()
	tb := createTable(t, db, "locks")
	m := newModel(t, db, tb)
	startTs := tso(t, c)
	f := subscribe(t, c, tb.span, startTs)
	f.rec.waitResolved(t, startTs+1, 30*time.Second)
	m.insert(1, 10)

	// Prewrite row 500 and walk away: a client that crashed mid-commit.
	lockTs := orphanLock(t, c, tb, 500, 500)
	began := time.Now()
	t.Logf("orphan lock at ts %d", lockTs)

	// Without lock resolution the resolved ts would stay below lockTs.
	after := tso(t, c)
	f.rec.waitResolved(t, after, 30*time.Second)
	t.Logf("resolved ts passed the orphan lock after %v", time.Since(began).Round(time.Millisecond))
	m.insert(10, 20)
	f.rec.waitResolved(t, tso(t, c), 30*time.Second)
	f.stop(t)
	verify(t, f, m, startTs) // the rolled-back row never appears
}

// A lock whose transaction never commits stays on disk only as long as
// the registration that holds it: ending the subscription drops the
// region's matcher and gives its rows and memory back.
func TestSpilledPrewritesGoWithTheirSubscription(t *testing.T) {
	pg := startPlayground(t)
	sp, err := spill.Open(spill.Config{Dir: t.TempDir()}) // every prewrite to disk
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sp.Close() })
	c := newTestClient(t, pg, func(cfg *Config) { cfg.Spill = sp; cfg.ResolveLockAfter = time.Hour })
	db := pg.DB()
	tb := createTable(t, db, "spilled")
	m := newModel(t, db, tb)
	startTs := tso(t, c)
	f := subscribe(t, c, tb.span, startTs)
	f.rec.waitResolved(t, startTs+1, 30*time.Second)
	m.insert(1, 10)
	f.rec.waitResolved(t, tso(t, c), 30*time.Second)
	if st := sp.Stats(); st.OnDisk != 0 {
		t.Fatalf("after committed inserts: %+v; want none left on disk", st)
	}

	orphanLock(t, c, tb, 500, 60000)
	deadline := time.Now().Add(30 * time.Second)
	for sp.Stats().OnDisk != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the open lock never reached the disk: %+v", sp.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.stop(t)
	if st := sp.Stats(); st.OnDisk != 0 || st.Held != 0 {
		t.Fatalf("after the subscription ended: %+v; want nothing on disk or held", st)
	}
	verify(t, f, m, startTs)
}

// orphanLock prewrites row handle with the value of row 1 (a valid row:
// TiDB's storage decodes values of record keys) under a lock of ttl ms,
// and walks away as a client that crashed mid-commit would. It returns
// the lock's start ts.
func orphanLock(t *testing.T, c *Client, tb table, handle int64, ttl uint64) uint64 {
	t.Helper()
	txn, err := tikv.StoreProbe{KVStore: c.kv}.Begin()
	if err != nil {
		t.Fatal(err)
	}
	val, err := c.kv.GetSnapshot(tso(t, c)).Get(context.Background(), tb.recordKey(1))
	if err != nil {
		t.Fatal(err)
	}
	if err := txn.Set(tb.recordKey(handle), val.Value); err != nil {
		t.Fatal(err)
	}
	committer, err := txn.NewCommitter(1)
	if err != nil {
		t.Fatal(err)
	}
	if err := committer.InitKeysAndMutations(); err != nil {
		t.Fatal(err)
	}
	committer.SetLockTTL(ttl)
	if err := committer.PrewriteAllMutations(context.Background()); err != nil {
		t.Fatal(err)
	}
	return txn.StartTS()
}
