package pdserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"

	"github.com/gogo/protobuf/proto"
	rmpb "github.com/pingcap/kvproto/pkg/resource_manager"
	rmclient "github.com/tikv/pd/client/resource_group/controller"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Resource groups live in etcd where PD keeps them (proto-encoded, no cluster
// prefix): TiDB's resource group controller lists and watches this prefix through
// the MetaStorage service.
const (
	resourceGroupPrefix     = "resource_group/settings/"
	controllerConfigKey     = "resource_group/controller"
	defaultResourceGroup    = "default"
	maxResourceGroupNameLen = 32
	maxResourceGroupPrio    = 16
	resourceGroupOK         = "Success!"
)

// resourceManager serves PD's ResourceManager service well enough for TiDB, which
// uses it whenever resource control is on (the default): groups are stored and
// listed like in PD, and token requests are granted in full at once. RU limits are
// therefore not enforced.
type resourceManager struct {
	rmpb.UnimplementedResourceManagerServer
	s  *service
	mu sync.Mutex // serialises read-modify-write of group settings

	statsMu sync.Mutex
	stats   map[string]*rmpb.Consumption // per group, since start, as clients report it
}

// addConsumption accumulates what a client reports it consumed.
func (rm *resourceManager) addConsumption(group string, c *rmpb.Consumption) {
	if c == nil {
		return
	}
	rm.statsMu.Lock()
	defer rm.statsMu.Unlock()
	if rm.stats == nil {
		rm.stats = make(map[string]*rmpb.Consumption)
	}
	t := rm.stats[group]
	if t == nil {
		t = &rmpb.Consumption{}
		rm.stats[group] = t
	}
	t.RRU += c.GetRRU()
	t.WRU += c.GetWRU()
	t.ReadBytes += c.GetReadBytes()
	t.WriteBytes += c.GetWriteBytes()
	t.TotalCpuTimeMs += c.GetTotalCpuTimeMs()
	t.SqlLayerCpuTimeMs += c.GetSqlLayerCpuTimeMs()
	t.KvReadRpcCount += c.GetKvReadRpcCount()
	t.KvWriteRpcCount += c.GetKvWriteRpcCount()
}

// withStats fills the group's RU statistics (TiDB's daily RU report reads them;
// PD keeps them since its start too).
func (rm *resourceManager) withStats(g *rmpb.ResourceGroup) *rmpb.ResourceGroup {
	rm.statsMu.Lock()
	defer rm.statsMu.Unlock()
	if c := rm.stats[g.GetName()]; c != nil {
		g.RUStats = proto.Clone(c).(*rmpb.Consumption)
	} else {
		g.RUStats = &rmpb.Consumption{}
	}
	return g
}

// defaultGroupSettings is PD's built-in "default" group: RU mode, unlimited fill
// rate and burst, medium priority.
func defaultGroupSettings() *rmpb.ResourceGroup {
	return &rmpb.ResourceGroup{
		Name: defaultResourceGroup,
		Mode: rmpb.GroupMode_RUMode,
		RUSettings: &rmpb.GroupRequestUnitSettings{
			RU: &rmpb.TokenBucket{Settings: &rmpb.TokenLimitSettings{FillRate: math.MaxInt32, BurstLimit: -1}},
		},
		Priority: 8,
	}
}

// init creates the default group and the controller config when missing, as PD
// does on start (without the config, every TiDB start logs a warning).
func (rm *resourceManager) init(ctx context.Context) error {
	group, err := proto.Marshal(defaultGroupSettings())
	if err != nil {
		return fmt.Errorf("pdserver: encode default resource group: %w", err)
	}
	base := rmclient.DefaultConfig().BaseConfig
	cfg, err := json.Marshal(&base)
	if err != nil {
		return fmt.Errorf("pdserver: encode resource controller config: %w", err)
	}
	// The controller config goes first: the pd client's controller watches it
	// from the revision it read, and an event for it right after start trips a
	// data race inside that client version.
	for _, kv := range []struct {
		key string
		val []byte
	}{
		{controllerConfigKey, cfg},
		{resourceGroupPrefix + defaultResourceGroup, group},
	} {
		key, val := kv.key, kv.val
		if _, err := rm.s.kv.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, string(val))).
			Commit(); err != nil {
			return fmt.Errorf("pdserver: initialise %s: %w", key, err)
		}
	}
	return nil
}

