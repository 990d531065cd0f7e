package sinkuri

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
)

const seedURI = "kafka://127.0.0.1:9092/ticdc-meta?protocol=avro&replication-factor=3&enable-tls=true&auto-create-topic=true&sasl-mechanism=plain&sasl-user=K&sasl-password=S3cr%2Bt"

func TestParseSeed(t *testing.T) {
	u, err := Parse(seedURI)
	require.NoError(t, err)
	require.Equal(t, "kafka", u.Scheme)
	require.Equal(t, []string{"127.0.0.1:9092"}, u.Brokers)
	require.Equal(t, "ticdc-meta", u.Topic)
	require.Equal(t, "avro", u.Protocol)
	require.EqualValues(t, 3, u.ReplicationFactor)
	require.True(t, u.EnableTLS)
	require.True(t, u.AutoCreateTopic)
	require.Equal(t, "plain", u.SASLMechanism)
	require.Equal(t, "K", u.SASLUser)
	require.Equal(t, "S3cr+t", u.SASLPassword)
	// defaults
	require.EqualValues(t, -1, u.RequiredAcks)
	require.EqualValues(t, 10*1024*1024, u.MaxMessageBytes)
	require.EqualValues(t, 5, u.MaxRetry)
	require.Equal(t, "none", u.Compression)
	require.Equal(t, 10*time.Second, u.DialTimeout)
	require.Equal(t, "precise", u.DecimalHandlingMode)
	require.Equal(t, "long", u.BigintUnsignedHandlingMode)
	require.EqualValues(t, 0, u.PartitionNum)
	require.Equal(t, "", u.KafkaVersion)
	require.True(t, u.IsSet("replication-factor"))
	require.False(t, u.IsSet("partition-num"))
	require.Equal(t, "sink-uri: sasl-user", u.Field("sasl-user"))
	require.NotContains(t, u.String(), "S3cr")
}

func TestParseAccepts(t *testing.T) {
	cases := []struct {
		uri   string
		check func(t *testing.T, u *URI)
	}{
		{"kafka://a:1,b:2,[::1]:9092/t.x-y_z?protocol=flat-avro", func(t *testing.T, u *URI) {
			require.Equal(t, []string{"a:1", "b:2", "[::1]:9092"}, u.Brokers)
			require.Equal(t, "t.x-y_z", u.Topic)
			require.Equal(t, "avro", u.Protocol)
		}},
		{"KAFKA+SSL://h:9092//t//?protocol=AVRO", func(t *testing.T, u *URI) {
			require.Equal(t, "kafka+ssl", u.Scheme)
			require.Equal(t, "t", u.Topic)
			require.False(t, u.EnableTLS, "kafka+ssl is a name only")
		}},
		{"kafka://h:9092/t?protocol=avro&partition-num=6&kafka-version=2.4.0&max-message-bytes=1048576&max-retry=0" +
			"&compression=ZSTD&kafka-client-id=my.client_1&auto-create-topic=false&required-acks=1" +
			"&dial-timeout=1s&read-timeout=2m&write-timeout=500ms&max-batch-size=1", func(t *testing.T, u *URI) {
			require.EqualValues(t, 6, u.PartitionNum)
			require.Equal(t, "2.4.0", u.KafkaVersion)
			require.EqualValues(t, 1048576, u.MaxMessageBytes)
			require.EqualValues(t, 0, u.MaxRetry)
			require.Equal(t, "zstd", u.Compression)
			require.Equal(t, "my.client_1", u.ClientID)
			require.False(t, u.AutoCreateTopic)
			require.EqualValues(t, 1, u.RequiredAcks)
			require.Equal(t, time.Second, u.DialTimeout)
			require.Equal(t, 2*time.Minute, u.ReadTimeout)
			require.Equal(t, 500*time.Millisecond, u.WriteTimeout)
			require.EqualValues(t, 1, u.MaxBatchSize)
		}},
		{"kafka://h:9092/t?protocol=avro&enable-tidb-extension=true&avro-decimal-handling-mode=string" +
			"&avro-bigint-unsigned-handling-mode=string&avro-enable-watermark=true", func(t *testing.T, u *URI) {
			require.True(t, u.EnableTiDBExtension)
			require.Equal(t, "string", u.DecimalHandlingMode)
			require.Equal(t, "string", u.BigintUnsignedHandlingMode)
			require.True(t, u.EnableWatermark)
		}},
		{"kafka://h:9092/t?protocol=avro&ca=/a&cert=/b&key=/c&insecure-skip-verify=true", func(t *testing.T, u *URI) {
			require.True(t, u.EnableTLS, "files turn TLS on")
			require.Equal(t, "/a", u.CA)
			require.True(t, u.InsecureSkipVerify)
		}},
		{"kafka://h:9092/t?protocol=avro&sasl-mechanism=SCRAM-SHA-512&sasl-user=u&sasl-password=a+b", func(t *testing.T, u *URI) {
			require.Equal(t, "scram-sha-512", u.SASLMechanism)
			require.Equal(t, "a b", u.SASLPassword, "query values are form-encoded, like TiCDC")
		}},
		{"kafka://h:9092/t?protocol=avro&sasl-mechanism=gssapi&sasl-gssapi-auth-type=keytab&sasl-gssapi-keytab-path=/k" +
			"&sasl-gssapi-kerberos-config-path=/etc/krb5.conf&sasl-gssapi-service-name=kafka&sasl-gssapi-user=u" +
			"&sasl-gssapi-realm=R&sasl-gssapi-disable-pafxfast=true", func(t *testing.T, u *URI) {
			require.Equal(t, "keytab", u.GSSAPIAuthType)
			require.True(t, u.GSSAPIDisablePAFXFAST)
		}},
		{"kafka://h:9092/t?protocol=avro&schema-registry=https%3A%2F%2Fk%3As%2Bx%40sr.example.com%2Fprefix%2F", func(t *testing.T, u *URI) {
			require.Equal(t, "https://k:s+x@sr.example.com/prefix", u.SchemaRegistry)
		}},
		{"kafka://h:9092/t?protocol=avro&transaction-atomicity=none&only-output-updated-columns=false&content-compatible=false&encoding-format=json", nil},
		{"kafka://h:9092/t?protocol=avro&&", nil},
	}
	for _, tc := range cases {
		u, err := Parse(tc.uri)
		require.NoError(t, err, tc.uri)
		if tc.check != nil {
			tc.check(t, u)
		}
	}
}

