package tidb

import (
	"context"
	"errors"
	"io"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// pdCallLog reports PD RPCs that TiDB makes and the playground's PD does not
// serve (codes.Unimplemented) at warn level, and other failures at debug level:
// a missing PD method shows up as a line in the playground's log rather than as
// a TiDB feature quietly not working.
type pdCallLog struct{ log *slog.Logger }

func (p pdCallLog) note(method string, err error) {
	if err == nil || errors.Is(err, io.EOF) {
		return
	}
	switch status.Code(err) {
	case codes.Unimplemented:
		p.log.Warn("TiDB called a PD method the playground does not serve", "method", method, "err", err)
	case codes.Canceled:
	default:
		p.log.Debug("PD call failed", "method", method, "err", err)
	}
}

func (p pdCallLog) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	p.note(method, err)
	return err
}

func (p pdCallLog) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		p.note(method, err)
		return nil, err
	}
	return &pdStream{ClientStream: cs, p: p, method: method}, nil
}

// pdStream notes the status a stream ends with (servers answer an unknown
// streaming method on the first receive).
type pdStream struct {
	grpc.ClientStream
	p      pdCallLog
	method string
}

func (s *pdStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	s.p.note(s.method, err)
	return err
}
