package schema

import (
	"errors"
	"fmt"
	"time"

	"github.com/pingcap/tidb/pkg/meta/model"
	"github.com/pingcap/tidb/pkg/tablecodec"
	"github.com/pingcap/tidb/pkg/types"

	"github.com/tidestream/tidestream/encoder/row"
)

// Ids of TiDB's DDL job tables in schema mysql (spec §1.4). TiDB defines them
// in pkg/ddl, whose import weight (~1,350 packages) this package avoids.
const (
	maxInt48 = 1<<48 - 1
	// JobTableID is mysql.tidb_ddl_job: subscribe its record span
	// [t{id}_r, t{id}_s) to follow DDL.
	JobTableID int64 = maxInt48 - 1
	// HistoryTableID is mysql.tidb_ddl_history, not needed with TiDB ≥ 8.3.
	HistoryTableID int64 = maxInt48 - 3
)

// JobDecoder turns raw KV events of mysql.tidb_ddl_job into finished jobs.
// It is immutable and safe for concurrent use.
type JobDecoder struct {
	metaCol int64
	cols    map[int64]*types.FieldType
}

// NewJobDecoder builds a decoder from mysql.tidb_ddl_job's table info
// (Snapshot.JobTable). The job_meta column is looked up by name, never
// assumed, because its id depends on the bootstrap history of the cluster.
func NewJobDecoder(jobTable *model.TableInfo) (*JobDecoder, error) {
	if jobTable == nil {
		return nil, errors.New("schema: no mysql.tidb_ddl_job table info")
	}
	c := model.FindColumnInfo(jobTable.Columns, "job_meta")
	if c == nil {
		return nil, fmt.Errorf("schema: mysql.tidb_ddl_job (%d) has no job_meta column", jobTable.ID)
	}
	return &JobDecoder{metaCol: c.ID, cols: map[int64]*types.FieldType{c.ID: &c.FieldType}}, nil
}

// Decode returns the finished job a KV event of the job table carries, or
// nil when the event is no finished job: a delete (the job leaving the
// queue), an intermediate step, a rollback, a cancel, or a no-op DDL without
// schema version (spec §1.5). The Done row has no FinishedTS, so it is set to
// commitTs: the Done row commits with the final meta change.
func (d *JobDecoder) Decode(key, value []byte, startTs, commitTs uint64) (*model.Job, error) {
	if len(value) == 0 {
		return nil, nil
	}
	key = row.StripKeyspace(key)
	if !tablecodec.IsRecordKey(key) {
		return nil, fmt.Errorf("schema: ddl job event: %x is not a record key", key)
	}
	if id := tablecodec.DecodeTableID(key); id != JobTableID {
		return nil, fmt.Errorf("schema: ddl job event: key of table %d, want %d", id, JobTableID)
	}
	// The job row has no TIMESTAMP column worth converting; UTC only keeps
	// the decoder away from a nil zone.
	datums, err := tablecodec.DecodeRowToDatumMap(value, d.cols, time.UTC)
	if err != nil {
		return nil, fmt.Errorf("schema: ddl job event at %d: %w", commitTs, err)
	}
	datum, ok := datums[d.metaCol]
	if !ok || datum.IsNull() {
		return nil, fmt.Errorf("schema: ddl job event at %d: no job_meta", commitTs)
	}
	job := &model.Job{}
	if err := job.Decode(datum.GetBytes()); err != nil {
		return nil, fmt.Errorf("schema: ddl job event at %d: decode job: %w", commitTs, err)
	}
	if !job.IsDone() || job.BinlogInfo == nil || job.BinlogInfo.SchemaVersion == 0 {
		return nil, nil
	}
	job.StartTS = startTs
	job.BinlogInfo.FinishedTS = commitTs
	return job, nil
}
