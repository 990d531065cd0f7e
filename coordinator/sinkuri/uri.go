package sinkuri

import (
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
)

// MaxTopicLength is Kafka's limit on topic names.
const MaxTopicLength = 249

var topicPattern = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// URI is a parsed Kafka sink URI.
type URI struct {
	// Scheme is kafka or kafka+ssl. kafka+ssl is accepted as a name only:
	// like TiCDC, it does not turn TLS on (use enable-tls or ca/cert/key).
	Scheme string
	// Brokers are the host:port pairs of the URI host, in order.
	Brokers []string
	// Topic is the default topic (the path without slashes). With Avro no
	// record is written to it, but the producer still checks or creates it.
	Topic string
	// Options holds the query parameters; Options.IsSet tells which were
	// given, so a changefeed file can be merged under them.
	*Options

	raw string
}

// String returns the URI with every secret masked.
func (u *URI) String() string { return Redact(u.raw) }

// Parse parses and fully validates a sink URI on its own: each parameter and
// the rules between parameters (see Options.Validate). Use ParsePartial when
// a changefeed file may still complete the settings.
func Parse(raw string) (*URI, error) {
	u, err := ParsePartial(raw)
	if err != nil {
		return nil, err
	}
	if err := u.Validate(); err != nil {
		return nil, err
	}
	return u, nil
}

// ParsePartial parses a sink URI and validates each parameter, but not the
// rules that tie parameters together, so that values from the changefeed file
// can be merged first. Error messages never contain secret values, nor any
// text from the userinfo part of the URI.
func ParsePartial(raw string) (*URI, error) {
	sp, reason := split(raw)
	if reason != "" {
		return nil, cdcerr.Field("sink-uri", "%s", reason)
	}
	u := &URI{raw: raw, Options: NewOptions()}
	switch strings.ToLower(sp.scheme) {
	case "kafka", "kafka+ssl":
		u.Scheme = strings.ToLower(sp.scheme)
	default:
		return nil, cdcerr.Field("sink-uri: scheme", "must be kafka or kafka+ssl, got %q", sp.scheme)
	}
	if sp.hasUserinfo {
		// Never echo it: it is where people paste passwords.
		return nil, cdcerr.Field("sink-uri: userinfo",
			"credentials in the URI authority are not used for Kafka; use sasl-user and sasl-password")
	}
	brokers, err := parseBrokers(sp.host)
	if err != nil {
		return nil, err
	}
	u.Brokers = brokers
	if u.Topic, err = parseTopic(sp.path); err != nil {
		return nil, err
	}
	if sp.hasFragment {
		return nil, cdcerr.Field("sink-uri", "unexpected '#' fragment (percent-encode '#' in values as %%23)")
	}
	if err := u.parseQuery(sp.query); err != nil {
		return nil, err
	}
	return u, nil
}

func parseBrokers(host string) ([]string, error) {
	if host == "" {
		return nil, cdcerr.Field("sink-uri: brokers", "no broker given (kafka://host:port[,host:port…]/topic)")
	}
	parts := strings.Split(host, ",")
	out := make([]string, 0, len(parts))
	for i, b := range parts {
		field := "sink-uri: brokers[" + strconv.Itoa(i) + "]"
		h, port, err := net.SplitHostPort(b)
		if err != nil || h == "" {
			return nil, cdcerr.Field(field, "must be host:port")
		}
		if !validHost(h) {
			return nil, cdcerr.Field(field, "invalid host")
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, cdcerr.Field(field, "invalid port (must be 1-65535)")
		}
		out = append(out, b)
	}
	return out, nil
}

