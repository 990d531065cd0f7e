package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/tidestream/tidestream/encoder/avro"
	"github.com/tidestream/tidestream/encoder/dispatch"
	"github.com/tidestream/tidestream/encoder/mount"
	"github.com/tidestream/tidestream/encoder/registry"
	"github.com/tidestream/tidestream/encoder/schema"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// Config configures a Service.
type Config struct {
	// MemberID is the process's member id. It names the DDL pipelines this
	// encoder subscribes on the sorters, so that two encoder processes
	// following the same changefeed through one sorter never take each
	// other's stream over.
	MemberID string
	// Changefeeds reads a changefeed's user-set record (sink, registry,
	// dispatchers, codec options) by namespace and id: the role reads it
	// from etcd. An error wrapping ErrChangefeedNotFound fails the
	// pipeline for good; any other error is retried by the caller.
	Changefeeds func(ctx context.Context, namespace, id string) (*tidestreamv1.ChangefeedInfo, error)
	// LoadSnapshot reads the upstream's schema at ts (schema.LoadSnapshot
	// on a client-go store of the cluster pdAddrs names; empty pdAddrs
	// means the process's default upstream).
	LoadSnapshot func(ctx context.Context, pdAddrs []string, ts uint64) (*schema.Snapshot, error)
	// SorterAddr is the SorterService a pipeline pulls from when its
	// route names none (a `cdc server` pulls from itself).
	SorterAddr string
	// Upstream, when set, stands for SorterAddr's connection, whether a
	// route names no sorter or names SorterAddr: for tests, and for a
	// process that runs the sorter too and calls it in process.
	Upstream tidestreamv1.SorterServiceClient
	// RegistryTLS adds a CA and a client certificate to every changefeed's
	// registry connection: certificates are files of the node, not part of
	// a changefeed.
	RegistryCAFile, RegistryCertFile, RegistryKeyFile string

	// Workers bounds the goroutines encoding at once across all pipelines;
	// default GOMAXPROCS. It bounds CPU work only: a goroutine waiting on
	// the schema registry holds no worker (registry.Config.MaxInFlight
	// bounds those calls).
	Workers int
	// InFlight bounds the chunks of one pipeline being encoded or waiting
	// to be sent, so one pipeline can use several workers while its output
	// stays in order, and its memory stays bounded.
	InFlight int
	// ChunkBytes closes a chunk of raw events (at a transaction boundary)
	// once it holds this many bytes; one chunk is one EncodedBatch.
	ChunkBytes int
	// SplitTxnBytes is the most of one transaction a chunk holds: a larger
	// transaction is encoded and sent in pieces of about this size, its
	// resolved ts only after the last, so neither the encoder nor a batch
	// has to hold all of it (a batch must stay under the stream's message
	// limit). Within a piece deletes still go first; across pieces a
	// tombstone for a Kafka key the transaction already wrote is dropped,
	// which leaves the key as the transaction left it.
	SplitTxnBytes int
	// RetryBackoff and MaxRetryBackoff pace re-subscribing to a sorter
	// after a transient failure.
	RetryBackoff, MaxRetryBackoff time.Duration
	// IdleTimeout is how long a changefeed's schema history outlives its
	// last pipeline, so a pipeline that reconnects does not reload the
	// snapshot.
	IdleTimeout time.Duration
	// WarnInterval is how often a stream stalled on the registry sends an
	// empty batch carrying the warning (EncodedBatch.warning).
	WarnInterval time.Duration

	Logger *slog.Logger
	Meter  metric.Meter

	// Knobs are test hooks.
	Knobs Knobs
}

// Knobs let tests interleave work deterministically.
type Knobs struct {
	// BeforeEncode runs in a worker before it encodes the chunk with
	// sequence number seq (0-based, per stream).
	BeforeEncode func(seq int)
}

// Defaults.
const (
	DefaultInFlight        = 8
	DefaultChunkBytes      = 1 << 20
	DefaultSplitTxnBytes   = 4 << 20 // raw; encoded it stays well under contract.MaxBatchBytes
	DefaultRetryBackoff    = 50 * time.Millisecond
	DefaultMaxRetryBackoff = 5 * time.Second
	DefaultIdleTimeout     = time.Minute
	DefaultWarnInterval    = 5 * time.Second
)

// ErrChangefeedNotFound is what Config.Changefeeds wraps when the
// changefeed does not exist (removed, or never created).
var ErrChangefeedNotFound = errors.New("changefeed not found")

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.MemberID == "":
		return errors.New("encoder service: Config.MemberID is required")
	case c.Changefeeds == nil:
		return errors.New("encoder service: Config.Changefeeds is required")
	case c.LoadSnapshot == nil:
		return errors.New("encoder service: Config.LoadSnapshot is required")
	case c.Workers < 0 || c.InFlight < 0 || c.ChunkBytes < 0 || c.SplitTxnBytes < 0:
		return errors.New("encoder service: Workers, InFlight, ChunkBytes and SplitTxnBytes must not be negative")
	case c.RetryBackoff < 0 || c.MaxRetryBackoff < 0 || c.IdleTimeout < 0 || c.WarnInterval < 0:
		return errors.New("encoder service: durations must not be negative")
	}
	return nil
}

