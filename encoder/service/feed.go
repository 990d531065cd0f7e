package service

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pingcap/tidb/pkg/meta/model"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/tidestream/tidestream/encoder/avro"
	"github.com/tidestream/tidestream/encoder/dispatch"
	"github.com/tidestream/tidestream/encoder/mount"
	"github.com/tidestream/tidestream/encoder/registry"
	"github.com/tidestream/tidestream/encoder/row"
	"github.com/tidestream/tidestream/encoder/schema"
	"github.com/tidestream/tidestream/proto/contract"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// feed is one changefeed as this process encodes it, for one version of its
// record: the codec options, router and registry client its pipelines
// share, and its schema histories. An updated record (the user changed it
// while paused) makes a new feed for the pipelines that start after it; the
// old one ends with its last pipeline.
type feed struct {
	s    *Service
	key  feedKey
	info *tidestreamv1.ChangefeedInfo
	cfg  *feedConfig

	router *dispatch.Router
	reg    *registry.Client

	mounters sync.Pool // *mount.Mounter: not safe for concurrent use, one per worker at a time

	codecsMu sync.RWMutex
	codecs   map[codecKey]*avro.TableCodec

	mu        sync.Mutex
	histories []*history // newest start last
	loading   []*snapLoad
	closed    bool
}

// snapLoad is a schema snapshot being read for a new history starting at
// ts; done closes when the read ended, whatever its outcome.
type snapLoad struct {
	ts   uint64
	done chan struct{}
}

type feedKey struct{ Namespace, Changefeed string }

// errFeedClosed: the feed closed between lookup and use (its last history
// went idle); the caller looks the changefeed up again.
var errFeedClosed = errors.New("encoder: changefeed state closed meanwhile")

type codecKey struct{ id, version int64 }

// feed returns the feed for the changefeed's current record, building it on
// first use or when the record changed.
func (s *Service) feed(ctx context.Context, ns, id string) (*feed, error) {
	info, err := s.cfg.Changefeeds(ctx, ns, id)
	if err != nil {
		if errors.Is(err, ErrChangefeedNotFound) {
			return nil, contract.Status(contract.Fatal, codes.NotFound, "encoder: changefeed %s/%s: %v", ns, id, err)
		}
		return nil, contract.Status(contract.Transient, codes.Unavailable, "encoder: read changefeed %s/%s: %v", ns, id, err)
	}
	key := feedKey{ns, id}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, contract.Status(contract.Transient, codes.Unavailable, "%v", ErrClosed)
	}
	if f := s.feeds[key]; f != nil && proto.Equal(f.info, info) {
		return f, nil
	}
	fc, err := parseFeed(info, s.cfg)
	if err != nil {
		return nil, contract.Status(contract.Fatal, codes.InvalidArgument, "encoder: %v", err)
	}
	router, err := dispatch.NewRouter(fc.dispatch)
	if err != nil {
		return nil, contract.Status(contract.Fatal, codes.InvalidArgument, "encoder: changefeed %s/%s: dispatchers: %v", ns, id, err)
	}
	rc := fc.registry
	rc.Logger = s.log.With("changefeed", id)
	reg, err := registry.New(rc)
	if err != nil {
		return nil, contract.Status(contract.Fatal, codes.InvalidArgument, "encoder: changefeed %s/%s: %v", ns, id, err)
	}
	f := &feed{s: s, key: key, info: info, cfg: fc, router: router, reg: reg, codecs: make(map[codecKey]*avro.TableCodec)}
	f.mounters.New = func() any {
		m, err := mount.New(fc.mount)
		if err != nil {
			// mount.New validates a Config that parseFeed built; it
			// cannot fail on it.
			panic(fmt.Sprintf("encoder: mount config: %v", err))
		}
		return m
	}
	old := s.feeds[key]
	s.feeds[key] = f
	if old != nil {
		// f.mu is taken before s.mu elsewhere (removeLocked): never the
		// other way round.
		s.mu.Unlock()
		old.mu.Lock()
		if len(old.histories) == 0 {
			old.closeLocked()
		}
		old.mu.Unlock()
		s.mu.Lock()
	}
	return f, nil
}

