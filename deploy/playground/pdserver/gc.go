package pdserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/pingcap/kvproto/pkg/pdpb"
	"github.com/tikv/client-go/v2/oracle"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// gcWorkerServiceID is TiDB's GC worker's service safepoint. PD keeps it forever
// (it may not expire or be removed) and re-creates it when missing.
const gcWorkerServiceID = "gc_worker"

// Keys in the embedded etcd follow PD's layout: everything of a cluster lives
// under /pd/<cluster id>; the GC safepoint is a hex string, each service
// safepoint a JSON document under gc/safe_point/service/<service id>. Tools that
// read PD's etcd directly find them where they expect them.
func (s *service) rootPath() string { return "/pd/" + strconv.FormatUint(s.clusterID, 10) }

func (s *service) gcSafePointKey() string { return s.rootPath() + "/gc/safe_point" }

func (s *service) serviceSafePointPrefix() string { return s.rootPath() + "/gc/safe_point/service/" }

// serviceSafePoint is the stored form of a service safepoint (PD's JSON fields).
type serviceSafePoint struct {
	ServiceID string `json:"service_id"`
	ExpiredAt int64  `json:"expired_at"` // unix seconds; math.MaxInt64 = never
	SafePoint uint64 `json:"safe_point"`
}

// gcState serialises the read-modify-write cycles on the safepoints (and the
// external timestamp), as PD's locks do.
type gcState struct {
	mu        sync.Mutex // GC safepoint, external timestamp
	serviceMu sync.Mutex // service safepoints
}

// initGC hands the persisted GC safepoint to unistore, whose mock PD starts at 0.
func (s *service) initGC(ctx context.Context) error {
	sp, err := s.loadGCSafePoint(ctx)
	if err != nil {
		return err
	}
	if _, err := s.st.PD.UpdateGCSafePoint(ctx, sp); err != nil {
		return fmt.Errorf("pdserver: hand GC safepoint to unistore: %w", err)
	}
	return nil
}

func (s *service) loadGCSafePoint(ctx context.Context) (uint64, error) {
	resp, err := s.kv.Get(ctx, s.gcSafePointKey())
	if err != nil {
		return 0, fmt.Errorf("pdserver: load GC safepoint: %w", err)
	}
	if len(resp.Kvs) == 0 || len(resp.Kvs[0].Value) == 0 {
		return 0, nil
	}
	sp, err := strconv.ParseUint(string(resp.Kvs[0].Value), 16, 64)
	if err != nil {
		return 0, fmt.Errorf("pdserver: GC safepoint %q in etcd: %w", resp.Kvs[0].Value, err)
	}
	return sp, nil
}

// GetGCSafePoint returns the GC safepoint (0 before the first update).
func (s *service) GetGCSafePoint(ctx context.Context, req *pdpb.GetGCSafePointRequest) (*pdpb.GetGCSafePointResponse, error) {
	if err := s.checkHeader(req.GetHeader()); err != nil {
		return nil, err
	}
	sp, err := s.loadGCSafePoint(ctx)
	if err != nil {
		return nil, status.Error(codes.Unknown, err.Error())
	}
	return &pdpb.GetGCSafePointResponse{Header: s.header(), SafePoint: sp}, nil
}

// UpdateGCSafePoint moves the GC safepoint forward; a lower value leaves it where
// it is. The response carries the safepoint in force afterwards.
func (s *service) UpdateGCSafePoint(ctx context.Context, req *pdpb.UpdateGCSafePointRequest) (*pdpb.UpdateGCSafePointResponse, error) {
	if err := s.checkHeader(req.GetHeader()); err != nil {
		return nil, err
	}
	s.gc.mu.Lock()
	defer s.gc.mu.Unlock()
	old, err := s.loadGCSafePoint(ctx)
	if err != nil {
		return nil, status.Error(codes.Unknown, err.Error())
	}
	sp := req.GetSafePoint()
	if sp <= old {
		if sp < old {
			s.log.Warn("GC safepoint not moved back", "current", old, "requested", sp)
		}
		return &pdpb.UpdateGCSafePointResponse{Header: s.header(), NewSafePoint: old}, nil
	}
	if _, err := s.kv.Put(ctx, s.gcSafePointKey(), strconv.FormatUint(sp, 16)); err != nil {
		return nil, status.Errorf(codes.Unknown, "save GC safepoint: %v", err)
	}
	// unistore's compaction filter and GC read the safepoint from its mock PD.
	if _, err := s.st.PD.UpdateGCSafePoint(ctx, sp); err != nil {
		return nil, status.Errorf(codes.Unknown, "hand GC safepoint to unistore: %v", err)
	}
	s.log.Info("GC safepoint updated", "old", old, "new", sp)
	return &pdpb.UpdateGCSafePointResponse{Header: s.header(), NewSafePoint: sp}, nil
}

