package tablefilter

import "strings"

// systemSchemas are schemas that no changefeed may replicate, whatever its
// rules say. The list is TiDB's own system schemas (mysql, sys and the
// memory-only *_schema databases, plus DM's heartbeat schema), plus the
// schemas written by tools sharing the cluster: TiDB Lightning's task
// bookkeeping, TiCDC's syncpoint/heartbeat schema and TiDB's workload
// repository. Replicating them would leak credentials (mysql.user) or loop
// tool state back into the sink. Keys are lower case.
var systemSchemas = map[string]struct{}{
	"mysql":               {},
	"sys":                 {},
	"information_schema":  {},
	"performance_schema":  {},
	"metrics_schema":      {},
	"inspection_schema":   {},
	"dm_heartbeat":        {},
	"lightning_task_info": {},
	"tidb_cdc":            {},
	"workload_schema":     {},
}

// brTemporaryPrefix marks the schemas BR restores system tables into before
// swapping them in (e.g. __TiDB_BR_Temporary_mysql); they hold copies of
// system tables and must be excluded like the originals.
const brTemporaryPrefix = "__tidb_br_temporary_"

// IsSystemSchema reports whether schema is a system schema that changefeeds
// always exclude. The comparison is case-insensitive because TiDB schema names
// are.
func IsSystemSchema(schema string) bool {
	lower := strings.ToLower(schema)
	if _, ok := systemSchemas[lower]; ok {
		return true
	}
	return strings.HasPrefix(lower, brTemporaryPrefix)
}

// Replicable reports whether a changefeed with filter f replicates
// schema.table: the table is not in a system schema and f accepts it.
func Replicable(f *Filter, schema, table string) bool {
	return !IsSystemSchema(schema) && f.Match(schema, table)
}
