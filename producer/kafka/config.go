package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kversion"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// Defaults of the sink URI parameters (TiCDC's, spec §6.2). FromSink applies
// them only where the message's zero value is not a legal setting; the
// coordinator stores every parameter with its default filled in.
const (
	// DefaultPartitionNum is the partition count of a topic this package
	// creates when partition-num is unset (TiCDC: 3).
	DefaultPartitionNum = 3
	// DefaultReplicationFactor is TiCDC's replication-factor default.
	DefaultReplicationFactor = 1
	// DefaultMaxMessageBytes is TiCDC's max-message-bytes default (10 MiB),
	// later clamped to the topic's (or broker's) limit minus
	// MessageOverhead.
	DefaultMaxMessageBytes = 10 * 1024 * 1024
	// DefaultStallAfter: TiCDC's write-timeout default; a broker that
	// acknowledges nothing for that long is not a hiccup.
	DefaultStallAfter = 10 * time.Second
	// DefaultMaxRetry is TiCDC's max-retry default.
	DefaultMaxRetry = 5
	// DefaultTimeout is TiCDC's dial-, read- and write-timeout default.
	DefaultTimeout = 10 * time.Second
	// DefaultClientID is used when kafka-client-id is unset and the caller
	// did not derive TiCDC's default with TiCDCClientID.
	DefaultClientID = "tidestream_producer"
	// DefaultMetadataRefresh is how often a topic's partition count is
	// re-read (TiCDC refreshes every 10 minutes).
	DefaultMetadataRefresh = 10 * time.Minute
	// DefaultMaxBufferedBytes bounds what the client holds unacknowledged;
	// Produce blocks beyond it (STYLE §5: franz-go's own backpressure). It
	// is raised to twice MaxMessageBytes when that is larger, because kgo
	// fails a record bigger than the buffer outright.
	DefaultMaxBufferedBytes = 64 << 20
	// DefaultMaxBufferedRecords bounds the record count likewise (kgo's
	// default is 50,000; 200 B records at 64 MiB would be ~300k, so the
	// count is what usually binds for small rows).
	DefaultMaxBufferedRecords = 50_000
)

// MessageOverhead is what TiCDC subtracts from the topic's max.message.bytes
// (or the broker's message.max.bytes) to get the largest record it sends,
// and RecordOverhead what it adds to len(key)+len(value) when comparing
// against that limit (tiflow: maxMessageBytesOverhead, and the 36 bytes of
// a record's fixed fields in its size estimate).
const (
	MessageOverhead = 128
	RecordOverhead  = 36
)

var (
	// clientIDPattern is TiCDC's rule for kafka-client-id.
	clientIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	// kafkaVersionPattern is the coordinator's rule for kafka-version.
	kafkaVersionPattern = regexp.MustCompile(`^v?[0-9]+(\.[0-9]+){1,3}$`)
)

// Config is the producer's Kafka configuration: the changefeed's validated
// KafkaSink plus tuning the sink URI does not carry. Build it with FromSink
// and check it with Validate (New calls Validate).
type Config struct {
	// Brokers are the seed brokers, host:port.
	Brokers []string
	// Topic is the sink URI's default topic. Nothing is written to it with
	// Avro, but CheckDefaultTopic validates or creates it at start, as
	// TiCDC does.
	Topic string
	// PartitionNum is partition-num: 0 when unset. It is the partition
	// count of every topic this package creates (DefaultPartitionNum when
	// 0) and must not exceed the default topic's real count.
	PartitionNum int32
	// ReplicationFactor is replication-factor for created topics.
	ReplicationFactor int16
	// KafkaVersion is kafka-version, "" when unset: request versions are
	// then negotiated with each broker (ApiVersions). When set to a release
	// franz-go knows, requests are capped at that release's versions
	// (kgo.MaxVersions); an unknown release is negotiated like unset.
	KafkaVersion string
	// MaxMessageBytes is max-message-bytes: the largest record
	// (len(key)+len(value)+RecordOverhead) accepted, before it is clamped
	// per topic to max.message.bytes − MessageOverhead. Any positive value
	// is accepted, as in TiCDC.
	MaxMessageBytes int32
	// MaxRetry is max-retry: how many times a failed produce is retried
	// before its records fail (kgo.RecordRetries). With the idempotent
	// producer kgo goes past it while a batch's fate is unknown, since
	// failing then could reorder or duplicate.
	MaxRetry int32
	// Compression is none, gzip, snappy, lz4 or zstd.
	Compression string
	// ClientID is kafka-client-id; DefaultClientID when "".
	ClientID string
	// AutoCreateTopic is auto-create-topic.
	AutoCreateTopic bool
	// RequiredAcks is required-acks: -1 (all in-sync replicas), 0 or 1.
	// Anything but -1 disables the idempotent producer (Kafka requires
	// acks=all for it) and with it the broker-side deduplication.
	RequiredAcks int16
	DialTimeout  time.Duration
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	TLS          TLSConfig
	SASL         SASLConfig

	// Linger is how long a partition waits for more records before its
	// batch is sent, overriding kgo's 10ms with TiCDC's 0 (flush at once):
	// records that arrive while requests are in flight are batched anyway.
	Linger time.Duration
	// MaxBufferedRecords and MaxBufferedBytes bound the unacknowledged
	// records the client holds; Produce blocks beyond them. 0 picks the
	// defaults above.
	MaxBufferedRecords int
	MaxBufferedBytes   int
	// MetadataRefresh is how often a topic's partition count is re-read;
	// 0 picks DefaultMetadataRefresh.
	MetadataRefresh time.Duration
	// StallAfter is how long records may wait without any being
	// acknowledged before Stalled reports it; 0 picks DefaultStallAfter.
	StallAfter time.Duration
	// Logger receives the client's warnings and errors; nil discards.
	Logger *slog.Logger
}

