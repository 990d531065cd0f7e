package schema

import (
	"fmt"

	"github.com/pingcap/tidb/pkg/meta"
	"github.com/pingcap/tidb/pkg/meta/model"

	"github.com/tidestream/tidestream/encoder/row"
)

// JobTable is a table a finished DDL job left behind: its database, its
// info after the job, and its eligibility under the filter.
type JobTable struct {
	Schema      string
	Info        *model.TableInfo
	Eligibility Eligibility
}

// historyQuiet is how many history jobs in a row must have finished at or
// before from for JobTablesBetween to stop: history is ordered by job id,
// and a job created earlier (a long ADD INDEX) can finish after later ones.
const historyQuiet = 256

// JobTablesBetween lists the tables that DDL jobs finished in (from, to]
// left behind, read from TiDB's DDL history at to. Between two reads of a
// changefeed's tables, a table may have been created and then dropped or
// truncated: it shows in neither read, only here, and its rows must still
// be replicated.
func JobTablesBetween(store SnapshotStore, from, to uint64, f Filter) ([]JobTable, error) {
	it, err := meta.NewReader(metaSnapshot{store.GetSnapshot(to)}).GetLastHistoryDDLJobsIterator()
	if err != nil {
		return nil, fmt.Errorf("schema: DDL history at %d: %w", to, err)
	}
	var (
		out   []JobTable
		jobs  []*model.Job
		quiet int
	)
	for quiet < historyQuiet {
		if jobs, err = it.GetLastJobs(64, jobs[:0]); err != nil {
			return nil, fmt.Errorf("schema: DDL history at %d: %w", to, err)
		}
		if len(jobs) == 0 {
			break
		}
		for _, j := range jobs {
			if j.BinlogInfo == nil || j.BinlogInfo.FinishedTS <= from {
				quiet++
				continue
			}
			quiet = 0
			infos := j.BinlogInfo.MultipleTableInfos
			if t := j.BinlogInfo.TableInfo; t != nil {
				infos = append(infos, t)
			}
			for _, info := range infos {
				t, err := row.NewTable(j.SchemaName, info, j.BinlogInfo.SchemaVersion)
				if err != nil {
					return nil, fmt.Errorf("schema: table %d of DDL job %d: %w", info.ID, j.ID, err)
				}
				out = append(out, JobTable{Schema: j.SchemaName, Info: info, Eligibility: classify(j.SchemaName, info, t, f)})
			}
		}
	}
	return out, nil
}
