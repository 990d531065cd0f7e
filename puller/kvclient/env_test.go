package kvclient

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidestream/tidestream/puller/internal/pgharness"
	"github.com/tidestream/tidestream/puller/matcher"
	"github.com/tikv/client-go/v2/oracle"
	"github.com/tikv/client-go/v2/util/codec"
)

// resolvedInterval is the playground's resolved-ts round in these tests.
const resolvedInterval = 200 * time.Millisecond

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("KVCLIENT_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startPlayground runs the playground with a fast resolved-ts round and its
// invariant checker on.
func startPlayground(t *testing.T) *pgharness.Playground {
	t.Helper()
	if testing.Short() {
		t.Skip("starts the playground")
	}
	return pgharness.Start(t, "--resolved-ts-interval", resolvedInterval.String(), "--check-invariants")
}

func newTestClient(t *testing.T, pg *pgharness.Playground, mod func(*Config)) *Client {
	t.Helper()
	cfg := Config{PDAddrs: []string{pg.PDAddr()}, Logger: testLogger(t)}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

// checkInvariants fails the test if the playground's protocol checker saw a
// violation on any stream.
func checkInvariants(t *testing.T, pg *pgharness.Playground) {
	t.Helper()
	resp, err := httpGet(pg.StatusURL() + "/cdc/checker")
	if err != nil {
		t.Fatalf("checker: %v", err)
	}
	var out struct {
		Violations []any `json:"violations"`
	}
	if err := json.Unmarshal(resp, &out); err != nil {
		t.Fatalf("checker answer %s: %v", resp, err)
	}
	if len(out.Violations) > 0 {
		t.Fatalf("playground saw %d protocol violations: %v", len(out.Violations), out.Violations)
	}
}

func tso(t *testing.T, c *Client) uint64 {
	t.Helper()
	ts, err := c.kv.CurrentTimestamp(oracle.GlobalTxnScope)
	if err != nil {
		t.Fatalf("TSO: %v", err)
	}
	return ts
}

// table is a test table and its record span.
type table struct {
	db, name string
	id       int64
	span     Span
}

func (tb table) fq() string { return "`" + tb.db + "`.`" + tb.name + "`" }

// recordKey is the raw key of row handle h.
func (tb table) recordKey(h int64) []byte {
	k := append([]byte{'t'}, codec.EncodeInt(nil, tb.id)...)
	k = append(k, "_r"...)
	return codec.EncodeInt(k, h)
}

// handleOf decodes the handle of a record key of tb.
func (tb table) handleOf(key []byte) (int64, bool) {
	prefix := tb.recordKey(0)[:11]
	if !bytes.HasPrefix(key, prefix) || len(key) != 19 {
		return 0, false
	}
	_, h, err := codec.DecodeInt(key[11:])
	return h, err == nil
}

func createTable(t *testing.T, db *sql.DB, name string) table {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	mustExec(ctx, t, db, "CREATE DATABASE IF NOT EXISTS kvc")
	mustExec(ctx, t, db, fmt.Sprintf("CREATE TABLE kvc.`%s` (id BIGINT PRIMARY KEY, v VARCHAR(64) NOT NULL)", name))
	var id int64
	if err := db.QueryRowContext(ctx, "SELECT TIDB_TABLE_ID FROM information_schema.tables WHERE table_schema = 'kvc' AND table_name = ?", name).Scan(&id); err != nil {
		t.Fatalf("table id of %s: %v", name, err)
	}
	tb := table{db: "kvc", name: name, id: id}
	prefix := tb.recordKey(0)[:11]
	end := append(append([]byte(nil), prefix[:10]...), 's')
	tb.span = Span{Start: codec.EncodeBytes(nil, prefix), End: codec.EncodeBytes(nil, end)}
	return tb
}

func mustExec(ctx context.Context, t *testing.T, db interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, q string, args ...any) {
	t.Helper()
	if _, err := db.ExecContext(ctx, q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// expOp is one change the model expects for a row.
type expOp struct {
	op       matcher.Op
	hasOld   bool
	commitTs uint64
}

// model runs DML on one connection and records what each row's history must
// be, with the commit ts TiDB reports for each transaction.
type model struct {
	t    *testing.T
	tb   table
	conn *sql.Conn
	mu   sync.Mutex
	rows map[int64][]expOp
	live map[int64]bool
	n    int
}

func newModel(t *testing.T, db *sql.DB, tb table) *model {
	t.Helper()
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &model{t: t, tb: tb, conn: conn, rows: make(map[int64][]expOp), live: make(map[int64]bool)}
}

// lastCommitTs reads the commit ts of the connection's last transaction.
func (m *model) lastCommitTs(ctx context.Context) uint64 {
	var info string
	if err := m.conn.QueryRowContext(ctx, "SELECT @@tidb_last_txn_info").Scan(&info); err != nil {
		m.t.Fatalf("tidb_last_txn_info: %v", err)
	}
	var v struct {
		CommitTs uint64 `json:"commit_ts"`
	}
	if err := json.Unmarshal([]byte(info), &v); err != nil || v.CommitTs == 0 {
		m.t.Fatalf("tidb_last_txn_info %q: %v", info, err)
	}
	return v.CommitTs
}

func (m *model) note(ts uint64, h int64, op matcher.Op, hasOld bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rows[h] = append(m.rows[h], expOp{op: op, hasOld: hasOld, commitTs: ts})
	m.live[h] = op == matcher.OpPut
	m.n++
}

func (m *model) val() string {
	m.n++
	return fmt.Sprintf("v-%d-%d", m.n, time.Now().UnixNano())
}

// insert adds rows [from, to) one autocommit statement each.
func (m *model) insert(from, to int64) {
	ctx := context.Background()
	for h := from; h < to; h++ {
		mustExec(ctx, m.t, m.conn, "INSERT INTO "+m.tb.fq()+" (id, v) VALUES (?, ?)", h, m.val())
		m.note(m.lastCommitTs(ctx), h, matcher.OpPut, false)
	}
}

func (m *model) update(from, to int64) {
	ctx := context.Background()
	for h := from; h < to; h++ {
		mustExec(ctx, m.t, m.conn, "UPDATE "+m.tb.fq()+" SET v = ? WHERE id = ?", m.val(), h)
		m.note(m.lastCommitTs(ctx), h, matcher.OpPut, true)
	}
}

func (m *model) delete(from, to int64) {
	ctx := context.Background()
	for h := from; h < to; h++ {
		mustExec(ctx, m.t, m.conn, "DELETE FROM "+m.tb.fq()+" WHERE id = ?", h)
		m.note(m.lastCommitTs(ctx), h, matcher.OpDelete, true)
	}
}

// bigInsert inserts rows [from, to) in one transaction.
func (m *model) bigInsert(from, to int64) {
	ctx := context.Background()
	mustExec(ctx, m.t, m.conn, "BEGIN")
	const batch = 500
	for lo := from; lo < to; lo += batch {
		hi := min(lo+batch, to)
		var sb strings.Builder
		args := make([]any, 0, 2*(hi-lo))
		for h := lo; h < hi; h++ {
			if h > lo {
				sb.WriteString(",")
			}
			sb.WriteString("(?, ?)")
			args = append(args, h, m.val())
		}
		mustExec(ctx, m.t, m.conn, "INSERT INTO "+m.tb.fq()+" (id, v) VALUES "+sb.String(), args...)
	}
	mustExec(ctx, m.t, m.conn, "COMMIT")
	ts := m.lastCommitTs(ctx)
	for h := from; h < to; h++ {
		m.note(ts, h, matcher.OpPut, false)
	}
}

// bigUpdate updates rows [from, to) in one transaction (rows must exist).
func (m *model) bigUpdate(from, to int64) {
	ctx := context.Background()
	mustExec(ctx, m.t, m.conn, "BEGIN")
	mustExec(ctx, m.t, m.conn, "UPDATE "+m.tb.fq()+" SET v = CONCAT(v, 'x') WHERE id >= ? AND id < ?", from, to)
	mustExec(ctx, m.t, m.conn, "COMMIT")
	ts := m.lastCommitTs(ctx)
	for h := from; h < to; h++ {
		m.note(ts, h, matcher.OpPut, true)
	}
}

// recorder is a Sink that keeps everything and validates the resolved-ts
// contract as it goes: no event at or below a resolved ts already reported,
// resolved ts strictly increasing.
type recorder struct {
	mu         sync.Mutex
	events     []matcher.Event
	resolved   uint64
	history    []resolvedAt
	violations []string
	changed    chan struct{}
}

type resolvedAt struct {
	at time.Time
	ts uint64
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{})} }

func (r *recorder) signal() {
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *recorder) Events(_ context.Context, evs []matcher.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range evs {
		if ev.CommitTs <= r.resolved {
			r.violations = append(r.violations, fmt.Sprintf("event %x committed at %d after resolved ts %d", ev.Key, ev.CommitTs, r.resolved))
		}
	}
	r.events = append(r.events, evs...)
	r.signal()
	return nil
}

func (r *recorder) Resolved(_ context.Context, ts uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ts <= r.resolved {
		r.violations = append(r.violations, fmt.Sprintf("resolved ts %d after %d", ts, r.resolved))
	}
	r.resolved = ts
	r.history = append(r.history, resolvedAt{time.Now(), ts})
	r.signal()
	return nil
}

func (r *recorder) resolvedTs() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.resolved
}

// waitResolved waits until the resolved ts reaches ts and returns how long
// that took.
func (r *recorder) waitResolved(t *testing.T, ts uint64, timeout time.Duration) time.Duration {
	t.Helper()
	began := time.Now()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		got, ch := r.resolved, r.changed
		r.mu.Unlock()
		if got >= ts {
			return time.Since(began)
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("resolved ts %d did not reach %d within %v", got, ts, timeout)
		}
	}
}

