package main_test

// Acceptance tests of issue 3: the playground binary runs as a process on
// ports picked at run time; a change-data client built only from tikv/pd/client,
// tikv/client-go and kvproto (internal/feedclient) reads it; the invariant
// checker watches both ends of every stream.

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pingcap/kvproto/pkg/cdcpb"
	"github.com/pingcap/kvproto/pkg/kvrpcpb"
	"github.com/pingcap/kvproto/pkg/tikvpb"
	pinglog "github.com/pingcap/log"
	"github.com/pingcap/tidb/pkg/kv"
	"github.com/pingcap/tidb/pkg/parser/mysql"
	"github.com/pingcap/tidb/pkg/tablecodec"
	"github.com/pingcap/tidb/pkg/types"
	"github.com/pingcap/tidb/pkg/util/codec"
	"github.com/pingcap/tidb/pkg/util/rowcodec"
	"github.com/tidestream/tidestream/deploy/playground/cdcemu"
	"github.com/tidestream/tidestream/deploy/playground/checker"
	"github.com/tidestream/tidestream/deploy/playground/internal/feedclient"
	"github.com/tidestream/tidestream/deploy/playground/internal/pgtest"
	pd "github.com/tikv/pd/client"
	"go.uber.org/goleak"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// txnInfo is @@tidb_last_txn_info: the ground truth of a commit.
type txnInfo struct {
	StartTS    uint64 `json:"start_ts"`
	CommitTS   uint64 `json:"commit_ts"`
	CommitMode string `json:"txn_commit_mode"`
}

func lastTxn(t testing.TB, c *sql.Conn) txnInfo {
	t.Helper()
	var s string
	if err := c.QueryRowContext(context.Background(), "SELECT @@tidb_last_txn_info").Scan(&s); err != nil {
		t.Fatal(err)
	}
	var ti txnInfo
	if err := json.Unmarshal([]byte(s), &ti); err != nil {
		t.Fatalf("tidb_last_txn_info %q: %v", s, err)
	}
	return ti
}

