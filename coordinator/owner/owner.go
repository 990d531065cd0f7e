// Package owner elects the one coordinator that acts for the cluster
// (schedules pipelines, keeps the GC safepoint, moves changefeed states).
//
// Ownership is the etcd session's lifetime: the owner's duty runs under a
// context that is cancelled the moment the session is lost, and every write
// the duty makes carries a store.Fence on the election key, so an owner that
// was deposed while a write was in flight cannot land it. It is not
// responsible for what the duty does.
package owner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/tidestream/tidestream/coordinator/member"
	"github.com/tidestream/tidestream/coordinator/store"
)

// Duty is what the owner does while it is the owner. It must return when ctx
// is cancelled; a non-nil error other than ctx's makes the owner resign and
// campaign again after a pause, so another coordinator may take over.
type Duty func(ctx context.Context, fence store.Fence) error

// Config configures an Elector.
type Config struct {
	// Session is the member's session; losing it ends ownership.
	Session *concurrency.Session
	Keys    store.Keys
	// MemberID is the value of the election key: who the owner is.
	MemberID string
	// RetryPause is how long to wait before campaigning again after the
	// duty failed. Default 1 s.
	RetryPause time.Duration
	Logger     *slog.Logger
	// Knobs are test hooks.
	Knobs Knobs
}

// Knobs are optional test callbacks.
type Knobs struct {
	// OnElected is called with the fence after winning an election.
	OnElected func(store.Fence)
}

// Elector campaigns for ownership and runs the duty while owner.
type Elector struct {
	cfg Config
	log *slog.Logger
}

// New returns an Elector.
func New(cfg Config) (*Elector, error) {
	if cfg.Session == nil {
		return nil, errors.New("owner: Session must be set")
	}
	if cfg.MemberID == "" {
		return nil, errors.New("owner: MemberID must be set")
	}
	if cfg.RetryPause == 0 {
		cfg.RetryPause = time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Elector{cfg: cfg, log: log}, nil
}

// Run campaigns until ctx is cancelled or the session is lost. It returns
// nil on cancellation (after resigning, so a successor is elected at once)
// and an error wrapping member.ErrSessionLost when the session was lost,
// whether while owner, while campaigning or between campaigns: callers
// stop the process on that sentinel, so no path may return a bare string.
// Run never closes the session: it belongs to the member registration,
// which ends it on every path (Coordinator.Run).
func (e *Elector) Run(ctx context.Context, duty Duty) error {
	for {
		if err := e.term(ctx, duty); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-e.cfg.Session.Done():
			return fmt.Errorf("owner: %s stopped before campaigning again: %w", e.cfg.MemberID, member.ErrSessionLost)
		case <-time.After(e.cfg.RetryPause):
		}
	}
}

// term runs one campaign and, if won, one term of office. It returns an
// error (wrapping member.ErrSessionLost) only when the campaign can never
// succeed again.
func (e *Elector) term(ctx context.Context, duty Duty) error {
	election := concurrency.NewElection(e.cfg.Session, e.cfg.Keys.OwnerPrefix())
	// The campaign ends with the session: Campaign alone would keep waiting
	// on a dead lease.
	campaignCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Session.Ctx is not cancelled on lease expiry, only Done is closed, so
	// bridge the two. The goroutine ends when term returns (deferred cancel).
	go func() {
		select {
		case <-e.cfg.Session.Done():
			cancel()
		case <-campaignCtx.Done():
		}
	}()
	if err := election.Campaign(campaignCtx, e.cfg.MemberID); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		select {
		case <-e.cfg.Session.Done():
			return fmt.Errorf("owner: %s stopped campaigning: %w", e.cfg.MemberID, member.ErrSessionLost)
		default:
		}
		e.log.Warn("campaign failed; retrying", "err", err)
		return nil
	}
	fence := store.Fence{Key: election.Key(), Rev: election.Rev()}
	e.log.Info("became owner", "member", e.cfg.MemberID, "key", fence.Key, "rev", fence.Rev)
	if e.cfg.Knobs.OnElected != nil {
		e.cfg.Knobs.OnElected(fence)
	}
	err := duty(campaignCtx, fence)
	sessionLost := false
	select {
	case <-e.cfg.Session.Done():
		sessionLost = true
	default:
	}
	// Resign with a context that outlives ctx: on graceful stop the next
	// owner should not wait for our lease to expire.
	resignCtx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer rcancel()
	if !sessionLost {
		if rerr := election.Resign(resignCtx); rerr != nil {
			e.log.Warn("resign failed; the owner key expires with the session", "err", rerr)
		}
	}
	switch {
	case sessionLost:
		e.log.Error("lost ownership: etcd session expired", "member", e.cfg.MemberID)
		return fmt.Errorf("owner: %s lost ownership: %w", e.cfg.MemberID, member.ErrSessionLost)
	case ctx.Err() != nil:
		e.log.Info("stepped down", "member", e.cfg.MemberID)
		return nil
	case err != nil:
		e.log.Warn("owner duty failed; resigned and will campaign again", "err", err)
	}
	return nil
}

// Current returns the member id of the current owner, or "" if none.
func Current(ctx context.Context, cli *clientv3.Client, keys store.Keys) (string, error) {
	resp, err := cli.Get(ctx, keys.OwnerPrefix(), clientv3.WithFirstCreate()...)
	if err != nil {
		return "", fmt.Errorf("owner: read election: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}
