package sinkuri

import (
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
)

// Registry is a Confluent Schema Registry endpoint (`--schema-registry`).
type Registry struct {
	// URL is scheme://host[:port][/prefix] without userinfo and without a
	// trailing '/'; the path prefix stays percent-encoded as given.
	URL string
	// Username and Password are the decoded basic-auth credentials, empty
	// when the URL has no userinfo.
	Username string
	Password string

	raw string
}

// ParseRegistry parses and validates a Schema Registry URL: http or https,
// a host, an optional path prefix, no query or fragment, and optional
// percent-encoded `user:password@` userinfo. Errors are named
// "schema-registry" and never contain the userinfo, nor the host (which
// holds part of the credentials when an unencoded '/', '?' or '#' splits
// them).
func ParseRegistry(raw string) (*Registry, error) {
	r, reason := parseRegistry(raw)
	if reason != "" {
		return nil, cdcerr.Field("schema-registry", "%s", reason)
	}
	return r, nil
}

// Raw returns the URL as given, trailing '/' trimmed, credentials included.
// It is what the changefeed stores; never log it.
func (r *Registry) Raw() string { return r.raw }

// Redacted returns the URL with the password replaced by ******.
func (r *Registry) Redacted() string {
	if r.Username == "" && r.Password == "" {
		return r.URL
	}
	scheme, rest, _ := strings.Cut(r.URL, "://")
	ui := url.User(r.Username).String()
	if r.Password != "" {
		ui += ":" + Redacted
	}
	return scheme + "://" + ui + "@" + rest
}

// String is Redacted, so a Registry is safe to print.
func (r *Registry) String() string { return r.Redacted() }

func parseRegistry(raw string) (*Registry, string) {
	u, reason := parseHTTPURL(raw, true)
	if reason != "" {
		return nil, reason
	}
	// The URL ends with its path (no query or fragment is allowed) and has
	// a host, so trimming cannot eat into the authority.
	u.raw = strings.TrimRight(raw, "/")
	return u, ""
}

// parseHTTPURL parses an http(s) URL with optional userinfo and path and no
// query or fragment. Reasons never quote the authority.
func parseHTTPURL(raw string, allowUserinfo bool) (*Registry, string) {
	sp, reason := split(raw)
	if reason != "" {
		return nil, "malformed URL (expected https://[user:password@]host[:port][/path])"
	}
	scheme := strings.ToLower(sp.scheme)
	if scheme != "http" && scheme != "https" {
		return nil, "scheme must be http or https, got " + strconv.Quote(sp.scheme)
	}
	if sp.query != "" || sp.queryOff >= 0 || sp.hasFragment {
		return nil, "query and fragment are not allowed (percent-encode '?', '#' and '/' inside credentials)"
	}
	r := &Registry{}
	if sp.hasUserinfo {
		if !allowUserinfo {
			return nil, "credentials are not allowed in this URL"
		}
		user, pass, hasPass := strings.Cut(sp.userinfo, ":")
		var err error
		if r.Username, err = url.PathUnescape(user); err != nil {
			return nil, "malformed percent-encoding in user name"
		}
		if hasPass {
			if r.Password, err = url.PathUnescape(pass); err != nil {
				return nil, "malformed percent-encoding in password"
			}
		}
		if r.Username == "" {
			return nil, "empty user name in credentials"
		}
	}
	if sp.host == "" {
		return nil, "host is required"
	}
	if !validHTTPHost(sp.host) {
		return nil, "invalid host or port (percent-encode '/', '?', '#' and '@' inside credentials)"
	}
	if _, err := url.PathUnescape(sp.path); err != nil {
		return nil, "malformed percent-encoding in path"
	}
	r.URL = scheme + "://" + sp.host + strings.TrimRight(sp.path, "/")
	return r, ""
}

func validHTTPHost(hostport string) bool {
	host := hostport
	if strings.LastIndexByte(hostport, ':') > strings.LastIndexByte(hostport, ']') {
		h, port, err := net.SplitHostPort(hostport)
		if err != nil {
			return false
		}
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return false
		}
		host = h
	} else if strings.HasPrefix(hostport, "[") {
		if !strings.HasSuffix(hostport, "]") {
			return false
		}
		host = hostport[1 : len(hostport)-1]
	}
	if host == "" {
		return false
	}
	return validHost(host)
}
