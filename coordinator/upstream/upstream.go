package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	pd "github.com/tikv/pd/client"
	"github.com/tikv/pd/client/opt"
	"github.com/tikv/pd/client/pkg/caller"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
)

// callerComponent tags our requests in PD's own metrics and logs.
const callerComponent caller.Component = "tidestream-coordinator"

// gcSafePointReaderID is the service id of GCSafePoint's read-only probe.
// PD has no "get the minimum service safepoint" call in API v1; an update
// with TTL 0 removes this (never stored) id and answers the minimum, which
// is how TiCDC reads it too.
const gcSafePointReaderID = "tidestream-gc-safepoint-reader"

// Upstream is an open connection to one upstream PD cluster. Its methods
// are safe for concurrent use; after Close they fail.
type Upstream struct {
	client    pd.Client
	cancel    context.CancelFunc // ends the client's root context
	clusterID uint64
	urls      []string
	log       *slog.Logger
	closeOnce sync.Once
}

// Open connects to PD, learns the cluster id and the leader, and returns
// once TSO and GC calls can be made. It fails within cfg.DialTimeout (or
// when ctx ends, whichever is first): a configuration error is a
// cdcerr.FieldError, PD not answering wraps cdcerr.ErrUnavailable.
func Open(ctx context.Context, cfg Config) (*Upstream, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var sec pd.SecurityOption
	if cfg.TLS.Enabled() {
		m, err := cfg.TLS.load()
		if err != nil {
			return nil, err
		}
		sec = pd.SecurityOption{SSLCABytes: m.ca, SSLCertBytes: m.cert, SSLKEYBytes: m.key}
	}
	urls := cfg.urls()
	log := cfg.Logger.With("component", "upstream", "pd", strings.Join(urls, ","))

	// The pd client's root context lives as long as the client, so it
	// must not be ctx (a request-scoped context would kill the client when
	// the create request finishes). It is cancelled on Close, and also when
	// the dial budget runs out or the caller gives up while we are still in
	// the client's constructor: its init loop retries up to 100 times a
	// second apart and stops early only when this context ends.
	start := time.Now()
	rootCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stopCallerWatch := context.AfterFunc(ctx, cancel)
	dialTimer := time.AfterFunc(cfg.DialTimeout, cancel)

	client, err := pd.NewClientWithContext(rootCtx, callerComponent, urls, sec,
		// No registration in the global Prometheus registry: tidestream
		// injects its registerer, and a second client in one process (tests,
		// `cdc server`) must not collide. The collectors still exist.
		opt.WithInitMetricsOption(false),
		// The router client serves region lookups over a QueryRegion stream
		// and is on by default; we look up no regions, so it would only hold
		// a stream open and log its reconnects.
		opt.WithEnableRouterClient(false),
	)
	timedOut := !dialTimer.Stop()
	callerGone := !stopCallerWatch()
	if err == nil && (timedOut || callerGone) {
		// Init won the race against the timer by a hair but the context is
		// already cancelled; a client with a dead root context is useless.
		client.Close()
		err = rootCtx.Err()
	}
	if err != nil {
		cancel()
		if errors.Is(ctx.Err(), context.Canceled) {
			return nil, fmt.Errorf("upstream: open PD %s: %w", strings.Join(urls, ","), ctx.Err())
		}
		// The dial budget or the caller's deadline ran out, or the client
		// gave up by itself: in every case PD did not answer in time.
		return nil, unavailable(fmt.Sprintf("no answer from PD at %s after %s",
			strings.Join(urls, ","), time.Since(start).Round(time.Millisecond)), err)
	}
	u := &Upstream{
		client:    client,
		cancel:    cancel,
		clusterID: client.GetClusterID(ctx),
		urls:      urls,
		log:       log,
	}
	log.Info("upstream PD connected", "cluster_id", u.clusterID, "leader", client.GetLeaderURL())
	return u, nil
}

// unavailable marks a PD failure as cdcerr.ErrUnavailable. The pd client's
// cause is kept as text only: its errors can wrap the client's own internal
// context.Canceled, which must not read as "the caller cancelled" to
// errors.Is or cdcerr.ToStatus.
func unavailable(what string, cause error) error {
	return fmt.Errorf("upstream: %s: %v: %w", what, cause, cdcerr.ErrUnavailable)
}

// callErr classifies the error of one PD call. The calls made here carry no
// user input PD could reject (timestamps and service ids are ours), so a
// failure is PD or the network being unhealthy, hence ErrUnavailable; a
// caller's deadline passing counts too (PD did not answer in time). The one
// exception is the caller cancelling, which is not PD's fault and must not
// be reported as an outage.
func callErr(ctx context.Context, what string, err error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("upstream: %s: %w", what, ctx.Err())
	}
	return unavailable(what, err)
}

