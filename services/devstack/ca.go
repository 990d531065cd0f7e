package devstack

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// LoopbackCA is a throwaway CA and a server certificate for 127.0.0.1 it
// signed, as PEM files: what --tls-cert / --tls-key serve and what a client
// trusts (Pool, or CAFile as a system root through SSL_CERT_FILE) to reach
// devstack over TLS the way it reaches Confluent Cloud.
type LoopbackCA struct {
	CAFile, CertFile, KeyFile string
	Pool                      *x509.CertPool
}

// WriteLoopbackCA writes a fresh CA (ca.pem) and a 127.0.0.1 server
// certificate (server.pem, server-key.pem) into dir, valid from an hour ago
// for validity. For tests and demos only: the keys are written unencrypted.
func WriteLoopbackCA(dir string, validity time.Duration) (LoopbackCA, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return LoopbackCA{}, fmt.Errorf("devstack: CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "devstack loopback CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return LoopbackCA{}, fmt.Errorf("devstack: CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return LoopbackCA{}, fmt.Errorf("devstack: CA certificate: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return LoopbackCA{}, fmt.Errorf("devstack: server key: %w", err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: loopback},
		IPAddresses:  []net.IP{net.ParseIP(loopback)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		return LoopbackCA{}, fmt.Errorf("devstack: server certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return LoopbackCA{}, fmt.Errorf("devstack: server key: %w", err)
	}
	out := LoopbackCA{Pool: x509.NewCertPool()}
	out.Pool.AddCert(ca)
	for _, f := range []struct {
		path *string
		name string
		typ  string
		der  []byte
	}{
		{&out.CAFile, "ca.pem", "CERTIFICATE", caDER},
		{&out.CertFile, "server.pem", "CERTIFICATE", leafDER},
		{&out.KeyFile, "server-key.pem", "PRIVATE KEY", keyDER},
	} {
		*f.path = filepath.Join(dir, f.name)
		if err := os.WriteFile(*f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			return LoopbackCA{}, fmt.Errorf("devstack: %w", err)
		}
	}
	return out, nil
}
