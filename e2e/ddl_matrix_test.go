package e2e

import (
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	hamba "github.com/hamba/avro/v2"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/tidestream/tidestream/e2e/harness"
	"github.com/tidestream/tidestream/services/devstack"
)

// TestDDLMatrixUnderWrites is issue 14's DDL acceptance test: one `cdc
// server` with two changefeeds (topic per table, `tidb_{schema}_{table}`,
// one Kafka partition per topic so a topic is one ordered log; "part" has
// the partitioned table and the one exchanged with its partition, "ddl"
// every other table, so a failure of one does not hide what the other
// finds, and each is verified in a subtest of its name) while a background
// writer keeps upserting and deleting rows in whatever tables exist, and
// the test runs, one after another: CREATE TABLE, TRUNCATE, DROP TABLE,
// RENAME TABLE, RENAME TABLE of two tables at once, ADD / DROP / TRUNCATE /
// REORGANIZE PARTITION, EXCHANGE PARTITION, ADD UNIQUE INDEX on a NOT NULL
// column of a table without a key, DROP TABLE then RECOVER TABLE, and DROP
// DATABASE. The changefeeds are created after the databases and most tables
// exist but before any row is written (the tables `created` and `nokey`
// are created after them). Afterwards, once a changefeed's checkpoint has
// passed a TSO read after the last DDL and write, every topic of the two
// databases is decoded with the registry and held against the writer's
// log and against TiDB.
//
// Semantics chosen (TiCDC's Avro protocol and
// specs/tidb-schema-and-rows.md §4-§5):
//   - A row goes to the topic of its table's name at its commit ts: after
//     RENAME a TO b a write to b is in tidb_dm_b, one before it in
//     tidb_dm_a, and no record ever moves.
//   - DDLs emit no records. TRUNCATE, DROP / TRUNCATE PARTITION and EXCHANGE
//     PARTITION change a table's rows without any row event (no
//     tombstones; exchanged rows are not re-sent under the other table),
//     and a renamed table's rows written before the rename stay in the old
//     name's topic. So replaying a live table's topic (upsert by key,
//     delete on tombstone) equals SELECT * for every key written through
//     that topic after the last such DDL that covered the key ("strict"
//     keys); for the other keys the version TiDB holds must be in the
//     topic it was written to (whose last record of the key is, as for
//     every topic, the key's last write through that topic).
//   - A write committed between the TSOs read before and after a DDL (its
//     window) may follow the DDL: TiDB keeps two schema versions live, so
//     a session still on the old one can commit through the old name
//     after the DDL finished. Such a write may be in the successor's topic
//     (EXCHANGE: the other table's; RENAME: the new name's), or in none
//     when its id was erased (TRUNCATE, DROP TABLE / PARTITION / DATABASE;
//     TiDB does not keep it either); it is left out of its key's order.
//   - Rows TiDB writes into new partitions before a partition DDL finished
//     (TRUNCATE PARTITION's new ids take inserts from an intermediate
//     state; REORGANIZE PARTITION double-writes and backfills) belong to
//     the table: the former must arrive, the latter arrive as duplicates.
//   - A table without a key is ineligible; ADD UNIQUE INDEX on a NOT NULL
//     column makes it eligible from that DDL on (a new span at its commit
//     ts): rows written before it are never replicated, rows after it all
//     are, keyed by the unique column.
//   - RECOVER TABLE brings the old table id back: its rows before the DROP
//     and after the RECOVER are in the same topic, and TiDB's rows are
//     its topic's replay.
//   - Every write the writer committed is in its topic, first versions in
//     commit order per key, and the last record of each key is its last
//     write (at-least-once: duplicates are allowed). The value schema of
//     every record is the table's: record name the table's name (not a
//     partition's, nor the old name after a rename), namespace
//     default.<db>, fields id and v; the key schema has id alone.
//
// ADD INDEX and RECOVER TABLE rely on the playground's own TiDB settings
// (deploy/playground main.go, tuneTiDB).
func TestDDLMatrixUnderWrites(t *testing.T) {
	began := time.Now()
	pg := startPlayground(t)
	dev := startDevstack(t, devstack.DefaultConfig())
	proc, addr := startCDCServer(t, "", pg.pdAddr, t.TempDir(), nil)
	t.Cleanup(func() {
		if t.Failed() {
			// The server's log outlives the test's temp dir, for diagnosis.
			_ = os.WriteFile(filepath.Join(os.TempDir(), "ddl_matrix_cdc.log"), []byte(proc.Log()), 0o644)
		}
	})
	srv := &server{addr: addr}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	conn, err := pg.db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	exec := execOn(ctx, t, conn)

	exec("CREATE DATABASE dm")
	exec("CREATE DATABASE dm2")
	for _, name := range []string{"dm.trunc", "dm.dropped", "dm.ren_a", "dm.x", "dm.y", "dm.nt", "dm.rec", "dm2.z"} {
		exec("CREATE TABLE " + name + " (id BIGINT PRIMARY KEY, v VARCHAR(32))")
	}
	exec(`CREATE TABLE dm.p (id BIGINT PRIMARY KEY, v VARCHAR(32)) PARTITION BY RANGE (id)
		(PARTITION p0 VALUES LESS THAN (100), PARTITION p1 VALUES LESS THAN (200), PARTITION p2 VALUES LESS THAN (300))`)

	// Two changefeeds, so that a failure of one leaves the other's DDLs
	// tested: "part" has the partitioned table and the table exchanged
	// with its partition, "ddl" every other table.
	for _, cf := range ddlChangefeeds {
		conf := filepath.Join(t.TempDir(), cf.id+".conf")
		require.NoError(t, os.WriteFile(conf, []byte(changefeedConf+"[filter]\nrules = "+cf.rules+"\n"), 0o600))
		r := harness.Run(t, 90*time.Second, "", harness.CDC(t), "cli", "changefeed", "create",
			"--server=http://"+srv.addr, "--sink-uri=kafka://"+strings.Join(dev.Kafka, ",")+"/meta?protocol=avro&auto-create-topic=true&partition-num=1&replication-factor=1",
			"--schema-registry="+dev.Registry, "--changefeed-id="+cf.id, "--config", conf)
		require.Equal(t, 0, r.ExitCode, "stderr: %s", r.Stderr)
	}
	checkpoint := func(t *testing.T, id string) (uint64, string, string) {
		r := srv.cli(t, "query", "-c", id, "-s")
		require.Equal(t, 0, r.ExitCode, r.Stderr)
		var q struct {
			State      string          `json:"state"`
			Checkpoint uint64          `json:"checkpoint_tso"`
			Error      json.RawMessage `json:"error"`
		}
		require.NoError(t, json.Unmarshal([]byte(r.Stdout), &q), r.Stdout)
		return q.Checkpoint, q.State, string(q.Error)
	}

	// The writer, on a connection of its own.
	wconn, err := pg.db.Conn(ctx)
	require.NoError(t, err)
	defer wconn.Close()
	w := &ddlWriter{tables: map[string]*ddlTable{}}
	for _, name := range []string{"dm.trunc", "dm.dropped", "dm.ren_a", "dm.x", "dm.y", "dm.rec", "dm2.z"} {
		w.tables[name] = &ddlTable{ids: 40}
	}
	w.tables["dm.nt"] = &ddlTable{ids: 16} // in p0's range, for the exchange; few, so keys are written again soon
	w.tables["dm.p"] = &ddlTable{ids: 400} // every partition's range, and beyond
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		w.run(ctx, stop, wconn)
	}()
	stopWriter := sync.OnceFunc(func() { close(stop); <-done })
	defer stopWriter()

	// waitWrites lets the writer commit n more rows before the next DDL.
	waitWrites := func(n int) {
		t.Helper()
		from := w.count()
		harness.Eventually(t, 30*time.Second, fmt.Sprintf("%d writes", n), func() error {
			if err := w.failure(); err != nil {
				return nil // reported below
			}
			if got := w.count() - from; got < n {
				return fmt.Errorf("%d so far", got)
			}
			return nil
		})
		require.NoError(t, w.failure(), "writer")
	}
	model := &ddlModel{}
	type ddlStep struct {
		sql           string
		before, after uint64
		took          time.Duration
		writes        int
		ids           string
	}
	var steps []ddlStep
	// ddl runs one statement between two TSOs, then tells the writer what
	// changed and lets it write on.
	ddl := func(q string, changed func(before, after uint64)) {
		t.Helper()
		before := currentTS(ctx, t, conn)
		n := w.count()
		start := time.Now()
		exec(q)
		took := time.Since(start)
		after := currentTS(ctx, t, conn)
		w.mu.Lock()
		if changed != nil {
			changed(before, after)
		}
		w.mu.Unlock()
		steps = append(steps, ddlStep{sql: q, before: before, after: after, took: took, writes: w.count() - n, ids: physicalIDs(ctx, t, conn)})
		waitWrites(20)
	}
	cover := func(table string, lo, hi int64, ts uint64) {
		model.covers = append(model.covers, ddlCover{table: table, lo: lo, hi: hi, ts: ts})
	}
	const all = 1 << 62
	window := func(table string, lo, hi int64, before, after uint64, alt string) {
		model.windows = append(model.windows, ddlWindow{table: table, lo: lo, hi: hi, before: before, after: after, alt: alt})
	}

	waitWrites(40)
	ddl("CREATE TABLE dm.created (id BIGINT PRIMARY KEY, v VARCHAR(32))", func(_, _ uint64) {
		w.tables["dm.created"] = &ddlTable{ids: 40}
	})
	ddl("TRUNCATE TABLE dm.trunc", func(before, after uint64) {
		cover("dm.trunc", 0, all, after)
		window("dm.trunc", 0, all, before, after, "")
	})
	ddl("DROP TABLE dm.dropped", func(before, after uint64) {
		delete(w.tables, "dm.dropped")
		window("dm.dropped", 0, all, before, after, "")
	})
	ddl("RENAME TABLE dm.ren_a TO dm.ren_b", func(before, after uint64) {
		w.rename("dm.ren_a", "dm.ren_b")
		cover("dm.ren_b", 0, all, after)
		window("dm.ren_a", 0, all, before, after, "dm.ren_b")
	})
	ddl("RENAME TABLE dm.x TO dm.x2, dm.y TO dm.y2", func(before, after uint64) {
		w.rename("dm.x", "dm.x2")
		w.rename("dm.y", "dm.y2")
		cover("dm.x2", 0, all, after)
		cover("dm.y2", 0, all, after)
		window("dm.x", 0, all, before, after, "dm.x2")
		window("dm.y", 0, all, before, after, "dm.y2")
	})
	ddl("ALTER TABLE dm.p ADD PARTITION (PARTITION p3 VALUES LESS THAN (400))", nil)
	ddl("ALTER TABLE dm.p DROP PARTITION p1", func(before, after uint64) {
		cover("dm.p", 100, 200, after)
		window("dm.p", 100, 200, before, after, "")
	})
	// With p1 dropped, p2 holds [100, 300): a RANGE partition's values
	// fall to the next one up once theirs is gone, so TRUNCATE PARTITION
	// p2 also erases ids 100-199 written since the drop.
	ddl("ALTER TABLE dm.p TRUNCATE PARTITION p2", func(before, after uint64) {
		cover("dm.p", 100, 300, after)
		window("dm.p", 100, 300, before, after, "")
	})
	ddl("ALTER TABLE dm.p REORGANIZE PARTITION p2, p3 INTO (PARTITION p23 VALUES LESS THAN (400))", nil)
	// No wait for the changefeed to pass the partition DDLs: the
	// exchange may land while p's pipeline still replays from before them
	// (their re-span), which the order check below holds to account.
	// More writes to nt before the exchange: the rows its table's new
	// pipeline must not overtake.
	waitWrites(60)
	ddl("ALTER TABLE dm.p EXCHANGE PARTITION p0 WITH TABLE dm.nt", func(before, after uint64) {
		cover("dm.p", 0, 100, after)
		cover("dm.nt", 0, all, after)
		window("dm.p", 0, 100, before, after, "dm.nt")
		window("dm.nt", 0, all, before, after, "dm.p")
	})
	ddl("CREATE TABLE dm.nokey (id BIGINT NOT NULL, v VARCHAR(32))", func(_, _ uint64) {
		w.tables["dm.nokey"] = &ddlTable{ids: 40, noKey: true}
	})
	ddl("ALTER TABLE dm.nokey ADD UNIQUE INDEX uk (id)", func(before, after uint64) {
		w.tables["dm.nokey"].noKey = false
		model.eligibleFrom = map[string][2]uint64{"dm.nokey": {before, after}}
		cover("dm.nokey", 0, all, after)
	})
	ddl("DROP TABLE dm.rec", func(before, after uint64) {
		delete(w.tables, "dm.rec")
		// A write committed after the DROP on the old schema version
		// is in TiDB again after RECOVER, but was a row of a dropped
		// table when it committed.
		window("dm.rec", 0, all, before, after, "")
		cover("dm.rec", 0, all, after)
	})
	ddl("RECOVER TABLE dm.rec", func(_, _ uint64) { w.tables["dm.rec"] = &ddlTable{ids: 40} })
	ddl("DROP DATABASE dm2", func(before, after uint64) {
		delete(w.tables, "dm2.z")
		window("dm2.z", 0, all, before, after, "")
	})
	stopWriter()
	require.NoError(t, w.failure(), "writer")
	until := currentTS(ctx, t, conn)
	ddlDone := time.Now()
	for _, s := range steps {
		t.Logf("DDL %-90s took %5s (%d writes meanwhile), between TSOs %d and %d; ids after: %s", s.sql, s.took.Round(time.Millisecond), s.writes, s.before, s.after, s.ids)
	}

	rc, err := sr.NewClient(sr.URLs(dev.Registry))
	require.NoError(t, err)
	writes := w.snapshot()
	for _, cf := range ddlChangefeeds {
		t.Run(cf.id, func(t *testing.T) {
			harness.Eventually(t, 60*time.Second, "checkpoint of "+cf.id+" past the last DDL and write", func() error {
				cp, state, cerr := checkpoint(t, cf.id)
				if state == "failed" {
					return fmt.Errorf("changefeed failed: %s", cerr)
				}
				if cp < until {
					return fmt.Errorf("%s at %d < %d (error %s)", state, cp, until, cerr)
				}
				return nil
			})
			t.Logf("checkpoint of %s passed the last DDL and write %s after them", cf.id, time.Since(ddlDone).Round(100*time.Millisecond))
			mine := func(table string) bool { return ddlGroup(table) == cf.id }
			topics := readDDLTopics(ctx, t, dev.Kafka, rc, []string{"tidb_dm_", "tidb_dm2_"})
			maps.DeleteFunc(topics, func(name string, _ *ddlTopic) bool {
				return !mine(ddlTableOfTopic(name)) && ddlTableOfTopic(name) != ""
			})
			tidb := readDDLTables(ctx, t, pg.db, "dm", "dm2")
			maps.DeleteFunc(tidb, func(table string, _ map[int64]string) bool { return !mine(table) })
			ws := slices.DeleteFunc(slices.Clone(writes), func(w ddlWrite) bool { return !mine(w.table) })

			var problems []string
			problems = append(problems, checkDDLTopicNames(topics)...)
			problems = append(problems, checkDDLSchemas(ctx, rc, topics)...)
			problems = append(problems, checkDDLWrites(ws, model, topics, tidb)...)
			stateBad, strict, lenient := checkDDLState(ws, model, topics, tidb)
			problems = append(problems, stateBad...)
			records := 0
			for _, tp := range topics {
				records += len(tp.records)
			}
			t.Logf("%s: %d writes committed, %d records read from %d topics, %d live tables in TiDB; keys whose replay must equal TiDB: %d, keys a DDL changed without events since their last write: %d",
				cf.id, len(ws), records, len(topics), len(tidb), strict, lenient)
			if len(problems) > 0 {
				sort.Strings(problems)
				t.Errorf("%d problems:\n%s", len(problems), strings.Join(problems[:min(len(problems), 60)], "\n"))
			}
		})
	}
	t.Logf("wall time of the test: %s", time.Since(began).Round(100*time.Millisecond))
}

