package signals_test

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/tidestream/tidestream/services/runtime/signals"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestFirstSignalCancelsSecondForces(t *testing.T) {
	forced := make(chan os.Signal, 1)
	ctx, stop := signals.NotifyContext(context.Background(), nil, func(s os.Signal) { forced <- s })
	defer stop()

	// Safe to send to ourselves: the handler above is registered, so the
	// runtime delivers to the channel instead of terminating the test.
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGINT))
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("context not cancelled by SIGINT")
	}
	var se *signals.SignalError
	require.True(t, errors.As(context.Cause(ctx), &se))
	require.Equal(t, os.Interrupt, se.Signal)
	require.Len(t, forced, 0, "the first signal only drains")

	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGTERM))
	select {
	case s := <-forced:
		require.Equal(t, syscall.SIGTERM, s)
	case <-time.After(10 * time.Second):
		t.Fatal("second signal did not call force")
	}
}

func TestStopWithoutSignal(t *testing.T) {
	ctx, stop := signals.NotifyContext(context.Background(), nil, nil, syscall.SIGUSR1)
	require.NoError(t, ctx.Err())
	stop()
	stop() // idempotent
	require.ErrorIs(t, ctx.Err(), context.Canceled)
	require.ErrorIs(t, context.Cause(ctx), context.Canceled)
}

func TestParentCancellationPropagates(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	ctx, stop := signals.NotifyContext(parent, nil, nil, syscall.SIGUSR1)
	defer stop()
	cancel()
	<-ctx.Done()
	require.ErrorIs(t, context.Cause(ctx), context.Canceled)
}
