package cdcerr

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestStatusRoundTrip(t *testing.T) {
	cases := []struct {
		err  error
		code codes.Code
		is   error
	}{
		{Field("sink-uri: protocol", "unknown protocol %q", "x"), codes.InvalidArgument, ErrInvalidArgument},
		{fmt.Errorf("changefeed x: %w", ErrNotFound), codes.NotFound, ErrNotFound},
		{fmt.Errorf("wrapped: %w", fmt.Errorf("twice: %w", ErrAlreadyExists)), codes.AlreadyExists, ErrAlreadyExists},
		{ErrFailedPrecondition, codes.FailedPrecondition, ErrFailedPrecondition},
		{fmt.Errorf("etcd down: %w", ErrUnavailable), codes.Unavailable, ErrUnavailable},
		{ErrNotOwner, codes.FailedPrecondition, ErrFailedPrecondition},
	}
	for _, c := range cases {
		st := ToStatus(c.err)
		require.Equal(t, c.code, status.Code(st), c.err.Error())
		back := FromStatus(st)
		require.ErrorIs(t, back, c.is, c.err.Error())
		require.NotContains(t, back.Error(), "cdcerr:", "sentinel text leaks into the user's message")
	}
	msg := FromStatus(ToStatus(Field("sink-uri: protocol", "unknown protocol %q", "x"))).Error()
	require.Equal(t, `sink-uri: protocol: unknown protocol "x"`, msg)
}

func TestContextAndUnknownErrors(t *testing.T) {
	require.Equal(t, codes.Canceled, status.Code(ToStatus(fmt.Errorf("x: %w", context.Canceled))))
	require.Equal(t, codes.DeadlineExceeded, status.Code(ToStatus(context.DeadlineExceeded)))
	require.Equal(t, codes.Internal, status.Code(ToStatus(errors.New("boom"))))
	require.ErrorIs(t, FromStatus(status.Error(codes.Canceled, "c")), context.Canceled)
	require.Nil(t, ToStatus(nil))
	require.Nil(t, FromStatus(nil))
	plain := errors.New("not a status")
	require.Equal(t, plain, FromStatus(plain))
}

func TestTerminalSurvivesWrapping(t *testing.T) {
	base := errors.New("GC safepoint passed checkpoint")
	err := fmt.Errorf("pipeline 3: %w", Terminal(base))
	require.True(t, IsTerminal(err))
	require.ErrorIs(t, err, base)
	require.True(t, IsTerminal(fmt.Errorf("x: %w", Field("a", "b"))))
	require.False(t, IsTerminal(fmt.Errorf("x: %w", ErrUnavailable)))
	require.Nil(t, Terminal(nil))
}

// The ineligible-tables refusal keeps its code and its list across the
// wire, so the CLI can ask about exactly those tables.
func TestIneligibleTablesRoundTrip(t *testing.T) {
	tables := []string{"a.b,c", "test.t1"} // a comma inside a name must not split it
	err := fmt.Errorf("create: %w", &IneligibleTablesError{Tables: tables})
	require.ErrorIs(t, err, ErrTableIneligible)
	require.ErrorIs(t, err, ErrFailedPrecondition)
	require.False(t, IsTerminal(err), "adding a key upstream or ignoring the tables makes the same create succeed")

	st := ToStatus(err)
	require.Equal(t, codes.FailedPrecondition, status.Code(st))
	require.Contains(t, status.Convert(st).Message(), "(a.b,c, test.t1)")

	back := FromStatus(st)
	var ite *IneligibleTablesError
	require.ErrorAs(t, back, &ite)
	require.Equal(t, tables, ite.Tables)
	require.ErrorIs(t, back, ErrTableIneligible)
	require.ErrorIs(t, back, ErrFailedPrecondition)
	require.Equal(t, status.Convert(st).Message(), back.Error())
	require.Equal(t, codes.FailedPrecondition, status.Code(back))
	require.True(t, FromServer(fmt.Errorf("wrapped: %w", back)))

	// Any other FailedPrecondition stays what it was.
	other := FromStatus(ToStatus(ErrFailedPrecondition))
	require.NotErrorAs(t, other, &ite)
	require.NotErrorIs(t, other, ErrTableIneligible)
}

// A status the server made is told apart from one gRPC made on the client
// (both can be UNAVAILABLE).
func TestFromServer(t *testing.T) {
	require.True(t, FromServer(FromStatus(ToStatus(fmt.Errorf("PD down: %w", ErrUnavailable)))))
	require.True(t, FromServer(ToStatus(ErrNotFound)))
	require.False(t, FromServer(status.Error(codes.Unavailable, "connection refused")))
	require.False(t, FromServer(FromStatus(status.Error(codes.Unavailable, "connection refused"))))
	require.False(t, FromServer(errors.New("plain")))
}
