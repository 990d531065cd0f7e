package pdfake

import (
	"math"
	"sync"
	"time"
)

// gcWorkerServiceID is the service safepoint TiDB's GC worker keeps. PD makes
// sure it always exists (at 0 on a new cluster) and never expires, so the
// minimum service safepoint is always defined.
const gcWorkerServiceID = "gc_worker"

type serviceSafePoint struct {
	safePoint uint64
	expireAt  time.Time // zero: never
}

func (p serviceSafePoint) expired(now time.Time) bool {
	return !p.expireAt.IsZero() && now.After(p.expireAt)
}

// gcState is the GC safepoint v1 model: per-service safepoints with a TTL,
// whose minimum bounds how far GC may go, and the cluster GC safepoint that
// only the GC worker advances.
type gcState struct {
	mu       sync.Mutex
	services map[string]serviceSafePoint
	gcSP     uint64
}

func newGCState() *gcState {
	return &gcState{services: map[string]serviceSafePoint{gcWorkerServiceID: {}}}
}

// minLocked drops expired services and returns the smallest safepoint; ties
// go to the smaller id so answers are deterministic (PD returns the first in
// key order, which is the same thing).
func (g *gcState) minLocked(now time.Time) (string, serviceSafePoint) {
	var (
		minID string
		minSP = serviceSafePoint{safePoint: math.MaxUint64}
	)
	for id, sp := range g.services {
		if sp.expired(now) {
			delete(g.services, id)
			continue
		}
		if sp.safePoint < minSP.safePoint || (sp.safePoint == minSP.safePoint && id < minID) {
			minID, minSP = id, sp
		}
	}
	return minID, minSP
}

// updateService applies PD's rules for UpdateServiceGCSafePoint:
//   - ttl <= 0 removes the service's safepoint (how a service lets go);
//   - otherwise the safepoint is stored with the TTL only if it is not below
//     the current minimum: a service cannot pull GC back to a point whose
//     data may already be gone, and learns so from the minimum it gets back;
//   - the answer is the minimum afterwards, its owner and its remaining TTL
//     in seconds (MaxInt64 for never).
func (g *gcState) updateService(id string, ttlSeconds int64, safePoint uint64, now time.Time) (minID string, minSafePoint uint64, ttlLeft int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if ttlSeconds <= 0 && id != gcWorkerServiceID {
		delete(g.services, id)
	}
	mID, m := g.minLocked(now)
	if ttlSeconds > 0 && safePoint >= m.safePoint {
		p := serviceSafePoint{safePoint: safePoint}
		if id != gcWorkerServiceID {
			p.expireAt = addSeconds(now, ttlSeconds)
		}
		g.services[id] = p
		mID, m = g.minLocked(now)
	}
	ttlLeft = math.MaxInt64
	if !m.expireAt.IsZero() {
		ttlLeft = int64(m.expireAt.Sub(now) / time.Second)
	}
	return mID, m.safePoint, ttlLeft
}

// addSeconds adds a TTL that may be as large as MaxInt64 seconds (PD's
// "forever") without overflowing time.Duration.
func addSeconds(now time.Time, seconds int64) time.Time {
	const maxSeconds = int64(math.MaxInt64 / int64(time.Second))
	if seconds >= maxSeconds {
		return time.Time{} // forever
	}
	return now.Add(time.Duration(seconds) * time.Second)
}

// setGCWorker moves the gc_worker service safepoint to ts and lets the GC
// safepoint follow the new minimum, as one round of TiDB's GC worker does.
func (g *gcState) setGCWorker(ts uint64, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.services[gcWorkerServiceID] = serviceSafePoint{safePoint: ts}
	if _, m := g.minLocked(now); m.safePoint > g.gcSP {
		g.gcSP = m.safePoint
	}
}

// advance is UpdateGCSafePoint: forward only; returns the value in force.
func (g *gcState) advance(ts uint64) uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if ts > g.gcSP {
		g.gcSP = ts
	}
	return g.gcSP
}

func (g *gcState) gcSafePoint() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.gcSP
}

func (g *gcState) snapshot(now time.Time) map[string]uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.minLocked(now) // drop expired entries first
	out := make(map[string]uint64, len(g.services))
	for id, sp := range g.services {
		out[id] = sp.safePoint
	}
	return out
}
