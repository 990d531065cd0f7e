package diff

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/tidestream/tidestream/encoder/dispatch"
	"github.com/tidestream/tidestream/services/consumer"
)

// DefaultTopicPattern is the seed guide's dispatcher topic.
const DefaultTopicPattern = "tidb_{schema}_{table}"

// Config configures a comparison.
type Config struct {
	// Upstream is TiDB: mysql://user:pass@host:port/ (the path is ignored).
	Upstream string
	// SnapshotTS is the TSO TiDB is read at (tidb_snapshot). It must be at
	// or below what the downstream has caught up to — normally the
	// changefeed checkpoint, with the consumer caught up to the topics' end
	// offsets after it. Records committed after it make rows differ, unless
	// they carry _tidb_commit_ts (enable-tidb-extension=true): then upserts
	// after it are cut (not compared). Deletes cannot be cut (tombstones
	// carry no ts). 0 means TiDB's current TSO.
	SnapshotTS uint64
	// Schemas limits the comparison to these upstream schemas; empty means
	// every non-system schema.
	Schemas []string
	// TopicPattern is the changefeed's dispatcher topic expression, which
	// names both the topic and the consumer's table. Default
	// DefaultTopicPattern.
	TopicPattern string
	// TimeZone is the session time zone TIMESTAMP columns are read in; it
	// must be the zone the changefeed renders them in. Default "+00:00"
	// (tidestream's default: UTC).
	TimeZone string

	// Target, when set, is the database the consumer filled (mode a).
	Target string
	// Brokers and Registry, when Target is empty, are the Kafka topics to
	// replay in memory (mode b).
	Brokers  []string
	Registry string
	// KafkaOpts and RegistryOpts add client options (TLS, SASL, a private
	// CA), as consumer.Config's.
	KafkaOpts    []kgo.Opt
	RegistryOpts []sr.ClientOpt

	// MaxKeys is how many differing keys are named per table. Default 10.
	MaxKeys int
	Logger  *slog.Logger
}

// Validate checks the configuration, naming the field at fault.
func (c *Config) Validate() error {
	if c.Upstream == "" {
		return errors.New("diff: Upstream (--upstream) is required")
	}
	if _, err := upstreamDSN(c.Upstream, ""); err != nil {
		return err
	}
	if c.TopicPattern == "" {
		c.TopicPattern = DefaultTopicPattern
	}
	tp, err := dispatch.ParseTopic(c.TopicPattern)
	if err != nil {
		return fmt.Errorf("diff: TopicPattern (--topic-pattern): %w", err)
	}
	if !tp.PerTable() {
		return fmt.Errorf("diff: TopicPattern (--topic-pattern) %q must contain {schema} and {table}", c.TopicPattern)
	}
	if c.TimeZone == "" {
		c.TimeZone = "+00:00"
	}
	if c.MaxKeys == 0 {
		c.MaxKeys = 10
	}
	if c.MaxKeys < 0 {
		return fmt.Errorf("diff: MaxKeys %d must be positive", c.MaxKeys)
	}
	switch {
	case c.Target != "":
		if _, err := consumer.ParseTarget(c.Target); err != nil {
			return fmt.Errorf("diff: Target (--target): %w", err)
		}
	case len(c.Brokers) == 0 || c.Registry == "":
		return errors.New("diff: give Target (--target) to compare a database, or Brokers (--kafka) and Registry (--schema-registry) to replay the topics")
	}
	return nil
}

// upstreamDSN turns mysql://user:pass@host:port/ into a go-sql-driver DSN.
func upstreamDSN(raw, tz string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "mysql" || u.Host == "" {
		return "", fmt.Errorf("diff: Upstream (--upstream) %q: want mysql://user[:pass]@host:port/", raw)
	}
	cfg := mysql.NewConfig()
	cfg.User = u.User.Username()
	cfg.Passwd, _ = u.User.Password()
	cfg.Net, cfg.Addr = "tcp", u.Host
	cfg.Timeout = 10 * time.Second
	cfg.Params = map[string]string{}
	if tz != "" {
		cfg.Params["time_zone"] = "'" + tz + "'"
	}
	return cfg.FormatDSN(), nil
}

// TableResult is the outcome for one table.
type TableResult struct {
	Table      string // schema.table
	Topic      string
	Upstream   int // rows in TiDB at the snapshot
	Downstream int // rows downstream
	Newer      int // downstream rows committed after the snapshot, not compared
	Differ     int // keys missing on one side or with a different checksum
	Keys       []string
	Skipped    string
}

// Report is the outcome of a comparison.
type Report struct {
	SnapshotTS uint64
	Mode       string // "database <url>" or "replay of the topics"
	Tables     []TableResult
}

// Rows is the number of upstream rows compared; Differ the differing
// ones; BadTables the tables with a difference.
func (r *Report) totals() (rows, differ int, bad []string, compared int) {
	for _, t := range r.Tables {
		if t.Skipped != "" {
			continue
		}
		compared++
		rows += t.Upstream
		differ += t.Differ
		if t.Differ > 0 {
			bad = append(bad, t.Topic)
		}
	}
	return
}

// OK reports whether every compared table matches.
func (r *Report) OK() bool {
	_, d, _, _ := r.totals()
	return d == 0
}

// Verdict is the report's last line: "all N rows in T tables match TiDB"
// or "D rows differ in B of T tables: a, b".
func (r *Report) Verdict() string {
	rows, differ, bad, compared := r.totals()
	if differ == 0 {
		return fmt.Sprintf("all %d rows in %d tables match TiDB", rows, compared)
	}
	return fmt.Sprintf("%d rows differ in %d of %d tables: %s", differ, len(bad), compared, strings.Join(bad, ", "))
}

