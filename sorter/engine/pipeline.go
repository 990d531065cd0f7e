package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// Pipeline is the handle of one pipeline at one epoch. Write, Resolve, Read
// and Ack may be called from different goroutines (typically: the puller
// stream writes and resolves, the encoder stream reads and acks).
type Pipeline struct {
	e     *Engine
	id    PipelineID
	epoch uint64
	// slot is the pipeline-epoch's key prefix, unique for the life of the
	// process (the directory is wiped on open, so slots need not persist).
	slot uint64

	// mu orders Write against Ack: Write holds it shared from its acked
	// check to its commit, Ack exclusively. Without it a Write could check
	// acked, an Ack could range-delete, and the Write could then commit
	// events into the deleted range, where nothing would ever read or
	// delete them again. Nothing holds it while taking Engine.mu, and the
	// engine never takes it: a Write can sit in a pebble write stall with
	// mu held, and that must not stop other pipelines (see fence).
	mu     sync.RWMutex
	acked  uint64 // guarded by mu
	fenced atomic.Pointer[error]

	resolved atomic.Uint64
	// maxWritten is the highest commit ts Write committed. A Read whose
	// range starts at or above it has nothing to find and opens no
	// iterator: most reads of an idle table are that, and at 10,000 tables
	// their iterators were a fifth of a server's CPU.
	maxWritten atomic.Uint64

	eventsIn, eventsOut, bytesIn, bytesOut atomic.Int64
	ackedSnapshot                          atomic.Uint64
}

func newPipeline(e *Engine, id PipelineID, epoch, slot uint64) *Pipeline {
	return &Pipeline{e: e, id: id, epoch: epoch, slot: slot}
}

// ID returns the pipeline's identity.
func (p *Pipeline) ID() PipelineID { return p.id }

// Epoch returns the epoch this handle was opened at.
func (p *Pipeline) Epoch() uint64 { return p.epoch }

// fence makes every later call on the handle fail with err. It does not
// wait for a Write in flight, which may be stalled in pebble for as long
// as the disk needs: such a Write may still commit into the handle's slot
// after the engine deleted it, so Write checks the fence again after its
// commit and has the slot deleted once more (see Write).
func (p *Pipeline) fence(err error) {
	p.fenced.CompareAndSwap(nil, &err)
}

func (p *Pipeline) fenceErr() error {
	if e := p.fenced.Load(); e != nil {
		return fmt.Errorf("%w: pipeline %s epoch %d", *e, p.id, p.epoch)
	}
	return nil
}

// Write stores events in one pebble batch. Events may arrive in any order
// and any batch boundaries; an event identical in (commit ts, start ts, key)
// to one already stored replaces it, so a re-sent event (region
// reconnect) is delivered once if it arrives before it is read. Events
// with commit ts ≤ the acked ts are dropped: the downstream has them, and
// their range is already deleted.
//
// The commit does not sync: there is no WAL (see Open) because the data is
// reproducible from the puller. Write blocks when the memtables are full
// and waiting to flush; that is the engine's backpressure on the puller.
func (p *Pipeline) Write(events []*tidestreamv1.RawKVEvent) error {
	if len(events) == 0 {
		return nil
	}
	if err := p.e.acquire(); err != nil {
		return err
	}
	defer p.e.release()
	committed, err := p.write(events)
	if err != nil {
		return err
	}
	if committed {
		// A fence that came while this write was in pebble deleted the
		// slot, perhaps before the commit: the engine deletes it again
		// after it. Pebble orders the fence's deletion and this commit by
		// sequence number, so a commit after the deletion always sees the
		// fence here.
		if err := p.fenceErr(); err != nil {
			p.e.doom(p.slot)
			return err
		}
	}
	return nil
}