func TestParseRejects(t *testing.T) {
	cases := []struct{ uri, want string }{
		{"mysql://h:3306/", `sink-uri: scheme: must be kafka or kafka+ssl, got "mysql"`},
		{"h:9092/t", `sink-uri: malformed URI`},
		{"kafka:///t?protocol=avro", `sink-uri: brokers: no broker given`},
		{"kafka://h/t?protocol=avro", `sink-uri: brokers[0]: must be host:port`},
		{"kafka://h:1,h:x/t?protocol=avro", `sink-uri: brokers[1]: invalid port`},
		{"kafka://h:70000/t?protocol=avro", `sink-uri: brokers[0]: invalid port`},
		{"kafka://h:1,/t?protocol=avro", `sink-uri: brokers[1]: must be host:port`},
		{"kafka://h:9092?protocol=avro", `sink-uri: topic: no topic is specified`},
		{"kafka://h:9092/?protocol=avro", `sink-uri: topic: no topic is specified`},
		{"kafka://h:9092/a/b?protocol=avro", `sink-uri: topic: "a/b" is not a valid Kafka topic`},
		{"kafka://h:9092/" + strings.Repeat("x", 250) + "?protocol=avro", `sink-uri: topic: longer than 249 bytes`},
		{"kafka://h:9092/t?protocol=canal-json", `sink-uri: protocol: "canal-json" is not supported by tidestream (only avro)`},
		{"kafka://h:9092/t?protocol=open-protocol", `not supported by tidestream (only avro)`},
		{"kafka://h:9092/t?protocol=avor", `sink-uri: protocol: unknown protocol "avor"`},
		{"kafka://h:9092/t?protocol=avro&partition-num=0", `sink-uri: partition-num: must be > 0, got 0`},
		{"kafka://h:9092/t?protocol=avro&partition-num=x", `sink-uri: partition-num: must be an integer, got "x"`},
		{"kafka://h:9092/t?protocol=avro&replication-factor=0", `sink-uri: replication-factor: must be >= 1, got 0`},
		{"kafka://h:9092/t?protocol=avro&kafka-version=latest", `sink-uri: kafka-version: must be a Kafka version`},
		{"kafka://h:9092/t?protocol=avro&max-message-bytes=-1", `sink-uri: max-message-bytes: must be > 0`},
		{"kafka://h:9092/t?protocol=avro&max-retry=-1", `sink-uri: max-retry: must be >= 0`},
		{"kafka://h:9092/t?protocol=avro&compression=brotli", `sink-uri: compression: must be one of none, gzip, snappy, lz4 or zstd, got "brotli"`},
		{"kafka://h:9092/t?protocol=avro&kafka-client-id=a:b", `sink-uri: kafka-client-id: must match`},
		{"kafka://h:9092/t?protocol=avro&auto-create-topic=yes", `sink-uri: auto-create-topic: must be true or false`},
		{"kafka://h:9092/t?protocol=avro&required-acks=2", `sink-uri: required-acks: must be -1, 0 or 1, got "2"`},
		{"kafka://h:9092/t?protocol=avro&dial-timeout=10", `sink-uri: dial-timeout: must be a duration`},
		{"kafka://h:9092/t?protocol=avro&read-timeout=-1s", `sink-uri: read-timeout: must be > 0`},
		{"kafka://h:9092/t?protocol=avro&avro-decimal-handling-mode=exact", `sink-uri: avro-decimal-handling-mode: must be one of precise or string`},
		{"kafka://h:9092/t?protocol=avro&avro-bigint-unsigned-handling-mode=int", `sink-uri: avro-bigint-unsigned-handling-mode`},
		{"kafka://h:9092/t?protocol=avro&avro-enable-watermark=true", `sink-uri: avro-enable-watermark: requires enable-tidb-extension=true`},
		{"kafka://h:9092/t?protocol=avro&avro-include-before-value=true", `sink-uri: avro-include-before-value: is not supported`},
		{"kafka://h:9092/t?protocol=avro&transaction-atomicity=table", `sink-uri: transaction-atomicity: must be none`},
		{"kafka://h:9092/t?protocol=avro&only-output-updated-columns=true", `sink-uri: only-output-updated-columns: has no effect`},
		{"kafka://h:9092/t?protocol=avro&enable-tls=false&ca=/a&cert=/b&key=/c", `sink-uri: enable-tls: is false but ca, cert and key are given`},
		{"kafka://h:9092/t?protocol=avro&ca=/a", `sink-uri: cert: ca, cert and key must be given together`},
		{"kafka://h:9092/t?protocol=avro&ca=/a&cert=/b", `sink-uri: key: ca, cert and key must be given together`},
		{"kafka://h:9092/t?protocol=avro&insecure-skip-verify=true", `sink-uri: insecure-skip-verify: requires TLS`},
		{"kafka://h:9092/t?protocol=avro&sasl-mechanism=md5", `sink-uri: sasl-mechanism: must be one of plain`},
		{"kafka://h:9092/t?protocol=avro&sasl-mechanism=plain&sasl-user=u", `sink-uri: sasl-password: required when sasl-mechanism is plain`},
		{"kafka://h:9092/t?protocol=avro&sasl-mechanism=scram-sha-256&sasl-password=pw", `sink-uri: sasl-user: required`},
		{"kafka://h:9092/t?protocol=avro&sasl-user=u&sasl-password=pw", `sink-uri: sasl-user: requires sasl-mechanism plain`},
		{"kafka://h:9092/t?protocol=avro&sasl-mechanism=gssapi&sasl-gssapi-auth-type=user", `sink-uri: sasl-gssapi-kerberos-config-path: required`},
		{"kafka://h:9092/t?protocol=avro&sasl-mechanism=plain&sasl-user=u&sasl-password=p&sasl-gssapi-realm=R", `sink-uri: sasl-gssapi-realm: requires sasl-mechanism gssapi`},
		{"kafka://h:9092/t?protocol=avro&sasl-gssapi-auth-type=kerberos", `sink-uri: sasl-gssapi-auth-type: must be one of user or keytab`},
		{"kafka://h:9092/t?protocol=avro&foo=bar", `sink-uri: foo: unknown parameter`},
		{"kafka://h:9092/t?protocol=avro&sasl-oauth-client-id=x", `sink-uri: sasl-oauth-client-id: only allowed in [sink.kafka-config]`},
		{"kafka://h:9092/t?protocol=avro&protocol=avro", `sink-uri: protocol: given more than once`},
		{"kafka://h:9092/t?protocol=", `sink-uri: protocol: empty value`},
		{"kafka://h:9092/t?protocol=avro&sasl-user=%zz", `sink-uri: sasl-user: malformed percent-encoding`},
		{"kafka://h:9092/t?protocol=avro%", `sink-uri: protocol: malformed percent-encoding`},
		{"kafka://u:pw@h:9092/t?protocol=avro", `sink-uri: userinfo: credentials in the URI authority are not used`},
		{"kafka://h:9092/t?protocol=avro#x", `sink-uri: unexpected '#' fragment`},
		{"kafka://h:9092/t?protocol=avro&schema-registry=ftp%3A%2F%2Fh", `sink-uri: schema-registry: scheme must be http or https`},
		{"kafka://h:9092/t?protocol=avro&schema-registry=https%3A%2F%2Fk%3A%25zz%40h", `sink-uri: schema-registry: malformed percent-encoding in password`},
	}
	for _, tc := range cases {
		_, err := Parse(tc.uri)
		require.Error(t, err, tc.uri)
		require.True(t, errors.Is(err, cdcerr.ErrInvalidArgument), tc.uri)
		require.Contains(t, err.Error(), tc.want, tc.uri)
		require.NotContains(t, err.Error(), "pw", tc.uri)
	}
}

