package service

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"time"

	"github.com/pingcap/tidb/pkg/tablecodec"
	"github.com/pingcap/tidb/pkg/util/codec"
	"google.golang.org/grpc/codes"

	"github.com/tidestream/tidestream/encoder/schema"
	"github.com/tidestream/tidestream/proto/contract"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// history is one schema history of a changefeed in this process: a meta
// snapshot at start plus the DDL-job stream after it, which it follows
// through a sorter like any pipeline. Pipelines whose from_ts is at or
// above start share it.
type history struct {
	f     *feed
	start uint64
	h     *schema.History

	// id and epoch name its DDL pipeline on the sorter: one per history
	// of this process, so histories never fence each other. The epoch is
	// raised (under feed.mu) when the stream moves to another route.
	id    int64
	epoch uint64

	ctx    context.Context // ends when the history stops or fails; the cause says which
	cancel context.CancelCauseFunc
	done   chan struct{}

	// Guarded by feed.mu.
	refs    int
	route   *tidestreamv1.Route // the DDL stream's: one an attached pipeline uses (rerouteLocked)
	restart context.CancelFunc  // ends the current DDL stream, which then subscribes again on route
	pipes   map[*pipe]struct{}
	idle    *time.Timer
	stopped bool
	forgot  uint64 // the highest ts passed to Forget: lookups below it fail
	// nextForget: acks run forgetLocked no earlier than this (f.mu).
	nextForget time.Time
}

// serves reports whether a pipeline starting at fromTs can use the
// history: it starts at or below fromTs, has not released the versions in
// force at fromTs, and runs. f.mu held.
func (hi *history) serves(fromTs uint64) bool {
	return hi.start <= fromTs && hi.forgot <= fromTs && hi.failed() == nil
}

// jobSpan is mysql.tidb_ddl_job's record span in the encoded key space of
// SubscribeRequest spans.
func jobSpan() *tidestreamv1.Span {
	prefix := tablecodec.GenTableRecordPrefix(schema.JobTableID)
	return &tidestreamv1.Span{
		StartKey: codec.EncodeBytes(nil, prefix),
		EndKey:   codec.EncodeBytes(nil, prefix.PrefixNext()),
	}
}

// ddlPipelineID derives a history's DDL pipeline id from the member id and
// a per-process sequence number. Negative ids are the DDL pipelines'; the
// owner numbers table pipelines from 1.
func ddlPipelineID(member string, seq uint64) int64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d", member, seq)
	return -int64(h.Sum64()>>1) - 1
}

// rerouteLocked moves the DDL stream to an attached pipeline's route when
// none of them uses its current one any more: the owner moved them all off
// it, most likely because its puller or sorter died, which the sorter
// would otherwise retry in place for ever while every pipeline here waits
// on the history. A new epoch makes the sorter start the DDL pipeline
// afresh on the new route. While some attached pipeline still uses the
// route, it stays: pipelines of one changefeed spread over several pullers
// must not make the stream hop between them. f.mu held.
func (hi *history) rerouteLocked() {
	if len(hi.pipes) == 0 {
		return
	}
	var (
		next   *tidestreamv1.Route
		nextID int64
	)
	for p := range hi.pipes {
		r := p.req.GetRoute()
		if r == nil {
			continue
		}
		if sameUpstream(r, hi.route) {
			return
		}
		if id := p.req.GetPipelineId(); next == nil || id < nextID { // any will do; the same one every time
			next, nextID = r, id
		}
	}
	if next == nil {
		return
	}
	hi.route = next
	if hi.restart != nil {
		hi.epoch++
		hi.restart()
	}
}

// sameUpstream reports whether two routes reach the same sorter, puller and
// PD: what the DDL stream uses of a route.
func sameUpstream(a, b *tidestreamv1.Route) bool {
	return a.GetSorterAddr() == b.GetSorterAddr() && a.GetPullerAddr() == b.GetPullerAddr() &&
		slices.Equal(a.GetPdAddrs(), b.GetPdAddrs())
}

// failed returns why the history stopped, or nil while it runs.
func (hi *history) failed() error {
	if hi.ctx.Err() == nil {
		return nil
	}
	return context.Cause(hi.ctx)
}

// wait blocks until the history is resolved to ts, the history fails, or
// ctx ends.
func (hi *history) wait(ctx context.Context, ts uint64) error {
	if hi.h.Resolved() >= ts {
		return nil
	}
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(hi.ctx, func() { cancel(context.Cause(hi.ctx)) })
	defer stop()
	if err := hi.h.WaitResolved(wctx, ts); err != nil {
		return context.Cause(wctx)
	}
	return nil
}

