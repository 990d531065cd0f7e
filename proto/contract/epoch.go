package contract

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
)

// Errors a Registry ends a superseded stream with (as its context's cause).
// Both are Fenced for the stream they end.
var (
	// ErrSuperseded: a newer epoch subscribed the pipeline.
	ErrSuperseded = errors.New("contract: superseded by a newer epoch")
	// ErrReplaced: a new subscriber of the same epoch took the pipeline over
	// (the old one's connection may be half-dead).
	ErrReplaced = errors.New("contract: replaced by a new subscriber of the same epoch")
)

// PipelineKey names a pipeline across changefeeds.
type PipelineKey struct {
	Namespace, Changefeed string
	Pipeline              int64
}

// DefaultEpochMemory is how long a Registry remembers a released pipeline's
// epoch, refusing older ones: longer than any restart the owner drives, so a
// zombie that reconnects late is still fenced.
const DefaultEpochMemory = 10 * time.Minute

// Registry is a stage's epoch table: at most one live stream per pipeline.
// A newer epoch supersedes the live stream, the same epoch replaces it, an
// older one is refused. It is safe for concurrent use.
type Registry struct {
	memory time.Duration
	now    func() time.Time

	mu    sync.Mutex
	live  map[PipelineKey]*Claim
	ended map[PipelineKey]endedEpoch
}

type endedEpoch struct {
	epoch uint64
	at    time.Time
}

// Claim is one stream's hold on its pipeline.
type Claim struct {
	r      *Registry
	key    PipelineKey
	epoch  uint64
	cancel context.CancelCauseFunc
}

// NewRegistry returns a Registry that remembers released epochs for memory
// (0: DefaultEpochMemory).
func NewRegistry(memory time.Duration) *Registry {
	if memory <= 0 {
		memory = DefaultEpochMemory
	}
	return &Registry{memory: memory, now: time.Now, live: make(map[PipelineKey]*Claim), ended: make(map[PipelineKey]endedEpoch)}
}

// Claim takes key for epoch. The live stream of an older or the same epoch is
// ended through its cancel func (ErrSuperseded, ErrReplaced); cancel is the
// new stream's, called the same way when it is superseded in turn. An epoch
// older than the live or a recently released one is refused with a Fenced
// status.
func (r *Registry) Claim(stage string, key PipelineKey, epoch uint64, cancel context.CancelCauseFunc) (*Claim, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sweep()
	newest := uint64(0)
	if e, ok := r.ended[key]; ok {
		newest = e.epoch
	}
	cur := r.live[key]
	if cur != nil {
		newest = max(newest, cur.epoch)
	}
	if epoch < newest {
		return nil, Status(Fenced, codes.FailedPrecondition, "%s: pipeline %d of %s/%s: epoch %d is older than %d",
			stage, key.Pipeline, key.Namespace, key.Changefeed, epoch, newest)
	}
	if cur != nil {
		if epoch > cur.epoch {
			cur.cancel(ErrSuperseded)
		} else {
			cur.cancel(ErrReplaced)
		}
	}
	c := &Claim{r: r, key: key, epoch: epoch, cancel: cancel}
	r.live[key] = c
	return c, nil
}

// Release ends the claim. It removes the pipeline's entry only if this claim
// still holds it: a stream that was superseded or replaced must not release
// its successor's hold (that would let an older epoch in).
func (c *Claim) Release() {
	r := c.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.live[c.key] != c {
		return
	}
	delete(r.live, c.key)
	if e, ok := r.ended[c.key]; !ok || e.epoch <= c.epoch {
		r.ended[c.key] = endedEpoch{epoch: c.epoch, at: r.now()}
	}
}

// EndAll ends every live stream with cause, for a stage shutting down: its
// handlers return at once instead of holding a graceful stop until its
// deadline. The claims stay until their streams release them.
func (r *Registry) EndAll(cause error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.live {
		c.cancel(cause)
	}
}

// Epoch is the claimed epoch.
func (c *Claim) Epoch() uint64 { return c.epoch }

// Live reports whether a stream holds key, and its epoch.
func (r *Registry) Live(key PipelineKey) (uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.live[key]
	if !ok {
		return 0, false
	}
	return c.epoch, true
}

// sweep forgets released epochs older than the memory. r.mu held.
func (r *Registry) sweep() {
	cutoff := r.now().Add(-r.memory)
	for k, e := range r.ended {
		if e.at.Before(cutoff) {
			delete(r.ended, k)
		}
	}
}

// EndedBy returns the Fenced status for a stream whose context ended with a
// Registry cause, or nil if cause is not one of them.
func EndedBy(stage string, key PipelineKey, epoch uint64, cause error) error {
	if errors.Is(cause, ErrSuperseded) || errors.Is(cause, ErrReplaced) {
		return Status(Fenced, codes.FailedPrecondition, "%s: pipeline %d epoch %d: %v", stage, key.Pipeline, epoch, cause)
	}
	return nil
}
