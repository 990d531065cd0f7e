// Package local connects the stages one process runs without the network.
// A `cdc server` runs every stage, and each pipeline is a stream at each of
// three hops (puller → sorter → encoder → producer); over loopback gRPC
// every message of every hop is marshalled, framed by HTTP/2, flow
// controlled, unmarshalled and watched by goroutines on both ends, which at
// 10,000 tables cost more CPU than the work the messages carry. A route
// that names this process's own address therefore gets a client from here:
// it calls the stage's server in place and hands messages over by pointer.
//
// What a caller sees is what gRPC gives it: a stream ends with io.EOF or
// with a status error (a handler's plain error becomes codes.Unknown, a
// context error codes.Canceled or DeadlineExceeded, as a gRPC server makes
// them); cancelling the client's context cancels the handler's; Close ends
// every stream as a gRPC server's Stop does and waits for the handlers.
// Requests are cloned, so neither side sees the other change one. A sent
// message belongs to the receiver: every sender here builds a fresh one for
// each Send, which gRPC does not require but this does.
package local

import (
	"context"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// Buffer is how many messages a stream holds that its receiver has not
// taken yet: enough that a sender does not wait for each hand-over, few
// enough that a stalled receiver stops its sender at once (the stages'
// own byte budgets bound what a message may hold).
const Buffer = 4

// Streams runs the in-process streams of one process. The zero value is
// not usable; New returns one.
type Streams struct {
	life context.Context
	end  context.CancelFunc

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// New returns Streams ready to connect stages.
func New() *Streams {
	life, end := context.WithCancel(context.Background())
	return &Streams{life: life, end: end}
}

// Close ends every open stream, cancelling its handler's context, and
// waits until every handler returned; later calls get UNAVAILABLE, as from
// a stopped server. Idempotent.
func (s *Streams) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.end()
	s.wg.Wait()
}

var errClosed = status.Error(codes.Unavailable, "local stage streams closed: the process is stopping")

// Puller is a PullerService client that calls srv in place.
func (s *Streams) Puller(srv tidestreamv1.PullerServiceServer) tidestreamv1.PullerServiceClient {
	return pullerClient{s, srv}
}

// Sorter is a SorterService client that calls srv in place.
func (s *Streams) Sorter(srv tidestreamv1.SorterServiceServer) tidestreamv1.SorterServiceClient {
	return sorterClient{s, srv}
}

// Encoder is an EncoderService client that calls srv in place.
func (s *Streams) Encoder(srv tidestreamv1.EncoderServiceServer) tidestreamv1.EncoderServiceClient {
	return encoderClient{s, srv}
}

type pullerClient struct {
	s   *Streams
	srv tidestreamv1.PullerServiceServer
}

func (c pullerClient) Subscribe(ctx context.Context, in *tidestreamv1.SubscribeRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[tidestreamv1.PullerBatch], error) {
	req := proto.Clone(in).(*tidestreamv1.SubscribeRequest)
	return open(c.s, ctx, func(st grpc.ServerStreamingServer[tidestreamv1.PullerBatch]) error { return c.srv.Subscribe(req, st) })
}

type sorterClient struct {
	s   *Streams
	srv tidestreamv1.SorterServiceServer
}

func (c sorterClient) Subscribe(ctx context.Context, in *tidestreamv1.SubscribeRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[tidestreamv1.SortedBatch], error) {
	req := proto.Clone(in).(*tidestreamv1.SubscribeRequest)
	return open(c.s, ctx, func(st grpc.ServerStreamingServer[tidestreamv1.SortedBatch]) error { return c.srv.Subscribe(req, st) })
}

func (c sorterClient) Ack(ctx context.Context, in *tidestreamv1.PipelineProgress, _ ...grpc.CallOption) (*tidestreamv1.AckResponse, error) {
	return unary(c.s, ctx, in, c.srv.Ack)
}

type encoderClient struct {
	s   *Streams
	srv tidestreamv1.EncoderServiceServer
}

func (c encoderClient) Subscribe(ctx context.Context, in *tidestreamv1.SubscribeRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[tidestreamv1.EncodedBatch], error) {
	req := proto.Clone(in).(*tidestreamv1.SubscribeRequest)
	return open(c.s, ctx, func(st grpc.ServerStreamingServer[tidestreamv1.EncodedBatch]) error { return c.srv.Subscribe(req, st) })
}

func (c encoderClient) Ack(ctx context.Context, in *tidestreamv1.PipelineProgress, _ ...grpc.CallOption) (*tidestreamv1.AckResponse, error) {
	return unary(c.s, ctx, in, c.srv.Ack)
}

func unary[Req proto.Message, Res any](s *Streams, ctx context.Context, in Req, call func(context.Context, Req) (*Res, error)) (*Res, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, errClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	res, err := call(ctx, proto.Clone(in).(Req))
	if err != nil {
		return nil, final(err)
	}
	return res, nil
}

// open starts handler on a stream of its own and returns the client's end.
// The handler's context is the client's, cancelled also by Close.
func open[T any](s *Streams, ctx context.Context, handler func(grpc.ServerStreamingServer[T]) error) (grpc.ServerStreamingClient[T], error) {
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errClosed
	}
	s.wg.Add(1)
	s.mu.Unlock()
	sctx, cancel := context.WithCancel(ctx)
	unhook := context.AfterFunc(s.life, cancel)
	ch := make(chan *T, Buffer)
	c := &clientStream[T]{ctx: ctx, ch: ch, done: make(chan struct{})}
	go func() {
		defer s.wg.Done()
		err := handler(&serverStream[T]{ctx: sctx, ch: ch})
		// Every Send happened before this: a receiver that sees done
		// finds whatever they put in ch still there.
		c.err = final(err)
		close(c.done)
		unhook()
		cancel()
	}()
	return c, nil
}

