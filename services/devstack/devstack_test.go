package devstack_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"go.uber.org/goleak"

	"github.com/tidestream/tidestream/services/devstack"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// start runs a stack until the test ends; the cleanup cancels Run and
// checks it stopped cleanly.
func start(t *testing.T, cfg devstack.Config) devstack.Addrs {
	t.Helper()
	stack, err := devstack.New(cfg, nil)
	require.NoError(t, err)
	addrs, err := stack.Listen()
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- stack.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Fatal("devstack did not stop")
		}
	})
	for _, a := range append(append([]string(nil), addrs.Kafka...), addrs.Registry[strings.Index(addrs.Registry, "://")+3:]) {
		host, _, err := net.SplitHostPort(a)
		require.NoError(t, err)
		require.Equal(t, "127.0.0.1", host, "devstack listens on loopback only")
	}
	return addrs
}

func newClient(t *testing.T, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(opts...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return cl
}

// consumeOne reads the first record of topic from the start.
func consumeOne(t *testing.T, topic string, opts ...kgo.Opt) *kgo.Record {
	t.Helper()
	cl := newClient(t, append(opts, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		fetches := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "no record from %s", topic)
		for _, fe := range fetches.Errors() {
			require.NoError(t, fe.Err, "fetch %s/%d", fe.Topic, fe.Partition)
		}
		if recs := fetches.Records(); len(recs) > 0 {
			return recs[0]
		}
	}
}

func partitions(t *testing.T, cl *kgo.Client, topic string) int {
	t.Helper()
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(context.Background(), cl)
	require.NoError(t, err)
	require.Len(t, resp.Topics, 1)
	require.Zero(t, resp.Topics[0].ErrorCode)
	return len(resp.Topics[0].Partitions)
}

func TestSASLPlainOverTLS(t *testing.T) {
	ca, err := devstack.WriteLoopbackCA(t.TempDir(), time.Hour)
	require.NoError(t, err)
	pool, certFile, keyFile := ca.Pool, ca.CertFile, ca.KeyFile
	cfg := devstack.DefaultConfig()
	cfg.Brokers = 2
	cfg.SASLUsers = []devstack.Credential{{User: "alice", Password: "pa:ss+/="}, {User: "bob", Password: "hunter2"}}
	cfg.TLSCertFile, cfg.TLSKeyFile = certFile, keyFile
	cfg.RegistryUsers = []devstack.Credential{{User: "sr", Password: "sr-secret"}}
	cfg.RegistryTLS = true
	addrs := start(t, cfg)
	require.Len(t, addrs.Kafka, 2)
	require.True(t, strings.HasPrefix(addrs.Registry, "https://127.0.0.1:"), addrs.Registry)

	tlsCfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	plainAlice := []kgo.Opt{
		kgo.SeedBrokers(addrs.Kafka...),
		kgo.DialTLSConfig(tlsCfg),
		kgo.SASL(plain.Auth{User: "alice", Pass: "pa:ss+/="}.AsMechanism()),
	}
	const topic = "devstack.auto"
	producer := newClient(t, append(plainAlice, kgo.AllowAutoTopicCreation())...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, producer.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte("k"), Value: []byte("v")}).FirstErr())
	require.Equal(t, 3, partitions(t, producer, topic), "auto-created with the default partitions")

	// SaslHandshake is advertised from version 0, as by Apache Kafka:
	// librdkafka turns SASL on only then. The other keys are kfake's.
	av, err := kmsg.NewPtrApiVersionsRequest().RequestWith(ctx, producer)
	require.NoError(t, err)
	versions := map[int16][2]int16{}
	for _, k := range av.ApiKeys {
		versions[k.ApiKey] = [2]int16{k.MinVersion, k.MaxVersion}
	}
	require.Equal(t, [2]int16{0, 1}, versions[int16(kmsg.SASLHandshake)])
	require.Equal(t, [2]int16{0, 2}, versions[int16(kmsg.SASLAuthenticate)])
	require.Contains(t, versions, int16(kmsg.Produce))

	rec := consumeOne(t, topic, plainAlice...)
	require.Equal(t, "k", string(rec.Key))
	require.Equal(t, "v", string(rec.Value))

	// The same users log in with SCRAM.
	scramBob := newClient(t, kgo.SeedBrokers(addrs.Kafka...), kgo.DialTLSConfig(tlsCfg),
		kgo.SASL(scram.Auth{User: "bob", Pass: "hunter2"}.AsSha512Mechanism()))
	require.NoError(t, scramBob.Ping(ctx))
	require.Equal(t, 3, partitions(t, scramBob, topic))

	// A wrong password, or a user that is not configured, does not, and
	// the client hears why as from Apache Kafka instead of an EOF.
	for _, auth := range []plain.Auth{{User: "alice", Pass: "nope"}, {User: "mallory", Pass: "hunter2"}} {
		wrong := newClient(t, kgo.SeedBrokers(addrs.Kafka...), kgo.DialTLSConfig(tlsCfg),
			kgo.SASL(auth.AsMechanism()))
		pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
		err := wrong.Ping(pctx)
		pcancel()
		require.ErrorIs(t, err, kerr.SaslAuthenticationFailed, "user %s", auth.User)
		require.ErrorContains(t, err, "Authentication failed: Invalid username or password", "user %s", auth.User)
	}

	// The registry is served over TLS with basic auth.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	defer hc.CloseIdleConnections()
	get := func(auth bool) (int, string) {
		req, err := http.NewRequest(http.MethodGet, addrs.Registry+"/", nil)
		require.NoError(t, err)
		if auth {
			req.SetBasicAuth("sr", "sr-secret")
		}
		resp, err := hc.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	status, body := get(true)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, "{}", body)
	status, _ = get(false)
	require.Equal(t, http.StatusUnauthorized, status)
}

