// Package snapshot reads TiKV at a fixed timestamp through client-go's
// transactional snapshot: the same region cache, lock resolution and retry
// rules TiDB uses for its own reads. The coordinator uses it to load the
// schema (TiDB's meta keys) at a changefeed's start ts.
//
// Keys and values are raw TiDB keys (API v1, no keyspace prefix), as
// tablecodec builds them.
package snapshot

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tidestream/tidestream/puller/internal/tikvconn"
	"github.com/tikv/client-go/v2/config"
	tikverr "github.com/tikv/client-go/v2/error"
	"github.com/tikv/client-go/v2/oracle"
	"github.com/tikv/client-go/v2/txnkv/txnsnapshot"
)

// Sentinels. Every error a Reader returns wraps exactly one of them (or is
// the caller's own: a context error, or what a Scan callback returned), so a
// caller decides with errors.Is or IsRetryable.
var (
	// ErrBelowGCSafepoint: the requested ts is older than the cluster's
	// txn safe point, so versions it needs may already be collected.
	// Retrying cannot help: a changefeed that hits this has lost data and
	// must fail.
	ErrBelowGCSafepoint = errors.New("snapshot: snapshot ts below GC safepoint")
	// ErrInvalidArgument: the call itself is wrong (empty PD list, ts 0,
	// end before start). Fatal.
	ErrInvalidArgument = errors.New("snapshot: invalid argument")
	// ErrUnavailable: PD or TiKV failed after client-go's own backoff
	// (region errors, store down, PD timeout). Retryable by the caller's
	// restart loop.
	ErrUnavailable = errors.New("snapshot: upstream unavailable")
	// ErrClosed: the Reader was closed. Fatal for this Reader.
	ErrClosed = errors.New("snapshot: reader closed")
)

// IsRetryable reports whether err may succeed if the same call is made again
// later. Context errors are not retryable here: the caller gave up.
func IsRetryable(err error) bool {
	return errors.Is(err, ErrUnavailable)
}

// Option configures New.
type Option func(*options)

type options struct {
	security       config.Security
	scanBatchSize  int
	connectTimeout time.Duration
}

// WithTLS sets the CA, certificate and key files for PD and TiKV. Default:
// plaintext.
func WithTLS(caPath, certPath, keyPath string) Option {
	return func(o *options) {
		o.security = config.Security{ClusterSSLCA: caPath, ClusterSSLCert: certPath, ClusterSSLKey: keyPath}
	}
}

// WithScanBatchSize sets how many pairs one Scan RPC asks for. Default 256,
// client-go's own default; schema scans touch few, small keys.
func WithScanBatchSize(n int) Option {
	return func(o *options) { o.scanBatchSize = n }
}

// WithConnectTimeout bounds how long New waits for PD (the pd client
// otherwise retries until the context ends). Default 30 s: several PD
// leader elections. Running out is ErrUnavailable.
func WithConnectTimeout(d time.Duration) Option {
	return func(o *options) { o.connectTimeout = d }
}

// Reader reads committed data at a timestamp. It is safe for concurrent use.
type Reader struct {
	conn *tikvconn.Conn
	opts options
}

