package contract

import (
	"context"
	"errors"
	"testing"
	"time"
)

type stream struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
}

func newStream() stream {
	ctx, cancel := context.WithCancelCause(context.Background())
	return stream{ctx, cancel}
}

func claim(t *testing.T, r *Registry, key PipelineKey, epoch uint64) (*Claim, stream) {
	t.Helper()
	s := newStream()
	c, err := r.Claim("test", key, epoch, s.cancel)
	if err != nil {
		t.Fatalf("claim epoch %d: %v", epoch, err)
	}
	return c, s
}

func TestRegistryFencing(t *testing.T) {
	r := NewRegistry(time.Minute)
	key := PipelineKey{"ns", "cf", 1}
	c3, s3 := claim(t, r, key, 3)

	// Older epoch: refused, the live stream untouched.
	if _, err := r.Claim("test", key, 2, newStream().cancel); Classify(err) != Fenced {
		t.Fatalf("older epoch: %v, want FENCED", err)
	}
	if s3.ctx.Err() != nil {
		t.Fatal("refusing an older epoch ended the live stream")
	}
	// Newer epoch supersedes.
	c4, s4 := claim(t, r, key, 4)
	if !errors.Is(context.Cause(s3.ctx), ErrSuperseded) {
		t.Fatalf("superseded stream's cause %v", context.Cause(s3.ctx))
	}
	if Classify(EndedBy("test", key, 3, context.Cause(s3.ctx))) != Fenced {
		t.Fatal("EndedBy for a superseded stream is not FENCED")
	}
	c3.Release() // late release of the superseded stream: no effect
	if e, ok := r.Live(key); !ok || e != 4 {
		t.Fatalf("after the superseded stream released: live %d %v, want 4", e, ok)
	}

	// Same epoch replaces; the replaced stream's release must not remove
	// its successor (the defect: release by epoch value let epoch 3 in).
	c4b, s4b := claim(t, r, key, 4)
	if !errors.Is(context.Cause(s4.ctx), ErrReplaced) {
		t.Fatalf("replaced stream's cause %v", context.Cause(s4.ctx))
	}
	c4.Release()
	if e, ok := r.Live(key); !ok || e != 4 {
		t.Fatalf("replaced stream's release removed its successor: live %d %v", e, ok)
	}
	if _, err := r.Claim("test", key, 3, newStream().cancel); Classify(err) != Fenced {
		t.Fatalf("epoch 3 after the replaced release: %v, want FENCED", err)
	}
	if s4b.ctx.Err() != nil {
		t.Fatal("the live stream was ended")
	}

	// After the live stream ends, older epochs stay fenced for the memory.
	c4b.Release()
	if _, ok := r.Live(key); ok {
		t.Fatal("released claim still live")
	}
	if _, err := r.Claim("test", key, 3, newStream().cancel); Classify(err) != Fenced {
		t.Fatalf("older epoch after release: %v, want FENCED", err)
	}
	c, _ := claim(t, r, key, 4) // the same epoch may come back
	c.Release()

	// Other pipelines are independent.
	other := PipelineKey{"ns", "cf", 2}
	claim(t, r, other, 1)
}

func TestRegistryForgetsAfterMemory(t *testing.T) {
	r := NewRegistry(time.Minute)
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }
	key := PipelineKey{"", "cf", 9}
	c, _ := claim(t, r, key, 5)
	c.Release()
	if _, err := r.Claim("test", key, 4, newStream().cancel); Classify(err) != Fenced {
		t.Fatalf("within memory: %v", err)
	}
	now = now.Add(2 * time.Minute)
	c, _ = claim(t, r, key, 4)
	c.Release()
	if n := len(r.ended); n != 1 {
		t.Fatalf("%d remembered epochs, want 1", n)
	}
}
