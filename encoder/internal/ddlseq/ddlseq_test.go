package ddlseq

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	hamba "github.com/hamba/avro/v2"
	"github.com/pingcap/tidb/pkg/meta/model"
	"github.com/pingcap/tidb/pkg/parser/mysql"
	"github.com/pingcap/tidb/pkg/tablecodec"
	"github.com/stretchr/testify/require"
	"github.com/tikv/client-go/v2/config"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/tidestream/tidestream/encoder/avro"
	"github.com/tidestream/tidestream/encoder/dispatch"
	"github.com/tidestream/tidestream/encoder/internal/avrotest"
	"github.com/tidestream/tidestream/encoder/internal/pgtest"
	"github.com/tidestream/tidestream/encoder/mount"
	"github.com/tidestream/tidestream/encoder/registry"
	"github.com/tidestream/tidestream/encoder/row"
	"github.com/tidestream/tidestream/encoder/schema"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// The DDL statements of the sequence, named because the expectations below
// are keyed by the statement that made each table version.
const (
	createDB   = "CREATE DATABASE ds"
	createT    = "CREATE TABLE ds.t (id INT PRIMARY KEY, a INT, v INT)"
	addColumn  = "ALTER TABLE ds.t ADD COLUMN c VARCHAR(10) NOT NULL DEFAULT 'dflt'"
	modifyCol  = "ALTER TABLE ds.t MODIFY COLUMN v VARCHAR(20)" // int -> string: not BACKWARD-compatible in Avro
	dropColumn = "ALTER TABLE ds.t DROP COLUMN a"
	createNoPK = "CREATE TABLE ds.nopk (a INT NOT NULL, b VARCHAR(10))"
	addUnique  = "ALTER TABLE ds.nopk ADD UNIQUE INDEX ua (a)"         // the first version with a Kafka key
	widenKey   = "ALTER TABLE ds.nopk MODIFY COLUMN a BIGINT NOT NULL" // int -> long: the key changes, compatibly
	renameT    = "RENAME TABLE ds.t TO ds.t2"
	truncateT2 = "TRUNCATE TABLE ds.t2"
	createPT   = "CREATE TABLE ds.pt (id INT PRIMARY KEY, v VARCHAR(10)) " +
		"PARTITION BY RANGE (id) (PARTITION p0 VALUES LESS THAN (100), PARTITION p1 VALUES LESS THAN MAXVALUE)"
	createNT = "CREATE TABLE ds.nt (id INT PRIMARY KEY, v VARCHAR(10))"
	exchange = "ALTER TABLE ds.pt EXCHANGE PARTITION p0 WITH TABLE ds.nt"
	dropT2   = "DROP TABLE ds.t2"
)

// sequence is run in order; DML between the DDLs gives every table version
// rows of each kind.
var sequence = [][]string{
	{createDB, createT},
	{"INSERT INTO ds.t VALUES (1, 10, 100), (2, 20, NULL)", "UPDATE ds.t SET v = 101 WHERE id = 1", "DELETE FROM ds.t WHERE id = 2"},
	{addColumn},
	{"INSERT INTO ds.t (id, a, v) VALUES (3, 30, 300)", "UPDATE ds.t SET c = 'set' WHERE id = 1"},
	{modifyCol},
	{"INSERT INTO ds.t VALUES (4, 40, 'four', 'd4')", "UPDATE ds.t SET v = 'three' WHERE id = 3"},
	{dropColumn},
	{"INSERT INTO ds.t VALUES (5, 'five', 'd5')", "UPDATE ds.t SET v = NULL WHERE id = 4", "DELETE FROM ds.t WHERE id = 1"},
	// No key yet: these rows are not replicated (TiCDC skips such tables).
	{createNoPK},
	{"INSERT INTO ds.nopk VALUES (1, 'one'), (2, 'two')", "UPDATE ds.nopk SET b = 'uno' WHERE a = 1"},
	{addUnique},
	{"INSERT INTO ds.nopk VALUES (3, 'three')", "UPDATE ds.nopk SET b = 'dos' WHERE a = 2", "DELETE FROM ds.nopk WHERE a = 1"},
	{widenKey},
	{"INSERT INTO ds.nopk VALUES (4, 'four')", "UPDATE ds.nopk SET b = 'tres' WHERE a = 3"},
	{renameT},
	{"INSERT INTO ds.t2 VALUES (6, 'six', 'd6')", "UPDATE ds.t2 SET c = 'renamed' WHERE id = 3"},
	{truncateT2},
	{"INSERT INTO ds.t2 VALUES (7, 'seven', 'd7')", "UPDATE ds.t2 SET v = 'siete' WHERE id = 7"},
	{createPT, createNT},
	{"INSERT INTO ds.pt VALUES (1, 'p0'), (150, 'p1')", "INSERT INTO ds.nt VALUES (2, 'nt')"},
	{exchange},
	// id 3 lands in nt's old id (now pt's p0), id 50 in p0's old id (now nt).
	{"INSERT INTO ds.pt VALUES (3, 'p0 new')", "UPDATE ds.pt SET v = 'moved' WHERE id = 2",
		"INSERT INTO ds.nt VALUES (50, 'nt new')", "UPDATE ds.nt SET v = 'back' WHERE id = 1", "DELETE FROM ds.pt WHERE id = 150"},
	{dropT2},
}

