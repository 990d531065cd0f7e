package sinkuri

import (
	"net/url"
	"sort"
	"strings"
)

// Redact returns the sink URI (or any URL) with every secret replaced by
// ******: the userinfo password, the values of secret parameters
// (sasl-password, sasl-gssapi-password, sasl-oauth-client-secret and any
// parameter whose name contains "password" or "secret") and the password
// inside a URL-encoded schema-registry value. It works on strings that do not
// parse, erring on the side of masking too much: a URI the parser rejects
// (say, a password with an unencoded '/') is still masked by the text rules
// of RedactText.
func Redact(raw string) string {
	sp, reason := split(raw)
	if reason != "" {
		return RedactText(raw)
	}
	var edits []edit
	if sp.hasUserinfo {
		if c := strings.IndexByte(sp.userinfo, ':'); c >= 0 {
			edits = append(edits, edit{sp.userinfoOff + c + 1, sp.userinfoOff + len(sp.userinfo), Redacted})
		}
	}
	if sp.queryOff >= 0 {
		for _, p := range queryPairs(sp.query) {
			if p.off < 0 || p.val == "" {
				continue
			}
			key, err := url.QueryUnescape(p.key)
			if err != nil {
				key = p.key
			}
			start := sp.queryOff + p.off
			switch {
			case isSecretKey(key):
				edits = append(edits, edit{start, start + len(p.val), Redacted})
			case key == "schema-registry":
				edits = append(edits, edit{start, start + len(p.val), redactEncodedURL(p.val)})
			}
		}
	}
	return RedactText(applyEdits(raw, edits))
}

// RedactText masks secrets inside free text such as a log line: the password
// of any `scheme://user:password@` userinfo, and the value of any
// `key=value`, `key: value` or `"key":"value"` pair whose key contains
// "password" or "secret" (or is schema-registry, whose URL-encoded value may
// hold credentials). Text with no '@', "%40", "pass" or "secret" in it is
// returned as is without allocating, which is the common case for log lines.
func RedactText(s string) string {
	if strings.IndexByte(s, '@') < 0 && !strings.Contains(s, "%40") &&
		!containsFold(s, "pass") && !containsFold(s, "secret") {
		return s
	}
	return redactPairs(redactUserinfo(s))
}

type edit struct {
	start, end int
	repl       string
}

func applyEdits(s string, edits []edit) string {
	if len(edits) == 0 {
		return s
	}
	sort.Slice(edits, func(i, j int) bool { return edits[i].start < edits[j].start })
	var b strings.Builder
	last := 0
	for _, e := range edits {
		if e.start < last {
			continue // overlapping: the earlier edit already masked it
		}
		b.WriteString(s[last:e.start])
		b.WriteString(e.repl)
		last = e.end
	}
	b.WriteString(s[last:])
	return b.String()
}

func isSecretKey(key string) bool {
	return IsSecret(key) || containsFold(key, "pass") || containsFold(key, "secret")
}

// redactEncodedURL masks the password of a URL that is itself a
// query-encoded value (the sink URI's schema-registry parameter). A value
// that does not decode is masked whole: it cannot be told apart from a
// password.
func redactEncodedURL(v string) string {
	dec, err := url.QueryUnescape(v)
	if err != nil {
		return Redacted
	}
	// The decoded value is one URL, so its structure is known: use Redact,
	// not the text heuristics. It is shorter than the string it came from,
	// so the recursion ends.
	red := Redact(dec)
	if red == dec {
		return v
	}
	return strings.ReplaceAll(url.QueryEscape(red), "%2A", "*")
}

// redactUserinfo masks `user:password@` after every "://". The URL is taken
// to end at whitespace, a quote or a bracket; its userinfo ends at the last
// '@' before the first '?', '&' or '#'. When there is none, the first '@' is
// used if nothing before it looks like a query (no '=' or '&'), so that a
// password holding an unencoded '?' or '#' is still masked.
func redactUserinfo(s string) string {
	var edits []edit
	for from := 0; ; {
		i := strings.Index(s[from:], "://")
		if i < 0 {
			break
		}
		start := from + i + 3
		end := start
		for end < len(s) && !isURLEnd(s[end]) {
			end++
		}
		tok := s[start:end]
		from = start
		region := tok
		if k := strings.IndexAny(tok, "?&#"); k >= 0 {
			region = tok[:k]
		}
		at := strings.LastIndexByte(region, '@')
		if at < 0 {
			at = strings.IndexByte(tok, '@')
			if at < 0 || strings.ContainsAny(tok[:at], "=&") {
				continue
			}
		}
		c := strings.IndexByte(tok[:at], ':')
		if c < 0 || tok[c+1:at] == Redacted {
			continue
		}
		edits = append(edits, edit{start + c + 1, start + at, Redacted})
	}
	return applyEdits(s, edits)
}

func isURLEnd(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\r', '"', '\'', '`', '<', '>':
		return true
	}
	return false
}

// redactPairs masks values of secret-looking keys.
func redactPairs(s string) string {
	var edits []edit
	for _, needle := range []string{"pass", "secret", "schema-registry"} {
		for from := 0; ; {
			i := indexFold(s[from:], needle)
			if i < 0 {
				break
			}
			i += from
			from = i + len(needle)
			// Widen to the whole key.
			ks, ke := i, i+len(needle)
			for ks > 0 && isKeyChar(s[ks-1]) {
				ks--
			}
			for ke < len(s) && isKeyChar(s[ke]) {
				ke++
			}
			from = ke
			key := s[ks:ke]
			if needle == "schema-registry" && !strings.EqualFold(key, "schema-registry") {
				continue
			}
			vs, ve, ok := valueAfter(s, ke)
			if !ok || vs == ve {
				continue
			}
			repl := Redacted
			if needle == "schema-registry" {
				repl = redactEncodedURL(s[vs:ve])
				if repl == s[vs:ve] {
					continue
				}
			} else if s[vs:ve] == Redacted {
				continue
			}
			edits = append(edits, edit{vs, ve, repl})
			from = ve
		}
	}
	return applyEdits(s, edits)
}

// valueAfter finds the value that follows a key at position i: an optional
// closing quote, optional blanks, '=' or ':', optional blanks, then a quoted
// string or a bare word.
func valueAfter(s string, i int) (int, int, bool) {
	if i < len(s) && (s[i] == '"' || s[i] == '\'') {
		i++
	}
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	if i >= len(s) || (s[i] != '=' && s[i] != ':') {
		return 0, 0, false
	}
	i++
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	if i >= len(s) {
		return 0, 0, false
	}
	if q := s[i]; q == '"' || q == '\'' {
		j := i + 1
		for j < len(s) && s[j] != q {
			if s[j] == '\\' {
				j++
			}
			j++
		}
		if j > len(s) {
			j = len(s)
		}
		return i + 1, j, true
	}
	j := i
	for j < len(s) && !isValueEnd(s[j]) {
		j++
	}
	return i, j, true
}

func isValueEnd(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\r', '&', ',', ';', '"', '\'', ')', ']', '}', '>':
		return true
	}
	return false
}

func isKeyChar(c byte) bool {
	return isAlnum(c) || c == '-' || c == '_' || c == '.'
}

func containsFold(s, sub string) bool { return indexFold(s, sub) >= 0 }

// indexFold is an allocation-free ASCII case-insensitive strings.Index for a
// lower-case needle.
func indexFold(s, sub string) int {
	n := len(sub)
	for i := 0; i+n <= len(s); i++ {
		j := 0
		for ; j < n; j++ {
			c := s[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != sub[j] {
				break
			}
		}
		if j == n {
			return i
		}
	}
	return -1
}