// TLSConfig is the TLS part of the sink URI: enable-tls, ca, cert, key,
// insecure-skip-verify.
type TLSConfig struct {
	Enabled            bool
	CAPath             string
	CertPath           string
	KeyPath            string
	InsecureSkipVerify bool
}

// SASLConfig is the SASL part of the sink URI and [sink.kafka-config].
type SASLConfig struct {
	// Mechanism is plain, scram-sha-256, scram-sha-512, oauthbearer or ""
	// (SASL off). gssapi is recognised and refused: there is no Kerberos
	// client here.
	Mechanism string
	User      string
	Password  string

	OAuthClientID string
	// OAuthClientSecret is the decoded secret.
	OAuthClientSecret string
	OAuthTokenURL     string
	OAuthScopes       []string
	// OAuthGrantType is client_credentials (the only grant supported, as
	// in TiCDC); "" means the same.
	OAuthGrantType string
	OAuthAudience  string
}

// String masks the secrets, so a Config can be logged.
func (s SASLConfig) String() string {
	mask := func(v string) string {
		if v == "" {
			return ""
		}
		return "******"
	}
	return fmt.Sprintf("{Mechanism:%s User:%s Password:%s OAuthClientID:%s OAuthClientSecret:%s OAuthTokenURL:%s OAuthScopes:%v OAuthAudience:%s}",
		s.Mechanism, s.User, mask(s.Password), s.OAuthClientID, mask(s.OAuthClientSecret), s.OAuthTokenURL, s.OAuthScopes, s.OAuthAudience)
}

