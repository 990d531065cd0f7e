package schema

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/pingcap/log"
	"github.com/pingcap/tidb/pkg/meta/model"
	pmodel "github.com/pingcap/tidb/pkg/parser/model"
	"github.com/pingcap/tidb/pkg/parser/mysql"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// client-go and the pd client log through pingcap/log's global zap
	// logger at INFO; keep test output to warnings. Test-only: the package
	// itself never touches that global.
	if lg, props, err := log.InitLogger(&log.Config{Level: "warn"}); err == nil {
		log.ReplaceGlobals(lg, props)
	}
	goleak.VerifyTestMain(m)
}

func TestSnapshotLookups(t *testing.T) {
	h := newHistory(t, Options{Filter: func(schema, table string) bool { return table != "skipped" }},
		keyed(101, "t1"),
		partitioned(102, "pt", 1021, 1022),
		keyless(103, "nokey"),
		view(104, "v"),
		keyed(105, "skipped"),
	)
	require.Equal(t, uint64(snapTs), h.Resolved())

	v := at(t, h, 101, snapTs, "test", "t1")
	require.Equal(t, Eligible, v.Eligibility)
	require.Equal(t, int64(10), v.Table.Version, "snapshot versions carry the snapshot's schema version")
	require.Equal(t, uint64(snapTs), v.Since)

	// Partitions map to their logical table, and so does the logical id.
	for _, id := range []int64{102, 1021, 1022} {
		v := at(t, h, id, snapTs, "test", "pt")
		require.Equal(t, int64(102), v.LogicalID)
		require.Equal(t, int64(102), v.Table.ID)
	}

	require.Equal(t, NoHandleKey, at(t, h, 103, snapTs, "test", "nokey").Eligibility)
	require.Equal(t, View, at(t, h, 104, snapTs, "test", "v").Eligibility)
	require.Equal(t, Filtered, at(t, h, 105, snapTs, "test", "skipped").Eligibility)

	unknown(t, h, 999, snapTs)
	_, err := h.TableAt(101, snapTs-1)
	require.ErrorIs(t, err, ErrTooOld)
	_, err = h.TableAt(101, snapTs+1)
	require.ErrorIs(t, err, ErrNotResolved)

	tables, err := h.Tables(snapTs)
	require.NoError(t, err)
	var ids []int64
	for _, v := range tables {
		ids = append(ids, v.LogicalID)
	}
	require.Equal(t, []int64{101, 102, 103, 104, 105}, ids, "one entry per logical table, partitions folded")
}

func TestSystemSchemaTablesAreNotTracked(t *testing.T) {
	h := newHistory(t, Options{})
	// A table created in mysql never becomes visible.
	applyAt(t, h, job(model.ActionCreateTable, 3, 110, 11, keyed(110, "sys")), 1010)
	unknown(t, h, 110, 1010)
	// Nor does an alter of one.
	applyAt(t, h, job(model.ActionAddColumn, 3, 110, 12, keyed(110, "sys")), 1020)
	unknown(t, h, 110, 1020)

	for _, s := range []string{"mysql", "INFORMATION_SCHEMA", "performance_schema", "sys", "metrics_schema", "tidb_cdc", "lightning_task_info", "workload_schema"} {
		require.True(t, IsSystemSchema(s), s)
	}
	require.False(t, IsSystemSchema("test"))
}

func TestCreateAndDropTable(t *testing.T) {
	h := newHistory(t, Options{})
	applyAt(t, h, job(model.ActionCreateTable, 1, 110, 11, keyed(110, "t")), 1010)
	unknown(t, h, 110, 1009)
	v := at(t, h, 110, 1010, "test", "t")
	require.Equal(t, int64(11), v.Table.Version)
	require.Equal(t, uint64(1010), v.Since)

	applyAt(t, h, job(model.ActionDropTable, 1, 110, 12, nil), 1020)
	at(t, h, 110, 1019, "test", "t")
	gone(t, h, 110, 1020, Dropped)
	gone(t, h, 110, 1030-10, Dropped)
}

