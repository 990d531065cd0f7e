package service

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/tidestream/tidestream/encoder/mount"
	"github.com/tidestream/tidestream/encoder/registry"
	"github.com/tidestream/tidestream/encoder/row"
	"github.com/tidestream/tidestream/encoder/schema"
	"github.com/tidestream/tidestream/proto/contract"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// pipe is one table pipeline's stream at one epoch.
//
// Goroutines: the receiver pulls the sorter and cuts the events into
// chunks at transaction boundaries; each chunk is encoded by a goroutine of
// its own (waiting for the schema history, then for one of the service's
// workers, which it gives back while it waits on the schema registry), so
// one busy pipeline uses several cores; the sender sends the
// chunks' batches strictly in the order they were cut. The ordered queue
// between receiver and sender holds at most Config.InFlight chunks, which
// bounds the pipeline's memory and pushes back on the sorter.
type pipe struct {
	s     *Service
	key   contract.PipelineKey
	epoch uint64
	req   *tidestreamv1.SubscribeRequest
	f     *feed
	hi    *history

	sentResolved atomic.Uint64 // highest resolved ts sent to the producer
	acked        atomic.Uint64 // max(from_ts, producer's acks)
}

// low is the smallest commit ts − 1 the pipeline may still decode a row at.
func (p *pipe) low() uint64 { return p.acked.Load() }

// chunk is a run of whole transactions, encoded into one batch.
type chunk struct {
	seq       int
	events    []*tidestreamv1.RawKVEvent
	maxCommit uint64
	resolved  uint64
	size      int // raw bytes of the events
	last      pos // of the chunk's last event, ignored ones included
	hasLast   bool
	// split, when set, is a transaction this chunk holds a piece of
	// (Config.SplitTxnBytes); prev is the previous piece's done, which
	// this one's encoding waits for.
	split *splitTxn
	prev  <-chan struct{}

	done chan struct{}
	out  *tidestreamv1.EncodedBatch
	err  error
}

// pos is an event's place in the sorter's total order.
type pos struct {
	commit, start uint64
	key           []byte
}

func posOf(ev *tidestreamv1.RawKVEvent) pos {
	return pos{ev.GetCommitTs(), ev.GetStartTs(), ev.GetKey()}
}

func (a pos) compare(b pos) int {
	return cmp.Or(cmp.Compare(a.commit, b.commit), cmp.Compare(a.start, b.start), bytes.Compare(a.key, b.key))
}

func (p *pipe) run(ctx context.Context, stream grpc.ServerStreamingServer[tidestreamv1.EncodedBatch]) error {
	g, gctx := errgroup.WithContext(ctx)
	queue := make(chan *chunk, p.s.cfg.InFlight)
	var encoders sync.WaitGroup
	g.Go(func() error {
		defer close(queue)
		return p.receive(gctx, queue, &encoders)
	})
	g.Go(func() error { return p.send(gctx, queue, stream) })
	err := g.Wait()
	// The chunks' goroutines end with gctx; the stream is not over until
	// they are.
	encoders.Wait()
	return err
}

// receiver is the receive loop's state, kept across re-subscriptions.
type receiver struct {
	p        *pipe
	queue    chan<- *chunk
	encoders *sync.WaitGroup
	seq      int
	from     uint64 // resolved ts received last: where a re-subscription starts
	emitted  pos    // last event of a queued chunk
	any      bool   // whether emitted is set

	cur     *chunk // being filled; whole transactions, and pieces of one split
	curSize int
	txn     []*tidestreamv1.RawKVEvent // the transaction being received
	txnSize int                        // raw bytes of txn
	// split is the transaction being sent in pieces, prev the done of
	// its last piece queued. Kept across re-subscriptions: its queued
	// pieces were sent.
	split     *splitTxn
	splitPrev <-chan struct{}
}

// splitTxn is a transaction sent in pieces: the Kafka keys its pieces
// wrote so far (topic and key, as 128-bit hashes), which a tombstone in a
// later piece must not erase. A transaction writes each row key once, so
// such a tombstone is another row's that had the key before this one took
// it (a unique key passed on, a key swapped): in one piece deletes go
// first, and dropping it across pieces leaves the key as the transaction
// left it.
type splitTxn struct {
	commit, start uint64
	seeds         [2]maphash.Seed
	written       map[[2]uint64]struct{}
	pieces        int
}

