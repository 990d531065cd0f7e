package pdfake

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pingcap/kvproto/pkg/meta_storagepb"
	"github.com/pingcap/kvproto/pkg/pdpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

// Options configures a fake PD. The zero value is ready to use.
type Options struct {
	// ListenAddr is the TCP address to listen on. Default "127.0.0.1:0", a
	// free loopback port. Only loopback hosts are accepted: the fake has no
	// authentication and must never be reachable from another machine.
	ListenAddr string
	// ClusterID is reported in every response header. Default: the start
	// time in the high 32 bits and random low bits (PD builds its id the
	// same way), so two fakes in one test never share an id by accident.
	ClusterID uint64
	// Now is the clock behind TSOs and service safepoint TTLs. Default
	// time.Now. TSOs stay strictly increasing even if Now goes backwards, so
	// a test may move it freely to expire TTLs.
	Now func() time.Time
	// TLS, when set, makes the server speak TLS (and URL return https). The
	// caller decides on client-certificate checks through ClientAuth.
	TLS *tls.Config
	// Logger receives one debug line per call and a warning for every call
	// the fake does not implement. Nil discards.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.ListenAddr == "" {
		o.ListenAddr = "127.0.0.1:0"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ClusterID == 0 {
		o.ClusterID = uint64(time.Now().Unix())<<32 | uint64(rand.Uint32()|1)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Validate reports the first unusable option, naming it.
func (o Options) Validate() error {
	host, _, err := net.SplitHostPort(o.ListenAddr)
	if err != nil {
		return fmt.Errorf("pdfake: ListenAddr %q: %w", o.ListenAddr, err)
	}
	if host != "localhost" {
		ip := net.ParseIP(host)
		if ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("pdfake: ListenAddr %q: host must be a loopback address", o.ListenAddr)
		}
	}
	return nil
}

// Server is a running fake PD. All methods are safe for concurrent use.
type Server struct {
	lis  net.Listener
	grpc *grpc.Server
	svc  *service

	stopOnce sync.Once
	served   chan struct{} // closed when Serve has returned
}

// Start listens on opts.ListenAddr and serves until Stop. ctx bounds only
// the listen call; the server's lifetime is Start..Stop so that a test can
// hold it across several contexts (t.Cleanup(srv.Stop)).
func Start(ctx context.Context, opts Options) (*Server, error) {
	opts = opts.withDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", opts.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("pdfake: listen: %w", err)
	}
	scheme := "http://"
	if opts.TLS != nil {
		scheme = "https://"
	}
	svc := newService(opts, scheme+lis.Addr().String())

	serverOpts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(svc.unaryInterceptor),
		grpc.ChainStreamInterceptor(svc.streamInterceptor),
		// PD clients may configure gRPC keepalive pings every few seconds
		// (TiDB and TiCDC do); grpc's default policy (one ping per 5 min)
		// would answer with GOAWAY "too_many_pings" and make a long e2e test
		// look like PD flapping.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             time.Second,
			PermitWithoutStream: true,
		}),
	}
	if opts.TLS != nil {
		serverOpts = append(serverOpts, grpc.Creds(credentials.NewTLS(opts.TLS)))
	}
	gs := grpc.NewServer(serverOpts...)
	pdpb.RegisterPDServer(gs, svc)
	meta_storagepb.RegisterMetaStorageServer(gs, &metaStorage{svc: svc})
	// The client probes its leader's gRPC health every second and marks
	// the member failed on anything but SERVING (Unimplemented included),
	// which would send a forwarding-enabled client looking for a follower
	// that does not exist. The standard health server answers SERVING for
	// the whole server.
	healthpb.RegisterHealthServer(gs, health.NewServer())

	s := &Server{lis: lis, grpc: gs, svc: svc, served: make(chan struct{})}
	// The one goroutine of the fake; Stop waits for it.
	go func() {
		defer close(s.served)
		if err := gs.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			svc.log.Warn("pdfake: serve ended", "err", err)
		}
	}()
	svc.log.Debug("pdfake: started", "url", svc.url, "cluster_id", svc.clusterID)
	return s, nil
}

// Addr is the host:port the server listens on.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// URL is Addr with a scheme, as PD advertises its client URLs and as
// `--pd` takes them: http://127.0.0.1:PORT (https with Options.TLS).
func (s *Server) URL() string { return s.svc.url }

// ClusterID is the id every response header carries.
func (s *Server) ClusterID() uint64 { return s.svc.clusterID }

// Stop closes the listener and every open stream at once (a graceful stop
// would wait for clients to end their TSO streams, which they never do
// unprompted) and waits for the server to finish. It may be called more
// than once.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		s.grpc.Stop()
		<-s.served
	})
}

// SetGCSafePoint plays TiDB's GC worker after one GC round: it moves the
// "gc_worker" service safepoint to ts and then advances the cluster GC
// safepoint to the minimum over all live service safepoints. So a service
// safepoint below ts (a changefeed's) holds the GC safepoint back, exactly
// as on a real cluster, and the GC safepoint never moves backwards.
func (s *Server) SetGCSafePoint(ts uint64) {
	s.svc.gc.setGCWorker(ts, s.svc.now())
}

