package pgtest

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/pingcap/kvproto/pkg/cdcpb"
	"github.com/pingcap/kvproto/pkg/kvrpcpb"
	"github.com/pingcap/kvproto/pkg/metapb"
	"github.com/pingcap/tidb/pkg/util/codec"
	"github.com/tikv/client-go/v2/tikv"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// TiCDCVersion is the client version the feed announces. TiKV gates
// features on it (batched resolved ts from 4.0.8, old values); an 8.5
// client gets what TiCDC gets today.
const TiCDCVersion = "8.5.0"

// ChangedRows returns every row change committed in (from, to] on the raw
// key span [start, end) (e.g. a table's t{id}_r … t{id}_s), read from the
// KV endpoint's change-data stream with old values, in commit ts order
// (then start ts, then key), as the sorter hands them to the encoder.
//
// It takes COMMITTED entries as they are (the incremental scan's rows, and
// one-phase commits, which TiKV also reports that way) and, for two-phase
// commits while the subscription is live, pairs each PREWRITE with its
// COMMIT (a ROLLBACK discards the prewrite; a COMMIT that arrives first
// waits for its prewrite), the way spec tidb-schema-and-rows §3.1
// describes. It returns once every region of the span is initialized and
// resolved to at least to, so nothing committed at ≤ to can still arrive.
// Pass a to taken after the changes of interest committed (CurrentTS).
//
// A region error fails the test: the playground does not split or move
// regions unless a test asks it to, so one means the harness is wrong.
func (p *Playground) ChangedRows(ctx context.Context, t testing.TB, start, end []byte, from, to uint64) []*tidestreamv1.RawKVEvent {
	t.Helper()
	evs, _, err := p.changedRows(ctx, start, end, from, to)
	if err != nil {
		t.Fatalf("pgtest: changed rows of [%x, %x) in (%d, %d]: %v", start, end, from, to, err)
	}
	return evs
}

type txnKey struct {
	key     string
	startTs uint64
}

// feedStats says by which path ChangedRows got its rows, for its own test.
type feedStats struct {
	scanned int // COMMITTED entries: the incremental scan's, and one-phase commits
	matched int // PREWRITEs matched with their COMMIT
}