// Write prints one line per table, the differing keys, then the verdict.
func (r *Report) Write(w io.Writer) {
	fmt.Fprintf(w, "snapshot ts %d, downstream: %s\n", r.SnapshotTS, r.Mode)
	for _, t := range r.Tables {
		if t.Skipped != "" {
			fmt.Fprintf(w, "%-40s skipped: %s\n", t.Table, t.Skipped)
			continue
		}
		status := "match"
		if t.Differ > 0 {
			status = fmt.Sprintf("%d rows differ", t.Differ)
		}
		extra := ""
		if t.Newer > 0 {
			extra = fmt.Sprintf(", %d newer than the snapshot not compared", t.Newer)
		}
		fmt.Fprintf(w, "%-40s %-40s upstream %d, downstream %d rows%s: %s\n", t.Table, t.Topic, t.Upstream, t.Downstream, extra, status)
		for _, k := range t.Keys {
			fmt.Fprintf(w, "    %s\n", k)
		}
		if t.Differ > len(t.Keys) {
			fmt.Fprintf(w, "    … and %d more\n", t.Differ-len(t.Keys))
		}
	}
	fmt.Fprintln(w, r.Verdict())
}

// Run compares every upstream table with its downstream copy.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	dsn, _ := upstreamDSN(cfg.Upstream, cfg.TimeZone)
	up, err := sql.Open("mysql", dsn)
	if err != nil {
		return nil, fmt.Errorf("diff: upstream: %w", err)
	}
	defer up.Close()
	conn, err := up.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("diff: upstream %s: %w", redactURL(cfg.Upstream), err)
	}
	defer conn.Close()
	snap := cfg.SnapshotTS
	if snap == 0 {
		if err := conn.QueryRowContext(ctx, "SELECT TIDB_CURRENT_TSO()").Scan(&snap); err != nil {
			return nil, fmt.Errorf("diff: current TSO from TiDB: %w", err)
		}
	}
	if _, err := conn.ExecContext(ctx, "SET @@tidb_snapshot = '"+tsString(snap)+"'"); err != nil {
		if strings.Contains(err.Error(), "tikv_gc_safe_point") {
			// A cluster with no GC worker has no safe point to check a
			// snapshot against (deploy/playground writes one itself).
			return nil, fmt.Errorf("diff: SET tidb_snapshot = %d: %w (a cluster without a GC worker needs a row "+
				"INSERT INTO mysql.tidb (variable_name, variable_value) VALUES ('tikv_gc_safe_point', '20000101-00:00:00.000 +0000'))", snap, err)
		}
		return nil, fmt.Errorf("diff: SET tidb_snapshot = %d (below the GC safe point?): %w", snap, err)
	}
	tp, _ := dispatch.ParseTopic(cfg.TopicPattern)
	tables, err := loadTables(ctx, conn, cfg.Schemas, tp)
	if err != nil {
		return nil, err
	}
	rep := &Report{SnapshotTS: snap}
	down := map[string]*rowSet{}
	for _, t := range tables {
		down[t.Topic] = newRowSet()
	}
	if cfg.Target != "" {
		tg, _ := consumer.ParseTarget(cfg.Target)
		rep.Mode = "database " + redactURL(cfg.Target)
		db, err := sql.Open(tg.Driver, tg.DSN)
		if err != nil {
			return nil, fmt.Errorf("diff: target: %w", err)
		}
		defer db.Close()
		for _, t := range tables {
			if t.Skip != "" {
				continue
			}
			if err := dbRows(ctx, db, tg, t, snap, down[t.Topic]); err != nil {
				return nil, err
			}
		}
	} else {
		rep.Mode = "replay of the topics"
		reg, err := consumer.NewRegistryClient(cfg.Registry, cfg.RegistryOpts...)
		if err != nil {
			return nil, fmt.Errorf("diff: %w", err)
		}
		if err := replay(ctx, append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...)}, cfg.KafkaOpts...), consumer.NewDecoder(reg), tables, snap, down); err != nil {
			return nil, err
		}
	}
	for _, t := range tables {
		res := TableResult{Table: t.FullName(), Topic: t.Topic, Skipped: t.Skip}
		if t.Skip != "" {
			rep.Tables = append(rep.Tables, res)
			continue
		}
		us := newRowSet()
		if err := upstreamRows(ctx, conn, t, us); err != nil {
			return nil, err
		}
		compare(us, down[t.Topic], cfg.MaxKeys, &res)
		log.Info("table compared", "table", res.Table, "upstream", res.Upstream, "differ", res.Differ)
		rep.Tables = append(rep.Tables, res)
	}
	return rep, nil
}

// compare fills res from the two sides.
func compare(up, down *rowSet, maxKeys int, res *TableResult) {
	res.Upstream, res.Downstream, res.Newer = len(up.sums), len(down.sums), len(down.newer)
	type bad struct{ disp, why string }
	var diffs []bad
	for id, s := range up.sums {
		if down.newer[id] {
			continue
		}
		d, ok := down.sums[id]
		switch {
		case !ok:
			diffs = append(diffs, bad{up.display[id], "missing downstream"})
		case d != s:
			diffs = append(diffs, bad{up.display[id], "values differ"})
		}
	}
	for id := range down.sums {
		if down.newer[id] {
			continue
		}
		if _, ok := up.sums[id]; !ok {
			diffs = append(diffs, bad{down.display[id], "not in TiDB"})
		}
	}
	res.Differ = len(diffs)
	sort.Slice(diffs, func(i, j int) bool { return diffs[i].disp < diffs[j].disp })
	for i := 0; i < len(diffs) && i < maxKeys; i++ {
		res.Keys = append(res.Keys, diffs[i].disp+": "+diffs[i].why)
	}
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return u.Redacted()
}
