package kvclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pingcap/kvproto/pkg/cdcpb"
	"github.com/tikv/pd/client/opt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const (
	featuresKey      = "features"
	featureMultiplex = "stream-multiplexing"
	// maxRecvMsgSize: TiKV packs up to 6 MiB per message, but a single
	// oversized event still goes out whole.
	maxRecvMsgSize = 256 << 20
)

// gogoCodec marshals kvproto's gogo-generated messages with their own
// Marshal / Unmarshal methods: faster than protobuf-go's reflection over
// legacy messages. grpc hands a V1 codec a buffer the codec may keep, which
// is what gogo's generated code assumes.
type gogoCodec struct{}

type gogoMessage interface {
	Marshal() ([]byte, error)
	Unmarshal([]byte) error
}

func (gogoCodec) Marshal(v any) ([]byte, error) {
	m, ok := v.(gogoMessage)
	if !ok {
		return nil, fmt.Errorf("kvclient: cannot marshal %T", v)
	}
	return m.Marshal()
}

func (gogoCodec) Unmarshal(data []byte, v any) error {
	m, ok := v.(gogoMessage)
	if !ok {
		return fmt.Errorf("kvclient: cannot unmarshal into %T", v)
	}
	return m.Unmarshal(data)
}

func (gogoCodec) Name() string { return "proto" }

// store is one TiKV store address: its connection, its streams (workers) and
// the registrations waiting for one.
//
// A registration goes store.pending → worker.queue → sent on the worker's
// stream. When a stream ends, its worker hands the unsent queue back to
// pending and tells every subscription that sent on it; they re-register
// those regions from their own checkpoints.
type store struct {
	c    *Client
	addr string
	conn *grpc.ClientConn // set by run only; read by Close after run ended

	// slots bounds registrations sent but not yet initialized (spec §7
	// admission control): a worker puts a token before Send, the owning
	// subscription takes it back at INITIALIZED, an Error, a stream failure
	// or unsubscribe.
	slots chan struct{}
	// failures counts consecutive stream failures, for the reconnect backoff.
	failures atomic.Int64

	kick chan struct{}

	mu      sync.Mutex
	pending []sendItem
	workers map[slotKey]*worker
	ready   bool // version checked and multiplexing probed since the last failure
	v1      bool // the store answered UNIMPLEMENTED to EventFeedV2 + multiplexing
}

// slotKey picks a worker: on multiplexed stores by a hash of the region id
// modulo StreamsPerStore, on v1 stores one worker per subscription.
type slotKey struct {
	v1  bool
	key uint64
}

// spread mixes a region id before the modulo: PD allocates region and peer
// ids from one counter, so region ids often share a stride (all even, say)
// and a plain modulo would leave streams empty. (splitmix64's finaliser.)
func spread(id uint64) uint64 {
	id ^= id >> 30
	id *= 0xbf58476d1ce4e5b9
	id ^= id >> 27
	id *= 0x94d049bb133111eb
	return id ^ id>>31
}

// sendItem is a request for a worker: a registration (rs set) or a raw
// request such as a Deregister.
type sendItem struct {
	rs  *regionState
	req *cdcpb.ChangeDataRequest
}

func newStore(c *Client, addr string) *store {
	return &store{
		c:       c,
		addr:    addr,
		slots:   make(chan struct{}, c.cfg.RegionScanLimit),
		kick:    make(chan struct{}, 1),
		workers: make(map[slotKey]*worker),
	}
}

func (st *store) poke() {
	select {
	case st.kick <- struct{}{}:
	default:
	}
}

// enqueue queues a registration. It never blocks: the subscription that
// calls it must keep reading its inbox.
func (st *store) enqueue(rs *regionState) {
	st.mu.Lock()
	st.pending = append(st.pending, sendItem{rs: rs, req: rs.req})
	st.mu.Unlock()
	st.poke()
}

// release returns an admission slot.
func (st *store) release() { <-st.slots }