// ddlChangefeeds are the test's changefeeds and their table filters.
var ddlChangefeeds = []struct{ id, rules string }{
	{"ddl", "['dm.*', 'dm2.*', '!dm.p', '!dm.nt']"},
	{"part", "['dm.p', 'dm.nt']"},
}

// ddlGroup is the changefeed of a table.
func ddlGroup(table string) string {
	if table == "dm.p" || table == "dm.nt" {
		return "part"
	}
	return "ddl"
}

// ddlTableOfTopic is the table name whose topic name is, "" if none.
func ddlTableOfTopic(name string) string {
	for _, t := range ddlTopicTables {
		if (ddlWrite{table: t}).topic() == name {
			return t
		}
	}
	return ""
}

// ddlTable is one table the writer writes: ids 0..ids-1. A table without
// a key gets plain inserts of fresh ids only (nothing to upsert on).
type ddlTable struct {
	ids    int64
	noKey  bool
	nextID int64
}

// ddlWrite is one committed statement.
type ddlWrite struct {
	table string // db.name as written
	id    int64
	v     string // unique per write; "" for a delete
	del   bool
	ts    uint64
}

func (w ddlWrite) topic() string { return "tidb_" + strings.Replace(w.table, ".", "_", 1) }

// ddlCover is a DDL that changed the rows of ids [lo, hi) of a table
// without row events (truncate, drop or truncate partition, exchange, a
// rename into the name, a table becoming eligible), at or before ts.
type ddlCover struct {
	table  string
	lo, hi int64
	ts     uint64
}