func TestCreateAndDropViewAndSequence(t *testing.T) {
	h := newHistory(t, Options{})
	applyAt(t, h, job(model.ActionCreateView, 1, 110, 11, view(110, "v")), 1010)
	require.Equal(t, View, at(t, h, 110, 1010, "test", "v").Eligibility)
	seq := keyless(111, "s")
	seq.Sequence = &model.SequenceInfo{Start: 1, Increment: 1}
	applyAt(t, h, job(model.ActionCreateSequence, 1, 111, 12, seq), 1020)
	require.Equal(t, Sequence, at(t, h, 111, 1020, "test", "s").Eligibility)

	// CREATE OR REPLACE VIEW: the new definition gets a new id.
	applyAt(t, h, job(model.ActionCreateView, 1, 112, 13, view(112, "V")), 1030)
	gone(t, h, 110, 1030, Dropped)
	require.Equal(t, View, at(t, h, 112, 1030, "test", "V").Eligibility)

	applyAt(t, h, job(model.ActionDropView, 1, 112, 15, nil), 1035)
	gone(t, h, 112, 1035, Dropped)
	applyAt(t, h, job(model.ActionDropSequence, 1, 111, 14, nil), 1040)
	gone(t, h, 111, 1040, Dropped)
}

func TestCreateTables(t *testing.T) {
	h := newHistory(t, Options{})
	j := job(model.ActionCreateTables, 1, 0, 11, nil)
	j.BinlogInfo.MultipleTableInfos = []*model.TableInfo{keyed(110, "a"), partitioned(111, "b", 1111)}
	applyAt(t, h, j, 1010)
	unknown(t, h, 110, 1009)
	at(t, h, 110, 1010, "test", "a")
	at(t, h, 1111, 1010, "test", "b")
}

func TestTruncateTable(t *testing.T) {
	h := newHistory(t, Options{}, keyed(101, "t"), partitioned(102, "pt", 1021, 1022))

	applyAt(t, h, job(model.ActionTruncateTable, 1, 101, 11, keyed(110, "t")), 1010)
	at(t, h, 101, 1009, "test", "t")
	unknown(t, h, 110, 1009)
	gone(t, h, 101, 1010, Truncated)
	require.Equal(t, int64(110), at(t, h, 110, 1010, "test", "t").Table.ID)

	// Partitioned: every partition gets a new id.
	applyAt(t, h, job(model.ActionTruncateTable, 1, 102, 12, partitioned(120, "pt", 1201, 1202)), 1020)
	for _, id := range []int64{102, 1021, 1022} {
		at(t, h, id, 1019, "test", "pt")
		gone(t, h, id, 1020, Truncated)
	}
	for _, id := range []int64{120, 1201, 1202} {
		unknown(t, h, id, 1019)
		require.Equal(t, int64(120), at(t, h, id, 1020, "test", "pt").LogicalID)
	}
}

func TestRenameTable(t *testing.T) {
	h := newHistory(t, Options{Filter: func(schema, _ string) bool { return schema == "test" }},
		partitioned(102, "pt", 1021))

	// Cross-database rename: job.SchemaID is the target database.
	renamed := partitioned(102, "pt2", 1021)
	applyAt(t, h, job(model.ActionRenameTable, 2, 102, 11, renamed), 1010)
	v := at(t, h, 1021, 1009, "test", "pt")
	require.Equal(t, Eligible, v.Eligibility)
	v = at(t, h, 1021, 1010, "other", "pt2")
	require.Equal(t, Filtered, v.Eligibility, "renamed out of the filter: the owner stops its spans")
	require.Equal(t, int64(2), v.SchemaID)

	// An alter after the rename keeps the new database.
	applyAt(t, h, job(model.ActionAddColumn, 2, 102, 12, partitioned(102, "pt2", 1021)), 1020)
	at(t, h, 1021, 1020, "other", "pt2")

	// Renamed into a system schema: no longer tracked, rows are strays.
	applyAt(t, h, job(model.ActionRenameTable, 3, 102, 13, partitioned(102, "pt2", 1021)), 1030)
	gone(t, h, 1021, 1030, MovedOut)
	gone(t, h, 102, 1030, MovedOut)
}

