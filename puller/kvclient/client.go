package kvclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidestream/tidestream/puller/internal/tikvconn"
	"github.com/tidestream/tidestream/puller/matcher"
	"github.com/tidestream/tidestream/puller/spill"
	"github.com/tikv/client-go/v2/tikv"
	pd "github.com/tikv/pd/client"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// TiCDCVersion is announced in every request header. TiKV derives its feature
// gates from it: below 4.0.8 it sends no batched resolved ts (and with
// multiplexing none at all), below 5.3.0 it does not check the cluster id
// (spec §1.4). It must be plain semver, without a leading "v".
const TiCDCVersion = "8.5.0"

// MinStoreVersion is the oldest TiKV the client opens streams to: the first
// release whose EventFeedV2 multiplexing the new TiCDC relies on too (spec §1.1).
const MinStoreVersion = "7.5.0"

// Defaults for Config fields left zero.
const (
	// DefaultStreamsPerStore: one multiplexed stream carries every
	// subscription of the process to a store; more only help when one
	// receive goroutine (decode + routing) is the bottleneck.
	DefaultStreamsPerStore = 1
	// DefaultRegionScanLimit bounds regions registered but not yet
	// initialized per store, as the new TiCDC does (32 per store): each one
	// holds an incremental scan on TiKV, and TiKV runs only a few at a time.
	DefaultRegionScanLimit = 32
	// DefaultResolveLockAfter: a span resolved ts that has not moved for this
	// long gets its regions' old locks resolved. 20 s stays clear of live
	// transactions' TTL (3 s minimum in TiDB) while bounding the lag an
	// abandoned lock can cause.
	DefaultResolveLockAfter = 20 * time.Second
)

// Sentinels. Every error Subscribe returns wraps one of them, the caller's
// context error, or the Sink's own error.
var (
	// ErrFatal: retrying cannot help (cluster id mismatch, an incompatible
	// TiKV, a request the server calls a duplicate, a bad argument). The
	// pipeline must fail rather than restart.
	ErrFatal = errors.New("kvclient: fatal change-data error")
	// ErrProtocol: the server broke a protocol guarantee (a row at or below a
	// resolved ts it already sent). Delivered data may be incomplete, so the
	// pipeline restarts from its checkpoint.
	ErrProtocol = errors.New("kvclient: change-data protocol violation")
	// ErrClosed: the Client was closed while Subscribe ran.
	ErrClosed = errors.New("kvclient: client closed")
)

// IsFatal reports whether err (or anything it wraps) is fatal.
func IsFatal(err error) bool { return errors.Is(err, ErrFatal) }

// Config configures a Client.
type Config struct {
	// PDAddrs are PD's client addresses (host:port). Required.
	PDAddrs []string
	// StreamsPerStore is how many EventFeedV2 streams each store gets,
	// regions spread over them by id. Default DefaultStreamsPerStore.
	StreamsPerStore int
	// RegionScanLimit bounds regions sent but not initialized per store;
	// more wait in the store's queue. Default DefaultRegionScanLimit.
	RegionScanLimit int
	// ResolveLockAfter: when a span's resolved ts has not advanced for this
	// long, the locks below it in its lagging regions are resolved with
	// client-go's lock resolver, at most once per region per
	// lockResolveRegionInterval. Default DefaultResolveLockAfter.
	ResolveLockAfter time.Duration
	// Spill, when set, keeps the PREWRITEs of open transactions over its
	// memory budget on disk (a transaction larger than memory is held
	// whole until its commit). Nil holds them all in memory.
	Spill *spill.Store
	// Logger receives the client's logs; nil discards them.
	Logger *slog.Logger
	// Meter creates the client's instruments; nil records nothing.
	Meter metric.Meter
	// Tracer traces each Subscribe, with an event per region error and
	// stream failure; nil traces nothing.
	Tracer trace.Tracer
}

