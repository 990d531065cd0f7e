package schema

import (
	"errors"
	"fmt"
	"slices"

	"github.com/pingcap/tidb/pkg/meta/model"
)

// apply changes the live schema by one finished job at its FinishedTS (spec
// §4.1). The job's BinlogInfo carries the state after the DDL; the state
// before it comes from the history itself, never from meta at FinishedTS−1,
// which may already show intermediate steps (spec §1.4).
func (h *History) apply(job *model.Job) error {
	bi := job.BinlogInfo
	ts, ver := bi.FinishedTS, bi.SchemaVersion
	switch job.Type {
	case model.ActionCreateSchema, model.ActionModifySchemaCharsetAndCollate,
		model.ActionModifySchemaDefaultPlacement:
		if bi.DBInfo == nil {
			return nil
		}
		h.dbs[bi.DBInfo.ID] = bi.DBInfo
		// Table versions embed the database name only, which these DDLs
		// cannot change, so no table version is needed.
		return nil

	case model.ActionDropSchema:
		for id, st := range h.tables {
			if st.schemaID != job.SchemaID {
				continue
			}
			if err := h.dropTable(id, ts, Dropped); err != nil {
				return err
			}
		}
		delete(h.dbs, job.SchemaID)
		return nil

	case model.ActionRecoverSchema, model.ActionFlashbackCluster:
		// Neither TiCDC generation replays FLASHBACK DATABASE or FLASHBACK
		// CLUSTER. The restored tables stay unknown, so rows of them fail
		// loudly instead of being decoded with a guessed schema; the owner
		// hears of it through OnUnsupported.
		if h.opts.OnUnsupported != nil {
			h.opts.OnUnsupported(job)
		}
		return nil

	case model.ActionCreateTable, model.ActionRecoverTable, model.ActionCreateSequence:
		return h.create(job.SchemaID, bi.TableInfo, ts, ver)

	case model.ActionCreateView:
		if err := h.dropReplacedView(job.SchemaID, bi.TableInfo, ts); err != nil {
			return err
		}
		return h.create(job.SchemaID, bi.TableInfo, ts, ver)

	case model.ActionCreateTables:
		for _, info := range bi.MultipleTableInfos {
			if err := h.create(job.SchemaID, info, ts, ver); err != nil {
				return err
			}
		}
		return nil

	case model.ActionDropTable, model.ActionDropView, model.ActionDropSequence:
		return h.dropTable(job.TableID, ts, Dropped)

	case model.ActionTruncateTable:
		return h.replace(job, job.TableID, Truncated)

	case model.ActionAlterTablePartitioning, model.ActionRemovePartitioning:
		return h.replace(job, job.TableID, Replaced)

	case model.ActionTruncateTablePartition:
		return h.replace(job, tableIDOf(job), Truncated)

	case model.ActionReorganizePartition:
		return h.replace(job, tableIDOf(job), Replaced)

	case model.ActionRenameTable:
		// job.SchemaID is the target database; the old one is our own
		// record, which setTable does not need.
		return h.replace(job, tableIDOf(job), Dropped)

	case model.ActionRenameTables:
		return h.renameTables(job)

	case model.ActionExchangeTablePartition:
		return h.exchangePartition(job)
	}
	// Every other kind (column, index, partition add/drop, comment, charset,
	// auto id, TTL, multi-schema change, …) replaces the TableInfo when the
	// job carries one: the handle key and eligibility are re-derived from it.
	if bi.TableInfo == nil {
		return nil
	}
	return h.replace(job, tableIDOf(job), Dropped)
}

// tableIDOf is the logical id a same-id job changes. BinlogInfo.TableInfo is
// authoritative; job.TableID is a partition id for some partition jobs.
func tableIDOf(job *model.Job) int64 {
	if ti := job.BinlogInfo.TableInfo; ti != nil {
		return ti.ID
	}
	return job.TableID
}

// create adds a table unless its id is already live: create-table jobs are
// de-duplicated by id because their schema versions are not reliably
// ordered (spec §1.5). Recover table brings an old id back the same way.
func (h *History) create(schemaID int64, info *model.TableInfo, ts uint64, ver int64) error {
	if info == nil {
		return errors.New("schema: create job without table info")
	}
	if _, ok := h.tables[info.ID]; ok {
		return nil
	}
	return h.setTable(info.ID, schemaID, info, ts, ver, NotGone)
}

