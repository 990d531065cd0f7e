package feedclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pingcap/kvproto/pkg/cdcpb"
	"github.com/pingcap/tidb/pkg/util/codec"
	"github.com/tikv/client-go/v2/tikv"
	pd "github.com/tikv/pd/client"
)

// TiCDCVersion is the version the client announces in every request header.
// It must be a semver ≥ 5.3.0, or TiKV neither batches resolved ts nor checks
// the cluster id (spec §1.4).
const TiCDCVersion = "8.5.0"

// Config says what to subscribe and where.
type Config struct {
	// PDAddrs are PD's client addresses (host:port). Required.
	PDAddrs []string
	// Start and End bound the subscribed span of raw keys, e.g.
	// tablecodec.GenTableRecordPrefix(id) and its PrefixNext. End empty = +inf.
	Start, End []byte
	// CheckpointTs is the exclusive lower bound: only commits above it are
	// delivered.
	CheckpointTs uint64
	// Multiplex opens EventFeedV2 with "features: stream-multiplexing";
	// false opens EventFeedV2 without features (resolved ts then come without
	// a request id).
	Multiplex bool

	// Taps, called from Run's goroutine in wire order per stream. Streams are
	// numbered from 1 per Client. OnRequest is called before the request is
	// sent, so a tap sees it before any answer.
	OnRequest   func(stream uint64, req *cdcpb.ChangeDataRequest)
	OnEvent     func(stream uint64, ev *cdcpb.ChangeDataEvent)
	OnStream    func(stream uint64, multiplex bool)
	OnStreamEnd func(stream uint64)

	// Logger receives the client's logs; nil discards them.
	Logger *slog.Logger
	// CountOnly keeps no changes, only their number (ChangeCount): for
	// throughput runs that would not fit in memory.
	CountOnly bool
}

// Validate reports the first missing or bad field.
func (c Config) Validate() error {
	if len(c.PDAddrs) == 0 {
		return errors.New("feedclient: Config.PDAddrs is required")
	}
	if len(c.End) > 0 && bytes.Compare(c.Start, c.End) >= 0 {
		return fmt.Errorf("feedclient: Config.Start %x must be below Config.End %x", c.Start, c.End)
	}
	return nil
}

// Change is one committed row change.
type Change struct {
	Key               []byte // raw key
	StartTS, CommitTS uint64
	Op                cdcpb.Event_Row_OpType // PUT or DELETE
	Value             []byte                 // nil for DELETE
	OldValue          []byte                 // previous value; empty when there was none
}

// ResolvedPoint is one advance of the span's resolved ts.
type ResolvedPoint struct {
	At time.Time
	Ts uint64
}

// Client subscribes one span. Run it once; read its results at any time.
type Client struct {
	cfg       Config
	log       *slog.Logger
	pd        pd.Client
	cache     *tikv.RegionCache
	clusterID uint64
	requestID uint64
	// start and end are the span in memcomparable form, the key space of
	// regions and of the request's start_key / end_key.
	start, end []byte

	ran       atomic.Bool
	closeOnce sync.Once

	mu         sync.Mutex
	changes    []Change
	nchanges   int
	resolved   uint64
	history    []ResolvedPoint
	errs       map[string]int
	reconnects int
	lockRows   int
	problems   []string
	notify     chan struct{} // closed and replaced whenever resolved advances
}

// New connects to PD, reads the cluster id and sets up a region cache. The
// connections live until Close; ctx bounds only the setup.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	type result struct {
		cli pd.Client
		err error
	}
	// pd.NewClientWithContext ties the client's lifetime to its context and
	// retries for a long time, so it runs aside while ctx bounds the wait.
	done := make(chan result, 1)
	go func() {
		cli, err := pd.NewClientWithContext(context.Background(), cfg.PDAddrs, pd.SecurityOption{},
			pd.WithCustomTimeoutOption(5*time.Second))
		done <- result{cli, err}
	}()
	var pdCli pd.Client
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("feedclient: connect to PD %v: %w", cfg.PDAddrs, r.err)
		}
		pdCli = r.cli
	case <-ctx.Done():
		go func() {
			if r := <-done; r.cli != nil {
				r.cli.Close()
			}
		}()
		return nil, fmt.Errorf("feedclient: connect to PD %v: %w", cfg.PDAddrs, ctx.Err())
	}
	id := pdCli.GetClusterID(ctx)
	if id == 0 {
		pdCli.Close()
		return nil, fmt.Errorf("feedclient: PD %v reported no cluster id", cfg.PDAddrs)
	}
	c := &Client{
		cfg:       cfg,
		log:       log,
		pd:        pdCli,
		cache:     tikv.NewRegionCache(pdCli),
		clusterID: id,
		requestID: 1,
		start:     codec.EncodeBytes(nil, cfg.Start),
		errs:      make(map[string]int),
		notify:    make(chan struct{}),
	}
	if len(cfg.End) > 0 {
		c.end = codec.EncodeBytes(nil, cfg.End)
	}
	return c, nil
}

