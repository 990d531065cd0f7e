package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/pingcap/tidb/pkg/meta/model"
	"github.com/pingcap/tidb/pkg/tablecodec"
	"github.com/pingcap/tidb/pkg/util/codec"
	"github.com/tikv/client-go/v2/config"

	"github.com/tidestream/tidestream/coordinator/control"
	"github.com/tidestream/tidestream/coordinator/scheduler"
	"github.com/tidestream/tidestream/coordinator/store"
	"github.com/tidestream/tidestream/encoder/schema"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// upstreamTables is the coordinator role's schema reader for the table
// eligibility check at create. Each read opens its own client-go store and
// closes it: creates are rare, and a store kept per upstream would hold
// TiKV connections for clusters the coordinator otherwise only reaches
// through PD.
type upstreamTables struct {
	// reads tracks reads still running after their request gave up on
	// them (see list); Close waits for them.
	reads sync.WaitGroup

	// stores are the owner's connections to the upstreams of running
	// changefeeds, kept: it reads their schema version every round.
	mu     sync.Mutex
	stores map[string]*schema.Store
	closed bool
}

// list implements control.IneligibleTableLister.
func (u *upstreamTables) list(ctx context.Context, pdAddrs []string, ts uint64, f control.TableFilter) ([]control.TableName, error) {
	match, err := tableFilter(f)
	if err != nil {
		return nil, err
	}
	type result struct {
		tables []control.TableName
		err    error
	}
	done := make(chan result, 1)
	// TiDB's meta reader calls client-go with context.TODO, so a read of a
	// TiKV that does not answer would only end with client-go's backoff
	// (20 s for each call). Run aside, the read cannot hold the request past
	// its deadline; it still ends soon after, since the request's context,
	// cancelled when the handler returns, stops everything that honours it.
	u.reads.Go(func() {
		tables, err := readIneligible(ctx, pdAddrs, ts, match)
		done <- result{tables, err}
	})
	select {
	case r := <-done:
		return r.tables, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close waits for reads left running by requests that ended.
func (u *upstreamTables) Close() {
	u.reads.Wait()
	u.mu.Lock()
	defer u.mu.Unlock()
	u.closed = true
	for _, st := range u.stores {
		_ = st.Close()
	}
	u.stores = nil
}

// store returns the kept connection to an upstream, opening it once.
func (u *upstreamTables) store(ctx context.Context, pdAddrs []string) (*schema.Store, error) {
	key := strings.Join(pdAddrs, ",")
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil, errors.New("upstream reader closed")
	}
	if st := u.stores[key]; st != nil {
		return st, nil
	}
	st, err := schema.OpenStore(ctx, pdAddrs, config.Security{})
	if err != nil {
		return nil, err
	}
	if u.stores == nil {
		u.stores = map[string]*schema.Store{}
	}
	u.stores[key] = st
	return st, nil
}

// schemaVersion implements scheduler.SchemaVersion.
func (u *upstreamTables) schemaVersion(ctx context.Context, cf *store.Changefeed) (uint64, int64, error) {
	st, err := u.store(ctx, cf.Info.GetPdAddrs())
	if err != nil {
		return 0, 0, err
	}
	ts, err := st.CurrentTS(ctx)
	if err != nil {
		return 0, 0, err
	}
	ver, err := schema.VersionAt(st, ts)
	return ts, ver, err
}

// tableFilter is the changefeed's filter as the encoder builds it
// (schema.NewFilter), so the tables the check lists are the tables the
// encoder would find ineligible.
func tableFilter(f control.TableFilter) (schema.Filter, error) {
	match, err := schema.NewFilter(f.Rules, f.CaseSensitive)
	if err != nil {
		return nil, fmt.Errorf("filter.rules: %w", err)
	}
	return match, nil
}

// readIneligible reads the schema at ts and keeps the tables match selects
// that have no handle key. The other reasons a table is not replicated
// (view, sequence, temporary, system schema, filtered) are not the user's
// to agree to.
func readIneligible(ctx context.Context, pdAddrs []string, ts uint64, match schema.Filter) ([]control.TableName, error) {
	versions, err := readTables(ctx, pdAddrs, ts, match)
	if err != nil {
		return nil, err
	}
	var out []control.TableName
	for _, v := range versions {
		if v.Eligibility == schema.NoHandleKey {
			out = append(out, control.TableName{Schema: v.Table.Schema, Table: v.Table.Name})
		}
	}
	return out, nil
}

// readTables reads the live tables at ts, classified under match, over a
// connection of its own.
func readTables(ctx context.Context, pdAddrs []string, ts uint64, match schema.Filter) ([]*schema.Version, error) {
	st, err := schema.OpenStore(ctx, pdAddrs, config.Security{})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return tablesAt(ctx, st, ts, match)
}

// tablesAt reads the live tables at ts through st, classified under match.
func tablesAt(ctx context.Context, st *schema.Store, ts uint64, match schema.Filter) ([]*schema.Version, error) {
	snap, err := schema.LoadSnapshot(ctx, st, ts, 0)
	if err != nil {
		return nil, err
	}
	h, err := schema.New(snap, schema.Options{Filter: match})
	if err != nil {
		return nil, err
	}
	return h.Tables(ts)
}

// pipelines implements scheduler.TableLister: the changefeed's eligible
// tables at ts, one pipeline each. A partitioned table is one pipeline
// over all its partitions' spans, not one per partition: a change's key
// keeps its partition only until the row moves between partitions (an
// update of the partition column is a delete in one and an insert in
// another), and only one pipeline orders both.
func (u *upstreamTables) pipelines(ctx context.Context, cf *store.Changefeed, ts uint64) ([]scheduler.Table, error) {
	cfg := cf.Info.GetConfig()
	match, err := tableFilter(control.TableFilter{Rules: cfg.GetFilter().GetRules(), CaseSensitive: cfg.GetCaseSensitive()})
	if err != nil {
		return nil, err
	}
	type result struct {
		versions []*schema.Version
		err      error
	}
	done := make(chan result, 1)
	st, err := u.store(ctx, cf.Info.GetPdAddrs())
	if err != nil {
		return nil, err
	}
	u.reads.Go(func() { // aside, as in list
		vs, err := tablesAt(ctx, st, ts, match)
		done <- result{vs, err}
	})
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if r.err != nil {
		return nil, r.err
	}
	out := make([]scheduler.Table, 0, len(r.versions))
	for _, v := range r.versions {
		switch v.Eligibility {
		case schema.Eligible:
			out = append(out, pipelineTable(v.Table.Schema, v.Table.Info))
		case schema.NoHandleKey:
			out = append(out, scheduler.Table{ID: v.Table.Info.ID, Schema: v.Table.Schema, Name: v.Table.Info.Name.O,
				Ineligible: noHandleKey})
		}
	}
	return out, nil
}

// noHandleKey is why a table without a key is not replicated.
const noHandleKey = "it has no primary key and no NOT NULL unique key, so its rows have no Kafka key"

// between implements scheduler.Config.TablesBetween from TiDB's DDL
// history.
func (u *upstreamTables) between(ctx context.Context, cf *store.Changefeed, from, to uint64) ([]scheduler.Table, error) {
	cfg := cf.Info.GetConfig()
	match, err := tableFilter(control.TableFilter{Rules: cfg.GetFilter().GetRules(), CaseSensitive: cfg.GetCaseSensitive()})
	if err != nil {
		return nil, err
	}
	st, err := u.store(ctx, cf.Info.GetPdAddrs())
	if err != nil {
		return nil, err
	}
	jts, err := schema.JobTablesBetween(st, from, to, match)
	if err != nil {
		return nil, err
	}
	var out []scheduler.Table
	for _, jt := range jts {
		if jt.Eligibility == schema.Eligible {
			out = append(out, pipelineTable(jt.Schema, jt.Info))
		}
	}
	return out, nil
}

// pipelineTable is a table's pipeline: its logical id and record spans,
// one per partition for a partitioned table, whose rows carry partition
// ids.
func pipelineTable(schemaName string, info *model.TableInfo) scheduler.Table {
	ids := schema.PhysicalIDs(info)
	if len(ids) > 1 {
		ids = ids[1:]
	}
	t := scheduler.Table{ID: info.ID, Schema: schemaName, Name: info.Name.O, Splittable: splittable(info), Physical: ids}
	for _, id := range ids {
		t.Spans = append(t.Spans, recordSpan(id))
	}
	return t
}

// splittable says whether the owner may run the table in key-range pieces
// (scheduler/split.go): a key must never leave its piece. Kafka keys are
// the primary key, so it must be the row handle, and the table one span
// (not partitioned). As TiCDC, a table with another unique key is not
// split either: two rows trading a unique value in two pieces could reach
// a downstream that enforces it in the wrong order.
func splittable(info *model.TableInfo) bool {
	if info.Partition != nil || !info.PKIsHandle && !info.IsCommonHandle {
		return false
	}
	for _, idx := range info.Indices {
		if idx.Unique && !idx.Primary {
			return false
		}
	}
	return true
}

// recordSpan is a physical table's record span in the encoded key space of
// SubscribeRequest spans.
func recordSpan(id int64) *tidestreamv1.Span {
	prefix := tablecodec.GenTableRecordPrefix(id)
	return &tidestreamv1.Span{StartKey: codec.EncodeBytes(nil, prefix), EndKey: codec.EncodeBytes(nil, prefix.PrefixNext())}
}

// regions implements scheduler.RegionLister: PD's regions of each span.
func (u *upstreamTables) regions(ctx context.Context, cf *store.Changefeed, spans []*tidestreamv1.Span) ([][]*tidestreamv1.Span, error) {
	st, err := u.store(ctx, cf.Info.GetPdAddrs())
	if err != nil {
		return nil, err
	}
	// Spans arrive in SubscribeRequest's encoding; the region cache takes
	// raw keys. Sorted for the scan, answered in the caller's order.
	order := make([]int, len(spans))
	ranges := make([]schema.KeyRange, len(spans))
	for i, sp := range spans {
		order[i] = i
		if ranges[i], err = rawRange(sp); err != nil {
			return nil, err
		}
	}
	slices.SortFunc(order, func(a, b int) int { return bytes.Compare(ranges[a].Start, ranges[b].Start) })
	sorted := make([]schema.KeyRange, len(spans))
	for i, j := range order {
		sorted[i] = ranges[j]
	}
	got, err := st.Regions(ctx, sorted)
	if err != nil {
		return nil, err
	}
	out := make([][]*tidestreamv1.Span, len(spans))
	for i, j := range order {
		for _, r := range got[i] {
			sp := &tidestreamv1.Span{StartKey: codec.EncodeBytes(nil, r.Start)}
			if len(r.End) > 0 {
				sp.EndKey = codec.EncodeBytes(nil, r.End)
			}
			out[j] = append(out[j], sp)
		}
	}
	return out, nil
}

// rawRange decodes a span's memcomparable-encoded keys.
func rawRange(sp *tidestreamv1.Span) (schema.KeyRange, error) {
	var r schema.KeyRange
	var err error
	if _, r.Start, err = codec.DecodeBytes(sp.GetStartKey(), nil); err != nil {
		return r, fmt.Errorf("span start key %x: %w", sp.GetStartKey(), err)
	}
	if len(sp.GetEndKey()) > 0 {
		if _, r.End, err = codec.DecodeBytes(sp.GetEndKey(), nil); err != nil {
			return r, fmt.Errorf("span end key %x: %w", sp.GetEndKey(), err)
		}
	}
	return r, nil
}
