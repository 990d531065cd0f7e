package registry

import (
	"errors"
	"fmt"
)

// Sentinels. An *Error matches ErrFatal and the sentinel of its kind.
var (
	// ErrFatal marks an error retrying cannot fix: the caller should fail
	// the changefeed (and name the table and DDL) instead of restarting.
	ErrFatal = errors.New("registry: fatal")
	// ErrIncompatible: the registry refused the schema under the subject's
	// compatibility level (HTTP 409), typically after a DDL such as ADD
	// COLUMN NOT NULL without a default (spec §5.5).
	ErrIncompatible = errors.New("registry: schema incompatible")
	// ErrInvalidSchema: the registry could not parse the schema (HTTP 422).
	ErrInvalidSchema = errors.New("registry: invalid schema")
	// ErrUnauthorized: the credentials were missing or refused (401/403).
	ErrUnauthorized = errors.New("registry: unauthorized")
	// ErrRejected: any other 4xx answer, or a TLS verification failure.
	ErrRejected = errors.New("registry: request rejected")
	// ErrConfig: Config.Validate failed.
	ErrConfig = errors.New("registry: bad config")
)

// Error is a registry answer that retrying cannot change.
type Error struct {
	// Subject is the subject the schema was looked up or registered under.
	Subject string
	// Op is "lookup", "register" or "ping".
	Op string
	// Status is the HTTP status (0 for a TLS failure), Code the
	// registry's error_code and Message its message.
	Status  int
	Code    int
	Message string

	kind error
}

func (e *Error) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("%v: %s subject %q: %s", e.kind, e.Op, e.Subject, e.Message)
	}
	return fmt.Sprintf("%v: %s subject %q: HTTP %d (error_code %d): %s", e.kind, e.Op, e.Subject, e.Status, e.Code, e.Message)
}

// Is makes errors.Is see both the kind sentinel and ErrFatal.
func (e *Error) Is(target error) bool { return target == e.kind || target == ErrFatal }

// Fatal reports true: the error is terminal for the changefeed. It lets a
// caller test for any package's terminal errors with one interface.
func (e *Error) Fatal() bool { return true }

// IsFatal reports whether err, or anything it wraps, is a fatal registry
// error.
func IsFatal(err error) bool { return errors.Is(err, ErrFatal) }