// ddlWriter writes into the tables it is told exist, recording only
// committed statements; a statement a DDL made fail is skipped.
type ddlWriter struct {
	mu     sync.Mutex
	tables map[string]*ddlTable
	writes []ddlWrite
	err    error
}

func (w *ddlWriter) rename(from, to string) {
	w.tables[to] = w.tables[from]
	delete(w.tables, from)
}

func (w *ddlWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.writes)
}

func (w *ddlWriter) failure() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *ddlWriter) snapshot() []ddlWrite {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.writes)
}

func (w *ddlWriter) run(ctx context.Context, stop <-chan struct{}, conn *sql.Conn) {
	fail := func(err error) {
		w.mu.Lock()
		w.err = err
		w.mu.Unlock()
	}
	rng := rand.New(rand.NewPCG(14, 14))
	var lastTS uint64
	for seq := 0; ; seq++ {
		select {
		case <-stop:
			return
		default:
		}
		w.mu.Lock()
		names := make([]string, 0, len(w.tables))
		for name := range w.tables {
			names = append(names, name)
		}
		slices.Sort(names)
		if len(names) == 0 {
			w.mu.Unlock()
			time.Sleep(5 * time.Millisecond)
			continue
		}
		name := names[rng.IntN(len(names))]
		tbl := w.tables[name]
		noKey := tbl.noKey
		wr := ddlWrite{table: name, v: "w" + strconv.Itoa(seq)}
		var q string
		var args []any
		switch {
		case noKey:
			if tbl.nextID >= tbl.ids {
				w.mu.Unlock()
				continue
			}
			wr.id = tbl.nextID
			q, args = "INSERT INTO "+name+" (id, v) VALUES (?, ?)", []any{wr.id, wr.v}
		case rng.IntN(8) == 0:
			wr.id, wr.v, wr.del = rng.Int64N(tbl.ids), "", true
			q, args = "DELETE FROM "+name+" WHERE id = ?", []any{wr.id}
		default:
			wr.id = rng.Int64N(tbl.ids)
			q, args = "INSERT INTO "+name+" (id, v) VALUES (?, ?) ON DUPLICATE KEY UPDATE v = VALUES(v)", []any{wr.id, wr.v}
		}
		w.mu.Unlock()
		res, err := conn.ExecContext(ctx, q, args...)
		var myErr *mysql.MySQLError
		if errors.As(err, &myErr) {
			continue // the table is gone, renamed, mid-DDL, or the id has no partition: not committed
		}
		if err != nil {
			fail(fmt.Errorf("write %d (%s): %w", seq, q, err))
			return
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			continue // a delete of an absent row: no change, no event
		}
		ts, err := lastCommitTS(ctx, conn, lastTS)
		if err != nil {
			fail(fmt.Errorf("write %d: %w", seq, err))
			return
		}
		lastTS, wr.ts = ts, ts
		w.mu.Lock()
		if noKey {
			tbl.nextID++
		}
		w.writes = append(w.writes, wr)
		w.mu.Unlock()
	}
}