func TestErrorsNeverQuoteSecrets(t *testing.T) {
	for _, uri := range []string{
		"kafka://h:9092/t?protocol=avro&sasl-password=Sekr1t%zz",
		"kafka://user:Sekr1t@h:9092/t",
		"kafka://user:Sek/r1t@h:9092/t",
		"kafka://h:9092/t?sasl-password=Sekr1t&sasl-password=Sekr1t",
		"kafka://h:9092/t?protocol=avro&sasl-password=Sekr1t",
		"kafka://h:9092/t?protocol=avro&schema-registry=https%3A%2F%2Fk%3ASekr1t%40h%3Fx",
		"kafka://h:9092/t?protocol=avro&schema-registry=https%3A%2F%2Fk%3ASekr1t%40h%3A99999",
	} {
		_, err := Parse(uri)
		require.Error(t, err, uri)
		require.NotContains(t, err.Error(), "Sekr1t", uri)
		require.NotContains(t, err.Error(), "r1t", uri)
	}
}

func TestMergeFromURIWins(t *testing.T) {
	file := NewOptions()
	require.NoError(t, file.SetValue("replication-factor", int64(2), "config: sink.kafka-config.replication-factor"))
	require.NoError(t, file.SetValue("sasl-password", "filepw", "config: sink.kafka-config.sasl-password"))
	require.NoError(t, file.SetValue("sasl-oauth-scopes", []any{"a", "b"}, "config: sink.kafka-config.sasl-oauth-scopes"))
	u, err := ParsePartial("kafka://h:9092/t?protocol=avro&replication-factor=3&sasl-mechanism=plain&sasl-user=u")
	require.NoError(t, err)
	require.NoError(t, file.MergeFrom(u.Options))
	require.EqualValues(t, 3, file.ReplicationFactor)
	require.Equal(t, "filepw", file.SASLPassword)
	require.Equal(t, "sink-uri: replication-factor", file.Field("replication-factor"))
	require.Equal(t, []string{"a", "b"}, file.OAuthScopes)
	require.ErrorContains(t, file.Validate(), "config: sink.kafka-config.sasl-oauth-scopes: requires sasl-mechanism oauthbearer")
}

