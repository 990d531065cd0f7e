package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.opentelemetry.io/otel/metric"
)

// DefaultMemoryQuota is the per-process budget for pebble's memory when
// Config.MemoryQuota is 0 (issue 5's default).
const DefaultMemoryQuota int64 = 512 << 20

// minMemoryQuota keeps the memtable above pebble's usable minimum
// (memtables smaller than ~1 MiB flush on nearly every batch).
const minMemoryQuota int64 = 8 << 20

// DefaultCompactInterval is how often the compactor looks at acknowledged
// ranges when Config.CompactInterval is 0.
const DefaultCompactInterval = 10 * time.Second

// compactTriggerBytes: an acknowledged range still holding at least this
// much on disk is compacted at the next check even while its pipeline keeps
// acknowledging; smaller ranges wait until their pipeline has been quiet for
// one interval. Under steady load this bounds the dead bytes per pipeline to
// about one trigger plus one interval of throughput, while a stream of small
// acks does not turn into a stream of small compactions.
const compactTriggerBytes = 64 << 20

// Config configures an Engine.
type Config struct {
	// Dir holds the pebble instance. It must be empty, absent, or a
	// directory a previous Engine created (it carries a marker file):
	// Open wipes it, and refuses to wipe anything else.
	Dir string
	// MemoryQuota bounds pebble's memory: memtables, block cache and the
	// headroom for iterators, compactions and write batches. 0 means
	// DefaultMemoryQuota. The split, with Q the quota:
	//
	//	memtables    Q/2  = 4 memtables of Q/8 (MemTableSize = Q/8,
	//	                    MemTableStopWritesThreshold = 4)
	//	block cache  Q/4
	//	headroom     Q/4  iterator and compaction buffers, batches in
	//	                    flight, index/filter blocks being built
	//
	// Writes stall (Write blocks) when four memtables are waiting to flush,
	// which is how a writer faster than the disk is held back. Beyond the
	// memtables, data lives on disk only and is read back through the cache.
	MemoryQuota int64
	// CompactInterval is how often acknowledged ranges are checked for
	// compaction; 0 means DefaultCompactInterval. Tests shorten it.
	CompactInterval time.Duration
	// Logger receives engine and pebble logs; nil discards.
	Logger *slog.Logger
	// Meter creates the engine's instruments; nil means no-op.
	Meter metric.Meter
	// Knobs lets tests stop the engine at points where production would
	// only be slow; nil in production.
	Knobs *TestingKnobs
}

// TestingKnobs are hooks for tests, in CockroachDB's manner: they stand in
// for what cannot be produced on demand (a pebble write stall).
type TestingKnobs struct {
	// BeforeCommit runs inside Write, after the fence check and before the
	// batch commits, where a write stall would block.
	BeforeCommit func(PipelineID)
}

