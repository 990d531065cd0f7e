package schema

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/tikv/client-go/v2/config"
	"github.com/tikv/client-go/v2/oracle"
	"github.com/tikv/client-go/v2/tikv"
	"github.com/tikv/client-go/v2/txnkv/txnsnapshot"
	pd "github.com/tikv/pd/client"
	"github.com/tikv/pd/client/opt"
	"github.com/tikv/pd/client/pkg/caller"
)

// Store is a client-go connection to an upstream cluster, enough to read meta
// snapshots (it is a SnapshotStore) and the current TSO.
type Store struct {
	kv       *tikv.KVStore
	cancelPD context.CancelFunc
}

var _ SnapshotStore = (*Store)(nil)

// OpenStore connects to the cluster whose PD endpoints are pdAddrs. ctx
// bounds only the connection; the store lives until Close.
//
// txnkv.NewClient would be shorter, but its pd client looks regions up
// through the streaming QueryRegion RPC, which PD before 9.0 (8.5 included,
// and the playground) answers UNIMPLEMENTED; every snapshot read then fails
// after a 40 s backoff. The unary region calls work everywhere.
func OpenStore(ctx context.Context, pdAddrs []string, sec config.Security) (*Store, error) {
	if len(pdAddrs) == 0 {
		return nil, errors.New("schema: no PD address")
	}
	tlsConfig, err := sec.ToTLSConfig()
	if err != nil {
		return nil, fmt.Errorf("schema: TLS configuration: %w", err)
	}
	// The pd client's context is its lifetime, so it must not be ctx.
	pdCtx, cancelPD := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancelPD)
	pdCli, err := pd.NewClientWithContext(pdCtx, caller.Component("tidestream-schema"), pdAddrs,
		pd.SecurityOption{CAPath: sec.ClusterSSLCA, CertPath: sec.ClusterSSLCert, KeyPath: sec.ClusterSSLKey},
		opt.WithEnableRouterClient(false))
	if !stop() && err == nil {
		pdCli.Close()
		err = ctx.Err()
	}
	if err != nil {
		cancelPD()
		return nil, fmt.Errorf("schema: connect PD %v: %w", pdAddrs, err)
	}
	codecCli := tikv.NewCodecPDClient(tikv.ModeTxn, pdCli)
	spkv, err := tikv.NewEtcdSafePointKV(pdAddrs, tlsConfig)
	if err != nil {
		codecCli.Close()
		cancelPD()
		return nil, fmt.Errorf("schema: connect PD etcd %v: %w", pdAddrs, err)
	}
	rpc := tikv.NewRPCClient(tikv.WithSecurity(sec), tikv.WithCodec(codecCli.GetCodec()))
	kv, err := tikv.NewKVStore(fmt.Sprintf("tidestream-schema-%d", pdCli.GetClusterID(ctx)), codecCli, spkv, rpc)
	if err != nil {
		// NewKVStore does not close the clients handed to it on failure.
		_ = rpc.Close()
		_ = spkv.Close()
		codecCli.Close()
		cancelPD()
		return nil, fmt.Errorf("schema: open KV store: %w", err)
	}
	return &Store{kv: kv, cancelPD: cancelPD}, nil
}

// GetSnapshot implements SnapshotStore.
func (s *Store) GetSnapshot(ts uint64) *txnsnapshot.KVSnapshot { return s.kv.GetSnapshot(ts) }

// CurrentTS returns a fresh TSO, e.g. the ts of a new changefeed's snapshot.
func (s *Store) CurrentTS(ctx context.Context) (uint64, error) {
	ts, err := s.kv.CurrentTimestamp(oracle.GlobalTxnScope)
	if err != nil {
		return 0, fmt.Errorf("schema: current ts: %w", err)
	}
	return ts, ctx.Err()
}

// Close closes the KV store, which closes the pd client, and ends the pd
// client's context.
func (s *Store) Close() error {
	err := s.kv.Close()
	s.cancelPD()
	return err
}

// KeyRange is a range of raw (unencoded) keys, End exclusive; an empty End
// is the end of the key space.
type KeyRange struct{ Start, End []byte }

// Regions returns, for each of ranges (sorted, not overlapping), the key
// ranges of the regions holding it, clipped to it, in key order: what PD
// reports now, not the region cache. Few ranges are scanned one by one;
// many (a changefeed's tables) in one scan over all of them.
func (s *Store) Regions(ctx context.Context, ranges []KeyRange) ([][]KeyRange, error) {
	out := make([][]KeyRange, len(ranges))
	if len(ranges) == 0 {
		return out, nil
	}
	bo := tikv.NewBackoffer(ctx, regionScanBackoff)
	cache := s.kv.GetRegionCache()
	clip := func(i int, start, end []byte) {
		r := ranges[i]
		if bytes.Compare(start, r.Start) < 0 {
			start = r.Start
		}
		if len(end) == 0 || len(r.End) > 0 && bytes.Compare(end, r.End) > 0 {
			end = r.End
		}
		if len(end) == 0 || bytes.Compare(start, end) < 0 {
			out[i] = append(out[i], KeyRange{Start: start, End: end})
		}
	}
	if len(ranges) <= 16 {
		for i, r := range ranges {
			regions, err := cache.LoadRegionsInKeyRange(bo, r.Start, r.End)
			if err != nil {
				return nil, fmt.Errorf("schema: regions of [%x, %x): %w", r.Start, r.End, err)
			}
			for _, reg := range regions {
				clip(i, reg.StartKey(), reg.EndKey())
			}
		}
		return out, nil
	}
	first, last := ranges[0].Start, ranges[len(ranges)-1].End
	regions, err := cache.LoadRegionsInKeyRange(bo, first, last)
	if err != nil {
		return nil, fmt.Errorf("schema: regions of [%x, %x): %w", first, last, err)
	}
	i := 0
	for _, reg := range regions {
		// A region may hold several ranges and a range several regions.
		for i < len(ranges) && len(ranges[i].End) > 0 && bytes.Compare(ranges[i].End, reg.StartKey()) <= 0 {
			i++
		}
		for j := i; j < len(ranges); j++ {
			if len(reg.EndKey()) > 0 && bytes.Compare(ranges[j].Start, reg.EndKey()) >= 0 {
				break
			}
			clip(j, reg.StartKey(), reg.EndKey())
		}
	}
	return out, nil
}

// regionScanBackoff bounds a region scan's retries (ms).
const regionScanBackoff = 20000
