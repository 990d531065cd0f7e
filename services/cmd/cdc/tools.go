package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"github.com/twmb/franz-go/pkg/sr"

	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
	"github.com/tidestream/tidestream/services/cli"
	"github.com/tidestream/tidestream/services/consumer"
	"github.com/tidestream/tidestream/services/diff"
	"github.com/tidestream/tidestream/services/runtime/signals"
)

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// consumerCmd is `cdc consumer`: the reference consumer.
func consumerCmd() *cobra.Command {
	cfg := consumer.DefaultConfig()
	var brokers string
	var catchUp, verbose, noGroup bool
	var cf connFlags
	cmd := &cobra.Command{
		Use:   "consumer",
		Short: "Apply the Avro topics to MariaDB/MySQL or PostgreSQL as the Confluent JDBC sink would (upsert, delete on tombstone, auto create/evolve)",
		Long: `Reads the topics matching --topics with their schemas from the Schema Registry
and applies them to --target: table = topic, primary key = the record key's
fields, INSERT … ON DUPLICATE KEY UPDATE / ON CONFLICT DO UPDATE, a null value
deletes, tables created and columns added from the Avro schemas. Offsets are
committed to --group only after the database transaction commits.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Brokers = splitList(brokers)
			var err error
			if cfg.KafkaOpts, cfg.RegistryOpts, err = cf.opts(); err != nil {
				return err
			}
			switch {
			case noGroup:
				cfg.Group = ""
			case cfg.Group == "":
				cfg.Group = consumer.DefaultGroup(cfg.Target)
			}
			level := slog.LevelInfo
			if verbose {
				level = slog.LevelDebug
			}
			cfg.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			c, err := consumer.New(cfg)
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			if catchUp {
				start := time.Now()
				st, err := c.CatchUp(ctx)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "caught up: %d records (%d deletes) from %d partitions in %d transactions, %s\n",
					st.Records, st.Deletes, st.Partitions, st.Txns, time.Since(start).Round(time.Millisecond))
				return nil
			}
			return c.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&brokers, "kafka", "127.0.0.1:9092", "Kafka brokers, host:port[,host:port…]")
	f.StringVar(&cfg.Registry, "schema-registry", "http://127.0.0.1:8081", "Schema Registry URL, http(s)://[key:secret@]host:port")
	f.StringVar(&cfg.Topics, "topics", consumer.DefaultTopics, "regular expression of the topics to read")
	f.StringVar(&cfg.Group, "group", "", "Kafka consumer group whose committed offsets say where to resume (default tidestream-consumer-<dialect>-<host:port>-<db>, one per target)")
	f.BoolVar(&noGroup, "no-group", false, "use no consumer group: read every partition from the beginning, commit nothing")
	f.StringVar(&cfg.Target, "target", "", "database to write: mysql://user:pass@127.0.0.1:3306/db (MariaDB/MySQL) or postgres://user:pass@127.0.0.1:5432/db")
	f.IntVar(&cfg.MaxPollRecords, "batch", cfg.MaxPollRecords, "most records per fetch, applied in one database transaction")
	f.BoolVar(&catchUp, "catch-up", false, "apply everything up to the topics' end offsets as of the start, then exit")
	f.BoolVarP(&verbose, "verbose", "v", false, "log every batch")
	cf.add(f)
	_ = cmd.MarkFlagRequired("target")
	return cmd
}

// diffCmd is `cdc diff`.
func diffCmd() *cobra.Command {
	var (
		cfg        diff.Config
		brokers    string
		schemas    string
		conn       cli.ConnFlags
		changefeed pb.ChangefeedRef
		cf         connFlags
	)
	cmd := &cobra.Command{
		Use:   "diff",
		Short: "Compare every upstream TiDB table at a snapshot with its downstream copy (a database the consumer filled, or the topics replayed)",
		Long: `Reads each TiDB table at --snapshot-ts (SET @@tidb_snapshot) and its downstream
copy — the table the consumer created in --target, or, without --target, the
topics replayed in memory (last record per key, a tombstone deletes) — and
compares row counts and per-row checksums over canonical column values, then
names the differing keys. The last line is the verdict:
"all N rows in T tables match TiDB" or "D rows differ in B of T tables: …".

The snapshot defaults to the changefeed's checkpoint (--changefeed-id on
--server). The downstream must have caught up to it (run the consumer with
--catch-up after reading the checkpoint). Rows committed after the snapshot
make the comparison fail, unless the records carry _tidb_commit_ts
(enable-tidb-extension=true): then upserts after it are left out and
counted as "newer". Deletes cannot be cut (tombstones carry no ts).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			cfg.Brokers = splitList(brokers)
			cfg.Schemas = splitList(schemas)
			var err error
			if cfg.KafkaOpts, cfg.RegistryOpts, err = cf.opts(); err != nil {
				return err
			}
			if cfg.Target != "" {
				cfg.Brokers, cfg.Registry = nil, ""
			}
			if cfg.SnapshotTS == 0 && changefeed.Id != "" {
				cc, err := conn.Dial()
				if err != nil {
					return err
				}
				defer cc.Close()
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				info, err := pb.NewChangefeedServiceClient(cc).Get(cctx, &pb.GetChangefeedRequest{Namespace: changefeed.Namespace, Id: changefeed.Id})
				cancel()
				if err != nil {
					return fmt.Errorf("checkpoint of changefeed %s from %s: %w", changefeed.Id, conn.Server, err)
				}
				cfg.SnapshotTS = info.GetCheckpointTs()
			}
			if cfg.SnapshotTS == 0 {
				return errors.New("give --snapshot-ts, or --changefeed-id (and --server) to use the changefeed's checkpoint")
			}
			rep, err := diff.Run(ctx, cfg)
			if err != nil {
				return err
			}
			rep.Write(cmd.OutOrStdout())
			if !rep.OK() {
				return errors.New(rep.Verdict())
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Upstream, "upstream", "mysql://root@127.0.0.1:4000/", "TiDB, mysql://user:pass@host:port/")
	f.Uint64Var(&cfg.SnapshotTS, "snapshot-ts", 0, "TSO to read TiDB at; default: the checkpoint of --changefeed-id")
	f.StringVar(&schemas, "schemas", "", "compare only these upstream schemas (comma-separated); default every non-system schema")
	f.StringVar(&cfg.TopicPattern, "topic-pattern", diff.DefaultTopicPattern, "the changefeed's dispatcher topic expression (names topics and consumer tables)")
	f.StringVar(&cfg.TimeZone, "tz", "+00:00", "time zone TIMESTAMP values are rendered in by the changefeed")
	f.StringVar(&cfg.Target, "target", "", "database the consumer filled (mysql://… or postgres://…); without it the topics are replayed")
	f.StringVar(&brokers, "kafka", "127.0.0.1:9092", "Kafka brokers for the replay, host:port[,…]")
	f.StringVar(&cfg.Registry, "schema-registry", "http://127.0.0.1:8081", "Schema Registry URL for the replay")
	f.IntVar(&cfg.MaxKeys, "max-keys", 10, "differing keys to name per table")
	f.StringVar(&conn.Server, "server", cli.DefaultServer, "tidestream server to read the changefeed checkpoint from")
	f.StringVarP(&changefeed.Id, "changefeed-id", "c", "", "changefeed whose checkpoint is the snapshot (when --snapshot-ts is not given)")
	f.StringVarP(&changefeed.Namespace, "namespace", "n", "default", "changefeed namespace")
	cf.add(f)
	return cmd
}