func TestRenameTables(t *testing.T) {
	for _, jv := range []model.JobVersion{model.JobVersion1, model.JobVersion2} {
		t.Run(jv.String(), func(t *testing.T) {
			h := newHistory(t, Options{}, keyed(101, "a"), keyed(102, "b"))
			// RENAME TABLE a TO c, b TO a, c TO b: a cyclic swap through c.
			// MultipleTableInfos are the states after all renames, so id
			// 101 appears twice and its last occurrence (b) is final.
			j := job(model.ActionRenameTables, 1, 0, 11, nil)
			j.Version = jv
			j.FillArgs(&model.RenameTablesArgs{RenameTableInfos: []*model.RenameTableArgs{
				{OldSchemaID: 1, NewSchemaID: 1, TableID: 101, OldTableName: pmodel.NewCIStr("a"), NewTableName: pmodel.NewCIStr("c"), OldSchemaName: pmodel.NewCIStr("test")},
				{OldSchemaID: 1, NewSchemaID: 2, TableID: 102, OldTableName: pmodel.NewCIStr("b"), NewTableName: pmodel.NewCIStr("a"), OldSchemaName: pmodel.NewCIStr("test")},
				{OldSchemaID: 1, NewSchemaID: 1, TableID: 101, OldTableName: pmodel.NewCIStr("c"), NewTableName: pmodel.NewCIStr("b"), OldSchemaName: pmodel.NewCIStr("test")},
			}})
			j.BinlogInfo.MultipleTableInfos = []*model.TableInfo{keyed(101, "b"), keyed(102, "a"), keyed(101, "b")}
			applyAt(t, h, roundTrip(t, j), 1010)
			at(t, h, 101, 1009, "test", "a")
			at(t, h, 102, 1009, "test", "b")
			at(t, h, 101, 1010, "test", "b")
			at(t, h, 102, 1010, "other", "a")
		})
	}
}

func TestColumnAndIndexChanges(t *testing.T) {
	h := newHistory(t, Options{}, keyless(101, "t"))
	require.Equal(t, NoHandleKey, at(t, h, 101, snapTs, "test", "t").Eligibility)

	// ADD COLUMN c
	t1 := keyless(101, "t")
	t1.Columns = append(t1.Columns, column(3, "c", 0))
	applyAt(t, h, job(model.ActionAddColumn, 1, 101, 11, t1), 1010)
	require.Len(t, at(t, h, 101, 1009, "test", "t").Table.Columns, 2)
	v := at(t, h, 101, 1010, "test", "t")
	require.Len(t, v.Table.Columns, 3)
	require.Equal(t, int64(11), v.Table.Version)

	// ADD UNIQUE INDEX on the NOT NULL column a: the table gains a handle key.
	t2 := t1.Clone()
	t2.Indices = []*model.IndexInfo{{ID: 1, Name: pmodel.NewCIStr("uk"), Unique: true, State: model.StatePublic,
		Columns: []*model.IndexColumn{{Name: pmodel.NewCIStr("a"), Offset: 0}}}}
	applyAt(t, h, job(model.ActionAddIndex, 1, 101, 12, t2), 1020)
	require.Equal(t, NoHandleKey, at(t, h, 101, 1019, "test", "t").Eligibility)
	v = at(t, h, 101, 1020, "test", "t")
	require.Equal(t, Eligible, v.Eligibility)
	require.Equal(t, []int{0}, v.Table.Key)

	// MODIFY COLUMN with reorg: a new column id replaces c.
	t3 := t2.Clone()
	t3.Columns[2] = column(3, "c", mysql.NotNullFlag)
	t3.Columns[2].ID = 4
	applyAt(t, h, job(model.ActionModifyColumn, 1, 101, 13, t3), 1030)
	require.Equal(t, int64(3), at(t, h, 101, 1029, "test", "t").Table.Columns[2].ID)
	require.Equal(t, int64(4), at(t, h, 101, 1030, "test", "t").Table.Columns[2].ID)

	// DROP INDEX: ineligible again.
	t4 := t3.Clone()
	t4.Indices = nil
	applyAt(t, h, job(model.ActionDropIndex, 1, 101, 14, t4), 1040)
	require.Equal(t, NoHandleKey, at(t, h, 101, 1040, "test", "t").Eligibility)

	// DROP COLUMN b, then a multi-schema change; kinds without a dedicated
	// rule replace the TableInfo too.
	t5 := t4.Clone()
	t5.Columns = []*model.ColumnInfo{t4.Columns[0], t4.Columns[2]}
	t5.Columns[1].Offset = 1
	applyAt(t, h, job(model.ActionDropColumn, 1, 101, 15, t5), 1050)
	require.Len(t, at(t, h, 101, 1050, "test", "t").Table.Columns, 2)
	t6 := t5.Clone()
	t6.Comment = "x"
	applyAt(t, h, job(model.ActionMultiSchemaChange, 1, 101, 16, t6), 1060)
	require.Equal(t, "x", at(t, h, 101, 1060, "test", "t").Table.Info.Comment)
	require.Equal(t, int64(16), at(t, h, 101, 1060, "test", "t").Table.Version)
}