// ddlRecord is one Kafka record as read.
type ddlRecord struct {
	offset         int64
	id             int64
	v              string
	tombstone      bool
	keyID, valueID uint32
}

type ddlTopic struct {
	name    string
	records []ddlRecord
}

// last is the replay of the topic: id → v of every live key.
func (tp *ddlTopic) last() map[int64]string {
	out := map[int64]string{}
	for _, r := range tp.records {
		if r.tombstone {
			delete(out, r.id)
		} else {
			out[r.id] = r.v
		}
	}
	return out
}

// readDDLTopics reads every topic whose name has one of prefixes, from the
// start to its end offsets now.
func readDDLTopics(ctx context.Context, t *testing.T, brokers []string, rc *sr.Client, prefixes []string) map[string]*ddlTopic {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	adm, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	defer adm.Close()
	listed, err := kadm.NewClient(adm).ListTopics(ctx)
	require.NoError(t, err)
	var names []string
	for _, name := range listed.Names() {
		if slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
			names = append(names, name)
		}
	}
	out := map[string]*ddlTopic{}
	if len(names) == 0 {
		return out
	}
	ends, err := kadm.NewClient(adm).ListEndOffsets(ctx, names...)
	require.NoError(t, err)
	require.NoError(t, ends.Error())
	want := map[string]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		require.Zero(t, o.Partition, "topic %s: one partition (partition-num=1)", o.Topic)
		want[o.Topic] = o.Offset
		out[o.Topic] = &ddlTopic{name: o.Topic}
	})
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(names...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	require.NoError(t, err)
	defer cl.Close()
	decode := avroDecoder(rc)
	next := map[string]int64{}
	behind := func() string {
		for name, end := range want {
			if next[name] < end {
				return fmt.Sprintf("%s at %d of %d", name, next[name], end)
			}
		}
		return ""
	}
	for b := behind(); b != ""; b = behind() {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "reading the topics: %s", b)
		fs.EachError(func(topic string, p int32, err error) {
			require.NoError(t, err, "fetch %s/%d", topic, p)
		})
		fs.EachRecord(func(r *kgo.Record) {
			next[r.Topic] = r.Offset + 1
			rec := ddlRecord{offset: r.Offset, tombstone: r.Value == nil}
			key, err := decode(r.Key)
			require.NoError(t, err, "%s@%d key", r.Topic, r.Offset)
			id, ok := key["id"].(int64)
			require.True(t, ok, "%s@%d key %v: no long id", r.Topic, r.Offset, key)
			rec.id, rec.keyID = id, binary.BigEndian.Uint32(r.Key[1:5])
			if !rec.tombstone {
				val, err := decode(r.Value)
				require.NoError(t, err, "%s@%d value", r.Topic, r.Offset)
				rec.v, _ = val["v"].(string)
				rec.valueID = binary.BigEndian.Uint32(r.Value[1:5])
			}
			tp := out[r.Topic]
			tp.records = append(tp.records, rec)
		})
	}
	return out
}

