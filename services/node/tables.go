package node

import (
	"context"
	"fmt"
	"sync"

	"github.com/tikv/client-go/v2/config"

	"github.com/tidestream/tidestream/coordinator/control"
	"github.com/tidestream/tidestream/encoder/schema"
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
func (u *upstreamTables) Close() { u.reads.Wait() }

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
	st, err := schema.OpenStore(ctx, pdAddrs, config.Security{})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	snap, err := schema.LoadSnapshot(ctx, st, ts, 0)
	if err != nil {
		return nil, err
	}
	h, err := schema.New(snap, schema.Options{Filter: match})
	if err != nil {
		return nil, err
	}
	versions, err := h.Tables(ts)
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
