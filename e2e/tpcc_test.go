package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tidestream/tidestream/e2e/harness"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
	"github.com/tidestream/tidestream/puller/snapshot"
	"github.com/tikv/client-go/v2/oracle"
	"github.com/tikv/client-go/v2/util/codec"
	"google.golang.org/grpc"
)

var tpccTables = []string{"warehouse", "district", "customer", "history", "new_order", "orders", "order_line", "item", "stock"}

// TestTPCCThroughCDCServer runs go-tpc's TPC-C (1 warehouse, 60 s,
// pessimistic) against the playground while one SorterService pipeline per
// table reads it through `cdc server`'s puller and sorter, as an encoder
// would. Every table is split so that some of its regions lie wholly inside
// its record span: TiKV sends a degenerate row (type UNKNOWN, empty key) for
// each committed Lock record to exactly such subscriptions, and a puller
// that re-registers on it would show here as registrations growing during
// the run. Each table's snapshot at the start ts with its delivered rows
// applied must equal a snapshot at the end, and the resolved ts must keep
// close to the TSO.
func TestTPCCThroughCDCServer(t *testing.T) {
	goTPC := os.Getenv("GO_TPC")
	if goTPC == "" {
		t.Skip("GO_TPC is not set: `make e2e` installs go-tpc and sets it")
	}
	pg := startPlayground(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()

	began := time.Now()
	r := harness.Run(t, 5*time.Minute, "", goTPC, tpccArgs(pg, "prepare")...)
	require.Equal(t, 0, r.ExitCode, "go-tpc tpcc prepare:\n%s\n%s", tail(r.Stdout, 3000), tail(r.Stderr, 3000))
	t.Logf("go-tpc tpcc --warehouses 1 prepare took %s", time.Since(began).Round(100*time.Millisecond))

	began = time.Now()
	bounds := make(map[string]handleBounds, len(tpccTables))
	for _, tbl := range tpccTables {
		bounds[tbl] = splitTable(ctx, t, pg.db, "tpcc", tbl)
	}
	item := bounds["item"]
	require.True(t, item.intHandle, "item has an int handle (clustered INT primary key)")
	t.Logf("split %d tables into 4 regions each in %s", len(tpccTables), time.Since(began).Round(100*time.Millisecond))

	srv := startServer(t, "cdc-server", "", "http://"+pg.pdAddr)
	conn, err := pg.db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	tso := func() uint64 { return currentTS(ctx, t, conn) }
	reader, err := snapshot.New(ctx, []string{pg.pdAddr}, snapshot.WithScanBatchSize(1024))
	require.NoError(t, err)
	defer reader.Close()

	start := tso()
	began = time.Now()
	feeds := make([]*tableFeed, len(tpccTables))
	for i, tbl := range tpccTables {
		feeds[i] = &tableFeed{table: tbl, span: recordSpan(ctx, t, pg.db, "tpcc", tbl), resolved: start}
	}
	before := snapshotTables(ctx, t, reader, feeds, start)
	t.Logf("snapshot at start ts %d: %d keys in %s", start, keyCount(before), time.Since(began).Round(100*time.Millisecond))

	client := tidestreamv1.NewSorterServiceClient(harness.Dial(t, srv.addr))
	streamCtx, stopStreams := context.WithCancel(ctx)
	var readers sync.WaitGroup
	defer func() {
		stopStreams()
		readers.Wait()
	}()
	for i, f := range feeds {
		stream, err := client.Subscribe(streamCtx, &tidestreamv1.SubscribeRequest{
			ChangefeedId: "e2e-tpcc", PipelineId: int64(i + 1), Epoch: 1, FromTs: start, Spans: []*tidestreamv1.Span{f.span},
		})
		require.NoError(t, err, f.table)
		readers.Go(func() { f.read(streamCtx, stream) })
	}
	waitResolved(t, feeds, tso(), 2*time.Minute, "initial registrations")
	baseline := readCDCStats(ctx, t, pg)
	t.Logf("initial registrations: %d (%s after subscribing)", baseline.Registers, time.Since(began).Round(100*time.Millisecond))

	// TPC-C writes every row it reads FOR UPDATE, so it commits no Lock
	// record on a record key: with this loop running, UnknownRows came out
	// at exactly ten per loop commit. The loop keeps lock-only keys
	// committing inside item's second region, which item's record span
	// covers whole; its warehouse update gives each transaction a real
	// write beside them, as TPC-C's transactions have.
	lockStop := make(chan struct{})
	lockDone := make(chan struct{})
	var lockCommits int
	var lockErr error
	go func() {
		defer close(lockDone)
		lockCommits, lockErr = lockOnlyLoop(ctx, pg.db, item.lower+item.step, item.step, lockStop)
	}()

	// --ignore-error keeps a worker going after a deadlock or a lock wait
	// timeout, which TPC-C can meet on one warehouse (go-tpc otherwise ends
	// that worker); a failed transaction commits nothing, and the state
	// comparison below holds either way.
	tpc := harness.Start(t, "go-tpc", goTPC, tpccArgs(pg, "run", "--time", "60s", "--ignore-error")...)
	var lags []time.Duration
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for !tpc.Exited() {
		select {
		case <-ctx.Done():
			t.Fatalf("go-tpc run did not end: %v\n%s", ctx.Err(), tail(tpc.Log(), 3000))
		case <-tick.C:
		}
		// Resolved ts first, TSO after: the gap between the two reads can
		// only add to the lag measured, never hide any.
		low, err := minResolved(feeds)
		require.NoError(t, err)
		now := tso()
		lags = append(lags, time.Duration(oracle.ExtractPhysical(now)-oracle.ExtractPhysical(low))*time.Millisecond)
	}
	tpcErr := tpc.Stop(time.Second)
	close(lockStop)
	<-lockDone
	require.NoError(t, tpcErr, "go-tpc tpcc run:\n%s", tail(tpc.Log(), 3000))
	require.NoError(t, lockErr, "lock-only transactions")
	if m := regexp.MustCompile(`tpmC: [0-9.]+.*`).FindString(tpc.Log()); m != "" {
		t.Logf("go-tpc: %s", m)
	}
	t.Logf("go-tpc run errors reported: %d; lock-only transactions committed: %d",
		strings.Count(tpc.Log(), "execute run failed"), lockCommits)

	end := tso()
	began = time.Now()
	waitResolved(t, feeds, end, 2*time.Minute, "resolved ts past the end ts")
	t.Logf("every pipeline resolved past the end ts %d %s after it was taken", end, time.Since(began).Round(time.Millisecond))
	stopStreams()
	readers.Wait()
	final := readCDCStats(ctx, t, pg)
	violations := readCheckerViolations(ctx, t, pg)

	slices.Sort(lags)
	require.NotEmpty(t, lags)
	lagMax, lagP50, lagP99 := lags[len(lags)-1], percentile(lags, 0.50), percentile(lags, 0.99)
	harness.Figure(t, "resolved ts lag behind TSO over %d samples: max %s, p50 %s, p99 %s", len(lags), lagMax, lagP50, lagP99)
	t.Logf("registrations: %d at baseline, %d at the end; unknown rows %d; duplicate registers %d; region errors %d",
		baseline.Registers, final.Registers, final.UnknownRows, final.DuplicateRegisters, final.Errors)

	// What TiDB committed: the start snapshot with every delivered row in
	// (start, end] applied in commit order must be the end snapshot.
	began = time.Now()
	after := snapshotTables(ctx, t, reader, feeds, end)
	t.Logf("snapshot at end ts %d: %d keys in %s", end, keyCount(after), time.Since(began).Round(100*time.Millisecond))
	mismatched := 0
	for _, f := range feeds {
		state := maps.Clone(before[f.table])
		applied := 0
		for _, e := range f.events {
			if e.CommitTs > end {
				continue
			}
			applied++
			switch e.Op {
			case tidestreamv1.OpType_OP_TYPE_PUT:
				state[string(e.Key)] = string(e.Value)
			case tidestreamv1.OpType_OP_TYPE_DELETE:
				delete(state, string(e.Key))
			default:
				t.Errorf("%s: event with op %s at %d key %x", f.table, e.Op, e.CommitTs, e.Key)
			}
		}
		diff := diffKeys(state, after[f.table])
		mismatched += len(diff)
		t.Logf("%-10s %7d events applied, %7d rows at end, %d differing keys", f.table, applied, len(after[f.table]), len(diff))
		for _, d := range diff[:min(len(diff), 10)] {
			t.Logf("%-10s   %s", f.table, d)
		}
	}
	require.Zero(t, mismatched, "delivered rows differ from what TiDB committed")

	require.Equal(t, baseline.Registers, final.Registers, "registrations after the initial ones")
	require.Zero(t, final.DuplicateRegisters, "duplicate registers")
	require.Empty(t, violations, "change-data protocol violations seen by the playground's checker")
	// The maximum, not a percentile: with one sample a second, p99 of a 60 s
	// run is the maximum anyway, and the lag measured here (about 0.3 s at
	// most, with the playground resolving every 200 ms) leaves room for
	// this 2-core machine being busy with other work.
	require.LessOrEqual(t, lagMax, 2*time.Second, "resolved ts lag behind TSO")
	require.Positive(t, final.UnknownRows, "degenerate rows of lock-only commits sent to covering subscriptions (else this run proved nothing about them)")
}

// tableFeed is one table's SorterService stream, read as an encoder would.
type tableFeed struct {
	table string
	span  *tidestreamv1.Span

	mu       sync.Mutex
	events   []*tidestreamv1.RawKVEvent
	resolved uint64 // starts at from_ts: nothing at or below it may come
	err      error
}

// read receives until ctx ends or the stream breaks a promise: events in
// (commit ts, start ts, key) order, none at or below a resolved ts already
// received, resolved ts strictly increasing.
func (f *tableFeed) read(ctx context.Context, stream grpc.ServerStreamingClient[tidestreamv1.SortedBatch]) {
	var last *tidestreamv1.RawKVEvent
	for {
		b, err := stream.Recv()
		f.mu.Lock()
		if err != nil {
			if ctx.Err() == nil {
				f.err = fmt.Errorf("%s: recv: %w", f.table, err)
			}
			f.mu.Unlock()
			return
		}
		for _, e := range b.Events {
			if e.CommitTs <= f.resolved {
				f.err = fmt.Errorf("%s: event (%d,%d,%x) at or below resolved ts %d", f.table, e.CommitTs, e.StartTs, e.Key, f.resolved)
				break
			}
			if last != nil && !less(last, e) {
				f.err = fmt.Errorf("%s: out of order: (%d,%d,%x) then (%d,%d,%x)", f.table, last.CommitTs, last.StartTs, last.Key, e.CommitTs, e.StartTs, e.Key)
				break
			}
			last = e
			f.events = append(f.events, e)
		}
		if f.err == nil && b.ResolvedTs != 0 {
			if b.ResolvedTs <= f.resolved {
				f.err = fmt.Errorf("%s: resolved ts went from %d to %d", f.table, f.resolved, b.ResolvedTs)
			} else {
				f.resolved = b.ResolvedTs
			}
		}
		failed := f.err != nil
		f.mu.Unlock()
		if failed {
			return
		}
	}
}

// minResolved is the lowest resolved ts over feeds, or the first stream
// failure.
func minResolved(feeds []*tableFeed) (uint64, error) {
	low := uint64(0)
	for i, f := range feeds {
		f.mu.Lock()
		r, err := f.resolved, f.err
		f.mu.Unlock()
		if err != nil {
			return 0, err
		}
		if i == 0 || r < low {
			low = r
		}
	}
	return low, nil
}

// waitResolved polls until every feed's resolved ts reaches ts; a broken
// stream fails the test at once.
func waitResolved(t *testing.T, feeds []*tableFeed, ts uint64, timeout time.Duration, what string) {
	t.Helper()
	harness.Eventually(t, timeout, what, func() error {
		low, err := minResolved(feeds)
		if err != nil {
			t.Fatal(err)
		}
		if low < ts {
			return fmt.Errorf("lowest resolved ts %d < %d", low, ts)
		}
		return nil
	})
}

// handleBounds is how a table was split: for an int handle, the SPLIT
// lower bound and region width in handles.
type handleBounds struct {
	intHandle   bool
	lower, step int64
}

// splitTable splits schema.table into 4 regions over its current handle
// range. TiDB wants at least 1000 int handles per region, so a small int
// range is padded below: its rows then start at the first split point and
// sit in the second region, which the record span covers whole.
func splitTable(ctx context.Context, t *testing.T, db *sql.DB, schema, table string) handleBounds {
	t.Helper()
	var pkType string
	require.NoError(t, db.QueryRowContext(ctx,
		"SELECT TIDB_PK_TYPE FROM information_schema.tables WHERE table_schema = ? AND table_name = ?", schema, table).Scan(&pkType))
	rows, err := db.QueryContext(ctx, `SELECT k.COLUMN_NAME, c.DATA_TYPE FROM information_schema.key_column_usage k
		JOIN information_schema.columns c ON c.TABLE_SCHEMA = k.TABLE_SCHEMA AND c.TABLE_NAME = k.TABLE_NAME AND c.COLUMN_NAME = k.COLUMN_NAME
		WHERE k.TABLE_SCHEMA = ? AND k.TABLE_NAME = ? AND k.CONSTRAINT_NAME = 'PRIMARY' ORDER BY k.ORDINAL_POSITION`, schema, table)
	require.NoError(t, err)
	var cols, types []string
	for rows.Next() {
		var c, ty string
		require.NoError(t, rows.Scan(&c, &ty))
		cols, types = append(cols, c), append(types, strings.ToLower(ty))
	}
	require.NoError(t, rows.Err())
	rows.Close()
	full := schema + "." + table
	isInt := func(ty string) bool { return strings.HasSuffix(ty, "int") }

	if pkType == "CLUSTERED" && !(len(cols) == 1 && isInt(types[0])) {
		// A common handle: split between the first and the last row's key.
		first, last := pkTuple(ctx, t, db, full, cols, types, "ASC"), pkTuple(ctx, t, db, full, cols, types, "DESC")
		q := fmt.Sprintf("SPLIT TABLE %s BETWEEN %s AND %s REGIONS 4", full, first, last)
		_, err := db.ExecContext(ctx, q)
		require.NoError(t, err, q)
		return handleBounds{}
	}
	handle := "_tidb_rowid"
	if pkType == "CLUSTERED" {
		handle = cols[0]
	}
	var lo, hi int64
	q := fmt.Sprintf("SELECT MIN(%s), MAX(%s) FROM %s", handle, handle, full)
	require.NoError(t, db.QueryRowContext(ctx, q).Scan(&lo, &hi), q)
	const minStep = 1000 // TiDB's minimum for SPLIT TABLE … REGIONS
	lower, upper := lo, hi+1
	if upper-lower < 4*minStep {
		lower = lo - minStep
		upper = lower + 4*minStep
	}
	q = fmt.Sprintf("SPLIT TABLE %s BETWEEN (%d) AND (%d) REGIONS 4", full, lower, upper)
	_, err = db.ExecContext(ctx, q)
	require.NoError(t, err, q)
	return handleBounds{intHandle: true, lower: lower, step: (upper - lower) / 4}
}

// pkTuple is the primary key of the first (order ASC) or last row as a SQL
// tuple literal.
func pkTuple(ctx context.Context, t *testing.T, db *sql.DB, table string, cols, types []string, order string) string {
	t.Helper()
	by := make([]string, len(cols))
	for i, c := range cols {
		by[i] = c + " " + order
	}
	q := fmt.Sprintf("SELECT %s FROM %s ORDER BY %s LIMIT 1", strings.Join(cols, ", "), table, strings.Join(by, ", "))
	raw := make([]sql.RawBytes, len(cols))
	dst := make([]any, len(cols))
	for i := range raw {
		dst[i] = &raw[i]
	}
	rows, err := db.QueryContext(ctx, q)
	require.NoError(t, err, q)
	defer rows.Close()
	require.True(t, rows.Next(), "%s: no rows", q)
	require.NoError(t, rows.Scan(dst...), q)
	vals := make([]string, len(cols))
	for i, v := range raw {
		if strings.HasSuffix(types[i], "int") {
			vals[i] = string(v)
		} else {
			vals[i] = "X'" + hex.EncodeToString(v) + "'"
		}
	}
	return "(" + strings.Join(vals, ", ") + ")"
}

// lockOnlyLoop commits, about every 100 ms until stop, a pessimistic
// transaction that locks ten item rows in [lo, lo+width) without writing
// them and bumps the warehouse's w_ytd.
func lockOnlyLoop(ctx context.Context, db *sql.DB, lo, width int64, stop <-chan struct{}) (int, error) {
	c, err := db.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	const keys = 10
	commits := 0
	for i := int64(0); ; i++ {
		select {
		case <-stop:
			return commits, nil
		case <-ctx.Done():
			return commits, ctx.Err()
		case <-tick.C:
		}
		from := lo + (i*keys)%(width-keys)
		if err := lockOnly(ctx, c, from, from+keys-1); err != nil {
			_, _ = c.ExecContext(ctx, "ROLLBACK")
			return commits, fmt.Errorf("lock items %d..%d: %w", from, from+keys-1, err)
		}
		commits++
	}
}

func lockOnly(ctx context.Context, c *sql.Conn, from, to int64) error {
	if _, err := c.ExecContext(ctx, "BEGIN PESSIMISTIC"); err != nil {
		return err
	}
	rows, err := c.QueryContext(ctx, "SELECT i_id FROM tpcc.item WHERE i_id BETWEEN ? AND ? FOR UPDATE", from, to)
	if err != nil {
		return err
	}
	n := 0
	for rows.Next() {
		n++
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return err
	}
	if n != int(to-from+1) {
		return fmt.Errorf("locked %d rows, want %d", n, to-from+1)
	}
	if _, err := c.ExecContext(ctx, "UPDATE tpcc.warehouse SET w_ytd = w_ytd + 1 WHERE w_id = 1"); err != nil {
		return err
	}
	_, err = c.ExecContext(ctx, "COMMIT")
	return err
}

// snapshotTables reads every feed's table at ts: raw key → value.
func snapshotTables(ctx context.Context, t *testing.T, r *snapshot.Reader, feeds []*tableFeed, ts uint64) map[string]map[string]string {
	t.Helper()
	out := make(map[string]map[string]string, len(feeds))
	for _, f := range feeds {
		// The span is memcomparable, as PD and the puller see keys; the
		// snapshot reads raw TiDB keys.
		_, start, err := codec.DecodeBytes(f.span.StartKey, nil)
		require.NoError(t, err)
		_, end, err := codec.DecodeBytes(f.span.EndKey, nil)
		require.NoError(t, err)
		m := make(map[string]string)
		require.NoError(t, r.Scan(ctx, start, end, ts, 0, func(k, v []byte) error {
			m[string(k)] = string(v)
			return nil
		}), "snapshot of %s at %d", f.table, ts)
		out[f.table] = m
	}
	return out
}

func keyCount(m map[string]map[string]string) int {
	n := 0
	for _, t := range m {
		n += len(t)
	}
	return n
}

// diffKeys describes every key whose value differs between got and want,
// in key order.
func diffKeys(got, want map[string]string) []string {
	var keys []string
	for k, v := range got {
		if w, ok := want[k]; !ok || w != v {
			keys = append(keys, k)
		}
	}
	for k := range want {
		if _, ok := got[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b string) int { return bytes.Compare([]byte(a), []byte(b)) })
	out := make([]string, len(keys))
	for i, k := range keys {
		g, inGot := got[k]
		w, inWant := want[k]
		switch {
		case !inGot:
			out[i] = fmt.Sprintf("%x: missing from the delivered state (committed value %d bytes)", k, len(w))
		case !inWant:
			out[i] = fmt.Sprintf("%x: delivered state has it, TiDB has no row (%d bytes)", k, len(g))
		default:
			out[i] = fmt.Sprintf("%x: delivered value differs (%d bytes vs committed %d bytes)", k, len(g), len(w))
		}
	}
	return out
}

// percentile of sorted samples, nearest rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(float64(len(sorted))*p+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// cdcStats is the part of the playground's GET /cdc/stats (cdcemu.Snapshot)
// this test reads; counters an older playground lacks decode as 0.
type cdcStats struct {
	Registers, Errors, UnknownRows, DuplicateRegisters uint64
}

func readCDCStats(ctx context.Context, t *testing.T, pg *playground) cdcStats {
	t.Helper()
	var s cdcStats
	getJSON(ctx, t, "http://"+pg.statusAddr+"/cdc/stats", &s)
	return s
}

func readCheckerViolations(ctx context.Context, t *testing.T, pg *playground) []json.RawMessage {
	t.Helper()
	var v struct {
		Violations []json.RawMessage `json:"violations"`
	}
	getJSON(ctx, t, "http://"+pg.statusAddr+"/cdc/checker", &v)
	return v.Violations
}

func getJSON(ctx context.Context, t *testing.T, url string, v any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err, url)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, url)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(v), url)
}

// tpccArgs is a go-tpc tpcc command (prepare, run …) of one warehouse on
// the playground's database tpcc, over 4 connections.
func tpccArgs(pg *playground, args ...string) []string {
	sqlPort := pg.sqlAddr[strings.LastIndex(pg.sqlAddr, ":")+1:]
	return append([]string{"tpcc", "--warehouses", "1"}, append(args,
		"-H", "127.0.0.1", "-P", sqlPort, "-D", "tpcc", "-T", "4")...)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