func TestSetValueTypes(t *testing.T) {
	o := NewOptions()
	require.ErrorContains(t, o.SetValue("partition-num", "3", "config: x.partition-num"), "config: x.partition-num: must be an integer, got a string")
	require.ErrorContains(t, o.SetValue("enable-tls", int64(1), "f"), "must be a boolean, got an integer")
	require.ErrorContains(t, o.SetValue("sasl-user", true, "f"), "must be a string, got a boolean")
	require.ErrorContains(t, o.SetValue("sasl-oauth-scopes", []any{int64(1)}, "f"), "element 0 must be a string")
	require.ErrorContains(t, o.SetValue("sasl-oauth-client-secret", "not base64!", "f"), "must be base64-encoded")
	require.NoError(t, o.SetValue("sasl-oauth-client-secret", "c2VjcmV0", "f"))
	require.Equal(t, "secret", o.OAuthClientSecret)
	require.True(t, Known("sasl-oauth-client-id", ScopeKafkaConfig))
	require.False(t, Known("sasl-oauth-client-id", ScopeURI))
	require.False(t, Known("max-retry", ScopeKafkaConfig))
	require.True(t, Known("enable-tidb-extension", ScopeCodecConfig))
	require.True(t, IsSecret("sasl-gssapi-password"))
}
