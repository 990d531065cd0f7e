package cdcemu

import (
	"context"
	"fmt"
	"time"

	"github.com/pingcap/kvproto/pkg/cdcpb"
)

// SynthRow is one generated row change: Value nil means a delete; OldValue is
// the previous value (nil: none).
type SynthRow struct {
	Key, Value, OldValue []byte
}

// SynthBacklog is the queued bytes on a connection above which Synthesize
// waits: the generator then runs at the rate the subscribers sustain instead
// of filling the sink quota.
const SynthBacklog = 32 << 20

// Synthesize injects one transaction of rows straight into the change-data
// streams, bypassing unistore: a PREWRITE command, then a COMMIT command with a
// fresh commit ts, both queued under the apply mutex so resolved ts stays
// correct. Nothing is stored, so incremental scans do not see these rows. It
// returns how many rows reached at least one subscription.
func (e *Emulator) Synthesize(ctx context.Context, rows []SynthRow) (int, error) {
	b := e.backend.Load()
	if b == nil {
		return 0, fmt.Errorf("cdcemu: store not attached")
	}
	if err := e.waitBacklog(ctx); err != nil {
		return 0, err
	}
	startTS, err := b.TSO(ctx)
	if err != nil {
		return 0, fmt.Errorf("cdcemu: synthetic start ts: %w", err)
	}
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	commitTS, err := b.TSO(ctx)
	if err != nil {
		return 0, fmt.Errorf("cdcemu: synthetic commit ts: %w", err)
	}
	var order []*downstream
	prewrites := make(map[*downstream][]*cdcpb.Event_Row)
	commits := make(map[*downstream][]*cdcpb.Event_Row)
	delivered := 0
	for _, r := range rows {
		d := e.findDelegate(r.Key)
		if d == nil {
			continue
		}
		hit := false
		for _, ds := range d.downs {
			if !ds.contains(r.Key) || ds.state.Load() == stateStopped {
				continue
			}
			hit = true
			op := cdcpb.Event_Row_PUT
			if r.Value == nil {
				op = cdcpb.Event_Row_DELETE
			}
			if _, ok := prewrites[ds]; !ok {
				order = append(order, ds)
			}
			prewrites[ds] = append(prewrites[ds], &cdcpb.Event_Row{
				StartTs: startTS, Type: cdcpb.Event_PREWRITE, OpType: op,
				Key: r.Key, Value: r.Value, OldValue: r.OldValue,
			})
			c := &cdcpb.Event_Row{StartTs: startTS, CommitTs: commitTS, Type: cdcpb.Event_COMMIT, OpType: op, Key: r.Key}
			if len(r.Value) <= shortValueMax {
				c.Value = r.Value
			}
			commits[ds] = append(commits[ds], c)
		}
		if hit {
			delivered++
		}
	}
	for _, ds := range order {
		e.sendRealtime(ds, prewrites[ds])
	}
	for _, ds := range order {
		e.sendRealtime(ds, commits[ds])
	}
	e.stats.Prewrites.Add(uint64(delivered))
	e.stats.Commits.Add(uint64(delivered))
	return delivered, nil
}

func (e *Emulator) waitBacklog(ctx context.Context) error {
	for {
		busy := false
		e.connsMu.Lock()
		for _, c := range e.conns {
			c.mu.Lock()
			if c.qbytes > SynthBacklog {
				busy = true
			}
			c.mu.Unlock()
		}
		e.connsMu.Unlock()
		if !busy {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}