// feed is one running subscription.
type feed struct {
	rec    *recorder
	cancel context.CancelFunc
	done   chan error
}

func subscribe(t *testing.T, c *Client, span Span, startTs uint64) *feed {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &feed{rec: newRecorder(), cancel: cancel, done: make(chan error, 1)}
	go func() { f.done <- c.Subscribe(ctx, span, startTs, f.rec) }()
	t.Cleanup(func() { f.stop(t) })
	return f
}

// stop ends the subscription; it must end cleanly.
func (f *feed) stop(t *testing.T) {
	t.Helper()
	if f.cancel == nil {
		return
	}
	f.cancel()
	f.cancel = nil
	select {
	case err := <-f.done:
		if err != nil {
			t.Errorf("Subscribe: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("Subscribe did not return 30 s after cancel")
	}
}

// stats summarises a verified feed.
type stats struct {
	events, distinct, duplicates int
}

// verify checks the feed against the model: every change exactly once after
// de-duplication by (key, commit ts), with its commit ts, op and old value;
// duplicates identical; no key outside the model; and the recorder's
// resolved-ts contract held.
func verify(t *testing.T, f *feed, m *model, startTs uint64) stats {
	t.Helper()
	f.rec.mu.Lock()
	evs := slices.Clone(f.rec.events)
	viol := slices.Clone(f.rec.violations)
	f.rec.mu.Unlock()
	if len(viol) > 0 {
		t.Fatalf("%d sink contract violations, first: %s", len(viol), viol[0])
	}
	type id struct {
		key string
		ts  uint64
	}
	first := make(map[id]matcher.Event)
	byHandle := make(map[int64][]matcher.Event)
	var st stats
	st.events = len(evs)
	for _, ev := range evs {
		if ev.CommitTs <= startTs {
			t.Fatalf("event %x at %d not above start ts %d", ev.Key, ev.CommitTs, startTs)
		}
		k := id{string(ev.Key), ev.CommitTs}
		if prev, ok := first[k]; ok {
			st.duplicates++
			if prev.Op != ev.Op || !bytes.Equal(prev.Value, ev.Value) || !bytes.Equal(prev.OldValue, ev.OldValue) || prev.StartTs != ev.StartTs {
				t.Fatalf("duplicate of %x@%d differs: %+v vs %+v", ev.Key, ev.CommitTs, prev, ev)
			}
			continue
		}
		first[k] = ev
		h, ok := m.tb.handleOf(ev.Key)
		if !ok {
			t.Fatalf("event key %x is not a record of table %d", ev.Key, m.tb.id)
		}
		byHandle[h] = append(byHandle[h], ev)
	}
	st.distinct = len(first)
	m.mu.Lock()
	defer m.mu.Unlock()
	for h, want := range m.rows {
		got := byHandle[h]
		slices.SortFunc(got, func(a, b matcher.Event) int { return cmpU64(a.CommitTs, b.CommitTs) })
		if len(got) != len(want) {
			t.Fatalf("row %d: %d changes, want %d (got %s)", h, len(got), len(want), describe(got))
		}
		for i, w := range want {
			g := got[i]
			if g.Op != w.op || g.CommitTs != w.commitTs || (len(g.OldValue) > 0) != w.hasOld ||
				(g.Op == matcher.OpPut) != (len(g.Value) > 0) || g.StartTs == 0 || g.StartTs >= g.CommitTs {
				t.Fatalf("row %d change %d: got %s, want op %v commit %d old %v", h, i, describe(got[i:i+1]), w.op, w.commitTs, w.hasOld)
			}
		}
		delete(byHandle, h)
	}
	for h, got := range byHandle {
		t.Fatalf("row %d: unexpected changes %s", h, describe(got))
	}
	return st
}

func describe(evs []matcher.Event) string {
	var sb strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&sb, "[op %v start %d commit %d value %d B old %d B]", ev.Op, ev.StartTs, ev.CommitTs, len(ev.Value), len(ev.OldValue))
	}
	return sb.String()
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// errIs reports whether Subscribe's error is fatal.
func isFatalErr(err error) bool { return err != nil && errors.Is(err, ErrFatal) }