// deregister asks every open stream of this store to drop subscription id's
// registrations; v1 streams owned by it are closed instead.
func (st *store) deregister(id uint64) {
	req := &cdcpb.ChangeDataRequest{
		Header:    st.c.header(),
		RequestId: id,
		Request:   &cdcpb.ChangeDataRequest_Deregister_{Deregister: &cdcpb.ChangeDataRequest_Deregister{}},
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for k, w := range st.workers {
		if k.v1 {
			if k.key == id {
				w.stop()
			}
			continue
		}
		w.push(sendItem{req: req})
	}
}

// run connects and distributes registrations until ctx ends.
func (st *store) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-st.kick:
		}
		for ctx.Err() == nil {
			st.mu.Lock()
			n, ready := len(st.pending), st.ready
			st.mu.Unlock()
			if n == 0 {
				break
			}
			if !ready {
				if !sleepCtx(ctx, expBackoff(int(st.failures.Load()), storeBackoffBase, storeBackoffMax)) {
					return
				}
				v1, err := st.prepare(ctx)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					if errors.Is(err, ErrFatal) {
						st.failPending(err)
						continue
					}
					st.failures.Add(1)
					st.c.met.regionErrors.Add(context.Background(), 1, kindAttr("store_unreachable"))
					st.c.log.Warn("store not ready for change-data streams; its waiting regions are located again",
						"store", st.addr, "err", err)
					st.requeuePending(err)
					continue
				}
				st.mu.Lock()
				st.ready, st.v1 = true, v1
				st.mu.Unlock()
			}
			st.distribute(ctx)
		}
	}
}

// prepare checks the store's version and whether it multiplexes (spec §1.1
// probe), dialing the connection on first use.
func (st *store) prepare(ctx context.Context) (v1 bool, err error) {
	if err := st.checkVersion(ctx); err != nil {
		return false, err
	}
	if st.conn == nil {
		opts := []grpc.DialOption{
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			// TiCDC's windows (spec §1.5): a 64 KiB−1 stream window keeps
			// one stream from monopolising the connection; the 8 MiB
			// connection window keeps a store's streams busy.
			grpc.WithInitialWindowSize(64<<10 - 1),
			grpc.WithInitialConnWindowSize(8 << 20),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgSize), grpc.ForceCodec(gogoCodec{})),
			grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 3 * time.Second, PermitWithoutStream: true}),
		}
		conn, err := grpc.NewClient(st.addr, opts...)
		if err != nil {
			return false, fmt.Errorf("dial %s: %w", st.addr, err)
		}
		st.conn = conn
	}
	return st.probe(ctx)
}

// checkVersion refuses stores older than MinStoreVersion. A store PD does
// not list is retried: the region cache may be ahead of PD's store list.
func (st *store) checkVersion(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stores, err := st.c.pd.GetAllStores(ctx, opt.WithExcludeTombstone())
	if err != nil {
		return fmt.Errorf("PD GetAllStores: %w", err)
	}
	want, _ := parseVersion(MinStoreVersion)
	for _, s := range stores {
		if s.GetAddress() != st.addr {
			continue
		}
		v, err := parseVersion(s.GetVersion())
		if err != nil {
			return fmt.Errorf("%w: store %d at %s: %w", ErrFatal, s.GetId(), st.addr, err)
		}
		if v.less(want) {
			return fmt.Errorf("%w: store %d at %s runs TiKV %s, change data needs >= %s",
				ErrFatal, s.GetId(), st.addr, s.GetVersion(), MinStoreVersion)
		}
		return nil
	}
	return fmt.Errorf("store %s is not among PD's %d stores", st.addr, len(stores))
}

// probe opens EventFeedV2 asking for multiplexing and half-closes at once
// (spec §1.1): a clean end means supported, UNIMPLEMENTED means "use v1".
func (st *store) probe(ctx context.Context) (v1 bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pctx := metadata.AppendToOutgoingContext(ctx, featuresKey, featureMultiplex)
	stream, err := cdcpb.NewChangeDataClient(st.conn).EventFeedV2(pctx)
	if err == nil {
		if err = stream.CloseSend(); err == nil {
			_, err = stream.Recv()
		}
	}
	switch code := status.Code(err); {
	case err == nil || errors.Is(err, io.EOF) || code == codes.Canceled ||
		(code == codes.Unknown && strings.Contains(status.Convert(err).Message(), "EOF")):
		return false, nil
	case code == codes.Unimplemented:
		st.c.log.Info("store does not multiplex change data; one EventFeed stream per subscription",
			"store", st.addr, "answer", err)
		return true, nil
	default:
		return false, fmt.Errorf("probe EventFeedV2 on %s: %w", st.addr, err)
	}
}