func (c Config) withDefaults() Config {
	if c.StreamsPerStore == 0 {
		c.StreamsPerStore = DefaultStreamsPerStore
	}
	if c.RegionScanLimit == 0 {
		c.RegionScanLimit = DefaultRegionScanLimit
	}
	if c.ResolveLockAfter == 0 {
		c.ResolveLockAfter = DefaultResolveLockAfter
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports the first bad field, after defaults were applied.
func (c Config) Validate() error {
	switch {
	case len(c.PDAddrs) == 0:
		return errors.New("kvclient: Config.PDAddrs is required")
	case c.StreamsPerStore < 1 || c.StreamsPerStore > maxStreamsPerStore:
		return fmt.Errorf("kvclient: Config.StreamsPerStore %d out of range [1, %d]", c.StreamsPerStore, maxStreamsPerStore)
	case c.RegionScanLimit < 1:
		return fmt.Errorf("kvclient: Config.RegionScanLimit %d, want >= 1", c.RegionScanLimit)
	case c.ResolveLockAfter < 100*time.Millisecond:
		return fmt.Errorf("kvclient: Config.ResolveLockAfter %v, want >= 100ms", c.ResolveLockAfter)
	}
	return nil
}

// maxStreamsPerStore keeps the multiplexed streams of one connection far
// below TiKV's 1024 concurrent streams per HTTP/2 connection (spec §1.5).
const maxStreamsPerStore = 64

// Span is a key range in memcomparable encoding (the encoding of region
// boundaries): [Start, End), an empty End meaning +∞.
type Span struct{ Start, End []byte }

func (s Span) validate() error {
	if len(s.End) > 0 && bytes.Compare(s.Start, s.End) >= 0 {
		return fmt.Errorf("%w: span start %x is not below end %x", ErrFatal, s.Start, s.End)
	}
	return nil
}

// Sink receives a subscription's output. Calls come from Subscribe's
// goroutine, one at a time; a call that blocks holds back the whole span (and
// through gRPC flow control, TiKV). Returning an error ends Subscribe with it.
type Sink interface {
	// Events passes committed events, in order per region and in any order
	// across regions. The sink owns the slice.
	Events(ctx context.Context, evs []matcher.Event) error
	// Resolved reports that the span's resolved ts advanced to ts: every
	// event with commit ts <= ts was already passed to Events. Called only
	// with increasing ts above the start ts.
	Resolved(ctx context.Context, ts uint64) error
}

// Client is a change-data client for one TiDB cluster. It is safe for
// concurrent use; each Subscribe call runs one span.
type Client struct {
	cfg       Config
	log       *slog.Logger
	met       *metrics
	conn      *tikvconn.Conn
	pd        pd.Client
	cache     *tikv.RegionCache // memcomparable keys: regions as PD and EventFeed see them
	kv        *tikv.KVStore     // raw keys: ScanLock and the lock resolver
	clusterID uint64

	ctx     context.Context // ends at Close
	cancel  context.CancelFunc
	spawnMu sync.RWMutex // orders spawn's wg.Add before Close's wg.Wait
	wg      sync.WaitGroup
	closed  atomic.Bool

	lastReqID atomic.Uint64
	subsMu    sync.RWMutex
	subs      map[uint64]*subscription

	storesMu sync.Mutex
	stores   map[string]*store

	locator  *locator
	lockSlot chan struct{} // bounds concurrent lock resolutions
}

// New connects to PD, reads the cluster id and builds two client-go region
// caches: one over the raw PD client, whose regions carry memcomparable keys
// as EventFeed wants them, and a KVStore's (API v1 codec, raw keys) for
// ScanLock and the lock resolver. ctx bounds only the setup.
func New(ctx context.Context, cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	conn, err := tikvconn.Open(ctx, tikvconn.Options{
		Addrs: cfg.PDAddrs, Component: "tidestream-puller", PDTimeout: 10 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("kvclient: %w", err)
	}
	if conn.ClusterID == 0 {
		_ = conn.Close()
		return nil, fmt.Errorf("kvclient: PD %v reported no cluster id", cfg.PDAddrs)
	}
	met, err := newMetrics(cfg.Meter)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	cctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "kvclient"),
		met:       met,
		conn:      conn,
		pd:        conn.PD,
		cache:     tikv.NewRegionCache(conn.PD),
		kv:        conn.KV,
		clusterID: conn.ClusterID,
		ctx:       cctx,
		cancel:    cancel,
		subs:      make(map[uint64]*subscription),
		stores:    make(map[string]*store),
		lockSlot:  make(chan struct{}, lockResolveConcurrency),
	}
	c.locator = newLocator(c)
	for range locatorWorkers {
		c.spawn(func() { c.locator.run(cctx) })
	}
	c.log.Info("change-data client ready", "pd", cfg.PDAddrs, "cluster_id", conn.ClusterID,
		"streams_per_store", cfg.StreamsPerStore, "region_scan_limit", cfg.RegionScanLimit,
		"resolve_lock_after", cfg.ResolveLockAfter)
	return c, nil
}

// spawn runs fn on a goroutine that Close waits for. After Close has begun
// it starts nothing and reports false.
func (c *Client) spawn(fn func()) bool {
	c.spawnMu.RLock()
	defer c.spawnMu.RUnlock()
	if c.ctx.Err() != nil {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		fn()
	}()
	return true
}

// ClusterID is the id PD reported; every request header carries it.
func (c *Client) ClusterID() uint64 { return c.clusterID }

// Close ends every subscription (Subscribe returns ErrClosed), every stream
// and the PD and TiKV connections. It waits for the client's goroutines.
func (c *Client) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	c.spawnMu.Lock()
	c.cancel()
	c.spawnMu.Unlock()
	c.wg.Wait()
	var errs []error
	c.storesMu.Lock()
	for _, st := range c.stores {
		if st.conn != nil {
			if err := st.conn.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close connection to %s: %w", st.addr, err))
			}
		}
	}
	c.storesMu.Unlock()
	// The memcomparable cache runs background loads through PD: close it
	// before the KV store closes the PD client under it.
	c.cache.Close()
	if err := c.conn.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close KV store: %w", err))
	}
	return errors.Join(errs...)
}

