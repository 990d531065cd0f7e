// Package spill keeps the PREWRITEs of uncommitted transactions on disk
// once a process holds more of them in memory than its budget.
//
// TiKV sends a transaction's PREWRITEs as they are written and its COMMITs
// only when it commits, and the matcher must hold every PREWRITE until its
// COMMIT or ROLLBACK: a 1 GB transaction is 1 GB held, whatever the
// puller's quota on events in flight (spec R16; TiCDC has the same
// problem, tiflow#9654). Committed events are bounded by that quota; these
// are not events yet, so they get a budget of their own and a pebble
// instance to go to beyond it.
//
// One Store serves a process; each region registration takes a Space of
// it, whose rows go with the Space. The directory is wiped on Open: rows
// there belong to registrations of a process that is gone, and a new
// registration reads its region again from its checkpoint.
//
// A point read per row is what made the disk slow (3.5 times slower
// delivery in the R16 soak, nearly all of it in pebble's Get): a Space
// answers the look-up each new PREWRITE makes for an older one of its
// lock from a filter of its own (filter.go), and serves COMMITs from rows
// read ahead in key order (readahead.go). Both count against the budget.
package spill

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/pingcap/kvproto/pkg/cdcpb"
	"go.opentelemetry.io/otel/metric"
)

// ErrStorage is the kind of every disk failure: the subscription using
// the Space cannot go on, but a new one (the pipeline restarted) may.
var ErrStorage = errors.New("spill: storage")

// ErrClosed is returned by a Space of a closed Store.
var ErrClosed = errors.New("spill: closed")

// markerFile marks a directory as ours so that Open may wipe it.
const markerFile = "TIDESTREAM_PULLER_SPILL"

// memtableSize: rows pass through once (written, read at commit, deleted),
// so a small memtable and cache do; pebble's own defaults are 4 MiB and
// 8 MiB.
const (
	memtableSize = 8 << 20
	cacheSize    = 8 << 20
)

// Store is a process's spill: a memory budget shared by its Spaces and a
// pebble instance for the rows over it.
type Store struct {
	dir    string
	budget int64
	log    *slog.Logger

	held   atomic.Int64 // bytes of rows kept in memory by every Space
	onDisk atomic.Int64 // rows on disk
	spaces atomic.Uint64
	wrote  atomic.Int64 // rows ever written to disk
	mu     sync.RWMutex // db use (R) against Close (W)
	db     *pebble.DB
	opened bool // db was opened once; nil db and opened: closed
	reg    metric.Registration
}

// Config configures a Store.
type Config struct {
	// Dir holds the rows on disk. It must be absent, empty, or a directory
	// a Store made before: Open wipes it, and refuses to wipe anything
	// else.
	Dir string
	// Budget is the bytes of rows the Store's Spaces may keep in memory
	// between them; 0 sends every row to disk.
	Budget int64
	// Logger receives the Store's and pebble's logs; nil discards them.
	Logger *slog.Logger
	// Meter creates the Store's instruments; nil records nothing.
	Meter metric.Meter
}

// Validate checks the configuration.
func (c Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("spill: Config.Dir is required")
	case c.Budget < 0:
		return fmt.Errorf("spill: Config.Budget %d must not be negative", c.Budget)
	}
	return nil
}

// Open wipes cfg.Dir and returns a Store on it. The disk is opened on the
// first row over the budget, so a process that never needs it never
// writes there.
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := wipe(cfg.Dir); err != nil {
		return nil, err
	}
	s := &Store{dir: cfg.Dir, budget: cfg.Budget, log: log.With("component", "puller.spill")}
	if err := s.instrument(cfg.Meter); err != nil {
		return nil, err
	}
	return s, nil
}

// instrument reports Stats as gauges: per process, since a series per
// region would multiply by the regions.
func (s *Store) instrument(m metric.Meter) error {
	if m == nil {
		return nil
	}
	held, err1 := m.Int64ObservableGauge("tidestream.puller.prewrites.memory",
		metric.WithDescription("Bytes of uncommitted transactions' writes held in memory until their commit, with what finds those on disk"), metric.WithUnit("By"))
	onDisk, err2 := m.Int64ObservableGauge("tidestream.puller.prewrites.on_disk",
		metric.WithDescription("Uncommitted transactions' writes waiting on disk for their commit (over --puller-prewrite-memory)"), metric.WithUnit("{row}"))
	spilled, err3 := m.Int64ObservableCounter("tidestream.puller.prewrites.spilled",
		metric.WithDescription("Uncommitted transactions' writes ever sent to disk"), metric.WithUnit("{row}"))
	if err := errors.Join(err1, err2, err3); err != nil {
		return fmt.Errorf("spill: create instruments: %w", err)
	}
	reg, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		st := s.Stats()
		o.ObserveInt64(held, st.Held)
		o.ObserveInt64(onDisk, st.OnDisk)
		o.ObserveInt64(spilled, st.Spilled)
		return nil
	}, held, onDisk, spilled)
	if err != nil {
		return fmt.Errorf("spill: register callback: %w", err)
	}
	s.reg = reg
	return nil
}

