package dispatch

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	filter "github.com/pingcap/tidb/pkg/util/table-filter"
	v1 "github.com/tidestream/tidestream/proto/tidestream/v1"

	"github.com/tidestream/tidestream/encoder/row"
)

// Partitioner names a partition algorithm of spec §7.5.
type Partitioner int

// Partitioners. Default is Table: TiCDC made "default" the table
// dispatcher when it retired old-value-dependent behaviour, and Avro
// changefeeds have no old value to hash anyway.
const (
	Default Partitioner = iota
	Table
	TS
	IndexValue
	Columns
)

var partitionerNames = [...]string{Default: "default", Table: "table", TS: "ts", IndexValue: "index-value", Columns: "columns"}

// String returns the rule spelling of p.
func (p Partitioner) String() string {
	if p >= 0 && int(p) < len(partitionerNames) {
		return partitionerNames[p]
	}
	return fmt.Sprintf("Partitioner(%d)", int(p))
}

// ParsePartitioner reads a rule's partition value. It is case-insensitive;
// "" is default and the legacy "rowid" is index-value, as in TiCDC.
//
// Unlike TiCDC, which falls back to the default partitioner with a warning,
// an unknown value is an error: a typo would otherwise silently give up
// per-key ordering, and a bad request must fail at create time.
func ParsePartitioner(s string) (Partitioner, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "default":
		return Default, nil
	case "table":
		return Table, nil
	case "ts":
		return TS, nil
	case "index-value", "rowid":
		return IndexValue, nil
	case "columns":
		return Columns, nil
	}
	return 0, fmt.Errorf("%w: partition %q: want default, table, ts, index-value or columns", ErrInvalidRule, s)
}

// Config is what a Router is built from, all taken from the changefeed.
type Config struct {
	// Rules are the [sink] dispatchers, in order; the first whose matcher
	// selects a table wins. An implicit last rule sends every other table to
	// DefaultTopic with the default partitioner.
	Rules []*v1.DispatchRule
	// DefaultTopic is the sink URI's topic (see DefaultTopic).
	DefaultTopic string
	// CaseSensitive is the changefeed's case-sensitive: when false (the
	// default) matchers compare names case-insensitively.
	CaseSensitive bool
}

// TableName is a table's database and logical name as TiDB spells them.
type TableName struct{ Schema, Table string }

// String returns schema.table.
func (n TableName) String() string { return n.Schema + "." + n.Table }

// rule is one parsed dispatcher rule.
type rule struct {
	pos     int // 1-based position in Config.Rules; 0 for the implicit rule
	matcher filter.Filter
	// topic is nil for "use the default topic".
	topic   *Topic
	part    Partitioner
	index   string
	columns []string
	// single is set when the matcher can select only this one table.
	single *TableName
}

func (r *rule) String() string {
	if r.pos == 0 {
		return "the implicit default rule"
	}
	return fmt.Sprintf("dispatcher rule %d", r.pos)
}

// Router routes the rows of one changefeed. It is safe for concurrent use.
type Router struct {
	defaultTopic string
	rules        []*rule

	mu sync.Mutex
	// plans caches the resolved route of the newest seen version of each
	// table id; older versions are recomputed, which only happens for rows
	// straddling a DDL.
	plans map[int64]*Plan
	// owners is the one-table-per-topic guard: which table each routed
	// topic belongs to.
	owners map[string]TableName
}

