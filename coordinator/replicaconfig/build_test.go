package replicaconfig

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
)

const (
	seedSinkURI  = "kafka://127.0.0.1:9092/ticdc-meta?protocol=avro&replication-factor=3&enable-tls=true&auto-create-topic=true&sasl-mechanism=plain&sasl-user=K&sasl-password=S3cretPw"
	seedRegistry = "https://KEY:R3gSecret%2B%2F@127.0.0.1:8081"
	seedConfig   = `[sink] 
dispatchers = [{matcher = ['*.*'], topic = "tidb_{schema}_{table}", partition="index-value"}]
`
	minimalURI = "kafka://h:9092/t?protocol=avro"
	registry   = "http://sr:8081"
	dispatch   = "[sink]\ndispatchers = [{matcher = ['*.*'], topic = \"tidb_{schema}_{table}\"}]\n"
)

// secrets are the passwords used in these tests; no error may contain them.
var secrets = []string{"S3cretPw", "R3gSecret", "hunter2", "c2VjcmV0"}

func TestBuildSeed(t *testing.T) {
	res, err := Build(Input{SinkURI: seedSinkURI, SchemaRegistry: seedRegistry, ConfigTOML: []byte(seedConfig)})
	require.NoError(t, err)

	k := res.Kafka
	require.Equal(t, []string{"127.0.0.1:9092"}, k.Brokers)
	require.Equal(t, "ticdc-meta", k.Topic)
	require.EqualValues(t, 3, k.ReplicationFactor)
	require.True(t, k.Tls.Enabled)
	require.Equal(t, "plain", k.Sasl.Mechanism)
	require.Equal(t, "K", k.Sasl.User)
	require.Equal(t, "S3cretPw", k.Sasl.Password)
	require.True(t, k.AutoCreateTopic)
	require.EqualValues(t, -1, k.RequiredAcks)
	require.EqualValues(t, 10485760, k.MaxMessageBytes)
	require.EqualValues(t, 5, k.MaxRetry)
	require.EqualValues(t, 0, k.PartitionNum)
	require.Equal(t, "none", k.Compression)
	require.Equal(t, "", k.KafkaVersion)
	require.Equal(t, 10*time.Second, k.DialTimeout.AsDuration())
	require.Equal(t, 10*time.Second, k.ReadTimeout.AsDuration())
	require.Equal(t, 10*time.Second, k.WriteTimeout.AsDuration())

	require.Equal(t, "precise", res.Avro.DecimalHandlingMode)
	require.Equal(t, "long", res.Avro.BigintUnsignedHandlingMode)
	require.False(t, res.Avro.EnableTidbExtension)

	c := res.Config
	require.Equal(t, "avro", c.Sink.Protocol)
	require.Equal(t, seedRegistry, c.Sink.SchemaRegistry)
	require.Len(t, c.Sink.Dispatchers, 1)
	require.Equal(t, []string{"*.*"}, c.Sink.Dispatchers[0].Matcher)
	require.Equal(t, "tidb_{schema}_{table}", c.Sink.Dispatchers[0].Topic)
	require.Equal(t, "index-value", c.Sink.Dispatchers[0].Partition)
	require.EqualValues(t, 1<<30, c.MemoryQuota)
	require.False(t, c.CaseSensitive)
	require.True(t, c.CheckGcSafePoint)
	require.Equal(t, []string{"*.*"}, c.Filter.Rules)
	require.EqualValues(t, 16, c.Mounter.WorkerNum)
	require.EqualValues(t, 32, c.Sink.EncoderConcurrency)
	require.Equal(t, "none", c.Sink.TransactionAtomicity)
	require.Equal(t, 30*time.Minute, c.ChangefeedErrorStuckDuration.AsDuration())
	require.Equal(t, 10*time.Minute, c.SyncPointInterval.AsDuration())
	require.Equal(t, 24*time.Hour, c.SyncPointRetention.AsDuration())
	require.EqualValues(t, 100000, c.Scheduler.RegionThreshold)
	require.Equal(t, "none", c.Integrity.IntegrityCheckLevel)
	require.Equal(t, "warn", c.Integrity.CorruptionHandleLevel)
}

