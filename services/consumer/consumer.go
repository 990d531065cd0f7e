package consumer

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"time"

	_ "github.com/go-sql-driver/mysql" // database/sql driver "mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
)

// DefaultTopics matches the topics of the seed's dispatcher,
// topic = "tidb_{schema}_{table}".
const DefaultTopics = `^tidb_.*`

// Config configures a Consumer.
type Config struct {
	// Brokers are the Kafka seed brokers, host:port.
	Brokers []string
	// Registry is the Schema Registry URL; user:password in it is sent as
	// basic auth (Confluent Cloud's API key and secret).
	Registry string
	// KafkaOpts and RegistryOpts add client options: TLS and SASL for
	// Kafka, an HTTP client trusting a private CA for the registry.
	KafkaOpts    []kgo.Opt
	RegistryOpts []sr.ClientOpt
	// Topics is a regular expression (Go syntax, unanchored unless it
	// anchors itself) for the topics to read. Default DefaultTopics.
	Topics string
	// Group is the Kafka consumer group. Offsets are committed to it only
	// after the database transaction holding the records commits, so a
	// restart resumes where the database is (at least once). A group
	// without committed offsets starts at the beginning of each partition.
	// Empty: no group, every run reads every partition from the beginning
	// (the result is the same, because applying is idempotent).
	Group string
	// Target is the database URL: mysql://user:pass@host:port/db (MariaDB
	// or MySQL) or postgres://user:pass@host:port/db.
	Target string
	// MaxPollRecords bounds the records of one fetch, hence of one
	// database transaction. Default 10000.
	MaxPollRecords int
	// Logger receives progress and errors; nil discards.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults for the optional fields.
func DefaultConfig() Config {
	return Config{Topics: DefaultTopics, MaxPollRecords: 10000}
}

// Validate checks the configuration, naming the field at fault.
func (c *Config) Validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("consumer: Brokers (--kafka) is required")
	}
	for _, b := range c.Brokers {
		if b == "" || !strings.Contains(b, ":") {
			return fmt.Errorf("consumer: Brokers (--kafka): %q is not host:port", b)
		}
	}
	if c.Registry == "" {
		return errors.New("consumer: Registry (--schema-registry) is required")
	}
	if u, err := url.Parse(c.Registry); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("consumer: Registry (--schema-registry) %q: want http(s)://[user:pass@]host:port", redact(c.Registry))
	}
	if c.Topics == "" {
		c.Topics = DefaultTopics
	}
	if _, err := regexp.Compile(c.Topics); err != nil {
		return fmt.Errorf("consumer: Topics (--topics) %q: %w", c.Topics, err)
	}
	if c.Target == "" {
		return errors.New("consumer: Target (--target) is required")
	}
	if _, err := ParseTarget(c.Target); err != nil {
		return fmt.Errorf("consumer: Target (--target): %w", err)
	}
	if c.MaxPollRecords == 0 {
		c.MaxPollRecords = 10000
	}
	if c.MaxPollRecords < 1 || c.MaxPollRecords > 1_000_000 {
		return fmt.Errorf("consumer: MaxPollRecords %d out of range 1..1000000", c.MaxPollRecords)
	}
	return nil
}

// DefaultGroup is the consumer group `cdc consumer` uses for a target
// when none is given: one per database, so two consumers filling two
// databases never share (and so skip) each other's offsets.
func DefaultGroup(target string) string {
	tg, err := ParseTarget(target)
	if err != nil {
		return "tidestream-consumer"
	}
	u, _ := url.Parse(target)
	return fmt.Sprintf("tidestream-consumer-%s-%s-%s", tg.Dialect, u.Host, tg.Database)
}

// NewRegistryClient builds a Schema Registry client from a URL, with the
// URL's user:password as basic auth.
func NewRegistryClient(raw string, extra ...sr.ClientOpt) (*sr.Client, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("schema registry %q: %w", redact(raw), err)
	}
	opts := []sr.ClientOpt{}
	if u.User != nil {
		pass, _ := u.User.Password()
		opts = append(opts, sr.BasicAuth(u.User.Username(), pass))
		u.User = nil
	}
	opts = append(opts, sr.URLs(u.String()))
	return sr.NewClient(append(opts, extra...)...)
}

