package kvclient

import (
	"bytes"
	"context"
	"fmt"
	"sync"

	"github.com/tikv/client-go/v2/kv"
	"github.com/tikv/client-go/v2/tikv"
)

const (
	// locatorWorkers bound concurrent region lookups for the whole client.
	// Lookups mostly hit the region cache; a miss is one PD round trip.
	locatorWorkers = 4
	// locateBudgetMs is client-go's backoff budget for one lookup.
	locateBudgetMs = 10000
)

// locator is the shared pool that turns range tasks into located regions.
// It runs off the subscriptions' goroutines so a slow PD delays only
// registrations, never the processing of streams.
type locator struct {
	c      *Client
	mu     sync.Mutex
	queue  []locateJob
	notify chan struct{}
}

type locateJob struct {
	s    *subscription
	task rangeTask
}

func newLocator(c *Client) *locator {
	return &locator{c: c, notify: make(chan struct{}, 1)}
}

// push queues a task; it never blocks.
func (l *locator) push(s *subscription, t rangeTask) {
	l.mu.Lock()
	l.queue = append(l.queue, locateJob{s, t})
	l.mu.Unlock()
	l.wake()
}

func (l *locator) wake() {
	select {
	case l.notify <- struct{}{}:
	default:
	}
}

func (l *locator) pop() (locateJob, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.queue) == 0 {
		return locateJob{}, false
	}
	j := l.queue[0]
	l.queue[0] = locateJob{}
	l.queue = l.queue[1:]
	if len(l.queue) > 0 {
		l.wake() // let another worker take the next one
	}
	return j, true
}

func (l *locator) run(ctx context.Context) {
	for {
		j, ok := l.pop()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-l.notify:
				continue
			}
		}
		select {
		case <-j.s.done:
			continue
		default:
		}
		l.locate(ctx, j.s, j.task)
	}
}

// locate walks [start, end) through the region cache and posts each region
// (clipped to the range) with its leader's address, or the part that could
// not be located for a retry.
func (l *locator) locate(ctx context.Context, s *subscription, t rangeTask) {
	cache := l.c.cache
	bo := tikv.NewBackoffer(ctx, locateBudgetMs)
	cur := t.start
	for cmpEnd(cur, t.end) < 0 {
		retry := func(end []byte, why string, err error) {
			s.log.Debug("locate region failed", "key", fmt.Sprintf("%x", cur), "why", why, "err", err)
			next := rangeTask{start: cur, end: end, attempt: t.attempt + 1}
			next.delay = max(rangeBackoff(next.attempt), locateRetryMin)
			s.post(control{retry: &next})
		}
		loc, err := cache.LocateKey(bo, cur)
		if err != nil {
			if ctx.Err() == nil {
				retry(t.end, "lookup", err)
			}
			return
		}
		if bytes.Compare(loc.StartKey, cur) > 0 || cmpEnd(loc.EndKey, cur) <= 0 {
			// A hole in the region map, or a stale answer.
			cache.InvalidateCachedRegion(loc.Region)
			retry(t.end, "region does not hold the key", nil)
			return
		}
		end := minEnd(loc.EndKey, t.end)
		rpcCtx, err := cache.GetTiKVRPCContext(bo, loc.Region, kv.ReplicaReadLeader, 0)
		switch {
		case err != nil || rpcCtx == nil:
			// The region fell out of the cache, or its leader's store is
			// unknown: look it up again later.
			cache.InvalidateCachedRegion(loc.Region)
			retry(end, "no leader", err)
		default:
			s.post(control{located: &located{task: t, ver: loc.Region, rpcCtx: rpcCtx, start: cur, end: end}})
		}
		if len(end) == 0 {
			return
		}
		cur = end
	}
}
