package kafka

import (
	"crypto/tls"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kversion"
	"github.com/twmb/franz-go/pkg/sasl"
	"google.golang.org/protobuf/types/known/durationpb"

	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// client builds (without I/O) the kgo client cfg maps to.
func client(t *testing.T, cfg Config) *kgo.Client {
	t.Helper()
	opts, err := cfg.kgoOpts(func(string) int32 { return batchCap(int64(cfg.MaxMessageBytes)) })
	require.NoError(t, err)
	cl, err := kgo.NewClient(opts...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return cl
}

// TestFromSinkMapping walks every KafkaSink field: what Config holds and
// what kgo option it becomes (read back with OptValue).
func TestFromSinkMapping(t *testing.T) {
	certs := genCerts(t)
	cases := []struct {
		field string
		set   func(*tidestreamv1.KafkaSink)
		check func(t *testing.T, c Config, cl *kgo.Client)
	}{
		{"brokers", func(s *tidestreamv1.KafkaSink) { s.Brokers = []string{"a:9092", "b:9093"} }, func(t *testing.T, c Config, cl *kgo.Client) {
			require.Equal(t, []string{"a:9092", "b:9093"}, c.Brokers)
			require.Equal(t, []string{"a:9092", "b:9093"}, cl.OptValue(kgo.SeedBrokers))
		}},
		{"topic", func(s *tidestreamv1.KafkaSink) { s.Topic = "ticdc-meta" }, func(t *testing.T, c Config, _ *kgo.Client) {
			require.Equal(t, "ticdc-meta", c.Topic)
		}},
		{"partition_num", func(s *tidestreamv1.KafkaSink) { s.PartitionNum = 12 }, func(t *testing.T, c Config, _ *kgo.Client) {
			require.Equal(t, int32(12), c.PartitionNum) // used by EnsureTopic (TestAutoCreateTopic)
		}},
		{"partition_num unset", func(s *tidestreamv1.KafkaSink) { s.PartitionNum = 0 }, func(t *testing.T, c Config, _ *kgo.Client) {
			require.Equal(t, int32(0), c.PartitionNum) // real count, or 3 on create
		}},
		{"replication_factor", func(s *tidestreamv1.KafkaSink) { s.ReplicationFactor = 3 }, func(t *testing.T, c Config, _ *kgo.Client) {
			require.Equal(t, int16(3), c.ReplicationFactor)
		}},
		{"replication_factor unset", func(s *tidestreamv1.KafkaSink) { s.ReplicationFactor = 0 }, func(t *testing.T, c Config, _ *kgo.Client) {
			require.Equal(t, int16(1), c.ReplicationFactor)
		}},
		{"kafka_version", func(s *tidestreamv1.KafkaSink) { s.KafkaVersion = "2.4.0" }, func(t *testing.T, c Config, cl *kgo.Client) {
			v, ok := cl.OptValue(kgo.MaxVersions).(*kversion.Versions)
			require.True(t, ok)
			require.True(t, v.Equal(kversion.V2_4_0()), "got %v", v)
		}},
		{"kafka_version unknown to franz-go", func(s *tidestreamv1.KafkaSink) { s.KafkaVersion = "9.1.0" }, func(t *testing.T, c Config, cl *kgo.Client) {
			v, _ := cl.OptValue(kgo.MaxVersions).(*kversion.Versions)
			require.True(t, v.Equal(kversion.Stable())) // not capped: negotiated
		}},
		{"kafka_version unset", func(s *tidestreamv1.KafkaSink) { s.KafkaVersion = "" }, func(t *testing.T, c Config, cl *kgo.Client) {
			v, _ := cl.OptValue(kgo.MaxVersions).(*kversion.Versions)
			require.True(t, v.Equal(kversion.Stable())) // kgo's default; negotiated down per broker
		}},
		{"max_message_bytes", func(s *tidestreamv1.KafkaSink) { s.MaxMessageBytes = 4096 }, func(t *testing.T, c Config, cl *kgo.Client) {
			require.Equal(t, int32(4096), c.MaxMessageBytes)
			require.NotNil(t, cl.OptValue(kgo.ProducerBatchMaxBytesFn))
			// kgo fails a record bigger than its buffer: never below 2×.
			require.Equal(t, int64(DefaultMaxBufferedBytes), cl.OptValue(kgo.MaxBufferedBytes))
		}},
		{"max_message_bytes small", func(s *tidestreamv1.KafkaSink) { s.MaxMessageBytes = 100 }, func(t *testing.T, c Config, cl *kgo.Client) {
			require.Equal(t, int32(100), c.MaxMessageBytes) // TiCDC accepts it; kgo's batch cap is kept ≥ 512
		}},
		{"max_message_bytes large", func(s *tidestreamv1.KafkaSink) { s.MaxMessageBytes = 100 << 20 }, func(t *testing.T, c Config, cl *kgo.Client) {
			require.Equal(t, int64(200<<20), cl.OptValue(kgo.MaxBufferedBytes))
			require.Equal(t, int32(101<<20+MessageOverhead), cl.OptValue(kgo.BrokerMaxWriteBytes))
		}},
		{"max_retry", func(s *tidestreamv1.KafkaSink) { s.MaxRetry = 9 }, func(t *testing.T, c Config, cl *kgo.Client) {
			require.Equal(t, int64(9), cl.OptValue(kgo.RecordRetries))
		}},
		{"max_retry negative ignored", func(s *tidestreamv1.KafkaSink) { s.MaxRetry = -1 }, func(t *testing.T, c Config, cl *kgo.Client) {
			require.Equal(t, int64(DefaultMaxRetry), cl.OptValue(kgo.RecordRetries))
		}},
		{"compression none", func(s *tidestreamv1.KafkaSink) { s.Compression = "none" }, func(t *testing.T, c Config, cl *kgo.Client) {
			require.Equal(t, []kgo.CompressionCodec{kgo.NoCompression()}, cl.OptValue(kgo.ProducerBatchCompression))
		}},
		{"compression empty", func(s *tidestreamv1.KafkaSink) { s.Compression = "" }, func(t *testing.T, c Config, cl *kgo.Client) {
			require.Equal(t, []kgo.CompressionCodec{kgo.NoCompression()}, cl.OptValue(kgo.ProducerBatchCompression))
		}},
		{"compression gzip", func(s *tidestreamv1.KafkaSink) { s.Compression = "gzip" }, func(t *testing.T, c Config, cl *kgo.Client) {
			require.Equal(t, []kgo.CompressionCodec{kgo.GzipCompression()}, cl.OptValue(kgo.ProducerBatchCompression))
		}},
		{"compression snappy", func(s *tidestreamv1.KafkaSink) { s.Compression = "snappy" }, func(t *testing.T, c Config, cl *kgo.Client) {
			require.Equal(t, []kgo.CompressionCodec{kgo.SnappyCompression()}, cl.OptValue(kgo.ProducerBatchCompression))
		}},
		{"compression lz4", func(s *tidestreamv1.KafkaSink) { s.Compression = "LZ4" }, func(t *testing.T, c Config, cl *kgo.Client) {
			require.Equal(t, []kgo.CompressionCodec{kgo.Lz4Compression()}, cl.OptValue(kgo.ProducerBatchCompression))
		}},
		{"compression zstd", func(s *tidestreamv1.KafkaSink) { s.Compression = "zstd" }, func(t *testing.T, c Config, cl *kgo.Client) {
			require.Equal(t, []kgo.CompressionCodec{kgo.ZstdCompression()}, cl.OptValue(kgo.ProducerBatchCompression))
		}},
		{"client_id", func(s *tidestreamv1.KafkaSink) { s.ClientId = "TiCDC_producer_h_9300_default_cf" }, func(t *testing.T, c Config, cl *kgo.Client) {
			require.Equal(t, "TiCDC_producer_h_9300_default_cf", cl.OptValue(kgo.ClientID))
		}},
		{"client_id unset", func(s *tidestreamv1.KafkaSink) { s.ClientId = "" }, func(t *testing.T, c Config, cl *kgo.Client) {
			require.Equal(t, DefaultClientID, cl.OptValue(kgo.ClientID))
		}},
		{"auto_create_topic", func(s *tidestreamv1.KafkaSink) { s.AutoCreateTopic = false }, func(t *testing.T, c Config, cl *kgo.Client) {
			require.False(t, c.AutoCreateTopic)
			require.Equal(t, false, cl.OptValue(kgo.AllowAutoTopicCreation)) // never by metadata
		}},
		{"required_acks -1", func(s *tidestreamv1.KafkaSink) { s.RequiredAcks = -1 }, func(t *testing.T, c Config, cl *kgo.Client) {
			require.Equal(t, kgo.AllISRAcks(), cl.OptValue(kgo.RequiredAcks))
			require.Equal(t, false, cl.OptValue(kgo.DisableIdempotentWrite))
			require.True(t, c.Idempotent())
		}},
		{"required_acks 1", func(s *tidestreamv1.KafkaSink) { s.RequiredAcks = 1 }, func(t *testing.T, c Config, cl *kgo.Client) {
			require.Equal(t, kgo.LeaderAck(), cl.OptValue(kgo.RequiredAcks))
			require.Equal(t, true, cl.OptValue(kgo.DisableIdempotentWrite))
			require.Equal(t, 1, cl.OptValue(kgo.MaxProduceRequestsInflightPerBroker))
		}},
		{"required_acks 0", func(s *tidestreamv1.KafkaSink) { s.RequiredAcks = 0 }, func(t *testing.T, c Config, cl *kgo.Client) {
			require.Equal(t, kgo.NoAck(), cl.OptValue(kgo.RequiredAcks))
			require.Equal(t, true, cl.OptValue(kgo.DisableIdempotentWrite))
			require.Equal(t, 1, cl.OptValue(kgo.MaxProduceRequestsInflightPerBroker))
		}},
		{"dial_timeout", func(s *tidestreamv1.KafkaSink) { s.DialTimeout = durationpb.New(3 * time.Second) }, func(t *testing.T, c Config, cl *kgo.Client) {
			require.Equal(t, 3*time.Second, cl.OptValue(kgo.DialTimeout))
		}},
		{"dial_timeout unset", func(s *tidestreamv1.KafkaSink) { s.DialTimeout = nil }, func(t *testing.T, c Config, cl *kgo.Client) {
			require.Equal(t, DefaultTimeout, cl.OptValue(kgo.DialTimeout))
		}},
		{"read_timeout", func(s *tidestreamv1.KafkaSink) { s.ReadTimeout = durationpb.New(25 * time.Second) }, func(t *testing.T, c Config, cl *kgo.Client) {
			require.Equal(t, 25*time.Second, c.ReadTimeout)
			require.Equal(t, 25*time.Second, cl.OptValue(kgo.RequestTimeoutOverhead))
		}},
		{"write_timeout", func(s *tidestreamv1.KafkaSink) { s.WriteTimeout = durationpb.New(30 * time.Second) }, func(t *testing.T, c Config, cl *kgo.Client) {
			require.Equal(t, 30*time.Second, c.WriteTimeout)
			require.Equal(t, 30*time.Second, cl.OptValue(kgo.RequestTimeoutOverhead))
		}},
		{"tls enabled, system roots", func(s *tidestreamv1.KafkaSink) { s.Tls = &tidestreamv1.TLSConfig{Enabled: true} }, func(t *testing.T, c Config, cl *kgo.Client) {
			tc, ok := cl.OptValue(kgo.DialTLSConfig).(*tls.Config)
			require.True(t, ok)
			require.Nil(t, tc.RootCAs)
			require.Equal(t, uint16(tls.VersionTLS12), tc.MinVersion)
		}},
		{"tls off", func(s *tidestreamv1.KafkaSink) { s.Tls = nil }, func(t *testing.T, c Config, cl *kgo.Client) {
			tc, _ := cl.OptValue(kgo.DialTLSConfig).(*tls.Config)
			require.Nil(t, tc)
		}},
		{"tls ca cert key", func(s *tidestreamv1.KafkaSink) {
			s.Tls = &tidestreamv1.TLSConfig{Enabled: true, CaPath: certs.caPath, CertPath: certs.clientCert, KeyPath: certs.clientKey}
		}, func(t *testing.T, c Config, cl *kgo.Client) {
			tc := cl.OptValue(kgo.DialTLSConfig).(*tls.Config)
			require.NotNil(t, tc.RootCAs)
			require.Len(t, tc.Certificates, 1)
			require.False(t, tc.InsecureSkipVerify)
		}},
		{"tls insecure_skip_verify", func(s *tidestreamv1.KafkaSink) {
			s.Tls = &tidestreamv1.TLSConfig{Enabled: true, InsecureSkipVerify: true}
		}, func(t *testing.T, c Config, cl *kgo.Client) {
			require.True(t, cl.OptValue(kgo.DialTLSConfig).(*tls.Config).InsecureSkipVerify)
		}},
		{"sasl plain", func(s *tidestreamv1.KafkaSink) {
			s.Sasl = &tidestreamv1.SASLConfig{Mechanism: "PLAIN", User: "u", Password: "p"}
		}, func(t *testing.T, c Config, cl *kgo.Client) {
			requireMechanism(t, cl, "PLAIN")
			require.Equal(t, "plain", c.SASL.Mechanism)
			require.NotContains(t, c.SASL.String(), "p}")
		}},
		{"sasl scram-sha-256", func(s *tidestreamv1.KafkaSink) {
			s.Sasl = &tidestreamv1.SASLConfig{Mechanism: "scram-sha-256", User: "u", Password: "p"}
		}, func(t *testing.T, c Config, cl *kgo.Client) { requireMechanism(t, cl, "SCRAM-SHA-256") }},
		{"sasl scram-sha-512", func(s *tidestreamv1.KafkaSink) {
			s.Sasl = &tidestreamv1.SASLConfig{Mechanism: "scram-sha-512", User: "u", Password: "p"}
		}, func(t *testing.T, c Config, cl *kgo.Client) { requireMechanism(t, cl, "SCRAM-SHA-512") }},
		{"sasl oauthbearer", func(s *tidestreamv1.KafkaSink) {
			s.Sasl = &tidestreamv1.SASLConfig{Mechanism: "oauthbearer", OauthClientId: "id", OauthClientSecret: "sec",
				OauthTokenUrl: "https://idp/token", OauthScopes: []string{"a", "b"}, OauthGrantType: "client_credentials", OauthAudience: "kafka"}
		}, func(t *testing.T, c Config, cl *kgo.Client) {
			requireMechanism(t, cl, "OAUTHBEARER")
			require.Equal(t, SASLConfig{Mechanism: "oauthbearer", OAuthClientID: "id", OAuthClientSecret: "sec",
				OAuthTokenURL: "https://idp/token", OAuthScopes: []string{"a", "b"}, OAuthGrantType: "client_credentials", OAuthAudience: "kafka"}, c.SASL)
		}},
		{"sasl off", func(s *tidestreamv1.KafkaSink) { s.Sasl = nil }, func(t *testing.T, c Config, cl *kgo.Client) {
			m, _ := cl.OptValue(kgo.SASL).([]sasl.Mechanism)
			require.Empty(t, m)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.field, func(t *testing.T) {
			s := sink([]string{"127.0.0.1:9092"}, "t")
			tc.set(s)
			c, err := FromSink(s)
			require.NoError(t, err)
			tc.check(t, c, client(t, c))
			// Always: manual partitioning, no linger.
		})
	}
}

func requireMechanism(t *testing.T, cl *kgo.Client, name string) {
	t.Helper()
	ms, ok := cl.OptValue(kgo.SASL).([]sasl.Mechanism)
	require.True(t, ok)
	require.Len(t, ms, 1)
	require.Equal(t, name, ms[0].Name())
}

// TestFromSinkInvalid: each bad value is a *ConfigError naming its
// parameter, classified Fatal.
func TestFromSinkInvalid(t *testing.T) {
	cases := []struct {
		field string
		set   func(*tidestreamv1.KafkaSink)
	}{
		{"brokers", func(s *tidestreamv1.KafkaSink) { s.Brokers = nil }},
		{"topic", func(s *tidestreamv1.KafkaSink) { s.Topic = "" }},
		{"partition-num", func(s *tidestreamv1.KafkaSink) { s.PartitionNum = -1 }},
		{"replication-factor", func(s *tidestreamv1.KafkaSink) { s.ReplicationFactor = -2 }},
		{"kafka-version", func(s *tidestreamv1.KafkaSink) { s.KafkaVersion = "two.four" }},
		{"max-message-bytes", func(s *tidestreamv1.KafkaSink) { s.MaxMessageBytes = -5 }},
		{"compression", func(s *tidestreamv1.KafkaSink) { s.Compression = "brotli" }},
		{"kafka-client-id", func(s *tidestreamv1.KafkaSink) { s.ClientId = "a b" }},
		{"required-acks", func(s *tidestreamv1.KafkaSink) { s.RequiredAcks = 2 }},
		{"dial-timeout", func(s *tidestreamv1.KafkaSink) { s.DialTimeout = durationpb.New(0) }},
		{"read-timeout", func(s *tidestreamv1.KafkaSink) { s.ReadTimeout = durationpb.New(-time.Second) }},
		{"write-timeout", func(s *tidestreamv1.KafkaSink) { s.WriteTimeout = durationpb.New(0) }},
		{"cert", func(s *tidestreamv1.KafkaSink) { s.Tls = &tidestreamv1.TLSConfig{Enabled: true, CertPath: "c.pem"} }},
		{"enable-tls", func(s *tidestreamv1.KafkaSink) { s.Tls = &tidestreamv1.TLSConfig{CaPath: "ca.pem"} }},
		{"sasl-mechanism", func(s *tidestreamv1.KafkaSink) { s.Sasl = &tidestreamv1.SASLConfig{Mechanism: "digest-md5"} }},
		{"sasl-user", func(s *tidestreamv1.KafkaSink) { s.Sasl = &tidestreamv1.SASLConfig{Mechanism: "plain", Password: "p"} }},
		{"sasl-password", func(s *tidestreamv1.KafkaSink) {
			s.Sasl = &tidestreamv1.SASLConfig{Mechanism: "scram-sha-512", User: "u"}
		}},
		{"sasl-oauth-token-url", func(s *tidestreamv1.KafkaSink) {
			s.Sasl = &tidestreamv1.SASLConfig{Mechanism: "oauthbearer", OauthClientId: "i", OauthClientSecret: "s"}
		}},
		{"sasl-oauth-grant-type", func(s *tidestreamv1.KafkaSink) {
			s.Sasl = &tidestreamv1.SASLConfig{Mechanism: "oauthbearer", OauthClientId: "i", OauthClientSecret: "s", OauthTokenUrl: "http://x", OauthGrantType: "password"}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.field, func(t *testing.T) {
			s := sink([]string{"127.0.0.1:9092"}, "t")
			tc.set(s)
			_, err := FromSink(s)
			var ce *ConfigError
			require.ErrorAs(t, err, &ce)
			require.Equal(t, tc.field, ce.Field, "%v", err)
			require.ErrorIs(t, err, ErrConfig)
			require.Equal(t, Fatal, Classify(err))
		})
	}
}

func TestGSSAPINotSupported(t *testing.T) {
	s := sink([]string{"127.0.0.1:9092"}, "t")
	s.Sasl = &tidestreamv1.SASLConfig{Mechanism: "gssapi", GssapiAuthType: "keytab", GssapiKeytabPath: "/k", GssapiServiceName: "kafka"}
	_, err := FromSink(s)
	require.ErrorIs(t, err, ErrUnsupported)
	require.ErrorContains(t, err, "gssapi (Kerberos) is not supported")
	require.Equal(t, Fatal, Classify(err))
}

func TestTLSFileErrors(t *testing.T) {
	s := sink([]string{"127.0.0.1:9092"}, "t")
	s.Tls = &tidestreamv1.TLSConfig{Enabled: true, CaPath: "/nonexistent/ca.pem"}
	cfg, err := FromSink(s)
	require.NoError(t, err)
	_, err = New(cfg)
	var ce *ConfigError
	require.True(t, errors.As(err, &ce), "%v", err)
	require.Equal(t, "ca", ce.Field)
}

func TestTiCDCClientID(t *testing.T) {
	id := TiCDCClientID("10.0.0.1:8300", "default", `cf?1,"x"`)
	require.Equal(t, "TiCDC_producer_10.0.0.1_8300_default_cf_1__x_", id)
	require.Regexp(t, clientIDPattern, id)
}