// NewRouter parses and validates cfg. Beyond TiCDC's own checks it refuses
// rules that would put more than one table on a topic, which Avro's
// TopicNameStrategy subjects cannot represent (spec §7.4): a rule without a
// topic or with a literal topic must match exactly one table (a single
// plain "schema.table" pattern), and no two such rules may share a topic.
// What only the table list can show (two names substituting to one topic, or
// tables reaching the implicit default rule) is left to CheckTables and to
// the guard in Route.
func NewRouter(cfg Config) (*Router, error) {
	if err := ValidateTopicName(cfg.DefaultTopic); err != nil {
		return nil, fmt.Errorf("default topic: %w", err)
	}
	r := &Router{
		defaultTopic: cfg.DefaultTopic,
		plans:        make(map[int64]*Plan),
		owners:       make(map[string]TableName),
	}
	fixed := make(map[string]*rule) // static topic -> the rule whose one table owns it
	for i, pr := range cfg.Rules {
		if pr == nil {
			return nil, fmt.Errorf("%w: dispatcher rule %d is empty", ErrInvalidRule, i+1)
		}
		ru, err := parseRule(i+1, pr, cfg.CaseSensitive)
		if err != nil {
			return nil, err
		}
		if ru.topic == nil || ru.topic.Literal() {
			static := cfg.DefaultTopic
			if ru.topic != nil {
				static = ru.topic.String()
			}
			if ru.single == nil {
				return nil, fmt.Errorf("%w: %s (matcher %q) sends every table it matches to topic %q; "+
					"Avro needs one table per topic: use a topic like \"tidb_{schema}_{table}\" or match one table",
					ErrInvalidRule, ru, pr.GetMatcher(), static)
			}
			if prev, ok := fixed[static]; ok && !sameTable(*prev.single, *ru.single, cfg.CaseSensitive) {
				return nil, fmt.Errorf("%w: %s and %s both send a table to topic %q (%s and %s); Avro needs one table per topic",
					ErrInvalidRule, prev, ru, static, prev.single, ru.single)
			}
			fixed[static] = ru
		}
		r.rules = append(r.rules, ru)
	}
	r.rules = append(r.rules, &rule{matcher: filter.All(), part: Default})
	return r, nil
}

func sameTable(a, b TableName, caseSensitive bool) bool {
	if caseSensitive {
		return a == b
	}
	return strings.EqualFold(a.Schema, b.Schema) && strings.EqualFold(a.Table, b.Table)
}

func parseRule(pos int, pr *v1.DispatchRule, caseSensitive bool) (*rule, error) {
	ru := &rule{pos: pos}
	var patterns []string
	for _, m := range pr.GetMatcher() {
		m = strings.Trim(m, " \t")
		if m == "" || m[0] == '#' {
			continue
		}
		if m[0] == '@' {
			// Importing a file is a CLI convenience; an encoder must not
			// read files named by a changefeed.
			return nil, fmt.Errorf("%w: dispatcher rule %d: matcher %q imports a file; expand it in the CLI", ErrInvalidRule, pos, m)
		}
		patterns = append(patterns, m)
	}
	if len(patterns) == 0 {
		return nil, fmt.Errorf("%w: dispatcher rule %d has no matcher", ErrInvalidRule, pos)
	}
	f, err := filter.Parse(patterns)
	if err != nil {
		return nil, fmt.Errorf("%w: dispatcher rule %d: matcher %q: %v", ErrInvalidRule, pos, patterns, err)
	}
	if !caseSensitive {
		f = filter.CaseInsensitive(f)
	}
	ru.matcher = f
	if len(patterns) == 1 {
		ru.single = plainTable(patterns[0])
	}
	if t := pr.GetTopic(); t != "" {
		topic, err := ParseTopic(t)
		if err != nil {
			return nil, fmt.Errorf("dispatcher rule %d: %w", pos, err)
		}
		if err := topic.ValidateAvro(); err != nil {
			return nil, fmt.Errorf("dispatcher rule %d: %w", pos, err)
		}
		ru.topic = &topic
	}
	if ru.part, err = ParsePartitioner(pr.GetPartition()); err != nil {
		return nil, fmt.Errorf("dispatcher rule %d: %w", pos, err)
	}
	// TiCDC ignores index / columns given with another partitioner; we
	// refuse them, as they show the rule does not do what its author meant.
	ru.index = strings.TrimSpace(pr.GetIndex())
	if ru.index != "" && ru.part != IndexValue {
		return nil, fmt.Errorf("%w: dispatcher rule %d: index %q needs partition = \"index-value\", not %q",
			ErrInvalidRule, pos, ru.index, ru.part)
	}
	for _, c := range pr.GetColumns() {
		if c = strings.TrimSpace(c); c == "" {
			return nil, fmt.Errorf("%w: dispatcher rule %d: empty column name", ErrInvalidRule, pos)
		}
		ru.columns = append(ru.columns, c)
	}
	switch {
	case ru.part == Columns && len(ru.columns) == 0:
		return nil, fmt.Errorf("%w: dispatcher rule %d: partition = \"columns\" needs columns", ErrInvalidRule, pos)
	case ru.part != Columns && len(ru.columns) > 0:
		return nil, fmt.Errorf("%w: dispatcher rule %d: columns need partition = \"columns\", not %q", ErrInvalidRule, pos, ru.part)
	}
	return ru, nil
}

