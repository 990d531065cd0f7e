package registry

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"
)

// Defaults.
const (
	// DefaultMaxInFlight bounds concurrent registry calls per Client. The
	// registry serialises registrations behind one leader and answers 500
	// "Register operation timed out" when a changefeed with many tables
	// registers them all at once (pingcap/ticdc#6097); a few in flight keep
	// it busy without piling up.
	DefaultMaxInFlight = 8
	// DefaultTimeout bounds one HTTP request, as [ticdc] does (30 s).
	DefaultTimeout = 30 * time.Second
	// DefaultRetryBase is the first backoff; it doubles per attempt.
	DefaultRetryBase = 200 * time.Millisecond
	// DefaultRetryMax caps the backoff (TiCDC's cap is 30 s too). The delay
	// never falls to zero, unlike TiCDC's after 15 minutes.
	DefaultRetryMax = 30 * time.Second
)

// Config configures a Client. The zero values of the optional fields mean
// the defaults above.
type Config struct {
	// URL is the registry's base URL, http or https, with an optional path
	// prefix and optional userinfo for basic auth
	// (https://KEY:SECRET@host); the user and password must be
	// percent-encoded in the URL and are used decoded.
	URL string
	// CAFile is a PEM bundle to verify the registry's certificate with
	// instead of the system pool; CertFile and KeyFile a client
	// certificate for mutual TLS (both or neither). All need https.
	CAFile, CertFile, KeyFile string
	// InsecureSkipVerify disables certificate verification (tests only).
	InsecureSkipVerify bool
	// MaxInFlight bounds concurrent HTTP requests to the registry.
	MaxInFlight int
	// Timeout bounds each HTTP request; a timed-out request is retried.
	Timeout time.Duration
	// RetryBase and RetryMax shape the backoff between attempts: attempt n
	// waits a random time in [d/2, d) with d = min(RetryBase·2ⁿ, RetryMax).
	RetryBase, RetryMax time.Duration
	// Logger receives retry warnings; nil discards.
	Logger *slog.Logger
	// OnRetry, if set, is called before each backoff wait with the subject,
	// the attempt that failed (1-based), the wait and the (redacted) error,
	// so the pipeline can report a `warning` state while it waits. It must
	// not block.
	OnRetry func(subject string, attempt int, wait time.Duration, err error)
}

// endpoint is a parsed Config.URL: the base without userinfo, and the
// credentials apart.
type endpoint struct {
	base       string
	user, pass string
	https      bool
}

func parseURL(raw string) (endpoint, error) {
	if raw == "" {
		return endpoint{}, fmt.Errorf("%w: URL is empty", ErrConfig)
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse quotes the input, credentials included: say only what
		// is wrong.
		return endpoint{}, fmt.Errorf("%w: URL %q does not parse", ErrConfig, redactURL(raw))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return endpoint{}, fmt.Errorf("%w: URL %q: scheme must be http or https", ErrConfig, redactURL(raw))
	}
	if u.Host == "" {
		return endpoint{}, fmt.Errorf("%w: URL %q has no host", ErrConfig, redactURL(raw))
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return endpoint{}, fmt.Errorf("%w: URL %q: a query or fragment is not allowed", ErrConfig, redactURL(raw))
	}
	ep := endpoint{https: u.Scheme == "https"}
	if u.User != nil {
		// url.Parse has already percent-decoded both parts.
		ep.user = u.User.Username()
		ep.pass, _ = u.User.Password()
		if ep.user == "" {
			return endpoint{}, fmt.Errorf("%w: URL %q: userinfo without a user name", ErrConfig, redactURL(raw))
		}
		u.User = nil
	}
	ep.base = strings.TrimRight(u.String(), "/")
	return ep, nil
}

// redactURL masks the password of a URL for messages. It works on text so
// that it also covers URLs url.Parse rejects.
func redactURL(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return "<unparsed URL>"
	}
	hostEnd := strings.IndexAny(rest, "/?#")
	authority := rest
	if hostEnd >= 0 {
		authority = rest[:hostEnd]
	}
	at := strings.LastIndexByte(authority, '@')
	if at < 0 {
		return raw
	}
	user, _, hasPass := strings.Cut(authority[:at], ":")
	masked := user
	if hasPass {
		masked += ":xxxxx"
	}
	return scheme + "://" + masked + rest[at:]
}

// Validate checks the config without touching the network or reading
// files beyond checking that they exist. Errors name the field.
func (c *Config) Validate() error {
	ep, err := parseURL(c.URL)
	if err != nil {
		return err
	}
	tlsSet := c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" || c.InsecureSkipVerify
	if tlsSet && !ep.https {
		return fmt.Errorf("%w: CAFile, CertFile, KeyFile and InsecureSkipVerify need an https URL", ErrConfig)
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return fmt.Errorf("%w: CertFile and KeyFile go together", ErrConfig)
	}
	for field, path := range map[string]string{"CAFile": c.CAFile, "CertFile": c.CertFile, "KeyFile": c.KeyFile} {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrConfig, field, err)
		}
	}
	switch {
	case c.MaxInFlight < 0:
		return fmt.Errorf("%w: MaxInFlight %d: want ≥ 1 (0 means %d)", ErrConfig, c.MaxInFlight, DefaultMaxInFlight)
	case c.Timeout < 0:
		return fmt.Errorf("%w: Timeout %v: want > 0 (0 means %v)", ErrConfig, c.Timeout, DefaultTimeout)
	case c.RetryBase < 0 || c.RetryMax < 0:
		return fmt.Errorf("%w: RetryBase %v / RetryMax %v: want > 0 (0 means the default)", ErrConfig, c.RetryBase, c.RetryMax)
	case c.RetryBase > 0 && c.RetryMax > 0 && c.RetryBase > c.RetryMax:
		return fmt.Errorf("%w: RetryBase %v exceeds RetryMax %v", ErrConfig, c.RetryBase, c.RetryMax)
	}
	return nil
}

// Redacted returns the URL with its password masked, for logs and API
// output.
func (c *Config) Redacted() string { return redactURL(c.URL) }

// LogValue keeps credentials out of structured logs of the config.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("url", redactURL(c.URL)),
		slog.String("ca_file", c.CAFile),
		slog.String("cert_file", c.CertFile),
		slog.Bool("insecure_skip_verify", c.InsecureSkipVerify),
		slog.Int("max_in_flight", c.MaxInFlight),
		slog.Duration("timeout", c.Timeout),
	)
}

// String keeps credentials out of %v / %s of the config.
func (c Config) String() string {
	return fmt.Sprintf("registry.Config{URL:%s CAFile:%q CertFile:%q KeyFile:%q InsecureSkipVerify:%v MaxInFlight:%d Timeout:%v}",
		redactURL(c.URL), c.CAFile, c.CertFile, c.KeyFile, c.InsecureSkipVerify, c.MaxInFlight, c.Timeout)
}

// GoString keeps credentials out of %#v as well.
func (c Config) GoString() string { return c.String() }

func (c *Config) tlsConfig() (*tls.Config, error) {
	if c.CAFile == "" && c.CertFile == "" && !c.InsecureSkipVerify {
		return nil, nil // the transport's default: system roots
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.InsecureSkipVerify} //nolint:gosec // opt-in, documented as tests only
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: CAFile: %w", ErrConfig, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: CAFile %s holds no PEM certificate", ErrConfig, c.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: CertFile/KeyFile: %w", ErrConfig, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
