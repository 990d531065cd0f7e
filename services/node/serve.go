package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tidestream/tidestream/coordinator/member"
	"github.com/tidestream/tidestream/services/runtime/logging"
)

// Backoff between restarts after a lost etcd session. A session is lost
// mostly when the process is starved (CPU, GC, a stalled disk) for longer
// than the TTL; restarting at once would add a burst of start-up work to a
// machine that is already behind, and losing it again at once says the
// cause persists, so each quick loss doubles the wait.
const (
	restartBackoffMin = time.Second
	restartBackoffMax = 30 * time.Second
	// An incarnation that ran this long was healthy: the next loss is a
	// new incident, not the same one again, and starts from the minimum.
	restartBackoffReset = 5 * time.Minute
)

// Serve runs the process as Start then Run do, and restarts it in place
// when Run ends because the etcd session was lost, as TiCDC's capture does:
// everything the lost incarnation ran has stopped when Run returns, so a
// fresh Start (new session, new roles, a new member id unless cfg.MemberID
// is set, the embedded etcd reopened on the same data dir) can register
// again. That is safe because the owner re-places a lost member's pipelines
// and the epoch fence on checkpoint writes (DESIGN §8) rejects whatever the
// old incarnation still had in flight. It returns nil once ctx is cancelled
// and any other error of Start or Run as it comes.
func Serve(ctx context.Context, cfg Config, log *slog.Logger) error {
	return serve(ctx, cfg, log, serveHooks{specs: roleSpecs()})
}

// serveHooks are Serve's seams for tests.
type serveHooks struct {
	specs []roleSpec
	// started, if set, sees each incarnation between Start and Run, on
	// Serve's goroutine; it must not keep n.
	started func(n *Node)
}

func serve(ctx context.Context, cfg Config, log *slog.Logger, h serveHooks) error {
	log = logging.OrDiscard(log)
	var delay time.Duration
	var lost clientv3.LeaseID
	for incarnation := 1; ; incarnation++ {
		began := time.Now()
		n, err := start(ctx, cfg, log, h.specs)
		if err != nil {
			if incarnation == 1 {
				return err
			}
			if ctx.Err() != nil {
				// A stop asked for while restarting: nothing runs.
				return nil
			}
			return fmt.Errorf("node: restart after a lost etcd session: %w", err)
		}
		n.lostLease = lost
		if h.started != nil {
			h.started(n)
		}
		err = n.Run(ctx)
		if !errors.Is(err, member.ErrSessionLost) || ctx.Err() != nil {
			return err
		}
		ran := time.Since(began)
		delay = nextRestartDelay(delay, ran)
		lost = n.lease
		log.Warn("etcd session lost: everything this process ran has stopped; restarting in place",
			"member", n.cfg.MemberID, "ran", ran.Round(time.Millisecond).String(), "incarnation", incarnation,
			"restart_in", delay.String(), "err", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// nextRestartDelay is the wait before the next restart, given the previous
// wait (0: none yet) and how long the incarnation that lost its session ran.
func nextRestartDelay(prev, ran time.Duration) time.Duration {
	if prev == 0 || ran >= restartBackoffReset {
		return restartBackoffMin
	}
	return min(2*prev, restartBackoffMax)
}

// revokeLost revokes the lease of the previous incarnation's lost session.
// The client gives a session up when no keep-alive was answered within the
// TTL, which does not mean etcd has expired the lease yet: while it lives,
// its member key (and owner key) stay, so a fixed --member-id could not
// register again and no other coordinator could win the election until it
// expired. The lease was this process's and nothing acts on it any more,
// so ending it early is safe.
func (n *Node) revokeLost(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, n.cfg.SessionTTL)
	defer cancel()
	lease := fmt.Sprintf("%x", n.lostLease)
	switch _, err := n.etcd.Revoke(rctx, n.lostLease); {
	case err == nil:
		n.log.Info("revoked the lost session's lease, which etcd still held", "lease", lease)
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
	default:
		n.log.Warn("revoking the lost session's lease failed; its keys expire after the TTL", "lease", lease, "err", err)
	}
}
