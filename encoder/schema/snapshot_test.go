package schema

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/pingcap/tidb/pkg/meta/model"
	"github.com/pingcap/tidb/pkg/tablecodec"
	"github.com/stretchr/testify/require"
	"github.com/tikv/client-go/v2/config"

	"github.com/tidestream/tidestream/encoder/internal/pgtest"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// TestSnapshotAgainstTiDB builds a snapshot through client-go against a real
// TiDB (the playground) and checks it against information_schema, then
// checks that a DDL after S is invisible at S and visible at a later ts.
func TestSnapshotAgainstTiDB(t *testing.T) {
	pg := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	db := pg.DB(t, nil)
	exec := func(q string) {
		t.Helper()
		pgtest.Exec(t, db, q)
	}
	for _, q := range []string{
		"CREATE DATABASE s1",
		"CREATE DATABASE s2",
		"CREATE TABLE s1.a (id BIGINT PRIMARY KEY, v VARCHAR(10))",
		"CREATE TABLE s1.nokey (a INT, b INT)",
		"CREATE TABLE s1.uk (a INT NOT NULL, b INT, UNIQUE KEY (a))",
		"CREATE TABLE s1.r (id INT NOT NULL, v INT, PRIMARY KEY (id) NONCLUSTERED) PARTITION BY RANGE (id) (PARTITION p0 VALUES LESS THAN (10), PARTITION p1 VALUES LESS THAN (20), PARTITION p2 VALUES LESS THAN (30))",
		"CREATE TABLE s2.h (k VARCHAR(20) PRIMARY KEY CLUSTERED, n INT) PARTITION BY KEY (k) PARTITIONS 4",
		"CREATE VIEW s1.v AS SELECT id FROM s1.a",
		"CREATE TABLE s2.gone (id INT PRIMARY KEY)",
		// Some history before S: ids change, columns come and go.
		"TRUNCATE TABLE s1.a",
		"ALTER TABLE s1.a ADD COLUMN w INT",
		"ALTER TABLE s1.r TRUNCATE PARTITION p1",
		"ALTER TABLE s1.r ADD PARTITION (PARTITION p3 VALUES LESS THAN (40))",
		"RENAME TABLE s1.uk TO s2.uk2",
		"DROP TABLE s2.gone",
	} {
		exec(q)
	}

	cli, err := OpenStore(ctx, []string{pg.PDAddr}, config.Security{})
	require.NoError(t, err)
	defer func() { require.NoError(t, cli.Close()) }()

	s, err := cli.CurrentTS(ctx)
	require.NoError(t, err)
	snap, err := LoadSnapshot(ctx, cli, s, 2)
	require.NoError(t, err)
	require.Equal(t, s, snap.Ts)
	require.Positive(t, snap.SchemaVersion)

	// Databases: every one information_schema lists, system ones included.
	var wantDBs, gotDBs []string
	for _, r := range pgtest.Strings(t, db, "SELECT SCHEMA_NAME FROM information_schema.schemata") {
		if r[0] == "INFORMATION_SCHEMA" || r[0] == "PERFORMANCE_SCHEMA" || r[0] == "METRICS_SCHEMA" {
			continue // memory tables, not in meta
		}
		wantDBs = append(wantDBs, r[0])
	}
	for _, d := range snap.DBs {
		gotDBs = append(gotDBs, d.Name.O)
	}
	require.ElementsMatch(t, wantDBs, gotDBs)

	// Tables with ids and types, for every non-system database.
	type tbl struct {
		schema, name, kind string
		id                 int64
	}
	var want, got []tbl
	for _, r := range pgtest.Strings(t, db, "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE, TIDB_TABLE_ID FROM information_schema.tables "+
		"WHERE TABLE_SCHEMA NOT IN ('mysql','sys','INFORMATION_SCHEMA','PERFORMANCE_SCHEMA','METRICS_SCHEMA')") {
		id, err := strconv.ParseInt(r[3], 10, 64)
		require.NoError(t, err)
		kind := "table"
		if r[2] == "VIEW" {
			kind = "view"
		}
		want = append(want, tbl{r[0], r[1], kind, id})
	}
	names := map[int64]string{}
	for _, d := range snap.DBs {
		names[d.ID] = d.Name.O
	}
	for dbID, tables := range snap.Tables {
		for _, ti := range tables {
			kind := "table"
			if ti.IsView() {
				kind = "view"
			}
			require.Equal(t, dbID, ti.DBID)
			got = append(got, tbl{names[dbID], ti.Name.O, kind, ti.ID})
		}
	}
	require.ElementsMatch(t, want, got)
	require.GreaterOrEqual(t, len(got), 6)

	// Partitions with their physical ids.
	type part struct {
		table, name string
		id          int64
	}
	var wantParts, gotParts []part
	for _, r := range pgtest.Strings(t, db, "SELECT TABLE_NAME, PARTITION_NAME, TIDB_PARTITION_ID FROM information_schema.partitions "+
		"WHERE TABLE_SCHEMA IN ('s1','s2') AND PARTITION_NAME IS NOT NULL") {
		id, err := strconv.ParseInt(r[2], 10, 64)
		require.NoError(t, err)
		wantParts = append(wantParts, part{r[0], r[1], id})
	}
	for _, tables := range snap.Tables {
		for _, ti := range tables {
			if pi := ti.GetPartitionInfo(); pi != nil {
				for _, d := range pi.Definitions {
					gotParts = append(gotParts, part{ti.Name.O, d.Name.O, d.ID})
				}
			}
		}
	}
	require.ElementsMatch(t, wantParts, gotParts)
	require.Len(t, gotParts, 8)

	// Columns of one table, in order.
	rows := pgtest.Strings(t, db, "SELECT COLUMN_NAME FROM information_schema.columns WHERE TABLE_SCHEMA='s1' AND TABLE_NAME='a' ORDER BY ORDINAL_POSITION")
	h, err := New(snap, Options{})
	require.NoError(t, err)
	a := lookupByName(t, h, snap, "s1", "a")
	var cols []string
	for _, c := range a.Table.Columns {
		cols = append(cols, c.Name.O)
	}
	require.Equal(t, []string{"id", "v", "w"}, cols)
	require.Equal(t, [][]string{{"id"}, {"v"}, {"w"}}, rows)

	// Eligibility and partition mapping through the history.
	require.Equal(t, Eligible, a.Eligibility)
	require.Equal(t, NoHandleKey, lookupByName(t, h, snap, "s1", "nokey").Eligibility)
	require.Equal(t, Eligible, lookupByName(t, h, snap, "s2", "uk2").Eligibility)
	require.Equal(t, View, lookupByName(t, h, snap, "s1", "v").Eligibility)
	for _, p := range wantParts {
		v, err := h.Lookup(p.id, s)
		require.NoError(t, err)
		require.Equal(t, p.table, v.Table.Name)
		require.Equal(t, Eligible, v.Eligibility, p.table)
	}

	// The DDL job table, for the job decoder.
	require.NotNil(t, snap.JobTable)
	require.Equal(t, JobTableID, snap.JobTable.ID)
	_, err = NewJobDecoder(snap.JobTable)
	require.NoError(t, err)

	// Snapshot isolation: a DDL after S is not in the snapshot at S.
	exec("ALTER TABLE s1.a ADD COLUMN late INT")
	again, err := LoadSnapshot(ctx, cli, s, 0)
	require.NoError(t, err)
	require.Len(t, findTable(t, again, "s1", "a").Columns, 3)
	require.Equal(t, snap.SchemaVersion, again.SchemaVersion)
	s2, err := cli.CurrentTS(ctx)
	require.NoError(t, err)
	later, err := LoadSnapshot(ctx, cli, s2, 0)
	require.NoError(t, err)
	require.Len(t, findTable(t, later, "s1", "a").Columns, 4)
	require.Greater(t, later.SchemaVersion, snap.SchemaVersion)

	// A cancelled context stops the scan.
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	_, err = LoadSnapshot(cctx, cli, s2, 0)
	require.ErrorIs(t, err, context.Canceled)
}

