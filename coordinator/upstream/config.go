package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
)

// DefaultDialTimeout bounds Open. PD answers GetMembers in milliseconds when
// it is up; the pd client retries once a second, so 5 s is several attempts
// while still failing `cdc cli changefeed create` quickly on a typo.
const DefaultDialTimeout = 5 * time.Second

// Config says where the upstream PD is and how to reach it.
type Config struct {
	// PDAddrs are the PD endpoints, each "host:port" or
	// "http(s)://host:port" (a trailing "/" is accepted). The caller splits
	// a comma-separated --pd flag. All must belong to one cluster.
	PDAddrs []string
	// TLS, when set, is used for every PD connection. Either all three
	// paths or none: the pd client silently falls back to plaintext when
	// only a CA is given, which would be a security surprise.
	TLS TLSConfig
	// DialTimeout bounds Open (connect, learn the cluster id and leader).
	// Zero means DefaultDialTimeout.
	DialTimeout time.Duration
	// Logger; nil discards. The pd client itself logs through
	// github.com/pingcap/log's global zap logger, which only main configures.
	Logger *slog.Logger
}

// TLSConfig holds PEM file paths, named like TiCDC's --ca/--cert/--key.
type TLSConfig struct {
	CAPath   string
	CertPath string
	KeyPath  string
}

// Enabled reports whether any TLS path is set.
func (t TLSConfig) Enabled() bool {
	return t.CAPath != "" || t.CertPath != "" || t.KeyPath != ""
}

// DefaultConfig returns a Config with every default filled in and no PD
// address.
func DefaultConfig() Config {
	return Config{DialTimeout: DefaultDialTimeout}
}

func (c Config) withDefaults() Config {
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate checks the configuration without touching the network or the
// file system. Errors are cdcerr.FieldError naming "pd", "ca", "cert",
// "key" or "dial-timeout".
func (c Config) Validate() error {
	if len(c.PDAddrs) == 0 {
		return cdcerr.Field("pd", "at least one PD address is required")
	}
	for _, a := range c.PDAddrs {
		if _, err := normalizeAddr(a, c.TLS.Enabled()); err != nil {
			return err
		}
	}
	if c.TLS.Enabled() {
		for _, f := range []struct{ name, path string }{
			{"ca", c.TLS.CAPath}, {"cert", c.TLS.CertPath}, {"key", c.TLS.KeyPath},
		} {
			if f.path == "" {
				return cdcerr.Field(f.name, "required when any of ca, cert, key is set")
			}
		}
	}
	if c.DialTimeout < 0 {
		return cdcerr.Field("dial-timeout", "must not be negative, got %s", c.DialTimeout)
	}
	return nil
}

// urls returns the addresses as URLs with the scheme the connection will
// use. Call only after Validate.
func (c Config) urls() []string {
	out := make([]string, 0, len(c.PDAddrs))
	for _, a := range c.PDAddrs {
		u, _ := normalizeAddr(a, c.TLS.Enabled())
		out = append(out, u)
	}
	return out
}

// normalizeAddr turns "host:port" or "scheme://host:port[/]" into
// "scheme://host:port". It refuses anything the pd client would quietly
// misread: a path (it dials only the host), credentials, or https without
// TLS files (the client would downgrade it to plain http).
func normalizeAddr(addr string, tlsEnabled bool) (string, error) {
	raw := strings.TrimSpace(addr)
	bad := func(reason string, args ...any) error {
		return cdcerr.Field("pd", "address %q: %s", addr, fmt.Sprintf(reason, args...))
	}
	if raw == "" {
		return "", bad("empty")
	}
	scheme := "http"
	if tlsEnabled {
		scheme = "https"
	}
	hostport := raw
	if strings.Contains(raw, "://") {
		u, err := url.Parse(raw)
		if err != nil {
			return "", bad("%v", err)
		}
		switch strings.ToLower(u.Scheme) {
		case "http":
			// With TLS files the client upgrades http to https; so do we.
		case "https":
			if !tlsEnabled {
				return "", bad("https needs --ca, --cert and --key")
			}
		default:
			return "", bad("scheme must be http or https")
		}
		if u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
			return "", bad("want http(s)://host:port with nothing after the port")
		}
		hostport = u.Host
	} else if strings.ContainsAny(raw, "/?#@") {
		return "", bad("want host:port or http(s)://host:port")
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", bad("want host:port or http(s)://host:port")
	}
	if host == "" {
		return "", bad("host is empty")
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return "", bad("port %q is not a number in 1..65535", port)
	}
	return scheme + "://" + net.JoinHostPort(host, port), nil
}

// tlsMaterial is the PEM content handed to the pd client.
type tlsMaterial struct {
	ca, cert, key []byte
}

// load reads and checks the files up front so a bad file is reported as
// the field the user got wrong, not as a PD connection failure.
func (t TLSConfig) load() (tlsMaterial, error) {
	var m tlsMaterial
	var err error
	if m.ca, err = os.ReadFile(t.CAPath); err != nil {
		return m, cdcerr.Field("ca", "%v", err)
	}
	if m.cert, err = os.ReadFile(t.CertPath); err != nil {
		return m, cdcerr.Field("cert", "%v", err)
	}
	if m.key, err = os.ReadFile(t.KeyPath); err != nil {
		return m, cdcerr.Field("key", "%v", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(m.ca) {
		return m, cdcerr.Field("ca", "%s holds no PEM certificate", t.CAPath)
	}
	if _, err := tls.X509KeyPair(m.cert, m.key); err != nil {
		return m, cdcerr.Field("cert", "%s and %s are not a usable key pair: %v", t.CertPath, t.KeyPath, err)
	}
	return m, nil
}
