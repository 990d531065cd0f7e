package cdcemu

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pingcap/kvproto/pkg/cdcpb"
	"github.com/pingcap/kvproto/pkg/kvrpcpb"
	"github.com/pingcap/kvproto/pkg/metapb"
	"github.com/pingcap/tidb/pkg/util/codec"
	"google.golang.org/grpc/codes"
)

// faults holds the injected misbehaviour (spec §6.5). Its own mutex: it is
// read on hot paths that may or may not hold applyMu.
type faults struct {
	mu           sync.Mutex
	delay        time.Duration
	holdAll      time.Time
	holdRegion   map[uint64]time.Time
	onRegister   []pendingErr
	initDelay    map[uint64]time.Duration
	disableV2    bool
	rejectFeat   bool
	pendingLimit int
	tsoFailUntil time.Time
}

// errInjectedTSO stands in for PD's answer while a TSO fault lasts.
var errInjectedTSO = errors.New("cdcemu: TSO unavailable (injected fault)")

func (f *faults) tsoFailing() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return time.Now().Before(f.tsoFailUntil)
}

type pendingErr struct {
	region uint64 // 0 = any
	count  int
	err    func(region uint64) *cdcpb.Error
}

func (f *faults) eventDelay() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.delay
}

func (f *faults) resolvedHeld(region uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if now.Before(f.holdAll) {
		return true
	}
	return now.Before(f.holdRegion[region])
}

func (f *faults) takeRegisterError(region uint64) *cdcpb.Error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.onRegister {
		p := &f.onRegister[i]
		if p.count <= 0 || (p.region != 0 && p.region != region) {
			continue
		}
		p.count--
		err := p.err(region)
		if p.count == 0 {
			f.onRegister = append(f.onRegister[:i:i], f.onRegister[i+1:]...)
		}
		return err
	}
	return nil
}

func (f *faults) initDelayFor(region uint64) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d, ok := f.initDelay[region]; ok {
		return d
	}
	return f.initDelay[0]
}

func (f *faults) v2Disabled() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.disableV2
}

func (f *faults) featuresRejected() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rejectFeat
}

func (f *faults) pendingLimitOr(def int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pendingLimit > 0 {
		return f.pendingLimit
	}
	return def
}

// ErrorKinds are the region errors InjectError knows.
var ErrorKinds = []string{
	"not_leader", "region_not_found", "epoch_not_match", "server_is_busy",
	"congested", "duplicate_request", "cluster_id_mismatch", "compatibility",
}

// errorFor builds the cdcpb.Error of kind for region, as TiKV would fill it.
func (e *Emulator) errorFor(kind string, backoffMs uint64) (func(uint64) *cdcpb.Error, error) {
	switch kind {
	case "not_leader":
		return func(id uint64) *cdcpb.Error {
			var leader *metapb.Peer
			if b := e.backend.Load(); b != nil {
				if r := getRegion(b, id); r != nil && len(r.Peers) > 0 {
					leader = r.Peers[0]
				}
			}
			return notLeader(id, leader)
		}, nil
	case "region_not_found":
		return regionNotFound, nil
	case "epoch_not_match":
		return func(id uint64) *cdcpb.Error {
			var cur []*metapb.Region
			if b := e.backend.Load(); b != nil {
				if r := getRegion(b, id); r != nil {
					cur = []*metapb.Region{r}
				}
			}
			return epochNotMatch(cur)
		}, nil
	case "server_is_busy":
		return func(uint64) *cdcpb.Error {
			return serverIsBusy("too many pending incremental scans", backoffMs)
		}, nil
	case "congested":
		return func(id uint64) *cdcpb.Error { return &cdcpb.Error{Congested: &cdcpb.Congested{RegionId: id}} }, nil
	case "duplicate_request":
		return func(id uint64) *cdcpb.Error {
			return &cdcpb.Error{DuplicateRequest: &cdcpb.DuplicateRequest{RegionId: id}}
		}, nil
	case "cluster_id_mismatch":
		return func(uint64) *cdcpb.Error {
			var cur uint64
			if b := e.backend.Load(); b != nil {
				cur = b.ClusterID
			}
			return &cdcpb.Error{ClusterIdMismatch: &cdcpb.ClusterIDMismatch{Current: cur, Request: cur + 1}}
		}, nil
	case "compatibility":
		return func(uint64) *cdcpb.Error {
			return &cdcpb.Error{Compatibility: &cdcpb.Compatibility{RequiredVersion: "6.2.0"}}
		}, nil
	}
	return nil, fmt.Errorf("cdcemu: unknown error kind %q (want one of %v)", kind, ErrorKinds)
}

// registerOnly lists the errors TiKV sends only in answer to a Register
// (spec §2.2): they reject that Register and never end a live subscription.
var registerOnly = map[string]bool{
	"server_is_busy": true, "duplicate_request": true, "cluster_id_mismatch": true, "compatibility": true,
}