func TestPartitionChanges(t *testing.T) {
	h := newHistory(t, Options{}, partitioned(102, "pt", 1021, 1022))

	// ADD PARTITION
	applyAt(t, h, job(model.ActionAddTablePartition, 1, 102, 11, partitioned(102, "pt", 1021, 1022, 1023)), 1010)
	// Before its DDL finished a new partition's id decodes as its table
	// (TestPartitionRowsBeforeTheirDDLFinished).
	require.Equal(t, int64(102), at(t, h, 1023, 1009, "test", "pt").LogicalID)
	at(t, h, 1023, 1010, "test", "pt")

	// DROP PARTITION
	applyAt(t, h, job(model.ActionDropTablePartition, 1, 102, 12, partitioned(102, "pt", 1021, 1023)), 1020)
	at(t, h, 1022, 1019, "test", "pt")
	gone(t, h, 1022, 1020, Dropped)
	at(t, h, 1021, 1020, "test", "pt")

	// TRUNCATE PARTITION: 1021 is replaced by 1024.
	applyAt(t, h, job(model.ActionTruncateTablePartition, 1, 102, 13, partitioned(102, "pt", 1024, 1023)), 1030)
	gone(t, h, 1021, 1030, Truncated)
	at(t, h, 1024, 1029, "test", "pt")
	at(t, h, 1024, 1030, "test", "pt")

	// REORGANIZE PARTITION: 1023 and 1024 become 1025.
	applyAt(t, h, job(model.ActionReorganizePartition, 1, 102, 14, partitioned(102, "pt", 1025)), 1040)
	gone(t, h, 1023, 1040, Replaced)
	gone(t, h, 1024, 1040, Replaced)
	at(t, h, 1025, 1040, "test", "pt")
	at(t, h, 102, 1040, "test", "pt")

	// ALTER TABLE … PARTITION BY: the logical table gets a new id too.
	applyAt(t, h, job(model.ActionAlterTablePartitioning, 1, 102, 15, partitioned(103, "pt", 1031, 1032)), 1050)
	gone(t, h, 102, 1050, Replaced)
	gone(t, h, 1025, 1050, Replaced)
	require.Equal(t, int64(103), at(t, h, 1031, 1050, "test", "pt").LogicalID)

	// REMOVE PARTITIONING: a plain table under a new id.
	applyAt(t, h, job(model.ActionRemovePartitioning, 1, 103, 16, keyed(104, "pt")), 1060)
	for _, id := range []int64{103, 1031, 1032} {
		gone(t, h, id, 1060, Replaced)
	}
	at(t, h, 104, 1060, "test", "pt")
}

