package kvclient

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/tikv/client-go/v2/oracle"
	"github.com/tikv/client-go/v2/tikv"
	"github.com/tikv/client-go/v2/util/codec"
)

const (
	// lockResolveRegionInterval rate-limits lock resolution per region, as
	// TiCDC does (10 s): a region whose lock belongs to a live transaction
	// would otherwise be scanned on every check.
	lockResolveRegionInterval = 10 * time.Second
	// lockResolveConcurrency bounds concurrent lock resolutions per client.
	lockResolveConcurrency = 4
	// scanLockLimit is locks per ScanLock page (TiCDC: 1024).
	scanLockLimit uint32 = 1024
	// lockResolveBudgetMs is client-go's backoff budget for one region.
	lockResolveBudgetMs = 20000
)

// stuckCheckInterval is how often a subscription checks for a stuck resolved
// ts: TiCDC's 2 s, faster when the threshold is short (tests).
func stuckCheckInterval(after time.Duration) time.Duration {
	return min(2*time.Second, max(after/4, 50*time.Millisecond))
}

// checkStuck starts lock resolution for the lagging regions of a span whose
// resolved ts has not advanced for ResolveLockAfter (spec §3.10). Only
// initialised regions qualify: an uninitialised one is still scanning, and
// resolving locks cannot help it.
func (s *subscription) checkStuck() {
	after := s.c.cfg.ResolveLockAfter
	stuckFor := time.Since(s.lastAdvance)
	if stuckFor < after {
		return
	}
	// Resolve locks older than the stuck ts plus the threshold: locks that
	// have blocked for at least that long.
	stuck := s.frontier.Frontier()
	target := oracle.ComposeTS(oracle.ExtractPhysical(stuck)+after.Milliseconds(), 0)
	now := time.Now()
	var started, uninit int
	var slowest *regionState
	for _, rs := range s.regions {
		if !rs.m.Initialized() || rs.stopping {
			uninit++
			continue
		}
		if slowest == nil || rs.m.ResolvedTs() < slowest.m.ResolvedTs() {
			slowest = rs
		}
		if rs.m.ResolvedTs() >= target || now.Sub(rs.lastLockResolve) < lockResolveRegionInterval {
			continue
		}
		if !s.c.resolveLocks(rs.id, rs.start, rs.end, target) {
			break // all resolver slots busy; the next check continues
		}
		rs.lastLockResolve = now
		started++
	}
	if started == 0 && stuckFor <= 2*after {
		return
	}
	skipped, ok := s.stuckLog.allow(now, stuckLogEvery)
	if !ok {
		return
	}
	args := []any{"resolved_ts", stuck, "stuck_for", stuckFor.Round(time.Millisecond),
		"regions", len(s.regions), "uninitialized", uninit, "lock_resolves_started", started}
	if slowest != nil {
		args = append(args, "slowest_region", slowest.id, "slowest_resolved_ts", slowest.m.ResolvedTs())
	}
	if skipped > 0 {
		args = append(args, "reports_since_last_logged", skipped)
	}
	s.log.Info("span resolved ts is stuck", args...)
}

// stuckLogEvery bounds the stuck-span message to one per span per minute.
// Logged on every check, a changefeed of 10,000 spans that were all still
// scanning spent 13% of a server's CPU writing it.
const stuckLogEvery = time.Minute

// logThrottle lets a message through at most once per interval and counts
// the ones it held back, so the next one says how many there were.
type logThrottle struct {
	last    time.Time
	skipped int
}

func (l *logThrottle) allow(now time.Time, every time.Duration) (skipped int, ok bool) {
	if !l.last.IsZero() && now.Sub(l.last) < every {
		l.skipped++
		return 0, false
	}
	skipped, l.skipped, l.last = l.skipped, 0, now
	return skipped, true
}

// resolveLocks resolves, in the background, the locks below target in
// region id's part [start, end) (memcomparable) of a span. It reports false
// when every resolver slot is busy.
func (c *Client) resolveLocks(regionID uint64, start, end []byte, target uint64) bool {
	select {
	case c.lockSlot <- struct{}{}:
	default:
		return false
	}
	started := c.spawn(func() {
		defer func() { <-c.lockSlot }()
		n, err := c.resolveRangeLocks(c.ctx, start, end, target)
		outcome := "ok"
		if err != nil {
			outcome = "error"
			if c.ctx.Err() == nil {
				c.log.Warn("resolve locks failed", "region", regionID, "target_ts", target, "err", err)
			}
		} else if n > 0 {
			c.log.Info("resolved locks of a stuck region", "region", regionID, "target_ts", target, "locks", n)
		}
		c.met.lockResolves.Add(context.Background(), 1, kindAttr(outcome))
	})
	if !started { // the client is closing
		<-c.lockSlot
	}
	return started
}

// resolveRangeLocks scans the locks with start ts below target in [start,
// end) and lets client-go's lock resolver check each transaction's primary:
// committed or expired transactions get their locks committed or rolled
// back; live ones are left alone (callerStartTS 0 pushes nothing). It returns
// how many locks it saw.
func (c *Client) resolveRangeLocks(ctx context.Context, start, end []byte, target uint64) (int, error) {
	// Never resolve above the present: ScanLock with a future max version
	// would see locks of transactions that are just starting.
	now, err := c.kv.CurrentTimestamp(oracle.GlobalTxnScope)
	if err != nil {
		return 0, fmt.Errorf("get TSO: %w", err)
	}
	target = min(target, now)
	// ScanLock speaks raw keys; the span's bounds are memcomparable.
	rawStart, rawEnd, err := rawRange(start, end)
	if err != nil {
		return 0, err
	}
	scanner := tikv.NewRegionLockResolver("tidestream-puller", c.kv)
	resolver := c.kv.GetLockResolver()
	total := 0
	key := rawStart
	for {
		bo := tikv.NewBackoffer(ctx, lockResolveBudgetMs)
		locks, loc, err := scanner.ScanLocksInOneRegion(bo, key, rawEnd, target, scanLockLimit)
		if err != nil {
			return total, fmt.Errorf("scan locks from %x: %w", key, err)
		}
		total += len(locks)
		if len(locks) > 0 {
			if _, err := resolver.ResolveLocks(bo, 0, locks); err != nil {
				return total, fmt.Errorf("resolve %d locks: %w", len(locks), err)
			}
		}
		var next []byte
		if len(locks) >= int(scanLockLimit) {
			next = append(append([]byte(nil), locks[len(locks)-1].Key...), 0)
		} else {
			next = loc.EndKey
		}
		if len(next) == 0 || (len(rawEnd) > 0 && bytes.Compare(next, rawEnd) >= 0) {
			return total, nil
		}
		key = next
	}
}

// rawRange decodes a memcomparable range into raw keys; an empty bound stays
// empty (unbounded).
func rawRange(start, end []byte) (rawStart, rawEnd []byte, err error) {
	if len(start) > 0 {
		if _, rawStart, err = codec.DecodeBytes(start, nil); err != nil {
			return nil, nil, fmt.Errorf("decode range start %x: %w", start, err)
		}
	}
	if len(end) > 0 {
		if _, rawEnd, err = codec.DecodeBytes(end, nil); err != nil {
			return nil, nil, fmt.Errorf("decode range end %x: %w", end, err)
		}
	}
	return rawStart, rawEnd, nil
}