func (rm *resourceManager) load(ctx context.Context, name string) (*rmpb.ResourceGroup, error) {
	res, err := rm.s.kv.Get(ctx, resourceGroupPrefix+name)
	if err != nil {
		return nil, status.Errorf(codes.Unknown, "load resource group %s: %v", name, err)
	}
	if len(res.Kvs) == 0 {
		return nil, nil
	}
	g := &rmpb.ResourceGroup{}
	if err := proto.Unmarshal(res.Kvs[0].Value, g); err != nil {
		return nil, status.Errorf(codes.Unknown, "decode resource group %s: %v", name, err)
	}
	return g, nil
}

func (rm *resourceManager) save(ctx context.Context, g *rmpb.ResourceGroup) error {
	b, err := proto.Marshal(g)
	if err != nil {
		return status.Errorf(codes.Unknown, "encode resource group %s: %v", g.GetName(), err)
	}
	if _, err := rm.s.kv.Put(ctx, resourceGroupPrefix+g.GetName(), string(b)); err != nil {
		return status.Errorf(codes.Unknown, "save resource group %s: %v", g.GetName(), err)
	}
	return nil
}

// ListResourceGroups returns all groups in name order.
func (rm *resourceManager) ListResourceGroups(ctx context.Context, req *rmpb.ListResourceGroupsRequest) (*rmpb.ListResourceGroupsResponse, error) {
	res, err := rm.s.kv.Get(ctx, resourceGroupPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, status.Errorf(codes.Unknown, "list resource groups: %v", err)
	}
	resp := &rmpb.ListResourceGroupsResponse{}
	for _, kv := range res.Kvs {
		g := &rmpb.ResourceGroup{}
		if err := proto.Unmarshal(kv.Value, g); err != nil {
			return nil, status.Errorf(codes.Unknown, "decode resource group %s: %v", kv.Key, err)
		}
		if req.GetWithRuStats() {
			g = rm.withStats(g)
		}
		resp.Groups = append(resp.Groups, g)
	}
	return resp, nil
}

// GetResourceGroup returns one group; an unknown name is PD's "resource group not
// found" error.
func (rm *resourceManager) GetResourceGroup(ctx context.Context, req *rmpb.GetResourceGroupRequest) (*rmpb.GetResourceGroupResponse, error) {
	g, err := rm.load(ctx, req.GetResourceGroupName())
	if err != nil {
		return nil, err
	}
	if g == nil {
		return nil, status.Error(codes.Unknown, "resource group not found")
	}
	if req.GetWithRuStats() {
		g = rm.withStats(g)
	}
	return &rmpb.GetResourceGroupResponse{Group: g}, nil
}

func validateGroup(g *rmpb.ResourceGroup) error {
	if n := len(g.GetName()); n == 0 || n > maxResourceGroupNameLen {
		return status.Errorf(codes.Unknown, "invalid resource group name %q: want 1..%d bytes", g.GetName(), maxResourceGroupNameLen)
	}
	if g.GetPriority() > maxResourceGroupPrio {
		return status.Errorf(codes.Unknown, "invalid resource group priority %d: want 0..%d", g.GetPriority(), maxResourceGroupPrio)
	}
	return nil
}

// AddResourceGroup creates or overwrites a group.
func (rm *resourceManager) AddResourceGroup(ctx context.Context, req *rmpb.PutResourceGroupRequest) (*rmpb.PutResourceGroupResponse, error) {
	g := req.GetGroup()
	if err := validateGroup(g); err != nil {
		return nil, err
	}
	rm.mu.Lock()
	defer rm.mu.Unlock()
	if err := rm.save(ctx, withoutStats(g)); err != nil {
		return nil, err
	}
	return &rmpb.PutResourceGroupResponse{Body: resourceGroupOK}, nil
}