// FromSink maps the changefeed's KafkaSink onto a Config and validates it.
// Zero values that are not legal settings (max_message_bytes,
// replication_factor, a missing timeout) take TiCDC's defaults; zero values
// that are legal (required_acks 0, max_retry 0, auto_create_topic false)
// are taken as given, so the coordinator must fill defaults, as it does.
// A negative max_retry is ignored (DefaultMaxRetry), as in TiCDC.
func FromSink(s *tidestreamv1.KafkaSink) (Config, error) {
	if s == nil {
		return Config{}, configErr("kafka", "no Kafka sink configuration")
	}
	if s.GetReplicationFactor() > 1<<15-1 {
		return Config{}, configErr("replication-factor", "%d is out of range", s.GetReplicationFactor())
	}
	if a := s.GetRequiredAcks(); a < -1 || a > 1 {
		return Config{}, configErr("required-acks", "%d is not one of -1, 0, 1", a)
	}
	c := Config{
		Brokers:           append([]string(nil), s.GetBrokers()...),
		Topic:             s.GetTopic(),
		PartitionNum:      s.GetPartitionNum(),
		ReplicationFactor: int16(s.GetReplicationFactor()),
		KafkaVersion:      s.GetKafkaVersion(),
		MaxMessageBytes:   s.GetMaxMessageBytes(),
		MaxRetry:          s.GetMaxRetry(),
		Compression:       strings.ToLower(s.GetCompression()),
		ClientID:          s.GetClientId(),
		AutoCreateTopic:   s.GetAutoCreateTopic(),
		RequiredAcks:      int16(s.GetRequiredAcks()),
		DialTimeout:       DefaultTimeout,
		ReadTimeout:       DefaultTimeout,
		WriteTimeout:      DefaultTimeout,
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = DefaultReplicationFactor
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.MaxRetry < 0 {
		c.MaxRetry = DefaultMaxRetry
	}
	if c.Compression == "" {
		c.Compression = "none"
	}
	if d := s.GetDialTimeout(); d != nil {
		c.DialTimeout = d.AsDuration()
	}
	if d := s.GetReadTimeout(); d != nil {
		c.ReadTimeout = d.AsDuration()
	}
	if d := s.GetWriteTimeout(); d != nil {
		c.WriteTimeout = d.AsDuration()
	}
	if t := s.GetTls(); t != nil {
		c.TLS = TLSConfig{
			Enabled:            t.GetEnabled(),
			CAPath:             t.GetCaPath(),
			CertPath:           t.GetCertPath(),
			KeyPath:            t.GetKeyPath(),
			InsecureSkipVerify: t.GetInsecureSkipVerify(),
		}
	}
	if a := s.GetSasl(); a != nil {
		c.SASL = SASLConfig{
			Mechanism:         strings.ToLower(a.GetMechanism()),
			User:              a.GetUser(),
			Password:          a.GetPassword(),
			OAuthClientID:     a.GetOauthClientId(),
			OAuthClientSecret: a.GetOauthClientSecret(),
			OAuthTokenURL:     a.GetOauthTokenUrl(),
			OAuthScopes:       append([]string(nil), a.GetOauthScopes()...),
			OAuthGrantType:    a.GetOauthGrantType(),
			OAuthAudience:     a.GetOauthAudience(),
		}
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// TiCDCClientID is TiCDC's default kafka-client-id,
// TiCDC_producer_<advertise-addr>_<namespace>_<changefeed-id> with ? : , "
// replaced by _, for callers that know the process address and changefeed.
func TiCDCClientID(advertiseAddr, namespace, changefeedID string) string {
	id := fmt.Sprintf("TiCDC_producer_%s_%s_%s", advertiseAddr, namespace, changefeedID)
	return strings.NewReplacer("?", "_", ":", "_", ",", "_", `"`, "_").Replace(id)
}

// Validate checks every field on its own and the rules tying several
// together; each error is a *ConfigError naming the sink URI parameter.
func (c *Config) Validate() error {
	if len(c.Brokers) == 0 {
		return configErr("brokers", "no broker address given")
	}
	for _, b := range c.Brokers {
		if strings.TrimSpace(b) == "" {
			return configErr("brokers", "empty broker address")
		}
	}
	if c.Topic == "" {
		return configErr("topic", "no topic is specified in sink-uri")
	}
	if c.PartitionNum < 0 {
		return configErr("partition-num", "%d must be greater than 0 (or unset)", c.PartitionNum)
	}
	if c.ReplicationFactor < 1 {
		return configErr("replication-factor", "%d must be at least 1", c.ReplicationFactor)
	}
	if c.KafkaVersion != "" && !kafkaVersionPattern.MatchString(c.KafkaVersion) {
		return configErr("kafka-version", "must be a Kafka version such as 2.4.0, got %q", c.KafkaVersion)
	}
	if c.MaxMessageBytes <= 0 {
		return configErr("max-message-bytes", "%d must be > 0", c.MaxMessageBytes)
	}
	if c.MaxRetry < 0 {
		return configErr("max-retry", "%d must not be negative", c.MaxRetry)
	}
	if _, ok := codecs[c.Compression]; !ok {
		return configErr("compression", "%q is not one of none, gzip, snappy, lz4, zstd", c.Compression)
	}
	if c.ClientID != "" && !clientIDPattern.MatchString(c.ClientID) {
		return configErr("kafka-client-id", "%q must match %s", c.ClientID, clientIDPattern)
	}
	switch c.RequiredAcks {
	case -1, 0, 1:
	default:
		return configErr("required-acks", "%d is not one of -1, 0, 1", c.RequiredAcks)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"dial-timeout", c.DialTimeout}, {"read-timeout", c.ReadTimeout}, {"write-timeout", c.WriteTimeout}} {
		if d.v <= 0 {
			return configErr(d.name, "%v must be positive", d.v)
		}
	}
	if (c.TLS.CertPath == "") != (c.TLS.KeyPath == "") {
		return configErr("cert", "cert and key must be given together")
	}
	if !c.TLS.Enabled && (c.TLS.CAPath != "" || c.TLS.CertPath != "") {
		// The coordinator turns TLS on when files are given; a message
		// with files and TLS off was built some other way.
		return configErr("enable-tls", "TLS files given but TLS is off")
	}
	switch c.SASL.Mechanism {
	case "":
	case "plain", "scram-sha-256", "scram-sha-512":
		if c.SASL.User == "" {
			return configErr("sasl-user", "required with sasl-mechanism=%s", c.SASL.Mechanism)
		}
		if c.SASL.Password == "" {
			return configErr("sasl-password", "required with sasl-mechanism=%s", c.SASL.Mechanism)
		}
	case "oauthbearer":
		if c.SASL.OAuthTokenURL == "" {
			return configErr("sasl-oauth-token-url", "required with sasl-mechanism=oauthbearer")
		}
		if c.SASL.OAuthClientID == "" {
			return configErr("sasl-oauth-client-id", "required with sasl-mechanism=oauthbearer")
		}
		if c.SASL.OAuthClientSecret == "" {
			return configErr("sasl-oauth-client-secret", "required with sasl-mechanism=oauthbearer")
		}
		if g := c.SASL.OAuthGrantType; g != "" && g != "client_credentials" {
			return configErr("sasl-oauth-grant-type", "%q is not supported; only client_credentials", g)
		}
	case "gssapi":
		return &ConfigError{Field: "sasl-mechanism", Reason: "gssapi (Kerberos) is not supported by tidestream; use plain, scram-sha-256, scram-sha-512 or oauthbearer", unsupported: true}
	default:
		return configErr("sasl-mechanism", "%q is not one of plain, scram-sha-256, scram-sha-512, gssapi, oauthbearer", c.SASL.Mechanism)
	}
	if c.MaxBufferedRecords < 0 || c.MaxBufferedBytes < 0 || c.MetadataRefresh < 0 || c.Linger < 0 || c.StallAfter < 0 {
		return configErr("tuning", "buffer limits, linger, metadata refresh and stall-after must not be negative")
	}
	return nil
}

// codecs maps compression to kgo's codecs. "none" must be explicit: kgo's
// default preference is snappy.
var codecs = map[string]kgo.CompressionCodec{
	"none":   kgo.NoCompression(),
	"gzip":   kgo.GzipCompression(),
	"snappy": kgo.SnappyCompression(),
	"lz4":    kgo.Lz4Compression(),
	"zstd":   kgo.ZstdCompression(),
}

// Idempotent reports whether the producer is idempotent: only with
// required-acks=-1, which Kafka demands for it.
func (c *Config) Idempotent() bool { return c.RequiredAcks == -1 }

// maxVersions is the request version cap for kafka-version, nil when unset
// or when the release is unknown to franz-go (newer than it, or not a
// release): then versions are negotiated with each broker, which is what
// the cap would approximate anyway. New logs the unknown case.
func (c *Config) maxVersions() *kversion.Versions {
	if c.KafkaVersion == "" {
		return nil
	}
	return kversion.FromString(strings.TrimPrefix(c.KafkaVersion, "v"))
}

// batchCap is kgo's batch size cap for a record limit: one record plus its
// batch framing, within kgo's [512, 1 GiB].
func batchCap(recordLimit int64) int32 {
	return int32(min(max(recordLimit+MessageOverhead, 512), 1<<30))
}

func (c *Config) maxBufferedBytes() int {
	n := c.MaxBufferedBytes
	if n == 0 {
		n = DefaultMaxBufferedBytes
	}
	return max(n, 2*int(c.MaxMessageBytes))
}

// kgoOpts maps the configuration onto franz-go options. batchMaxBytes gives
// the per-topic batch cap (kgo.ProducerBatchMaxBytesFn); it is called once
// per partition when kgo first sees it, after the producer has read the
// topic's limit.
func (c *Config) kgoOpts(batchMaxBytes func(topic string) int32) ([]kgo.Opt, error) {
	clientID := c.ClientID
	if clientID == "" {
		clientID = DefaultClientID
	}
	records := c.MaxBufferedRecords
	if records == 0 {
		records = DefaultMaxBufferedRecords
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ClientID(clientID),
		kgo.DialTimeout(c.DialTimeout),
		// kgo has one deadline knob for a request on the wire: writes get
		// the overhead, reads the overhead plus the request's own timeout.
		// sarama's separate read and write timeouts therefore become the
		// larger of the two.
		kgo.RequestTimeoutOverhead(max(c.ReadTimeout, c.WriteTimeout)),
		kgo.ProducerBatchCompression(codecs[c.Compression]),
		kgo.ProducerBatchMaxBytesFn(batchMaxBytes),
		// A produce request must hold a full batch; kgo's 100 MiB default
		// (Kafka's socket.request.max.bytes) is raised only for larger
		// max-message-bytes.
		kgo.BrokerMaxWriteBytes(int32(min(1<<30, max(100<<20, int64(batchCap(int64(c.MaxMessageBytes)))+1<<20)))),
		kgo.RecordRetries(int(c.MaxRetry)),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(c.Linger),
		kgo.MaxBufferedRecords(records),
		kgo.MaxBufferedBytes(c.maxBufferedBytes()),
		// kgo's default, stated: topics are created by EnsureTopic with the
		// configured partition count and replication factor, never
		// implicitly by a metadata request with the broker's defaults.
		// (AllowAutoTopicCreation is deliberately not set.)
	}
	switch c.RequiredAcks {
	case -1:
		// Idempotent (kgo's default). Per-partition order across retries:
		// kgo keeps at most 5 produce requests in flight per broker and
		// every batch carries the producer id and a per-partition sequence
		// number. The broker appends a batch only if its sequence is the
		// next one expected and answers OUT_OF_ORDER_SEQUENCE_NUMBER
		// otherwise, so when batch n fails (NOT_LEADER, timeout) batch n+1
		// cannot land before it: kgo resends n, then n+1, in order. A
		// response lost after the write makes kgo resend the batch with
		// the same sequence; the broker recognises the duplicate and acks
		// it with the original offset, so nothing is written twice. kgo
		// also refuses to fail (time out, exhaust retries, cancel) a batch
		// whose fate is unknown, which would otherwise open a gap.
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
	case 1, 0:
		// Kafka refuses idempotence without acks=all (kgo: "idempotency
		// requires acks=all"), so it is off and with it deduplication.
		// One request in flight per broker keeps a retried batch ahead of
		// the next one, so order still holds; a response lost after the
		// write duplicates the batch (at-least-once), and with acks=0 a
		// lost record is never noticed. New logs this.
		acks := kgo.LeaderAck()
		if c.RequiredAcks == 0 {
			acks = kgo.NoAck()
		}
		opts = append(opts,
			kgo.RequiredAcks(acks),
			kgo.DisableIdempotentWrite(),
			kgo.MaxProduceRequestsInflightPerBroker(1),
		)
	}
	if v := c.maxVersions(); v != nil {
		opts = append(opts, kgo.MaxVersions(v))
	}
	if c.TLS.Enabled {
		tc, err := c.TLS.build()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if m, err := c.SASL.mechanism(); err != nil {
		return nil, err
	} else if m != nil {
		opts = append(opts, kgo.SASL(m))
	}
	if c.Logger != nil {
		opts = append(opts, kgo.WithLogger(slogLogger{c.Logger}))
	}
	return opts, nil
}

// build loads the TLS files. Without a CA the system roots verify the
// brokers; TLS 1.2 is the minimum, as in TiCDC.
func (t TLSConfig) build() (*tls.Config, error) {
	tc := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Only honoured with TLS on, as in TiCDC. It disables verification
		// of the broker's certificate chain and host name.
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // the user asked for it
	}
	if t.CAPath != "" {
		pem, err := os.ReadFile(t.CAPath)
		if err != nil {
			return nil, configErr("ca", "reading %s: %v", t.CAPath, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, configErr("ca", "%s holds no PEM certificate", t.CAPath)
		}
		tc.RootCAs = pool
	}
	if t.CertPath != "" {
		cert, err := tls.LoadX509KeyPair(t.CertPath, t.KeyPath)
		if err != nil {
			return nil, configErr("cert", "loading %s and %s: %v", t.CertPath, t.KeyPath, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// mechanism returns the franz-go SASL mechanism, nil when SASL is off.
func (s SASLConfig) mechanism() (sasl.Mechanism, error) {
	switch s.Mechanism {
	case "":
		return nil, nil
	case "plain":
		return plain.Auth{User: s.User, Pass: s.Password}.AsMechanism(), nil
	case "scram-sha-256":
		return scram.Auth{User: s.User, Pass: s.Password}.AsSha256Mechanism(), nil
	case "scram-sha-512":
		return scram.Auth{User: s.User, Pass: s.Password}.AsSha512Mechanism(), nil
	case "oauthbearer":
		ts := newTokenSource(s, nil)
		return oauth.Oauth(ts.auth), nil
	case "gssapi":
		return nil, &ConfigError{Field: "sasl-mechanism", Reason: "gssapi (Kerberos) is not supported by tidestream", unsupported: true}
	}
	return nil, configErr("sasl-mechanism", "%q is not supported", s.Mechanism)
}

// slogLogger adapts slog to kgo's logger, passing warnings and errors only:
// kgo's info level logs every metadata refresh.
type slogLogger struct{ l *slog.Logger }

func (slogLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (s slogLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lv := slog.LevelWarn
	if level == kgo.LogLevelError {
		lv = slog.LevelError
	}
	s.l.Log(context.Background(), lv, msg, keyvals...)
}