// TestPartitionRowsBeforeTheirDDLFinished: TiDB writes rows into the new
// partition ids of TRUNCATE PARTITION (from StateDeleteOnly, real rows) and
// REORGANIZE PARTITION (double writes and backfill, from StateWriteOnly)
// before the job's finished ts. Such a row decodes with its table's
// version at its ts; a row of an id that never became a partition, or of
// one whose table is not live at the ts, stays unknown.
func TestPartitionRowsBeforeTheirDDLFinished(t *testing.T) {
	h := newHistory(t, Options{}, partitioned(102, "pt", 1021, 1022), keyed(110, "plain"))
	before := partitioned(102, "pt", 1021, 1022)
	before.Comment = "before"
	applyAt(t, h, job(model.ActionModifyTableComment, 1, 102, 11, before), 1005)

	// TRUNCATE PARTITION: 1021 → 1023, finished at 1020.
	applyAt(t, h, job(model.ActionTruncateTablePartition, 1, 102, 12, partitioned(102, "pt", 1023, 1022)), 1020)
	v := at(t, h, 1023, 1010, "test", "pt")
	require.Equal(t, int64(102), v.LogicalID)
	require.Equal(t, uint64(1005), v.Since, "the table's version at the row's ts")
	require.Equal(t, "before", v.Table.Info.Comment)
	at(t, h, 1021, 1019, "test", "pt") // the old id is live until the DDL
	gone(t, h, 1021, 1020, Truncated)

	// REORGANIZE PARTITION: 1022 and 1023 → 1024, finished at 1040.
	applyAt(t, h, job(model.ActionReorganizePartition, 1, 102, 13, partitioned(102, "pt", 1024)), 1040)
	require.Equal(t, uint64(1020), at(t, h, 1024, 1030, "test", "pt").Since)

	// Never a partition, or its table gone at the ts: unknown.
	unknown(t, h, 1099, 1030)
	applyAt(t, h, job(model.ActionDropTable, 1, 102, 14, nil), 1050)
	applyAt(t, h, job(model.ActionCreateTable, 1, 120, 15, partitioned(120, "pt2", 1201)), 1060)
	unknown(t, h, 1201, 1055)
	unknown(t, h, 120, 1055)
}

func TestExchangePartition(t *testing.T) {
	h := newHistory(t, Options{}, partitioned(102, "pt", 1021, 1022), keyed(110, "nt"))
	// Exchange partition 1021 with nt (id 110): pt's definitions now list
	// 110, and nt lives on under id 1021.
	j := job(model.ActionExchangeTablePartition, 1, 110, 11, partitioned(102, "pt", 110, 1022))
	j.FillArgs(&model.ExchangeTablePartitionArgs{PartitionID: 1021, PTSchemaID: 1, PTTableID: 102, PartitionName: "p1"})
	applyAt(t, h, roundTrip(t, j), 1010)

	at(t, h, 1021, 1009, "test", "pt")
	at(t, h, 110, 1009, "test", "nt")

	v := at(t, h, 1021, 1010, "test", "nt")
	require.Equal(t, int64(1021), v.LogicalID)
	require.Equal(t, int64(1021), v.Table.ID)
	v = at(t, h, 110, 1010, "test", "pt")
	require.Equal(t, int64(102), v.LogicalID)
	at(t, h, 1022, 1010, "test", "pt")

	tables, err := h.Tables(1010)
	require.NoError(t, err)
	require.Len(t, tables, 2)
	require.Equal(t, []int64{102, 1021}, []int64{tables[0].LogicalID, tables[1].LogicalID})

	// A later DDL on nt addresses it by its new id.
	nt := keyed(1021, "nt")
	nt.Comment = "after"
	applyAt(t, h, job(model.ActionModifyTableComment, 1, 1021, 12, nt), 1020)
	require.Equal(t, "after", at(t, h, 1021, 1020, "test", "nt").Table.Info.Comment)
}

func TestRecoverTable(t *testing.T) {
	h := newHistory(t, Options{}, partitioned(102, "pt", 1021))
	applyAt(t, h, job(model.ActionDropTable, 1, 102, 11, nil), 1010)
	gone(t, h, 1021, 1010, Dropped)
	// RECOVER TABLE brings the old ids back.
	applyAt(t, h, job(model.ActionRecoverTable, 1, 102, 12, partitioned(102, "pt", 1021)), 1020)
	gone(t, h, 1021, 1019, Dropped)
	at(t, h, 1021, 1020, "test", "pt")
}

