// Package signals turns SIGINT/SIGTERM into context cancellation with the
// two-step behaviour operators expect: the first signal starts a graceful
// drain, a second one means "stop now".
//
// It is responsible for: cancelling a context on the first signal (with the
// signal as the cancellation cause) and calling a function main provides on
// the second.
//
// It is not responsible for: exiting the process (only main calls os.Exit;
// it passes a function that does), draining health or stopping components
// (they watch the context), or reloading configuration on SIGHUP.
package signals