// Subscribe pulls span from startTs (exclusive) until ctx ends (then it
// returns nil), the Client closes (ErrClosed), the sink fails (its error), or
// a fatal error (wrapping ErrFatal). Events reach sink in order per region;
// Resolved reports the span's frontier each time it advances.
func (c *Client) Subscribe(ctx context.Context, span Span, startTs uint64, sink Sink) error {
	if err := span.validate(); err != nil {
		return err
	}
	if sink == nil {
		return fmt.Errorf("%w: nil sink", ErrFatal)
	}
	if c.closed.Load() {
		return ErrClosed
	}
	s := newSubscription(c, c.lastReqID.Add(1), span, startTs, sink)
	c.subsMu.Lock()
	c.subs[s.id] = s
	c.subsMu.Unlock()
	defer func() {
		c.subsMu.Lock()
		delete(c.subs, s.id)
		c.subsMu.Unlock()
	}()
	tracer := c.cfg.Tracer
	if tracer == nil {
		tracer = tracenoop.NewTracerProvider().Tracer("kvclient")
	}
	ctx, s.trace = tracer.Start(ctx, "kvclient.Subscribe", trace.WithAttributes(
		attribute.String("span.start", fmt.Sprintf("%x", span.Start)),
		attribute.String("span.end", fmt.Sprintf("%x", span.End)),
		attribute.Int64("start_ts", int64(startTs)),
	))
	err := s.run(ctx)
	if err != nil {
		s.trace.RecordError(err)
		s.trace.SetStatus(codes.Error, err.Error())
	}
	s.trace.End()
	return err
}

// subscription returns the live subscription with request id id, or nil.
func (c *Client) subscription(id uint64) *subscription {
	c.subsMu.RLock()
	defer c.subsMu.RUnlock()
	return c.subs[id]
}

// store returns the store at addr, starting its connection manager on first
// use.
func (c *Client) store(addr string) *store {
	c.storesMu.Lock()
	defer c.storesMu.Unlock()
	st := c.stores[addr]
	if st == nil {
		st = newStore(c, addr)
		c.stores[addr] = st
		c.spawn(func() { st.run(c.ctx) })
	}
	return st
}

// allStores lists the stores contacted so far.
func (c *Client) allStores() []*store {
	c.storesMu.Lock()
	defer c.storesMu.Unlock()
	out := make([]*store, 0, len(c.stores))
	for _, st := range c.stores {
		out = append(out, st)
	}
	return out
}