// ModifyResourceGroup replaces an existing group's settings; the mode cannot
// change.
func (rm *resourceManager) ModifyResourceGroup(ctx context.Context, req *rmpb.PutResourceGroupRequest) (*rmpb.PutResourceGroupResponse, error) {
	g := req.GetGroup()
	if err := validateGroup(g); err != nil {
		return nil, err
	}
	rm.mu.Lock()
	defer rm.mu.Unlock()
	cur, err := rm.load(ctx, g.GetName())
	if err != nil {
		return nil, err
	}
	if cur == nil {
		return nil, status.Errorf(codes.Unknown, "the %s resource group does not exist", g.GetName())
	}
	if cur.GetMode() != g.GetMode() {
		return nil, status.Error(codes.Unknown, "resource group mode not match")
	}
	if err := rm.save(ctx, withoutStats(g)); err != nil {
		return nil, err
	}
	return &rmpb.PutResourceGroupResponse{Body: resourceGroupOK}, nil
}

// DeleteResourceGroup removes a group; "default" cannot be removed.
func (rm *resourceManager) DeleteResourceGroup(ctx context.Context, req *rmpb.DeleteResourceGroupRequest) (*rmpb.DeleteResourceGroupResponse, error) {
	name := req.GetResourceGroupName()
	if name == defaultResourceGroup {
		return nil, status.Error(codes.Unknown, "cannot delete reserved group")
	}
	rm.mu.Lock()
	defer rm.mu.Unlock()
	res, err := rm.s.kv.Delete(ctx, resourceGroupPrefix+name)
	if err != nil {
		return nil, status.Errorf(codes.Unknown, "delete resource group %s: %v", name, err)
	}
	if res.Deleted == 0 {
		return nil, status.Errorf(codes.Unknown, "the %s resource group does not exist", name)
	}
	return &rmpb.DeleteResourceGroupResponse{Body: resourceGroupOK}, nil
}

func withoutStats(g *rmpb.ResourceGroup) *rmpb.ResourceGroup {
	c := proto.Clone(g).(*rmpb.ResourceGroup)
	c.RUStats = nil
	return c
}

// AcquireTokenBuckets grants every RU request in full, with the group's settings
// (which tell the client whether the group is unlimited), and adds up the
// consumption clients report. Requests for unknown groups are left out of the
// response, as PD does.
func (rm *resourceManager) AcquireTokenBuckets(stream rmpb.ResourceManager_AcquireTokenBucketsServer) error {
	reqs, errc := recvLoop(stream.Context(), stream.Recv)
	for {
		var req *rmpb.TokenBucketsRequest
		select {
		case <-rm.s.stopCh:
			return status.Error(codes.Unavailable, "pd server is closing")
		case err := <-errc:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case req = <-reqs:
		}
		resp := &rmpb.TokenBucketsResponse{}
		for _, r := range req.GetRequests() {
			rm.addConsumption(r.GetResourceGroupName(), r.GetConsumptionSinceLastRequest())
			g, err := rm.load(stream.Context(), r.GetResourceGroupName())
			if err != nil {
				return err
			}
			if g == nil {
				continue
			}
			tb := &rmpb.TokenBucketResponse{ResourceGroupName: g.GetName()}
			for _, item := range r.GetRuItems().GetRequestRU() {
				tb.GrantedRUTokens = append(tb.GrantedRUTokens, &rmpb.GrantedRUTokenBucket{
					Type: item.GetType(),
					GrantedTokens: &rmpb.TokenBucket{
						Settings: g.GetRUSettings().GetRU().GetSettings(),
						Tokens:   item.GetValue(),
					},
				})
			}
			resp.Responses = append(resp.Responses, tb)
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}
