package kafka

import (
	"context"
	"sync"
	"time"
)

// A changefeed start has every table pipeline read (and usually create) its
// topic at the same moment. One request per topic made 10,000 topics take
// 18 minutes on two cores, and real brokers charge a round trip per request
// (and rate-limit CreateTopics). A batcher coalesces those calls: while one
// request of its kind is in flight, calls for other topics queue, and the
// next request carries every queued topic (up to batchTopics).

// batchTopics bounds the topics of one coalesced request.
const batchTopics = 1000

// batchLinger is how long the runner waits for more topics before each
// request (a batcher's every, when longer, replaces it): the callers a
// burst wakes together (the answers of one metadata request, going on to
// CreateTopics) do not reach the batcher at the same instant, and without
// it the first would go alone and the rest trickle into several small
// requests.
const batchLinger = 2 * time.Millisecond

// batchTimeout bounds one coalesced request. The request runs on the
// producer's context, not on any caller's: a caller that gives up stops
// waiting for its answer, and the others still get theirs.
const batchTimeout = 30 * time.Second

// batcher coalesces per-topic calls of one kind into requests for many
// topics, one request in flight at a time.
type batcher[R any] struct {
	max   int
	every time.Duration // least time between the starts of two requests
	// do answers every topic of one request; a request-level failure is
	// every topic's answer.
	do   func(ctx context.Context, topics []string) map[string]R
	base context.Context // the producer's; cancelled by Close

	mu      sync.Mutex
	idle    sync.Cond // signalled when the runner stops
	queue   map[string][]chan R
	order   []string // queue's topics in arrival order; may hold stale names
	running bool     // a runner goroutine is serving the queue
	closed  bool
}

func newBatcher[R any](base context.Context, every time.Duration, do func(context.Context, []string) map[string]R) *batcher[R] {
	b := &batcher[R]{max: batchTopics, every: every, do: do, base: base, queue: map[string][]chan R{}}
	b.idle.L = &b.mu
	return b
}

// get returns topic's answer from the next request that carries it, or
// ctx's error if ctx ends first (the request goes on for the others), or
// ErrClosed after close.
func (b *batcher[R]) get(ctx context.Context, topic string) (R, error) {
	var zero R
	ch := make(chan R, 1) // the runner never blocks on a caller that left
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return zero, ErrClosed
	}
	if _, ok := b.queue[topic]; !ok {
		b.order = append(b.order, topic)
	}
	b.queue[topic] = append(b.queue[topic], ch)
	if !b.running {
		// Tracked: the runner ends when the queue is empty, and close
		// waits for it.
		b.running = true
		go b.run()
	}
	b.mu.Unlock()
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		b.forget(topic, ch)
		return zero, ctx.Err()
	}
}

// forget drops a waiter that left before its topic was taken, so that
// nobody's topic is requested for nobody.
func (b *batcher[R]) forget(topic string, ch chan R) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ws := b.queue[topic]
	for i, w := range ws {
		if w == ch {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(b.queue, topic) // its name left in order is skipped
	} else {
		b.queue[topic] = ws
	}
}

// take removes up to max queued topics and their waiters. b.mu is held.
func (b *batcher[R]) take() ([]string, [][]chan R) {
	var topics []string
	var waiters [][]chan R
	for len(b.order) > 0 && len(topics) < b.max {
		t := b.order[0]
		b.order = b.order[1:]
		ws, ok := b.queue[t]
		if !ok {
			continue
		}
		delete(b.queue, t)
		topics = append(topics, t)
		waiters = append(waiters, ws)
	}
	if len(b.order) == 0 {
		b.order = nil // let the backing array go after a burst
	}
	return topics, waiters
}

// run sends requests until the queue is empty.
func (b *batcher[R]) run() {
	var last time.Time
	for {
		wait := batchLinger
		if !last.IsZero() {
			wait = max(wait, b.every-time.Since(last))
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-b.base.Done(): // closing: drain the queue without pacing
				t.Stop()
			}
		}
		b.mu.Lock()
		topics, waiters := b.take()
		if len(topics) == 0 {
			b.running = false
			b.idle.Broadcast()
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		last = time.Now()
		ctx, cancel := context.WithTimeout(b.base, batchTimeout)
		rs := b.do(ctx, topics)
		cancel()
		for i, t := range topics {
			for _, ch := range waiters[i] {
				ch <- rs[t]
			}
		}
	}
}

// close makes later gets fail with ErrClosed and waits for the runner,
// which answers whoever is queued (the client being closed, quickly).
func (b *batcher[R]) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for b.running {
		b.idle.Wait()
	}
}