func exec1(t testing.TB, c *sql.Conn, q string, args ...any) {
	t.Helper()
	if _, err := c.ExecContext(context.Background(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// currentTS is a fresh TSO read through SQL.
func currentTS(t testing.TB, c *sql.Conn) uint64 {
	t.Helper()
	exec1(t, c, "BEGIN")
	var ts uint64
	if err := c.QueryRowContext(context.Background(), "SELECT @@tidb_current_ts").Scan(&ts); err != nil {
		t.Fatal(err)
	}
	exec1(t, c, "COMMIT")
	return ts
}

func tableID(t testing.TB, c *sql.Conn, db, table string) int64 {
	t.Helper()
	var id int64
	err := c.QueryRowContext(context.Background(),
		"SELECT TIDB_TABLE_ID FROM information_schema.tables WHERE table_schema = ? AND table_name = ?", db, table).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// row is the test table's content: t(id BIGINT PRIMARY KEY, v VARCHAR(64), n INT).
type row struct {
	V string
	N int64
}

var rowCols = map[int64]*types.FieldType{
	2: types.NewFieldType(mysql.TypeVarchar),
	3: types.NewFieldType(mysql.TypeLong),
}

func decodeRow(t testing.TB, b []byte) *row {
	t.Helper()
	if len(b) == 0 {
		return nil
	}
	m, err := tablecodec.DecodeRowToDatumMap(b, rowCols, time.UTC)
	if err != nil {
		t.Fatalf("decode row %x: %v", b, err)
	}
	v, n := m[2], m[3]
	return &row{V: v.GetString(), N: n.GetInt64()}
}

// expected is one committed change as SQL made it.
type expected struct {
	id       int64
	commitTS uint64
	op       cdcpb.Event_Row_OpType
	val, old *row
}

// stream is a feedclient over one table's record span with a checker on it.
type stream struct {
	fc  *feedclient.Client
	chk *checker.Checker
	err chan error
}

func openStream(t *testing.T, p *pgtest.Playground, tid int64, checkpoint uint64) *stream {
	t.Helper()
	chk := checker.New()
	start := tablecodec.GenTableRecordPrefix(tid)
	fc, err := feedclient.New(context.Background(), feedclient.Config{
		PDAddrs: []string{p.PDAddr()}, Start: start, End: start.PrefixNext(),
		CheckpointTs: checkpoint, Multiplex: true,
		OnRequest: chk.Request, OnEvent: chk.Event, OnStream: chk.SetMultiplexing, OnStreamEnd: chk.CloseConn,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &stream{fc: fc, chk: chk, err: make(chan error, 1)}
	go func() { s.err <- fc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-s.err; err != nil && ctx.Err() == nil {
			t.Errorf("feed client: %v", err)
		}
		fc.Close()
	})
	return s
}

func (s *stream) waitResolved(t *testing.T, ts uint64, timeout time.Duration) {
	t.Helper()
	pgtest.Eventually(t, timeout, fmt.Sprintf("span resolved ts >= %d (now %d)", ts, s.fc.ResolvedTs()), func() bool {
		select {
		case err := <-s.err:
			t.Fatalf("feed client stopped: %v", err)
		default:
		}
		return s.fc.ResolvedTs() >= ts
	})
}

// verify compares what the client received for table tid with want: each
// change exactly once (after dropping re-deliveries of the same (key,
// commit ts)), with op type, value, old value and commit ts.
func (s *stream) verify(t *testing.T, tid int64, want []expected) {
	t.Helper()
	type vk struct {
		id     int64
		commit uint64
	}
	got := make(map[vk]feedclient.Change)
	for _, c := range s.fc.Changes() {
		tbl, h, err := tablecodec.DecodeRecordKey(c.Key)
		if err != nil || tbl != tid {
			t.Fatalf("change with key %x outside table %d: %v", c.Key, tid, err)
		}
		k := vk{h.IntValue(), c.CommitTS}
		if prev, dup := got[k]; dup && (prev.Op != c.Op || string(prev.Value) != string(c.Value)) {
			t.Fatalf("row %d at %d delivered twice with different content", k.id, k.commit)
		}
		got[k] = c
	}
	bad := 0
	for _, w := range want {
		if w.commitTS == 0 { // outcome was undetermined: any one commit ts of this id
			for k := range got {
				if k.id == w.id {
					w.commitTS = k.commit
					break
				}
			}
		}
		c, ok := got[vk{w.id, w.commitTS}]
		if !ok {
			bad++
			if bad < 10 {
				t.Errorf("missing: id %d commit %d op %v", w.id, w.commitTS, w.op)
			}
			continue
		}
		delete(got, vk{w.id, w.commitTS})
		if c.Op != w.op {
			t.Errorf("id %d commit %d: op %v, want %v", w.id, w.commitTS, c.Op, w.op)
		}
		if w.op == cdcpb.Event_Row_PUT {
			if v := decodeRow(t, c.Value); v == nil || *v != *w.val {
				t.Errorf("id %d commit %d: value %+v, want %+v", w.id, w.commitTS, v, w.val)
			}
		}
		o := decodeRow(t, c.OldValue)
		switch {
		case w.old == nil && o != nil:
			t.Errorf("id %d commit %d: old value %+v, want none", w.id, w.commitTS, o)
		case w.old != nil && (o == nil || *o != *w.old):
			t.Errorf("id %d commit %d: old value %+v, want %+v", w.id, w.commitTS, o, w.old)
		}
	}
	for k := range got {
		t.Errorf("unexpected change: id %d commit %d", k.id, k.commit)
	}
	if bad > 0 {
		t.Fatalf("%d of %d expected changes missing", bad, len(want))
	}
	if err := s.chk.Err(); err != nil {
		t.Fatalf("client-side checker: %v", err)
	}
	if probs := s.fc.Problems(); len(probs) > 0 {
		t.Fatalf("feed client saw %d protocol problems, first: %v", len(probs), probs[0])
	}
}

func serverChecker(t *testing.T, p *pgtest.Playground) {
	t.Helper()
	var res struct {
		Violations []checker.Violation `json:"violations"`
	}
	if err := p.Get("/cdc/checker", &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Violations) > 0 {
		t.Fatalf("server-side checker: %d violations, first: %+v", len(res.Violations), res.Violations[0])
	}
}

// model tracks the expected table content and changes.
type model struct {
	rows map[int64]row
	want []expected
}

func newModel() *model { return &model{rows: make(map[int64]row)} }

func (m *model) put(id int64, r row, commit uint64) {
	e := expected{id: id, commitTS: commit, op: cdcpb.Event_Row_PUT, val: &r}
	if o, ok := m.rows[id]; ok {
		e.old = &o
	}
	m.rows[id] = r
	m.want = append(m.want, e)
}

func (m *model) del(id int64, commit uint64) {
	o := m.rows[id]
	delete(m.rows, id)
	m.want = append(m.want, expected{id: id, commitTS: commit, op: cdcpb.Event_Row_DELETE, old: &o})
}

func setupTable(t *testing.T, p *pgtest.Playground, name string) (*sql.Conn, int64) {
	t.Helper()
	c, err := p.DB("").Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	exec1(t, c, "CREATE DATABASE IF NOT EXISTS acc")
	exec1(t, c, "CREATE TABLE acc."+name+" (id BIGINT PRIMARY KEY, v VARCHAR(64), n INT)")
	return c, tableID(t, c, "acc", name)
}

func TestChangeDataOfSQL(t *testing.T) {
	p := pgtest.Start(t, pgtest.Options{Args: []string{"--check-invariants"}})
	t.Logf("playground ready in %v", p.ReadyIn)
	c, tid := setupTable(t, p, "dml")
	m := newModel()
	// A row committed before the checkpoint: its update carries it as old value.
	exec1(t, c, "INSERT INTO acc.dml VALUES (5000, 'before', 0)")
	m.rows[5000] = row{"before", 0}
	checkpoint := currentTS(t, c)
	s := openStream(t, p, tid, checkpoint)
	s.waitResolved(t, checkpoint, time.Minute)

	modes := map[string]int{}
	// 1,000 inserts: 500 in 50 explicit transactions of 10 rows, 500 autocommit.
	for b := 0; b < 50; b++ {
		exec1(t, c, "BEGIN")
		for i := b * 10; i < b*10+10; i++ {
			exec1(t, c, "INSERT INTO acc.dml VALUES (?, ?, ?)", i, fmt.Sprintf("v%d", i), i)
		}
		exec1(t, c, "COMMIT")
		ti := lastTxn(t, c)
		modes[ti.CommitMode]++
		for i := b * 10; i < b*10+10; i++ {
			m.put(int64(i), row{fmt.Sprintf("v%d", i), int64(i)}, ti.CommitTS)
		}
	}
	for i := 500; i < 1000; i++ {
		exec1(t, c, "INSERT INTO acc.dml VALUES (?, ?, ?)", i, fmt.Sprintf("v%d", i), i)
		ti := lastTxn(t, c)
		modes[ti.CommitMode]++
		m.put(int64(i), row{fmt.Sprintf("v%d", i), int64(i)}, ti.CommitTS)
	}
	// 300 updates in 3 transactions, one of them changing the row that predates
	// the checkpoint.
	for b := 0; b < 3; b++ {
		lo, hi := b*100, b*100+100
		exec1(t, c, "UPDATE acc.dml SET v = CONCAT(v, '-u'), n = n + 1 WHERE id >= ? AND id < ?", lo, hi)
		ti := lastTxn(t, c)
		modes[ti.CommitMode]++
		for i := lo; i < hi; i++ {
			r := m.rows[int64(i)]
			m.put(int64(i), row{r.V + "-u", r.N + 1}, ti.CommitTS)
		}
	}
	exec1(t, c, "UPDATE acc.dml SET v = 'after' WHERE id = 5000")
	m.put(5000, row{"after", 0}, lastTxn(t, c).CommitTS)
	// 200 deletes in 2 transactions.
	for b := 0; b < 2; b++ {
		lo, hi := 300+b*100, 400+b*100
		exec1(t, c, "DELETE FROM acc.dml WHERE id >= ? AND id < ?", lo, hi)
		ti := lastTxn(t, c)
		modes[ti.CommitMode]++
		for i := lo; i < hi; i++ {
			m.del(int64(i), ti.CommitTS)
		}
	}
	last := m.want[len(m.want)-1].commitTS
	s.waitResolved(t, last, time.Minute)
	s.verify(t, tid, m.want)
	t.Logf("verified %d changes; TiDB commit modes: %v", len(m.want), modes)

	// Idle: resolved ts keeps advancing about once per --resolved-ts-interval (1s).
	idleFrom := time.Now()
	time.Sleep(5 * time.Second)
	var points []feedclient.ResolvedPoint
	for _, pt := range s.fc.ResolvedHistory() {
		if pt.At.After(idleFrom) {
			points = append(points, pt)
		}
	}
	if len(points) < 4 {
		t.Fatalf("resolved ts advanced %d times in 5s idle, want at least 4", len(points))
	}
	var maxGap time.Duration
	for i := 1; i < len(points); i++ {
		maxGap = max(maxGap, points[i].At.Sub(points[i-1].At))
	}
	lag := time.Since(time.UnixMilli(int64(s.fc.ResolvedTs() >> 18)))
	t.Logf("idle: %d advances in 5s, largest gap %v, lag behind wall clock %v", len(points), maxGap, lag)
	if maxGap > 1500*time.Millisecond {
		t.Fatalf("resolved ts stalled for %v while idle (interval 1s)", maxGap)
	}
	serverChecker(t, p)
}

// writer inserts rows through SQL until stopped, recording what it committed.
// A statement whose outcome TiDB reports as undetermined (the store went away
// mid-commit; TiDB then closes the connection, as it does on a real cluster)
// is resolved by reading the row back: if it exists it is expected once, at a
// commit ts the test cannot know (commitTS 0 in the model).
type writer struct {
	mu   sync.Mutex
	m    *model
	next int64
	stop chan struct{}
	done chan struct{}
	errs atomic.Value
}

// TestLockOnlyCommitsThroughSQL: pessimistic transactions lock rows with
// SELECT … FOR UPDATE and commit without writing them, in 2PC and in 1PC. For
// each such key the emulator sends TiKV's empty UNKNOWN row to the
// subscription of the region that the table's record span covers whole
// (spec §2.5), and the playground's own client ignores it while every written
// row still arrives once.
func TestLockOnlyCommitsThroughSQL(t *testing.T) {
	p := pgtest.Start(t, pgtest.Options{Args: []string{"--check-invariants"}})
	c, tid := setupTable(t, p, "lockonly")
	m := newModel()
	exec1(t, c, "BEGIN")
	for i := 1; i <= 300; i++ {
		exec1(t, c, "INSERT INTO acc.lockonly VALUES (?, 'v', 0)", i)
		m.rows[int64(i)] = row{"v", 0}
	}
	exec1(t, c, "COMMIT")
	// [100, 200) becomes a region inside the record span.
	for _, h := range []int{100, 200} {
		if err := p.Fault("/fault/split", fmt.Sprintf("table=%d&handle=%d", tid, h), nil); err != nil {
			t.Fatal(err)
		}
	}
	checkpoint := currentTS(t, c)
	s := openStream(t, p, tid, checkpoint)
	s.waitResolved(t, checkpoint, time.Minute)
	var before, after cdcemu.Snapshot
	if err := p.Get("/cdc/stats", &before); err != nil {
		t.Fatal(err)
	}

	modes := map[string]int{}
	for i := 0; i < 10; i++ {
		// Lock five rows of the covered region, write one: in another
		// region (two phases; TiDB picks async commit), then in the same
		// one (1PC).
		for _, w := range []int{250 + i, 199 - i} {
			lo := 100 + 9*i
			exec1(t, c, "BEGIN PESSIMISTIC")
			exec1(t, c, "SELECT id FROM acc.lockonly WHERE id >= ? AND id < ? FOR UPDATE", lo, lo+5)
			exec1(t, c, "UPDATE acc.lockonly SET n = n + 1 WHERE id = ?", w)
			exec1(t, c, "COMMIT")
			ti := lastTxn(t, c)
			modes[ti.CommitMode]++
			r := m.rows[int64(w)]
			m.put(int64(w), row{r.V, r.N + 1}, ti.CommitTS)
		}
	}
	end := currentTS(t, c)
	s.waitResolved(t, end, time.Minute)
	if err := p.Get("/cdc/stats", &after); err != nil {
		t.Fatal(err)
	}
	sent, got := after.UnknownRows-before.UnknownRows, s.fc.LockRecordRows()
	t.Logf("commit modes %v; lock-record rows sent %d, ignored by the client %d; registrations %d then %d",
		modes, sent, got, before.Registers, after.Registers)
	if sent == 0 || uint64(got) != sent {
		t.Fatalf("lock-record rows: emulator sent %d, client saw %d; want the same, above 0", sent, got)
	}
	if after.Registers != before.Registers {
		t.Fatalf("registrations grew from %d to %d", before.Registers, after.Registers)
	}
	s.verify(t, tid, m.want)
	serverChecker(t, p)
}

func startWriter(t *testing.T, db *sql.DB, table string, from int64) *writer {
	w := &writer{m: newModel(), next: from, stop: make(chan struct{}), done: make(chan struct{})}
	ctx := context.Background()
	insert := func(c *sql.Conn, id int64) (uint64, error) {
		if _, err := c.ExecContext(ctx, "INSERT INTO acc."+table+" VALUES (?, ?, ?)", id, fmt.Sprintf("w%d", id), id); err != nil {
			return 0, err
		}
		var s string
		if err := c.QueryRowContext(ctx, "SELECT @@tidb_last_txn_info").Scan(&s); err != nil {
			return 0, err
		}
		var ti txnInfo
		if err := json.Unmarshal([]byte(s), &ti); err != nil {
			return 0, err
		}
		return ti.CommitTS, nil
	}
	go func() {
		defer close(w.done)
		var c *sql.Conn
		defer func() {
			if c != nil {
				c.Close()
			}
		}()
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			if c == nil {
				var err error
				if c, err = db.Conn(ctx); err != nil {
					w.errs.Store(err)
					return
				}
			}
			id := w.next
			w.next++
			commit, err := insert(c, id)
			if err != nil {
				c.Close()
				c = nil
				var n int
				if qerr := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM acc."+table+" WHERE id = ?", id).Scan(&n); qerr != nil {
					w.errs.Store(fmt.Errorf("insert %d: %v; reading it back: %w", id, err, qerr))
					return
				}
				if n == 0 {
					continue // not committed: nothing to expect
				}
				commit = 0
			}
			w.mu.Lock()
			w.m.put(id, row{fmt.Sprintf("w%d", id), id}, commit)
			w.mu.Unlock()
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return w
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.m.want)
}

// waitMore waits until the writer committed n more rows.
func (w *writer) waitMore(t *testing.T, n int) {
	t.Helper()
	t.Logf("waiting for %d more rows (have %d)", n, w.count())
	target := w.count() + n
	pgtest.Eventually(t, time.Minute, fmt.Sprintf("writer to reach %d rows", target), func() bool {
		if err, _ := w.errs.Load().(error); err != nil {
			t.Fatalf("writer: %v", err)
		}
		return w.count() >= target
	})
}

func (w *writer) finish(t *testing.T) []expected {
	close(w.stop)
	<-w.done
	if err, _ := w.errs.Load().(error); err != nil {
		t.Fatalf("writer: %v", err)
	}
	return w.m.want
}

func TestRegionSplitAndInjectedErrors(t *testing.T) {
	p := pgtest.Start(t, pgtest.Options{Args: []string{"--check-invariants", "--resolved-ts-interval", "200ms"}})
	c, tid := setupTable(t, p, "faults")
	checkpoint := currentTS(t, c)
	s := openStream(t, p, tid, checkpoint)
	s.waitResolved(t, checkpoint, time.Minute)
	w := startWriter(t, p.DB(""), "faults", 0)
	w.waitMore(t, 50)

	// A split in the middle of the stream: the old region's subscription ends
	// with epoch_not_match, the client re-subscribes both halves.
	var split struct {
		Regions []json.RawMessage `json:"regions"`
	}
	if err := p.Fault("/fault/split", fmt.Sprintf("table=%d&handle=%d", tid, w.count()+200), &split); err != nil {
		t.Fatal(err)
	}
	if len(split.Regions) != 2 {
		t.Fatalf("split produced %d regions, want 2", len(split.Regions))
	}
	waitErr := func(kind string, n int) {
		t.Helper()
		pgtest.Eventually(t, 30*time.Second, fmt.Sprintf("%d %s errors (have %v)", n, kind, s.fc.RegionErrors()), func() bool {
			return s.fc.RegionErrors()[kind] >= n
		})
	}
	waitErr("epoch_not_match", 1)
	w.waitMore(t, 50)
	// caughtUp waits until every range is subscribed again and resolved past
	// now: the fault before it has been fully recovered from.
	caughtUp := func(what string) {
		t.Helper()
		began := time.Now()
		s.waitResolved(t, currentTS(t, c), time.Minute)
		t.Logf("%s: resolved ts past the fault's end after %v", what, time.Since(began).Round(time.Millisecond))
	}
	caughtUp("split")

	// Each injectable region error reaches every live subscription (two
	// regions now) and the client recovers from it.
	inject := func(query string) int {
		t.Helper()
		var res struct {
			Subscriptions int `json:"subscriptions"`
		}
		if err := p.Fault("/fault/region-error", query, &res); err != nil {
			t.Fatal(err)
		}
		return res.Subscriptions
	}
	for _, kind := range []string{"not_leader", "region_not_found", "epoch_not_match", "congested"} {
		before := s.fc.RegionErrors()[kind]
		if n := inject("kind=" + kind); n != 2 {
			t.Fatalf("%s reached %d subscriptions, want 2", kind, n)
		}
		waitErr(kind, before+2)
		w.waitMore(t, 20)
		caughtUp(kind)
	}
	// server_is_busy is a register-time answer: arm it, then force re-registers.
	if err := p.Fault("/fault/region-error", "kind=server_is_busy&when=register&count=2&backoff_ms=50", nil); err != nil {
		t.Fatal(err)
	}
	if n := inject("kind=region_not_found"); n != 2 {
		t.Fatalf("region_not_found reached %d subscriptions, want 2", n)
	}
	waitErr("server_is_busy", 2)
	w.waitMore(t, 20)
	caughtUp("server_is_busy")

	// Stream-level faults.
	rec := s.fc.Reconnects()
	if err := p.Fault("/fault/close-streams", "code=unavailable", nil); err != nil {
		t.Fatal(err)
	}
	pgtest.Eventually(t, 30*time.Second, "reconnect after close-streams", func() bool { return s.fc.Reconnects() > rec })
	w.waitMore(t, 20)
	caughtUp("close-streams")
	rec = s.fc.Reconnects()
	if err := p.Fault("/fault/store-unavailable", "seconds=2", nil); err != nil {
		t.Fatal(err)
	}
	pgtest.Eventually(t, 30*time.Second, "reconnect after store-unavailable", func() bool { return s.fc.Reconnects() > rec })
	w.waitMore(t, 20)
	caughtUp("store-unavailable (2s)")
	// Held resolved ts: no progress while held, progress again after.
	if err := p.Fault("/fault/hold-resolved-ts", "seconds=2", nil); err != nil {
		t.Fatal(err)
	}
	held := s.fc.ResolvedTs()
	time.Sleep(time.Second)
	if got := s.fc.ResolvedTs(); got > held {
		// Rounds already queued before the hold may still arrive; one more
		// second must not move it further.
		held = got
		time.Sleep(500 * time.Millisecond)
		if s.fc.ResolvedTs() > held {
			t.Fatalf("resolved ts advanced while held")
		}
	}
	want := w.finish(t)
	s.waitResolved(t, currentTS(t, c), time.Minute)
	s.verify(t, tid, want)
	t.Logf("%d rows through split, errors %v, %d reconnects", len(want), s.fc.RegionErrors(), s.fc.Reconnects())
	serverChecker(t, p)
}

func TestResolvedTsHeldByOpenTransactions(t *testing.T) {
	p := pgtest.Start(t, pgtest.Options{Args: []string{"--check-invariants", "--resolved-ts-interval", "100ms"}})
	c, tid := setupTable(t, p, "txns")
	checkpoint := currentTS(t, c)
	s := openStream(t, p, tid, checkpoint)
	s.waitResolved(t, checkpoint, time.Minute)

	// Async commit and 1PC are TiDB's defaults: run both kinds concurrently
	// with the stream; the checkers assert no row arrives at or below a
	// resolved ts already sent.
	exec1(t, c, "SPLIT TABLE acc.txns BETWEEN (0) AND (100000) REGIONS 4")
	m := newModel()
	var mu sync.Mutex
	modes := map[string]int{}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			gc, err := p.DB("").Conn(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			defer gc.Close()
			for i := 0; i < 50; i++ {
				a := int64(g*1000 + i)
				b := a + 50000 // another region: async commit rather than 1PC
				var err error
				if i%2 == 0 {
					_, err = gc.ExecContext(context.Background(), "INSERT INTO acc.txns VALUES (?, 'x', 1)", a)
				} else {
					_, err = gc.ExecContext(context.Background(), "INSERT INTO acc.txns VALUES (?, 'x', 1), (?, 'y', 2)", a, b)
				}
				if err != nil {
					t.Error(err)
					return
				}
				var info string
				if err := gc.QueryRowContext(context.Background(), "SELECT @@tidb_last_txn_info").Scan(&info); err != nil {
					t.Error(err)
					return
				}
				var ti txnInfo
				_ = json.Unmarshal([]byte(info), &ti)
				mu.Lock()
				modes[ti.CommitMode]++
				m.put(a, row{"x", 1}, ti.CommitTS)
				if i%2 == 1 {
					m.put(b, row{"y", 2}, ti.CommitTS)
				}
				mu.Unlock()
			}
		}(g)
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	t.Logf("commit modes: %v", modes)
	if modes["1pc"] == 0 || modes["async_commit"] == 0 {
		t.Fatalf("want both 1PC and async-commit transactions, got %v", modes)
	}

	// A long-open transaction from an external client on the KV port: resolved
	// ts stays at or below its start ts until it commits, then passes it.
	cc, err := grpc.NewClient(p.KVAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	kvc := tikvpb.NewTikvClient(cc)
	openTxn := func(id int64) (key []byte, start uint64) {
		key = tablecodec.EncodeRowKeyWithHandle(tid, kv.IntHandle(id))
		start = currentTS(t, c)
		val := encodeRow(t, row{"long", 7})
		rctx := regionCtx(t, p, key)
		resp, err := kvc.KvPrewrite(context.Background(), &kvrpcpb.PrewriteRequest{
			Context: rctx, PrimaryLock: key, StartVersion: start, LockTtl: 60000,
			Mutations: []*kvrpcpb.Mutation{{Op: kvrpcpb.Op_Put, Key: key, Value: val}},
		})
		if err != nil || resp.RegionError != nil || len(resp.Errors) > 0 {
			t.Fatalf("prewrite: %v %v %v", err, resp.GetRegionError(), resp.GetErrors())
		}
		return key, start
	}
	key, start := openTxn(90001)
	// A round between reading start and applying the prewrite may pass
	// start legitimately (the commit ts lands above that round's TSO); from
	// the apply on, the lock holds every round. The bound is the emulator's
	// own value for the key's region right after the prewrite returned, not
	// what had reached the client by then.
	var stats cdcemu.Snapshot
	if err := p.Get("/cdc/stats", &stats); err != nil {
		t.Fatal(err)
	}
	held := start
	for _, sub := range stats.Subscriptions {
		if sub.RegionID == regionCtx(t, p, key).GetRegionId() {
			held = max(held, sub.AdvancedTo)
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if rt := s.fc.ResolvedTs(); rt > held {
			t.Fatalf("resolved ts %d passed the open transaction's start ts %d (its region was at %d when it was applied)", rt, start, held)
		}
		time.Sleep(20 * time.Millisecond)
	}
	commit := currentTS(t, c)
	cresp, err := kvc.KvCommit(context.Background(), &kvrpcpb.CommitRequest{
		Context: regionCtx(t, p, key), StartVersion: start, CommitVersion: commit, Keys: [][]byte{key},
	})
	if err != nil || cresp.RegionError != nil || cresp.Error != nil {
		t.Fatalf("commit: %v %v %v", err, cresp.GetRegionError(), cresp.GetError())
	}
	m.put(90001, row{"long", 7}, commit)
	s.waitResolved(t, commit, 30*time.Second)

	// Rolled back: resolved ts is held, then moves on and no row appears.
	key2, start2 := openTxn(90002)
	time.Sleep(500 * time.Millisecond)
	if rt := s.fc.ResolvedTs(); rt > start2 {
		t.Fatalf("resolved ts %d passed open transaction %d", rt, start2)
	}
	rb, err := kvc.KvBatchRollback(context.Background(), &kvrpcpb.BatchRollbackRequest{
		Context: regionCtx(t, p, key2), StartVersion: start2, Keys: [][]byte{key2},
	})
	if err != nil || rb.RegionError != nil || rb.Error != nil {
		t.Fatalf("rollback: %v %v %v", err, rb.GetRegionError(), rb.GetError())
	}
	s.waitResolved(t, currentTS(t, c), 30*time.Second)
	sort.Slice(m.want, func(i, j int) bool { return m.want[i].commitTS < m.want[j].commitTS })
	s.verify(t, tid, m.want)
	serverChecker(t, p)
}

func encodeRow(t testing.TB, r row) []byte {
	var enc rowcodec.Encoder
	b, err := enc.Encode(time.UTC, []int64{2, 3}, []types.Datum{types.NewStringDatum(r.V), types.NewIntDatum(r.N)}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), b...)
}

// regionCtx locates key's region through PD, as any KV client does.
func regionCtx(t testing.TB, p *pgtest.Playground, key []byte) *kvrpcpb.Context {
	t.Helper()
	pdc, err := pd.NewClient([]string{p.PDAddr()}, pd.SecurityOption{})
	if err != nil {
		t.Fatal(err)
	}
	defer pdc.Close()
	r, err := pdc.GetRegion(context.Background(), codec.EncodeBytes(nil, key))
	if err != nil {
		t.Fatal(err)
	}
	return &kvrpcpb.Context{RegionId: r.Meta.GetId(), RegionEpoch: r.Meta.GetRegionEpoch(), Peer: r.Leader}
}

func TestRestartKeepsData(t *testing.T) {
	p := pgtest.Start(t, pgtest.Options{})
	t.Logf("first start ready in %v", p.ReadyIn)
	db := p.DB("")
	for _, q := range []string{
		"CREATE DATABASE keep",
		"CREATE TABLE keep.t (id INT PRIMARY KEY, v VARCHAR(20), KEY (v))",
		"INSERT INTO keep.t VALUES (1, 'one'), (2, 'two'), (3, 'three')",
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()
	p.Restart()
	t.Logf("restart ready in %v", p.ReadyIn)
	var n int
	var v string
	db = p.DB("")
	if err := db.QueryRow("SELECT COUNT(*), MAX(v) FROM keep.t WHERE v <> ''").Scan(&n, &v); err != nil {
		t.Fatal(err)
	}
	if n != 3 || v != "two" {
		t.Fatalf("after restart: %d rows, max %q", n, v)
	}
	if _, err := db.Exec("INSERT INTO keep.t VALUES (4, 'four')"); err != nil {
		t.Fatalf("write after restart: %v", err)
	}
	db.Close()
	if err := p.Stop(); err != nil {
		t.Fatalf("SIGTERM: want a clean exit, got %v\n%s", err, p.Output())
	}
	for _, want := range []string{"TiDB ", "PD ", "TiKV ", "playground stopping"} {
		if !strings.Contains(p.Output(), want) {
			t.Errorf("output lacks %q:\n%s", want, p.Output())
		}
	}
}

func TestHelpDocumentsEveryFlag(t *testing.T) {
	out, err := exec.Command(pgtest.Binary(t), "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v\n%s", err, out)
	}
	for _, f := range []string{"host", "sql-port", "status-port", "pd-port", "kv-port", "data-dir",
		"resolved-ts-interval", "check-invariants", "log-level", "synthetic", "synthetic-tables",
		"synthetic-regions", "synthetic-rate", "synthetic-txn-rows", "synthetic-keys", "synthetic-report"} {
		if !strings.Contains(string(out), "-"+f) {
			t.Errorf("--help does not document --%s", f)
		}
	}
	out, err = exec.Command(pgtest.Binary(t), "--sql-port", "0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--sql-port") {
		t.Errorf("bad port: want an error naming --sql-port, got %v: %s", err, out)
	}
}

func TestGoTPCPrepare(t *testing.T) {
	bin := os.Getenv("GO_TPC")
	if bin == "" {
		if p, err := exec.LookPath("go-tpc"); err == nil {
			bin = p
		} else {
			t.Skip("go-tpc not found: set GO_TPC (make playground-test installs it)")
		}
	}
	p := pgtest.Start(t, pgtest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	began := time.Now()
	cmd := exec.CommandContext(ctx, bin, "tpcc", "--warehouses", "1", "prepare",
		"-H", "127.0.0.1", "-P", fmt.Sprint(p.SQLPort), "-D", "tpcc", "-T", "4")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go-tpc tpcc prepare: %v\n%s", err, tail(out, 3000))
	}
	var n int
	if err := p.DB("tpcc").QueryRow("SELECT COUNT(*) FROM stock").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 100000 {
		t.Fatalf("stock has %d rows, want 100000", n)
	}
	t.Logf("go-tpc tpcc --warehouses 1 prepare took %v", time.Since(began).Round(time.Second))
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// TestMain quiets the pd client's process-global logger, which would
// otherwise print every TSO stream event into the test output.
func TestMain(m *testing.M) {
	pinglog.SetLevel(zapcore.ErrorLevel)
	// glog's and OpenCensus's daemons start in their init (linked through
	// TiDB's packages this test decodes with) and never stop.
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

// BenchmarkSyntheticSource measures the rate the synthetic source sustains
// into one EventFeedV2 subscriber (the feed client, matching prewrites and
// commits) on this machine. Both share the machine's cores.
func BenchmarkSyntheticSource(b *testing.B) {
	for _, tc := range []struct{ tables, regions int }{{1, 1}, {10, 10}} {
		b.Run(fmt.Sprintf("tables=%d/regions=%d", tc.tables, tc.regions), func(b *testing.B) {
			p := pgtest.Start(b, pgtest.Options{Args: []string{
				"--synthetic", "--synthetic-tables", fmt.Sprint(tc.tables), "--synthetic-regions", fmt.Sprint(tc.regions),
				"--synthetic-rate", "2000000", "--synthetic-txn-rows", "16", "--synthetic-report", "1h",
			}})
			db := p.DB("")
			var lo, hi int64
			if err := db.QueryRow("SELECT MIN(TIDB_TABLE_ID), MAX(TIDB_TABLE_ID) FROM information_schema.tables WHERE table_schema = 'synthetic'").Scan(&lo, &hi); err != nil {
				b.Fatal(err)
			}
			start := tablecodec.GenTablePrefix(lo)
			end := tablecodec.GenTablePrefix(hi).PrefixNext()
			fc, err := feedclient.New(context.Background(), feedclient.Config{PDAddrs: []string{p.PDAddr()}, Start: start, End: end, Multiplex: true, CountOnly: true})
			if err != nil {
				b.Fatal(err)
			}
			defer fc.Close()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- fc.Run(ctx) }()
			pgtest.Eventually(b, time.Minute, "subscribed", func() bool { return fc.ResolvedTs() > 0 })
			b.ResetTimer()
			const window = 10 * time.Second
			n0 := fc.ChangeCount()
			t0 := time.Now()
			time.Sleep(window)
			n1 := fc.ChangeCount()
			el := time.Since(t0)
			b.StopTimer()
			cancel()
			<-done
			rate := float64(n1-n0) / el.Seconds()
			b.ReportMetric(rate, "rows/s")
			b.Logf("synthetic source sustained %.0f row changes/s into one subscriber (%d tables x %d regions)", rate, tc.tables, tc.regions)
		})
	}
}
