package pdserver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/pingcap/kvproto/pkg/meta_storagepb"
	"github.com/pingcap/kvproto/pkg/metapb"
	"github.com/pingcap/kvproto/pkg/pdpb"
	rmpb "github.com/pingcap/kvproto/pkg/resource_manager"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tidestream/tidestream/deploy/playground/store"
)

// clusterIDKey holds the cluster id in PD's etcd (8 bytes, big-endian, like PD).
const clusterIDKey = "/pd/cluster_id"

// service implements pdpb.PD over the playground's store. Methods it does not
// override answer codes.Unimplemented (the embedded UnimplementedPDServer).
type service struct {
	pdpb.UnimplementedPDServer

	st        *store.Store
	clusterID uint64
	clientURL string
	peerURL   string
	log       *slog.Logger
	started   time.Time

	// Set by bind, before the first request can arrive: the services are
	// registered with etcd's gRPC servers only after bound is closed.
	kv        *clientv3.Client
	memberID  uint64
	bound     chan struct{}
	boundOnce sync.Once

	gc   gcState
	rm   *resourceManager
	ms   *metaStorage
	http *httpAPI

	stopOnce sync.Once
	stopCh   chan struct{} // closed by stop: ends open streams so etcd can shut down
}

func newService(st *store.Store, clientURL, peerURL string, lg *slog.Logger) *service {
	s := &service{
		st:        st,
		clusterID: st.ClusterID,
		clientURL: clientURL,
		peerURL:   peerURL,
		log:       lg,
		started:   time.Now(),
		stopCh:    make(chan struct{}),
		bound:     make(chan struct{}),
	}
	s.rm = &resourceManager{s: s}
	s.ms = &metaStorage{s: s}
	s.http = &httpAPI{s: s}
	return s
}

// register adds the services to one of etcd's gRPC servers (etcd calls it for each
// client listener).
func (s *service) register(gs *grpc.Server) {
	pdpb.RegisterPDServer(gs, s)
	meta_storagepb.RegisterMetaStorageServer(gs, s.ms)
	rmpb.RegisterResourceManagerServer(gs, s.rm)
}

// bind gives the service its etcd client and member id. It does no I/O: etcd is
// not ready yet.
func (s *service) bind(kv *clientv3.Client, memberID uint64) {
	s.kv, s.memberID = kv, memberID
	s.releaseBound()
}

func (s *service) releaseBound() { s.boundOnce.Do(func() { close(s.bound) }) }

// init runs once etcd is ready: it checks that the etcd data belongs to the
// store's cluster, hands the persisted GC safepoint to unistore and creates what
// PD creates on its first start.
func (s *service) init(ctx context.Context) error {
	var want [8]byte
	binary.BigEndian.PutUint64(want[:], s.clusterID)
	txn, err := s.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(clusterIDKey), "=", 0)).
		Then(clientv3.OpPut(clusterIDKey, string(want[:]))).
		Else(clientv3.OpGet(clusterIDKey)).
		Commit()
	if err != nil {
		return fmt.Errorf("pdserver: record cluster id in etcd: %w", err)
	}
	if !txn.Succeeded {
		kvs := txn.Responses[0].GetResponseRange().GetKvs()
		if len(kvs) != 1 || len(kvs[0].Value) != 8 {
			return fmt.Errorf("pdserver: etcd key %s is malformed", clusterIDKey)
		}
		if got := binary.BigEndian.Uint64(kvs[0].Value); got != s.clusterID {
			return fmt.Errorf("pdserver: etcd data dir belongs to cluster %d, the store to cluster %d", got, s.clusterID)
		}
	}
	if err := s.initGC(ctx); err != nil {
		return err
	}
	if err := s.http.initRules(ctx); err != nil {
		return err
	}
	return s.rm.init(ctx)
}

func (s *service) stop() { s.stopOnce.Do(func() { close(s.stopCh) }) }

// header is the header of every successful response.
func (s *service) header() *pdpb.ResponseHeader {
	return &pdpb.ResponseHeader{ClusterId: s.clusterID}
}

// errorHeader reports an error in the response header, as PD does for errors the
// client is expected to understand (not found, not bootstrapped, ...).
func (s *service) errorHeader(t pdpb.ErrorType, format string, args ...any) *pdpb.ResponseHeader {
	return &pdpb.ResponseHeader{
		ClusterId: s.clusterID,
		Error:     &pdpb.Error{Type: t, Message: fmt.Sprintf(format, args...)},
	}
}

// checkHeader rejects a request meant for another cluster with PD's own error.
// Unlike PD it lets a zero cluster id through: tools probing the port before
// they know the id (and PD's own client in a few bootstrap calls) send none.
func (s *service) checkHeader(h *pdpb.RequestHeader) error {
	if id := h.GetClusterId(); id != 0 && id != s.clusterID {
		return status.Errorf(codes.FailedPrecondition, "mismatch cluster id, need %d but got %d", s.clusterID, id)
	}
	return nil
}