// validHost accepts DNS names, IPv4 and (unbracketed, as SplitHostPort
// returns them) IPv6 addresses.
func validHost(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c == '.' || c == '-' || c == '_' || c == ':' || c == '%' || isAlnum(c)) {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

func parseTopic(path string) (string, error) {
	p, err := url.PathUnescape(path)
	if err != nil {
		return "", cdcerr.Field("sink-uri: topic", "malformed percent-encoding in the path")
	}
	p = strings.Trim(p, "/")
	if p == "" {
		return "", cdcerr.Field("sink-uri: topic", "no topic is specified in sink-uri (kafka://host:port/<topic>)")
	}
	if len(p) > MaxTopicLength {
		return "", cdcerr.Field("sink-uri: topic", "longer than %d bytes", MaxTopicLength)
	}
	if !topicPattern.MatchString(p) || p == "." || p == ".." {
		return "", cdcerr.Field("sink-uri: topic", "%q is not a valid Kafka topic (allowed: letters, digits, '.', '_', '-')", p)
	}
	return p, nil
}

// parseQuery sets each parameter. Keys and values are form-decoded exactly
// like url.ParseQuery (so `+` is a space), but parsed here so that a
// duplicate is detected and no error ever quotes a secret.
func (u *URI) parseQuery(q string) error {
	for _, kv := range queryPairs(q) {
		key, err := url.QueryUnescape(kv.key)
		if err != nil {
			return cdcerr.Field("sink-uri: query", "malformed percent-encoding in a parameter name")
		}
		field := "sink-uri: " + key
		if !Known(key, ScopeURI) {
			if Known(key, ScopeKafkaConfig) {
				return cdcerr.Field(field, "only allowed in [sink.kafka-config] of the changefeed file")
			}
			return cdcerr.Field(field, "unknown parameter (tidestream rejects unknown sink-uri parameters)")
		}
		val, err := url.QueryUnescape(kv.val)
		if err != nil {
			return cdcerr.Field(field, "malformed percent-encoding")
		}
		if u.IsSet(key) {
			return cdcerr.Field(field, "given more than once")
		}
		if err := u.SetString(key, val, field); err != nil {
			return err
		}
	}
	return nil
}

type pair struct {
	key, val string
	// off is where the value starts in the query string; -1 without '='.
	off int
}

// queryPairs splits a raw query on '&', keeping offsets so Redact can mask
// values in place. Empty segments are skipped.
func queryPairs(q string) []pair {
	var out []pair
	start := 0
	for start <= len(q) {
		end := strings.IndexByte(q[start:], '&')
		if end < 0 {
			end = len(q)
		} else {
			end += start
		}
		seg := q[start:end]
		if seg != "" {
			if eq := strings.IndexByte(seg, '='); eq >= 0 {
				out = append(out, pair{key: seg[:eq], val: seg[eq+1:], off: start + eq + 1})
			} else {
				out = append(out, pair{key: seg, off: -1})
			}
		}
		start = end + 1
	}
	return out
}

// splitURI holds the pieces of a URL, found the way net/url finds them:
// fragment at the first '#', query at the first '?', authority up to the
// first '/', userinfo up to the last '@' of the authority.
type splitURI struct {
	scheme      string
	hasUserinfo bool
	userinfo    string
	host        string
	path        string
	query       string
	hasFragment bool
	// offsets into the raw string, for redaction
	userinfoOff int
	queryOff    int
}

func split(raw string) (splitURI, string) {
	var s splitURI
	i := strings.Index(raw, "://")
	if i <= 0 {
		return s, "malformed URI (expected kafka://host:port/topic?protocol=avro)"
	}
	s.scheme = raw[:i]
	for j := 0; j < len(s.scheme); j++ {
		c := s.scheme[j]
		if !(isAlnum(c) || c == '+' || c == '-' || c == '.') {
			return s, "malformed URI scheme"
		}
	}
	rest := raw[i+3:]
	off := i + 3
	if h := strings.IndexByte(rest, '#'); h >= 0 {
		s.hasFragment = true
		rest = rest[:h]
	}
	s.queryOff = -1
	if q := strings.IndexByte(rest, '?'); q >= 0 {
		s.query = rest[q+1:]
		s.queryOff = off + q + 1
		rest = rest[:q]
	}
	auth := rest
	if p := strings.IndexByte(rest, '/'); p >= 0 {
		auth, s.path = rest[:p], rest[p:]
	}
	if at := strings.LastIndexByte(auth, '@'); at >= 0 {
		s.hasUserinfo = true
		s.userinfo = auth[:at]
		s.userinfoOff = off
		auth = auth[at+1:]
	}
	s.host = auth
	return s, ""
}
