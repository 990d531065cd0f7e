package mount

import (
	"slices"

	"github.com/tidestream/tidestream/encoder/row"
)

// OrderTxns reorders rows in place so that within each transaction —
// each run of consecutive rows with the same (CommitTs, StartTs), which is
// how the sorter delivers them — deletes come first, then updates, then
// inserts; otherwise the order is kept.
//
// Deletes must go first: when an update is split, or a row moves to a new
// row key, or a unique key passes from one row to another in the same
// transaction, the delete and the insert may carry the same Kafka key, and
// a tombstone after the insert would erase the new row downstream. A
// transaction writes each row key once, so moving deletes forward never
// reorders two changes of one row. This is TiCDC classic's delete <
// update < insert transaction order (spec §3.6).
func OrderTxns(rows []row.Row) {
	for start := 0; start < len(rows); {
		end := start + 1
		for end < len(rows) && rows[end].CommitTs == rows[start].CommitTs && rows[end].StartTs == rows[start].StartTs {
			end++
		}
		txn := rows[start:end]
		if !slices.IsSortedFunc(txn, cmpOp) {
			slices.SortStableFunc(txn, cmpOp)
		}
		start = end
	}
}

func opRank(o row.Op) int {
	switch o {
	case row.Delete:
		return 0
	case row.Update:
		return 1
	}
	return 2
}

func cmpOp(a, b row.Row) int { return opRank(a.Op) - opRank(b.Op) }
