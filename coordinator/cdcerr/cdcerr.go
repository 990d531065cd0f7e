package cdcerr

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinels. Their messages start with the package name so a wrapped chain
// still says where the classification came from.
var (
	// ErrInvalidArgument: the request is wrong and retrying it cannot help.
	ErrInvalidArgument = errors.New("cdcerr: invalid argument")
	// ErrNotFound: the named changefeed (or member) does not exist.
	ErrNotFound = errors.New("cdcerr: not found")
	// ErrAlreadyExists: a changefeed with that id exists already.
	ErrAlreadyExists = errors.New("cdcerr: already exists")
	// ErrFailedPrecondition: the request is valid but not in the current
	// state (an illegal state transition, a stale epoch). Never retried.
	ErrFailedPrecondition = errors.New("cdcerr: failed precondition")
	// ErrUnavailable: a dependency (etcd, PD) cannot be reached now;
	// retrying later may succeed.
	ErrUnavailable = errors.New("cdcerr: unavailable")
	// ErrNotOwner: a fenced write was refused because this process is no
	// longer (or not yet) the owner.
	ErrNotOwner = errors.New("cdcerr: not the owner")
)

// FieldError is a bad request that names the offending field, e.g.
// `sink-uri: protocol: unknown protocol "avor" (allowed: avro, flat-avro)`.
// It is ErrInvalidArgument under errors.Is.
type FieldError struct {
	// Field is the path of the field as the user wrote it, such as
	// "sink-uri: replication-factor" or "config: sink.dispatchers[0].topic".
	Field string
	// Reason says what is wrong and, where useful, what is allowed. It must
	// never contain a secret.
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Unwrap makes a FieldError match ErrInvalidArgument.
func (e *FieldError) Unwrap() error { return ErrInvalidArgument }

// Field returns a *FieldError for field with a formatted reason.
func Field(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// terminal marks an error that must not be retried by the pipeline-level
// restart loop (GC safepoint lost, schema incompatible, bad request).
type terminal struct{ err error }

func (t *terminal) Error() string { return t.err.Error() }
func (t *terminal) Unwrap() error { return t.err }

// Terminal marks err as terminal. A nil err stays nil.
func Terminal(err error) error {
	if err == nil {
		return nil
	}
	return &terminal{err: err}
}

// IsTerminal reports whether err, or anything it wraps, was marked terminal
// or is a bad request (which no retry can fix).
func IsTerminal(err error) bool {
	var t *terminal
	return errors.As(err, &t) || errors.Is(err, ErrInvalidArgument)
}

// codeTable is the one mapping between sentinels and gRPC codes. Order
// matters only for errors that wrap several sentinels: the first match wins.
var codeTable = []struct {
	err  error
	code codes.Code
}{
	{ErrInvalidArgument, codes.InvalidArgument},
	{ErrNotFound, codes.NotFound},
	{ErrAlreadyExists, codes.AlreadyExists},
	{ErrFailedPrecondition, codes.FailedPrecondition},
	{ErrNotOwner, codes.FailedPrecondition},
	{ErrUnavailable, codes.Unavailable},
}

// ToStatus converts err into a gRPC status error for a server handler.
// Context errors pass through as Canceled / DeadlineExceeded; errors with no
// sentinel become Internal with their message.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !hasSentinel(err) {
		// Already a status (from a downstream call); keep its code.
		return err
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	for _, row := range codeTable {
		if errors.Is(err, row.err) {
			return status.Error(row.code, strip(err.Error(), row.err))
		}
	}
	return status.Error(codes.Internal, err.Error())
}

func hasSentinel(err error) bool {
	for _, row := range codeTable {
		if errors.Is(err, row.err) {
			return true
		}
	}
	return false
}

// strip removes the sentinel's own text from a message so users read
// "sink-uri: protocol: …" rather than "…: cdcerr: invalid argument".
func strip(msg string, sentinel error) string {
	s := sentinel.Error()
	msg = strings.ReplaceAll(msg, ": "+s, "")
	msg = strings.ReplaceAll(msg, s+": ", "")
	if msg == "" || msg == s {
		return strings.TrimPrefix(s, "cdcerr: ")
	}
	return msg
}

// statusError keeps the server's message while matching the sentinel that
// the status code stands for.
type statusError struct {
	msg      string
	code     codes.Code
	sentinel error
}

func (e *statusError) Error() string { return e.msg }
func (e *statusError) Unwrap() error { return e.sentinel }

// GRPCStatus lets status.FromError / status.Code see the original code.
func (e *statusError) GRPCStatus() *status.Status { return status.New(e.code, e.msg) }

// FromStatus converts an error returned by a gRPC client call back into the
// taxonomy: the result is errors.Is the sentinel for its code and its message
// is the server's message. Non-status errors are returned unchanged.
func FromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Canceled:
		return fmt.Errorf("%s: %w", st.Message(), context.Canceled)
	case codes.DeadlineExceeded:
		return fmt.Errorf("%s: %w", st.Message(), context.DeadlineExceeded)
	}
	for _, row := range codeTable {
		if row.code == st.Code() {
			return &statusError{msg: st.Message(), code: st.Code(), sentinel: row.err}
		}
	}
	return err
}