// InjectError sends an Error of kind to the live subscriptions of region (0 =
// every region). A region error ends each of them, as TiKV does. A kind TiKV
// sends only at register time is sent as TiKV answers a second Register for a
// live key: the Error names the key, and the live subscription keeps
// streaming (spec §2.10). It returns how many subscriptions got it.
func (e *Emulator) InjectError(kind string, region uint64, backoffMs uint64) (int, error) {
	mk, err := e.errorFor(kind, backoffMs)
	if err != nil {
		return 0, err
	}
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	n := 0
	for _, d := range append([]*delegate(nil), e.delegates...) {
		if region != 0 && d.region.GetId() != region {
			continue
		}
		for _, ds := range append([]*downstream(nil), d.downs...) {
			e.stats.Errors.Add(1)
			n++
			if !registerOnly[kind] {
				e.stopDownstream(ds, mk(ds.regionID))
				continue
			}
			ds.conn.enqueueError(ds.requestID, ds.regionID, mk(ds.regionID))
		}
	}
	return n, nil
}

// FailTSO makes the resolved-ts rounds of the next d run without a TSO, as
// TiKV's do when PD cannot be reached (spec §2.8 step 1).
func (e *Emulator) FailTSO(d time.Duration) {
	e.faults.mu.Lock()
	defer e.faults.mu.Unlock()
	e.faults.tsoFailUntil = time.Now().Add(d)
}

// InjectRegisterError makes the next count registrations for region (0 = any)
// fail with kind, e.g. server_is_busy, which TiKV only sends at register.
func (e *Emulator) InjectRegisterError(kind string, region uint64, count int, backoffMs uint64) error {
	if count <= 0 {
		return fmt.Errorf("cdcemu: count %d must be positive", count)
	}
	mk, err := e.errorFor(kind, backoffMs)
	if err != nil {
		return err
	}
	e.faults.mu.Lock()
	defer e.faults.mu.Unlock()
	e.faults.onRegister = append(e.faults.onRegister, pendingErr{region: region, count: count, err: mk})
	return nil
}

// CloseStreams ends every change-data stream with code (codes.OK: a clean
// end of stream) and returns how many it closed.
func (e *Emulator) CloseStreams(code codes.Code, msg string) int {
	if msg == "" {
		msg = "closed by fault injection"
	}
	return e.closeAll(code, msg)
}

// HoldResolvedTs withholds resolved ts of region (0 = all) for d.
func (e *Emulator) HoldResolvedTs(region uint64, d time.Duration) {
	e.faults.mu.Lock()
	defer e.faults.mu.Unlock()
	until := time.Now().Add(d)
	if region == 0 {
		e.faults.holdAll = until
		return
	}
	if e.faults.holdRegion == nil {
		e.faults.holdRegion = make(map[uint64]time.Time)
	}
	e.faults.holdRegion[region] = until
}

// DelayEvents delays every message by d from when it was queued (0 ends it).
func (e *Emulator) DelayEvents(d time.Duration) {
	e.faults.mu.Lock()
	defer e.faults.mu.Unlock()
	e.faults.delay = d
}

// DelayInitialized delays the incremental scan output of region (0 = all).
func (e *Emulator) DelayInitialized(region uint64, d time.Duration) {
	e.faults.mu.Lock()
	defer e.faults.mu.Unlock()
	if e.faults.initDelay == nil {
		e.faults.initDelay = make(map[uint64]time.Duration)
	}
	e.faults.initDelay[region] = d
}

// SetEventFeedV2 disables (false) or enables EventFeedV2, to test clients'
// fallback to EventFeed.
func (e *Emulator) SetEventFeedV2(enabled bool) {
	e.faults.mu.Lock()
	defer e.faults.mu.Unlock()
	e.faults.disableV2 = !enabled
}

// SetRejectMultiplexing makes EventFeedV2 refuse stream-multiplexing.
func (e *Emulator) SetRejectMultiplexing(reject bool) {
	e.faults.mu.Lock()
	defer e.faults.mu.Unlock()
	e.faults.rejectFeat = reject
}

// SetPendingScanLimit overrides incremental-scan-concurrency-limit (0 resets).
func (e *Emulator) SetPendingScanLimit(n int) {
	e.faults.mu.Lock()
	defer e.faults.mu.Unlock()
	e.faults.pendingLimit = n
}

// Split splits the region holding rawKey at rawKey, ordered with writes, and
// returns the regions now covering the old one. Subscriptions of the old
// region get epoch_not_match carrying them.
func (e *Emulator) Split(rawKey []byte) ([]*metapb.Region, error) {
	b := e.backend.Load()
	if b == nil {
		return nil, errors.New("cdcemu: store not attached")
	}
	if len(rawKey) == 0 {
		return nil, errors.New("cdcemu: split key is empty")
	}
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	region, peer, _, _ := b.Regions.GetRegionByKey(codec.EncodeBytes(nil, rawKey))
	if region == nil {
		return nil, fmt.Errorf("cdcemu: no region holds key %x", rawKey)
	}
	if start, _ := decodeBound(region.GetStartKey()); string(start) == string(rawKey) {
		return nil, fmt.Errorf("cdcemu: key %x is already region %d's start", rawKey, region.GetId())
	}
	resp := b.Regions.SplitRegion(&kvrpcpb.SplitRegionRequest{
		Context:   &kvrpcpb.Context{RegionId: region.GetId(), RegionEpoch: region.GetRegionEpoch(), Peer: peer},
		SplitKeys: [][]byte{rawKey},
	})
	if re := resp.GetRegionError(); re != nil {
		return nil, fmt.Errorf("cdcemu: split region %d: %s", region.GetId(), re.GetMessage())
	}
	e.checkEpochs(b) // the old region's subscriptions get epoch_not_match
	return regionsOverlapping(b, region), nil
}