// failPending fails every waiting registration's subscription with err.
func (st *store) failPending(err error) {
	st.mu.Lock()
	items := st.pending
	st.pending = nil
	st.mu.Unlock()
	seen := make(map[*subscription]bool)
	for _, it := range items {
		if it.rs == nil || seen[it.rs.sub] {
			continue
		}
		seen[it.rs.sub] = true
		it.rs.sub.post(control{fatal: err})
	}
}

// requeuePending hands waiting registrations back to their subscriptions to
// be located again: their leader may have moved off an unreachable store.
func (st *store) requeuePending(cause error) {
	st.mu.Lock()
	items := st.pending
	st.pending = nil
	st.mu.Unlock()
	for _, it := range items {
		if it.rs != nil && !it.rs.cancelled.Load() {
			it.rs.sub.post(control{unsent: it.rs, cause: cause})
		}
	}
}

// distribute hands pending registrations to workers, starting them as needed.
func (st *store) distribute(ctx context.Context) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.ready {
		return
	}
	n := uint64(st.c.cfg.StreamsPerStore)
	for _, it := range st.pending {
		if it.rs == nil || it.rs.cancelled.Load() {
			continue
		}
		k := slotKey{key: spread(it.rs.id) % n}
		if st.v1 {
			k = slotKey{v1: true, key: it.rs.sub.id}
		}
		w := st.workers[k]
		if w == nil {
			w = newWorker(st, k)
			st.workers[k] = w
			wctx, cancel := context.WithCancel(ctx)
			w.cancel = cancel
			st.c.spawn(func() { w.run(wctx) })
		}
		w.push(it)
	}
	st.pending = nil
}

// workerDone takes back a finished worker's unsent requests. A failure
// (anything but stop or shutdown) makes the store re-check before the next
// stream and tells each subscription that sent on it.
func (st *store) workerDone(ctx context.Context, w *worker, err error) {
	unsent, subs := w.drain()
	st.mu.Lock()
	if st.workers[w.key] == w {
		delete(st.workers, w.key)
	}
	for _, it := range unsent {
		if it.rs != nil { // raw requests (deregisters) die with their stream
			st.pending = append(st.pending, it)
		}
	}
	failed := ctx.Err() == nil && !w.stopped.Load()
	if failed {
		st.ready = false
	}
	st.mu.Unlock()
	if failed {
		st.failures.Add(1)
		st.c.met.reconnects.Add(context.Background(), 1, storeAttr(st.addr))
		st.c.met.regionErrors.Add(context.Background(), 1, kindAttr("stream"))
		st.c.log.Info("change-data stream ended; its regions register again", "store", st.addr,
			"stream", w.key, "subscriptions", len(subs), "err", err)
	}
	// Even a stopped worker's other subscriptions (none for v1) must hear
	// about it; a shut-down client needs nothing.
	if ctx.Err() == nil {
		for _, id := range subs {
			if s := st.c.subscription(id); s != nil {
				s.post(control{streamDown: w, cause: cleanEnd(err)})
			}
		}
	}
	st.poke()
}

// worker is one change-data stream of a store. It lives for one connection
// attempt: when the stream ends, the worker ends, and the store starts a new
// one for the next registration. A worker's identity therefore tells a
// subscription which connection a region was registered on.
type worker struct {
	st      *store
	key     slotKey
	cancel  context.CancelFunc
	stopped atomic.Bool // ended on purpose (v1 owner unsubscribed)

	mu     sync.Mutex
	queue  []sendItem
	subs   map[uint64]struct{} // subscriptions that sent a registration on it
	notify chan struct{}
}

func newWorker(st *store, k slotKey) *worker {
	return &worker{st: st, key: k, subs: make(map[uint64]struct{}), notify: make(chan struct{}, 1)}
}

func (w *worker) push(it sendItem) {
	w.mu.Lock()
	w.queue = append(w.queue, it)
	w.mu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// stop ends the worker on purpose; its subscription has gone.
func (w *worker) stop() {
	w.stopped.Store(true)
	w.cancel()
}

func (w *worker) pop() (sendItem, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.queue) == 0 {
		return sendItem{}, false
	}
	it := w.queue[0]
	w.queue[0] = sendItem{}
	w.queue = w.queue[1:]
	return it, true
}

func (w *worker) unpop(it sendItem) {
	w.mu.Lock()
	w.queue = append([]sendItem{it}, w.queue...)
	w.mu.Unlock()
}