func TestCreateAndDropSchema(t *testing.T) {
	var unsupported []*model.Job
	h := newHistory(t, Options{OnUnsupported: func(j *model.Job) { unsupported = append(unsupported, j) }},
		keyed(101, "t"))

	cs := job(model.ActionCreateSchema, 5, 0, 11, nil)
	cs.BinlogInfo.DBInfo = dbInfo(5, "db5")
	applyAt(t, h, cs, 1010)
	applyAt(t, h, job(model.ActionCreateTable, 5, 110, 12, keyed(110, "a")), 1020)
	applyAt(t, h, job(model.ActionCreateTable, 5, 111, 13, partitioned(111, "b", 1111)), 1030)
	at(t, h, 1111, 1030, "db5", "b")

	applyAt(t, h, job(model.ActionDropSchema, 5, 0, 14, nil), 1040)
	for _, id := range []int64{110, 111, 1111} {
		gone(t, h, id, 1040, Dropped)
	}
	at(t, h, 101, 1040, "test", "t")

	// FLASHBACK DATABASE is reported, not guessed.
	rs := job(model.ActionRecoverSchema, 5, 0, 15, nil)
	applyAt(t, h, rs, 1050)
	require.Len(t, unsupported, 1)
	gone(t, h, 110, 1050, Dropped)

	// A table in a database the history never saw is a broken history.
	err := h.AddJob(JobEvent{Job: job(model.ActionCreateTable, 9, 120, 16, keyed(120, "x")), CommitTs: 1060})
	require.NoError(t, err)
	require.Error(t, h.AdvanceResolved(1060))
	require.Error(t, h.AdvanceResolved(1070), "a broken history stays broken")
	require.Equal(t, uint64(1050), h.Resolved())
}

func TestJobOrderAndDedup(t *testing.T) {
	h := newHistory(t, Options{}, keyed(101, "t"))

	withComment := func(ver int64, c string) *model.Job {
		info := keyed(101, "t")
		info.Comment = c
		return job(model.ActionModifyTableComment, 1, 101, ver, info)
	}
	// Out of order within the unresolved window, plus a duplicate.
	require.NoError(t, h.AddJob(JobEvent{Job: withComment(13, "c"), CommitTs: 1030}))
	require.NoError(t, h.AddJob(JobEvent{Job: withComment(11, "a"), CommitTs: 1010}))
	require.NoError(t, h.AddJob(JobEvent{Job: withComment(12, "b"), CommitTs: 1020}))
	require.NoError(t, h.AddJob(JobEvent{Job: withComment(11, "a"), CommitTs: 1010}))
	// Jobs that are not finished, or no-ops, are ignored.
	notDone := withComment(14, "running")
	notDone.State = model.JobStateRunning
	require.NoError(t, h.AddJob(JobEvent{Job: notDone, CommitTs: 1025}))
	noop := withComment(0, "noop")
	require.NoError(t, h.AddJob(JobEvent{Job: noop, CommitTs: 1026}))
	// A job at or below the snapshot ts is in the snapshot already.
	require.NoError(t, h.AddJob(JobEvent{Job: withComment(9, "old"), CommitTs: snapTs}))

	// Resolving to 1020 applies two of them; 1030 waits.
	require.NoError(t, h.AdvanceResolved(1020))
	comment := func(ts uint64) string { return at(t, h, 101, ts, "test", "t").Table.Info.Comment }
	require.Equal(t, "", comment(1009))
	require.Equal(t, "a", comment(1010))
	require.Equal(t, "b", comment(1020))
	_, err := h.TableAt(101, 1021)
	require.ErrorIs(t, err, ErrNotResolved)

	// Replays of applied jobs (TiKV re-sends after region errors) are
	// ignored, even below the resolved ts.
	require.NoError(t, h.AddJob(JobEvent{Job: withComment(11, "a"), CommitTs: 1010}))
	require.NoError(t, h.AddJob(JobEvent{Job: withComment(12, "b"), CommitTs: 1020}))
	// A resolved ts going back is ignored.
	require.NoError(t, h.AdvanceResolved(1015))
	require.NoError(t, h.AdvanceResolved(1030))
	require.Equal(t, "c", comment(1030))
	require.Equal(t, "b", comment(1029))

	// A create-table replay with another ts is deduplicated by id.
	applyAt(t, h, job(model.ActionCreateTable, 1, 110, 14, keyed(110, "n")), 1040)
	applyAt(t, h, job(model.ActionCreateTable, 1, 110, 15, keyed(110, "dup")), 1050)
	at(t, h, 110, 1050, "test", "n")
	require.Equal(t, uint64(1040), at(t, h, 110, 1050, "test", "n").Since)

	// Two jobs finishing at the same ts with different versions both apply,
	// in version order.
	require.NoError(t, h.AddJob(JobEvent{Job: withComment(17, "e"), CommitTs: 1060}))
	require.NoError(t, h.AddJob(JobEvent{Job: withComment(16, "d"), CommitTs: 1060}))
	require.NoError(t, h.AdvanceResolved(1060))
	require.Equal(t, "e", comment(1060))

	// Below the last applied job a new job cannot be told from a replay and
	// is ignored, as TiCDC does.
	require.NoError(t, h.AddJob(JobEvent{Job: withComment(18, "replay?"), CommitTs: 1055}))
	// Between the last applied job and the resolved ts it means the stream
	// lost order: terminal.
	require.NoError(t, h.AdvanceResolved(1080))
	err = h.AddJob(JobEvent{Job: withComment(18, "late"), CommitTs: 1070})
	require.ErrorIs(t, err, ErrJobOrder)
	require.ErrorIs(t, h.AdvanceResolved(1100), ErrJobOrder)
}

