package cdcerr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
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
	// ErrTableIneligible: the changefeed would select tables it cannot
	// replicate (see IneligibleTablesError). Also ErrFailedPrecondition:
	// the request is fine, the upstream's tables are not, and the user
	// decides whether to ignore them.
	ErrTableIneligible = errors.New("cdcerr: tables not eligible to replicate")
)

// CodeTableIneligible is TiCDC's code for ErrTableIneligible (tiflow
// pkg/errors: CDC:ErrTableIneligible); it is the ErrorInfo reason the status
// carries, so a client can tell this refusal from any other
// FailedPrecondition without reading the message.
const CodeTableIneligible = "CDC:ErrTableIneligible"

// Domain is the ErrorInfo domain of the details ToStatus attaches.
const Domain = "control.tidestream.v1"

// tablesKey is the ErrorInfo metadata key holding an
// IneligibleTablesError's tables as a JSON array: names may contain any
// character, so no separator is safe.
const tablesKey = "tables"

// IneligibleTablesError lists the tables a changefeed's filter selects that
// have neither a primary key nor a NOT NULL unique key: Avro has no record
// key for them, so they would not be replicated. It is errors.Is both
// ErrTableIneligible and ErrFailedPrecondition, and survives ToStatus /
// FromStatus with its tables intact.
type IneligibleTablesError struct {
	// Tables are "schema.table", sorted.
	Tables []string
}

func (e *IneligibleTablesError) Error() string {
	return fmt.Sprintf("some tables are not eligible to replicate because they have neither a primary key nor a not-null unique key (%s); "+
		"to ignore these tables, set ignore-ineligible-table = true in the changefeed config or create with --no-confirm",
		strings.Join(e.Tables, ", "))
}

// Unwrap makes the error match ErrTableIneligible and, for the status
// code, ErrFailedPrecondition.
func (e *IneligibleTablesError) Unwrap() []error {
	return []error{ErrTableIneligible, ErrFailedPrecondition}
}

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
//
// The reason travels as an ErrorInfo detail in Domain. A client uses it to
// tell the server's own refusal from what gRPC made up locally (above all
// UNAVAILABLE: "the server cannot reach PD" is not "cannot reach the
// server"), and, for coded errors such as CodeTableIneligible, to rebuild
// the typed error.
var codeTable = []struct {
	err    error
	code   codes.Code
	reason string
}{
	{ErrInvalidArgument, codes.InvalidArgument, "INVALID_ARGUMENT"},
	{ErrNotFound, codes.NotFound, "NOT_FOUND"},
	{ErrAlreadyExists, codes.AlreadyExists, "ALREADY_EXISTS"},
	{ErrTableIneligible, codes.FailedPrecondition, CodeTableIneligible},
	{ErrFailedPrecondition, codes.FailedPrecondition, "FAILED_PRECONDITION"},
	{ErrNotOwner, codes.FailedPrecondition, "NOT_OWNER"},
	{ErrUnavailable, codes.Unavailable, "UNAVAILABLE"},
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
			st := status.New(row.code, strip(err.Error(), row.err))
			info := &errdetails.ErrorInfo{Domain: Domain, Reason: row.reason}
			var ite *IneligibleTablesError
			if errors.As(err, &ite) {
				b, _ := json.Marshal(ite.Tables) // a []string always marshals
				info.Metadata = map[string]string{tablesKey: string(b)}
			}
			if withInfo, err := st.WithDetails(info); err == nil {
				st = withInfo
			}
			return st.Err()
		}
	}
	return status.Error(codes.Internal, err.Error())
}

// detail returns the ErrorInfo ToStatus attached to a status, if any.
func detail(st *status.Status) *errdetails.ErrorInfo {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == Domain {
			return info
		}
	}
	return nil
}

// FromServer reports whether err is a status a tidestream server made with
// ToStatus, as opposed to one gRPC made on the client side (an unreachable
// server is UNAVAILABLE too). It sees through FromStatus and wrapping.
func FromServer(err error) bool {
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return false
	}
	return detail(se.GRPCStatus()) != nil
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
	st       *status.Status
	sentinel error
}

func (e *statusError) Error() string { return e.msg }
func (e *statusError) Unwrap() error { return e.sentinel }

// GRPCStatus lets status.FromError / status.Code see the original status,
// details included.
func (e *statusError) GRPCStatus() *status.Status { return e.st }

// ineligibleStatusError is an IneligibleTablesError that came back from a
// server: the typed error for errors.As, the server's message and status.
type ineligibleStatusError struct {
	*IneligibleTablesError
	msg string
	st  *status.Status
}

func (e *ineligibleStatusError) Error() string              { return e.msg }
func (e *ineligibleStatusError) Unwrap() error              { return e.IneligibleTablesError }
func (e *ineligibleStatusError) GRPCStatus() *status.Status { return e.st }

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
	info := detail(st)
	if info != nil && info.GetReason() == CodeTableIneligible {
		var tables []string
		// A server that sent the code without a readable list still
		// refused for this reason; the message has the names.
		_ = json.Unmarshal([]byte(info.GetMetadata()[tablesKey]), &tables)
		return &ineligibleStatusError{IneligibleTablesError: &IneligibleTablesError{Tables: tables}, msg: st.Message(), st: st}
	}
	// Otherwise the code decides, as for a peer that sends no details: the
	// client acts on the general class (ErrNotOwner comes back as
	// ErrFailedPrecondition), the message keeps the specifics.
	for _, row := range codeTable {
		if row.code == st.Code() && row.err != ErrTableIneligible {
			return &statusError{msg: st.Message(), st: st, sentinel: row.err}
		}
	}
	return err
}
