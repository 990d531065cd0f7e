package kvclient

import (
	"bytes"
	"context"
	"fmt"
	"slices"
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

// popBatch takes up to n queued jobs.
func (l *locator) popBatch(n int) []locateJob {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := min(n, len(l.queue))
	if k == 0 {
		return nil
	}
	out := slices.Clone(l.queue[:k])
	clear(l.queue[:k])
	l.queue = l.queue[k:]
	if len(l.queue) > 0 {
		l.wake() // let another worker take the next ones
	}
	return out
}

func (l *locator) run(ctx context.Context) {
	for {
		jobs := l.popBatch(prefetchBatch)
		if len(jobs) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-l.notify:
				continue
			}
		}
		l.prefetch(ctx, jobs)
		for _, j := range jobs {
			select {
			case <-j.s.done:
				continue
			default:
			}
			l.locate(ctx, j.s, j.task)
		}
	}
}

// prefetchBatch is how many queued range tasks one PD scan covers.
const prefetchBatch = 512

// prefetch loads the regions of jobs' ranges that the region cache misses
// in a few batched PD scans (128 regions each), so that locate then finds
// them cached. A changefeed start or a re-placement queues a range per
// table at once: one lookup each was 10,000 PD round trips at 10,000
// tables, and most spans waited minutes for their first region. A failed
// prefetch costs nothing but the try: locate looks the misses up one by
// one, as before.
func (l *locator) prefetch(ctx context.Context, jobs []locateJob) {
	ranges := make([]kv.KeyRange, 0, len(jobs))
	for _, j := range jobs {
		if l.c.cache.TryLocateKey(j.task.start) == nil {
			ranges = append(ranges, kv.KeyRange{StartKey: j.task.start, EndKey: j.task.end})
		}
	}
	if len(ranges) < 2 {
		return
	}
	ranges = mergeRanges(ranges)
	bo := tikv.NewBackoffer(ctx, locateBudgetMs)
	if _, err := l.c.cache.BatchLocateKeyRanges(bo, ranges); err != nil && ctx.Err() == nil {
		l.c.log.Debug("batched region lookup failed; locating one by one", "ranges", len(ranges), "err", err)
	}
}

// mergeRanges sorts ranges and merges overlapping or touching ones: PD's
// batch scan takes ordered, disjoint ranges. An empty end is +inf.
func mergeRanges(rs []kv.KeyRange) []kv.KeyRange {
	slices.SortFunc(rs, func(a, b kv.KeyRange) int { return bytes.Compare(a.StartKey, b.StartKey) })
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if len(last.EndKey) == 0 || bytes.Compare(last.EndKey, r.StartKey) >= 0 {
			last.EndKey = maxEnd(last.EndKey, r.EndKey)
			continue
		}
		out = append(out, r)
	}
	return out
}

func maxEnd(a, b []byte) []byte {
	if cmpEnd(a, b) >= 0 {
		return a
	}
	return b
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