// dropReplacedView drops the view CREATE OR REPLACE VIEW replaces: TiDB
// drops it and creates the new definition under a new id in the same step,
// so the only trace of the old id is the name. Matching by name rather than
// by the job's OldViewTblID argument also works for job copies whose
// arguments were not kept.
func (h *History) dropReplacedView(schemaID int64, info *model.TableInfo, ts uint64) error {
	if info == nil {
		return nil
	}
	for id, st := range h.tables {
		if id != info.ID && st.schemaID == schemaID && st.info.IsView() && st.info.Name.L == info.Name.L {
			return h.dropTable(id, ts, Dropped)
		}
	}
	return nil
}

// replace makes the job's TableInfo the live version of the table live under
// oldID; ids the new info no longer has become gone with reason removed.
//
// The database comes from the history when the table is live there, except
// for renames, whose job.SchemaID is the target. A table the history does not
// know is created: it can only come from a system schema (renamed out of
// one), since the snapshot and the stream cover every other schema.
func (h *History) replace(job *model.Job, oldID int64, removed GoneReason) error {
	info := job.BinlogInfo.TableInfo
	if info == nil {
		return fmt.Errorf("schema: %s job %d without table info", job.Type, job.ID)
	}
	schemaID := job.SchemaID
	if st, ok := h.tables[oldID]; ok && job.Type != model.ActionRenameTable {
		schemaID = st.schemaID
	}
	return h.setTable(oldID, schemaID, info, job.BinlogInfo.FinishedTS, job.BinlogInfo.SchemaVersion, removed)
}

// renameTables applies RENAME TABLE a TO b, c TO d, …. The i-th argument
// pairs with the i-th of MultipleTableInfos, which are the final states read
// after all renames, so a cyclic rename repeats an id and its last
// occurrence is the one to keep (spec §4.1); applying them in order does
// exactly that, since a later put at the same ts replaces an earlier one.
func (h *History) renameTables(job *model.Job) error {
	args, err := model.GetRenameTablesArgs(job)
	if err != nil {
		return fmt.Errorf("schema: rename tables args: %w", err)
	}
	if args == nil {
		// The Done row in tidb_ddl_job carries the args; the copies in
		// tidb_ddl_history and the meta history hash do not (TiDB re-encodes
		// the job with args it never decoded), and without them the target
		// database of each table is unknown.
		return fmt.Errorf("schema: rename tables job %d has no arguments", job.ID)
	}
	infos := job.BinlogInfo.MultipleTableInfos
	if len(args.RenameTableInfos) != len(infos) {
		return fmt.Errorf("schema: rename tables: %d arguments for %d table infos", len(args.RenameTableInfos), len(infos))
	}
	bi := job.BinlogInfo
	for i, info := range infos {
		if err := h.setTable(info.ID, args.RenameTableInfos[i].NewSchemaID, info, bi.FinishedTS, bi.SchemaVersion, Dropped); err != nil {
			return err
		}
	}
	return nil
}

// exchangePartition applies ALTER TABLE pt EXCHANGE PARTITION p WITH TABLE
// nt. No data moves: partition p's id now holds nt's rows and nt's old id
// holds p's. BinlogInfo.TableInfo is pt after the exchange, whose
// definitions list nt's old id in p's place; nt's new info is its previous
// one under p's id (spec §4.1).
func (h *History) exchangePartition(job *model.Job) error {
	bi := job.BinlogInfo
	pt := bi.TableInfo
	if pt == nil || pt.GetPartitionInfo() == nil {
		return errors.New("schema: exchange partition without the partitioned table's info")
	}
	nt, ok := h.tables[job.TableID]
	if !ok {
		return fmt.Errorf("schema: exchange partition: table %d unknown", job.TableID)
	}
	oldPT, ok := h.tables[pt.ID]
	if !ok {
		return fmt.Errorf("schema: exchange partition: partitioned table %d unknown", pt.ID)
	}
	newIDs := PhysicalIDs(pt)
	var partID int64
	for _, id := range PhysicalIDs(oldPT.info)[1:] {
		if !slices.Contains(newIDs, id) {
			if partID != 0 {
				return fmt.Errorf("schema: exchange partition of %d: partitions %d and %d both left", pt.ID, partID, id)
			}
			partID = id
		}
	}
	if partID == 0 {
		// Both the previous state and the job agree already: a replay.
		return nil
	}
	ntInfo := nt.info.Clone()
	ntInfo.ID = partID
	// nt's old id is pt's partition now, not a dropped table: forget it
	// without a gone marker before pt's version claims it.
	delete(h.tables, job.TableID)
	if err := h.setTable(pt.ID, oldPT.schemaID, pt, bi.FinishedTS, bi.SchemaVersion, Dropped); err != nil {
		return err
	}
	// pt's update just marked partID gone; nt's version at the same ts
	// replaces that marker.
	return h.setTable(partID, nt.schemaID, ntInfo, bi.FinishedTS, bi.SchemaVersion, Dropped)
}