func newSplitTxn(commit, start uint64) *splitTxn {
	return &splitTxn{commit: commit, start: start, seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}, written: map[[2]uint64]struct{}{}}
}

func (t *splitTxn) holds(r *row.Row) bool { return r.CommitTs == t.commit && r.StartTs == t.start }

// keep says whether rec goes out, and remembers the keys written.
func (t *splitTxn) keep(rec *tidestreamv1.EncodedRecord) bool {
	var h [2]uint64
	for i, seed := range t.seeds {
		var mh maphash.Hash
		mh.SetSeed(seed)
		_, _ = mh.WriteString(rec.GetTopic())
		_ = mh.WriteByte(0)
		_, _ = mh.Write(rec.GetKey())
		h[i] = mh.Sum64()
	}
	if rec.GetTombstone() {
		_, wrote := t.written[h]
		return !wrote
	}
	t.written[h] = struct{}{}
	return true
}

// receive keeps a subscription to the sorter going and feeds the queue. A
// transient failure is retried from the last resolved ts received; the
// events the sorter sends again up to the last one already queued are
// skipped, so the producer sees each event once.
func (p *pipe) receive(ctx context.Context, queue chan<- *chunk, encoders *sync.WaitGroup) error {
	r := &receiver{p: p, queue: queue, encoders: encoders, from: p.req.GetFromTs()}
	backoff := p.s.cfg.RetryBackoff
	for {
		progressed, err := r.once(ctx)
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if contract.Classify(err) != contract.Transient {
			return err
		}
		if progressed {
			backoff = p.s.cfg.RetryBackoff
		}
		p.s.m.retries.Add(ctx, 1)
		p.s.log.Info("sorter stream ended; re-subscribing", "changefeed", p.key.Changefeed, "pipeline", p.key.Pipeline,
			"epoch", p.epoch, "from", r.from, "backoff", backoff, "err", err)
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, p.s.cfg.MaxRetryBackoff)
	}
}