// Stats counts what a run applied.
type Stats struct {
	Records    int64 // Kafka records applied (upserts + deletes, before reduction per key)
	Deletes    int64 // of which tombstones
	Txns       int64 // database transactions committed
	Partitions int   // partitions read
}

// Consumer reads the topics and applies them to the target database.
type Consumer struct {
	cfg    Config
	target Target
	db     *sql.DB
	dec    *Decoder
	app    *applier
	topics *regexp.Regexp
	log    *slog.Logger
}

// New validates cfg and opens the database (lazily: nothing is contacted
// before Run or CatchUp). Close releases it.
func New(cfg Config) (*Consumer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	target, _ := ParseTarget(cfg.Target)
	db, err := sql.Open(target.Driver, target.DSN)
	if err != nil {
		return nil, fmt.Errorf("consumer: open %s: %w", redact(cfg.Target), err)
	}
	reg, err := NewRegistryClient(cfg.Registry, cfg.RegistryOpts...)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("consumer: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Consumer{
		cfg: cfg, target: target, db: db, dec: NewDecoder(reg),
		app:    newApplier(db, target.Dialect),
		topics: regexp.MustCompile(cfg.Topics),
		log:    log.With("component", "consumer"),
	}, nil
}

// Close closes the database handle.
func (c *Consumer) Close() error { return c.db.Close() }

// Run consumes until ctx ends or an error stops it. It returns nil when
// ctx is cancelled.
func (c *Consumer) Run(ctx context.Context) error {
	_, err := c.run(ctx, nil)
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	return err
}

// CatchUp applies every record of the matching topics up to their end
// offsets as of the call, then returns. Records produced after the call
// may or may not be applied. It is what tests, the demo and the diff use.
func (c *Consumer) CatchUp(ctx context.Context) (Stats, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.cfg.Brokers...)}, c.cfg.KafkaOpts...)...)
	if err != nil {
		return Stats{}, fmt.Errorf("consumer: kafka client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	topics, err := MatchingTopics(ctx, adm, c.topics)
	if err != nil {
		return Stats{}, err
	}
	targets := map[string]map[int32]int64{}
	if len(topics) > 0 {
		ends, err := adm.ListEndOffsets(ctx, topics...)
		if err != nil {
			return Stats{}, fmt.Errorf("consumer: end offsets: %w", err)
		}
		if err := ends.Error(); err != nil {
			return Stats{}, fmt.Errorf("consumer: end offsets: %w", err)
		}
		var committed kadm.OffsetResponses
		if c.cfg.Group != "" {
			// A group that never committed does not exist yet (kfake says so;
			// Kafka answers with no offsets): start from the beginning.
			if committed, err = adm.FetchOffsets(ctx, c.cfg.Group); err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
				return Stats{}, fmt.Errorf("consumer: committed offsets of group %s: %w", c.cfg.Group, err)
			}
		}
		ends.Each(func(o kadm.ListedOffset) {
			if o.Offset <= 0 {
				return
			}
			if r, ok := committed.Lookup(o.Topic, o.Partition); ok && r.Err == nil && r.At >= o.Offset {
				return
			}
			if targets[o.Topic] == nil {
				targets[o.Topic] = map[int32]int64{}
			}
			targets[o.Topic][o.Partition] = o.Offset
		})
	}
	if len(targets) == 0 {
		return Stats{}, nil
	}
	return c.run(ctx, targets)
}

// MatchingTopics lists the topics matching re, sorted, internal topics
// left out.
func MatchingTopics(ctx context.Context, adm *kadm.Client, re *regexp.Regexp) ([]string, error) {
	td, err := adm.ListTopics(ctx)
	if err != nil {
		return nil, fmt.Errorf("consumer: list topics: %w", err)
	}
	var out []string
	for _, t := range td.Sorted() {
		if t.IsInternal || !re.MatchString(t.Topic) {
			continue
		}
		if t.Err != nil {
			return nil, fmt.Errorf("consumer: topic %s: %w", t.Topic, t.Err)
		}
		out = append(out, t.Topic)
	}
	return out, nil
}

