package schema

import (
	"fmt"
	"strings"

	"github.com/pingcap/tidb/pkg/meta/model"
	"github.com/pingcap/tidb/pkg/util/filter"
	tablefilter "github.com/pingcap/tidb/pkg/util/table-filter"
	"github.com/tidestream/tidestream/encoder/row"
)

// Eligibility says whether a table version's rows are replicated, and if
// not, why. It is data rather than a log line so the owner can start or stop
// spans when a DDL changes it and tests can assert it.
type Eligibility uint8

// Eligibility values. Only Eligible tables get data spans.
const (
	Eligible Eligibility = iota
	// NoHandleKey: no primary key and no NOT NULL unique key, so there is
	// no Avro record key (spec §5; force-replicate is not supported).
	NoHandleKey
	// View: metadata only, views have no rows.
	View
	// Sequence: sequences are never replicated.
	Sequence
	// Temporary: global temporary tables keep their rows in transaction
	// memory, never in TiKV.
	Temporary
	// SystemSchema: mysql, INFORMATION_SCHEMA, … and the tools' own schemas.
	SystemSchema
	// Filtered: the changefeed's table filter rejects the table.
	Filtered
)

func (e Eligibility) String() string {
	switch e {
	case Eligible:
		return "eligible"
	case NoHandleKey:
		return "no handle key"
	case View:
		return "view"
	case Sequence:
		return "sequence"
	case Temporary:
		return "temporary table"
	case SystemSchema:
		return "system schema"
	case Filtered:
		return "filtered"
	}
	return fmt.Sprintf("eligibility(%d)", uint8(e))
}

// Filter reports whether the changefeed replicates table schema.table (names
// as TiDB spells them). A nil Filter accepts every table.
type Filter func(schema, table string) bool

// NewFilter is a changefeed's table filter: its `[filter] rules` in TiDB's
// table-filter syntax, as TiCDC applies them, case-insensitive unless the
// changefeed is case-sensitive. No rules give a nil Filter. The encoder and
// the coordinator's create-time check both build it here, so they never
// disagree on which tables a changefeed has.
func NewFilter(rules []string, caseSensitive bool) (Filter, error) {
	if len(rules) == 0 {
		return nil, nil
	}
	f, err := tablefilter.Parse(rules)
	if err != nil {
		return nil, err
	}
	if !caseSensitive {
		f = tablefilter.CaseInsensitive(f)
	}
	return f.MatchTable, nil
}

// IsSystemSchema reports whether schema is excluded from the snapshot, the
// DDL stream and the row path: TiDB's own system schemas plus the schemas
// TiCDC and Lightning keep their state in (spec §5).
func IsSystemSchema(schema string) bool {
	if filter.IsSystemSchema(schema) {
		return true
	}
	switch strings.ToLower(schema) {
	case "tidb_cdc", "lightning_task_info", "workload_schema":
		return true
	}
	return false
}

// classify decides eligibility. The order matters only for which reason is
// reported when several apply; the structural reasons come first because
// no filter change can make them eligible.
func classify(schema string, info *model.TableInfo, t *row.Table, f Filter) Eligibility {
	switch {
	case IsSystemSchema(schema):
		return SystemSchema
	case info.IsSequence():
		return Sequence
	case info.IsView():
		return View
	case info.TempTableType != model.TempTableNone:
		return Temporary
	case f != nil && !f(schema, info.Name.O):
		return Filtered
	case !t.Eligible():
		return NoHandleKey
	}
	return Eligible
}
