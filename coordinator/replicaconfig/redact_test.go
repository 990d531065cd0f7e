package replicaconfig

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"

	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

func TestRedactRemovesEverySecret(t *testing.T) {
	res, err := Build(Input{
		SinkURI:    seedSinkURI + "&schema-registry=" + "https%3A%2F%2FKEY%3AR3gSecret%252B%252F%40127.0.0.1%3A8081",
		ConfigTOML: []byte(seedConfig),
	})
	require.NoError(t, err)
	info := &tidestreamv1.ChangefeedInfo{
		Id:                "confluent-changefeed",
		SinkUri:           seedSinkURI,
		Config:            res.Config,
		Kafka:             res.Kafka,
		Avro:              res.Avro,
		ConfigToml:        "sasl-password = \"S3cretPw\"",
		SchemaRegistryArg: seedRegistry,
	}
	info.Kafka.Sasl.OauthClientSecret = "oauthS3cret"
	info.Kafka.Sasl.GssapiPassword = "gssS3cret"
	Redact(info)

	out, err := protojson.Marshal(info)
	require.NoError(t, err)
	for _, s := range []string{"S3cretPw", "R3gSecret", "oauthS3cret", "gssS3cret"} {
		require.NotContains(t, string(out), s)
	}
	require.Equal(t, "******", info.Kafka.Sasl.Password)
	require.Equal(t, "******", info.Kafka.Sasl.OauthClientSecret)
	require.Equal(t, "******", info.Kafka.Sasl.GssapiPassword)
	require.Equal(t, "https://KEY:******@127.0.0.1:8081", info.Config.Sink.SchemaRegistry)
	require.True(t, strings.HasSuffix(info.SinkUri, "sasl-password=******"))
	require.Empty(t, info.ConfigToml)
	require.Empty(t, info.SchemaRegistryArg)
	require.Equal(t, "K", info.Kafka.Sasl.User, "user names stay visible")

	Redact(nil) // must not panic
	empty := &tidestreamv1.ChangefeedInfo{}
	Redact(empty)
	require.Empty(t, empty.GetKafka().GetSasl().GetPassword())
}