// subjectVersion is the registry version a record's key and value schemas
// must have in their subjects.
type subjectVersion struct {
	topic      string
	key, value int
}

// wantVersion is, per table and the DDL that made its version, the topic
// and the subject versions of its records. ADD, MODIFY and DROP COLUMN each
// add a value version under the same key version, unless the modified
// column is part of the Kafka key, which adds a key version too; a rename moves the table
// to a new topic and so to new subjects; TRUNCATE and EXCHANGE PARTITION
// change ids but not schemas, so the subjects keep their versions.
var wantVersion = map[[2]string]subjectVersion{
	{"t", createT}:      {"tidb_ds_t", 1, 1},
	{"t", addColumn}:    {"tidb_ds_t", 1, 2},
	{"t", modifyCol}:    {"tidb_ds_t", 1, 3},
	{"t", dropColumn}:   {"tidb_ds_t", 1, 4},
	{"nopk", addUnique}: {"tidb_ds_nopk", 1, 1},
	{"nopk", widenKey}:  {"tidb_ds_nopk", 2, 2},
	{"t2", renameT}:     {"tidb_ds_t2", 1, 1},
	{"t2", truncateT2}:  {"tidb_ds_t2", 1, 1},
	{"pt", createPT}:    {"tidb_ds_pt", 1, 1},
	{"nt", createNT}:    {"tidb_ds_nt", 1, 1},
	{"pt", exchange}:    {"tidb_ds_pt", 1, 1},
	{"nt", exchange}:    {"tidb_ds_nt", 1, 1},
}

// wantSubjects is every subject's version count once the sequence is done.
var wantSubjects = map[string]int{
	"tidb_ds_t-key": 1, "tidb_ds_t-value": 4,
	"tidb_ds_nopk-key": 2, "tidb_ds_nopk-value": 2,
	"tidb_ds_t2-key": 1, "tidb_ds_t2-value": 1,
	"tidb_ds_pt-key": 1, "tidb_ds_pt-value": 1,
	"tidb_ds_nt-key": 1, "tidb_ds_nt-value": 1,
}

// wantOps counts the row changes the DML above makes per table, as mount
// reports them. Updates are a lower bound: MODIFY COLUMN's reorg rewrites
// every row of ds.t, which arrives as updates that change nothing visible.
var wantOps = map[string]map[row.Op]int{
	"t":    {row.Insert: 5, row.Update: 4, row.Delete: 2},
	"nopk": {row.Insert: 2, row.Update: 2, row.Delete: 1},
	"t2":   {row.Insert: 2, row.Update: 2},
	"pt":   {row.Insert: 3, row.Update: 1, row.Delete: 1},
	"nt":   {row.Insert: 2, row.Update: 1},
}

var cfg = avro.Config{
	DecimalHandling: avro.DecimalPrecise, BigintUnsignedHandling: avro.BigintUnsignedLong,
	Namespace: "default", EnableTiDBExtension: true,
}