// run is the poll → apply → commit loop. With targets it stops once every
// target partition's position reached its offset.
func (c *Consumer) run(ctx context.Context, targets map[string]map[int32]int64) (Stats, error) {
	var st Stats
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.cfg.Brokers...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(500 * time.Millisecond),
	}
	if targets != nil {
		var names []string
		for t := range targets {
			names = append(names, t)
		}
		opts = append(opts, kgo.ConsumeTopics(names...))
	} else {
		// Topics of tables created later appear with a metadata refresh:
		// every 10 s rather than kgo's 5 min, so a new table starts
		// flowing soon after its first row.
		opts = append(opts, kgo.ConsumeRegex(), kgo.ConsumeTopics(c.cfg.Topics), kgo.MetadataMaxAge(10*time.Second))
	}
	if c.cfg.Group != "" {
		opts = append(opts,
			kgo.ConsumerGroup(c.cfg.Group),
			kgo.DisableAutoCommit(),
			// No rebalance between a poll and the commit of its offsets, so
			// a partition is never committed by a member that lost it.
			kgo.BlockRebalanceOnPoll(),
		)
	}
	cl, err := kgo.NewClient(append(opts, c.cfg.KafkaOpts...)...)
	if err != nil {
		return st, fmt.Errorf("consumer: kafka client: %w", err)
	}
	defer cl.Close()
	// Close leaves the group, which waits for a blocked rebalance: allow
	// it first whatever path returns (deferred calls run last-in first).
	defer cl.AllowRebalance()

	remaining := 0
	for _, ps := range targets {
		remaining += len(ps)
	}
	seen := map[string]map[int32]bool{}
	for {
		if targets != nil && remaining == 0 {
			return st, nil
		}
		fetches := cl.PollRecords(ctx, c.cfg.MaxPollRecords)
		if err := ctx.Err(); err != nil {
			return st, err
		}
		if fetches.IsClientClosed() {
			return st, errors.New("consumer: kafka client closed")
		}
		var ferr error
		fetches.EachError(func(t string, p int32, err error) {
			if ferr == nil {
				ferr = fmt.Errorf("consumer: fetch topic %s partition %d: %w", t, p, err)
			}
		})
		if ferr != nil {
			cl.AllowRebalance()
			return st, ferr
		}
		recs := fetches.Records()
		if len(recs) == 0 {
			cl.AllowRebalance()
			continue
		}
		changes := make([]Change, 0, len(recs))
		for _, r := range recs {
			ch, err := c.dec.Decode(ctx, r)
			if err != nil {
				cl.AllowRebalance()
				return st, err
			}
			changes = append(changes, ch)
			if ch.Delete() {
				st.Deletes++
			}
			if seen[r.Topic] == nil {
				seen[r.Topic] = map[int32]bool{}
			}
			if !seen[r.Topic][r.Partition] {
				seen[r.Topic][r.Partition] = true
				st.Partitions++
			}
		}
		if err := c.app.apply(ctx, changes); err != nil {
			cl.AllowRebalance()
			return st, err
		}
		st.Txns++
		st.Records += int64(len(recs))
		// Offsets only after the database commit: a crash in between
		// replays these records, which upserts and deletes absorb.
		if c.cfg.Group != "" {
			if err := cl.CommitRecords(ctx, recs...); err != nil {
				cl.AllowRebalance()
				return st, fmt.Errorf("consumer: commit offsets to group %s: %w", c.cfg.Group, err)
			}
		}
		cl.AllowRebalance()
		c.log.Debug("applied", "records", len(recs), "total", st.Records)
		if targets != nil {
			fetches.EachPartition(func(p kgo.FetchTopicPartition) {
				if len(p.Records) == 0 {
					return
				}
				end, ok := targets[p.Topic][p.Partition]
				if !ok {
					return
				}
				if p.Records[len(p.Records)-1].Offset+1 >= end {
					delete(targets[p.Topic], p.Partition)
					remaining--
				}
			})
		}
	}
}
