package control

import (
	"context"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
	"github.com/tidestream/tidestream/coordinator/owner"
	"github.com/tidestream/tidestream/coordinator/store"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// ClusterServer implements tidestreamv1.ClusterServiceServer.
type ClusterServer struct {
	pb.UnimplementedClusterServiceServer
	store *store.Store
}

// NewClusterServer returns the cluster service.
func NewClusterServer(st *store.Store) *ClusterServer { return &ClusterServer{store: st} }

func (c *ClusterServer) members(ctx context.Context) ([]*pb.Member, string, error) {
	ms, err := c.store.Members(ctx)
	if err != nil {
		return nil, "", err
	}
	ownerID, err := owner.Current(ctx, c.store.Client(), c.store.Keys())
	if err != nil {
		return nil, "", err
	}
	for _, m := range ms {
		m.IsOwner = m.Id == ownerID
	}
	return ms, ownerID, nil
}

// Members lists the live members, marking the owner, and names the
// cluster they belong to.
func (c *ClusterServer) Members(ctx context.Context, _ *pb.MembersRequest) (*pb.MembersResponse, error) {
	ms, _, err := c.members(ctx)
	if err != nil {
		return nil, cdcerr.ToStatus(err)
	}
	return &pb.MembersResponse{Members: ms, ClusterId: c.store.Keys().Cluster()}, nil
}

// Owner returns the current owner, if any.
func (c *ClusterServer) Owner(ctx context.Context, _ *pb.OwnerRequest) (*pb.OwnerResponse, error) {
	ms, ownerID, err := c.members(ctx)
	if err != nil {
		return nil, cdcerr.ToStatus(err)
	}
	for _, m := range ms {
		if m.Id == ownerID {
			return &pb.OwnerResponse{Owner: m}, nil
		}
	}
	if ownerID != "" {
		// Elected but its member key is gone: it is dying; report the id.
		return &pb.OwnerResponse{Owner: &pb.Member{Id: ownerID, IsOwner: true}}, nil
	}
	return &pb.OwnerResponse{}, nil
}

// Health reports whether etcd answers and an owner is elected.
func (c *ClusterServer) Health(ctx context.Context, _ *pb.ClusterHealthRequest) (*pb.ClusterHealthResponse, error) {
	ms, ownerID, err := c.members(ctx)
	if err != nil {
		return &pb.ClusterHealthResponse{Reason: "etcd: " + err.Error()}, nil
	}
	resp := &pb.ClusterHealthResponse{EtcdReachable: true, HasOwner: ownerID != "", MemberCount: int32(len(ms))}
	resp.Healthy = resp.HasOwner
	if !resp.HasOwner {
		resp.Reason = "no owner elected"
	}
	return resp, nil
}