// ClusterID is the upstream cluster's id, learnt at Open.
func (u *Upstream) ClusterID() uint64 { return u.clusterID }

// CurrentTS draws a fresh timestamp from PD's TSO: physical ms << 18 |
// logical. Every later CurrentTS, and every transaction's commit ts that
// starts after it, is greater.
//
// A refused TSO stream is tried again a few times first: PD refuses one
// while its TSO is not ready (a leader just elected, or a client's first
// stream racing its connection), and a try a moment later gets past it. A
// PD that is down is still reported unavailable, about two seconds later.
func (u *Upstream) CurrentTS(ctx context.Context) (uint64, error) {
	wait := tsoRetryWait
	var first error
	for attempt := 1; ; attempt++ {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if attempt > 1 {
			// A retry against a PD that is down waits for the client to
			// reconnect: bounded, so that a down PD is still reported soon.
			actx, cancel = context.WithTimeout(ctx, tsoRetryTimeout)
		}
		physical, logical, err := u.client.GetTS(actx)
		cancel()
		if err == nil {
			return ComposeTS(physical, logical), nil
		}
		if first == nil {
			first = err // the refusal itself; a retry's own timeout says less
		}
		if attempt == tsoAttempts || ctx.Err() != nil {
			return 0, callErr(ctx, fmt.Sprintf("get TSO (%d tries)", attempt), first)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, callErr(ctx, fmt.Sprintf("get TSO (%d tries)", attempt), first)
		case <-t.C:
		}
		wait *= 2
	}
}

// CurrentTS's tries: a retry 50 ms after a refusal and one 100 ms after
// that, each given a second.
const (
	tsoAttempts     = 3
	tsoRetryWait    = 50 * time.Millisecond
	tsoRetryTimeout = time.Second
)

// GCSafePoint returns the minimum service GC safepoint of the cluster: the
// point TiDB's GC worker may advance the GC safepoint to at any moment.
// MVCC versions needed to read at a ts above it are kept; at or below it
// they may be gone. (The GC safepoint proper lags it between GC rounds, so
// this is the safe bound to validate a start-ts against.) It changes
// nothing on PD.
func (u *Upstream) GCSafePoint(ctx context.Context) (uint64, error) {
	//nolint:staticcheck // Service safepoints are the API classic PD serves; see package doc.
	minSP, err := u.client.UpdateServiceGCSafePoint(ctx, gcSafePointReaderID, 0, 0)
	if err != nil {
		return 0, callErr(ctx, "read GC safepoint", err)
	}
	return minSP, nil
}

// UpdateServiceGCSafePoint sets serviceID's GC safepoint to ts for ttl and
// returns the cluster's minimum service safepoint afterwards.
//
// PD keeps the new value only if ts is not below that minimum, so a caller
// must compare: minSafePoint > ts means the data at ts may already be
// collected and the safepoint was not taken. The TTL is rounded up to whole
// seconds (PD's unit); ttl <= 0 removes serviceID's safepoint instead, and
// ts is then ignored.
func (u *Upstream) UpdateServiceGCSafePoint(ctx context.Context, serviceID string, ttl time.Duration, ts uint64) (minSafePoint uint64, err error) {
	if serviceID == "" {
		return 0, fmt.Errorf("upstream: UpdateServiceGCSafePoint: empty service id: %w", cdcerr.ErrInvalidArgument)
	}
	seconds := ttlSeconds(ttl)
	if seconds == 0 {
		// Removal: PD ignores the safepoint, but MaxUint64 makes the intent
		// unmistakable in PD's logs.
		ts = math.MaxUint64
	}
	//nolint:staticcheck // Service safepoints are the API classic PD serves; see package doc.
	minSP, err := u.client.UpdateServiceGCSafePoint(ctx, serviceID, seconds, ts)
	if err != nil {
		return 0, callErr(ctx, "update service GC safepoint of "+serviceID, err)
	}
	return minSP, nil
}

// ttlSeconds rounds a positive TTL up to whole seconds (so 100 ms still
// holds the safepoint for a moment instead of deleting it) and maps
// ttl <= 0 to 0, PD's "remove".
func ttlSeconds(ttl time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	s := int64(ttl / time.Second)
	if ttl%time.Second != 0 {
		s++
	}
	return s
}

// Close releases the client and its connections. It may be called more
// than once.
func (u *Upstream) Close() {
	u.closeOnce.Do(func() {
		// The client's Close cancels its own context, waits for its
		// goroutines and closes its connections; cancelling the root context
		// afterwards only releases the AfterFunc bookkeeping.
		u.client.Close()
		u.cancel()
		u.log.Info("upstream PD closed", "cluster_id", u.clusterID)
	})
}
