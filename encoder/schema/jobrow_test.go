package schema

import (
	"testing"
	"time"

	"github.com/pingcap/tidb/pkg/kv"
	"github.com/pingcap/tidb/pkg/meta/model"
	pmodel "github.com/pingcap/tidb/pkg/parser/model"
	"github.com/pingcap/tidb/pkg/parser/mysql"
	"github.com/pingcap/tidb/pkg/tablecodec"
	"github.com/pingcap/tidb/pkg/types"
	"github.com/pingcap/tidb/pkg/util/rowcodec"
	"github.com/stretchr/testify/require"
)

// jobTableInfo mimics mysql.tidb_ddl_job with job_meta deliberately not at
// the usual column id, so a hard-coded id would fail the test.
func jobTableInfo() *model.TableInfo {
	mk := func(id int64, name string, tp byte, flag uint) *model.ColumnInfo {
		c := &model.ColumnInfo{ID: id, Name: pmodel.NewCIStr(name), Offset: int(id - 1), State: model.StatePublic}
		c.FieldType = *types.NewFieldType(tp)
		c.SetFlag(flag)
		return c
	}
	return &model.TableInfo{
		ID: JobTableID, Name: pmodel.NewCIStr("tidb_ddl_job"), PKIsHandle: true, State: model.StatePublic,
		Columns: []*model.ColumnInfo{
			mk(1, "job_id", mysql.TypeLonglong, mysql.PriKeyFlag|mysql.NotNullFlag),
			mk(2, "reorg", mysql.TypeLong, 0),
			mk(3, "schema_ids", mysql.TypeBlob, 0),
			mk(4, "table_ids", mysql.TypeBlob, 0),
			mk(9, "job_meta", mysql.TypeLongBlob, mysql.BinaryFlag),
			mk(6, "type", mysql.TypeLong, 0),
			mk(7, "processing", mysql.TypeLong, 0),
		},
	}
}

// jobRow encodes j as TiDB stores a tidb_ddl_job row, in row format v2 or v1.
func jobRow(t *testing.T, j *model.Job, v2 bool) (key, value []byte) {
	t.Helper()
	meta, err := j.Encode(true)
	require.NoError(t, err)
	key = tablecodec.EncodeRowKeyWithHandle(JobTableID, kv.IntHandle(j.ID))
	ids := []int64{2, 3, 4, 9, 6, 7}
	vals := types.MakeDatums(int64(0), "1", "2", meta, int64(j.Type), int64(1))
	if v2 {
		value, err = tablecodec.EncodeRow(time.UTC, vals, ids, nil, nil, nil, &rowcodec.Encoder{Enable: true})
	} else {
		value, err = tablecodec.EncodeOldRow(time.UTC, vals, ids, nil, nil)
	}
	require.NoError(t, err)
	return key, value
}

func TestJobDecoder(t *testing.T) {
	d, err := NewJobDecoder(jobTableInfo())
	require.NoError(t, err)

	done := job(model.ActionAddColumn, 1, 101, 42, keyed(101, "t"))
	done.ID = 7
	for _, v2 := range []bool{true, false} {
		key, value := jobRow(t, done, v2)
		got, err := d.Decode(key, value, 50, 60)
		require.NoError(t, err)
		require.NotNil(t, got)
		require.Equal(t, int64(7), got.ID)
		require.Equal(t, model.ActionAddColumn, got.Type)
		require.Equal(t, uint64(60), got.BinlogInfo.FinishedTS, "FinishedTS is the Done row's commit ts")
		require.Equal(t, uint64(50), got.StartTS)
		require.Equal(t, int64(42), got.BinlogInfo.SchemaVersion)
		require.Equal(t, "t", got.BinlogInfo.TableInfo.Name.O)

		// API V2 keyspace prefix.
		got, err = d.Decode(append([]byte{'x', 0, 0, 1}, key...), value, 50, 60)
		require.NoError(t, err)
		require.NotNil(t, got)
	}

	// Not finished jobs, no-op jobs and deletes yield nothing.
	running := job(model.ActionAddColumn, 1, 101, 42, nil)
	running.State = model.JobStateRunning
	synced := job(model.ActionAddColumn, 1, 101, 42, nil)
	synced.State = model.JobStateSynced
	noop := job(model.ActionAddColumn, 1, 101, 0, nil)
	for _, j := range []*model.Job{running, synced, noop} {
		key, value := jobRow(t, j, true)
		got, err := d.Decode(key, value, 1, 2)
		require.NoError(t, err)
		require.Nil(t, got, "state %s version %d", j.State, j.BinlogInfo.SchemaVersion)
	}
	key, _ := jobRow(t, done, true)
	got, err := d.Decode(key, nil, 1, 2)
	require.NoError(t, err)
	require.Nil(t, got)

	// A key of another table is a wiring error.
	_, value := jobRow(t, done, true)
	_, err = d.Decode(tablecodec.EncodeRowKeyWithHandle(HistoryTableID, kv.IntHandle(1)), value, 1, 2)
	require.Error(t, err)

	_, err = NewJobDecoder(keyed(1, "no_job_meta"))
	require.Error(t, err)
}
