package pdserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/pingcap/kvproto/pkg/pdpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"google.golang.org/grpc"
)

const (
	// memberName is the etcd member name, and the PD member name clients see.
	memberName = "pd"
	// maxTxnOps bounds the operations in one etcd transaction.
	maxTxnOps = 8192
)

// Server is a running PD server: an embedded etcd with the PD gRPC services on its
// client port.
type Server struct {
	cfg  Config
	etcd *embed.Etcd
	kv   *clientv3.Client // in-process client of the embedded etcd
	svc  *service

	closeOnce sync.Once
	closeErr  error
}

// Start starts etcd on cfg.Dir with the PD services registered on its client port
// and returns once the port serves (etcd elected itself leader). ctx bounds the
// start only.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	peerAddr := cfg.PeerAddr
	if peerAddr == "" {
		var err error
		if peerAddr, err = freeLoopbackAddr(); err != nil {
			return nil, err
		}
	}
	clientURL := url.URL{Scheme: "http", Host: cfg.ClientAddr}
	peerURL := url.URL{Scheme: "http", Host: peerAddr}

	svc := newService(cfg.Store, clientURL.String(), peerURL.String(), cfg.Logger)

	ec := embed.NewConfig()
	ec.Name = memberName
	ec.Dir = cfg.Dir
	ec.ListenClientUrls = []url.URL{clientURL}
	ec.AdvertiseClientUrls = []url.URL{clientURL}
	ec.ListenPeerUrls = []url.URL{peerURL}
	ec.AdvertisePeerUrls = []url.URL{peerURL}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	ec.ClusterState = embed.ClusterStateFlagNew
	ec.InitialClusterToken = fmt.Sprintf("pd-playground-%d", cfg.Store.ClusterID)
	// PD's own settings: compact etcd's history hourly, and no HTTP gateway (PD
	// does not expose etcd's JSON gateway either).
	ec.AutoCompactionMode = "periodic"
	ec.AutoCompactionRetention = "1h"
	ec.EnableGRPCGateway = false
	// etcd's default of 128 operations per transaction is less than one DROP
	// DATABASE of a large schema patches in region label rules, and than some
	// tools put in one metadata transaction.
	ec.MaxTxnOps = maxTxnOps
	ec.Logger = "zap"
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zapToSlog(cfg.Logger))
	ec.ServiceRegister = func(gs *grpc.Server) {
		// etcd calls this once it is ready, before it serves the port; waiting
		// for bind means no request can find the service without its etcd
		// client and member id.
		<-svc.bound
		svc.register(gs)
	}
	ec.UserHandlers = svc.http.handlers()

	// Unblocks the register hook on every path (bind does it on success).
	defer svc.releaseBound()
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("pdserver: start etcd on %s: %w", cfg.ClientAddr, err)
	}
	kv := v3client.New(e.Server)
	svc.bind(kv, uint64(e.Server.ID()))
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		kv.Close()
		e.Close()
		return nil, fmt.Errorf("pdserver: etcd failed while starting: %w", err)
	case <-ctx.Done():
		kv.Close()
		e.Close()
		return nil, fmt.Errorf("pdserver: waiting for etcd to be ready: %w", ctx.Err())
	}
	s := &Server{cfg: cfg, etcd: e, kv: kv, svc: svc}
	if err := svc.init(ctx); err != nil {
		s.Close()
		return nil, err
	}
	cfg.Logger.Info("pd server started", "addr", cfg.ClientAddr, "peer", peerAddr,
		"cluster_id", cfg.Store.ClusterID, "dir", cfg.Dir)
	return s, nil
}

// Addr is the PD address (Config.ClientAddr).
func (s *Server) Addr() string { return s.cfg.ClientAddr }

// Close stops the PD services and etcd. Open client streams are cut off.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.svc.stop()
		var errs []error
		if err := s.kv.Close(); err != nil && !errors.Is(err, context.Canceled) {
			errs = append(errs, fmt.Errorf("pdserver: close etcd client: %w", err))
		}
		// embed.Etcd.Close stops the gRPC servers (so the PD services) and etcd,
		// and waits for both.
		s.etcd.Close()
		select {
		case <-s.etcd.Server.StopNotify():
		case <-time.After(10 * time.Second):
			errs = append(errs, errors.New("pdserver: etcd did not stop within 10s"))
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// freeLoopbackAddr returns 127.0.0.1 with a port that was free a moment ago.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pdserver: pick a peer port: %w", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		return "", fmt.Errorf("pdserver: pick a peer port: %w", err)
	}
	return addr, nil
}

var _ pdpb.PDServer = (*service)(nil)