func wipe(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("%w: read %s: %w", ErrStorage, dir, err)
	case len(entries) > 0:
		if _, err := os.Stat(filepath.Join(dir, markerFile)); err != nil {
			return fmt.Errorf("spill: refusing to wipe %s: not empty and not a puller spill directory (no %s)", dir, markerFile)
		}
		for _, e := range entries {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("%w: wipe %s: %w", ErrStorage, dir, err)
			}
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("%w: create %s: %w", ErrStorage, dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, markerFile), []byte("tidestream puller spill; wiped on every start\n"), 0o600); err != nil {
		return fmt.Errorf("%w: write marker: %w", ErrStorage, err)
	}
	return nil
}

// open opens pebble on first use. Store.mu held for writing.
func (s *Store) open() error {
	if s.opened {
		if s.db == nil {
			return ErrClosed
		}
		return nil
	}
	cache := pebble.NewCache(cacheSize)
	defer cache.Unref()
	opts := &pebble.Options{
		Cache:        cache,
		MemTableSize: memtableSize,
		// Every row is reproducible from TiKV and the directory is wiped
		// on open: a WAL would only double the writes.
		DisableWAL: true,
		Logger:     pebbleLogger{s.log},
	}
	// Every new PREWRITE of a region with rows on disk looks for an older
	// one of its lock first, and almost never finds one: filters answer
	// those misses without reading blocks. Lower levels take L0's.
	opts.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	db, err := pebble.Open(filepath.Join(s.dir, "db"), opts)
	if err != nil {
		return fmt.Errorf("%w: open %s: %w", ErrStorage, s.dir, err)
	}
	s.db, s.opened = db, true
	s.log.Info("prewrites over the memory budget go to disk", "dir", s.dir, "budget", s.budget)
	return nil
}

// useDB returns the open instance with Store.mu held for reading (release
// with s.mu.RUnlock), opening it first if need be.
func (s *Store) useDB() (*pebble.DB, error) {
	s.mu.RLock()
	if s.db != nil {
		return s.db, nil
	}
	closed := s.opened
	s.mu.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	s.mu.Lock()
	err := s.open()
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return s.useDB()
}

