package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tidestream/tidestream/coordinator/upstream"
	"github.com/tidestream/tidestream/puller/kvclient"
	"github.com/tidestream/tidestream/puller/service"
	"github.com/tidestream/tidestream/puller/spill"
	"go.opentelemetry.io/otel/metric"
)

// lazyPuller connects to the upstream on the first Subscribe, not at start:
// a `cdc server` must come up (and serve the control API) while its upstream
// is still unreachable, and a failed connect is retried by the next
// Subscribe, which the sorter repeats on UNAVAILABLE.
type lazyPuller struct {
	addrs []string
	log   *slog.Logger
	meter metric.Meter
	spill *spill.Store

	mu     sync.Mutex
	client *kvclient.Client
	pd     *upstream.Upstream // for GC safepoint reads; opened with the client
	closed bool

	sp safePointCache
}

// safePointMaxAge is how long a GC safepoint read answers later
// subscriptions. A changefeed start or an owner re-placement subscribes
// every pipeline of a changefeed at once, and one PD round trip each (10,000
// at 10,000 tables) timed out and retried. A value this old can only miss a
// safepoint that moved past a from_ts in the last seconds, which the
// changefeed's own service safepoint (held at its checkpoint, refreshed every
// minute) prevents for every from_ts the owner hands out.
const safePointMaxAge = 10 * time.Second

// safePointCache holds the last GC safepoint read and lets one caller at a
// time refresh it; the others wait for that read instead of making their
// own. The safepoint never moves back, so an old value is a lower bound.
type safePointCache struct {
	turn chan struct{} // a one-slot semaphore; a channel so waiting honours ctx
	ts   uint64
	at   time.Time
	now  func() time.Time
}

func newSafePointCache() safePointCache {
	return safePointCache{turn: make(chan struct{}, 1), now: time.Now}
}

func (c *safePointCache) get(ctx context.Context, read func(context.Context) (uint64, error)) (uint64, error) {
	select {
	case c.turn <- struct{}{}:
	case <-ctx.Done():
		return 0, context.Cause(ctx)
	}
	defer func() { <-c.turn }()
	if !c.at.IsZero() && c.now().Sub(c.at) < safePointMaxAge {
		return c.ts, nil
	}
	ts, err := read(ctx)
	if err != nil {
		return 0, err
	}
	c.ts, c.at = max(c.ts, ts), c.now()
	return c.ts, nil
}

func (p *lazyPuller) get(ctx context.Context) (*kvclient.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, kvclient.ErrClosed
	}
	if p.client != nil {
		return p.client, nil
	}
	if len(p.addrs) == 0 {
		return nil, fmt.Errorf("%w: no upstream: the route names no PD addresses and the server has no --pd", kvclient.ErrFatal)
	}
	uc := upstream.DefaultConfig()
	uc.PDAddrs = p.addrs
	uc.Logger = p.log
	up, err := upstream.Open(ctx, uc)
	if err != nil {
		return nil, fmt.Errorf("puller: connect to upstream PD %v: %w", p.addrs, err)
	}
	c, err := kvclient.New(ctx, kvclient.Config{PDAddrs: p.addrs, Spill: p.spill, Logger: p.log, Meter: p.meter})
	if err != nil {
		up.Close()
		return nil, fmt.Errorf("puller: connect to upstream PD %v: %w", p.addrs, err)
	}
	p.client, p.pd = c, up
	return c, nil
}

// GCSafePoint is the upstream's GC safepoint bound: a subscription from
// below it would read a history TiKV's GC has already thinned, silently.
func (p *lazyPuller) GCSafePoint(ctx context.Context) (uint64, error) {
	if _, err := p.get(ctx); err != nil {
		return 0, err
	}
	p.mu.Lock()
	up := p.pd
	p.mu.Unlock()
	if up == nil {
		return 0, kvclient.ErrClosed
	}
	return p.sp.get(ctx, up.GCSafePoint)
}

// Subscribe implements service.Puller.
func (p *lazyPuller) Subscribe(ctx context.Context, span kvclient.Span, startTs uint64, sink kvclient.Sink) error {
	c, err := p.get(ctx)
	if err != nil {
		return err
	}
	return c.Subscribe(ctx, span, startTs, sink)
}

// upstreams is the puller role's set of upstream clusters, one lazyPuller
// per PD address set a route names; a route naming none reads --pd.
type upstreams struct {
	def   []string
	log   *slog.Logger
	meter metric.Meter
	spill *spill.Store // shared by every upstream's client

	mu     sync.Mutex
	byPD   map[string]*lazyPuller
	closed bool
}

func newUpstreams(def []string, sp *spill.Store, log *slog.Logger, meter metric.Meter) *upstreams {
	return &upstreams{def: def, spill: sp, log: log, meter: meter, byPD: make(map[string]*lazyPuller)}
}

// get implements service.Upstreams. Addresses are compared as a set, so a
// route listing them in another order shares the connection.
func (u *upstreams) get(pdAddrs []string) (service.Upstream, error) {
	addrs := pdAddrs
	if len(addrs) == 0 {
		addrs = u.def
	}
	addrs = slices.Clone(addrs)
	slices.Sort(addrs)
	addrs = slices.Compact(addrs)
	key := strings.Join(addrs, ",")
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil, kvclient.ErrClosed
	}
	p := u.byPD[key]
	if p == nil {
		p = &lazyPuller{addrs: addrs, log: u.log.With("upstream", key), meter: u.meter, spill: u.spill, sp: newSafePointCache()}
		u.byPD[key] = p
	}
	return p, nil
}

// Close closes every upstream opened.
func (u *upstreams) Close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.closed = true
	var errs []error
	for key, p := range u.byPD {
		if err := p.Close(); err != nil {
			errs = append(errs, fmt.Errorf("upstream %s: %w", key, err))
		}
		delete(u.byPD, key)
	}
	return errors.Join(errs...)
}

// Close closes the upstream client, if one was opened.
func (p *lazyPuller) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.pd != nil {
		p.pd.Close()
		p.pd = nil
	}
	if p.client == nil {
		return nil
	}
	err := p.client.Close()
	p.client = nil
	if errors.Is(err, kvclient.ErrClosed) {
		return nil
	}
	return err
}
