package replicaconfig

import (
	"errors"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
	"github.com/tidestream/tidestream/coordinator/sinkuri"
	"github.com/tidestream/tidestream/coordinator/tablefilter"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// Defaults of the changefeed file (spec §8).
const (
	DefaultMemoryQuota            = 1 << 30
	DefaultSyncPointInterval      = 10 * time.Minute
	DefaultSyncPointRetention     = 24 * time.Hour
	DefaultErrorStuckDuration     = 30 * time.Minute
	MinErrorStuckDuration         = 30 * time.Minute
	DefaultMounterWorkerNum       = 16
	DefaultEncoderConcurrency     = 32
	DefaultRegionThreshold        = 100000
	DefaultIntegrityCheckLevel    = "none"
	DefaultCorruptionHandleLevel  = "warn"
	defaultLargeMessageHandleType = "none"
)

// fileConfig is the changefeed file after the strict walk: the replica
// config with file values over defaults, plus what still needs the sink URI
// to be judged.
type fileConfig struct {
	cfg  *tidestreamv1.ReplicaConfig
	opts *sinkuri.Options
	// registry is [sink] schema-registry, "" when absent.
	registry string
}

// decodeFile decodes and walks the TOML. Unknown keys win over value errors
// in the report: a misspelt key usually explains the rest.
func decodeFile(text []byte) (*fileConfig, error) {
	doc := map[string]any{}
	if len(strings.TrimSpace(string(text))) > 0 {
		if _, err := toml.Decode(string(text), &doc); err != nil {
			return nil, syntaxError(text, err)
		}
	}
	w := &walk{}
	fc := walkRoot(newNode(w, "", doc))
	if len(w.unknown) > 0 {
		slices.Sort(w.unknown)
		quoted := make([]string, len(w.unknown))
		for i, k := range w.unknown {
			quoted[i] = strconv.Quote(k)
		}
		noun := "unknown key"
		if len(quoted) > 1 {
			noun = "unknown keys"
		}
		return nil, cdcerr.Field("config", "%s %s", noun, strings.Join(quoted, ", "))
	}
	if w.err != nil {
		return nil, w.err
	}
	return fc, nil
}

var lineRE = regexp.MustCompile(`line (\d+)`)

// syntaxError reports a TOML syntax error with its line. The decoder's own
// message may quote a piece of the offending line, so it is dropped when that
// line could hold a secret (a password, a secret or a registry URL with
// credentials).
func syntaxError(text []byte, err error) error {
	msg := err.Error()
	m := lineRE.FindStringSubmatch(msg)
	if m == nil {
		return cdcerr.Field("config", "invalid TOML: %s", sinkuri.RedactText(msg))
	}
	n, _ := strconv.Atoi(m[1])
	lines := strings.Split(string(text), "\n")
	for _, i := range []int{n - 2, n - 1, n} { // the line and its neighbours, 0-based
		if i < 0 || i >= len(lines) {
			continue
		}
		l := strings.ToLower(lines[i])
		if strings.Contains(l, "pass") || strings.Contains(l, "secret") || strings.Contains(l, "@") ||
			strings.Contains(l, "registry") || strings.Contains(l, "key") {
			return cdcerr.Field("config", "invalid TOML at line %d (details withheld: the line may hold a secret)", n)
		}
	}
	return cdcerr.Field("config", "invalid TOML at line %d: %s", n, sinkuri.RedactText(msg))
}

func walkRoot(n *node) *fileConfig {
	cfg := &tidestreamv1.ReplicaConfig{
		MemoryQuota:                  DefaultMemoryQuota,
		CheckGcSafePoint:             true,
		SyncPointInterval:            durationpb.New(DefaultSyncPointInterval),
		SyncPointRetention:           durationpb.New(DefaultSyncPointRetention),
		ChangefeedErrorStuckDuration: durationpb.New(DefaultErrorStuckDuration),
		Filter:                       &tidestreamv1.FilterConfig{Rules: []string{"*.*"}},
		Mounter:                      &tidestreamv1.MounterConfig{WorkerNum: DefaultMounterWorkerNum},
		Sink: &tidestreamv1.SinkConfig{
			EncoderConcurrency:   DefaultEncoderConcurrency,
			TransactionAtomicity: "none",
		},
		Scheduler: &tidestreamv1.SchedulerConfig{RegionThreshold: DefaultRegionThreshold},
		Integrity: &tidestreamv1.IntegrityConfig{
			IntegrityCheckLevel:   DefaultIntegrityCheckLevel,
			CorruptionHandleLevel: DefaultCorruptionHandleLevel,
		},
	}
	fc := &fileConfig{cfg: cfg, opts: sinkuri.NewOptions()}

	if v, ok := n.integer("memory-quota"); ok {
		if v <= 0 {
			n.w.fail(cdcerr.Field(n.field("memory-quota"), "must be > 0, got %d", v))
		}
		cfg.MemoryQuota = v
	}
	if v, ok := n.boolean("case-sensitive"); ok {
		cfg.CaseSensitive = v
	}
	if v, ok := n.boolean("force-replicate"); ok {
		if v {
			n.w.fail(cdcerr.Field(n.field("force-replicate"),
				"must be false with protocol=avro: a table without a primary key or not-null unique key has no Avro key"))
		}
	}
	if v, ok := n.boolean("ignore-ineligible-table"); ok {
		cfg.IgnoreIneligibleTable = v
	}
	if v, ok := n.boolean("check-gc-safe-point"); ok {
		cfg.CheckGcSafePoint = v
	}
	if v, ok := n.boolean("enable-sync-point"); ok && v {
		n.w.fail(cdcerr.Field(n.field("enable-sync-point"), "is only supported with a MySQL/TiDB downstream; tidestream writes to Kafka"))
	}
	if d, ok := n.duration("sync-point-interval"); ok {
		positive(n, "sync-point-interval", d)
		cfg.SyncPointInterval = durationpb.New(d)
	}
	if d, ok := n.duration("sync-point-retention"); ok {
		positive(n, "sync-point-retention", d)
		cfg.SyncPointRetention = durationpb.New(d)
	}
	if v, ok := n.boolean("bdr-mode"); ok && v {
		n.w.fail(cdcerr.Field(n.field("bdr-mode"), "is only supported with a TiDB downstream; tidestream writes to Kafka"))
	}
	if d, ok := n.duration("changefeed-error-stuck-duration"); ok {
		if d < MinErrorStuckDuration {
			n.w.fail(cdcerr.Field(n.field("changefeed-error-stuck-duration"), "must be >= %s, got %s", MinErrorStuckDuration, d))
		}
		cfg.ChangefeedErrorStuckDuration = durationpb.New(d)
	}
	if v, ok := n.boolean("enable-table-monitor"); ok {
		cfg.EnableTableMonitor = v
	}
	// Deprecated in TiCDC and without effect on Avro output; accepted so
	// old files still load.
	n.str("sql-mode")
	n.boolean("enable-old-value")

	if m := n.table("mounter"); m != nil {
		if v, ok := m.integer("worker-num"); ok {
			if v <= 0 || v > 1<<16 {
				m.w.fail(cdcerr.Field(m.field("worker-num"), "must be between 1 and 65536, got %d", v))
			}
			cfg.Mounter.WorkerNum = int32(v)
		}
		m.finish()
	}
	if f := n.table("filter"); f != nil {
		walkFilter(f, cfg)
	}
	if s := n.table("scheduler"); s != nil {
		walkScheduler(s, cfg.Scheduler)
	}
	if s := n.table("sink"); s != nil {
		walkSink(s, fc)
	}
	if i := n.table("integrity"); i != nil {
		walkIntegrity(i, cfg.Integrity)
	}
	if c := n.table("consistent"); c != nil {
		walkConsistent(c)
	}
	n.finish()
	return fc
}

func positive(n *node, key string, d time.Duration) {
	if d <= 0 {
		n.w.fail(cdcerr.Field(n.field(key), "must be > 0, got %s", d))
	}
}

func walkFilter(f *node, cfg *tidestreamv1.ReplicaConfig) {
	if rules, ok := f.strs("rules"); ok {
		if _, err := tablefilter.Parse(rules, cfg.CaseSensitive); err != nil {
			f.w.fail(filterError(f.field("rules"), err))
		}
		if len(rules) == 0 {
			f.w.fail(cdcerr.Field(f.field("rules"), "is empty, which replicates nothing (use ['*.*'] for everything)"))
		}
		cfg.Filter.Rules = rules
	}
	if ts, ok := f.ints("ignore-txn-start-ts"); ok {
		for i, t := range ts {
			if t <= 0 {
				f.w.fail(cdcerr.Field(f.field("ignore-txn-start-ts")+"["+strconv.Itoa(i)+"]", "must be a positive TSO, got %d", t))
			}
			cfg.Filter.IgnoreTxnStartTs = append(cfg.Filter.IgnoreTxnStartTs, uint64(t))
		}
	}
	// Until the encoder applies event filters, accepting them would
	// replicate the very events the user asked to drop.
	if efs := f.tables("event-filters"); len(efs) > 0 {
		f.w.fail(cdcerr.Field(f.field("event-filters"),
			"is not supported yet by tidestream (the encoder does not apply event filters, so every event would be replicated); "+
				"remove it, or exclude whole tables with filter.rules"))
	}
	// TiCDC's older [filter] do-dbs / ignore-tables style is not accepted:
	// rules say the same thing in one syntax.
	f.finish()
}

func walkScheduler(s *node, sc *tidestreamv1.SchedulerConfig) {
	if v, ok := s.boolean("enable-table-across-nodes"); ok {
		sc.EnableTableAcrossNodes = v
	}
	if v, ok := s.integer("region-threshold"); ok {
		nonNegative(s, "region-threshold", v)
		sc.RegionThreshold = v
	}
	if v, ok := s.integer("write-key-threshold"); ok {
		nonNegative(s, "write-key-threshold", v)
		sc.WriteKeyThreshold = v
	}
	s.finish()
}

func nonNegative(n *node, key string, v int64) {
	if v < 0 {
		n.w.fail(cdcerr.Field(n.field(key), "must be >= 0, got %d", v))
	}
}

func walkIntegrity(n *node, ic *tidestreamv1.IntegrityConfig) {
	if v, ok := n.str("integrity-check-level"); ok {
		switch l := strings.ToLower(v); l {
		case "none":
			ic.IntegrityCheckLevel = l
		case "correctness":
			// TiCDC's value, so it gets its own message rather than "must
			// be none": without the checksum fields in the records the
			// consumer could verify nothing.
			n.w.fail(cdcerr.Field(n.field("integrity-check-level"),
				"%q is not supported yet by tidestream (the Avro checksum fields are not implemented); use \"none\"", v))
		default:
			n.w.fail(cdcerr.Field(n.field("integrity-check-level"), "must be none or correctness, got %q", v))
		}
	}
	if v, ok := n.str("corruption-handle-level"); ok {
		l := strings.ToLower(v)
		if l != "warn" && l != "error" {
			n.w.fail(cdcerr.Field(n.field("corruption-handle-level"), "must be warn or error, got %q", v))
		}
		ic.CorruptionHandleLevel = l
	}
	n.finish()
}

// walkConsistent accepts TiCDC's redo-log section so shared files load, but
// only with level none: the redo log exists for MySQL/TiDB downstreams.
func walkConsistent(n *node) {
	if v, ok := n.str("level"); ok && strings.ToLower(v) != "none" {
		n.w.fail(cdcerr.Field(n.field("level"), "must be none: the redo log is only for MySQL/TiDB downstreams, got %q", v))
	}
	for _, k := range []string{"storage", "flush-interval", "meta-flush-interval", "compression"} {
		n.get(k)
	}
	for _, k := range []string{"max-log-size", "encoding-worker-num", "flush-worker-num", "flush-concurrency"} {
		n.integer(k)
	}
	n.boolean("use-file-backend")
	n.finish()
}

// filterError turns a table-filter error into a field error under field,
// e.g. `config: sink.dispatchers[0].matcher: rules[1] "a.[b": unclosed bracket`.
func filterError(field string, err error) error {
	var re *tablefilter.RuleError
	if errors.As(err, &re) {
		return cdcerr.Field(field, "%s", re.Error())
	}
	return cdcerr.Field(field, "%v", err)
}

// kafkaParam sets one file value through sinkuri's parameter table, so a
// file value is checked exactly like the same URI parameter.
func kafkaParam(n *node, opts *sinkuri.Options, key string) {
	v, _ := n.get(key)
	if err := opts.SetValue(key, v, n.field(key)); err != nil {
		n.w.fail(err)
	}
}
