package control

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// TableName is an upstream table, as TiDB spells its names.
type TableName struct{ Schema, Table string }

func (n TableName) String() string { return n.Schema + "." + n.Table }

// TableFilter is the part of a changefeed's configuration that decides which
// tables it selects: `[filter] rules` and `case-sensitive`.
type TableFilter struct {
	// Rules are TiDB table-filter rules; none selects every table.
	Rules         []string
	CaseSensitive bool
}

// IneligibleTableLister reads the upstream's schema at ts and returns the
// tables filter selects that cannot be replicated because they have neither
// a primary key nor a NOT NULL unique key. Views, sequences, temporary
// tables, system schemas and filtered-out tables are not in the list: they
// are not replicated whatever the user answers. The read must end when ctx
// does.
type IneligibleTableLister func(ctx context.Context, pdAddrs []string, ts uint64, filter TableFilter) ([]TableName, error)

func filterOf(cfg *pb.ReplicaConfig) TableFilter {
	return TableFilter{Rules: cfg.GetFilter().GetRules(), CaseSensitive: cfg.GetCaseSensitive()}
}

// checkEligibility refuses a changefeed that would select tables it cannot
// replicate, unless the request (or its config's ignore-ineligible-table)
// agreed to ignore them. TiCDC checks the same thing at create; doing it here
// rather than in the CLI means every client gets it.
//
// With ignore set the list is only logged, so failing to read it is logged
// too rather than refusing: the answer would not change the outcome.
// Without it, a read failure refuses the create as unavailable: skipping the
// check would create a changefeed that silently drops tables.
func (s *ChangefeedServer) checkEligibility(ctx context.Context, ns, id string, pdAddrs []string, startTS uint64, cfg *pb.ReplicaConfig) error {
	ignore := cfg.GetIgnoreIneligibleTable()
	tables, err := s.cfg.IneligibleTables(ctx, pdAddrs, startTS, filterOf(cfg))
	if err != nil {
		err = fmt.Errorf("check table eligibility: read the schema of upstream %s at start-ts %d: %w", strings.Join(pdAddrs, ","), startTS, err)
		if ignore {
			s.log.Warn("ineligible tables not listed; the changefeed ignores them anyway", "namespace", ns, "changefeed", id, "err", err)
			return nil
		}
		if ctx.Err() != nil {
			return err // the caller's deadline, reported as such
		}
		return fmt.Errorf("%w: %w", err, cdcerr.ErrUnavailable)
	}
	if len(tables) == 0 {
		return nil
	}
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = t.String()
	}
	slices.Sort(names)
	names = slices.Compact(names)
	if ignore {
		s.log.Warn("changefeed ignores ineligible tables (no primary key and no not-null unique key)", "namespace", ns, "changefeed", id, "tables", names)
		return nil
	}
	return &cdcerr.IneligibleTablesError{Tables: names}
}