// write commits events under mu (shared) and says whether it committed
// anything.
func (p *Pipeline) write(events []*tidestreamv1.RawKVEvent) (bool, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if err := p.fenceErr(); err != nil {
		return false, err
	}
	size := 0
	for _, ev := range events {
		if err := validateEvent(ev); err != nil {
			return false, fmt.Errorf("pipeline %s: %w", p.id, err)
		}
		size += encodedKeyLen(ev) + encodedValueLen(ev) + 16
	}
	b := p.e.db.NewBatchWithSize(size)
	defer b.Close()
	var n, bytes int64
	var top uint64
	for _, ev := range events {
		if ev.CommitTs <= p.acked {
			continue
		}
		top = max(top, ev.CommitTs)
		op := b.SetDeferred(encodedKeyLen(ev), encodedValueLen(ev))
		putKey(op.Key, p.slot, ev)
		putValue(op.Value, ev)
		if err := op.Finish(); err != nil {
			return false, fmt.Errorf("%w: batch: %w", ErrStorage, err)
		}
		n++
		bytes += int64(eventSize(ev))
	}
	if n == 0 {
		return false, nil
	}
	if k := p.e.cfg.Knobs; k != nil && k.BeforeCommit != nil {
		k.BeforeCommit(p.id)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return false, fmt.Errorf("%w: commit: %w", ErrStorage, err)
	}
	// Raised after the commit and before Write returns, so before the
	// Resolve that covers these events: a Read up to that resolved ts
	// sees it.
	for {
		cur := p.maxWritten.Load()
		if top <= cur || p.maxWritten.CompareAndSwap(cur, top) {
			break
		}
	}
	p.eventsIn.Add(n)
	p.bytesIn.Add(bytes)
	p.e.metrics.eventsIn.Add(context.Background(), n)
	p.e.metrics.bytesIn.Add(context.Background(), bytes)
	return true, nil
}

// Resolve records the puller's resolved ts: every event with commit ts ≤ ts
// has been passed to Write (and Write returned). Lower values are ignored,
// so the resolved ts is monotonic.
func (p *Pipeline) Resolve(ts uint64) {
	for {
		cur := p.resolved.Load()
		if ts <= cur || p.resolved.CompareAndSwap(cur, ts) {
			return
		}
	}
}

// Resolved returns the highest ts passed to Resolve.
func (p *Pipeline) Resolved() uint64 { return p.resolved.Load() }

