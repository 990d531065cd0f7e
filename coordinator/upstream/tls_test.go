package upstream

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tidestream/tidestream/coordinator/upstream/pdfake"
)

// testPKI is a throw-away CA with one server and one client certificate,
// written as PEM files the way an operator hands them to --ca/--cert/--key.
type testPKI struct {
	files  TLSConfig
	server *tls.Config
}

func newTestPKI(t *testing.T) testPKI {
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
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	caCert, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)

	issue := func(serial int64, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
		k := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: "127.0.0.1"},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		require.NoError(t, err)
		keyDER, err := x509.MarshalPKCS8PrivateKey(k)
		require.NoError(t, err)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	}
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, data, 0o600))
		return p
	}

	serverCert, serverKey := issue(2, x509.ExtKeyUsageServerAuth)
	clientCert, clientKey := issue(3, x509.ExtKeyUsageClientAuth)
	pair, err := tls.X509KeyPair(serverCert, serverKey)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return testPKI{
		files: TLSConfig{
			CAPath:   write("ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})),
			CertPath: write("client.pem", clientCert),
			KeyPath:  write("client-key.pem", clientKey),
		},
		server: &tls.Config{
			Certificates: []tls.Certificate{pair},
			ClientCAs:    pool,
			ClientAuth:   tls.RequireAndVerifyClientCert,
			MinVersion:   tls.VersionTLS12,
		},
	}
}

func TestOpenOverMutualTLS(t *testing.T) {
	pki := newTestPKI(t)
	srv := startPD(t, pdfake.Options{TLS: pki.server})
	require.Contains(t, srv.URL(), "https://")

	// Both spellings: the scheme follows the TLS files.
	for _, addr := range []string{srv.URL(), srv.Addr()} {
		u, err := Open(t.Context(), Config{PDAddrs: []string{addr}, TLS: pki.files})
		require.NoError(t, err)
		require.Equal(t, srv.ClusterID(), u.ClusterID())
		_, err = u.CurrentTS(t.Context())
		require.NoError(t, err)
		u.Close()
	}
}

func TestOpenReportsBadTLSFilesByField(t *testing.T) {
	pki := newTestPKI(t)
	addrs := []string{"127.0.0.1:1"} // never dialled: files are checked first

	missing := pki.files
	missing.KeyPath = filepath.Join(t.TempDir(), "nope.pem")
	_, err := Open(t.Context(), Config{PDAddrs: addrs, TLS: missing})
	requireField(t, err, "key", "nope.pem")

	notCA := pki.files
	notCA.CAPath = pki.files.KeyPath
	_, err = Open(t.Context(), Config{PDAddrs: addrs, TLS: notCA})
	requireField(t, err, "ca", "no PEM certificate")

	mismatched := pki.files
	mismatched.CertPath = pki.files.CAPath
	_, err = Open(t.Context(), Config{PDAddrs: addrs, TLS: mismatched})
	requireField(t, err, "cert", "not a usable key pair")
}
