package checker

import (
	"fmt"

	"github.com/pingcap/kvproto/pkg/cdcpb"
)

// Change is one committed version of a key, as a puller hands it on.
// Value is empty for deletes. Key and Value may alias the row they came from.
type Change struct {
	Key               []byte
	StartTS, CommitTS uint64
	Op                cdcpb.Event_Row_OpType
	Value             []byte
}

func (ch Change) String() string {
	return fmt.Sprintf("%s %s start=%d commit=%d value=%s", ch.Op, FormatKey(ch.Key), ch.StartTS, ch.CommitTS, fmtValue(ch.Value))
}

// Assembler turns the rows of one subscription generation, in receive order,
// into committed changes, the way a correct puller's matcher does (spec §3.5):
// PREWRITE and COMMIT are matched by (key, start_ts), COMMITTED rows stand
// alone, ROLLBACK drops the pending PREWRITE. Before INITIALIZED a COMMIT may
// arrive ahead of the scan's PREWRITE of its lock; it waits for it, and is
// dropped at INITIALIZED if none came (its data then came as a COMMITTED row).
//
// It does not filter by checkpoint or watermark; Compare windows the result.
// Use one Assembler per subscription generation: a re-registered region
// starts from scratch.
type Assembler struct {
	initialized bool
	prewrites   map[lockKey]*cdcpb.Event_Row
	// Before INITIALIZED only.
	parked     map[lockKey]*cdcpb.Event_Row
	rolledBack map[lockKey]struct{}
}

// NewAssembler returns an empty Assembler.
func NewAssembler() *Assembler {
	return &Assembler{
		prewrites:  make(map[lockKey]*cdcpb.Event_Row),
		parked:     make(map[lockKey]*cdcpb.Event_Row),
		rolledBack: make(map[lockKey]struct{}),
	}
}

// Initialized reports whether INITIALIZED has been seen.
func (a *Assembler) Initialized() bool { return a.initialized }

// PendingPrewrites is the number of PREWRITEs not yet committed or rolled back.
func (a *Assembler) PendingPrewrites() int { return len(a.prewrites) }

// Row feeds one row and returns the change it completes, if any. It is Rows
// for callers that expect at most one change per row, which holds unless a
// PUT PREWRITE without value was committed before INITIALIZED (TiKV never
// sends such a PREWRITE; a fault hook may); Row returns an error then.
func (a *Assembler) Row(r *cdcpb.Event_Row) (Change, bool, error) {
	chs, err := a.Rows(r)
	switch {
	case err != nil:
		return Change{}, false, err
	case len(chs) == 0:
		return Change{}, false, nil
	case len(chs) == 1:
		return chs[0], true, nil
	}
	return Change{}, false, fmt.Errorf("checker: INITIALIZED completed %d changes; use Assembler.Rows", len(chs))
}

// Rows feeds one row and returns the changes it completes: at most one,
// except INITIALIZED, which settles every COMMIT still waiting.
func (a *Assembler) Rows(r *cdcpb.Event_Row) ([]Change, error) {
	if IsLockRecordRow(r) {
		return nil, nil
	}
	lk := lockKey{key: string(r.Key), startTS: r.StartTs}
	switch r.Type {
	case cdcpb.Event_PREWRITE:
		if err := checkOp(r); err != nil {
			return nil, err
		}
		if !a.initialized {
			if _, ok := a.rolledBack[lk]; ok {
				return nil, nil
			}
			if c, ok := a.parked[lk]; ok && complete(r) {
				delete(a.parked, lk)
				delete(a.prewrites, lk)
				return []Change{merge(r, c)}, nil
			}
		}
		if old, ok := a.prewrites[lk]; ok && !replaces(old, r) {
			return nil, nil
		}
		a.prewrites[lk] = r
		return nil, nil
	case cdcpb.Event_COMMIT:
		if err := checkOp(r); err != nil {
			return nil, err
		}
		p, ok := a.prewrites[lk]
		if ok && (a.initialized || complete(p)) {
			delete(a.prewrites, lk)
			return []Change{merge(p, r)}, nil
		}
		if !a.initialized {
			a.parked[lk] = r
			return nil, nil
		}
		return nil, fmt.Errorf("checker: COMMIT %s start=%d commit=%d after INITIALIZED has no PREWRITE", FormatKey(r.Key), r.StartTs, r.CommitTs)
	case cdcpb.Event_COMMITTED:
		if err := checkOp(r); err != nil {
			return nil, err
		}
		return []Change{change(r, r.Value)}, nil
	case cdcpb.Event_ROLLBACK:
		delete(a.prewrites, lk)
		if !a.initialized {
			a.rolledBack[lk] = struct{}{}
		}
		return nil, nil
	case cdcpb.Event_INITIALIZED:
		if a.initialized {
			return nil, nil
		}
		a.initialized = true
		var out []Change
		for _, k := range sortedRowKeys(a.parked) {
			c := a.parked[k]
			if p, ok := a.prewrites[k]; ok {
				// Only a PUT PREWRITE without value is left to match; it is
				// all there is, so take it, as TiCDC does.
				delete(a.prewrites, k)
				out = append(out, merge(p, c))
			}
		}
		a.parked, a.rolledBack = nil, nil
		return out, nil
	}
	return nil, fmt.Errorf("checker: row of type %s for %s", r.Type, FormatKey(r.Key))
}

func checkOp(r *cdcpb.Event_Row) error {
	if r.OpType != cdcpb.Event_Row_PUT && r.OpType != cdcpb.Event_Row_DELETE {
		return fmt.Errorf("checker: %s %s start=%d with op_type %s", r.Type, FormatKey(r.Key), r.StartTs, r.OpType)
	}
	return nil
}

// complete reports whether a PREWRITE carries all a COMMIT needs. A PUT
// without a value is a lock rewrite (heartbeat, min_commit_ts push); the
// scan's PREWRITE with the value may still come.
func complete(p *cdcpb.Event_Row) bool {
	return p.OpType == cdcpb.Event_Row_DELETE || len(p.Value) > 0
}

// replaces reports whether a PREWRITE n of a lock already held as old takes
// its place: an empty-value PUT rewrite never does, nor an older pipelined-DML
// generation.
func replaces(old, n *cdcpb.Event_Row) bool {
	if n.OpType == cdcpb.Event_Row_PUT && len(n.Value) == 0 {
		return false
	}
	if old.Generation != 0 && n.Generation != 0 && n.Generation < old.Generation {
		return false
	}
	return true
}

// merge builds the change of a committed lock: op from the COMMIT, value from
// the PREWRITE unless the COMMIT carries a short value.
func merge(p, c *cdcpb.Event_Row) Change {
	v := p.Value
	if len(c.Value) > 0 {
		v = c.Value
	}
	return change(c, v)
}

func change(r *cdcpb.Event_Row, v []byte) Change {
	if r.OpType == cdcpb.Event_Row_DELETE {
		v = nil
	}
	return Change{Key: r.Key, StartTS: r.StartTs, CommitTS: r.CommitTs, Op: r.OpType, Value: v}
}

func sortedRowKeys(m map[lockKey]*cdcpb.Event_Row) []lockKey {
	ts := make(map[lockKey]uint64, len(m))
	for k, r := range m {
		ts[k] = r.CommitTs
	}
	return sortedLockKeys(ts)
}
