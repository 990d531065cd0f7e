package signals

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/tidestream/tidestream/services/runtime/logging"
)

// SignalError is the cancellation cause of a context cancelled by a signal;
// read it with context.Cause to log why the process is stopping.
type SignalError struct {
	// Signal is the signal that was received.
	Signal os.Signal
}

// Error implements error.
func (e *SignalError) Error() string {
	return fmt.Sprintf("signals: received %v", e.Signal)
}

// NotifyContext returns a child of parent that is cancelled, with a
// *SignalError cause, when the first of sigs arrives (SIGINT and SIGTERM
// when sigs is empty). If a second signal arrives while the process is
// still draining, force is called with it; main passes a function that
// calls os.Exit(1), because an operator pressing Ctrl-C twice, or a
// supervisor escalating, wants the process gone even if a drain is stuck.
// A nil force ignores further signals.
//
// stop unregisters the handler, so signals get their default behaviour
// again, and waits for the watching goroutine to exit. main defers it; it
// is safe to call more than once.
func NotifyContext(parent context.Context, logger *slog.Logger, force func(os.Signal), sigs ...os.Signal) (ctx context.Context, stop func()) {
	logger = logging.Component(logger, "signals")
	if len(sigs) == 0 {
		sigs = []os.Signal{os.Interrupt, syscall.SIGTERM}
	}
	// Buffered for two: signal.Notify never blocks, and a burst of two
	// signals must not lose the second one while we are logging the first.
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, sigs...)

	ctx, cancel := context.WithCancelCause(parent)
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case sig := <-ch:
			logger.Warn("received signal, draining; send it again to stop immediately", "signal", sig.String())
			cancel(&SignalError{Signal: sig})
		case <-quit:
			return
		}
		select {
		case sig := <-ch:
			logger.Error("received second signal, stopping immediately", "signal", sig.String())
			if force != nil {
				force(sig)
			}
		case <-quit:
		}
	}()

	stop = sync.OnceFunc(func() {
		signal.Stop(ch)
		close(quit)
		<-done
		cancel(context.Canceled)
	})
	return ctx, stop
}