func TestBuildMergesFileUnderURI(t *testing.T) {
	conf := dispatch + `
protocol = "flat-avro"
transaction-atomicity = "none"
[sink.kafka-config]
replication-factor = 2
partition-num = 6
sasl-mechanism = "PLAIN"
sasl-user = "fileuser"
sasl-password = "hunter2"
compression = "lz4"
dial-timeout = "3s"
output-raw-change-event = true
[sink.kafka-config.codec-config]
enable-tidb-extension = true
avro-decimal-handling-mode = "string"
avro-bigint-unsigned-handling-mode = "string"
[integrity]
integrity-check-level = "None"
corruption-handle-level = "error"
`
	res, err := Build(Input{
		SinkURI:        minimalURI + "&replication-factor=3&sasl-user=uriuser",
		SchemaRegistry: registry,
		ConfigTOML:     []byte(conf),
	})
	require.NoError(t, err)
	require.EqualValues(t, 3, res.Kafka.ReplicationFactor, "URI wins")
	require.EqualValues(t, 6, res.Kafka.PartitionNum, "file fills in")
	require.Equal(t, "uriuser", res.Kafka.Sasl.User)
	require.Equal(t, "hunter2", res.Kafka.Sasl.Password)
	require.Equal(t, "lz4", res.Kafka.Compression)
	require.Equal(t, 3*time.Second, res.Kafka.DialTimeout.AsDuration())
	require.True(t, res.Config.Sink.OutputRawChangeEvent)
	require.True(t, res.Avro.EnableTidbExtension)
	require.Equal(t, "string", res.Avro.DecimalHandlingMode)
	require.Equal(t, "none", res.Config.Integrity.IntegrityCheckLevel)
	require.Equal(t, "error", res.Config.Integrity.CorruptionHandleLevel)
	require.Equal(t, "avro", res.Config.Sink.Protocol)
}

func TestBuildAcceptsVariants(t *testing.T) {
	cases := map[string]Input{
		"array of tables form": {SinkURI: minimalURI, SchemaRegistry: registry, ConfigTOML: []byte(`
case-sensitive = true
[[sink.dispatchers]]
matcher = ['shop.*']
topic = "tidb_{schema}_{table}"
partition = "index-value"
index = "uk_email"
[[sink.dispatchers]]
matcher = ['log.*']
topic = "x.{schema}-{table}_y"
partition = "columns"
columns = ["tenant_id"]
[[sink.dispatchers]]
matcher = ['*.*']
topic = "{schema}{table}"
dispatcher = "rowid"
`)},
		"registry from uri":  {SinkURI: minimalURI + "&schema-registry=http%3A%2F%2Fsr%3A8081", ConfigTOML: []byte(dispatch)},
		"registry from file": {SinkURI: minimalURI, ConfigTOML: []byte(dispatch + "schema-registry = \"http://sr:8081/\"\n")},
		"same registry twice": {SinkURI: minimalURI + "&schema-registry=http%3A%2F%2Fsr%3A8081%2F", SchemaRegistry: "HTTP://sr:8081",
			ConfigTOML: []byte(dispatch)},
		"protocol in file only": {SinkURI: "kafka://h:9092/t", SchemaRegistry: registry, ConfigTOML: []byte(dispatch + "protocol = \"avro\"\n")},
		"deprecated and ignored keys": {SinkURI: minimalURI, SchemaRegistry: registry, ConfigTOML: []byte(`
sql-mode = "ANSI"
enable-old-value = true
memory-quota = 2147483648
check-gc-safe-point = false
enable-sync-point = false
sync-point-interval = "5m"
changefeed-error-stuck-duration = "1h"
enable-table-monitor = true
[mounter]
worker-num = 8
[filter]
rules = ['*.*', '!test.*', '/^tmp_/.*']
ignore-txn-start-ts = [1, 2]
event-filters = []
[scheduler]
enable-table-across-nodes = true
region-threshold = 10
write-key-threshold = 30000
[sink]
encoder-concurrency = 4
enable-kafka-sink-v2 = false
advance-timeout-in-sec = 150
dispatchers = [{matcher = ['*.*'], topic = "tidb_{schema}_{table}", partition = "table"}]
column-selectors = []
[sink.kafka-config.large-message-handle]
large-message-handle-option = "none"
[consistent]
level = "none"
storage = ""
`)},
		"oauth": {SinkURI: minimalURI + "&sasl-mechanism=oauthbearer", SchemaRegistry: registry, ConfigTOML: []byte(dispatch + `
[sink.kafka-config]
sasl-oauth-client-id = "id"
sasl-oauth-client-secret = "c2VjcmV0"
sasl-oauth-token-url = "https://idp/token"
sasl-oauth-scopes = ["a", "b"]
sasl-oauth-audience = "kafka"
`)},
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			res, err := Build(in)
			require.NoError(t, err)
			require.NotNil(t, res.Config)
		})
	}
}