func (c *Config) fill() {
	if c.Workers == 0 {
		c.Workers = runtime.GOMAXPROCS(0)
	}
	if c.InFlight == 0 {
		c.InFlight = DefaultInFlight
	}
	if c.ChunkBytes == 0 {
		c.ChunkBytes = DefaultChunkBytes
	}
	if c.SplitTxnBytes == 0 {
		c.SplitTxnBytes = DefaultSplitTxnBytes
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = DefaultRetryBackoff
	}
	if c.MaxRetryBackoff == 0 {
		c.MaxRetryBackoff = DefaultMaxRetryBackoff
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.WarnInterval == 0 {
		c.WarnInterval = DefaultWarnInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// feedConfig is what the encoder takes from a changefeed's record.
type feedConfig struct {
	avro       avro.Config
	dispatch   dispatch.Config
	registry   registry.Config
	mount      mount.Config
	filter     schema.Filter
	ignoreTxns map[uint64]struct{}
}

// parseFeed builds the encoder's view of a changefeed. The coordinator
// validated the record at create; what is checked again here is what the
// encoder cannot do, so a record written by a newer coordinator (or by
// hand) fails the pipeline with the reason instead of being half-applied.
func parseFeed(info *tidestreamv1.ChangefeedInfo, tls Config) (*feedConfig, error) {
	cfg := info.GetConfig()
	sink := cfg.GetSink()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("changefeed %s/%s: %s", nsOf(info.GetNamespace()), info.GetId(), fmt.Sprintf(format, args...))
	}
	if p := sink.GetProtocol(); !strings.EqualFold(p, "avro") {
		return nil, bad("protocol %q: the encoder writes avro only", p)
	}
	if lvl := cfg.GetIntegrity().GetIntegrityCheckLevel(); lvl != "" && lvl != "none" {
		return nil, bad("integrity-check-level %q is not supported (the Avro checksum fields are not implemented)", lvl)
	}
	if len(sink.GetColumnSelectors()) > 0 {
		return nil, bad("sink.column-selectors are not supported")
	}
	if len(cfg.GetFilter().GetEventFilters()) > 0 {
		return nil, bad("filter.event-filters are not supported")
	}
	if sink.GetSchemaRegistry() == "" {
		return nil, bad("no schema registry: protocol avro needs one")
	}
	fc := &feedConfig{
		avro: avro.Config{
			DecimalHandling:        info.GetAvro().GetDecimalHandlingMode(),
			BigintUnsignedHandling: info.GetAvro().GetBigintUnsignedHandlingMode(),
			EnableTiDBExtension:    info.GetAvro().GetEnableTidbExtension(),
			Namespace:              nsOf(info.GetNamespace()),
		},
		registry: registry.Config{
			URL:    sink.GetSchemaRegistry(),
			CAFile: tls.RegistryCAFile, CertFile: tls.RegistryCertFile, KeyFile: tls.RegistryKeyFile,
		},
		mount: mount.Config{OutputRawChangeEvent: sink.GetOutputRawChangeEvent()},
	}
	def := avro.DefaultConfig()
	if fc.avro.DecimalHandling == "" {
		fc.avro.DecimalHandling = def.DecimalHandling
	}
	if fc.avro.BigintUnsignedHandling == "" {
		fc.avro.BigintUnsignedHandling = def.BigintUnsignedHandling
	}
	if err := fc.avro.Validate(); err != nil {
		return nil, bad("%v", err)
	}
	if err := fc.registry.Validate(); err != nil {
		return nil, bad("%v", err)
	}
	topic := info.GetKafka().GetTopic()
	if topic == "" {
		t, err := dispatch.DefaultTopic(info.GetSinkUri())
		if err != nil {
			return nil, bad("sink-uri: %v", err)
		}
		topic = t
	}
	fc.dispatch = dispatch.Config{Rules: sink.GetDispatchers(), DefaultTopic: topic, CaseSensitive: cfg.GetCaseSensitive()}
	f, err := schema.NewFilter(cfg.GetFilter().GetRules(), cfg.GetCaseSensitive())
	if err != nil {
		return nil, bad("filter.rules: %v", err)
	}
	fc.filter = f
	if ts := cfg.GetFilter().GetIgnoreTxnStartTs(); len(ts) > 0 {
		fc.ignoreTxns = make(map[uint64]struct{}, len(ts))
		for _, t := range ts {
			fc.ignoreTxns[t] = struct{}{}
		}
	}
	return fc, nil
}

func nsOf(ns string) string {
	if ns == "" {
		return "default"
	}
	return ns
}