// plainTable returns the one table a table-filter pattern can match when it
// is a plain "schema.table" without wildcards, regular expressions,
// quoting, escapes or negation; nil otherwise. It is deliberately
// conservative: a pattern it does not understand counts as matching many.
func plainTable(p string) *TableName {
	if strings.ContainsAny(p, "*?[]/\\!\"`@# \t") {
		return nil
	}
	schema, table, ok := strings.Cut(p, ".")
	if !ok || schema == "" || table == "" || strings.Contains(table, ".") {
		return nil
	}
	return &TableName{Schema: schema, Table: table}
}

func (r *Router) match(schema, table string) *rule {
	for _, ru := range r.rules {
		if ru.matcher.MatchTable(schema, table) {
			return ru
		}
	}
	// Unreachable: the implicit rule matches everything.
	return r.rules[len(r.rules)-1]
}

// Topic returns the topic of a table.
func (r *Router) Topic(schema, table string) string {
	return r.topicOf(r.match(schema, table), schema, table)
}

func (r *Router) topicOf(ru *rule, schema, table string) string {
	if ru.topic == nil {
		return r.defaultTopic
	}
	return ru.topic.Substitute(schema, table)
}

// CheckTables reports every topic that two of the given tables would share
// (Avro's one table per topic, spec §7.4). The coordinator runs it over the
// changefeed's tables at create time and again when a table appears (CREATE,
// RENAME, RECOVER), because an encoder only sees its own tables and its guard
// cannot catch two tables placed on different encoders.
func (r *Router) CheckTables(tables []TableName) error {
	owners := make(map[string]TableName, len(tables))
	var clashes []string
	for _, t := range tables {
		topic := r.Topic(t.Schema, t.Table)
		if prev, ok := owners[topic]; ok && prev != t {
			clashes = append(clashes, fmt.Sprintf("%s and %s on topic %q", prev, t, topic))
			continue
		}
		owners[topic] = t
	}
	if len(clashes) > 0 {
		return fmt.Errorf("%w: %s; give each table its own topic (e.g. topic = \"tidb_{schema}_{table}\")",
			ErrTopicConflict, strings.Join(clashes, "; "))
	}
	return nil
}

// Plan is the route of one version of one table: its topic and how its rows
// are hashed. Plans are immutable.
type Plan struct {
	Topic       string
	Partitioner Partitioner
	table       *row.Table
	// tableHash is the CRC-32 of schema ‖ table, the starting state of every
	// hash but ts.
	tableHash xorHash
	// cols are the hashed columns (indexes into table.Columns) for
	// index-value and columns.
	cols []int
}