// final is what the client's Recv returns once the handler returned err.
func final(err error) error {
	if err == nil {
		return io.EOF
	}
	if st, ok := status.FromError(err); ok {
		return st.Err()
	}
	return status.FromContextError(err).Err()
}

// clientStream is the client's end: grpc.ServerStreamingClient.
type clientStream[T any] struct {
	ctx  context.Context
	ch   <-chan *T
	done chan struct{}
	err  error // set before done is closed
}

func (c *clientStream[T]) Recv() (*T, error) {
	select {
	case m := <-c.ch:
		return m, nil
	default:
	}
	select {
	case m := <-c.ch:
		return m, nil
	case <-c.done:
		select {
		case m := <-c.ch:
			return m, nil
		default:
			return nil, c.err
		}
	case <-c.ctx.Done():
		return nil, status.FromContextError(c.ctx.Err()).Err()
	}
}

func (c *clientStream[T]) RecvMsg(m any) error {
	msg, err := c.Recv()
	if err != nil {
		return err
	}
	dst, ok := m.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "local: RecvMsg into %T, not a proto message", m)
	}
	proto.Reset(dst)
	proto.Merge(dst, any(msg).(proto.Message))
	return nil
}

func (c *clientStream[T]) Header() (metadata.MD, error) { return metadata.MD{}, nil }
func (c *clientStream[T]) Trailer() metadata.MD         { return metadata.MD{} }
func (c *clientStream[T]) CloseSend() error             { return nil }
func (c *clientStream[T]) Context() context.Context     { return c.ctx }
func (c *clientStream[T]) SendMsg(any) error {
	return status.Error(codes.Internal, "local: a server-streaming call sends its one request when it opens")
}

// serverStream is the handler's end: grpc.ServerStreamingServer.
type serverStream[T any] struct {
	ctx context.Context
	ch  chan<- *T
}

func (s *serverStream[T]) Send(m *T) error {
	select {
	case s.ch <- m:
		return nil
	case <-s.ctx.Done():
		return status.FromContextError(s.ctx.Err()).Err()
	}
}

func (s *serverStream[T]) SendMsg(m any) error {
	msg, ok := m.(*T)
	if !ok {
		return status.Errorf(codes.Internal, "local: SendMsg of %T on a stream of %T", m, (*T)(nil))
	}
	return s.Send(msg)
}

func (s *serverStream[T]) RecvMsg(any) error {
	return status.Error(codes.Internal, "local: a server-streaming handler has its one request already")
}

func (s *serverStream[T]) SetHeader(metadata.MD) error  { return nil }
func (s *serverStream[T]) SendHeader(metadata.MD) error { return nil }
func (s *serverStream[T]) SetTrailer(metadata.MD)       {}
func (s *serverStream[T]) Context() context.Context     { return s.ctx }