// UpdateServiceGCSafePoint sets, refreshes or (TTL <= 0) removes a service's
// safepoint, with PD's semantics:
//   - a safepoint below the current minimum of all services is not saved (a
//     service cannot pull GC back behind what another service already allowed);
//   - the response is the minimum after the update: its service id, safepoint,
//     and remaining TTL (seconds);
//   - expired service safepoints are dropped whenever the minimum is computed;
//   - gc_worker's safepoint never expires, cannot be removed, and is created
//     (at 0, or at the minimum of the others) when missing.
//
// "Now" for expiry is the TSO's physical time, as in PD.
func (s *service) UpdateServiceGCSafePoint(ctx context.Context, req *pdpb.UpdateServiceGCSafePointRequest) (*pdpb.UpdateServiceGCSafePointResponse, error) {
	if err := s.checkHeader(req.GetHeader()); err != nil {
		return nil, err
	}
	s.gc.serviceMu.Lock()
	defer s.gc.serviceMu.Unlock()

	serviceID := string(req.GetServiceId())
	if req.GetTTL() <= 0 {
		if serviceID == gcWorkerServiceID {
			return nil, status.Error(codes.Unknown, "cannot remove service safe point of gc_worker")
		}
		if _, err := s.kv.Delete(ctx, s.serviceSafePointPrefix()+serviceID); err != nil {
			return nil, status.Errorf(codes.Unknown, "remove service safepoint: %v", err)
		}
	}
	physical, _, err := s.st.PD.GetTSBatch(ctx, 1)
	if err != nil {
		return nil, status.Errorf(codes.Unknown, "get current time from TSO: %v", err)
	}
	now := time.UnixMilli(physical).Unix()

	minSSP, err := s.loadMinServiceSafePoint(ctx, now)
	if err != nil {
		return nil, status.Error(codes.Unknown, err.Error())
	}
	if req.GetTTL() > 0 && req.GetSafePoint() >= minSSP.SafePoint {
		ssp := serviceSafePoint{ServiceID: serviceID, ExpiredAt: now + req.GetTTL(), SafePoint: req.GetSafePoint()}
		if math.MaxInt64-now <= req.GetTTL() {
			ssp.ExpiredAt = math.MaxInt64
		}
		if err := s.saveServiceSafePoint(ctx, ssp); err != nil {
			return nil, status.Error(codes.Unknown, err.Error())
		}
		s.log.Info("service GC safepoint updated", "service", serviceID, "safepoint", ssp.SafePoint, "expired_at", ssp.ExpiredAt)
		if serviceID == minSSP.ServiceID {
			if minSSP, err = s.loadMinServiceSafePoint(ctx, now); err != nil {
				return nil, status.Error(codes.Unknown, err.Error())
			}
		}
	}
	return &pdpb.UpdateServiceGCSafePointResponse{
		Header:       s.header(),
		ServiceId:    []byte(minSSP.ServiceID),
		TTL:          minSSP.ExpiredAt - now,
		MinSafePoint: minSSP.SafePoint,
	}, nil
}

func (s *service) saveServiceSafePoint(ctx context.Context, ssp serviceSafePoint) error {
	if ssp.ServiceID == "" {
		return errors.New("service id of service safepoint cannot be empty")
	}
	if ssp.ServiceID == gcWorkerServiceID && ssp.ExpiredAt != math.MaxInt64 {
		return errors.New("TTL of gc_worker's service safe point must be infinity")
	}
	b, err := json.Marshal(ssp)
	if err != nil {
		return fmt.Errorf("encode service safepoint: %w", err)
	}
	if _, err := s.kv.Put(ctx, s.serviceSafePointPrefix()+ssp.ServiceID, string(b)); err != nil {
		return fmt.Errorf("save service safepoint: %w", err)
	}
	return nil
}

