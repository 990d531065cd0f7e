package kafka

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

type testCerts struct {
	caPath                string
	clientCert, clientKey string
	server                *tls.Config // for kfake: server cert, client certs required
}

// genCerts makes a CA, a broker certificate for 127.0.0.1 and a client
// certificate, and writes the CA and client files as PEM.
func genCerts(t *testing.T) testCerts {
	t.Helper()
	dir := t.TempDir()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		return k
	}
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tidestream test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)

	issue := func(serial int64, cn string, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
		k := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
			DNSNames:     []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		require.NoError(t, err)
		kder, err := x509.MarshalECPrivateKey(k)
		require.NoError(t, err)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	}
	srvCert, srvKey := issue(2, "broker", x509.ExtKeyUsageServerAuth)
	cliCert, cliKey := issue(3, "tidestream", x509.ExtKeyUsageClientAuth)

	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, b, 0o600))
		return p
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	pair, err := tls.X509KeyPair(srvCert, srvKey)
	require.NoError(t, err)
	return testCerts{
		caPath:     write("ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})),
		clientCert: write("client.pem", cliCert),
		clientKey:  write("client-key.pem", cliKey),
		server: &tls.Config{
			Certificates: []tls.Certificate{pair},
			ClientCAs:    pool,
			ClientAuth:   tls.RequireAndVerifyClientCert,
			MinVersion:   tls.VersionTLS12,
		},
	}
}

// brokerSASLMessage is what Apache Kafka answers a bad PLAIN login with.
const brokerSASLMessage = "Authentication failed: Invalid username or password"

// rejectBadPlain makes kfake answer a wrong PLAIN password the way a real
// broker does — SASL_AUTHENTICATION_FAILED with a message — instead of
// closing the connection, which is all kfake does itself.
func rejectBadPlain(c *kfake.Cluster, user, pass string) {
	c.ControlKey(int16(kmsg.SASLAuthenticate), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kr.(*kmsg.SASLAuthenticateRequest)
		parts := strings.SplitN(string(req.SASLAuthBytes), "\x00", 3)
		if len(parts) == 3 && parts[1] == user && parts[2] == pass {
			return nil, nil, false // kfake authenticates it
		}
		resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		resp.ErrorMessage = kmsg.StringPtr(brokerSASLMessage)
		return resp, nil, true
	})
}

func TestSASLPlainOverTLS(t *testing.T) {
	certs := genCerts(t)
	c := newCluster(t,
		kfake.NumBrokers(1),
		kfake.TLS(certs.server),
		kfake.EnableSASL(),
		kfake.Superuser("PLAIN", "alice", "s3cret"),
	)
	rejectBadPlain(c, "alice", "s3cret")

	tlsSink := func(pass string) *tidestreamv1.KafkaSink {
		s := sink(c.ListenAddrs(), "ticdc-meta")
		s.Tls = &tidestreamv1.TLSConfig{Enabled: true, CaPath: certs.caPath, CertPath: certs.clientCert, KeyPath: certs.clientKey}
		s.Sasl = &tidestreamv1.SASLConfig{Mechanism: "plain", User: "alice", Password: pass}
		return s
	}

	t.Run("good password", func(t *testing.T) {
		p := newProducer(t, tlsSink("s3cret"))
		ctx := ctxT(t)
		require.NoError(t, p.CheckDefaultTopic(ctx))
		a := newAcks(1)
		require.NoError(t, p.Produce(ctx, &tidestreamv1.EncodedRecord{Topic: "tidb_db_t", Key: []byte("k"), Value: []byte("v")}, a.fn()))
		require.NoError(t, a.wait(t, 1)[0])
	})

	t.Run("wrong password", func(t *testing.T) {
		p := newProducer(t, tlsSink("wrong"))
		err := p.CheckDefaultTopic(ctxT(t))
		require.Error(t, err)
		require.ErrorIs(t, err, kerr.SaslAuthenticationFailed)
		require.ErrorContains(t, err, brokerSASLMessage) // the broker's words survive
		require.Equal(t, Fatal, Classify(err))
	})

	t.Run("unknown CA", func(t *testing.T) {
		s := tlsSink("s3cret")
		s.Tls.CaPath = ""
		p := newProducer(t, s)
		err := p.CheckDefaultTopic(ctxT(t))
		require.Error(t, err)
		require.Equal(t, Fatal, Classify(err), "%v", err)
	})
}

func TestSASLScram(t *testing.T) {
	for _, m := range []string{"SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(m, func(t *testing.T) {
			c := newCluster(t, kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser(m, "bob", "pw"))
			s := sink(c.ListenAddrs(), "ticdc-meta")
			s.Sasl = &tidestreamv1.SASLConfig{Mechanism: strings.ToLower(m), User: "bob", Password: "pw"}
			p := newProducer(t, s)
			require.NoError(t, p.CheckDefaultTopic(ctxT(t)))
		})
	}
}

func TestOAuthClientCredentials(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		id, secret, ok := r.BasicAuth()
		// RFC 6749 §2.3.1: form-encoded, then Basic.
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
		if r.Method != http.MethodPost || !ok || id != "client" || secret != "s&cret" {
			http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
			return
		}
		require.NoError(t, r.ParseForm())
		if r.PostForm.Get("grant_type") != "client_credentials" || r.PostForm.Get("scope") != "kafka.write kafka.read" || r.PostForm.Get("audience") != "cluster-1" {
			http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"tok-1","token_type":"Bearer","expires_in":3600}`))
	}))
	defer srv.Close()

	cfg := SASLConfig{Mechanism: "oauthbearer", OAuthClientID: "client", OAuthClientSecret: "s&cret",
		OAuthTokenURL: srv.URL, OAuthScopes: []string{"kafka.write", "kafka.read"}, OAuthAudience: "cluster-1"}
	m, err := cfg.mechanism()
	require.NoError(t, err)
	require.Equal(t, "OAUTHBEARER", m.Name())
	// The mechanism's first message carries the fetched token (RFC 7628).
	for range 3 {
		_, first, err := m.Authenticate(context.Background(), "127.0.0.1:9092")
		require.NoError(t, err)
		require.Contains(t, string(first), "auth=Bearer tok-1")
	}
	require.Equal(t, int32(1), calls.Load(), "a valid token is reused")

	cfg.OAuthClientSecret = "wrong"
	ts := newTokenSource(cfg, srv.Client())
	_, err = ts.get(context.Background())
	var te *TokenError
	require.ErrorAs(t, err, &te)
	require.Equal(t, http.StatusUnauthorized, te.StatusCode)
	require.Contains(t, err.Error(), "invalid_client")
	require.Equal(t, Fatal, Classify(err))

	srv.Close()
	_, err = newTokenSource(cfg, nil).get(context.Background())
	require.ErrorAs(t, err, &te)
	require.Equal(t, Retryable, Classify(err), "%v", err)
}