func TestBuildRejects(t *testing.T) {
	ok := Input{SinkURI: minimalURI, SchemaRegistry: registry, ConfigTOML: []byte(dispatch)}
	with := func(mod func(in *Input)) Input {
		in := ok
		mod(&in)
		return in
	}
	uri := func(q string) Input { return with(func(in *Input) { in.SinkURI = minimalURI + q }) }
	conf := func(c string) Input { return with(func(in *Input) { in.ConfigTOML = []byte(c) }) }
	sinkConf := func(extra string) Input { return conf(dispatch + extra) }
	rule := func(r string) Input { return conf("[sink]\ndispatchers = [" + r + "]\n") }

	cases := []struct {
		name  string
		in    Input
		field string
		want  string
	}{
		{"empty sink uri", with(func(in *Input) { in.SinkURI = "" }), "sink-uri", "is required"},
		{"bad scheme", with(func(in *Input) { in.SinkURI = "pulsar://h:6650/t?protocol=avro" }), "sink-uri: scheme", "kafka or kafka+ssl"},
		{"missing topic", with(func(in *Input) { in.SinkURI = "kafka://h:9092?protocol=avro" }), "sink-uri: topic", "no topic"},
		{"missing protocol", with(func(in *Input) { in.SinkURI = "kafka://h:9092/t" }), "sink-uri: protocol", "is required"},
		{"unknown protocol", with(func(in *Input) { in.SinkURI = "kafka://h:9092/t?protocol=json" }), "sink-uri: protocol", "unknown protocol"},
		{"unsupported protocol", with(func(in *Input) { in.SinkURI = "kafka://h:9092/t?protocol=canal-json" }), "sink-uri: protocol", "not supported by tidestream"},
		{"unsupported protocol in file", sinkConf("protocol = \"open-protocol\"\n"), "config: sink.protocol", "not supported by tidestream"},
		{"unknown uri parameter", uri("&replication-facter=3"), "sink-uri: replication-facter", "unknown parameter"},
		{"duplicate uri parameter", uri("&partition-num=1&partition-num=2"), "sink-uri: partition-num", "more than once"},
		{"replication-factor 0", uri("&replication-factor=0"), "sink-uri: replication-factor", "must be >= 1, got 0"},
		{"partition-num 0", uri("&partition-num=0"), "sink-uri: partition-num", "must be > 0"},
		{"bad required-acks", uri("&required-acks=all"), "sink-uri: required-acks", "-1, 0 or 1"},
		{"bad compression", uri("&compression=brotli"), "sink-uri: compression", "must be one of"},
		{"bad decimal mode", uri("&avro-decimal-handling-mode=double"), "sink-uri: avro-decimal-handling-mode", "precise or string"},
		{"bad bigint mode in file", sinkConf("[sink.kafka-config.codec-config]\navro-bigint-unsigned-handling-mode = \"int\"\n"),
			"config: sink.kafka-config.codec-config.avro-bigint-unsigned-handling-mode", "long or string"},
		{"bad duration", uri("&dial-timeout=10"), "sink-uri: dial-timeout", "duration"},
		{"bad kafka-version", uri("&kafka-version=two"), "sink-uri: kafka-version", "Kafka version"},
		{"enable-tls=false with ca", uri("&enable-tls=false&ca=/a&cert=/b&key=/c"), "sink-uri: enable-tls", "ca, cert and key are given"},
		{"partial ca/cert/key", uri("&ca=/a&key=/c"), "sink-uri: cert", "must be given together"},
		{"partial tls in file", sinkConf("[sink.kafka-config]\ncert = \"/b\"\n"), "config: sink.kafka-config.ca", "must be given together"},
		{"sasl plain without password", uri("&sasl-mechanism=plain&sasl-user=u"), "sink-uri: sasl-password", "required when sasl-mechanism is plain"},
		{"sasl password without mechanism", uri("&sasl-user=u&sasl-password=hunter2"), "sink-uri: sasl-user", "requires sasl-mechanism"},
		{"oauth secret not base64", with(func(in *Input) {
			in.SinkURI = minimalURI + "&sasl-mechanism=oauthbearer"
			in.ConfigTOML = []byte(dispatch + "[sink.kafka-config]\nsasl-oauth-client-secret = \"hunter2!\"\n")
		}), "config: sink.kafka-config.sasl-oauth-client-secret", "base64"},
		{"oauth without token url", with(func(in *Input) {
			in.SinkURI = minimalURI + "&sasl-mechanism=oauthbearer"
			in.ConfigTOML = []byte(dispatch + "[sink.kafka-config]\nsasl-oauth-client-id = \"id\"\nsasl-oauth-client-secret = \"c2VjcmV0\"\n")
		}), "sink-uri: sasl-oauth-token-url", "required"},
		{"max-retry in file", sinkConf("[sink.kafka-config]\nmax-retry = 3\n"), "config", `unknown key "sink.kafka-config.max-retry"`},
		{"wrong toml type", sinkConf("[sink.kafka-config]\npartition-num = \"3\"\n"), "config: sink.kafka-config.partition-num", "must be an integer, got a string"},
		{"avro without schema registry", with(func(in *Input) { in.SchemaRegistry = "" }), "schema-registry", "requires a Confluent Schema Registry"},
		{"two different registries", with(func(in *Input) { in.SinkURI = minimalURI + "&schema-registry=http%3A%2F%2Fother%3A8081" }),
			"schema-registry", "names a different registry than sink-uri: schema-registry"},
		{"malformed registry credentials", with(func(in *Input) { in.SchemaRegistry = "https://KEY:R3gSecret%zz@sr" }),
			"schema-registry", "malformed percent-encoding in password"},
		{"bad registry scheme in file", with(func(in *Input) {
			in.SchemaRegistry = ""
			in.ConfigTOML = []byte(dispatch + "schema-registry = \"ftp://sr\"\n")
		}), "config: sink.schema-registry", "http or https"},
		{"glue registry", sinkConf("[sink.kafka-config.glue-schema-registry-config]\nregion = \"us-west-1\"\nregistry-name = \"r\"\n"),
			"config: sink.kafka-config.glue-schema-registry-config", "not supported by tidestream"},
		{"topic without table", rule(`{matcher = ['*.*'], topic = "tidb_{schema}"}`), "config: sink.dispatchers[0].topic", "must contain {schema} and {table}"},
		{"literal topic", rule(`{matcher = ['*.*'], topic = "all_tables"}`), "config: sink.dispatchers[0].topic", "must contain {schema} and {table}"},
		{"rule without topic", rule(`{matcher = ['*.*'], partition = "table"}`), "config: sink.dispatchers[0].topic", "is required with protocol=avro"},
		{"no dispatchers", conf(""), "config: sink.dispatchers", "needs dispatchers"},
		{"empty dispatchers", conf("[sink]\ndispatchers = []\n"), "config: sink.dispatchers", "needs dispatchers"},
		{"unknown partition dispatcher", rule(`{matcher = ['*.*'], topic = "{schema}_{table}", partition = "random"}`),
			"config: sink.dispatchers[0].partition", `unknown partition dispatcher "random"`},
		{"dispatcher and partition", rule(`{matcher = ['*.*'], topic = "{schema}_{table}", partition = "table", dispatcher = "ts"}`),
			"config: sink.dispatchers[0].partition", "deprecated dispatcher"},
		{"columns without columns", rule(`{matcher = ['*.*'], topic = "{schema}_{table}", partition = "columns"}`),
			"config: sink.dispatchers[0].columns", "non-empty columns"},
		{"index with table partition", rule(`{matcher = ['*.*'], topic = "{schema}_{table}", partition = "table", index = "i"}`),
			"config: sink.dispatchers[0].index", "only allowed with partition = \"index-value\""},
		{"bad matcher glob", rule(`{matcher = ['*.*'], topic = "{schema}_{table}"}, {matcher = ['a.b', 'a.[b'], topic = "{schema}_{table}"}`),
			"config: sink.dispatchers[1].matcher", `rules[1] "a.[b": unclosed bracket`},
		{"matcher @file", rule(`{matcher = ['@rules.txt'], topic = "{schema}_{table}"}`), "config: sink.dispatchers[0].matcher", "command line"},
		{"bad filter rule", sinkConf("[filter]\nrules = ['*.*', 'db']\n"), "config: filter.rules", `rules[1] "db"`},
		{"event filters", sinkConf("[[filter.event-filters]]\nmatcher = ['*.*']\nignore-event = ['drop table']\n"),
			"config: filter.event-filters", "is not supported yet by tidestream"},
		{"event filters inline, before an invalid rule", sinkConf("[filter]\nevent-filters = [{matcher = ['*.*'], ignore-event = ['drop everything']}]\n"),
			"config: filter.event-filters", "is not supported yet by tidestream"},
		{"event filters not a list", sinkConf("[filter]\nevent-filters = \"insert\"\n"),
			"config: filter.event-filters", "must be an array of tables"},
		{"unknown toml key", conf("[sink]\ndispatcher = [{matcher = ['*.*'], topic = \"{schema}_{table}\"}]\n"),
			"config", `unknown key "sink.dispatcher"`},
		{"unknown keys listed", conf(dispatch + "foo = 1\n[sink.kafka-config]\nbar = 2\n[mounter]\nworkers = 3\n"),
			"config", `unknown keys "mounter.workers", "sink.foo", "sink.kafka-config.bar"`},
		{"unknown key in rule", rule(`{matcher = ['*.*'], topic = "{schema}_{table}", partiton = "table"}`),
			"config", `unknown key "sink.dispatchers[0].partiton"`},
		{"invalid toml syntax", conf("[sink\nprotocol = \"avro\"\n"), "config", "invalid TOML at line"},
		{"error stuck duration too short", conf(dispatch + "\n"), "", ""}, // placeholder replaced below
		{"force-replicate with avro", conf("force-replicate = true\n" + dispatch), "config: force-replicate", "must be false with protocol=avro"},
		{"large message handle with avro", sinkConf("[sink.kafka-config.large-message-handle]\nlarge-message-handle-option = \"handle-key-only\"\n"),
			"config: sink.kafka-config.large-message-handle.large-message-handle-option", "it's not supported"},
		{"claim check with avro", sinkConf("[sink.kafka-config.large-message-handle]\nclaim-check-storage-uri = \"s3://b/p\"\n"),
			"config: sink.kafka-config.large-message-handle.claim-check-storage-uri", "not supported"},
		{"integrity correctness", conf("[integrity]\nintegrity-check-level = \"correctness\"\n" + dispatch),
			"config: integrity.integrity-check-level", `"correctness" is not supported yet by tidestream (the Avro checksum fields are not implemented); use "none"`},
		{"integrity correctness with its prerequisites", with(func(in *Input) {
			in.SinkURI = minimalURI + "&enable-tidb-extension=true&avro-decimal-handling-mode=string&avro-bigint-unsigned-handling-mode=string"
			in.ConfigTOML = []byte("[integrity]\nintegrity-check-level = \"Correctness\"\n" + dispatch)
		}), "config: integrity.integrity-check-level", `"Correctness" is not supported yet`},
		{"bad integrity level", conf("[integrity]\nintegrity-check-level = \"paranoid\"\n" + dispatch), "config: integrity.integrity-check-level", "none or correctness"},
		{"transaction atomicity table", sinkConf("transaction-atomicity = \"table\"\n"), "config: sink.transaction-atomicity", "must be none"},
		{"sync point", conf("enable-sync-point = true\n" + dispatch), "config: enable-sync-point", "MySQL/TiDB downstream"},
		{"memory quota", conf("memory-quota = 0\n" + dispatch), "config: memory-quota", "must be > 0"},
		{"bad duration in file", conf("sync-point-interval = \"ten minutes\"\n" + dispatch), "config: sync-point-interval", "duration"},
		{"redo log", conf(dispatch + "[consistent]\nlevel = \"eventual\"\n"), "config: consistent.level", "must be none"},
		{"encoder concurrency", sinkConf("encoder-concurrency = 0\n"), "config: sink.encoder-concurrency", "between 1 and 65536"},
		{"watermark without extension", uri("&avro-enable-watermark=true"), "sink-uri: avro-enable-watermark", "enable-tidb-extension"},
		{"userinfo in sink uri", with(func(in *Input) { in.SinkURI = "kafka://u:hunter2@h:9092/t?protocol=avro" }), "sink-uri: userinfo", "not used for Kafka"},
		{"column selectors", sinkConf("column-selectors = [{matcher = ['*.*'], columns = ['*', '!secret_col']}]\n"),
			"config: sink.column-selectors", "is not supported yet by tidestream (the Avro encoder writes every column)"},
		{"column selectors as sections, before an invalid rule", sinkConf("[[sink.column-selectors]]\nmatcher = ['*.*']\n"),
			"config: sink.column-selectors", "is not supported yet by tidestream"},
		{"column selectors not a list", sinkConf("column-selectors = \"a\"\n"), "config: sink.column-selectors", "must be an array of tables"},
	}
	// The stuck-duration case needs the key at top level, before [sink].
	for i := range cases {
		if cases[i].name == "error stuck duration too short" {
			cases[i].in = conf("changefeed-error-stuck-duration = \"10m\"\n" + dispatch)
			cases[i].field = "config: changefeed-error-stuck-duration"
			cases[i].want = "must be >= 30m0s, got 10m0s"
		}
	}
	require.GreaterOrEqual(t, len(cases), 30)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Every case also carries secrets, to prove errors never echo
			// them.
			if !strings.Contains(tc.in.SinkURI, "sasl") && strings.HasPrefix(tc.in.SinkURI, minimalURI) && !strings.Contains(tc.in.SinkURI, "userinfo") {
				tc.in.SinkURI += "&sasl-gssapi-password=hunter2&sasl-mechanism=gssapi&sasl-gssapi-auth-type=user" +
					"&sasl-gssapi-kerberos-config-path=/k&sasl-gssapi-service-name=kafka&sasl-gssapi-user=u&sasl-gssapi-realm=R"
			}
			_, err := Build(tc.in)
			require.Error(t, err)
			require.True(t, errors.Is(err, cdcerr.ErrInvalidArgument), "%v", err)
			msg := err.Error()
			require.True(t, strings.HasPrefix(msg, tc.field+": "), "field %q not at the start of %q", tc.field, msg)
			require.Contains(t, msg, tc.want)
			for _, s := range secrets {
				require.NotContains(t, msg, s)
			}
		})
	}
}

func TestSyntaxErrorWithholdsSecretLines(t *testing.T) {
	_, err := Build(Input{SinkURI: minimalURI, SchemaRegistry: registry,
		ConfigTOML: []byte(dispatch + "[sink.kafka-config]\nsasl-password = \"hunter2\\q\"\n")})
	require.Error(t, err)
	require.Contains(t, err.Error(), "config: invalid TOML at line")
	require.NotContains(t, err.Error(), "hunter2")
}