// loadMinServiceSafePoint returns the service safepoint with the lowest safepoint
// among those not expired at now, removing expired ones and creating gc_worker's
// when missing.
func (s *service) loadMinServiceSafePoint(ctx context.Context, now int64) (serviceSafePoint, error) {
	resp, err := s.kv.Get(ctx, s.serviceSafePointPrefix(), clientv3.WithPrefix())
	if err != nil {
		return serviceSafePoint{}, fmt.Errorf("load service safepoints: %w", err)
	}
	initGCWorker := func(sp uint64) (serviceSafePoint, error) {
		ssp := serviceSafePoint{ServiceID: gcWorkerServiceID, ExpiredAt: math.MaxInt64, SafePoint: sp}
		return ssp, s.saveServiceSafePoint(ctx, ssp)
	}
	if len(resp.Kvs) == 0 {
		return initGCWorker(0)
	}
	hasGCWorker := false
	minSSP := serviceSafePoint{SafePoint: math.MaxUint64}
	for _, kv := range resp.Kvs {
		var ssp serviceSafePoint
		if err := json.Unmarshal(kv.Value, &ssp); err != nil {
			return serviceSafePoint{}, fmt.Errorf("service safepoint %s: %w", kv.Key, err)
		}
		if ssp.ServiceID == gcWorkerServiceID {
			hasGCWorker = true
			if ssp.ExpiredAt != math.MaxInt64 {
				ssp.ExpiredAt = math.MaxInt64
				if err := s.saveServiceSafePoint(ctx, ssp); err != nil {
					return serviceSafePoint{}, err
				}
			}
		}
		if ssp.ExpiredAt < now {
			if _, err := s.kv.Delete(ctx, string(kv.Key)); err != nil {
				return serviceSafePoint{}, fmt.Errorf("remove expired service safepoint: %w", err)
			}
			continue
		}
		if ssp.SafePoint < minSSP.SafePoint {
			minSSP = ssp
		}
	}
	if minSSP.SafePoint == math.MaxUint64 {
		return initGCWorker(0)
	}
	if !hasGCWorker {
		return initGCWorker(minSSP.SafePoint)
	}
	return minSSP, nil
}

func (s *service) externalTSKey() string { return s.rootPath() + "/external_timestamp" }

func (s *service) loadExternalTS(ctx context.Context) (uint64, error) {
	resp, err := s.kv.Get(ctx, s.externalTSKey())
	if err != nil {
		return 0, fmt.Errorf("load external timestamp: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	ts, err := strconv.ParseUint(string(resp.Kvs[0].Value), 16, 64)
	if err != nil {
		return 0, fmt.Errorf("external timestamp %q in etcd: %w", resp.Kvs[0].Value, err)
	}
	return ts, nil
}

// GetExternalTimestamp returns the timestamp TiDB's tidb_external_ts last set (0
// before).
func (s *service) GetExternalTimestamp(ctx context.Context, req *pdpb.GetExternalTimestampRequest) (*pdpb.GetExternalTimestampResponse, error) {
	if err := s.checkHeader(req.GetHeader()); err != nil {
		return nil, err
	}
	ts, err := s.loadExternalTS(ctx)
	if err != nil {
		return nil, status.Error(codes.Unknown, err.Error())
	}
	return &pdpb.GetExternalTimestampResponse{Header: s.header(), Timestamp: ts}, nil
}

// SetExternalTimestamp moves the external timestamp forward, never past the
// current TSO; a refused value is INVALID_VALUE in the header, as in PD.
func (s *service) SetExternalTimestamp(ctx context.Context, req *pdpb.SetExternalTimestampRequest) (*pdpb.SetExternalTimestampResponse, error) {
	if err := s.checkHeader(req.GetHeader()); err != nil {
		return nil, err
	}
	s.gc.mu.Lock()
	defer s.gc.mu.Unlock()
	physical, logical, err := s.st.PD.GetTSBatch(ctx, 1)
	if err != nil {
		return nil, status.Errorf(codes.Unknown, "get current timestamp: %v", err)
	}
	now := oracle.ComposeTS(physical, logical)
	ts := req.GetTimestamp()
	if ts > now {
		return &pdpb.SetExternalTimestampResponse{
			Header: s.errorHeader(pdpb.ErrorType_INVALID_VALUE, "external timestamp is greater than global tso"),
		}, nil
	}
	cur, err := s.loadExternalTS(ctx)
	if err != nil {
		return nil, status.Error(codes.Unknown, err.Error())
	}
	if ts < cur {
		return &pdpb.SetExternalTimestampResponse{
			Header: s.errorHeader(pdpb.ErrorType_INVALID_VALUE, "cannot decrease the external timestamp"),
		}, nil
	}
	if _, err := s.kv.Put(ctx, s.externalTSKey(), strconv.FormatUint(ts, 16)); err != nil {
		return nil, status.Errorf(codes.Unknown, "save external timestamp: %v", err)
	}
	return &pdpb.SetExternalTimestampResponse{Header: s.header()}, nil
}