// feed is the test's pipeline input: the history built from a snapshot
// before the first DDL plus the DDL jobs, and every row change of the
// tables' physical ids, mounted, in commit order.
type feed struct {
	hist *schema.History
	rows []row.Row
	// skipped counts row changes of ineligible table versions.
	skipped map[string]int
}

// TestDDLSequence is the encoder's acceptance test for schema changes (see
// the package comment).
func TestDDLSequence(t *testing.T) {
	pg := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	db := pg.DB(t, nil)
	// One connection: tidb_snapshot is session state.
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	store, err := schema.OpenStore(ctx, []string{pg.PDAddr}, config.Security{})
	require.NoError(t, err)
	defer func() { require.NoError(t, store.Close()) }()
	// Stale reads need a GC safe point; see typematrix for why one in the
	// past is true here.
	pgtest.Exec(t, conn, "INSERT IGNORE INTO mysql.tidb (VARIABLE_NAME, VARIABLE_VALUE, COMMENT) "+
		"VALUES ('tikv_gc_safe_point', '20000101-00:00:00.000 +0000', 'ddlseq test: allow stale reads')")

	// The playground has no local sort directory for ingest-mode index
	// backfill, on which ADD UNIQUE INDEX over existing rows waits forever;
	// transactional backfill writes the same index.
	pgtest.Exec(t, conn, "SET GLOBAL tidb_enable_dist_task = OFF", "SET GLOBAL tidb_ddl_enable_fast_reorg = OFF")

	before, err := pg.CurrentTS(ctx)
	require.NoError(t, err)
	snap, err := schema.LoadSnapshot(ctx, store, before, 0)
	require.NoError(t, err)
	for _, stmts := range sequence {
		for _, q := range stmts {
			start := time.Now()
			pgtest.Exec(t, conn, q)
			t.Logf("%v %s", time.Since(start).Round(time.Millisecond), q)
		}
	}
	to, err := pg.CurrentTS(ctx)
	require.NoError(t, err)

	f := build(ctx, t, pg, snap, before, to)
	require.Equal(t, map[string]int{"nopk": 3}, f.skipped, "the keyless table's changes before ADD UNIQUE INDEX")
	gotOps := map[string]map[row.Op]int{}
	for _, r := range f.rows {
		if gotOps[r.Table.Name] == nil {
			gotOps[r.Table.Name] = map[row.Op]int{}
		}
		gotOps[r.Table.Name][r.Op]++
	}
	for name, want := range wantOps {
		require.Equal(t, want[row.Insert], gotOps[name][row.Insert], "%s inserts", name)
		require.Equal(t, want[row.Delete], gotOps[name][row.Delete], "%s deletes", name)
		require.GreaterOrEqual(t, gotOps[name][row.Update], want[row.Update], "%s updates", name)
	}
	require.Len(t, gotOps, len(wantOps), "tables with changes: %v", gotOps)
	t.Logf("row changes: %v", gotOps)

	router, err := dispatch.NewRouter(dispatch.Config{
		Rules:        []*tidestreamv1.DispatchRule{{Matcher: []string{"ds.*"}, Topic: "tidb_{schema}_{table}"}},
		DefaultTopic: "tidestream-default",
	})
	require.NoError(t, err)

	t.Run("compatibility=NONE", func(t *testing.T) {
		fake := newRegistry(t, sr.CompatNone)
		p := newPipeline(t, fake, router, f.hist)
		var recs []record
		for i := range f.rows {
			rec, err := p.encode(ctx, t, &f.rows[i])
			require.NoError(t, err)
			recs = append(recs, rec)
		}
		checkVersions(ctx, t, p.cl, recs)
		checkRecords(ctx, t, p.cl, conn, recs)
	})

	t.Run("compatibility=BACKWARD", func(t *testing.T) {
		fake := newRegistry(t, sr.CompatBackward)
		p := newPipeline(t, fake, router, f.hist)
		var refused []string
		for i := range f.rows {
			r := &f.rows[i]
			_, err := p.encode(ctx, t, r)
			if err == nil {
				continue
			}
			require.ErrorIs(t, err, registry.ErrIncompatible)
			refused = append(refused, err.Error())
			if len(refused) > 1 {
				continue
			}
			t.Logf("refused: %v", err)
			var te *registry.TableError
			require.ErrorAs(t, err, &te)
			require.Equal(t, "ds.t", te.Table)
			require.Equal(t, modifyCol, te.DDL)
			require.Equal(t, registry.ValueSchema, te.Kind)
			require.Contains(t, err.Error(), `table ds.t after DDL "`+modifyCol+`"`)
			require.Contains(t, err.Error(), `subject "tidb_ds_t-value": HTTP 409`)
			require.Contains(t, err.Error(), "incompatible with the latest schema", "the registry's message")
			// What the error tells the user to do: open the subject up,
			// and the same row goes through; then close it again, and the
			// later, compatible DROP COLUMN is accepted.
			res := p.cl.SetCompatibility(ctx, sr.SetCompatibility{Level: sr.CompatNone}, "tidb_ds_t-value")
			require.NoError(t, res[0].Err)
			_, err = p.encode(ctx, t, r)
			require.NoError(t, err)
			res = p.cl.SetCompatibility(ctx, sr.SetCompatibility{Level: sr.CompatBackward}, "tidb_ds_t-value")
			require.NoError(t, res[0].Err)
		}
		require.Len(t, refused, 1, "only MODIFY COLUMN int -> varchar is incompatible: %v", refused)
		// Everything else registered under BACKWARD: ADD COLUMN with a
		// default, DROP COLUMN, and the INT -> BIGINT key change (Avro
		// promotes int to long).
		for subject, n := range wantSubjects {
			vs, err := p.cl.SubjectVersions(ctx, subject)
			require.NoError(t, err)
			require.Len(t, vs, n, subject)
		}
	})
}

