package pdserver

import (
	"context"
	"fmt"

	"github.com/pingcap/kvproto/pkg/meta_storagepb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// metaStorage serves PD's MetaStorage service: etcd's Get / Put / Delete / Watch on
// PD's etcd with raw keys, as PD does. TiDB's resource group controller reads its
// config and the resource groups through it when TiDB's domain starts (a failing
// Get there fails TiDB's start), then watches both prefixes.
type metaStorage struct {
	meta_storagepb.UnimplementedMetaStorageServer
	s *service
}

func (m *metaStorage) header(rev int64) *meta_storagepb.ResponseHeader {
	return &meta_storagepb.ResponseHeader{ClusterId: m.s.clusterID, Revision: rev}
}

func (m *metaStorage) errorHeader(rev int64, t meta_storagepb.ErrorType, msg string) *meta_storagepb.ResponseHeader {
	h := m.header(rev)
	h.Error = &meta_storagepb.Error{Type: t, Message: msg}
	return h
}

func (m *metaStorage) check(h *meta_storagepb.RequestHeader) error {
	if id := h.GetClusterId(); id != 0 && id != m.s.clusterID {
		return status.Errorf(codes.FailedPrecondition, "mismatch cluster id, need %d but got %d", m.s.clusterID, id)
	}
	return nil
}

func toKV(kv *mvccpb.KeyValue) *meta_storagepb.KeyValue {
	if kv == nil {
		return nil
	}
	return &meta_storagepb.KeyValue{
		Key:            kv.Key,
		Value:          kv.Value,
		CreateRevision: kv.CreateRevision,
		ModRevision:    kv.ModRevision,
		Version:        kv.Version,
		Lease:          kv.Lease,
	}
}

// Get is etcd's Range. Errors go into the header, with the revision.
func (m *metaStorage) Get(ctx context.Context, req *meta_storagepb.GetRequest) (*meta_storagepb.GetResponse, error) {
	if err := m.check(req.GetHeader()); err != nil {
		return nil, err
	}
	opts := []clientv3.OpOption{clientv3.WithLimit(req.GetLimit())}
	if end := req.GetRangeEnd(); len(end) > 0 {
		opts = append(opts, clientv3.WithRange(string(end)))
	}
	if rev := req.GetRevision(); rev != 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	res, err := m.s.kv.Get(ctx, string(req.GetKey()), opts...)
	if err != nil {
		return &meta_storagepb.GetResponse{
			Header: m.errorHeader(0, meta_storagepb.ErrorType_UNKNOWN, err.Error()),
		}, nil
	}
	resp := &meta_storagepb.GetResponse{
		Header: m.header(res.Header.GetRevision()),
		Count:  res.Count,
		More:   res.More,
	}
	for _, kv := range res.Kvs {
		resp.Kvs = append(resp.Kvs, toKV(kv))
	}
	return resp, nil
}

// Put is etcd's Put.
func (m *metaStorage) Put(ctx context.Context, req *meta_storagepb.PutRequest) (*meta_storagepb.PutResponse, error) {
	if err := m.check(req.GetHeader()); err != nil {
		return nil, err
	}
	var opts []clientv3.OpOption
	if lease := req.GetLease(); lease != 0 {
		opts = append(opts, clientv3.WithLease(clientv3.LeaseID(lease)))
	}
	if req.GetPrevKv() {
		opts = append(opts, clientv3.WithPrevKV())
	}
	res, err := m.s.kv.Put(ctx, string(req.GetKey()), string(req.GetValue()), opts...)
	if err != nil {
		return &meta_storagepb.PutResponse{
			Header: m.errorHeader(0, meta_storagepb.ErrorType_UNKNOWN, err.Error()),
		}, nil
	}
	resp := &meta_storagepb.PutResponse{Header: m.header(res.Header.GetRevision())}
	if res.PrevKv != nil {
		resp.PrevKv = toKV(res.PrevKv)
	}
	return resp, nil
}

// Delete is etcd's DeleteRange.
func (m *metaStorage) Delete(ctx context.Context, req *meta_storagepb.DeleteRequest) (*meta_storagepb.DeleteResponse, error) {
	if err := m.check(req.GetHeader()); err != nil {
		return nil, err
	}
	var opts []clientv3.OpOption
	if end := req.GetRangeEnd(); len(end) > 0 {
		opts = append(opts, clientv3.WithRange(string(end)))
	}
	if req.GetPrevKv() {
		opts = append(opts, clientv3.WithPrevKV())
	}
	res, err := m.s.kv.Delete(ctx, string(req.GetKey()), opts...)
	if err != nil {
		return &meta_storagepb.DeleteResponse{
			Header: m.errorHeader(0, meta_storagepb.ErrorType_UNKNOWN, err.Error()),
		}, nil
	}
	resp := &meta_storagepb.DeleteResponse{Header: m.header(res.Header.GetRevision()), Deleted: res.Deleted}
	for _, kv := range res.PrevKvs {
		resp.PrevKvs = append(resp.PrevKvs, toKV(kv))
	}
	return resp, nil
}

// Watch streams etcd's watch events. A watch from a compacted revision gets one
// response with DATA_COMPACTED and the compact revision, then the stream ends.
func (m *metaStorage) Watch(req *meta_storagepb.WatchRequest, stream meta_storagepb.MetaStorage_WatchServer) error {
	if err := m.check(req.GetHeader()); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	var opts []clientv3.OpOption
	if end := req.GetRangeEnd(); len(end) > 0 {
		opts = append(opts, clientv3.WithRange(string(end)))
	}
	startRev := req.GetStartRevision()
	if startRev != 0 {
		opts = append(opts, clientv3.WithRev(startRev))
	}
	if req.GetPrevKv() {
		opts = append(opts, clientv3.WithPrevKV())
	}
	wch := m.s.kv.Watch(clientv3.WithRequireLeader(ctx), string(req.GetKey()), opts...)
	for {
		select {
		case <-m.s.stopCh:
			return status.Error(codes.Unavailable, "pd server is closing")
		case <-ctx.Done():
			return nil
		case res, ok := <-wch:
			if !ok {
				return status.Error(codes.Unavailable, "watch closed")
			}
			if err := res.Err(); err != nil {
				resp := &meta_storagepb.WatchResponse{}
				if startRev < res.CompactRevision {
					resp.Header = m.errorHeader(res.Header.GetRevision(), meta_storagepb.ErrorType_DATA_COMPACTED,
						fmt.Sprintf("required watch revision %d is below the compact revision %d", startRev, res.CompactRevision))
					resp.CompactRevision = res.CompactRevision
				} else {
					resp.Header = m.errorHeader(res.Header.GetRevision(), meta_storagepb.ErrorType_UNKNOWN,
						fmt.Sprintf("watch failed: %v", err))
				}
				if serr := stream.Send(resp); serr != nil {
					return serr
				}
				return err
			}
			if len(res.Events) == 0 {
				continue // progress notification
			}
			events := make([]*meta_storagepb.Event, 0, len(res.Events))
			for _, e := range res.Events {
				ev := &meta_storagepb.Event{Type: meta_storagepb.Event_EventType(e.Type), Kv: toKV(e.Kv)}
				if e.PrevKv != nil {
					ev.PrevKv = toKV(e.PrevKv)
				}
				events = append(events, ev)
			}
			if err := stream.Send(&meta_storagepb.WatchResponse{
				Header:          m.header(res.Header.GetRevision()),
				Events:          events,
				CompactRevision: res.CompactRevision,
			}); err != nil {
				return err
			}
		}
	}
}