// readDDLTables is every live table of the databases: db.name → id → v.
func readDDLTables(ctx context.Context, t *testing.T, db *sql.DB, schemas ...string) map[string]map[int64]string {
	t.Helper()
	out := map[string]map[int64]string{}
	for _, s := range schemas {
		rows, err := db.QueryContext(ctx, "SELECT table_name FROM information_schema.tables WHERE table_schema = ? AND table_type = 'BASE TABLE'", s)
		require.NoError(t, err)
		var names []string
		for rows.Next() {
			var n string
			require.NoError(t, rows.Scan(&n))
			names = append(names, s+"."+n)
		}
		require.NoError(t, rows.Err())
		rows.Close()
		for _, name := range names {
			rows, err := db.QueryContext(ctx, "SELECT id, v FROM "+name)
			require.NoError(t, err)
			m := map[int64]string{}
			for rows.Next() {
				var id int64
				var v string
				require.NoError(t, rows.Scan(&id, &v))
				m[id] = v
			}
			require.NoError(t, rows.Err())
			rows.Close()
			out[name] = m
		}
	}
	return out
}

// ddlTopicTables is every table name the test ever gives a table, as its
// topic: records in any other topic (a partition's name, a database that
// does not exist) are misrouted.
var ddlTopicTables = []string{"dm.trunc", "dm.dropped", "dm.ren_a", "dm.ren_b", "dm.x", "dm.x2", "dm.y", "dm.y2",
	"dm.p", "dm.nt", "dm.created", "dm.nokey", "dm.rec", "dm2.z"}

func checkDDLTopicNames(topics map[string]*ddlTopic) []string {
	var bad []string
	for name := range topics {
		if !slices.ContainsFunc(ddlTopicTables, func(t string) bool { return ddlWrite{table: t}.topic() == name }) {
			bad = append(bad, fmt.Sprintf("topic %s (%d records) is no table's", name, len(topics[name].records)))
		}
	}
	return bad
}