// follow keeps the DDL stream going until the history is stopped, applying
// jobs and resolved ts to it. A transient failure is retried in place from
// the history's resolved ts (AddJob ignores what it has already seen);
// anything else fails the history, and with it its pipelines.
func (hi *history) follow(dec *schema.JobDecoder) {
	defer close(hi.done)
	s := hi.f.s
	backoff := s.cfg.RetryBackoff
	for {
		progressed, err := hi.followOnce(dec)
		if hi.ctx.Err() != nil {
			return
		}
		if contract.Classify(err) != contract.Transient {
			s.log.Warn("schema history failed", "changefeed", hi.f.key.Changefeed, "start", hi.start, "err", err)
			hi.cancel(historyError{err})
			return
		}
		if progressed {
			backoff = s.cfg.RetryBackoff
		}
		s.log.Info("DDL stream ended; re-subscribing", "changefeed", hi.f.key.Changefeed, "from", hi.h.Resolved(), "backoff", backoff, "err", err)
		select {
		case <-hi.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, s.cfg.MaxRetryBackoff)
	}
}

func (hi *history) followOnce(dec *schema.JobDecoder) (progressed bool, err error) {
	s := hi.f.s
	ctx, cancel := context.WithCancel(hi.ctx)
	defer cancel()
	hi.f.mu.Lock()
	route, epoch := hi.route, hi.epoch
	hi.restart = cancel
	hi.f.mu.Unlock()
	up, err := s.sorter(route)
	if err != nil {
		return false, err
	}
	req := &tidestreamv1.SubscribeRequest{
		ChangefeedId: hi.f.key.Changefeed, Namespace: hi.f.key.Namespace, PipelineId: hi.id, Epoch: epoch,
		FromTs: hi.h.Resolved(), Spans: []*tidestreamv1.Span{jobSpan()}, Route: route,
	}
	stream, err := up.Subscribe(ctx, req)
	if err != nil {
		return false, err
	}
	var lastAck time.Time
	for {
		b, err := stream.Recv()
		if err != nil {
			return progressed, err
		}
		for _, ev := range b.GetEvents() {
			if ev.GetOp() != tidestreamv1.OpType_OP_TYPE_PUT {
				continue // a job leaving the queue
			}
			job, err := dec.Decode(ev.GetKey(), ev.GetValue(), ev.GetStartTs(), ev.GetCommitTs())
			if err != nil {
				return progressed, contract.Status(contract.Fatal, codes.Internal, "encoder: DDL job at commit ts %d: %v", ev.GetCommitTs(), err)
			}
			if job == nil {
				continue
			}
			if err := hi.h.AddJob(schema.JobEvent{Job: job, CommitTs: ev.GetCommitTs()}); err != nil {
				return progressed, contract.Status(contract.Fatal, codes.Internal, "encoder: DDL job %d (%s): %v", job.ID, job.Query, err)
			}
		}
		if r := b.GetResolvedTs(); r > hi.h.Resolved() {
			if err := hi.h.AdvanceResolved(r); err != nil {
				return progressed, contract.Status(contract.Fatal, codes.Internal, "encoder: apply DDL up to %d: %v", r, err)
			}
			progressed = true
			// The history holds what it needs in memory, and a restarted
			// encoder rebuilds from a new snapshot: the sorter may drop
			// the jobs at once. Once a second is plenty for disk.
			if time.Since(lastAck) < time.Second {
				continue
			}
			lastAck = time.Now()
			if _, err := up.Ack(ctx, &tidestreamv1.PipelineProgress{ChangefeedId: req.ChangefeedId, Namespace: req.Namespace,
				PipelineId: hi.id, Epoch: epoch, CheckpointTs: r}); err != nil && ctx.Err() == nil {
				s.log.Debug("ack DDL pipeline", "changefeed", hi.f.key.Changefeed, "err", err)
			}
		}
	}
}

// forget releases the versions no pipeline of the history needs: below the
// smallest acknowledged (or requested) ts of its pipelines. f.mu held.
func (hi *history) forgetLocked() {
	low := uint64(0)
	first := true
	for p := range hi.pipes {
		if a := p.low(); first || a < low {
			low, first = a, false
		}
	}
	if !first && low > hi.forgot {
		hi.h.Forget(low)
		hi.forgot = low
	}
}

// historyError marks the failure of a history, so that its pipelines
// report it as the DDL stream's, with that stream's outcome.
type historyError struct{ err error }

func (e historyError) Error() string { return "schema history: " + e.err.Error() }
func (e historyError) Unwrap() error { return e.err }

var errHistoryIdle = errors.New("schema history: no pipeline uses it")
