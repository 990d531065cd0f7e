package cdcemu

import (
	"context"
	"sync"

	"github.com/pingcap/kvproto/pkg/kvrpcpb"
	"github.com/pingcap/kvproto/pkg/tikvpb"
	"google.golang.org/grpc"
)

const (
	methodPrewrite      = "/tikvpb.Tikv/KvPrewrite"
	methodSplitRegion   = "/tikvpb.Tikv/SplitRegion"
	methodBatchCommands = "/tikvpb.Tikv/BatchCommands"
)

// UnaryInterceptor must be installed on the KV port. It tracks async-commit
// and 1PC prewrites in flight (their commit ts is read from the TSO inside the
// prewrite, so resolved ts must not pass their start ts before their rows are
// queued) and runs SplitRegion under the apply mutex so a split is ordered
// with writes and subscriptions see epoch_not_match at the right point.
func (e *Emulator) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		switch info.FullMethod {
		case methodPrewrite:
			if p, ok := req.(*kvrpcpb.PrewriteRequest); ok && (p.UseAsyncCommit || p.TryOnePc) {
				e.inflightAdd(p.StartVersion)
				defer e.inflightDone(p.StartVersion)
			}
		case methodSplitRegion:
			return e.splitRPC(ctx, req, handler)
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor does the same tracking for prewrites carried inside the
// BatchCommands stream, which is how client-go (and so TiDB) sends them.
func (e *Emulator) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if info.FullMethod != methodBatchCommands {
			return handler(srv, ss)
		}
		bs := &batchStream{ServerStream: ss, e: e, pending: make(map[uint64]uint64)}
		defer bs.releaseAll()
		return handler(srv, bs)
	}
}

type batchStream struct {
	grpc.ServerStream
	e       *Emulator
	mu      sync.Mutex
	pending map[uint64]uint64 // batch request id -> prewrite start ts
}

func (s *batchStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	r, ok := m.(*tikvpb.BatchCommandsRequest)
	if !ok {
		return nil
	}
	for i, rq := range r.GetRequests() {
		p := rq.GetPrewrite()
		if p == nil || !(p.UseAsyncCommit || p.TryOnePc) || i >= len(r.GetRequestIds()) {
			continue
		}
		s.e.inflightAdd(p.StartVersion)
		s.mu.Lock()
		if old, dup := s.pending[r.RequestIds[i]]; dup {
			s.e.inflightDone(old)
		}
		s.pending[r.RequestIds[i]] = p.StartVersion
		s.mu.Unlock()
	}
	return nil
}

func (s *batchStream) SendMsg(m any) error {
	if r, ok := m.(*tikvpb.BatchCommandsResponse); ok {
		s.mu.Lock()
		for _, id := range r.GetRequestIds() {
			if ts, ok := s.pending[id]; ok {
				delete(s.pending, id)
				s.e.inflightDone(ts)
			}
		}
		s.mu.Unlock()
	}
	return s.ServerStream.SendMsg(m)
}

func (s *batchStream) releaseAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, ts := range s.pending {
		delete(s.pending, id)
		s.e.inflightDone(ts)
	}
}

func (e *Emulator) splitRPC(ctx context.Context, req any, handler grpc.UnaryHandler) (any, error) {
	b := e.backend.Load()
	if b == nil {
		return handler(ctx, req)
	}
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	resp, err := handler(ctx, req)
	if err != nil {
		return resp, err
	}
	if r, ok := resp.(*kvrpcpb.SplitRegionResponse); ok && r.GetRegionError() == nil {
		e.checkEpochs(b)
	}
	return resp, nil
}
