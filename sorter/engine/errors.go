package engine

import "errors"

// Sentinels. Callers classify with errors.Is; every error returned by this
// package wraps one of them (or a context error) with %w, so the
// classification survives further wrapping.
var (
	// ErrStaleEpoch: the pipeline is held at a newer epoch (or was reset or
	// dropped since this handle was opened). Terminal for the caller's run:
	// a zombie must not read or write; it maps to FAILED_PRECONDITION.
	ErrStaleEpoch = errors.New("sorter engine: stale epoch")
	// ErrClosed: the engine is closed.
	ErrClosed = errors.New("sorter engine: closed")
	// ErrBeyondResolved: Read was asked for events past the resolved ts,
	// which would release a commit ts whose events may still be arriving.
	// A caller bug (assertion), never retried.
	ErrBeyondResolved = errors.New("sorter engine: read past resolved ts")
	// ErrInvalidEvent: an event the storage layout cannot hold faithfully.
	// The upstream broke its contract; the pipeline restarts.
	ErrInvalidEvent = errors.New("sorter engine: invalid event")
	// ErrCorrupt: a stored record failed to decode. The data is
	// reproducible, so the pipeline restarts from its checkpoint.
	ErrCorrupt = errors.New("sorter engine: corrupt record")
	// ErrStorage wraps pebble failures (I/O, disk full).
	ErrStorage = errors.New("sorter engine: storage")
	// ErrStop is returned by a Read callback to pause. Read honours it at
	// the next commit-ts boundary (see Read), then returns with a nil error.
	ErrStop = errors.New("sorter engine: stop reading")
)