func (p *Playground) changedRows(ctx context.Context, start, end []byte, from, to uint64) ([]*tidestreamv1.RawKVEvent, feedStats, error) {
	var stats feedStats
	if from >= to {
		return nil, stats, fmt.Errorf("empty ts range")
	}
	cli, err := p.PD(ctx)
	if err != nil {
		return nil, stats, err
	}
	// The codec client encodes raw keys into the memcomparable form region
	// boundaries are kept in, and decodes the boundaries it returns.
	rc := tikv.NewRegionCache(tikv.NewCodecPDClient(tikv.ModeTxn, cli))
	defer rc.Close()
	locs, err := rc.LocateKeyRange(tikv.NewBackoffer(ctx, 20000), start, end)
	if err != nil {
		return nil, stats, fmt.Errorf("locate regions: %w", err)
	}

	conn, err := grpc.NewClient(p.KVAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, stats, err
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := cdcpb.NewChangeDataClient(conn).EventFeed(sctx)
	if err != nil {
		return nil, stats, fmt.Errorf("event feed: %w", err)
	}
	header := &cdcpb.Header{ClusterId: cli.GetClusterID(ctx), TicdcVersion: TiCDCVersion}

	type region struct {
		initialized bool
		resolved    uint64
	}
	regions := map[uint64]*region{}
	for i, loc := range locs {
		// Each region gets the part of the span it holds.
		s, e := start, end
		if bytes.Compare(loc.StartKey, s) > 0 {
			s = loc.StartKey
		}
		if len(loc.EndKey) > 0 && bytes.Compare(loc.EndKey, e) < 0 {
			e = loc.EndKey
		}
		regions[loc.Region.GetID()] = &region{}
		err := stream.Send(&cdcpb.ChangeDataRequest{
			Header:       header,
			RegionId:     loc.Region.GetID(),
			RegionEpoch:  &metapb.RegionEpoch{ConfVer: loc.Region.GetConfVer(), Version: loc.Region.GetVer()},
			CheckpointTs: from,
			StartKey:     codec.EncodeBytes(nil, s),
			EndKey:       codec.EncodeBytes(nil, e),
			RequestId:    uint64(i + 1),
			ExtraOp:      kvrpcpb.ExtraOp_ReadOldValue,
			Request:      &cdcpb.ChangeDataRequest_Register_{Register: &cdcpb.ChangeDataRequest_Register{}},
		})
		if err != nil {
			return nil, stats, fmt.Errorf("register region %d: %w", loc.Region.GetID(), err)
		}
	}
	done := func() bool {
		for _, r := range regions {
			if !r.initialized || r.resolved < to {
				return false
			}
		}
		return true
	}
	resolve := func(id, ts uint64) {
		// A resolved ts before INITIALIZED says nothing about rows the
		// incremental scan has yet to deliver.
		if r := regions[id]; r != nil && r.initialized && ts > r.resolved {
			r.resolved = ts
		}
	}

	var out []*tidestreamv1.RawKVEvent
	keep := func(r *cdcpb.Event_Row, commitTs uint64) {
		if commitTs <= from || commitTs > to {
			return
		}
		op := tidestreamv1.OpType_OP_TYPE_PUT
		if r.GetOpType() == cdcpb.Event_Row_DELETE {
			op = tidestreamv1.OpType_OP_TYPE_DELETE
		}
		out = append(out, &tidestreamv1.RawKVEvent{
			Key: r.GetKey(), Value: r.GetValue(), OldValue: r.GetOldValue(),
			Op: op, StartTs: r.GetStartTs(), CommitTs: commitTs,
		})
	}
	prewrites := map[txnKey]*cdcpb.Event_Row{}
	early := map[txnKey]uint64{} // COMMITs that overtook their PREWRITE
	for !done() {
		msg, err := stream.Recv()
		if err != nil {
			return nil, stats, fmt.Errorf("receive: %w", err)
		}
		for _, ev := range msg.GetEvents() {
			if e := ev.GetError(); e != nil {
				return nil, stats, fmt.Errorf("region %d error: %v", ev.GetRegionId(), e)
			}
			if ts := ev.GetResolvedTs(); ts != 0 {
				resolve(ev.GetRegionId(), ts)
			}
			for _, r := range ev.GetEntries().GetEntries() {
				k := txnKey{string(r.GetKey()), r.GetStartTs()}
				switch r.GetType() {
				case cdcpb.Event_COMMITTED:
					stats.scanned++
					keep(r, r.GetCommitTs())
				case cdcpb.Event_PREWRITE:
					if c, ok := early[k]; ok {
						delete(early, k)
						stats.matched++
						keep(r, c)
						continue
					}
					prewrites[k] = r
				case cdcpb.Event_COMMIT:
					if pw, ok := prewrites[k]; ok {
						delete(prewrites, k)
						stats.matched++
						keep(pw, r.GetCommitTs())
						continue
					}
					early[k] = r.GetCommitTs()
				case cdcpb.Event_ROLLBACK:
					delete(prewrites, k)
				case cdcpb.Event_INITIALIZED:
					if rg := regions[ev.GetRegionId()]; rg != nil {
						rg.initialized = true
					}
				}
			}
		}
		if rts := msg.GetResolvedTs(); rts != nil {
			for _, id := range rts.GetRegions() {
				resolve(id, rts.GetTs())
			}
		}
	}
	for k, c := range early {
		if c <= to {
			return nil, stats, fmt.Errorf("COMMIT of %x at %d without its PREWRITE by the resolved ts", k.key, c)
		}
	}
	_ = stream.CloseSend()
	slices.SortStableFunc(out, func(a, b *tidestreamv1.RawKVEvent) int {
		return cmp.Or(cmp.Compare(a.CommitTs, b.CommitTs), cmp.Compare(a.StartTs, b.StartTs), bytes.Compare(a.Key, b.Key))
	})
	return out, stats, nil
}