func TestForget(t *testing.T) {
	h := newHistory(t, Options{}, keyed(101, "t"), keyed(102, "u"))
	for i, ts := range []uint64{1010, 1020, 1030} {
		info := keyed(101, "t")
		info.Comment = string(rune('a' + i))
		applyAt(t, h, job(model.ActionModifyTableComment, 1, 101, int64(11+i), info), ts)
	}
	applyAt(t, h, job(model.ActionDropTable, 1, 102, 20, nil), 1040)

	h.Forget(1025)
	_, err := h.TableAt(101, 1024)
	require.ErrorIs(t, err, ErrTooOld)
	// The newest version ≤ 1025 (from 1020) still answers 1025..1029.
	require.Equal(t, "b", at(t, h, 101, 1025, "test", "t").Table.Info.Comment)
	require.Equal(t, "c", at(t, h, 101, 1030, "test", "t").Table.Info.Comment)
	h.mu.RLock()
	require.Len(t, h.versions[101], 2, "versions from 1000 and 1010 are released")
	h.mu.RUnlock()

	// Forget clamps at the resolved ts and keeps gone markers.
	h.Forget(5000)
	gone(t, h, 102, 1040, Dropped)
	require.Equal(t, "c", at(t, h, 101, 1040, "test", "t").Table.Info.Comment)
	_, err = h.TableAt(101, 1039)
	require.ErrorIs(t, err, ErrTooOld)
	// Forgetting backwards is a no-op.
	h.Forget(1000)
	_, err = h.TableAt(101, 1039)
	require.ErrorIs(t, err, ErrTooOld)
}

func TestWaitResolved(t *testing.T) {
	h := newHistory(t, Options{}, keyed(101, "t"))
	require.NoError(t, h.WaitResolved(context.Background(), snapTs))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, h.WaitResolved(ctx, snapTs+1), context.DeadlineExceeded)

	done := make(chan error, 1)
	go func() { done <- h.WaitResolved(context.Background(), 1020) }()
	require.NoError(t, h.AdvanceResolved(1010))
	select {
	case err := <-done:
		t.Fatalf("woke at 1010: %v", err)
	case <-time.After(10 * time.Millisecond):
	}
	require.NoError(t, h.AdvanceResolved(1020))
	require.NoError(t, <-done)
}

func TestRowTable(t *testing.T) {
	h := newHistory(t, Options{}, keyed(101, "t"))
	info := keyed(101, "t")
	info.Comment = "new"
	require.NoError(t, h.AddJob(JobEvent{Job: job(model.ActionModifyTableComment, 1, 101, 11, info), CommitTs: 1010}))

	// A row committed at 1010 waits for 1009 only and is decoded with the
	// schema before the DDL that also finished at 1010.
	got := make(chan string, 1)
	go func() {
		tbl, err := h.RowTable(context.Background(), 101, 1010)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- "comment=" + tbl.Info.Comment
	}()
	require.NoError(t, h.AdvanceResolved(1009))
	require.Equal(t, "comment=", <-got)

	require.NoError(t, h.AdvanceResolved(1010))
	tbl, err := h.RowTable(context.Background(), 101, 1011)
	require.NoError(t, err)
	require.Equal(t, "new", tbl.Info.Comment)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = h.RowTable(ctx, 101, 2000)
	require.ErrorIs(t, err, context.Canceled)
}