// GCSafePoint is the cluster GC safepoint (what GetGCSafePoint answers).
func (s *Server) GCSafePoint() uint64 {
	return s.svc.gc.gcSafePoint()
}

// FailTSO has the next n TSO requests answered by closing their stream
// with codes.Unavailable, as a PD whose TSO is not ready yet does (a
// leader just elected, or a client's first stream racing its connection).
func (s *Server) FailTSO(n int) { s.svc.tsoFailures.Store(int64(n)) }

// ServiceSafePoints returns a copy of the live (unexpired) service
// safepoints by service id, including "gc_worker".
func (s *Server) ServiceSafePoints() map[string]uint64 {
	return s.svc.gc.snapshot(s.svc.now())
}

// Calls reports how many times a method of a service the fake registers
// (pdpb.PD, meta_storagepb.MetaStorage, grpc.health.v1.Health) has been
// called, whether or not the fake implements it. pdpb.PD methods are named alone ("Tso",
// "UpdateServiceGCSafePoint"), others with their service
// ("meta_storagepb.MetaStorage/Get"). A stream counts once, however many
// messages it carries.
func (s *Server) Calls(method string) int {
	s.svc.callsMu.Lock()
	defer s.svc.callsMu.Unlock()
	return s.svc.calls[method]
}

// UnimplementedCalls lists, sorted, the methods a client called that the
// fake answered with codes.Unimplemented. Tests assert it is empty to prove
// the fake covers what the client they exercise really uses.
func (s *Server) UnimplementedCalls() []string {
	s.svc.callsMu.Lock()
	defer s.svc.callsMu.Unlock()
	out := make([]string, 0, len(s.svc.unimplemented))
	for name := range s.svc.unimplemented {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// service implements pdpb.PDServer. It is a separate type so the ~70
// generated methods stay out of Server's documented API.
type service struct {
	pdpb.UnimplementedPDServer

	clusterID uint64
	memberID  uint64
	url       string
	now       func() time.Time
	log       *slog.Logger

	tso         tsoAllocator
	tsoFailures atomic.Int64
	gc          *gcState

	callsMu       sync.Mutex
	calls         map[string]int
	unimplemented map[string]bool
}

func newService(opts Options, url string) *service {
	return &service{
		clusterID: opts.ClusterID,
		memberID:  opts.ClusterID ^ 0x5a5a, // any stable non-zero id distinct from the cluster's
		url:       url,
		now:       opts.Now,
		log:       opts.Logger,
		gc:        newGCState(),
		calls:     make(map[string]int),

		unimplemented: make(map[string]bool),
	}
}

// methodName shortens "/pdpb.PD/Tso" to "Tso" and any other service's
// "/pkg.Service/Method" to "pkg.Service/Method".
func methodName(full string) string {
	if name, ok := strings.CutPrefix(full, "/pdpb.PD/"); ok {
		return name
	}
	return strings.TrimPrefix(full, "/")
}

func (s *service) noteCall(full string) {
	s.callsMu.Lock()
	defer s.callsMu.Unlock()
	s.calls[methodName(full)]++
}

// noteResult logs a call's outcome. An Unimplemented answer means a client
// needs something the fake lacks: it is logged loudly and remembered, so
// the gap is found from the log or UnimplementedCalls rather than from a
// confusing client-side retry loop.
func (s *service) noteResult(full string, err error) {
	name := methodName(full)
	if status.Code(err) == codes.Unimplemented {
		s.callsMu.Lock()
		s.unimplemented[name] = true
		s.callsMu.Unlock()
		s.log.Warn("pdfake: unimplemented method called", "method", name)
		return
	}
	s.log.Debug("pdfake: call", "method", name, "err", err)
}

func (s *service) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	s.noteCall(info.FullMethod)
	resp, err := handler(ctx, req)
	s.noteResult(info.FullMethod, err)
	return resp, err
}

func (s *service) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	// Count at open, not at close: a TSO stream lives as long as the client.
	s.noteCall(info.FullMethod)
	err := handler(srv, ss)
	s.noteResult(info.FullMethod, err)
	return err
}

func (s *service) header() *pdpb.ResponseHeader {
	return &pdpb.ResponseHeader{ClusterId: s.clusterID}
}

// checkHeader rejects a request addressed to another cluster, as PD does:
// a client that mixed up two fakes must fail, not get the wrong TSOs.
func (s *service) checkHeader(h *pdpb.RequestHeader) error {
	if got := h.GetClusterId(); got != s.clusterID {
		return status.Errorf(codes.FailedPrecondition, "mismatch cluster id, need %d but got %d", s.clusterID, got)
	}
	return nil
}

func (s *service) self() *pdpb.Member {
	return &pdpb.Member{
		Name:       "pdfake",
		MemberId:   s.memberID,
		PeerUrls:   []string{s.url},
		ClientUrls: []string{s.url},
	}
}

