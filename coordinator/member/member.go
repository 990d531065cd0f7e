// Package member registers a tidestream process in etcd for as long as it
// lives: one etcd session (lease) per process, the member key attached to it.
//
// The session is the process's right to act. When it is lost (the lease
// expired because the process was paused or partitioned longer than the TTL)
// Run returns ErrSessionLost and the process must stop everything it does:
// others may already have taken over its work. It is not responsible for
// electing an owner (package owner), which campaigns on the same session.
package member

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidestream/tidestream/coordinator/store"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// ErrSessionLost means the process's etcd session expired: it must stop
// acting (local fence) and exit or restart.
var ErrSessionLost = errors.New("member: etcd session lost")

// Config describes one member.
type Config struct {
	// ID identifies the member; unique within the cluster.
	ID string
	// Addr is the address of the member's gRPC server.
	Addr string
	// Roles the member runs.
	Roles []string
	// Version of the binary.
	Version string
	// TTL of the session lease: how long after the process dies its keys
	// vanish and another coordinator can take over (expiry ≤ TTL, then the
	// next campaigner wins at once), and how long a stalled process keeps
	// its session (keep-alives go every TTL/3). Processes default to 10 s,
	// TiCDC's capture session TTL (services/node).
	TTL time.Duration
	// TakeOver: the etcd is this process's own (embedded in its data
	// dir, which only one process can open), so a live member key with
	// this id can only be a previous incarnation's, killed before its
	// lease expired. Its lease is revoked — its member and owner keys go
	// at once — instead of refusing to start until it expires.
	TakeOver bool
	// Logger; nil discards.
	Logger *slog.Logger
}

// Validate checks the config.
func (c *Config) Validate() error {
	if c.ID == "" {
		return errors.New("member: ID must be set")
	}
	if c.Addr == "" {
		return errors.New("member: Addr must be set")
	}
	if c.TTL < 2*time.Second || c.TTL > 5*time.Minute {
		return fmt.Errorf("member: TTL must be within [2s, 5m], got %s", c.TTL)
	}
	return nil
}

// Registration is a live member record.
type Registration struct {
	cfg     Config
	session *concurrency.Session
	key     string
	log     *slog.Logger

	closeOnce sync.Once
}

// Register opens a session and writes the member key under its lease.
func Register(ctx context.Context, cli *clientv3.Client, keys store.Keys, cfg Config) (*Registration, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ttlSeconds := int((cfg.TTL + time.Second - 1) / time.Second)
	// The session must outlive ctx: on graceful stop Run revokes the lease
	// itself (so keys vanish at once), and a keep-alive bound to ctx would
	// die first and make a clean stop look like a lost session.
	session, err := concurrency.NewSession(cli, concurrency.WithTTL(ttlSeconds), concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		return nil, fmt.Errorf("member: open etcd session: %w", err)
	}
	rec := &pb.Member{
		Id:        cfg.ID,
		Addr:      cfg.Addr,
		Roles:     cfg.Roles,
		Version:   cfg.Version,
		StartTime: timestamppb.Now(),
	}
	val, err := store.MarshalMember(rec)
	if err != nil {
		_ = session.Close()
		return nil, fmt.Errorf("member: encode record: %w", err)
	}
	key := keys.Member(cfg.ID)
	if cfg.TakeOver {
		if err := takeOver(ctx, cli, key, log); err != nil {
			_ = session.Close()
			return nil, err
		}
	}
	// Refuse to register over a live member with the same id: two processes
	// sharing an id would fence each other's writes unpredictably.
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.Version(key), "=", 0)).
		Then(clientv3.OpPut(key, val, clientv3.WithLease(session.Lease()))).
		Commit()
	if err != nil {
		_ = session.Close()
		return nil, fmt.Errorf("member: register %s: %w", cfg.ID, err)
	}
	if !resp.Succeeded {
		_ = session.Close()
		return nil, fmt.Errorf("member: id %q is already registered by a live process", cfg.ID)
	}
	log.Info("member registered", "member", cfg.ID, "addr", cfg.Addr, "lease", fmt.Sprintf("%x", session.Lease()), "ttl", cfg.TTL.String())
	return &Registration{cfg: cfg, session: session, key: key, log: log}, nil
}

// takeOver revokes the lease of a previous incarnation's member key.
func takeOver(ctx context.Context, cli *clientv3.Client, key string, log *slog.Logger) error {
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("member: read %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].Lease == 0 {
		return nil
	}
	lease := clientv3.LeaseID(resp.Kvs[0].Lease)
	if _, err := cli.Revoke(ctx, lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("member: revoke the previous incarnation's lease %x: %w", lease, err)
	}
	log.Info("took over from a previous incarnation killed before its lease expired", "key", key, "lease", fmt.Sprintf("%x", lease))
	return nil
}

// Session is the member's etcd session, shared with the owner campaign so
// that losing it ends both.
func (r *Registration) Session() *concurrency.Session { return r.session }

// ID returns the member id.
func (r *Registration) ID() string { return r.cfg.ID }

// Run holds the registration until ctx is cancelled (then closes it, see
// Close) or the session is lost (then returns ErrSessionLost).
func (r *Registration) Run(ctx context.Context) error {
	select {
	case <-ctx.Done():
		r.Close()
		return nil
	case <-r.session.Done():
		r.Close()
		return fmt.Errorf("%w (member %s, ttl %s)", ErrSessionLost, r.cfg.ID, r.cfg.TTL)
	}
}

// Close ends the session: it revokes a live lease, so the member key and
// any owner key vanish at once rather than after the TTL, and stops the
// keep-alive. The caller that registered must call it on every path,
// including errors before Run; it is safe to call more than once and after
// Run.
func (r *Registration) Close() {
	r.closeOnce.Do(func() {
		select {
		case <-r.session.Done():
			// Nothing refreshes the lease any more, so it is gone or
			// expires within the TTL. Revoking would add nothing, and it
			// would block for its whole timeout in the usual cause of a
			// lost session, etcd being unreachable, delaying the stop.
			return
		default:
		}
		// A fresh context: the caller's may already be cancelled, and the
		// revoke must still reach etcd to free the keys promptly.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if _, err := r.session.Client().Revoke(ctx, r.session.Lease()); err != nil {
			r.log.Warn("revoking member lease failed; keys expire after the TTL", "member", r.cfg.ID, "err", err)
		}
		// Stop the keep-alive without a second revoke of the same lease.
		r.session.Orphan()
	})
}