// TestConcurrentReaders runs readers against the writer; under -race it
// checks the locking, and each reader checks it never sees a version from
// above the ts it asked for.
func TestConcurrentReaders(t *testing.T) {
	h := newHistory(t, Options{}, partitioned(102, "pt", 1021))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				ts := h.Resolved()
				v, err := h.Lookup(1021, ts)
				if errors.Is(err, ErrTooOld) {
					continue // the writer forgot ts in between
				}
				if err != nil {
					t.Errorf("lookup at %d: %v", ts, err)
					return
				}
				if v.Since > ts {
					t.Errorf("version since %d answered ts %d", v.Since, ts)
					return
				}
			}
		})
	}
	for i := range 200 {
		ts := uint64(1010 + 10*i)
		info := partitioned(102, "pt", 1021)
		info.Comment = "x"
		require.NoError(t, h.AddJob(JobEvent{Job: job(model.ActionModifyTableComment, 1, 102, int64(11+i), info), CommitTs: ts}))
		require.NoError(t, h.AdvanceResolved(ts))
		if i%50 == 0 {
			h.Forget(ts - 20)
		}
	}
	cancel()
	wg.Wait()
}

// TestVersionDDL: each version names the statement that made it, so that a
// later failure caused by the version (a registry refusing its schema) can
// tell the user which DDL to look at; snapshot versions have none.
func TestVersionDDL(t *testing.T) {
	h := newHistory(t, Options{}, keyed(101, "t"), partitioned(102, "pt", 1021))
	require.Empty(t, at(t, h, 101, snapTs, "test", "t").DDL)

	const alter = "ALTER TABLE test.t ADD COLUMN c INT"
	j := job(model.ActionAddColumn, 1, 101, 11, keyed(101, "t"))
	j.Query = alter
	applyAt(t, h, roundTrip(t, j), 1010)
	require.Equal(t, alter, at(t, h, 101, 1010, "test", "t").DDL)
	require.Empty(t, at(t, h, 101, 1009, "test", "t").DDL)

	const trunc = "TRUNCATE TABLE test.pt"
	j = job(model.ActionTruncateTable, 1, 102, 12, partitioned(120, "pt", 1201))
	j.Query = trunc
	applyAt(t, h, roundTrip(t, j), 1020)
	require.Equal(t, trunc, at(t, h, 1201, 1020, "test", "pt").DDL)
	v, err := h.Lookup(1021, 1020)
	require.ErrorIs(t, err, ErrDropped)
	require.Equal(t, trunc, v.DDL, "a gone version names the DDL too")

	// A job without a version of this table leaves its DDL unchanged.
	j = job(model.ActionDropTable, 1, 999, 13, nil)
	j.Query = "DROP TABLE test.x"
	applyAt(t, h, j, 1030)
	require.Equal(t, alter, at(t, h, 101, 1030, "test", "t").DDL)
}

// A changefeed's filter: TiDB's syntax, case-insensitive unless asked, nil
// (every table) without rules, a clear error for a bad rule.
func TestNewFilter(t *testing.T) {
	none, err := NewFilter(nil, false)
	require.NoError(t, err)
	require.Nil(t, none)
	f, err := NewFilter([]string{"app.*", "!app.tmp_*"}, false)
	require.NoError(t, err)
	require.True(t, f("APP", "Orders"))
	require.False(t, f("app", "tmp_1"))
	require.False(t, f("other", "orders"))
	cs, err := NewFilter([]string{"app.*"}, true)
	require.NoError(t, err)
	require.False(t, cs("APP", "orders"))
	_, err = NewFilter([]string{"app"}, false)
	require.Error(t, err)
}
