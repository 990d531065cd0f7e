package runner

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tidestream/tidestream/producer/pipeline"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

func sinkRunner(t *testing.T, build func(context.Context) (pipeline.Sink, func(), error)) *Runner {
	t.Helper()
	r, err := New(Config{
		Member:        "p1",
		Watch:         func(context.Context, func(), func([]Update)) error { return nil },
		WriteProgress: func(context.Context, []Progress) ([]Progress, error) { return nil, nil },
		Sink:          func(ctx context.Context, _, _ string) (pipeline.Sink, func(), error) { return build(ctx) },
		Encoder:       func(string) (tidestreamv1.EncoderServiceClient, error) { return nil, nil },
	})
	require.NoError(t, err)
	return r
}

// A changefeed's pipelines start together; they must share one Kafka
// client, built once, and close it with the last of them.
func TestPipelinesOfAChangefeedBuildOneSink(t *testing.T) {
	var builds, releases atomic.Int32
	gate := make(chan struct{})
	r := sinkRunner(t, func(context.Context) (pipeline.Sink, func(), error) {
		builds.Add(1)
		<-gate // slow, as a Kafka client's first metadata round trip is
		return ackSink{}, func() { releases.Add(1) }, nil
	})
	const n = 40
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			s, err := r.sink(context.Background(), "ns", "cf")
			require.NoError(t, err)
			require.Equal(t, ackSink{}, s)
		})
	}
	require.Eventually(t, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.sinks[[2]string{"ns", "cf"}] != nil && r.sinks[[2]string{"ns", "cf"}].refs == n
	}, 5*time.Second, time.Millisecond, "all pipelines wait on the one build")
	close(gate)
	wg.Wait()
	require.Equal(t, int32(1), builds.Load())
	for range n - 1 {
		r.unsink("ns", "cf")
	}
	require.Equal(t, int32(0), releases.Load())
	r.unsink("ns", "cf")
	require.Equal(t, int32(1), releases.Load(), "closed with the last pipeline")
}

// A failed build fails every waiting pipeline with its error and is not
// cached; a build whose own pipeline was stopped is retried by a waiter.
func TestSinkBuildFailureAndStoppedBuilder(t *testing.T) {
	boom := errors.New("SASL authentication failed")
	gate := make(chan struct{})
	var builds atomic.Int32
	fail := true
	r := sinkRunner(t, func(ctx context.Context) (pipeline.Sink, func(), error) {
		builds.Add(1)
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
		if fail {
			return nil, nil, boom
		}
		return ackSink{}, nil, nil
	})
	errs := make(chan error, 2)
	for range 2 {
		go func() { _, err := r.sink(context.Background(), "ns", "cf"); errs <- err }()
	}
	require.Eventually(t, func() bool { return builds.Load() == 1 }, 5*time.Second, time.Millisecond)
	close(gate)
	for range 2 {
		require.ErrorIs(t, <-errs, boom)
	}
	require.Empty(t, r.sinks, "a failure is not cached")

	gate = make(chan struct{})
	fail = false
	builderCtx, stopBuilder := context.WithCancel(context.Background())
	builderErr := make(chan error, 1)
	go func() { _, err := r.sink(builderCtx, "ns", "cf"); builderErr <- err }()
	require.Eventually(t, func() bool { return builds.Load() == 2 }, 5*time.Second, time.Millisecond)
	waiter := make(chan error, 1)
	go func() { _, err := r.sink(context.Background(), "ns", "cf"); waiter <- err }()
	require.Eventually(t, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.sinks[[2]string{"ns", "cf"}].refs == 2
	}, 5*time.Second, time.Millisecond)
	stopBuilder()
	require.ErrorIs(t, <-builderErr, context.Canceled)
	require.Eventually(t, func() bool { return builds.Load() == 3 }, 5*time.Second, time.Millisecond, "the waiter builds again")
	close(gate)
	require.NoError(t, <-waiter)
	require.Equal(t, 1, r.sinks[[2]string{"ns", "cf"}].refs)
}