// build reads the DDL jobs and the row changes in (from, to] and mounts the
// changes of eligible table versions with a history built from snap plus
// those jobs.
func build(ctx context.Context, t *testing.T, pg *pgtest.Playground, snap *schema.Snapshot, from, to uint64) *feed {
	t.Helper()
	hist, err := schema.New(snap, schema.Options{})
	require.NoError(t, err)
	dec, err := schema.NewJobDecoder(snap.JobTable)
	require.NoError(t, err)
	jobPrefix := tablecodec.GenTableRecordPrefix(schema.JobTableID)
	// Every id a job names: truncate and exchange partition move rows of
	// one table to new ids, and each must be read.
	ids := map[int64]bool{}
	var jobs int
	for _, ev := range pg.ChangedRows(ctx, t, jobPrefix, jobPrefix.PrefixNext(), from, to) {
		if ev.Op != tidestreamv1.OpType_OP_TYPE_PUT {
			continue
		}
		j, err := dec.Decode(ev.Key, ev.Value, ev.StartTs, ev.CommitTs)
		require.NoError(t, err)
		if j == nil {
			continue
		}
		jobs++
		require.NoError(t, hist.AddJob(schema.JobEvent{Job: j, CommitTs: ev.CommitTs}))
		if j.TableID != 0 {
			ids[j.TableID] = true
		}
		if bi := j.BinlogInfo; bi != nil {
			infos := bi.MultipleTableInfos
			if bi.TableInfo != nil {
				infos = append(infos, bi.TableInfo)
			}
			for _, info := range infos {
				for _, id := range schema.PhysicalIDs(info) {
					ids[id] = true
				}
			}
		}
	}
	var ddls int
	for _, stmts := range sequence {
		for _, s := range stmts {
			if !strings.HasPrefix(s, "INSERT") && !strings.HasPrefix(s, "UPDATE") && !strings.HasPrefix(s, "DELETE") {
				ddls++
			}
		}
	}
	require.Equal(t, ddls, jobs, "finished DDL jobs")
	require.NoError(t, hist.AdvanceResolved(to))

	var events []*tidestreamv1.RawKVEvent
	for id := range ids {
		prefix := tablecodec.GenTableRecordPrefix(id)
		events = append(events, pg.ChangedRows(ctx, t, prefix, prefix.PrefixNext(), from, to)...)
	}
	slices.SortStableFunc(events, func(a, b *tidestreamv1.RawKVEvent) int {
		return cmp.Or(cmp.Compare(a.CommitTs, b.CommitTs), cmp.Compare(a.StartTs, b.StartTs), bytes.Compare(a.Key, b.Key))
	})

	m, err := mount.New(mount.Config{})
	require.NoError(t, err)
	f := &feed{hist: hist, skipped: map[string]int{}}
	for _, ev := range events {
		// The owner subscribes only eligible table versions' spans; a
		// version that is not is skipped here the same way.
		v, err := hist.Lookup(tablecodec.DecodeTableID(ev.Key), ev.CommitTs-1)
		if err == nil && v.Eligibility != schema.Eligible {
			f.skipped[v.Table.Name]++
			continue
		}
		f.rows, err = m.Mount(ev, hist, f.rows)
		require.NoError(t, err)
	}
	mount.OrderTxns(f.rows)
	return f
}