// TestDataDirKeepsRecords stops a stack and starts another on its
// directory: the record produced to the first is consumed from the second.
func TestDataDirKeepsRecords(t *testing.T) {
	dir := t.TempDir()
	cfg := devstack.DefaultConfig()
	cfg.DataDir = dir
	cfg.DefaultPartitions = 1

	stack, err := devstack.New(cfg, nil)
	require.NoError(t, err)
	addrs, err := stack.Listen()
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- stack.Run(ctx) }()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs.Kafka...), kgo.AllowAutoTopicCreation())
	require.NoError(t, err)
	pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
	err = cl.ProduceSync(pctx, &kgo.Record{Topic: "kept", Value: []byte("survives")}).FirstErr()
	pcancel()
	cl.Close()
	require.NoError(t, err)
	cancel()
	require.NoError(t, <-done)

	addrs = start(t, cfg)
	rec := consumeOne(t, "kept", kgo.SeedBrokers(addrs.Kafka...))
	require.Equal(t, "survives", string(rec.Value))
}

func TestFixedPorts(t *testing.T) {
	free := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	cfg := devstack.DefaultConfig()
	cfg.KafkaPort, cfg.RegistryPort = free(), free()
	addrs := start(t, cfg)
	require.Equal(t, []string{"127.0.0.1:" + strconv.Itoa(cfg.KafkaPort)}, addrs.Kafka)
	require.Equal(t, "http://127.0.0.1:"+strconv.Itoa(cfg.RegistryPort), addrs.Registry)
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*devstack.Config)
		want string
	}{
		{"no brokers", func(c *devstack.Config) { c.Brokers = 0 }, "devstack: Config.Brokers 0 out of range [1, 16]"},
		{"ports past 65535", func(c *devstack.Config) { c.KafkaPort, c.Brokers = 65535, 2 }, "devstack: Config.KafkaPort 65535"},
		{"no partitions", func(c *devstack.Config) { c.DefaultPartitions = 0 }, "devstack: Config.DefaultPartitions 0 out of range"},
		{"cert without key", func(c *devstack.Config) { c.TLSCertFile = "c.pem" }, "devstack: Config.TLSCertFile and TLSKeyFile must be set together"},
		{"registry TLS without a cert", func(c *devstack.Config) { c.RegistryTLS = true }, "--registry-tls needs --tls-cert and --tls-key"},
		{"duplicate user", func(c *devstack.Config) {
			c.SASLUsers = []devstack.Credential{{User: "a", Password: "x"}, {User: "a", Password: "y"}}
		}, `devstack: Config.SASLUsers: user "a" given twice`},
		{"missing cert file", func(c *devstack.Config) { c.TLSCertFile, c.TLSKeyFile = "/nonexistent/c.pem", "/nonexistent/k.pem" },
			"devstack: TLS key pair /nonexistent/c.pem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := devstack.DefaultConfig()
			tc.edit(&cfg)
			_, err := devstack.New(cfg, nil)
			require.ErrorContains(t, err, tc.want)
		})
	}

	c, err := devstack.ParseCredential("u:p:with:colons")
	require.NoError(t, err)
	require.Equal(t, devstack.Credential{User: "u", Password: "p:with:colons"}, c)
	_, err = devstack.ParseCredential("nopassword")
	require.ErrorContains(t, err, `credential "nopassword" is not user:password`)
	_, err = devstack.ParseCredential(":secret")
	require.ErrorContains(t, err, `credential ":***" is not user:password`, "the password is not echoed")
}
