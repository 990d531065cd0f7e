package feedclient

import (
	"fmt"

	"github.com/pingcap/kvproto/pkg/cdcpb"
)

type txnKey struct {
	startTS uint64
	key     string
}

// matcher assembles the rows of one region subscription into committed
// changes (spec §3.5).
type matcher struct {
	initialized bool
	prewrites   map[txnKey]*cdcpb.Event_Row
	// COMMITs and ROLLBACKs that arrived before INITIALIZED: their PREWRITE
	// may still come from the scan, which interleaves with realtime rows.
	commits   []*cdcpb.Event_Row
	rollbacks []*cdcpb.Event_Row
}

func newMatcher() *matcher {
	return &matcher{prewrites: make(map[txnKey]*cdcpb.Event_Row)}
}

func keyOf(r *cdcpb.Event_Row) txnKey { return txnKey{r.StartTs, string(r.Key)} }

// add takes the next row of the subscription and returns the committed changes
// it completes, and a description of each protocol violation it found.
func (m *matcher) add(r *cdcpb.Event_Row) (out []Change, problems []string) {
	switch r.Type {
	case cdcpb.Event_PREWRITE:
		k := keyOf(r)
		if old, ok := m.prewrites[k]; ok {
			// A rewritten lock may come without its value (spec §2.5, §2.9):
			// the last PREWRITE with a value wins.
			if len(r.Value) == 0 && len(old.Value) > 0 {
				return nil, nil
			}
			if old.Generation != 0 && r.Generation != 0 && r.Generation < old.Generation {
				return nil, nil
			}
		}
		m.prewrites[k] = r
	case cdcpb.Event_COMMIT:
		if r.OpType != cdcpb.Event_Row_PUT && r.OpType != cdcpb.Event_Row_DELETE {
			return nil, []string{fmt.Sprintf("COMMIT of %x@%d with op type %v", r.Key, r.CommitTs, r.OpType)}
		}
		k := keyOf(r)
		// Before INITIALIZED only a PREWRITE carrying a value is trusted: a
		// realtime one may be a value-less rewrite whose full form is still
		// to come from the scan.
		if p, ok := m.prewrites[k]; ok && (m.initialized || len(p.Value) > 0) {
			delete(m.prewrites, k)
			return []Change{matched(r, p)}, nil
		}
		if !m.initialized {
			m.commits = append(m.commits, r)
			return nil, nil
		}
		return nil, []string{fmt.Sprintf("COMMIT of %x start %d commit %d without its PREWRITE", r.Key, r.StartTs, r.CommitTs)}
	case cdcpb.Event_COMMITTED:
		if r.OpType != cdcpb.Event_Row_PUT && r.OpType != cdcpb.Event_Row_DELETE {
			return nil, []string{fmt.Sprintf("COMMITTED %x@%d with op type %v", r.Key, r.CommitTs, r.OpType)}
		}
		return []Change{{Key: r.Key, StartTS: r.StartTs, CommitTS: r.CommitTs, Op: r.OpType, Value: value(r.OpType, r.Value), OldValue: r.OldValue}}, nil
	case cdcpb.Event_ROLLBACK:
		if !m.initialized {
			m.rollbacks = append(m.rollbacks, r)
			return nil, nil
		}
		delete(m.prewrites, keyOf(r))
	case cdcpb.Event_INITIALIZED:
		if m.initialized {
			return nil, []string{"second INITIALIZED"}
		}
		m.initialized = true
		for _, c := range m.commits {
			k := keyOf(c)
			if p, ok := m.prewrites[k]; ok {
				delete(m.prewrites, k)
				out = append(out, matched(c, p))
			}
			// Otherwise the scan already sent the commit as COMMITTED.
		}
		for _, rb := range m.rollbacks {
			delete(m.prewrites, keyOf(rb))
		}
		m.commits, m.rollbacks = nil, nil
		return out, nil
	default:
		return nil, []string{fmt.Sprintf("row of type %v for %x", r.Type, r.Key)}
	}
	return nil, nil
}

// matched builds the change of a COMMIT from its PREWRITE: TiKV puts the
// value in a COMMIT only when it is short, and the old value never.
func matched(c, p *cdcpb.Event_Row) Change {
	v := c.Value
	if len(v) == 0 {
		v = p.Value
	}
	return Change{Key: c.Key, StartTS: c.StartTs, CommitTS: c.CommitTs, Op: c.OpType, Value: value(c.OpType, v), OldValue: p.OldValue}
}

func value(op cdcpb.Event_Row_OpType, v []byte) []byte {
	if op == cdcpb.Event_Row_DELETE {
		return nil
	}
	return v
}
