package sinkuri

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseRegistry(t *testing.T) {
	cases := []struct {
		raw, url, user, pass, redacted string
	}{
		{"http://127.0.0.1:8081", "http://127.0.0.1:8081", "", "", "http://127.0.0.1:8081"},
		{"https://sr.example.com/", "https://sr.example.com", "", "", "https://sr.example.com"},
		{"HTTPS://sr.example.com/api/ccompat//", "https://sr.example.com/api/ccompat", "", "", "https://sr.example.com/api/ccompat"},
		{"https://KEY:SECRET@127.0.0.1:8081", "https://127.0.0.1:8081", "KEY", "SECRET", "https://KEY:******@127.0.0.1:8081"},
		{"https://KEY:ab+c%2Fd%3D@sr.example.com", "https://sr.example.com", "KEY", "ab+c/d=", "https://KEY:******@sr.example.com"},
		{"https://KEY:p=@h", "https://h", "KEY", "p=", "https://KEY:******@h"},
		{"https://KEY@h", "https://h", "KEY", "", "https://KEY@h"},
		{"https://a%40b:x@[::1]:8081/p", "https://[::1]:8081/p", "a@b", "x", "https://a%40b:******@[::1]:8081/p"},
	}
	for _, tc := range cases {
		r, err := ParseRegistry(tc.raw)
		require.NoError(t, err, tc.raw)
		require.Equal(t, tc.url, r.URL, tc.raw)
		require.Equal(t, tc.user, r.Username, tc.raw)
		require.Equal(t, tc.pass, r.Password, tc.raw)
		require.Equal(t, tc.redacted, r.Redacted(), tc.raw)
		require.Equal(t, tc.redacted, r.String())
	}
}

func TestParseRegistryRejects(t *testing.T) {
	cases := []struct{ raw, want string }{
		{"", "schema-registry: malformed URL"},
		{"sr.example.com:8081", "schema-registry: malformed URL"},
		{"ftp://h", `schema-registry: scheme must be http or https, got "ftp"`},
		{"https://", "schema-registry: host is required"},
		{"https:///p", "schema-registry: host is required"},
		{"https://h?x=1", "schema-registry: query and fragment are not allowed"},
		{"https://h#x", "schema-registry: query and fragment are not allowed"},
		{"https://KEY:Sec%zzret@h", "schema-registry: malformed percent-encoding in password"},
		{"https://K%G1:Secret@h", "schema-registry: malformed percent-encoding in user name"},
		{"https://:Secret@h", "schema-registry: empty user name"},
		{"https://KEY:Sec/ret@h", "schema-registry: invalid host or port"},
		{"https://KEY:Sec?ret@h", "schema-registry: query and fragment are not allowed"},
		{"https://h:0", "schema-registry: invalid host or port"},
		{"https://h:x", "schema-registry: invalid host or port"},
		{"https://h h", "schema-registry: invalid host or port"},
		{"https://h/%zz", "schema-registry: malformed percent-encoding in path"},
	}
	for _, tc := range cases {
		_, err := ParseRegistry(tc.raw)
		require.Error(t, err, tc.raw)
		require.Contains(t, err.Error(), tc.want, tc.raw)
		require.NotContains(t, err.Error(), "Sec", tc.raw)
		require.NotContains(t, err.Error(), "ret", tc.raw)
	}
}
