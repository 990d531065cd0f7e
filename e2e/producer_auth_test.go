package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sr"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tidestream/tidestream/coordinator/store"
	"github.com/tidestream/tidestream/e2e/harness"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
	"github.com/tidestream/tidestream/services/devstack"
)

// TestProducerSASLPlainOverTLS runs the Confluent Cloud recipe of the seed
// guide (kafka-avro-output.md, appendix B) through `cdc server`: a sink URI
// with enable-tls, SASL PLAIN and replication-factor=3 and no CA, against a
// three-broker devstack serving TLS with a test CA that the server trusts
// as a system root (SSL_CERT_FILE), as a Confluent Cloud client trusts
// Confluent's public CA.
//
// Changefeed "good" has alice's password: its pipeline's checkpoint passes
// the last write, and the table's topic, created with the requested 4
// partitions and 3 replicas, holds every row, read back over TLS and SASL
// by franz-go and by Confluent's Python AvroConsumer. Changefeed "bad" has
// a wrong password: its pipeline's progress carries the broker's own
// reason, not a bare EOF, and neither password shows up there.
func TestProducerSASLPlainOverTLS(t *testing.T) {
	const (
		user = "alice"
		// The shape of a Confluent Cloud API secret: base64, so + / =,
		// which a sink URI must carry query-escaped.
		password = "s3cr+t/Pa55=="
		wrong    = "not-" + password
		// What Apache Kafka answers a wrong PLAIN password with.
		brokerMessage = "Authentication failed: Invalid username or password"
	)
	pg := startPlayground(t)
	etcd := harness.StartEtcd(t)
	ca, err := devstack.WriteLoopbackCA(t.TempDir(), time.Hour)
	require.NoError(t, err)
	cfg := devstack.DefaultConfig()
	cfg.Brokers = 3 // replication-factor=3 needs three
	cfg.TLSCertFile, cfg.TLSKeyFile = ca.CertFile, ca.KeyFile
	cfg.SASLUsers = []devstack.Credential{{User: user, Password: password}}
	dev := startDevstack(t, cfg)

	// The sink URI names no CA: the system roots verify the brokers, and Go
	// reads them from SSL_CERT_FILE when it is set.
	srv, srvAddr := startCDCServer(t, etcd.Endpoint, pg.pdAddr, t.TempDir(), []string{"SSL_CERT_FILE=" + ca.CAFile})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	conf := filepath.Join(t.TempDir(), "changefeed.conf")
	require.NoError(t, os.WriteFile(conf, []byte(changefeedConf), 0o600))
	brokers := strings.Join(dev.Kafka, ",")
	sinkURI := func(pass string) string {
		return "kafka://" + brokers + "/ticdc-meta?protocol=avro&replication-factor=3&enable-tls=true&auto-create-topic=true" +
			"&sasl-mechanism=plain&sasl-user=" + user + "&sasl-password=" + url.QueryEscape(pass) + "&partition-num=4"
	}
	conn, err := pg.db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	sql := func(q string, args ...any) {
		_, err := conn.ExecContext(ctx, q, args...)
		require.NoError(t, err, q)
	}
	sql("CREATE DATABASE sasl")
	sql("CREATE TABLE sasl.t (id BIGINT PRIMARY KEY, v VARCHAR(20))")
	var tableID int64
	require.NoError(t, pg.db.QueryRowContext(ctx,
		"SELECT TIDB_TABLE_ID FROM information_schema.tables WHERE table_schema = 'sasl' AND table_name = 't'").Scan(&tableID))

	for id, pass := range map[string]string{"good": password, "bad": wrong} {
		r := harness.Run(t, 90*time.Second, "", harness.CDC(t), "cli", "changefeed", "create",
			"--server=http://"+srvAddr, "--sink-uri="+sinkURI(pass),
			"--schema-registry="+dev.Registry, "--changefeed-id="+id, "--config", conf)
		require.Equal(t, 0, r.ExitCode, "create %s: stderr: %s", id, r.Stderr)
	}

	// The owner places each changefeed's pipeline of the table (its id is
	// the table's) on this server.
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.Endpoint}, DialTimeout: 5 * time.Second})
	require.NoError(t, err)
	defer cli.Close()
	keys, err := store.NewKeys("default")
	require.NoError(t, err)
	pipelines := map[string]int64{"good": tableID, "bad": tableID}
	progress := func(cf string) (*tidestreamv1.PipelineStatus, error) {
		resp, err := cli.Get(ctx, keys.Progress("default", cf, pipelines[cf]))
		if err != nil {
			return nil, err
		}
		if len(resp.Kvs) == 0 {
			return nil, errors.New("no progress record yet")
		}
		st := &tidestreamv1.PipelineStatus{}
		return st, protojson.Unmarshal(resp.Kvs[0].Value, st)
	}

	const n = 10
	for i := range n {
		sql("INSERT INTO sasl.t VALUES (?, ?)", i, "v0")
	}
	sql("UPDATE sasl.t SET v = 'v1' WHERE id = 1")
	sql("DELETE FROM sasl.t WHERE id = 0")
	until := currentTS(ctx, t, conn)
	want := n + 2 // every insert, the update, the delete's tombstone

	harness.Eventually(t, 90*time.Second, "good pipeline checkpoint past the last write", func() error {
		st, err := progress("good")
		if err != nil {
			return err
		}
		if st.GetCheckpointTs() < until {
			return fmt.Errorf("checkpoint %d < %d (error: %q)", st.GetCheckpointTs(), until, st.GetError().GetMessage())
		}
		return nil
	})
	harness.Eventually(t, 60*time.Second, "bad pipeline reports the broker's reason", func() error {
		st, err := progress("bad")
		if err != nil {
			return err
		}
		if msg := st.GetError().GetMessage(); !strings.Contains(msg, brokerMessage) {
			return fmt.Errorf("error %q does not carry %q", msg, brokerMessage)
		}
		return nil
	})
	bad, err := progress("bad")
	require.NoError(t, err)
	badCf, err := store.New(cli, keys).Get(ctx, "default", "bad")
	require.NoError(t, err)
	require.Equal(t, badCf.Status.GetCheckpointTs(), bad.GetCheckpointTs(), "the bad pipeline never started, so it is still at its start")
	// The owner shows it as the changefeed's warning.
	harness.Eventually(t, 30*time.Second, "bad changefeed warning with the broker's message", func() error {
		cf, err := store.New(cli, keys).Get(ctx, "default", "bad")
		if err != nil {
			return err
		}
		if cf.Status.GetState() != tidestreamv1.ChangefeedState_CHANGEFEED_STATE_WARNING || !strings.Contains(cf.Status.GetError().GetMessage(), brokerMessage) {
			return fmt.Errorf("changefeed %s: %q", cf.Status.GetState(), cf.Status.GetError().GetMessage())
		}
		return nil
	})
	require.NotContains(t, bad.GetError().GetMessage(), wrong, "the password stays out of the progress record")
	t.Logf("bad pipeline's error: %s", bad.GetError().GetMessage())

	// Over TLS with the test CA and SASL PLAIN, as the server connects.
	secure := []kgo.Opt{
		kgo.SeedBrokers(dev.Kafka...),
		kgo.DialTLSConfig(&tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}),
		kgo.SASL(plain.Auth{User: user, Pass: password}.AsMechanism()),
	}
	const topic = "tidb_sasl_t"
	adm, err := kgo.NewClient(secure...)
	require.NoError(t, err)
	defer adm.Close()
	details, err := kadm.NewClient(adm).ListTopics(ctx, topic, "ticdc-meta")
	require.NoError(t, err)
	for _, name := range []string{topic, "ticdc-meta"} {
		td, ok := details[name]
		require.True(t, ok, "topic %s exists", name)
		require.NoError(t, td.Err, name)
		require.Len(t, td.Partitions, 4, "topic %s has partition-num partitions", name)
		for _, p := range td.Partitions {
			require.Len(t, p.Replicas, 3, "topic %s partition %d has replication-factor replicas", name, p.Partition)
		}
	}

	kc, err := kgo.NewClient(append(secure, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	require.NoError(t, err)
	defer kc.Close()
	rc, err := sr.NewClient(sr.URLs(dev.Registry))
	require.NoError(t, err)
	decode := avroReader(ctx, t, rc)
	byKey := map[int64][]map[string]any{} // nil value: tombstone
	for got := 0; got < want; {
		fs := kc.PollFetches(ctx)
		require.NoError(t, fs.Err0())
		fs.EachRecord(func(r *kgo.Record) {
			got++
			var v map[string]any
			if r.Value != nil {
				v = decode(r.Value)
			}
			id := decode(r.Key)["id"].(int64)
			byKey[id] = append(byKey[id], v)
		})
	}
	require.Len(t, byKey, n)
	for id := range int64(n) {
		vs := byKey[id]
		require.Equal(t, "v0", vs[0]["v"], "key %d", id)
		switch id {
		case 0:
			require.Len(t, vs, 2)
			require.Nil(t, vs[1], "the delete is a tombstone")
		case 1:
			require.Len(t, vs, 2)
			require.Equal(t, "v1", vs[1]["v"])
		default:
			require.Len(t, vs, 1, "key %d", id)
		}
	}

	// librdkafka over SASL_SSL: Confluent's Python AvroConsumer.
	sec := map[string]string{
		"security.protocol": "SASL_SSL",
		"sasl.mechanisms":   "PLAIN",
		"sasl.username":     user,
		"sasl.password":     password,
		"ssl.ca.location":   ca.CAFile,
	}
	pyCount, pyTombstones := pythonAvroConsume(ctx, t, brokers, dev.Registry, topic, want, sec)
	require.Equal(t, want, pyCount)
	require.Equal(t, 1, pyTombstones)

	// Neither password is in the server's log, debug level included.
	log := srv.Log()
	require.NotContains(t, log, password)
	require.NotContains(t, log, url.QueryEscape(password))
}