// GetMembers implements pdpb.PDServer: a one-member cluster led by itself.
func (s *service) GetMembers(context.Context, *pdpb.GetMembersRequest) (*pdpb.GetMembersResponse, error) {
	me := s.self()
	return &pdpb.GetMembersResponse{
		Header:     s.header(),
		Members:    []*pdpb.Member{me},
		Leader:     me,
		EtcdLeader: me,
	}, nil
}

// GetClusterInfo implements pdpb.PDServer. PD mode means "PD itself serves
// TSO"; the client would also fall back to it on Unimplemented, but only by
// matching the error text, so answer explicitly.
func (s *service) GetClusterInfo(context.Context, *pdpb.GetClusterInfoRequest) (*pdpb.GetClusterInfoResponse, error) {
	return &pdpb.GetClusterInfoResponse{
		Header:       s.header(),
		ServiceModes: []pdpb.ServiceMode{pdpb.ServiceMode_PD_SVC_MODE},
	}, nil
}

// Tso implements pdpb.PDServer: one response per request, in order, each
// naming the last timestamp of a batch of req.Count (the client derives the
// others by counting the logical part down).
func (s *service) Tso(stream pdpb.PD_TsoServer) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			// io.EOF is the client closing its side; anything else is the
			// connection or the server stopping. Either way the stream is over.
			return nil
		}
		if err := s.checkHeader(req.GetHeader()); err != nil {
			return err
		}
		if s.takeTSOFailure() {
			return status.Error(codes.Unavailable, "tso not ready (pdfake.FailTSO)")
		}
		count := req.GetCount()
		if count == 0 || count >= maxLogical {
			return status.Errorf(codes.InvalidArgument, "tso count should be in [1, %d), got %d", maxLogical, count)
		}
		physical, logical := s.tso.alloc(s.now(), count)
		resp := &pdpb.TsoResponse{
			Header:    s.header(),
			Count:     count,
			Timestamp: &pdpb.Timestamp{Physical: physical, Logical: logical},
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

func (s *service) takeTSOFailure() bool {
	for {
		n := s.tsoFailures.Load()
		if n <= 0 {
			return false
		}
		if s.tsoFailures.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

// GetGCSafePoint implements pdpb.PDServer.
func (s *service) GetGCSafePoint(_ context.Context, req *pdpb.GetGCSafePointRequest) (*pdpb.GetGCSafePointResponse, error) {
	if err := s.checkHeader(req.GetHeader()); err != nil {
		return nil, err
	}
	return &pdpb.GetGCSafePointResponse{Header: s.header(), SafePoint: s.gc.gcSafePoint()}, nil
}

// UpdateGCSafePoint implements pdpb.PDServer: the GC safepoint only moves
// forward; the answer is the safepoint in force afterwards.
func (s *service) UpdateGCSafePoint(_ context.Context, req *pdpb.UpdateGCSafePointRequest) (*pdpb.UpdateGCSafePointResponse, error) {
	if err := s.checkHeader(req.GetHeader()); err != nil {
		return nil, err
	}
	return &pdpb.UpdateGCSafePointResponse{Header: s.header(), NewSafePoint: s.gc.advance(req.GetSafePoint())}, nil
}

// UpdateServiceGCSafePoint implements pdpb.PDServer with PD's v1 rules; see
// gcState.updateService.
func (s *service) UpdateServiceGCSafePoint(_ context.Context, req *pdpb.UpdateServiceGCSafePointRequest) (*pdpb.UpdateServiceGCSafePointResponse, error) {
	if err := s.checkHeader(req.GetHeader()); err != nil {
		return nil, err
	}
	if len(req.GetServiceId()) == 0 {
		return &pdpb.UpdateServiceGCSafePointResponse{Header: &pdpb.ResponseHeader{
			ClusterId: s.clusterID,
			Error:     &pdpb.Error{Type: pdpb.ErrorType_INVALID_VALUE, Message: "service id is empty"},
		}}, nil
	}
	minID, minSP, ttlLeft := s.gc.updateService(string(req.GetServiceId()), req.GetTTL(), req.GetSafePoint(), s.now())
	return &pdpb.UpdateServiceGCSafePointResponse{
		Header:       s.header(),
		ServiceId:    []byte(minID),
		TTL:          ttlLeft,
		MinSafePoint: minSP,
	}, nil
}

// metaStorage serves the one meta-storage read the pd client makes while it
// starts: its router-service discovery lists "/ms/<cluster id>/router/
// registry/" to find router microservices. Without this service the client
// retries for 5 s (ten tries, 500 ms apart) inside its constructor; an
// empty answer means "no microservices, use PD", which is the truth here.
type metaStorage struct {
	meta_storagepb.UnimplementedMetaStorageServer
	svc *service
}

// Get implements meta_storagepb.MetaStorageServer: the store is empty.
func (m *metaStorage) Get(context.Context, *meta_storagepb.GetRequest) (*meta_storagepb.GetResponse, error) {
	return &meta_storagepb.GetResponse{
		Header: &meta_storagepb.ResponseHeader{ClusterId: m.svc.clusterID, Revision: 1},
	}, nil
}