// newRegistry is srfake under a global compatibility level that it
// enforces. srfake stores levels but accepts every schema; a registration
// under BACKWARD is checked here, before srfake sees it, the way Confluent
// checks it: the new schema must read data written with the latest one,
// per hamba's implementation of Avro schema resolution.
func newRegistry(t *testing.T, level sr.CompatibilityLevel) *srfake.Registry {
	fake := srfake.New(srfake.WithGlobalCompat(level))
	t.Cleanup(fake.Close)
	h := fake.Handler()
	get := func(path string, into any) bool {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK {
			return false
		}
		if err := json.Unmarshal(rec.Body.Bytes(), into); err != nil {
			t.Errorf("registry answer to GET %s: %v", path, err)
			return false
		}
		return true
	}
	fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		subject, ok := strings.CutPrefix(r.URL.Path, "/subjects/")
		if !ok || r.Method != http.MethodPost {
			return false
		}
		if subject, ok = strings.CutSuffix(subject, "/versions"); !ok {
			return false
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return false
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		var level struct {
			Level sr.CompatibilityLevel `json:"compatibilityLevel"`
		}
		if !get("/config/"+url.PathEscape(subject)+"?defaultToGlobal=true", &level) || level.Level != sr.CompatBackward {
			return false // the test uses NONE and BACKWARD only
		}
		var latest, req struct {
			Schema string `json:"schema"`
		}
		if !get("/subjects/"+url.PathEscape(subject)+"/versions/latest", &latest) {
			return false // a first version is always compatible
		}
		// The server's goroutine must not stop the test (FailNow); an
		// unparsable schema lets srfake answer, and the test fails.
		if err := json.Unmarshal(body, &req); err != nil {
			t.Errorf("register request: %v", err)
			return false
		}
		reader, err := hamba.ParseWithCache(req.Schema, "", &hamba.SchemaCache{})
		if err != nil {
			t.Errorf("new schema of %s: %v", subject, err)
			return false
		}
		writer, err := hamba.ParseWithCache(latest.Schema, "", &hamba.SchemaCache{})
		if err != nil {
			t.Errorf("latest schema of %s: %v", subject, err)
			return false
		}
		if err := hamba.NewSchemaCompatibility().Compatible(reader, writer); err != nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusConflict)
			msg := fmt.Sprintf("Schema being registered is incompatible with the latest schema of subject %q (BACKWARD): %v", subject, err)
			_ = json.NewEncoder(w).Encode(map[string]any{"error_code": 409, "message": msg})
			return true
		}
		return false
	})
	return fake
}

// pipeline is the encode half of the encoder stage for one registry.
type pipeline struct {
	hist   *schema.History
	router *dispatch.Router
	reg    *registry.Client
	cl     *sr.Client // the consumer's and the test's own client
	codecs map[[2]int64]*avro.TableCodec
}