// checkDDLSchemas holds every record's key and value schema to its topic's
// table.
func checkDDLSchemas(ctx context.Context, rc *sr.Client, topics map[string]*ddlTopic) []string {
	var bad []string
	parsed := map[uint32]*hamba.RecordSchema{}
	schemaOf := func(id uint32) (*hamba.RecordSchema, error) {
		if s, ok := parsed[id]; ok {
			return s, nil
		}
		got, err := rc.SchemaByID(ctx, int(id))
		if err != nil {
			return nil, err
		}
		s, err := hamba.Parse(got.Schema)
		if err != nil {
			return nil, err
		}
		rs, ok := s.(*hamba.RecordSchema)
		if !ok {
			return nil, fmt.Errorf("schema %d is a %s, not a record", id, s.Type())
		}
		parsed[id] = rs
		return rs, nil
	}
	fields := func(rs *hamba.RecordSchema) []string {
		var out []string
		for _, f := range rs.Fields() {
			out = append(out, f.Name())
		}
		return out
	}
	for name, tp := range topics {
		var db, table string
		for _, t := range ddlTopicTables {
			if (ddlWrite{table: t}).topic() == name {
				db, table, _ = strings.Cut(t, ".")
			}
		}
		if table == "" {
			continue // reported by checkDDLTopicNames
		}
		seen := map[[2]uint32]bool{}
		for _, r := range tp.records {
			if seen[[2]uint32{r.keyID, r.valueID}] {
				continue
			}
			seen[[2]uint32{r.keyID, r.valueID}] = true
			check := func(what string, id uint32, want []string) {
				rs, err := schemaOf(id)
				switch {
				case err != nil:
					bad = append(bad, fmt.Sprintf("topic %s@%d: %s schema %d: %v", name, r.offset, what, id, err))
				case rs.Name() != table || rs.Namespace() != "default."+db:
					bad = append(bad, fmt.Sprintf("topic %s@%d: %s schema %d is record %s, want default.%s.%s", name, r.offset, what, id, rs.FullName(), db, table))
				case !slices.Equal(fields(rs), want):
					bad = append(bad, fmt.Sprintf("topic %s@%d: %s schema %d has fields %v, want %v", name, r.offset, what, id, fields(rs), want))
				}
			}
			check("key", r.keyID, []string{"id"})
			if !r.tombstone {
				check("value", r.valueID, []string{"id", "v"})
			}
		}
	}
	return bad
}

// ddlWindow is a DDL's span between the TSOs read before and after it,
// over ids [lo, hi) of a table: TiDB lets a session still on the schema
// version before the DDL commit after the DDL finished (two versions are
// live at once), so a write through the old name committed in the window
// may belong to the table's successor (alt: the exchanged partition's
// table, the new name) or to an id the DDL erased (truncated, dropped),
// and then is in no topic and not in TiDB either.
type ddlWindow struct {
	table         string
	lo, hi        int64
	before, after uint64
	alt           string // "" if the write may only be gone
}

// ddlModel is what the DDLs did to the writes' expectations.
type ddlModel struct {
	// eligibleFrom: a table that became eligible by DDL, with the TSOs
	// read before and after that DDL.
	eligibleFrom map[string][2]uint64
	covers       []ddlCover
	windows      []ddlWindow
}

// replicated says whether a write is expected in Kafka: yes, unless its
// table became eligible by DDL after it (no when before the TSO read
// before that DDL; unknown, ok=false, between the two TSOs, or in a DDL
// window).
func (m *ddlModel) replicated(w ddlWrite) (yes, ok bool) {
	if span, found := m.eligibleFrom[w.table]; found {
		switch {
		case w.ts < span[0]:
			return false, true
		case w.ts <= span[1]:
			return false, false
		}
	}
	for _, win := range m.windows {
		if win.table == w.table && win.lo <= w.id && w.id < win.hi && win.before <= w.ts && w.ts <= win.after {
			return false, false
		}
	}
	return true, true
}

// mayBeAbsent says whether a write may be in no topic: it was written in
// the window of the DDL that made its table eligible, or of one that
// erased its row.
func (m *ddlModel) mayBeAbsent(w ddlWrite) bool {
	if span, found := m.eligibleFrom[w.table]; found && w.ts <= span[1] {
		return true
	}
	for _, win := range m.windows {
		if win.alt == "" && win.table == w.table && win.lo <= w.id && w.id < win.hi && win.before <= w.ts && w.ts <= win.after {
			return true
		}
	}
	return false
}

// topics are the topics a write may be in: its table's, and in a DDL
// window also its successor's.
func (m *ddlModel) topics(w ddlWrite) []string {
	out := []string{w.topic()}
	for _, win := range m.windows {
		if win.alt != "" && win.table == w.table && win.lo <= w.id && w.id < win.hi && win.before <= w.ts && w.ts <= win.after {
			out = append(out, ddlWrite{table: win.alt}.topic())
		}
	}
	return out
}

// covered is the TSO after the last DDL that changed the row of id in
// table without events, 0 if none.
func (m *ddlModel) covered(table string, id int64) uint64 {
	var ts uint64
	for _, c := range m.covers {
		if c.table == table && c.lo <= id && id < c.hi {
			ts = max(ts, c.ts)
		}
	}
	return ts
}

