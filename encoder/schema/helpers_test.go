package schema

import (
	"testing"

	"github.com/pingcap/tidb/pkg/meta/model"
	pmodel "github.com/pingcap/tidb/pkg/parser/model"
	"github.com/pingcap/tidb/pkg/parser/mysql"
	"github.com/pingcap/tidb/pkg/types"
	"github.com/stretchr/testify/require"
)

// Builders of synthetic meta. Ids below 100 are databases, 1xx tables,
// 1xxx partitions, so a failing assertion says what it is about.

func dbInfo(id int64, name string) *model.DBInfo {
	return &model.DBInfo{ID: id, Name: pmodel.NewCIStr(name), State: model.StatePublic}
}

func column(id int64, name string, flag uint) *model.ColumnInfo {
	c := &model.ColumnInfo{ID: id, Name: pmodel.NewCIStr(name), Offset: int(id - 1), State: model.StatePublic}
	c.FieldType = *types.NewFieldType(mysql.TypeLonglong)
	c.SetFlag(flag)
	return c
}

// keyed is a table whose int primary key is the handle: eligible.
func keyed(id int64, name string) *model.TableInfo {
	return &model.TableInfo{
		ID:         id,
		Name:       pmodel.NewCIStr(name),
		State:      model.StatePublic,
		PKIsHandle: true,
		Columns: []*model.ColumnInfo{
			column(1, "id", mysql.PriKeyFlag|mysql.NotNullFlag),
			column(2, "v", 0),
		},
		MaxColumnID: 2,
	}
}

// keyless has neither primary key nor unique index: NoHandleKey.
func keyless(id int64, name string) *model.TableInfo {
	return &model.TableInfo{
		ID:          id,
		Name:        pmodel.NewCIStr(name),
		State:       model.StatePublic,
		Columns:     []*model.ColumnInfo{column(1, "a", mysql.NotNullFlag), column(2, "b", 0)},
		MaxColumnID: 2,
	}
}

func partitioned(id int64, name string, parts ...int64) *model.TableInfo {
	t := keyed(id, name)
	setParts(t, parts...)
	return t
}

func setParts(t *model.TableInfo, parts ...int64) {
	if len(parts) == 0 {
		t.Partition = nil
		return
	}
	pi := &model.PartitionInfo{Enable: true, Num: uint64(len(parts))}
	for _, p := range parts {
		pi.Definitions = append(pi.Definitions, model.PartitionDefinition{ID: p, Name: pmodel.NewCIStr("p" + string(rune('0'+p%10)))})
	}
	t.Partition = pi
}

func view(id int64, name string) *model.TableInfo {
	t := keyless(id, name)
	t.View = &model.ViewInfo{SelectStmt: "select 1"}
	return t
}

// job is a finished (Done) job as the job decoder hands it over.
func job(tp model.ActionType, schemaID, tableID, ver int64, info *model.TableInfo) *model.Job {
	return &model.Job{
		ID:         ver, // unique enough for tests
		Type:       tp,
		SchemaID:   schemaID,
		TableID:    tableID,
		State:      model.JobStateDone,
		Version:    model.JobVersion2,
		BinlogInfo: &model.HistoryInfo{SchemaVersion: ver, TableInfo: info},
	}
}

// roundTrip encodes a job the way TiDB writes job_meta and decodes it again,
// so typed args go through their JSON form like in production.
func roundTrip(t *testing.T, j *model.Job) *model.Job {
	t.Helper()
	b, err := j.Encode(true)
	require.NoError(t, err)
	out := &model.Job{}
	require.NoError(t, out.Decode(b))
	return out
}

const snapTs = 1000

// newHistory builds a history at snapTs (schema version 10) over databases
// test(1) and other(2), mysql(3), plus the given tables of test.
func newHistory(t *testing.T, opts Options, tables ...*model.TableInfo) *History {
	t.Helper()
	snap := &Snapshot{
		Ts:            snapTs,
		SchemaVersion: 10,
		DBs:           []*model.DBInfo{dbInfo(1, "test"), dbInfo(2, "other"), dbInfo(3, "mysql")},
		Tables:        map[int64][]*model.TableInfo{1: tables},
	}
	h, err := New(snap, opts)
	require.NoError(t, err)
	return h
}

// applyAt feeds one job finished at ts and resolves the history to ts.
func applyAt(t *testing.T, h *History, j *model.Job, ts uint64) {
	t.Helper()
	require.NoError(t, h.AddJob(JobEvent{Job: j, CommitTs: ts}))
	require.NoError(t, h.AdvanceResolved(ts))
}

// at asserts TableAt(id, ts) is a live table named schema.name.
func at(t *testing.T, h *History, id int64, ts uint64, schema, name string) *Version {
	t.Helper()
	v, err := h.Lookup(id, ts)
	require.NoError(t, err, "table %d at %d", id, ts)
	require.Equal(t, schema, v.Table.Schema, "table %d at %d", id, ts)
	require.Equal(t, name, v.Table.Name, "table %d at %d", id, ts)
	return v
}

// gone asserts id is dropped at ts for the given reason.
func gone(t *testing.T, h *History, id int64, ts uint64, why GoneReason) {
	t.Helper()
	v, err := h.Lookup(id, ts)
	require.ErrorIs(t, err, ErrDropped, "table %d at %d", id, ts)
	require.Equal(t, why, v.Gone, "table %d at %d", id, ts)
	tbl, err := h.TableAt(id, ts)
	require.ErrorIs(t, err, ErrDropped)
	require.Nil(t, tbl)
}

func unknown(t *testing.T, h *History, id int64, ts uint64) {
	t.Helper()
	_, err := h.TableAt(id, ts)
	require.ErrorIs(t, err, ErrUnknown, "table %d at %d", id, ts)
}