func (r *receiver) once(ctx context.Context) (progressed bool, err error) {
	p := r.p
	// What was received but not queued is received again.
	r.cur, r.curSize, r.txn, r.txnSize = nil, 0, nil, 0
	up, err := p.s.sorter(p.req.GetRoute())
	if err != nil {
		return false, err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req := &tidestreamv1.SubscribeRequest{
		ChangefeedId: p.req.GetChangefeedId(), Namespace: p.req.GetNamespace(), PipelineId: p.req.GetPipelineId(),
		Epoch: p.epoch, FromTs: r.from, Spans: p.req.GetSpans(), Route: p.req.GetRoute(),
	}
	stream, err := up.Subscribe(sctx, req)
	if err != nil {
		return false, upstreamError{err}
	}
	for {
		b, err := stream.Recv()
		if err != nil {
			return progressed, upstreamError{err}
		}
		p.s.m.eventsIn.Add(ctx, int64(len(b.GetEvents())))
		for _, ev := range b.GetEvents() {
			if r.any && posOf(ev).compare(r.emitted) <= 0 {
				continue // sent before the re-subscription
			}
			if len(r.txn) > 0 && (ev.GetCommitTs() != r.txn[0].GetCommitTs() || ev.GetStartTs() != r.txn[0].GetStartTs()) {
				if err := r.endTxn(ctx); err != nil {
					return progressed, err
				}
			}
			r.txn = append(r.txn, ev)
			r.txnSize += len(ev.GetKey()) + len(ev.GetValue()) + len(ev.GetOldValue())
			if r.txnSize >= p.s.cfg.SplitTxnBytes {
				if err := r.splitTxn(ctx); err != nil {
					return progressed, err
				}
			}
		}
		if res := b.GetResolvedTs(); res > 0 {
			// The sorter never splits a commit ts across a resolved ts, so
			// the open transaction is whole.
			if len(r.txn) > 0 {
				if err := r.endTxn(ctx); err != nil {
					return progressed, err
				}
			}
			if r.cur == nil {
				r.cur = &chunk{}
			}
			r.cur.resolved = res
			if err := r.flush(ctx); err != nil {
				return progressed, err
			}
			if t := r.split; t != nil && res >= t.commit {
				p.s.log.Info("large transaction sent", "changefeed", p.key.Changefeed, "pipeline", p.key.Pipeline,
					"commit_ts", t.commit, "pieces", t.pieces)
				r.split, r.splitPrev = nil, nil
			}
			r.from = res
			progressed = true
		}
	}
}

// endTxn moves the received transaction into the chunk being filled,
// flushing the chunk once it is full. A transaction up to SplitTxnBytes is
// never split over chunks: mount.OrderTxns sees all of it to put its
// deletes first. A larger one's last piece ends here.
func (r *receiver) endTxn(ctx context.Context) error {
	if t := r.split; t != nil && t.commit == r.txn[0].GetCommitTs() && t.start == r.txn[0].GetStartTs() {
		// Its last piece. r.split stays until a resolved ts passes the
		// transaction: should the stream break before this chunk is
		// queued, the rest comes again and is still this transaction's.
		if err := r.piece(ctx); err != nil {
			return err
		}
	} else if err := r.take(); err != nil {
		return err
	}
	if r.curSize >= r.p.s.cfg.ChunkBytes {
		return r.flush(ctx)
	}
	return nil
}

// splitTxn queues what was received of a transaction too large for one
// chunk as a piece of it (Config.SplitTxnBytes).
func (r *receiver) splitTxn(ctx context.Context) error {
	first := r.txn[0]
	if t := r.split; t == nil || t.commit != first.GetCommitTs() || t.start != first.GetStartTs() {
		r.split, r.splitPrev = newSplitTxn(first.GetCommitTs(), first.GetStartTs()), nil
		r.p.s.log.Info("large transaction: encoding and sending it in pieces", "changefeed", r.p.key.Changefeed,
			"pipeline", r.p.key.Pipeline, "commit_ts", first.GetCommitTs(), "start_ts", first.GetStartTs(), "piece_bytes", r.p.s.cfg.SplitTxnBytes)
	}
	if err := r.piece(ctx); err != nil {
		return err
	}
	c := r.cur
	if err := r.flush(ctx); err != nil {
		return err
	}
	r.splitPrev = c.done
	return nil
}

// piece moves the received part of the split transaction into the chunk
// being filled, which holds pieces of no other: a chunk's rows of its
// split transaction are filtered as that transaction's.
func (r *receiver) piece(ctx context.Context) error {
	if r.cur != nil && r.cur.split != nil && r.cur.split != r.split {
		if err := r.flush(ctx); err != nil {
			return err
		}
	}
	if err := r.take(); err != nil {
		return err
	}
	r.cur.split, r.cur.prev = r.split, r.splitPrev
	r.split.pieces++
	return nil
}

// take moves the received transaction (or part) into the chunk being
// filled.
func (r *receiver) take() error {
	if r.cur == nil {
		r.cur = &chunk{}
	}
	for _, ev := range r.txn {
		if _, ignored := r.p.f.cfg.ignoreTxns[ev.GetStartTs()]; ignored {
			continue
		}
		r.cur.events = append(r.cur.events, ev)
		r.curSize += len(ev.GetKey()) + len(ev.GetValue()) + len(ev.GetOldValue())
		r.cur.maxCommit = max(r.cur.maxCommit, ev.GetCommitTs())
	}
	r.cur.last = posOf(r.txn[len(r.txn)-1])
	r.cur.hasLast = true
	clear(r.txn) // the chunk holds the events now
	r.txn, r.txnSize = r.txn[:0], 0
	return nil
}

// flush queues the chunk being filled and starts its encoding.
func (r *receiver) flush(ctx context.Context) error {
	c := r.cur
	if c == nil {
		return nil
	}
	c.size = r.curSize
	r.cur, r.curSize = nil, 0
	if c.hasLast {
		// Queued: from here on a re-subscription must not pass these
		// events on again. (Before, they are dropped with the chunk and
		// received again.)
		r.emitted, r.any = c.last, true
	}
	c.seq = r.seq
	r.seq++
	c.done = make(chan struct{})
	select {
	case r.queue <- c:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	if len(c.events) == 0 {
		c.out = &tidestreamv1.EncodedBatch{ResolvedTs: c.resolved}
		close(c.done)
		return nil
	}
	p := r.p
	r.encoders.Go(func() {
		defer close(c.done)
		c.out, c.err = p.encode(ctx, c)
	})
	return nil
}

// send sends the chunks' batches in order. While it waits on a chunk stalled
// on the registry it sends the stall as a warning every WarnInterval.
func (p *pipe) send(ctx context.Context, queue <-chan *chunk, stream grpc.ServerStreamingServer[tidestreamv1.EncodedBatch]) error {
	tick := time.NewTicker(p.s.cfg.WarnInterval)
	defer tick.Stop()
	for {
		var c *chunk
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case c = <-queue:
			if c == nil {
				return nil // the receiver ended; its error is the group's
			}
		}
	wait:
		for {
			select {
			case <-ctx.Done():
				return context.Cause(ctx)
			case <-c.done:
				break wait
			case <-tick.C:
				if n, err := p.f.reg.Retrying(); n > 0 && err != nil {
					if err := stream.Send(&tidestreamv1.EncodedBatch{Warning: "schema registry: " + err.Error()}); err != nil {
						return fmt.Errorf("encoder service: send: %w", err)
					}
				}
			}
		}
		if c.err != nil {
			return c.err
		}
		if len(c.out.GetRecords()) == 0 && c.out.GetResolvedTs() == 0 {
			continue
		}
		if err := stream.Send(c.out); err != nil {
			return fmt.Errorf("encoder service: send: %w", err)
		}
		p.s.m.recordsOut.Add(ctx, int64(len(c.out.GetRecords())))
		if res := c.out.GetResolvedTs(); res > p.sentResolved.Load() {
			p.sentResolved.Store(res)
		}
	}
}

// encode turns a chunk into its batch: it waits until the schema history
// covers the chunk and for a worker, mounts the events with the schema at
// each commit ts − 1, orders each transaction's rows, and encodes them.
func (p *pipe) encode(ctx context.Context, c *chunk) (*tidestreamv1.EncodedBatch, error) {
	if err := p.hi.wait(ctx, c.maxCommit-1); err != nil {
		return nil, err
	}
	// A history fails before it publishes the resolved ts of the job that
	// failed it, so seeing the ts means seeing the failure.
	if err := p.hi.failed(); err != nil {
		return nil, err
	}
	if c.prev != nil {
		// The previous piece of the same transaction first: it records
		// the keys this one's tombstones are checked against. Waiting
		// holds no worker, so the previous piece can get one.
		select {
		case <-c.prev:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
	w := &worker{s: p.s}
	if err := w.acquire(ctx); err != nil {
		return nil, err
	}
	defer w.release()
	if k := p.s.cfg.Knobs.BeforeEncode; k != nil {
		k(c.seq)
	}
	f := p.f
	m := f.mounters.Get().(*mount.Mounter)
	defer f.mounters.Put(m)
	var tabs *versionTables
	rows := make([]row.Row, 0, len(c.events))
	for {
		var err error
		tabs = &versionTables{h: p.hi.h}
		if rows, err = mountAll(m, c.events, tabs, rows[:0]); err == nil {
			break
		}
		var unknown *schema.UnknownError
		if !errors.As(err, &unknown) || p.hi.h.Knows(unknown.PhysicalID) {
			// Never skipped: a row we cannot read is a row we would lose.
			return nil, contract.Status(contract.Fatal, codes.Internal, "encoder: pipeline %d: %v", p.key.Pipeline, err)
		}
		w.release() // waiting on the DDL stream uses no CPU
		if err := p.waitForTable(ctx, unknown); err != nil {
			return nil, err
		}
		if err := w.acquire(ctx); err != nil {
			return nil, err
		}
	}
	mount.OrderTxns(rows)
	out := &tidestreamv1.EncodedBatch{Records: make([]*tidestreamv1.EncodedRecord, 0, len(rows)), ResolvedTs: c.resolved}
	// One allocation for all records and one (amortised) for their bytes:
	// per-row allocations are what the encoder's cost is made of.
	recs := make([]tidestreamv1.EncodedRecord, len(rows))
	// Avro is about as long as TiDB's row format; the frames and keys add a
	// few bytes a row. Growing by append would allocate the lot twice.
	arena := make([]byte, 0, c.size+16*len(rows))
	var subj subjects
	skipped, elsewhere := 0, 0
	table := p.req.GetTableId()
	for i := range rows {
		r := &rows[i]
		v := tabs.version(r.Table)
		if v == nil {
			return nil, contract.Status(contract.Restart, codes.Internal, "encoder: pipeline %d: a row of %s.%s came with a table version the history did not hand out", p.key.Pipeline, r.Table.Schema, r.Table.Name)
		}
		if table != 0 && v.LogicalID != table {
			// Its physical id was exchanged with another table's: at
			// this commit ts it is that table's row, which that table's
			// pipeline reads too and delivers, in order with its others.
			elsewhere++
			continue
		}
		if v.Eligibility != schema.Eligible {
			// The table stopped being replicated at this version (its
			// last unique key dropped, renamed out of the filter): the
			// owner stops the pipeline at the DDL; rows in between are
			// not the changefeed's.
			skipped++
			p.s.skipped(p.key, v)
			continue
		}
		rec := &recs[i]
		if err := p.encodeRow(ctx, w, r, v, rec, &arena, &subj); err != nil {
			return nil, err
		}
		if c.split != nil && c.split.holds(r) && !c.split.keep(rec) {
			continue
		}
		out.Records = append(out.Records, rec)
	}
	if skipped > 0 {
		p.s.m.skipped.Add(ctx, int64(skipped))
	}
	if elsewhere > 0 {
		p.s.m.elsewhere.Add(ctx, int64(elsewhere))
	}
	return out, nil
}

func mountAll(m *mount.Mounter, events []*tidestreamv1.RawKVEvent, tabs *versionTables, rows []row.Row) ([]row.Row, error) {
	for _, ev := range events {
		var err error
		if rows, err = m.Mount(ev, tabs, rows); err != nil {
			return rows, err
		}
	}
	return rows, nil
}

// unknownTableWait bounds waitForTable. A REORGANIZE PARTITION of a large
// table backfills for as long as the copy takes, and a user would rather
// see the changefeed fail with the id named than stall without end.
const unknownTableWait = 30 * time.Minute

// waitForTable waits until the schema history knows the id of a row it
// could not place. TiDB writes rows into the new partition ids of TRUNCATE
// and REORGANIZE PARTITION before the DDL finishes, so such a row can reach
// the encoder while the DDL that names its id is still to come; the
// history then decodes it with its table's schema at the row's ts.
func (p *pipe) waitForTable(ctx context.Context, u *schema.UnknownError) error {
	p.s.log.Info("rows of a table id the schema history does not know yet; waiting for the DDL that adds it",
		"changefeed", p.key.Changefeed, "pipeline", p.key.Pipeline, "table_id", u.PhysicalID, "ts", u.Ts)
	wctx, cancel := context.WithTimeout(ctx, unknownTableWait)
	defer cancel()
	for !p.hi.h.Knows(u.PhysicalID) {
		if err := p.hi.wait(wctx, p.hi.h.Resolved()+1); err != nil {
			if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				return contract.Status(contract.Fatal, codes.Internal,
					"encoder: pipeline %d: rows of table id %d at ts %d, which no DDL in %v named (a partition DDL that never finished?): %v",
					p.key.Pipeline, u.PhysicalID, u.Ts, unknownTableWait, schema.ErrUnknown)
			}
			return err
		}
		if err := p.hi.failed(); err != nil {
			return err
		}
	}
	return nil
}

// subjects caches the registry subjects of the last topic: a chunk's rows
// mostly share one.
type subjects struct{ topic, key, value string }

func (s *subjects) of(topic string) *subjects {
	if s.topic != topic || s.key == "" {
		*s = subjects{topic: topic, key: registry.KeySubject(topic), value: registry.ValueSubject(topic)}
	}
	return s
}

// worker is an encoding goroutine's hold on one of the service's worker
// tokens, which bound the goroutines using CPU at once — not those waiting
// on the network.
type worker struct {
	s    *Service
	held bool
}

func (w *worker) acquire(ctx context.Context) error {
	select {
	case w.s.workers <- struct{}{}:
		w.held = true
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (w *worker) release() {
	if w.held {
		w.held = false
		<-w.s.workers
	}
}

func (p *pipe) encodeRow(ctx context.Context, w *worker, r *row.Row, v *schema.Version, rec *tidestreamv1.EncodedRecord, arena *[]byte, subj *subjects) error {
	f := p.f
	// Built only on the error paths: a string per row shows in the profile.
	table := func() string { return r.Table.Schema + "." + r.Table.Name }
	fatal := func(err error) error {
		return contract.Status(contract.Fatal, codes.FailedPrecondition, "encoder: table %s: %v", table(), err)
	}
	c, err := f.codec(r.Table)
	if err != nil {
		return fatal(err)
	}
	topic, hash, err := f.router.Route(r)
	if err != nil {
		return fatal(err)
	}
	id := func(kind registry.Kind, subject, schemaJSON string) (uint32, error) {
		k := registry.TableKey{TableID: r.Table.ID, Version: r.Table.Version, Kind: kind}
		if n, ok := f.reg.Cached(k, subject); ok {
			return n, nil
		}
		// A registry round trip (the first row of each table version,
		// twice: key and value): give the worker token back while it
		// lasts. Held, the registrations of a new changefeed's tables
		// (2,000 for 1,000 tables) took every token (one per CPU) and
		// ran that many at a time instead of the client's MaxInFlight,
		// and every other chunk, of tables long registered too, queued
		// behind them.
		w.release()
		n, err := f.reg.IDFor(ctx, k, subject, schemaJSON)
		if aerr := w.acquire(ctx); aerr != nil {
			return 0, aerr
		}
		if err == nil {
			return n, nil
		}
		if ctx.Err() != nil {
			return 0, context.Cause(ctx)
		}
		if registry.IsFatal(err) {
			return 0, contract.Status(contract.Fatal, codes.FailedPrecondition, "encoder: %v", registry.ForTable(err, kind, table(), v.DDL))
		}
		return 0, contract.Status(contract.Restart, codes.Unavailable, "encoder: table %s: %v", table(), err)
	}
	sub := subj.of(topic)
	keyID, err := id(registry.KeySchema, sub.key, c.KeySchema())
	if err != nil {
		return err
	}
	rec.Topic, rec.PartitionHash, rec.CommitTs, rec.StartTs = topic, hash, r.CommitTs, r.StartTs
	start := len(*arena)
	if *arena, err = c.AppendKey(*arena, keyID, r); err != nil {
		return fatal(fmt.Errorf("key of the row committed at %d: %w", r.CommitTs, err))
	}
	rec.Key = (*arena)[start:len(*arena):len(*arena)]
	if r.Op == row.Delete {
		rec.Tombstone = true
		return nil
	}
	valueID, err := id(registry.ValueSchema, sub.value, c.ValueSchema())
	if err != nil {
		return err
	}
	start = len(*arena)
	if *arena, err = c.AppendValue(*arena, valueID, r); err != nil {
		return fatal(fmt.Errorf("value of the row committed at %d: %w", r.CommitTs, err))
	}
	rec.Value = (*arena)[start:len(*arena):len(*arena)]
	return nil
}

// versionTables is the history as mount sees it, remembering the version of
// each table it handed out so the encoder can read its eligibility and DDL
// without a second lookup. One per chunk.
type versionTables struct {
	h    *schema.History
	seen []*schema.Version // few: a chunk of one pipeline spans few versions
}

func (t *versionTables) TableAt(physicalID int64, ts uint64) (*row.Table, error) {
	v, err := t.h.Lookup(physicalID, ts)
	if err != nil {
		return nil, err
	}
	for _, s := range t.seen {
		if s == v {
			return v.Table, nil
		}
	}
	t.seen = append(t.seen, v)
	return v.Table, nil
}

func (t *versionTables) version(tbl *row.Table) *schema.Version {
	for _, v := range t.seen {
		if v.Table == tbl {
			return v
		}
	}
	return nil // mount hands out only tables TableAt returned
}

// upstreamError marks a failure of the sorter stream, relayed with its own
// outcome.
type upstreamError struct{ err error }

func (e upstreamError) Error() string { return e.err.Error() }
func (e upstreamError) Unwrap() error { return e.err }
