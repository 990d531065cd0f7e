package kvclient

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/tidestream/tidestream/puller/matcher"
	"github.com/tidestream/tidestream/puller/spill"
)

// TestFeedLargeConcurrentAndPKChange covers the rest of issue 4's DML list: a
// 100k-row transaction, primary-key changes (a delete of the old key and an
// insert of the new one, in one transaction), and concurrent transactions of
// both kinds TiDB commits by default (1PC within a region, async commit
// across regions), each change exactly once with its commit ts. The
// PREWRITEs over 1 MiB wait on disk, as in a process whose budget the
// large transaction exceeds; every byte and row of it is given back.
func TestFeedLargeConcurrentAndPKChange(t *testing.T) {
	pg := startPlayground(t)
	sp, err := spill.Open(spill.Config{Dir: t.TempDir(), Budget: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sp.Close() })
	c := newTestClient(t, pg, func(c *Config) { c.Spill = sp })
	db := pg.DB()
	tb := createTable(t, db, "large")
	m := newModel(t, db, tb)
	ctx := context.Background()
	mustExec(ctx, t, db, "SPLIT TABLE "+tb.fq()+" BETWEEN (0) AND (400000) REGIONS 4")

	startTs := tso(t, c)
	f := subscribe(t, c, tb.span, startTs)
	f.rec.waitResolved(t, startTs+1, 30*time.Second)

	began := time.Now()
	m.bigInsert(100000, 200000)
	t.Logf("100k-row transaction committed in %v", time.Since(began).Round(time.Millisecond))

	// Primary-key change: TiDB deletes the old record key and writes the new.
	mustExec(ctx, t, m.conn, "BEGIN")
	mustExec(ctx, t, m.conn, "UPDATE "+tb.fq()+" SET id = id + 200000 WHERE id >= 100000 AND id < 100100")
	mustExec(ctx, t, m.conn, "COMMIT")
	ts := m.lastCommitTs(ctx)
	for h := int64(100000); h < 100100; h++ {
		m.note(ts, h, matcher.OpDelete, true)
		m.note(ts, h+200000, matcher.OpPut, false)
	}

	// Concurrent writers on their own connections: single-row inserts (1PC)
	// and two-row transactions spanning regions (async commit).
	modes := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := db.Conn(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			for i := range 40 {
				a := int64(10000 + g*100 + i)
				b := a + 300000 // another region
				q, args := "INSERT INTO "+tb.fq()+" (id, v) VALUES (?, 'c')", []any{a}
				if i%2 == 1 {
					q, args = "INSERT INTO "+tb.fq()+" (id, v) VALUES (?, 'c'), (?, 'd')", []any{a, b}
				}
				if _, err := conn.ExecContext(ctx, q, args...); err != nil {
					t.Error(err)
					return
				}
				var info string
				if err := conn.QueryRowContext(ctx, "SELECT @@tidb_last_txn_info").Scan(&info); err != nil {
					t.Error(err)
					return
				}
				var v struct {
					CommitTs uint64 `json:"commit_ts"`
					Mode     string `json:"txn_commit_mode"`
				}
				if err := json.Unmarshal([]byte(info), &v); err != nil {
					t.Error(err)
					return
				}
				m.note(v.CommitTs, a, matcher.OpPut, false)
				if i%2 == 1 {
					m.note(v.CommitTs, b, matcher.OpPut, false)
				}
				mu.Lock()
				modes[v.Mode]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if modes["1pc"] == 0 || modes["async_commit"] == 0 {
		t.Fatalf("want both 1PC and async-commit transactions, got %v", modes)
	}

	end := tso(t, c)
	f.rec.waitResolved(t, end, 2*time.Minute)
	f.stop(t)
	if got := sp.Stats(); got.Spilled < 50000 || got.Held != 0 || got.OnDisk != 0 {
		t.Errorf("spill after the subscription: %+v; want most of the large transaction spilled, then nothing held", got)
	}
	st := verify(t, f, m, startTs)
	t.Logf("events %d, distinct %d, duplicates %d, commit modes %v", st.events, st.distinct, st.duplicates, modes)
	checkInvariants(t, pg)
	if st.distinct != 100000+200+40*4+20*4 {
		t.Errorf("distinct changes %d, want %d", st.distinct, 100000+200+40*4+20*4)
	}
}