// Plan resolves the route of t, checks that its topic is not another
// table's, and caches it for the table's newest version. A named index or a
// column the rule needs but the table version lacks is an error naming the
// table and rule: TiCDC checks the index at start and fails the changefeed.
func (r *Router) Plan(t *row.Table) (*Plan, error) {
	if t == nil {
		return nil, fmt.Errorf("%w: nil table", ErrRow)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := r.plans[t.ID]; ok && p.table.Version == t.Version {
		return p, nil
	}
	ru := r.match(t.Schema, t.Name)
	p := &Plan{Topic: r.topicOf(ru, t.Schema, t.Name), Partitioner: ru.part, table: t}
	p.tableHash.write(t.Schema, t.Name)
	name := TableName{Schema: t.Schema, Table: t.Name}
	if owner, ok := r.owners[p.Topic]; ok && owner != name {
		return nil, fmt.Errorf("%w: %s and %s both route to topic %q by %s", ErrTopicConflict, owner, name, p.Topic, ru)
	}
	switch ru.part {
	case IndexValue:
		cols, err := indexColumns(t, ru)
		if err != nil {
			return nil, err
		}
		p.cols = cols
	case Columns:
		cols, err := namedColumns(t, ru)
		if err != nil {
			return nil, err
		}
		p.cols = cols
	}
	r.owners[p.Topic] = name
	if old, ok := r.plans[t.ID]; !ok || old.table.Version <= t.Version {
		r.plans[t.ID] = p
	}
	return p, nil
}

// indexColumns picks the hashed columns of index-value: the handle key, or
// the named index, which must be UNIQUE as TiCDC requires (it checks at
// start; we check when the table's version is first routed). The index's
// columns are looked up by name, not by offset, which avoids TiCDC's
// virtual-column offset bug (spec §7.5).
func indexColumns(t *row.Table, ru *rule) ([]int, error) {
	if ru.index == "" {
		return slices.Clone(t.Key), nil
	}
	if t.Info == nil {
		return nil, fmt.Errorf("%w: %s.%s: no table info to find index %q", ErrInvalidRule, t.Schema, t.Name, ru.index)
	}
	if t.Info.PKIsHandle && strings.EqualFold(ru.index, "PRIMARY") {
		// An integer primary key is the row handle and has no entry in
		// Indices; it is still the unique index named PRIMARY.
		if pk := t.Info.GetPkColInfo(); pk != nil {
			if i := columnIndex(t, pk.Name.O); i >= 0 {
				return []int{i}, nil
			}
		}
	}
	for _, idx := range t.Info.Indices {
		// Index names are case-insensitive in TiDB.
		if !strings.EqualFold(idx.Name.O, ru.index) {
			continue
		}
		if !idx.Unique && !idx.Primary {
			return nil, fmt.Errorf("%w: %s: index %q of %s.%s is not unique", ErrInvalidRule, ru, ru.index, t.Schema, t.Name)
		}
		cols := make([]int, 0, len(idx.Columns))
		for _, ic := range idx.Columns {
			i := columnIndex(t, ic.Name.O)
			if i < 0 {
				return nil, fmt.Errorf("%w: %s: index %q of %s.%s uses column %q, which a change does not carry (virtual or hidden)",
					ErrInvalidRule, ru, ru.index, t.Schema, t.Name, ic.Name.O)
			}
			cols = append(cols, i)
		}
		return cols, nil
	}
	return nil, fmt.Errorf("%w: %s: table %s.%s has no index %q", ErrInvalidRule, ru, t.Schema, t.Name, ru.index)
}

func namedColumns(t *row.Table, ru *rule) ([]int, error) {
	cols := make([]int, 0, len(ru.columns))
	var missing []string
	for _, name := range ru.columns {
		i := columnIndex(t, name)
		if i < 0 {
			missing = append(missing, name)
			continue
		}
		cols = append(cols, i)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: %s: table %s.%s has no column %q", ErrInvalidRule, ru, t.Schema, t.Name, missing)
	}
	return cols, nil
}

// columnIndex finds a column among those a change carries; column names are
// case-insensitive in TiDB.
func columnIndex(t *row.Table, name string) int {
	for i, c := range t.Columns {
		if strings.EqualFold(c.Name.O, name) {
			return i
		}
	}
	return -1
}

// Hash returns the partition hash of a row of the plan's table version; the
// producer places the record in Hash % partitions.
//
//   - default, table: CRC-32(schema ‖ table);
//   - ts: the commit ts;
//   - index-value, columns: CRC-32(schema ‖ table) XOR, for each hashed
//     column, CRC-32(name ‖ ValueString(value)), over the key image (the
//     after image, the before image of a delete). The name is the column's
//     own spelling, whatever case the rule used.
func (p *Plan) Hash(rw *row.Row) (uint64, error) {
	switch p.Partitioner {
	case TS:
		return rw.CommitTs, nil
	case IndexValue, Columns:
	default:
		return uint64(p.tableHash), nil
	}
	if rw.Table != nil && (rw.Table.ID != p.table.ID || rw.Table.Version != p.table.Version) {
		return 0, fmt.Errorf("%w: row of table %d version %d hashed with the plan of table %d version %d",
			ErrRow, rw.Table.ID, rw.Table.Version, p.table.ID, p.table.Version)
	}
	img := rw.KeyImage()
	if len(img) != len(p.table.Columns) {
		return 0, fmt.Errorf("%w: %s of %s.%s has %d values for %d columns", ErrRow, rw.Op,
			p.table.Schema, p.table.Name, len(img), len(p.table.Columns))
	}
	h := p.tableHash
	for _, i := range p.cols {
		col := p.table.Columns[i]
		s, err := ValueString(&img[i], col)
		if err != nil {
			return 0, fmt.Errorf("%s.%s: %w", p.table.Schema, p.table.Name, err)
		}
		h.write(col.Name.O, s)
	}
	return uint64(h), nil
}

// Route returns the topic and partition hash of a row.
func (r *Router) Route(rw *row.Row) (topic string, hash uint64, err error) {
	if rw == nil {
		return "", 0, fmt.Errorf("%w: nil row", ErrRow)
	}
	p, err := r.Plan(rw.Table)
	if err != nil {
		return "", 0, err
	}
	hash, err = p.Hash(rw)
	if err != nil {
		return "", 0, err
	}
	return p.Topic, hash, nil
}