// drain empties the queue and lists the subscriptions that used the stream.
func (w *worker) drain() ([]sendItem, []uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	q := w.queue
	w.queue = nil
	subs := make([]uint64, 0, len(w.subs))
	for id := range w.subs {
		subs = append(subs, id)
	}
	return q, subs
}

// changeDataStream is what both RPCs' clients offer.
type changeDataStream interface {
	Send(*cdcpb.ChangeDataRequest) error
	Recv() (*cdcpb.ChangeDataEvent, error)
}

func (w *worker) run(ctx context.Context) {
	err := w.serve(ctx)
	w.st.workerDone(w.st.c.ctx, w, err)
}

func (w *worker) serve(ctx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cli := cdcpb.NewChangeDataClient(w.st.conn)
	var (
		stream changeDataStream
		err    error
	)
	if w.key.v1 {
		stream, err = cli.EventFeed(sctx)
	} else {
		stream, err = cli.EventFeedV2(metadata.AppendToOutgoingContext(sctx, featuresKey, featureMultiplex))
	}
	if err != nil {
		return fmt.Errorf("open change-data stream: %w", err)
	}
	w.st.c.log.Debug("change-data stream opened", "store", w.st.addr, "stream", w.key)
	recvErr := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		recvErr <- w.recv(sctx, stream)
	}()
	err = w.send(sctx, stream, recvErr)
	cancel()
	wg.Wait()
	return err
}

// send writes queued requests until the stream or ctx ends.
func (w *worker) send(ctx context.Context, stream changeDataStream, recvErr <-chan error) error {
	for {
		it, ok := w.pop()
		if !ok {
			select {
			case <-w.notify:
				continue
			case err := <-recvErr:
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if rs := it.rs; rs != nil {
			if rs.cancelled.Load() {
				continue
			}
			select {
			case w.st.slots <- struct{}{}:
			case err := <-recvErr:
				w.unpop(it)
				return err
			case <-ctx.Done():
				w.unpop(it)
				return ctx.Err()
			}
			// Publish the stream before checking for cancellation; the
			// subscription cancels before it reads sentOn. Either it sees
			// this stream (and deregisters or re-registers there), or this
			// sees the cancellation.
			rs.sentOn.Store(w)
			rs.admitted.Store(true)
			if rs.cancelled.Load() {
				if rs.admitted.CompareAndSwap(true, false) {
					w.st.release()
				}
				continue
			}
			w.mu.Lock()
			w.subs[rs.sub.id] = struct{}{}
			w.mu.Unlock()
		}
		if err := stream.Send(it.req); err != nil {
			return fmt.Errorf("send: %w", err)
		}
	}
}

// recv routes every message to its subscription; a full inbox blocks here,
// which is the backpressure that reaches TiKV.
func (w *worker) recv(ctx context.Context, stream changeDataStream) error {
	c := w.st.c
	for {
		ev, err := stream.Recv()
		if err != nil {
			return err
		}
		// Events before the resolved ts: a resolved ts covers only rows
		// queued before it (see subscription.handle).
		evs := ev.GetEvents()
		for i := 0; i < len(evs); {
			j := i + 1
			for j < len(evs) && evs[j].GetRequestId() == evs[i].GetRequestId() {
				j++
			}
			if !c.deliver(ctx, evs[i].GetRequestId(), inbound{w: w, events: evs[i:j]}) {
				return ctx.Err()
			}
			i = j
		}
		if rts := ev.GetResolvedTs(); rts != nil {
			id := rts.GetRequestId()
			if w.key.v1 {
				id = w.key.key
			}
			if !c.deliver(ctx, id, inbound{w: w, resolved: rts}) {
				return ctx.Err()
			}
		}
	}
}

// deliver hands a message part to subscription id. It reports false only
// when ctx ended; a message for a subscription that is gone is dropped.
func (c *Client) deliver(ctx context.Context, id uint64, in inbound) bool {
	s := c.subscription(id)
	if s == nil {
		return true
	}
	select {
	case s.in <- in:
		return true
	case <-s.done:
		return true
	case <-ctx.Done():
		return false
	}
}

// header is sent on every request; TiKV reads the first one of a stream.
func (c *Client) header() *cdcpb.Header {
	return &cdcpb.Header{ClusterId: c.clusterID, TicdcVersion: TiCDCVersion}
}

// cleanEnd maps a clean end of stream (the server closed it with OK or EOF,
// spec §1.6) to nil: it says nothing about the store's health.
func cleanEnd(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// sleepCtx waits d or until ctx ends; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