// checkDDLWrites holds Kafka to the writer's log: every replicated write
// in its table's topic at its commit ts and in no other, first versions of
// a key in commit order with a tombstone for each delete between them, the
// last record of each key its last write; no write of an ineligible table
// anywhere; no record Kafka holds that nobody wrote. A write in a DDL
// window may be missing or in its successor's topic, and is left out of
// the order of its key.
func checkDDLWrites(writes []ddlWrite, m *ddlModel, topics map[string]*ddlTopic, tidb map[string]map[int64]string) []string {
	var bad []string
	byV := map[string]ddlWrite{}
	type tk struct {
		topic string
		id    int64
	}
	perKey := map[tk][]ddlWrite{}
	lastUncertain := map[tk]uint64{} // latest write in a DDL window that may be in the topic
	for _, w := range writes {
		if !w.del {
			byV[w.v] = w
		}
		yes, ok := m.replicated(w)
		if !ok {
			for _, tp := range m.topics(w) {
				lastUncertain[tk{tp, w.id}] = max(lastUncertain[tk{tp, w.id}], w.ts)
			}
			continue
		}
		if yes {
			perKey[tk{w.topic(), w.id}] = append(perKey[tk{w.topic(), w.id}], w)
		}
	}
	recs := map[tk][]ddlRecord{}
	for name, tp := range topics {
		for _, r := range tp.records {
			recs[tk{name, r.id}] = append(recs[tk{name, r.id}], r)
			if r.tombstone {
				continue
			}
			w, ok := byV[r.v]
			switch {
			case !ok:
				bad = append(bad, fmt.Sprintf("topic %s@%d: id %d v %q was never written", name, r.offset, r.id, r.v))
			case !slices.Contains(m.topics(w), name) || w.id != r.id:
				bad = append(bad, fmt.Sprintf("topic %s@%d: id %d v %s was written to %s id %d at %d: wrong topic", name, r.offset, r.id, r.v, w.table, w.id, w.ts))
			default:
				if yes, ok := m.replicated(w); ok && !yes {
					bad = append(bad, fmt.Sprintf("topic %s@%d: id %d v %s written at %d while %s had no key: replicated anyway", name, r.offset, r.id, r.v, w.ts, w.table))
				}
			}
		}
	}
	for k, ws := range perKey {
		rs := recs[k]
		// history names the key's writes and records, for diagnosis.
		history := func() string {
			var b strings.Builder
			b.WriteString(" [writes:")
			for _, w := range ws {
				if w.del {
					fmt.Fprintf(&b, " del@%d", w.ts)
				} else {
					fmt.Fprintf(&b, " %s@%d", w.v, w.ts)
				}
			}
			b.WriteString("; records:")
			for _, r := range rs {
				if r.tombstone {
					fmt.Fprintf(&b, " del#%d", r.offset)
				} else {
					fmt.Fprintf(&b, " %s#%d", r.v, r.offset)
				}
			}
			if rows, live := tidb[ws[0].table]; live {
				v, ok := rows[k.id]
				fmt.Fprintf(&b, "; TiDB now: %s", show(v, ok))
			}
			b.WriteString("]")
			return b.String()
		}
		var want []string
		mine := map[string]bool{}
		for _, w := range ws {
			if !w.del {
				want = append(want, w.v)
				mine[w.v] = true
			}
		}
		first := map[string]int{}
		var got []string
		for i, r := range rs {
			if _, seen := first[r.v]; !r.tombstone && !seen && mine[r.v] {
				first[r.v] = i
				got = append(got, r.v)
			}
		}
		for _, w := range ws {
			if _, ok := first[w.v]; !w.del && !ok {
				bad = append(bad, fmt.Sprintf("lost: %s id %d v %s committed at %d is not in %s%s", w.table, w.id, w.v, w.ts, k.topic, history()))
			}
		}
		if !slices.Equal(got, want) && len(got) == len(want) { // a loss is reported above
			bad = append(bad, fmt.Sprintf("%s id %d: versions first read in order %v, committed in order %v%s", k.topic, k.id, got, want, history()))
		}
		for i, w := range ws {
			if !w.del {
				continue
			}
			lo, hi := -1, len(rs)
			for j := i - 1; j >= 0; j-- {
				if !ws[j].del {
					if f, ok := first[ws[j].v]; ok {
						lo = f
					}
					break
				}
			}
			for j := i + 1; j < len(ws); j++ {
				if !ws[j].del {
					if f, ok := first[ws[j].v]; ok {
						hi = f
					}
					break
				}
			}
			if lo+1 > hi || !slices.ContainsFunc(rs[lo+1:hi], func(r ddlRecord) bool { return r.tombstone }) {
				bad = append(bad, fmt.Sprintf("lost: delete of %s id %d committed at %d has no tombstone in %s where it belongs%s", w.table, w.id, w.ts, k.topic, history()))
			}
		}
		lastW := ws[len(ws)-1]
		switch {
		case len(rs) == 0 || lastUncertain[k] > lastW.ts:
			// Nothing read (reported above), or a later write in a DDL
			// window may be the last.
		case lastW.del && !rs[len(rs)-1].tombstone:
			bad = append(bad, fmt.Sprintf("%s id %d: deleted last (at %d), last record v %s%s", k.topic, k.id, lastW.ts, rs[len(rs)-1].v, history()))
		case !lastW.del && (rs[len(rs)-1].tombstone || rs[len(rs)-1].v != lastW.v):
			bad = append(bad, fmt.Sprintf("%s id %d: last written v %s (at %d), last record %+v%s", k.topic, k.id, lastW.v, lastW.ts, rs[len(rs)-1], history()))
		}
	}
	return bad
}