func (c Config) withDefaults() (Config, error) {
	if c.Dir == "" {
		return c, errors.New("sorter engine: Config.Dir is required")
	}
	if c.MemoryQuota == 0 {
		c.MemoryQuota = DefaultMemoryQuota
	}
	if c.MemoryQuota < minMemoryQuota {
		return c, fmt.Errorf("sorter engine: Config.MemoryQuota %d below minimum %d", c.MemoryQuota, minMemoryQuota)
	}
	if c.CompactInterval == 0 {
		c.CompactInterval = DefaultCompactInterval
	}
	if c.CompactInterval < 0 {
		return c, errors.New("sorter engine: Config.CompactInterval must not be negative")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// PipelineID names one table pipeline.
type PipelineID struct {
	Namespace, Changefeed string
	Pipeline              int64
}

func (id PipelineID) String() string {
	return fmt.Sprintf("%s/%s/%d", id.Namespace, id.Changefeed, id.Pipeline)
}

// Engine is the process-wide sorter store: one pebble instance holding the
// events of every pipeline on this process.
type Engine struct {
	cfg     Config
	log     *slog.Logger
	db      *pebble.DB
	metrics *metrics

	mu       sync.Mutex
	closed   bool
	pipes    map[PipelineID]*Pipeline
	nextSlot uint64
	// pending holds, per slot, the key range known to be deleted and not
	// yet compacted.
	pending map[uint64]*pendingRange
	// doomed holds the slots of fenced handles whose keys are still to be
	// range-deleted. The compactor deletes them, so that resetting or
	// dropping a pipeline never writes to pebble under mu: a write stall
	// would hold every caller of the engine behind it.
	doomed map[uint64]struct{}

	// ops counts calls using db; Close waits for it to reach zero after
	// setting closing, so pebble is never used after it is closed. A
	// counter rather than an RWMutex because Read's callback may call Ack
	// on the same pipeline, and a recursive RLock deadlocks once Close
	// waits for the write lock.
	opMu    sync.Mutex
	opCond  *sync.Cond
	ops     int
	closing bool

	kick   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

// acquire registers a call that uses db; it fails once Close has begun.
func (e *Engine) acquire() error {
	e.opMu.Lock()
	defer e.opMu.Unlock()
	if e.closing {
		return ErrClosed
	}
	e.ops++
	return nil
}

func (e *Engine) release() {
	e.opMu.Lock()
	e.ops--
	if e.ops == 0 && e.closing {
		e.opCond.Broadcast()
	}
	e.opMu.Unlock()
}

type pendingRange struct {
	start, end []byte
	changed    time.Time
	gen        uint64
}

// markerFile marks a directory as ours so that Open may wipe it.
const markerFile = "TIDESTREAM_SORTER"

// Open wipes cfg.Dir and opens a fresh pebble instance there. Existing data
// is stale by design: after a process restart every pipeline restarts from
// its checkpoint with a new epoch and re-pulls, so nothing on disk can be
// used and keeping it would only cost disk.
func Open(cfg Config) (*Engine, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	// Before the first memtable: see malloc_linux.go.
	pinMallocThreshold()
	if err := wipeDir(cfg.Dir); err != nil {
		return nil, err
	}
	log := cfg.Logger.With("component", "sorter.engine")
	q := cfg.MemoryQuota
	opts := pebbleOptions(q, log)
	// The cache is reference-counted; the DB takes its own reference.
	defer opts.Cache.Unref()
	db, err := pebble.Open(cfg.Dir, opts)
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %w", ErrStorage, cfg.Dir, err)
	}
	e := &Engine{
		cfg:      cfg,
		log:      log,
		db:       db,
		pipes:    make(map[PipelineID]*Pipeline),
		pending:  make(map[uint64]*pendingRange),
		doomed:   make(map[uint64]struct{}),
		nextSlot: 1,
		kick:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	e.opCond = sync.NewCond(&e.opMu)
	e.metrics, err = newMetrics(cfg.Meter, e)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	// The compactor is the engine's only goroutine; Close cancels it and
	// waits for it before closing pebble.
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	go e.compactor(ctx)
	log.Info("sorter engine opened", "dir", cfg.Dir, "memory_quota", q,
		"memtable_size", opts.MemTableSize, "block_cache", q/4)
	return e, nil
}

// pebbleOptions derives pebble's options from the memory quota q (the
// split is documented on Config.MemoryQuota). The caller must Unref
// opts.Cache once pebble is open.
func pebbleOptions(q int64, log *slog.Logger) *pebble.Options {
	return &pebble.Options{
		Cache:                       pebble.NewCache(q / 4),
		MemTableSize:                uint64(q / 8),
		MemTableStopWritesThreshold: 4,
		// No WAL: every byte here is reproducible from the puller, and the
		// directory is wiped on open anyway, so a WAL would only double the
		// write volume. This also makes every commit NoSync.
		DisableWAL: true,
		// Data is write-once, read-once, delete: let L0 grow somewhat
		// before compacting (most data is acknowledged and range-deleted
		// before it is worth moving down), and stall late, since a stall
		// blocks the puller stream of every pipeline of the process.
		L0CompactionThreshold: 8,
		L0StopWritesThreshold: 32,
		Logger:                pebbleLogger{log},
	}
}

func wipeDir(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("%w: read %s: %w", ErrStorage, dir, err)
	case len(entries) > 0:
		if _, err := os.Stat(filepath.Join(dir, markerFile)); err != nil {
			return fmt.Errorf("sorter engine: refusing to wipe %s: not empty and not a sorter directory (no %s)", dir, markerFile)
		}
		for _, ent := range entries {
			if err := os.RemoveAll(filepath.Join(dir, ent.Name())); err != nil {
				return fmt.Errorf("%w: wipe %s: %w", ErrStorage, dir, err)
			}
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("%w: create %s: %w", ErrStorage, dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, markerFile), []byte("tidestream sorter data; wiped on every start\n"), 0o644); err != nil {
		return fmt.Errorf("%w: write marker: %w", ErrStorage, err)
	}
	return nil
}

// Close stops the compactor and closes pebble. Handles fail with ErrClosed
// afterwards. Data is not kept (the next Open wipes it).
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.mu.Unlock()
	e.cancel()
	<-e.done
	// Wait for in-flight calls: pebble panics when used after Close.
	e.opMu.Lock()
	e.closing = true
	for e.ops > 0 {
		e.opCond.Wait()
	}
	e.opMu.Unlock()
	e.metrics.unregister()
	if err := e.db.Close(); err != nil {
		return fmt.Errorf("%w: close: %w", ErrStorage, err)
	}
	return nil
}

// Pipeline opens the pipeline at epoch, or returns the handle already open
// at that epoch (the ingest and serve sides of one pipeline share a handle).
// A newer epoch fences the current handle (its calls fail with
// ErrStaleEpoch), has its data deleted and returns a fresh, empty handle;
// an older epoch fails with ErrStaleEpoch. It never waits for pebble or for
// the old handle's calls in flight.
func (e *Engine) Pipeline(id PipelineID, epoch uint64) (*Pipeline, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	old := e.pipes[id]
	if old != nil {
		switch {
		case epoch == old.epoch:
			return old, nil
		case epoch < old.epoch:
			return nil, fmt.Errorf("%w: pipeline %s at epoch %d, asked for %d", ErrStaleEpoch, id, old.epoch, epoch)
		}
		e.discardLocked(old)
		e.log.Info("pipeline reset", "pipeline", id.String(), "old_epoch", old.epoch, "epoch", epoch)
	}
	p := newPipeline(e, id, epoch, e.nextSlot)
	e.nextSlot++
	e.pipes[id] = p
	return p, nil
}

// DropPipeline fences the pipeline's handle and has its data deleted (in
// the background: it never waits for pebble). Dropping an unknown pipeline
// is a no-op.
func (e *Engine) DropPipeline(id PipelineID) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	p := e.pipes[id]
	if p == nil {
		return nil
	}
	delete(e.pipes, id)
	e.discardLocked(p)
	return nil
}

// discardLocked fences p and dooms its whole slot. Each epoch gets its own
// slot, so the new handle can start writing at once, and a write through
// the fenced handle that was already in pebble lands in the dead slot,
// never in the live key range.
func (e *Engine) discardLocked(p *Pipeline) {
	p.fence(ErrStaleEpoch)
	e.doomLocked(p.slot)
}

// doom queues slot's keys for deletion (caller holds no engine lock).
func (e *Engine) doom(slot uint64) {
	e.mu.Lock()
	e.doomLocked(slot)
	e.mu.Unlock()
}

func (e *Engine) doomLocked(slot uint64) {
	e.doomed[slot] = struct{}{}
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// deleteDoomed range-deletes the doomed slots and hands them to the
// compaction bookkeeping. A slot that fails stays doomed for the next
// round.
func (e *Engine) deleteDoomed() {
	e.mu.Lock()
	slots := make([]uint64, 0, len(e.doomed))
	for slot := range e.doomed {
		slots = append(slots, slot)
		delete(e.doomed, slot)
	}
	e.mu.Unlock()
	for _, slot := range slots {
		start, end := slotPrefix(slot), slotPrefix(slot+1)
		if err := e.db.DeleteRange(start, end, pebble.NoSync); err != nil {
			e.log.Warn("delete discarded pipeline data", "slot", slot, "err", err)
			e.doom(slot)
			continue
		}
		e.notePending(slot, start, end)
	}
}

// notePending records a deleted range for the compactor (caller holds no
// engine lock).
func (e *Engine) notePending(slot uint64, start, end []byte) {
	e.mu.Lock()
	e.notePendingLocked(slot, start, end)
	e.mu.Unlock()
}

func (e *Engine) notePendingLocked(slot uint64, start, end []byte) {
	pr := e.pending[slot]
	if pr == nil {
		pr = &pendingRange{start: start}
		e.pending[slot] = pr
	}
	pr.end = end
	pr.changed = time.Now()
	pr.gen++
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// compactor compacts deleted ranges so that disk use follows acks.
//
// DeleteRange alone only hides data: the bytes stay in sstables until a
// compaction that sees both the tombstone and the data drops them. Pebble's
// own delete-only compactions rarely apply here because an sstable flushed
// from a shared memtable spans many pipelines, so no single pipeline's
// tombstone covers a whole file. The compactor therefore calls
// db.Compact(start, end) on each deleted range, rate-limited:
//   - one compaction at a time (this goroutine), never in the write path;
//   - a range is looked at once per CompactInterval at most;
//   - a range whose pipeline is still acking is compacted only once
//     EstimateDiskUsage says it holds ≥ compactTriggerBytes; otherwise it
//     waits until the pipeline has been quiet for one interval, then its
//     leftover is compacted whatever its size (so disk returns to ~0);
//   - a range with nothing on disk is forgotten without compacting (its
//     data was dropped while still in a memtable: a flush drops keys
//     covered by a tombstone of the same memtable).
func (e *Engine) compactor(ctx context.Context) {
	defer close(e.done)
	interval := e.cfg.CompactInterval
	t := time.NewTicker(interval)
	defer t.Stop()
	var last time.Time
	for {
		kicked := false
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-e.kick:
			kicked = true
		}
		// Discarded slots are deleted on every wake; a kick otherwise only
		// matters if a range may have crossed the trigger, so never check
		// more often than once per interval.
		e.deleteDoomed()
		if kicked && time.Since(last) < interval {
			continue
		}
		last = time.Now()
		e.compactPending(ctx, interval)
	}
}

func (e *Engine) compactPending(ctx context.Context, interval time.Duration) {
	type job struct {
		slot       uint64
		start, end []byte
		changed    time.Time
		gen        uint64
	}
	e.mu.Lock()
	jobs := make([]job, 0, len(e.pending))
	for slot, pr := range e.pending {
		jobs = append(jobs, job{slot, pr.start, pr.end, pr.changed, pr.gen})
	}
	e.mu.Unlock()
	sort.Slice(jobs, func(i, j int) bool { return jobs[i].slot < jobs[j].slot })
	now := time.Now()
	for _, j := range jobs {
		if ctx.Err() != nil {
			return
		}
		size, err := e.db.EstimateDiskUsage(j.start, j.end)
		if err != nil {
			e.log.Warn("estimate disk usage", "err", err)
			continue
		}
		quiet := now.Sub(j.changed) >= interval
		switch {
		case size == 0 && quiet:
		case size == 0, !quiet && size < compactTriggerBytes:
			continue
		default:
			start := time.Now()
			if err := e.db.Compact(ctx, j.start, j.end, false); err != nil {
				if ctx.Err() == nil {
					e.log.Warn("compact deleted range", "slot", j.slot, "err", err)
				}
				continue
			}
			e.metrics.compactions.Add(ctx, 1)
			e.log.Debug("compacted deleted range", "slot", j.slot, "estimated_bytes", size, "took", time.Since(start))
			if !quiet {
				continue // still acking: keep the entry for its leftover
			}
		}
		e.mu.Lock()
		if pr := e.pending[j.slot]; pr != nil && pr.gen == j.gen {
			delete(e.pending, j.slot)
		}
		e.mu.Unlock()
	}
}

// Stats is a snapshot of the engine's resource use.
type Stats struct {
	// MemTableBytes is memory allocated by memtables (live and queued for
	// flush); BlockCacheBytes is block cache in use; MemoryBytes their sum.
	MemTableBytes, BlockCacheBytes, MemoryBytes int64
	// DiskBytes is pebble's disk footprint (tables, manifest, obsolete
	// files not yet deleted).
	DiskBytes uint64
	// PendingCompactions counts deleted ranges not yet compacted and
	// discarded pipelines' data not yet deleted.
	PendingCompactions int
	Pipelines          []PipelineStats
}

// PipelineStats describes one open pipeline.
type PipelineStats struct {
	ID                  PipelineID
	Epoch               uint64
	Resolved, Acked     uint64
	EventsIn, EventsOut int64
	BytesIn, BytesOut   int64
	// DiskBytes estimates the pipeline's bytes in sstables (memtable data
	// is not counted).
	DiskBytes uint64
}

// Stats reports the engine's memory and disk use and per-pipeline counters.
// A closed engine reports zero Stats.
func (e *Engine) Stats() Stats {
	if err := e.acquire(); err != nil {
		return Stats{}
	}
	defer e.release()
	m := e.db.Metrics()
	s := Stats{
		MemTableBytes:   int64(m.MemTable.Size),
		BlockCacheBytes: m.BlockCache.Size,
		DiskBytes:       m.DiskSpaceUsage(),
	}
	s.MemoryBytes = s.MemTableBytes + s.BlockCacheBytes
	e.mu.Lock()
	s.PendingCompactions = len(e.pending) + len(e.doomed)
	pipes := make([]*Pipeline, 0, len(e.pipes))
	for _, p := range e.pipes {
		pipes = append(pipes, p)
	}
	e.mu.Unlock()
	for _, p := range pipes {
		ps := p.stats()
		ps.DiskBytes, _ = e.db.EstimateDiskUsage(slotPrefix(p.slot), slotPrefix(p.slot+1))
		s.Pipelines = append(s.Pipelines, ps)
	}
	sort.Slice(s.Pipelines, func(i, j int) bool {
		a, b := s.Pipelines[i].ID, s.Pipelines[j].ID
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Changefeed != b.Changefeed {
			return a.Changefeed < b.Changefeed
		}
		return a.Pipeline < b.Pipeline
	})
	return s
}

// pebbleLogger routes pebble's logs to slog. Pebble calls Fatalf only on
// invariant violations after which it must not continue (e.g. corrupt
// manifest); it expects Fatalf not to return, so this panics after
// logging, as pebble's own default logger exits.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...), "source", "pebble")
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "source", "pebble")
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg, "source", "pebble", "fatal", true)
	panic("sorter engine: pebble fatal: " + msg)
}