func findTable(t *testing.T, snap *Snapshot, schema, name string) *model.TableInfo {
	t.Helper()
	for _, d := range snap.DBs {
		if d.Name.O != schema {
			continue
		}
		i := slices.IndexFunc(snap.Tables[d.ID], func(ti *model.TableInfo) bool { return ti.Name.O == name })
		if i >= 0 {
			return snap.Tables[d.ID][i]
		}
	}
	t.Fatalf("%s.%s not in snapshot", schema, name)
	return nil
}

func lookupByName(t *testing.T, h *History, snap *Snapshot, schema, name string) *Version {
	t.Helper()
	ti := findTable(t, snap, schema, name)
	v, err := h.Lookup(ti.ID, snap.Ts)
	require.NoError(t, err, fmt.Sprintf("%s.%s", schema, name))
	return v
}

// TestHistoryReplaysTiDBJobs runs real DDLs of every kind after a snapshot at
// S, replays the finished jobs TiDB recorded through the history, and checks
// that the history at S2 equals a fresh snapshot at S2. This tests the
// application rules against the BinlogInfo shapes TiDB really writes.
//
// The jobs are the committed versions of the tidb_ddl_job span read through
// TiKV's change-data endpoint from S, as the puller will read them, decoded
// by JobDecoder: the whole raw-KV-to-history chain.
func TestHistoryReplaysTiDBJobs(t *testing.T) {
	pg := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	db := pg.DB(t, nil)
	exec := func(qs ...string) {
		t.Helper()
		pgtest.Exec(t, db, qs...)
	}
	exec(
		"CREATE DATABASE s1",
		"CREATE DATABASE s2",
		"CREATE TABLE s1.a (id BIGINT PRIMARY KEY, v VARCHAR(10), w INT)",
		"CREATE TABLE s1.nokey (a INT, b INT)",
		"CREATE TABLE s2.uk (a INT NOT NULL, b INT, UNIQUE KEY (a))",
		"CREATE TABLE s1.r (id INT NOT NULL, v INT, PRIMARY KEY (id) NONCLUSTERED) PARTITION BY RANGE (id) (PARTITION p0 VALUES LESS THAN (10), PARTITION p1 VALUES LESS THAN (20), PARTITION p2 VALUES LESS THAN (30), PARTITION p3 VALUES LESS THAN (40))",
		"CREATE TABLE s2.h (k VARCHAR(20) PRIMARY KEY CLUSTERED, n INT) PARTITION BY KEY (k) PARTITIONS 4",
		"CREATE VIEW s1.v AS SELECT id FROM s1.a",
	)

	store, err := OpenStore(ctx, []string{pg.PDAddr}, config.Security{})
	require.NoError(t, err)
	defer func() { require.NoError(t, store.Close()) }()
	s, err := store.CurrentTS(ctx)
	require.NoError(t, err)
	snap, err := LoadSnapshot(ctx, store, s, 0)
	require.NoError(t, err)
	h, err := New(snap, Options{})
	require.NoError(t, err)
	oldIDs := map[string]int64{}
	for _, name := range []string{"a", "r", "v"} {
		oldIDs["s1."+name] = findTable(t, snap, "s1", name).ID
	}
	oldIDs["s2.h"] = findTable(t, snap, "s2", "h").ID
	oldIDs["s2.uk"] = findTable(t, snap, "s2", "uk").ID
	var oldParts []int64
	for _, d := range findTable(t, snap, "s1", "r").Partition.Definitions {
		oldParts = append(oldParts, d.ID)
	}

	exec(
		"CREATE TABLE s1.n (id INT PRIMARY KEY)",
		"CREATE TABLE s1.ex (id INT NOT NULL, v INT, PRIMARY KEY (id) NONCLUSTERED)",
		"ALTER TABLE s1.a ADD INDEX iv (v)",
		"ALTER TABLE s1.a DROP COLUMN w",
		"ALTER TABLE s1.a MODIFY COLUMN v VARCHAR(20)",
		"ALTER TABLE s1.a MODIFY COLUMN v BIGINT",
		"ALTER TABLE s1.a ADD COLUMN c1 INT, ADD COLUMN c2 INT",
		"ALTER TABLE s1.nokey MODIFY a INT NOT NULL",
		"ALTER TABLE s1.nokey ADD UNIQUE KEY ua (a)",
		"TRUNCATE TABLE s2.uk",
		"RENAME TABLE s1.n TO s2.n2, s2.uk TO s1.uk3",
		"RENAME TABLE s1.uk3 TO s1.uk4",
		"ALTER TABLE s1.r DROP PARTITION p0",
		"ALTER TABLE s1.r TRUNCATE PARTITION p2",
		"ALTER TABLE s1.r REORGANIZE PARTITION p1, p2 INTO (PARTITION p12 VALUES LESS THAN (30))",
		"ALTER TABLE s1.r ADD PARTITION (PARTITION p4 VALUES LESS THAN (50))",
		"ALTER TABLE s1.r EXCHANGE PARTITION p3 WITH TABLE s1.ex",
		"ALTER TABLE s2.h REMOVE PARTITIONING",
		"ALTER TABLE s1.a PARTITION BY HASH (id) PARTITIONS 2",
		"DROP VIEW s1.v",
		"CREATE VIEW s1.v2 AS SELECT 1 AS x",
		"CREATE OR REPLACE VIEW s1.v2 AS SELECT 2 AS y",
		"CREATE DATABASE s3",
		"CREATE TABLE s3.t (id INT PRIMARY KEY)",
		"DROP DATABASE s3",
		"CREATE TABLE s1.d (id INT PRIMARY KEY)",
		"DROP TABLE s1.d",
	)
	s2, err := store.CurrentTS(ctx)
	require.NoError(t, err)

	// The job span's committed versions in (S, S2], as the puller would
	// deliver them, through the job decoder.
	dec, err := NewJobDecoder(snap.JobTable)
	require.NoError(t, err)
	var jobs int
	doneAt := map[model.ActionType]uint64{}
	prefix := tablecodec.GenTableRecordPrefix(JobTableID)
	rows := pg.ChangedRows(ctx, t, prefix, prefix.PrefixNext(), s, s2)
	// Everything twice, as after a region error: the history deduplicates.
	for _, ev := range append(rows, rows...) {
		if ev.Op != tidestreamv1.OpType_OP_TYPE_PUT {
			continue
		}
		j, err := dec.Decode(ev.Key, ev.Value, ev.StartTs, ev.CommitTs)
		require.NoError(t, err)
		if j == nil {
			continue
		}
		jobs++
		doneAt[j.Type] = ev.CommitTs
		require.NoError(t, h.AddJob(JobEvent{Job: j, CommitTs: ev.CommitTs}))
	}
	require.GreaterOrEqual(t, jobs, 2*27)
	require.NoError(t, h.AdvanceResolved(s2))

	want, err := LoadSnapshot(ctx, store, s2, 0)
	require.NoError(t, err)
	wantH, err := New(want, Options{})
	require.NoError(t, err)
	gotTables, err := h.Tables(s2)
	require.NoError(t, err)
	wantTables, err := wantH.Tables(s2)
	require.NoError(t, err)
	require.Equal(t, describe(wantTables), describe(gotTables))

	// Every physical id of the fresh snapshot resolves to the same table.
	for _, v := range wantTables {
		for _, id := range PhysicalIDs(v.Table.Info) {
			got, err := h.Lookup(id, s2)
			require.NoError(t, err, "id %d of %s.%s", id, v.Table.Schema, v.Table.Name)
			require.Equal(t, v.LogicalID, got.LogicalID)
		}
	}
	// Old ids are dropped, not unknown, and resolve to the old state at S.
	_, err = h.TableAt(oldIDs["s1.a"], s2)
	require.ErrorIs(t, err, ErrDropped, "repartitioned")
	_, err = h.TableAt(oldIDs["s2.h"], s2)
	require.ErrorIs(t, err, ErrDropped, "partitioning removed")
	_, err = h.TableAt(oldIDs["s1.v"], s2)
	require.ErrorIs(t, err, ErrDropped)
	_, err = h.TableAt(oldParts[0], s2)
	require.ErrorIs(t, err, ErrDropped, "p0 dropped")
	at(t, h, oldParts[0], s, "s1", "r")
	// The exchanged partition's id holds s1.r's rows up to the Done row's
	// commit ts − 1 and s1.ex's from it on.
	d := doneAt[model.ActionExchangeTablePartition]
	require.NotZero(t, d)
	at(t, h, oldParts[3], d-1, "s1", "r")
	at(t, h, oldParts[3], d, "s1", "ex")
	at(t, h, oldParts[3], s2, "s1", "ex")
	// TRUNCATE TABLE s2.uk: the old id is truncated exactly at its Done ts.
	d = doneAt[model.ActionTruncateTable]
	require.NotZero(t, d)
	at(t, h, oldIDs["s2.uk"], d-1, "s2", "uk")
	gone(t, h, oldIDs["s2.uk"], d, Truncated)
	require.Equal(t, Eligible, lookupByName(t, h, want, "s1", "nokey").Eligibility)
}

// describe renders tables for comparison: names, ids, partitions, visible
// columns, handle key and eligibility; not the schema versions, which differ
// between a replayed history and a fresh snapshot by design.
func describe(vs []*Version) []string {
	var out []string
	for _, v := range vs {
		t := v.Table
		var cols []string
		for _, c := range t.Columns {
			cols = append(cols, fmt.Sprintf("%s#%d:%s", c.Name.O, c.ID, c.FieldType.String()))
		}
		out = append(out, fmt.Sprintf("%s.%s id=%d schema=%d phys=%v cols=%v key=%v %s",
			t.Schema, t.Name, t.ID, v.SchemaID, PhysicalIDs(t.Info), cols, t.Key, v.Eligibility))
	}
	return out
}