// closeLocked releases the feed's registry client. f.mu held.
func (f *feed) closeLocked() {
	if !f.closed {
		f.closed = true
		f.reg.Close()
	}
}

// codec returns the codec of a table version, built once.
func (f *feed) codec(t *row.Table) (*avro.TableCodec, error) {
	k := codecKey{t.ID, t.Version}
	f.codecsMu.RLock()
	c := f.codecs[k]
	f.codecsMu.RUnlock()
	if c != nil {
		return c, nil
	}
	c, err := avro.NewCodec(f.cfg.avro, t)
	if err != nil {
		return nil, err
	}
	f.codecsMu.Lock()
	defer f.codecsMu.Unlock()
	if have := f.codecs[k]; have != nil {
		return have, nil
	}
	f.codecs[k] = c
	return c, nil
}

// attach returns a history that can serve a pipeline from fromTs — the
// newest running one that starts at or below it, or a new one starting at
// fromTs — and counts p as its user.
func (f *feed) attach(ctx context.Context, p *pipe, fromTs uint64, route *tidestreamv1.Route) (*history, error) {
	var load *snapLoad
	for load == nil {
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			return nil, errFeedClosed
		}
		for i := len(f.histories) - 1; i >= 0; i-- {
			hi := f.histories[i]
			if hi.serves(fromTs) {
				f.attachLocked(hi, p, route)
				f.mu.Unlock()
				return hi, nil
			}
		}
		// A snapshot already being read at or below fromTs will serve
		// this pipeline too: wait for it rather than read the whole
		// schema again. A new changefeed's pipelines all start at once at
		// one ts; each reading its own snapshot made N pipelines N full
		// schema reads, all in memory at once (10k tables: 10k reads of
		// 10k tables).
		var wait *snapLoad
		for _, l := range f.loading {
			if l.ts <= fromTs {
				wait = l
				break
			}
		}
		if wait == nil {
			load = &snapLoad{ts: fromTs, done: make(chan struct{})}
			f.loading = append(f.loading, load)
		}
		f.mu.Unlock()
		if wait != nil {
			select {
			case <-wait.done:
			case <-ctx.Done():
				return nil, context.Cause(ctx)
			}
		}
	}
	// Released once the history is listed (or the read failed): waiters
	// then find it, or read again themselves.
	defer func() {
		f.mu.Lock()
		f.loading = slices.DeleteFunc(f.loading, func(l *snapLoad) bool { return l == load })
		f.mu.Unlock()
		close(load.done)
	}()

	// Load outside the lock: a large schema takes seconds, and other
	// pipelines of the changefeed must not wait for it.
	snap, err := f.s.cfg.LoadSnapshot(ctx, route.GetPdAddrs(), fromTs)
	if err != nil {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, contract.Status(contract.Transient, codes.Unavailable, "encoder: changefeed %s: load schema snapshot at %d: %v", f.key.Changefeed, fromTs, err)
	}
	if snap.JobTable == nil {
		return nil, contract.Status(contract.Fatal, codes.FailedPrecondition,
			"encoder: changefeed %s: the upstream has no mysql.tidb_ddl_job table (TiDB before 6.2 is not supported)", f.key.Changefeed)
	}
	// FLASHBACK leaves the schema after it unknown: decoding on would
	// risk wrong rows, so the history fails, and with it its pipelines.
	var hiRef atomic.Pointer[history]
	unsupported := func(job *model.Job) {
		if hi := hiRef.Load(); hi != nil {
			hi.cancel(historyError{contract.Status(contract.Fatal, codes.FailedPrecondition,
				"encoder: changefeed %s: DDL job %d (%s) cannot be followed: the schema after it is unknown", f.key.Changefeed, job.ID, job.Query)})
		}
	}
	h, err := schema.New(snap, schema.Options{Filter: f.cfg.filter, OnUnsupported: unsupported})
	if err != nil {
		return nil, contract.Status(contract.Fatal, codes.Internal, "encoder: changefeed %s: schema snapshot at %d: %v", f.key.Changefeed, fromTs, err)
	}
	dec, err := schema.NewJobDecoder(snap.JobTable)
	if err != nil {
		return nil, contract.Status(contract.Fatal, codes.Internal, "encoder: changefeed %s: %v", f.key.Changefeed, err)
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, errFeedClosed
	}
	// Another pipeline may have built one meanwhile.
	for i := len(f.histories) - 1; i >= 0; i-- {
		hi := f.histories[i]
		if hi.serves(fromTs) {
			f.attachLocked(hi, p, route)
			return hi, nil
		}
	}
	id, epoch := f.s.nextDDLPipeline()
	hi := &history{f: f, start: fromTs, h: h, id: id, epoch: epoch, done: make(chan struct{}), route: route, pipes: make(map[*pipe]struct{})}
	hi.ctx, hi.cancel = context.WithCancelCause(f.s.ctx)
	hiRef.Store(hi)
	// Close waits for the followers: none may start once it began.
	f.s.mu.Lock()
	if f.s.closed {
		f.s.mu.Unlock()
		hi.cancel(ErrClosed)
		return nil, contract.Status(contract.Transient, codes.Unavailable, "%v", ErrClosed)
	}
	f.s.wg.Add(1)
	f.s.mu.Unlock()
	f.histories = append(f.histories, hi)
	go func() {
		defer f.s.wg.Done()
		hi.follow(dec)
	}()
	f.attachLocked(hi, p, route)
	return hi, nil
}