func (s *service) member() *pdpb.Member {
	return &pdpb.Member{
		Name:           memberName,
		MemberId:       s.memberID,
		PeerUrls:       []string{s.peerURL},
		ClientUrls:     []string{s.clientURL},
		BinaryVersion:  store.StoreVersion,
		LeaderPriority: 0,
	}
}

// GetClusterInfo tells the client PD runs in PD (not microservice) mode, so that
// it takes TSO from this server's Tso stream.
func (s *service) GetClusterInfo(_ context.Context, req *pdpb.GetClusterInfoRequest) (*pdpb.GetClusterInfoResponse, error) {
	// The request's header is a ResponseHeader in kvproto; only its id matters.
	if err := s.checkHeader(&pdpb.RequestHeader{ClusterId: req.GetHeader().GetClusterId()}); err != nil {
		return nil, err
	}
	return &pdpb.GetClusterInfoResponse{
		Header:       s.header(),
		ServiceModes: []pdpb.ServiceMode{pdpb.ServiceMode_PD_SVC_MODE},
	}, nil
}

// GetMembers reports the one member, which is the leader.
func (s *service) GetMembers(_ context.Context, req *pdpb.GetMembersRequest) (*pdpb.GetMembersResponse, error) {
	if err := s.checkHeader(req.GetHeader()); err != nil {
		return nil, err
	}
	m := s.member()
	return &pdpb.GetMembersResponse{
		Header:     s.header(),
		Members:    []*pdpb.Member{m},
		Leader:     m,
		EtcdLeader: m,
	}, nil
}

// Tso answers each request of count N with N consecutive timestamps sharing one
// physical part, sending only the last one (with the count), as PD does: the
// client derives the first as logical-count+1.
func (s *service) Tso(stream pdpb.PD_TsoServer) error {
	reqs, errc := recvLoop(stream.Context(), stream.Recv)
	for {
		var req *pdpb.TsoRequest
		select {
		case <-s.stopCh:
			return status.Error(codes.Unavailable, "pd server is closing")
		case err := <-errc:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case req = <-reqs:
		}
		if err := s.checkHeader(req.GetHeader()); err != nil {
			return err
		}
		count := req.GetCount()
		physical, logical, err := s.st.PD.GetTSBatch(stream.Context(), count)
		if err != nil {
			return status.Errorf(codes.Unknown, "allocate %d timestamps: %v", count, err)
		}
		if err := stream.Send(&pdpb.TsoResponse{
			Header:    s.header(),
			Count:     count,
			Timestamp: &pdpb.Timestamp{Physical: physical, Logical: logical},
		}); err != nil {
			return err
		}
	}
}

// recvLoop receives from a stream in a goroutine so that the handler can also
// watch stopCh. The goroutine ends when Recv fails, which it does at the latest
// when the handler returns (gRPC cancels the stream).
func recvLoop[T any](ctx context.Context, recv func() (T, error)) (<-chan T, <-chan error) {
	reqs := make(chan T)
	errc := make(chan error, 1)
	go func() {
		for {
			req, err := recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	return reqs, errc
}

// GetMinTS is a fresh timestamp: with one PD there is no TSO group whose minimum
// could be lower.
func (s *service) GetMinTS(ctx context.Context, req *pdpb.GetMinTSRequest) (*pdpb.GetMinTSResponse, error) {
	if err := s.checkHeader(req.GetHeader()); err != nil {
		return nil, err
	}
	physical, logical, err := s.st.PD.GetTSBatch(ctx, 1)
	if err != nil {
		return nil, status.Errorf(codes.Unknown, "allocate timestamp: %v", err)
	}
	return &pdpb.GetMinTSResponse{
		Header:    s.header(),
		Timestamp: &pdpb.Timestamp{Physical: physical, Logical: logical},
	}, nil
}

// IsBootstrapped is always true: store.Open bootstraps the cluster.
func (s *service) IsBootstrapped(ctx context.Context, req *pdpb.IsBootstrappedRequest) (*pdpb.IsBootstrappedResponse, error) {
	if err := s.checkHeader(req.GetHeader()); err != nil {
		return nil, err
	}
	ok, err := s.st.PD.IsBootstrapped(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unknown, "read bootstrap state: %v", err)
	}
	return &pdpb.IsBootstrappedResponse{Header: s.header(), Bootstrapped: ok}, nil
}

// AllocID hands out ids from the region manager's allocator, the one splits use,
// so ids never collide with region or peer ids.
func (s *service) AllocID(ctx context.Context, req *pdpb.AllocIDRequest) (*pdpb.AllocIDResponse, error) {
	if err := s.checkHeader(req.GetHeader()); err != nil {
		return nil, err
	}
	id, err := s.st.PD.AllocID(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unknown, "alloc id: %v", err)
	}
	return &pdpb.AllocIDResponse{Header: s.header(), Id: id}, nil
}