// Close releases the region cache and the PD client. Call it after Run
// returned.
func (c *Client) Close() {
	c.closeOnce.Do(func() {
		c.cache.Close()
		c.pd.Close()
	})
}

// ClusterID is the cluster id PD reported, sent in every request header.
func (c *Client) ClusterID() uint64 { return c.clusterID }

// Changes returns the committed changes received so far, in arrival order.
// Re-subscriptions replay from a range's checkpoint, so a change can appear
// more than once; see Dedup.
func (c *Client) Changes() []Change {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Change(nil), c.changes...)
}

// ChangeCount is how many committed changes were received (re-deliveries
// included).
func (c *Client) ChangeCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nchanges
}

// ResolvedTs is the span's resolved ts: every change with commit ts at or
// below it has been received. 0 until every range has been initialised once;
// then at least CheckpointTs, and it never decreases.
func (c *Client) ResolvedTs() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resolved
}

// ResolvedHistory lists every advance of ResolvedTs, the first publication
// included.
func (c *Client) ResolvedHistory() []ResolvedPoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]ResolvedPoint(nil), c.history...)
}

// RegionErrors counts the region errors received, by kind: not_leader,
// region_not_found, epoch_not_match, server_is_busy, congested,
// duplicate_request, compatibility, cluster_id_mismatch, or unknown.
func (c *Client) RegionErrors() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.errs)
}

// Reconnects counts streams that ended while the client was running (any
// Recv error or end of stream, or a failed Send) and whose regions were
// therefore registered again on a new stream.
func (c *Client) Reconnects() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reconnects
}

// LockRecordRows counts the UNKNOWN rows of committed Lock records received
// and ignored (spec §2.5).
func (c *Client) LockRecordRows() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lockRows
}

// Problems lists protocol violations the client noticed while assembling
// rows: a COMMIT after INITIALIZED without its PREWRITE, a row at or below a
// resolved ts already received for its region, a row outside the registered
// range, a bad op or log type. A correct server produces none.
func (c *Client) Problems() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.problems...)
}

// WaitResolved waits until ResolvedTs reaches ts or ctx ends.
func (c *Client) WaitResolved(ctx context.Context, ts uint64) error {
	for {
		c.mu.Lock()
		got, ch := c.resolved, c.notify
		c.mu.Unlock()
		if got >= ts {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("feedclient: resolved ts %d did not reach %d: %w", got, ts, ctx.Err())
		}
	}
}

func (c *Client) addChange(ch Change) {
	c.mu.Lock()
	c.nchanges++
	if !c.cfg.CountOnly {
		c.changes = append(c.changes, ch)
	}
	c.mu.Unlock()
}

func (c *Client) publish(ts uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ts <= c.resolved {
		return
	}
	c.resolved = ts
	c.history = append(c.history, ResolvedPoint{At: time.Now(), Ts: ts})
	close(c.notify)
	c.notify = make(chan struct{})
}

func (c *Client) countError(kind string) {
	c.mu.Lock()
	c.errs[kind]++
	c.mu.Unlock()
}

func (c *Client) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	c.log.Warn("change-data protocol problem", "problem", msg)
	c.mu.Lock()
	c.problems = append(c.problems, msg)
	c.mu.Unlock()
}

// Dedup keeps the first change of every (key, commit ts), in order: the
// at-least-once delivery of the protocol made exactly-once.
func Dedup(changes []Change) []Change {
	type id struct {
		key string
		ts  uint64
	}
	seen := make(map[id]bool, len(changes))
	out := make([]Change, 0, len(changes))
	for _, ch := range changes {
		k := id{string(ch.Key), ch.CommitTS}
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, ch)
	}
	return out
}

// Latest returns, per key, the change with the highest commit ts: the state
// the changes lead to (a DELETE means the key is gone).
func Latest(changes []Change) map[string]Change {
	out := make(map[string]Change)
	for _, ch := range changes {
		if cur, ok := out[string(ch.Key)]; !ok || ch.CommitTS > cur.CommitTS {
			out[string(ch.Key)] = ch
		}
	}
	return out
}
