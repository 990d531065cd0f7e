package pdserver

import (
	"context"
	"fmt"
	"path"

	"github.com/pingcap/kvproto/pkg/pdpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// defaultGlobalConfigPath is where PD keeps "global config" items when the request
// names no path. TiDB stores some global system variables there (for TiKV and
// TiCDC to read); TiKV and TiCDC watch them.
const defaultGlobalConfigPath = "/global/config/"

func globalConfigPath(p string) string {
	if p == "" {
		return defaultGlobalConfigPath
	}
	return p
}

// StoreGlobalConfig puts and deletes items in one etcd transaction. A put stores
// Value, or Payload when Value is empty.
func (s *service) StoreGlobalConfig(ctx context.Context, req *pdpb.StoreGlobalConfigRequest) (*pdpb.StoreGlobalConfigResponse, error) {
	dir := globalConfigPath(req.GetConfigPath())
	ops := make([]clientv3.Op, 0, len(req.GetChanges()))
	for _, item := range req.GetChanges() {
		key := path.Join(dir, item.GetName())
		switch item.GetKind() {
		case pdpb.EventType_PUT:
			v := item.GetValue()
			if v == "" {
				v = string(item.GetPayload())
			}
			ops = append(ops, clientv3.OpPut(key, v))
		case pdpb.EventType_DELETE:
			ops = append(ops, clientv3.OpDelete(key))
		default:
			return nil, status.Errorf(codes.InvalidArgument, "global config item %s: unknown kind %v", item.GetName(), item.GetKind())
		}
	}
	if _, err := s.kv.Txn(ctx).Then(ops...).Commit(); err != nil {
		return nil, status.Errorf(codes.Unknown, "store global config: %v", err)
	}
	return &pdpb.StoreGlobalConfigResponse{}, nil
}

// LoadGlobalConfig returns the named items (each with its own not-found error), or
// without names every item under the path with the revision to watch from.
func (s *service) LoadGlobalConfig(ctx context.Context, req *pdpb.LoadGlobalConfigRequest) (*pdpb.LoadGlobalConfigResponse, error) {
	dir := globalConfigPath(req.GetConfigPath())
	if names := req.GetNames(); names != nil {
		items := make([]*pdpb.GlobalConfigItem, 0, len(names))
		for _, name := range names {
			res, err := s.kv.Get(ctx, path.Join(dir, name))
			switch {
			case err != nil:
				items = append(items, &pdpb.GlobalConfigItem{Name: name,
					Error: &pdpb.Error{Type: pdpb.ErrorType_UNKNOWN, Message: err.Error()}})
			case len(res.Kvs) == 0:
				items = append(items, &pdpb.GlobalConfigItem{Name: name,
					Error: &pdpb.Error{Type: pdpb.ErrorType_GLOBAL_CONFIG_NOT_FOUND, Message: "key " + name + " not found"}})
			default:
				items = append(items, &pdpb.GlobalConfigItem{Name: name, Payload: res.Kvs[0].Value, Kind: pdpb.EventType_PUT})
			}
		}
		return &pdpb.LoadGlobalConfigResponse{Items: items}, nil
	}
	res, err := s.kv.Get(ctx, dir, clientv3.WithPrefix())
	if err != nil {
		return nil, status.Errorf(codes.Unknown, "load global config: %v", err)
	}
	items := make([]*pdpb.GlobalConfigItem, 0, len(res.Kvs))
	for _, kv := range res.Kvs {
		items = append(items, &pdpb.GlobalConfigItem{Name: string(kv.Key), Payload: kv.Value, Kind: pdpb.EventType_PUT})
	}
	return &pdpb.LoadGlobalConfigResponse{Items: items, Revision: res.Header.GetRevision()}, nil
}

// WatchGlobalConfig streams changes under the path from the given revision. A
// deleted item carries its last value. A compacted revision ends the stream with
// DATA_COMPACTED in the header.
func (s *service) WatchGlobalConfig(req *pdpb.WatchGlobalConfigRequest, stream pdpb.PD_WatchGlobalConfigServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	rev := req.GetRevision()
	wch := s.kv.Watch(clientv3.WithRequireLeader(ctx), globalConfigPath(req.GetConfigPath()),
		clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithPrevKV())
	for {
		select {
		case <-s.stopCh:
			return status.Error(codes.Unavailable, "pd server is closing")
		case <-ctx.Done():
			return nil
		case res, ok := <-wch:
			if !ok {
				return status.Error(codes.Unavailable, "watch closed")
			}
			if err := res.Err(); err != nil {
				resp := &pdpb.WatchGlobalConfigResponse{}
				if rev < res.CompactRevision {
					resp.Header = s.errorHeader(pdpb.ErrorType_DATA_COMPACTED,
						"required watch revision %d is below the compact revision %d", rev, res.CompactRevision)
				} else {
					resp.Header = s.errorHeader(pdpb.ErrorType_UNKNOWN, "watch failed: %v", err)
				}
				if serr := stream.Send(resp); serr != nil {
					return serr
				}
				return err
			}
			var items []*pdpb.GlobalConfigItem
			for _, e := range res.Events {
				switch {
				case e.Type == clientv3.EventTypePut:
					items = append(items, &pdpb.GlobalConfigItem{Name: string(e.Kv.Key), Payload: e.Kv.Value, Kind: pdpb.EventType_PUT})
				case e.PrevKv != nil:
					items = append(items, &pdpb.GlobalConfigItem{Name: string(e.Kv.Key), Payload: e.PrevKv.Value, Kind: pdpb.EventType_DELETE})
				}
				// A delete without its previous value repeats an earlier delete
				// (the value was compacted); PD skips it too.
			}
			if len(items) == 0 {
				continue
			}
			if err := stream.Send(&pdpb.WatchGlobalConfigResponse{
				Changes: items, Revision: res.Header.GetRevision(), Header: s.header(),
			}); err != nil {
				return fmt.Errorf("send global config changes: %w", err)
			}
		}
	}
}