// signalContext ends on the first SIGINT/SIGTERM; a second one exits.
func signalContext(parent context.Context) (context.Context, func()) {
	if parent == nil {
		parent = context.Background()
	}
	return signals.NotifyContext(parent, slog.New(slog.DiscardHandler), func(os.Signal) { os.Exit(1) })
}

// connFlags are how `cdc consumer` and `cdc diff` reach a Kafka with TLS
// and SASL (Confluent Cloud: --kafka-tls --kafka-sasl-user=<api key>
// --kafka-sasl-password=<secret>) and a registry behind a private CA.
type connFlags struct {
	tls                      bool
	ca, registryCA           string
	mechanism, user, passwrd string
}

func (c *connFlags) add(f *pflag.FlagSet) {
	f.BoolVar(&c.tls, "kafka-tls", false, "connect to Kafka over TLS (implied by --kafka-ca)")
	f.StringVar(&c.ca, "kafka-ca", "", "PEM file of CAs for Kafka's certificates (default: the system pool)")
	f.StringVar(&c.mechanism, "kafka-sasl-mechanism", "plain", "SASL mechanism with --kafka-sasl-user: plain, scram-sha-256 or scram-sha-512")
	f.StringVar(&c.user, "kafka-sasl-user", "", "SASL user (Confluent Cloud: the API key)")
	f.StringVar(&c.passwrd, "kafka-sasl-password", "", "SASL password (Confluent Cloud: the API secret)")
	f.StringVar(&c.registryCA, "schema-registry-ca", "", "PEM file of CAs for the Schema Registry's certificate (default: the system pool)")
}

func (c *connFlags) opts() ([]kgo.Opt, []sr.ClientOpt, error) {
	var kopts []kgo.Opt
	var ropts []sr.ClientOpt
	if c.tls || c.ca != "" {
		cfg, err := tlsConfig(c.ca)
		if err != nil {
			return nil, nil, fmt.Errorf("--kafka-ca: %w", err)
		}
		kopts = append(kopts, kgo.DialTLSConfig(cfg))
	}
	if c.user != "" {
		switch strings.ToLower(c.mechanism) {
		case "plain":
			kopts = append(kopts, kgo.SASL(plain.Auth{User: c.user, Pass: c.passwrd}.AsMechanism()))
		case "scram-sha-256":
			kopts = append(kopts, kgo.SASL(scram.Auth{User: c.user, Pass: c.passwrd}.AsSha256Mechanism()))
		case "scram-sha-512":
			kopts = append(kopts, kgo.SASL(scram.Auth{User: c.user, Pass: c.passwrd}.AsSha512Mechanism()))
		default:
			return nil, nil, fmt.Errorf("--kafka-sasl-mechanism %q: want plain, scram-sha-256 or scram-sha-512", c.mechanism)
		}
	}
	if c.registryCA != "" {
		cfg, err := tlsConfig(c.registryCA)
		if err != nil {
			return nil, nil, fmt.Errorf("--schema-registry-ca: %w", err)
		}
		ropts = append(ropts, sr.HTTPClient(&http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}))
	}
	return kopts, ropts, nil
}

// tlsConfig trusts the CAs in caFile, or the system pool when it is "".
func tlsConfig(caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	cfg.RootCAs = pool
	return cfg, nil
}