// GetClusterConfig reports the cluster meta: one replica per region.
func (s *service) GetClusterConfig(_ context.Context, req *pdpb.GetClusterConfigRequest) (*pdpb.GetClusterConfigResponse, error) {
	if err := s.checkHeader(req.GetHeader()); err != nil {
		return nil, err
	}
	return &pdpb.GetClusterConfigResponse{
		Header:  s.header(),
		Cluster: &metapb.Cluster{Id: s.clusterID, MaxPeerCount: 1},
	}, nil
}

// stores returns the store metas as PD reports them: unistore keeps only id and
// address, PD adds state, version and heartbeat fields that clients filter on.
func (s *service) stores() []*metapb.Store {
	all := s.st.Regions.GetAllStores()
	now := time.Now()
	for _, st := range all {
		st.State = metapb.StoreState_Up
		st.NodeState = metapb.NodeState_Serving
		st.Version = store.StoreVersion
		st.StartTimestamp = s.started.Unix()
		st.LastHeartbeat = now.UnixNano()
	}
	return all
}

// GetStore answers PD's "invalid store ID %d, not found" for an unknown id; client-go
// recognises that text and drops the store from its cache.
func (s *service) GetStore(_ context.Context, req *pdpb.GetStoreRequest) (*pdpb.GetStoreResponse, error) {
	if err := s.checkHeader(req.GetHeader()); err != nil {
		return nil, err
	}
	for _, st := range s.stores() {
		if st.GetId() == req.GetStoreId() {
			return &pdpb.GetStoreResponse{
				Header: s.header(),
				Store:  st,
				Stats:  &pdpb.StoreStats{StoreId: st.GetId(), StartTime: uint32(s.started.Unix())},
			}, nil
		}
	}
	return &pdpb.GetStoreResponse{
		Header: s.errorHeader(pdpb.ErrorType_UNKNOWN, "invalid store ID %d, not found", req.GetStoreId()),
	}, nil
}

// GetAllStores lists the stores; none is ever a tombstone.
func (s *service) GetAllStores(_ context.Context, req *pdpb.GetAllStoresRequest) (*pdpb.GetAllStoresResponse, error) {
	if err := s.checkHeader(req.GetHeader()); err != nil {
		return nil, err
	}
	return &pdpb.GetAllStoresResponse{Header: s.header(), Stores: s.stores()}, nil
}

// StoreHeartbeat is accepted and ignored: the store is in-process.
func (s *service) StoreHeartbeat(_ context.Context, req *pdpb.StoreHeartbeatRequest) (*pdpb.StoreHeartbeatResponse, error) {
	if err := s.checkHeader(req.GetHeader()); err != nil {
		return nil, err
	}
	return &pdpb.StoreHeartbeatResponse{Header: s.header(), ClusterVersion: store.StoreVersion}, nil
}

// RegionHeartbeat drains the stream and ignores it: regions change only inside
// unistore, whose region manager is the source of truth.
func (s *service) RegionHeartbeat(stream pdpb.PD_RegionHeartbeatServer) error {
	reqs, errc := recvLoop(stream.Context(), stream.Recv)
	for {
		select {
		case <-s.stopCh:
			return status.Error(codes.Unavailable, "pd server is closing")
		case err := <-errc:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case req := <-reqs:
			if err := s.checkHeader(req.GetHeader()); err != nil {
				return err
			}
		}
	}
}

// ScatterRegion succeeds without doing anything: there is one store to place
// regions on.
func (s *service) ScatterRegion(_ context.Context, req *pdpb.ScatterRegionRequest) (*pdpb.ScatterRegionResponse, error) {
	if err := s.checkHeader(req.GetHeader()); err != nil {
		return nil, err
	}
	return &pdpb.ScatterRegionResponse{Header: s.header(), FinishedPercentage: 100}, nil
}

// GetOperator reports every region's last operator as a finished scatter, which
// ends client-go's WaitScatterRegionFinish at once.
func (s *service) GetOperator(_ context.Context, req *pdpb.GetOperatorRequest) (*pdpb.GetOperatorResponse, error) {
	if err := s.checkHeader(req.GetHeader()); err != nil {
		return nil, err
	}
	return &pdpb.GetOperatorResponse{
		Header:   s.header(),
		RegionId: req.GetRegionId(),
		Desc:     []byte("scatter-region"),
		Status:   pdpb.OperatorStatus_SUCCESS,
	}, nil
}
