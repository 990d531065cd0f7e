package registry

import (
	"errors"
	"fmt"
	"strings"
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

// TableError is a fatal registry answer about the schema of one table
// version. The bare *Error names only a subject, which after a DDL is not
// enough for a user to act on: the changefeed's error must say which table
// and which statement produced the refused schema (spec §5.5), so that they
// can revert the DDL or relax the subject's compatibility.
type TableError struct {
	// Table is schema.table as TiDB spells it.
	Table string
	// DDL is the statement that produced the table version; empty when the
	// version comes from the changefeed's starting snapshot.
	DDL string
	// Kind says whether the key or the value schema was refused.
	Kind Kind
	Err  *Error
}

func (e *TableError) Error() string {
	ddl := "as of the changefeed's start snapshot"
	if e.DDL != "" {
		ddl = fmt.Sprintf("after DDL %q", e.DDL)
	}
	what := strings.TrimPrefix(e.Err.kind.Error(), "registry: ")
	msg := fmt.Sprintf("registry: %s schema of table %s %s refused (%s): %s subject %q", e.Kind, e.Table, ddl, what, e.Err.Op, e.Err.Subject)
	if e.Err.Status != 0 {
		msg += fmt.Sprintf(": HTTP %d (error_code %d)", e.Err.Status, e.Err.Code)
	}
	msg += ": " + e.Err.Message
	if errors.Is(e.Err, ErrIncompatible) {
		msg += "; revert the DDL or set the subject's compatibility level to NONE"
	}
	return msg
}

// Unwrap exposes the registry's *Error, and through it ErrFatal and its kind.
func (e *TableError) Unwrap() error { return e.Err }

// Fatal reports true, as for *Error.
func (e *TableError) Fatal() bool { return true }

// ForTable attaches the table and the DDL behind a schema to a fatal
// registry error returned for it by ID or IDFor. Any other error (a context
// end, a transient failure the caller gave up on) is about the registry, not
// the schema, and is returned unchanged, as is nil.
func ForTable(err error, k Kind, table, ddl string) error {
	var re *Error
	if err == nil || !errors.As(err, &re) {
		return err
	}
	return &TableError{Table: table, DDL: ddl, Kind: k, Err: re}
}