func newPipeline(t *testing.T, fake *srfake.Registry, router *dispatch.Router, hist *schema.History) *pipeline {
	reg, err := registry.New(registry.Config{URL: fake.URL()})
	require.NoError(t, err)
	t.Cleanup(reg.Close)
	cl, err := sr.NewClient(sr.URLs(fake.URL()))
	require.NoError(t, err)
	return &pipeline{hist: hist, router: router, reg: reg, cl: cl, codecs: map[[2]int64]*avro.TableCodec{}}
}

// record is one Kafka record as the producer would send it.
type record struct {
	topic      string
	key, value []byte
	row        *row.Row
	ddl        string // of the row's table version
}

// encode routes, registers and encodes one row. A registry refusal comes
// back as the stage would report it: naming the table and the DDL.
func (p *pipeline) encode(ctx context.Context, t *testing.T, r *row.Row) (record, error) {
	t.Helper()
	v, err := p.hist.Lookup(r.PhysicalID, r.CommitTs-1)
	require.NoError(t, err)
	require.Same(t, v.Table, r.Table, "mount used the version in force at commit ts - 1")
	ck := [2]int64{r.Table.ID, r.Table.Version}
	c := p.codecs[ck]
	if c == nil {
		c, err = avro.NewCodec(cfg, r.Table)
		require.NoError(t, err)
		p.codecs[ck] = c
	}
	topic, _, err := p.router.Route(r)
	require.NoError(t, err)
	table := r.Table.Schema + "." + r.Table.Name
	keyID, err := p.reg.IDFor(ctx, registry.TableKey{TableID: r.Table.ID, Version: r.Table.Version, Kind: registry.KeySchema},
		registry.KeySubject(topic), c.KeySchema())
	if err != nil {
		return record{}, registry.ForTable(err, registry.KeySchema, table, v.DDL)
	}
	rec := record{topic: topic, row: r, ddl: v.DDL}
	rec.key, err = c.AppendKey(nil, keyID, r)
	require.NoError(t, err)
	if r.Op == row.Delete {
		return rec, nil // a tombstone
	}
	valueID, err := p.reg.IDFor(ctx, registry.TableKey{TableID: r.Table.ID, Version: r.Table.Version, Kind: registry.ValueSchema},
		registry.ValueSubject(topic), c.ValueSchema())
	if err != nil {
		return record{}, registry.ForTable(err, registry.ValueSchema, table, v.DDL)
	}
	rec.value, err = c.AppendValue(nil, valueID, r)
	require.NoError(t, err)
	return rec, nil
}

// checkVersions checks each record's schema ids against the subject
// versions its table version's DDL calls for, and the subjects' final
// version lists.
func checkVersions(ctx context.Context, t *testing.T, cl *sr.Client, recs []record) {
	t.Helper()
	version := map[string]map[int]int{} // subject -> id -> version
	subjects, err := cl.Subjects(ctx)
	require.NoError(t, err)
	got := map[string]int{}
	for _, s := range subjects {
		ss, err := cl.Schemas(ctx, s)
		require.NoError(t, err)
		version[s] = map[int]int{}
		for i, x := range ss {
			require.Equal(t, i+1, x.Version, "%s versions are 1..n", s)
			version[s][x.ID] = x.Version
		}
		got[s] = len(ss)
	}
	require.Equal(t, wantSubjects, got)
	idOf := func(msg []byte) int { return int(binary.BigEndian.Uint32(msg[1:5])) }
	seen := map[[2]string]bool{}
	for _, rec := range recs {
		k := [2]string{rec.row.Table.Name, rec.ddl}
		want, ok := wantVersion[k]
		require.True(t, ok, "a record of %s at version %q", k[0], k[1])
		seen[k] = true
		require.Equal(t, want.topic, rec.topic, "%v", k)
		require.Equal(t, want.key, version[want.topic+"-key"][idOf(rec.key)], "%v: key version", k)
		if rec.value != nil {
			require.Equal(t, want.value, version[want.topic+"-value"][idOf(rec.value)], "%v: value version", k)
		}
	}
	for k := range wantVersion {
		require.True(t, seen[k], "no record of %s at version %q", k[0], k[1])
	}
	t.Logf("subject versions: %v", got)
}