// Close closes the instance and removes its files. Spaces fail with
// ErrClosed afterwards.
func (s *Store) Close() error {
	if s.reg != nil {
		_ = s.reg.Unregister()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	db := s.db
	s.db, s.opened = nil, true
	var err error
	if db != nil {
		err = db.Close()
	}
	if rmErr := os.RemoveAll(filepath.Join(s.dir, "db")); err == nil && rmErr != nil {
		err = fmt.Errorf("%w: %w", ErrStorage, rmErr)
	}
	return err
}

// Stats are a Store's figures.
type Stats struct {
	// Held is the bytes its Spaces keep in memory; OnDisk the rows on
	// disk now; Spilled the rows ever written there.
	Held, OnDisk, Spilled int64
}

// Stats reads the Store's figures.
func (s *Store) Stats() Stats {
	return Stats{Held: s.held.Load(), OnDisk: s.onDisk.Load(), Spilled: s.wrote.Load()}
}

// Space is one registration's part of a Store. It is used by one
// goroutine at a time.
type Space struct {
	s      *Store
	prefix [8]byte
	held   int64 // of s.held, this Space's: rows Hold granted, filter, read-ahead
	onDisk int64
	closed bool

	// Both only while the Space has rows on disk.
	seen  keyFilter
	ahead readAhead
}

// Space returns a new, empty Space.
func (s *Store) Space() *Space {
	sp := &Space{s: s}
	binary.BigEndian.PutUint64(sp.prefix[:], s.spaces.Add(1))
	return sp
}

// Hold asks to keep n more bytes in memory: false when that would take
// the Store over its budget, and the row should go to disk (Put). With a
// budget of 0 every row goes to disk.
func (sp *Space) Hold(n int64) bool {
	if sp.s.held.Add(n) > sp.s.budget {
		sp.s.held.Add(-n)
		return false
	}
	sp.held += n
	return true
}

// Unhold gives back n bytes Hold granted.
func (sp *Space) Unhold(n int64) {
	sp.held -= n
	sp.s.held.Add(-n)
}

// use counts n bytes the Space itself keeps (its filter and read-ahead)
// against the budget, without asking: they are what makes the disk fast,
// and are small next to the rows they serve. Negative n gives back.
func (sp *Space) use(n int64) {
	if n != 0 {
		sp.held += n
		sp.s.held.Add(n)
	}
}

// OnDisk is the number of this Space's rows on disk.
func (sp *Space) OnDisk() int64 { return sp.onDisk }

func (sp *Space) key(startTs uint64, key []byte) []byte {
	k := make([]byte, 0, 16+len(key))
	k = append(k, sp.prefix[:]...)
	k = binary.BigEndian.AppendUint64(k, startTs)
	return append(k, key...)
}

// end is the first key after the Space's.
func (sp *Space) end() []byte {
	return binary.BigEndian.AppendUint64(nil, binary.BigEndian.Uint64(sp.prefix[:])+1)
}

// Put writes row, a PREWRITE, under its start ts and key, replacing one
// there.
func (sp *Space) Put(row *cdcpb.Event_Row, replaces bool) error {
	b, err := row.Marshal()
	if err != nil {
		return fmt.Errorf("spill: encode the prewrite of key %x: %w", row.Key, err)
	}
	db, err := sp.s.useDB()
	if err != nil {
		return err
	}
	defer sp.s.mu.RUnlock()
	k := sp.key(row.StartTs, row.Key)
	sp.use(-sp.ahead.put(k))
	if err := db.Set(k, b, pebble.NoSync); err != nil {
		return fmt.Errorf("%w: write: %w", ErrStorage, err)
	}
	if !replaces {
		sp.use(sp.seen.add(k))
		sp.onDisk++
		sp.s.onDisk.Add(1)
	}
	sp.s.wrote.Add(1)
	return nil
}

// Get reads the PREWRITE of key at startTs; nil when there is none.
func (sp *Space) Get(startTs uint64, key []byte) (*cdcpb.Event_Row, error) {
	if sp.onDisk == 0 {
		return nil, nil
	}
	k := sp.key(startTs, key)
	if !sp.seen.mayContain(k) {
		return nil, nil
	}
	v, covered := sp.ahead.lookup(k)
	if !covered {
		db, err := sp.s.useDB()
		if err != nil {
			return nil, err
		}
		seg, err := sp.readFrom(db, k)
		sp.s.mu.RUnlock()
		if err != nil {
			return nil, err
		}
		sp.use(seg.size - sp.ahead.add(seg))
		v, _ = sp.ahead.lookup(k)
	}
	if v == nil {
		return nil, nil
	}
	row := &cdcpb.Event_Row{}
	if err := row.Unmarshal(v); err != nil {
		return nil, fmt.Errorf("%w: decode the prewrite of key %x: %w", ErrStorage, key, err)
	}
	return row, nil
}

// readFrom reads the Space's rows from k on, up to aheadSegmentBytes.
func (sp *Space) readFrom(db *pebble.DB, k []byte) (*segment, error) {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: k, UpperBound: sp.end()})
	if err != nil {
		return nil, fmt.Errorf("%w: read: %w", ErrStorage, err)
	}
	seg := &segment{lo: k}
	for ok := it.First(); ok; ok = it.Next() {
		if seg.size >= aheadSegmentBytes {
			seg.hi = slices.Clone(it.Key())
			break
		}
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return nil, fmt.Errorf("%w: read: %w", ErrStorage, err)
		}
		seg.keys = append(seg.keys, slices.Clone(it.Key()))
		seg.vals = append(seg.vals, slices.Clone(v))
		seg.live++
		seg.size += int64(len(it.Key()) + len(v))
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("%w: read: %w", ErrStorage, err)
	}
	return seg, nil
}

// Delete removes the PREWRITE of key at startTs, which must be there.
func (sp *Space) Delete(startTs uint64, key []byte) error {
	db, err := sp.s.useDB()
	if err != nil {
		return err
	}
	defer sp.s.mu.RUnlock()
	k := sp.key(startTs, key)
	if err := db.Delete(k, pebble.NoSync); err != nil {
		return fmt.Errorf("%w: delete: %w", ErrStorage, err)
	}
	sp.use(-sp.ahead.delete(k))
	sp.onDisk--
	sp.s.onDisk.Add(-1)
	if sp.onDisk == 0 {
		sp.forget()
	}
	return nil
}

// forget drops what the Space keeps in memory about its rows on disk.
func (sp *Space) forget() {
	sp.use(-sp.ahead.reset() - sp.seen.bytes())
	sp.seen.reset()
}

// Close gives back what the Space holds: its memory to the budget and its
// rows on disk. The Space is not used again.
func (sp *Space) Close() error {
	if sp.closed {
		return nil
	}
	sp.closed = true
	sp.forget()
	sp.s.held.Add(-sp.held)
	sp.held = 0
	if sp.onDisk == 0 {
		return nil
	}
	sp.s.onDisk.Add(-sp.onDisk)
	sp.onDisk = 0
	db, err := sp.s.useDB()
	if err != nil {
		if errors.Is(err, ErrClosed) {
			return nil // the files went with the Store
		}
		return err
	}
	defer sp.s.mu.RUnlock()
	if err := db.DeleteRange(sp.prefix[:], sp.end(), pebble.NoSync); err != nil {
		return fmt.Errorf("%w: drop a registration's rows: %w", ErrStorage, err)
	}
	return nil
}

// pebbleLogger sends pebble's logs to slog; Fatalf panics after logging,
// as pebble expects it not to return.
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
	panic("puller spill: pebble fatal: " + msg)
}