func (f *feed) attachLocked(hi *history, p *pipe, route *tidestreamv1.Route) {
	hi.refs++
	hi.pipes[p] = struct{}{}
	if hi.route == nil {
		hi.route = route
	}
	hi.rerouteLocked()
	if hi.idle != nil {
		hi.idle.Stop()
		hi.idle = nil
	}
	hi.forgetLocked()
}

// detach drops p from its history; the last pipeline out arms the idle
// timer, after which the history stops and, if it was the feed's last, the
// feed closes.
func (f *feed) detach(hi *history, p *pipe) {
	f.mu.Lock()
	defer f.mu.Unlock()
	hi.refs--
	delete(hi.pipes, p)
	if hi.refs > 0 {
		hi.rerouteLocked()
		hi.forgetLocked()
		return
	}
	if hi.failed() != nil {
		f.removeLocked(hi)
		return
	}
	hi.idle = time.AfterFunc(f.s.cfg.IdleTimeout, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if hi.refs == 0 && !hi.stopped {
			hi.cancel(errHistoryIdle)
			f.removeLocked(hi)
		}
	})
}

// removeLocked takes a stopped history out of the feed. f.mu held.
func (f *feed) removeLocked(hi *history) {
	hi.stopped = true
	for i, h := range f.histories {
		if h == hi {
			f.histories = append(f.histories[:i], f.histories[i+1:]...)
			break
		}
	}
	if len(f.histories) > 0 {
		return
	}
	f.s.mu.Lock()
	current := f.s.feeds[f.key] == f
	if current {
		delete(f.s.feeds, f.key)
	}
	f.s.mu.Unlock()
	f.closeLocked()
}

// forgetEvery paces forget: finding the history's low mark reads every
// pipeline's ack, and every pipeline acks about once a second, so running
// it on each ack cost O(pipelines²) a second (3% of a server's CPU at
// 1,000 tables, 100 times that at 10,000). Old versions only cost memory;
// releasing them a second late is free.
const forgetEvery = time.Second

// forget releases the versions that p's history's pipelines no longer need,
// after one of their checkpoints moved; at most once per forgetEvery.
func (f *feed) forget(hi *history) {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if now.Before(hi.nextForget) {
		return
	}
	hi.nextForget = now.Add(forgetEvery)
	hi.forgetLocked()
}
