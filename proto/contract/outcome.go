package contract

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Outcome is what a failed stream means for its pipeline.
type Outcome int

// Outcomes; see the package documentation.
const (
	OK Outcome = iota
	Transient
	Restart
	Fatal
	Fenced
)

var outcomeNames = [...]string{OK: "OK", Transient: "TRANSIENT", Restart: "RESTART", Fatal: "FATAL", Fenced: "FENCED"}

// String is the outcome's name, as carried in ErrorInfo.Reason.
func (o Outcome) String() string {
	if o >= 0 && int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Domain is the ErrorInfo domain of stream outcomes.
const Domain = "pipeline.tidestream.v1"

// defaultCode is the code Status uses for an outcome when the caller has no
// more precise one.
var defaultCode = [...]codes.Code{
	Transient: codes.Unavailable,
	Restart:   codes.Aborted,
	Fatal:     codes.FailedPrecondition,
	Fenced:    codes.FailedPrecondition,
}

// Status returns a gRPC status error carrying outcome o with code (0, i.e.
// OK, picks the outcome's default code) and message. The message should
// name the stage, the pipeline and the cause.
func Status(o Outcome, code codes.Code, format string, args ...any) error {
	if o <= OK || int(o) >= len(defaultCode) {
		panic(fmt.Sprintf("contract: Status with outcome %v", o))
	}
	if code == codes.OK {
		code = defaultCode[o]
	}
	st := status.New(code, fmt.Sprintf(format, args...))
	withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Domain: Domain, Reason: o.String()})
	if err != nil {
		// Only fails for a details message that cannot be marshalled; the
		// code still tells the outcome.
		return st.Err()
	}
	return withInfo.Err()
}

// Classify tells what err, returned by a stream's Recv or by Subscribe, means
// for the pipeline. It sees through %w wrapping. A clean end of stream and
// the caller's own context errors are Transient: the caller checks its own
// context first when it must tell them apart.
func Classify(err error) Outcome {
	if err == nil {
		return OK
	}
	if errors.Is(err, io.EOF) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return Transient
	}
	st, ok := statusOf(err)
	if !ok {
		// Not a status at all: a local failure (engine, disk) whose effect
		// on delivered data is unknown.
		return Restart
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == Domain {
			for o, name := range outcomeNames {
				if o != int(OK) && info.GetReason() == name {
					return Outcome(o)
				}
			}
		}
	}
	return byCode(st.Code())
}

// byCode classifies a status that carries no outcome: one made by gRPC
// itself (transport failures are UNAVAILABLE, a peer's shutdown CANCELED) or
// by a peer that predates the detail.
func byCode(c codes.Code) Outcome {
	switch c {
	case codes.OK:
		return OK
	case codes.Unavailable, codes.Canceled, codes.DeadlineExceeded:
		return Transient
	case codes.FailedPrecondition:
		return Fenced
	case codes.InvalidArgument, codes.OutOfRange, codes.Unimplemented, codes.Unauthenticated, codes.PermissionDenied:
		return Fatal
	}
	// Aborted, DataLoss, Internal, Unknown, ResourceExhausted (a message
	// over the receiver's limit: retrying in place would repeat it), …
	return Restart
}

// statusOf finds a gRPC status in err's chain.
func statusOf(err error) (*status.Status, bool) {
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return se.GRPCStatus(), true
	}
	return nil, false
}

// Relay returns the status a stage sends downstream for an upstream failure
// it cannot absorb: the same outcome and code, the message prefixed with
// stage. A failure that is not a status is classified first.
func Relay(stage string, err error) error {
	o := Classify(err)
	if o == OK {
		return nil
	}
	code := codes.OK
	msg := err.Error()
	if st, ok := statusOf(err); ok {
		code, msg = st.Code(), st.Message()
	}
	return Status(o, code, "%s: upstream: %s", stage, msg)
}