// checkDDLState holds every live table of TiDB to its topic: replaying the
// topic gives SELECT * for every key written through the topic after the
// last DDL that changed the key's row without events (strict), and for the
// other keys TiDB's version is in a topic it may be in.
func checkDDLState(writes []ddlWrite, m *ddlModel, topics map[string]*ddlTopic, tidb map[string]map[int64]string) (bad []string, strict, lenient int) {
	byV := map[string]ddlWrite{}
	lastWrite := map[string]map[int64]uint64{} // topic → id → ts of its last write
	for _, w := range writes {
		if !w.del {
			byV[w.v] = w
		}
		for _, tp := range m.topics(w) {
			if lastWrite[tp] == nil {
				lastWrite[tp] = map[int64]uint64{}
			}
			lastWrite[tp][w.id] = max(lastWrite[tp][w.id], w.ts)
		}
	}
	replays := map[string]map[int64]string{}
	present := map[string]map[string]bool{} // topic → every v read
	for name, tp := range topics {
		replays[name] = tp.last()
		present[name] = map[string]bool{}
		for _, r := range tp.records {
			if !r.tombstone {
				present[name][r.v] = true
			}
		}
	}
	for table, rows := range tidb {
		topic := ddlWrite{table: table}.topic()
		replay := replays[topic]
		ids := map[int64]bool{}
		for id := range rows {
			ids[id] = true
		}
		for id := range replay {
			ids[id] = true
		}
		for id := range ids {
			tv, inTiDB := rows[id]
			kv, inKafka := replay[id]
			if lw := lastWrite[topic][id]; lw > m.covered(table, id) {
				strict++
				if tv != kv || inTiDB != inKafka {
					bad = append(bad, fmt.Sprintf("%s id %d: TiDB %s, replay of %s %s", table, id, show(tv, inTiDB), topic, show(kv, inKafka)))
				}
				continue
			}
			lenient++
			if !inTiDB {
				continue // removed by a DDL without events; the topic keeps its last version
			}
			w, ok := byV[tv]
			if !ok {
				bad = append(bad, fmt.Sprintf("%s id %d: TiDB has v %q, which the writer never committed", table, id, tv))
				continue
			}
			if yes, ok := m.replicated(w); (ok && !yes) || (!ok && m.mayBeAbsent(w)) {
				continue
			}
			if !slices.ContainsFunc(m.topics(w), func(tp string) bool { return present[tp][tv] }) {
				bad = append(bad, fmt.Sprintf("%s id %d: TiDB has v %s (written to %s at %d), which is not in %v", table, id, tv, w.table, w.ts, m.topics(w)))
			}
		}
	}
	if strict == 0 {
		bad = append(bad, "no key was checked strictly against TiDB")
	}
	return bad, strict, lenient
}

// physicalIDs lists the tables of dm and their partitions with their ids,
// for the log: failures name physical ids.
func physicalIDs(ctx context.Context, t *testing.T, conn *sql.Conn) string {
	t.Helper()
	rows, err := conn.QueryContext(ctx, `SELECT t.table_name, t.tidb_table_id, IFNULL(GROUP_CONCAT(CONCAT(p.partition_name, '=', p.tidb_partition_id) ORDER BY p.partition_ordinal_position), '')
		FROM information_schema.tables t LEFT JOIN information_schema.partitions p
		  ON p.table_schema = t.table_schema AND p.table_name = t.table_name AND p.partition_name IS NOT NULL
		WHERE t.table_schema = 'dm' GROUP BY t.table_name, t.tidb_table_id ORDER BY t.table_name`)
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var name, parts string
		var id int64
		require.NoError(t, rows.Scan(&name, &id, &parts))
		if parts != "" {
			out = append(out, fmt.Sprintf("%s=%d(%s)", name, id, parts))
		} else {
			out = append(out, fmt.Sprintf("%s=%d", name, id))
		}
	}
	require.NoError(t, rows.Err())
	return strings.Join(out, " ")
}

func show(v string, ok bool) string {
	if !ok {
		return "absent"
	}
	return "v " + v
}

// TestDDLMatrixCheckerCatchesStaleRedelivery holds the checker itself to
// what the matrix saw with EXCHANGE PARTITION: a version re-delivered after
// a newer one leaves the topic's replay stale, which both checks report,
// while a write in the DDL's window found in the other table's topic is
// accepted.
func TestDDLMatrixCheckerCatchesStaleRedelivery(t *testing.T) {
	m := &ddlModel{
		covers:  []ddlCover{{table: "dm.nt", lo: 0, hi: 1 << 62, ts: 200}, {table: "dm.p", lo: 0, hi: 100, ts: 200}},
		windows: []ddlWindow{{table: "dm.nt", lo: 0, hi: 1 << 62, before: 150, after: 200, alt: "dm.p"}},
	}
	writes := []ddlWrite{
		{table: "dm.nt", id: 80, v: "w1", ts: 100},
		{table: "dm.nt", id: 81, v: "w2", ts: 170}, // in the window: lands in p
		{table: "dm.nt", id: 80, v: "w3", ts: 300},
	}
	topics := map[string]*ddlTopic{
		"tidb_dm_nt": {name: "tidb_dm_nt", records: []ddlRecord{{offset: 0, id: 80, v: "w1"}, {offset: 1, id: 80, v: "w3"}}},
		"tidb_dm_p":  {name: "tidb_dm_p", records: []ddlRecord{{offset: 0, id: 81, v: "w2"}}},
	}
	tidb := map[string]map[int64]string{"dm.nt": {80: "w3"}, "dm.p": {81: "w2"}}
	require.Empty(t, checkDDLWrites(writes, m, topics, tidb))
	bad, strict, _ := checkDDLState(writes, m, topics, tidb)
	require.Empty(t, bad)
	require.Equal(t, 1, strict)

	// The stale re-delivery of w1 after w3.
	nt := topics["tidb_dm_nt"]
	nt.records = append(nt.records, ddlRecord{offset: 2, id: 80, v: "w1"})
	require.Len(t, checkDDLWrites(writes, m, topics, tidb), 1)
	bad, _, _ = checkDDLState(writes, m, topics, tidb)
	require.Len(t, bad, 1)

	// A lost write outside any window.
	nt.records = nt.records[:1]
	require.NotEmpty(t, checkDDLWrites(writes, m, topics, tidb))
}