// checkRecords decodes each record as a consumer would and compares it with
// SELECT at its commit ts (a delete: its key just before, and no row at).
func checkRecords(ctx context.Context, t *testing.T, cl *sr.Client, conn *sql.Conn, recs []record) {
	t.Helper()
	cons := avrotest.NewConsumer(cl)
	var compared int
	for _, rec := range recs {
		tbl := rec.row.Table
		key, keySchema := cons.Decode(ctx, t, rec.key)
		require.Equal(t, avro.SanitizeName(tbl.Name), keySchema.Name())
		require.Len(t, keySchema.Fields(), len(tbl.Key))
		var where []string
		var args []any
		for _, ci := range tbl.Key {
			col := tbl.Columns[ci]
			where = append(where, "`"+col.Name.O+"` = ?")
			args = append(args, key[col.Name.O])
		}
		ts := rec.row.CommitTs
		if rec.value == nil {
			ts--
		}
		what := fmt.Sprintf("%s %s at %d (%q) key %v", tbl.Name, rec.row.Op, rec.row.CommitTs, rec.ddl, key)
		names, got := selectAt(t, conn, ts, tbl, strings.Join(where, " AND "), args)
		// SELECT * at the ts shows the columns of the schema in force then.
		var want []string
		for _, c := range tbl.Columns {
			want = append(want, c.Name.O)
		}
		require.Equal(t, want, names, "%s: columns", what)
		require.Len(t, got, 1, what)
		for _, ci := range tbl.Key {
			compareField(t, what+" key", tbl.Columns[ci], got[0][ci], key[tbl.Columns[ci].Name.O])
		}
		if rec.value == nil {
			require.Equal(t, row.Delete, rec.row.Op, what)
			_, after := selectAt(t, conn, rec.row.CommitTs, tbl, strings.Join(where, " AND "), args)
			require.Empty(t, after, "%s: deleted", what)
			continue
		}
		value, valueSchema := cons.Decode(ctx, t, rec.value)
		require.Len(t, valueSchema.Fields(), len(tbl.Columns)+3, what)
		require.Equal(t, map[row.Op]string{row.Insert: "c", row.Update: "u"}[rec.row.Op], value["_tidb_op"], what)
		require.Equal(t, int64(rec.row.CommitTs), value["_tidb_commit_ts"], what)
		for i, col := range tbl.Columns {
			compareField(t, what+" "+col.Name.O, col, got[0][i], value[col.Name.O])
			compared++
		}
	}
	t.Logf("%d records, %d values compared with SELECT", len(recs), compared)
}

// selectAt returns the column names of SELECT * as of ts and its rows
// matching where.
func selectAt(t *testing.T, conn *sql.Conn, ts uint64, tbl *row.Table, where string, args []any) ([]string, [][]*string) {
	t.Helper()
	pgtest.Exec(t, conn, fmt.Sprintf("SET @@tidb_snapshot = '%d'", ts))
	defer pgtest.Exec(t, conn, "SET @@tidb_snapshot = ''")
	q := fmt.Sprintf("SELECT * FROM `%s`.`%s` WHERE %s", tbl.Schema, tbl.Name, where)
	rows, err := conn.QueryContext(context.Background(), q, args...)
	require.NoError(t, err, q)
	names, err := rows.Columns()
	require.NoError(t, err)
	require.NoError(t, rows.Close())
	return names, pgtest.Query(t, conn, q, args...)
}

// compareField checks a decoded value against SELECT's text, for the
// column types the sequence uses.
func compareField(t *testing.T, what string, col *model.ColumnInfo, sel *string, got any) {
	t.Helper()
	if sel == nil {
		require.Nil(t, got, what)
		return
	}
	switch col.GetType() {
	case mysql.TypeLong:
		want, err := strconv.Atoi(*sel)
		require.NoError(t, err, what)
		require.Equal(t, want, got, what)
	case mysql.TypeLonglong:
		want, err := strconv.ParseInt(*sel, 10, 64)
		require.NoError(t, err, what)
		require.Equal(t, want, got, what)
	case mysql.TypeVarchar:
		require.Equal(t, *sel, got, what)
	default:
		t.Fatalf("%s: column type %d not used by the sequence", what, col.GetType())
	}
}
