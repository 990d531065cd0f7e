package cli

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// DefaultServer is where `cdc server` listens by default, as in TiCDC.
const DefaultServer = "http://127.0.0.1:8300"

// ConnFlags are the client flags shared by every cli command.
type ConnFlags struct {
	Server string
	CA     string
	Cert   string
	Key    string
}

// addFlags registers --server, --ca, --cert and --key on fs.
func (f *ConnFlags) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&f.Server, "server", DefaultServer, "address of a tidestream server (cdc server --addr), http://host:port")
	fs.StringVar(&f.CA, "ca", "", "CA certificate for TLS to the server")
	fs.StringVar(&f.Cert, "cert", "", "client certificate for TLS to the server")
	fs.StringVar(&f.Key, "key", "", "client key for TLS to the server")
}

// target turns TiCDC's --server forms (http://host:port, https://…,
// host:port) into a gRPC target and says whether TLS is implied.
func target(server string) (string, bool, error) {
	if server == "" {
		server = DefaultServer
	}
	if !strings.Contains(server, "://") {
		return server, false, nil
	}
	u, err := url.Parse(server)
	if err != nil {
		return "", false, fmt.Errorf("--server %q: %w", server, err)
	}
	switch u.Scheme {
	case "http", "grpc":
	case "https", "grpcs":
		return u.Host, true, nil
	default:
		return "", false, fmt.Errorf("--server %q: scheme must be http or https", server)
	}
	if u.Host == "" {
		return "", false, fmt.Errorf("--server %q: missing host:port", server)
	}
	return u.Host, false, nil
}

// Dial opens a client connection to the server. grpc.NewClient connects
// lazily, so an unreachable server shows up as the first call's error.
func (f ConnFlags) Dial() (*grpc.ClientConn, error) {
	tgt, useTLS, err := target(f.Server)
	if err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if useTLS || f.CA != "" || f.Cert != "" || f.Key != "" {
		tc, err := f.tlsConfig()
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(tc)
	}
	return grpc.NewClient(tgt, grpc.WithTransportCredentials(creds))
}

func (f ConnFlags) tlsConfig() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.CA != "" {
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca %s: no PEM certificate found", f.CA)
		}
		tc.RootCAs = pool
	}
	if (f.Cert == "") != (f.Key == "") {
		return nil, errors.New("--cert and --key must be given together")
	}
	if f.Cert != "" {
		pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("--cert/--key: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}