// New connects to PD at pdAddrs and builds a client-go KVStore: a pd client
// wrapped in the API v1 codec, a region cache, an RPC client and the
// txn-safe-point watcher that makes reads below the GC safepoint fail.
//
// ctx bounds only the connection (with WithConnectTimeout); the Reader lives
// until Close.
//
// The safe point is read from PD's GC states API, or, on clusters before
// 9.0, from PD's etcd at the same addresses (client-go decides).
func New(ctx context.Context, pdAddrs []string, opts ...Option) (*Reader, error) {
	o := options{scanBatchSize: txnsnapshot.DefaultScanBatchSize, connectTimeout: 30 * time.Second}
	for _, f := range opts {
		f(&o)
	}
	if len(pdAddrs) == 0 {
		return nil, fmt.Errorf("%w: no PD address", ErrInvalidArgument)
	}
	if o.scanBatchSize <= 0 {
		return nil, fmt.Errorf("%w: scan batch size %d, want > 0", ErrInvalidArgument, o.scanBatchSize)
	}
	if o.connectTimeout <= 0 {
		return nil, fmt.Errorf("%w: connect timeout %v, want > 0", ErrInvalidArgument, o.connectTimeout)
	}
	connectCtx, cancelConnect := context.WithTimeout(ctx, o.connectTimeout)
	defer cancelConnect()
	conn, err := tikvconn.Open(connectCtx, tikvconn.Options{Addrs: pdAddrs, Component: "tidestream-snapshot", Security: o.security})
	if errors.Is(err, tikvconn.ErrTLS) {
		return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	if err != nil {
		return nil, classify(ctx, err)
	}
	return &Reader{conn: conn, opts: o}, nil
}

// Close releases the store and its PD / TiKV connections.
func (r *Reader) Close() error { return r.conn.Close() }

// CurrentTS returns a fresh timestamp from PD's TSO: a snapshot at it sees
// every transaction committed before the call.
func (r *Reader) CurrentTS(ctx context.Context) (uint64, error) {
	if err := r.usable(ctx); err != nil {
		return 0, err
	}
	ts, err := r.conn.KV.GetOracle().GetTimestamp(ctx, &oracle.Option{TxnScope: oracle.GlobalTxnScope})
	if err != nil {
		return 0, classify(ctx, fmt.Errorf("get TSO: %w", err))
	}
	return ts, nil
}

// Get returns the value of key at ts, or nil if the key has no committed
// value there.
func (r *Reader) Get(ctx context.Context, key []byte, ts uint64) ([]byte, error) {
	if err := r.check(ctx, ts); err != nil {
		return nil, err
	}
	e, err := r.snapshot(ts).Get(ctx, key)
	if errors.Is(err, tikverr.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, classify(ctx, fmt.Errorf("get %x at %d: %w", key, ts, err))
	}
	return e.Value, nil
}

// BatchGet returns the values of keys at ts, keyed by string(key). Absent
// keys are not in the map.
func (r *Reader) BatchGet(ctx context.Context, keys [][]byte, ts uint64) (map[string][]byte, error) {
	if err := r.check(ctx, ts); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return map[string][]byte{}, nil
	}
	// client-go may reorder the slice it is given; the caller's stays as is.
	own := append([][]byte(nil), keys...)
	m, err := r.snapshot(ts).BatchGet(ctx, own)
	if err != nil {
		return nil, classify(ctx, fmt.Errorf("batch get %d keys at %d: %w", len(keys), ts, err))
	}
	out := make(map[string][]byte, len(m))
	for k, e := range m {
		if !e.IsValueEmpty() {
			out[k] = e.Value
		}
	}
	return out, nil
}

// Scan calls fn for each committed key in [start, end) at ts, in key order,
// at most limit times (limit <= 0: no limit). An empty end means no upper
// bound. k and v are valid only during the call. An error from fn stops the
// scan and is returned as is.
func (r *Reader) Scan(ctx context.Context, start, end []byte, ts uint64, limit int, fn func(k, v []byte) error) error {
	if err := r.check(ctx, ts); err != nil {
		return err
	}
	if len(end) > 0 && string(end) <= string(start) {
		return fmt.Errorf("%w: scan end %x not after start %x", ErrInvalidArgument, end, start)
	}
	snap := r.snapshot(ts)
	batch := r.opts.scanBatchSize
	if limit > 0 && limit < batch {
		// Do not fetch a full batch to use a few pairs of it.
		batch = limit
	}
	snap.SetScanBatchSize(batch)
	it, err := snap.Iter(start, end)
	if err != nil {
		return classify(ctx, fmt.Errorf("scan [%x, %x) at %d: %w", start, end, ts, err))
	}
	defer it.Close()
	for n := 0; it.Valid() && (limit <= 0 || n < limit); n++ {
		if err := fn(it.Key(), it.Value()); err != nil {
			return err
		}
		// client-go's scanner does not take a context; stop between
		// batches ourselves.
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := it.Next(); err != nil {
			return classify(ctx, fmt.Errorf("scan [%x, %x) at %d: %w", start, end, ts, err))
		}
	}
	return nil
}

func (r *Reader) snapshot(ts uint64) *txnsnapshot.KVSnapshot {
	s := r.conn.KV.GetSnapshot(ts)
	s.SetScanBatchSize(r.opts.scanBatchSize)
	return s
}

func (r *Reader) check(ctx context.Context, ts uint64) error {
	if ts == 0 {
		return fmt.Errorf("%w: ts 0", ErrInvalidArgument)
	}
	return r.usable(ctx)
}

func (r *Reader) usable(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-r.conn.KV.Closed():
		return ErrClosed
	default:
		return nil
	}
}

// classify wraps err in the sentinel that says what the caller may do. The
// context's own error wins: client-go reports a cancelled call as whatever
// RPC failed at that moment.
func classify(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%w (%w)", cerr, err)
	}
	var aborted *tikverr.ErrTxnAbortedByGC
	var tooEarly *tikverr.ErrGCTooEarly
	if errors.As(err, &aborted) || errors.As(err, &tooEarly) {
		return fmt.Errorf("%w: %w", ErrBelowGCSafepoint, err)
	}
	// What is left comes from PD or TiKV after client-go's own backoff ran
	// out (region errors, store unavailable, PD timeout, locks not yet
	// resolvable, its internal deadline): transient by nature. Permanent
	// conditions are caught above or by the argument checks.
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}