// Read calls fn with the stored events whose commit ts is in (after, upTo],
// in (commit ts, start ts, key) order, and returns next: the highest ts
// such that every event with commit ts in (after, next] was passed to fn.
// Resume with Read(next, ...).
//
// Contract:
//   - upTo must not exceed Resolved(): ErrBeyondResolved otherwise, since a
//     commit ts above the resolved ts may still be receiving events.
//   - Commit ts groups are atomic: Read only stops between two commit ts,
//     never inside one, so next is always either upTo (everything
//     delivered) or the commit ts of the last event delivered. A caller
//     that sends a resolved ts equal to next after the events therefore
//     never splits a commit ts across it.
//   - limitBytes > 0 is a soft limit on the payload (key + value + old
//     value) per call: once reached, Read stops at the next commit ts
//     boundary. A single commit ts larger than the limit is still delivered
//     whole; fn sees it event by event, so the caller can stream it out in
//     pieces without holding it.
//   - If fn returns ErrStop (or an error wrapping it), Read finishes the
//     current commit ts (fn keeps being called for its remaining events)
//     and returns (that commit ts, nil).
//   - Any other fn error stops at once and is returned with next = the
//     last fully delivered commit ts (or after). The events of the partly
//     delivered commit ts will be delivered again by the next Read; the
//     caller must discard what it received of that group.
//   - Events with commit ts ≤ after are never delivered, even if written
//     late; events written after Read began may or may not be seen.
//
// fn owns each event it receives (its byte slices are not reused). The
// iterator behind a Read pins the memtables and sstables it started on, so
// a callback that blocks for long (a stalled downstream in the middle of a
// huge commit ts) keeps that memory and disk from being reclaimed; callers
// should stop with ErrStop or limitBytes rather than block inside fn.
func (p *Pipeline) Read(after, upTo uint64, limitBytes int, fn func(ev *tidestreamv1.RawKVEvent) error) (next uint64, err error) {
	if err := p.e.acquire(); err != nil {
		return after, err
	}
	defer p.e.release()
	if err := p.fenceErr(); err != nil {
		return after, err
	}
	if r := p.Resolved(); upTo > r {
		return after, fmt.Errorf("%w: pipeline %s upTo %d, resolved %d", ErrBeyondResolved, p.id, upTo, r)
	}
	if upTo <= after {
		return after, nil
	}
	if p.maxWritten.Load() <= after {
		return upTo, nil
	}
	iter, err := p.e.db.NewIter(&pebble.IterOptions{
		LowerBound: afterBound(p.slot, after),
		UpperBound: afterBound(p.slot, upTo),
	})
	if err != nil {
		return after, fmt.Errorf("%w: new iterator: %w", ErrStorage, err)
	}
	var (
		next_   = after
		cur     uint64 // commit ts of the group being delivered; 0 before the first
		pause   bool
		read    int
		n, size int64
	)
	defer func() {
		p.eventsOut.Add(n)
		p.bytesOut.Add(size)
		p.e.metrics.eventsOut.Add(context.Background(), n)
		if cerr := iter.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("%w: close iterator: %w", ErrStorage, cerr)
		}
	}()
	for valid := iter.First(); valid; valid = iter.Next() {
		k := iter.Key()
		if len(k) < keyHeader {
			return next_, fmt.Errorf("%w: short key %x", ErrCorrupt, k)
		}
		commit := binary.BigEndian.Uint64(k[slotLen:])
		if commit != cur {
			if cur != 0 {
				// The previous group is complete.
				next_ = cur
				if pause || (limitBytes > 0 && read >= limitBytes) {
					return next_, nil
				}
			}
			cur = commit
		}
		v, err := iter.ValueAndErr()
		if err != nil {
			return next_, fmt.Errorf("%w: value: %w", ErrStorage, err)
		}
		ev, sz, err := decodeEvent(k, v)
		if err != nil {
			return next_, err
		}
		read += sz
		n++
		size += int64(sz)
		if err := fn(ev); err != nil {
			if !errors.Is(err, ErrStop) {
				return next_, err
			}
			pause = true
		}
	}
	if err := iter.Error(); err != nil {
		return next_, fmt.Errorf("%w: iterate: %w", ErrStorage, err)
	}
	return upTo, nil
}

// Ack declares that the downstream has everything with commit ts ≤ ts: the
// range is deleted (one DeleteRange covering (previous ack, ts], so
// tombstones never overlap and iterators do not pay for stacked ones) and
// handed to the compactor, which reclaims the disk space (see compactor).
// Acks at or below the previous one are no-ops. An ack above the resolved
// ts is allowed (the downstream may have consumed it in an earlier run);
// later writes at or below it are dropped.
func (p *Pipeline) Ack(ts uint64) error {
	if err := p.e.acquire(); err != nil {
		return err
	}
	defer p.e.release()
	end, err := p.deleteAcked(ts)
	if err != nil || end == nil {
		return err
	}
	// Outside p.mu, which is never held while taking Engine.mu.
	p.e.notePending(p.slot, slotPrefix(p.slot), end)
	return nil
}

// deleteAcked range-deletes (acked, ts] and returns the end of the deleted
// range, or nil if there was nothing to delete.
func (p *Pipeline) deleteAcked(ts uint64) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.fenceErr(); err != nil {
		return nil, err
	}
	if ts <= p.acked {
		return nil, nil
	}
	start, end := afterBound(p.slot, p.acked), afterBound(p.slot, ts)
	if err := p.e.db.DeleteRange(start, end, pebble.NoSync); err != nil {
		return nil, fmt.Errorf("%w: delete acked range: %w", ErrStorage, err)
	}
	p.acked = ts
	p.ackedSnapshot.Store(ts)
	return end, nil
}

func (p *Pipeline) stats() PipelineStats {
	return PipelineStats{
		ID:        p.id,
		Epoch:     p.epoch,
		Resolved:  p.Resolved(),
		Acked:     p.ackedSnapshot.Load(),
		EventsIn:  p.eventsIn.Load(),
		EventsOut: p.eventsOut.Load(),
		BytesIn:   p.bytesIn.Load(),
		BytesOut:  p.bytesOut.Load(),
	}
}
