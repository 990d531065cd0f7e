package sinkuri

import (
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRedact(t *testing.T) {
	cases := []struct{ in, want string }{
		{seedURI, strings.Replace(seedURI, "S3cr%2Bt", Redacted, 1)},
		{"kafka://h:9092/t?sasl-gssapi-password=x&sasl-oauth-client-secret=y&a=b",
			"kafka://h:9092/t?sasl-gssapi-password=******&sasl-oauth-client-secret=******&a=b"},
		{"kafka://u:pw@h:9092/t", "kafka://u:******@h:9092/t"},
		{"https://KEY:SECRET@sr:8081/x", "https://KEY:******@sr:8081/x"},
		{"https://KEY:SE/CRET@sr", "https://KEY:******@sr"},
		{"https://KEY:SE?CRET@sr", "https://KEY:******@sr"},
		{"https://KEY:SE#CRET@sr", "https://KEY:******@sr"},
		{"https://KEY:a/b=@sr", "https://KEY:******@sr"},
		{"kafka://h:9092/t?protocol=avro&sasl-user=a@b", "kafka://h:9092/t?protocol=avro&sasl-user=a@b"},
		{"kafka://h:9092/t?schema-registry=https%3A%2F%2Fk%3As%2Bx%40sr",
			"kafka://h:9092/t?schema-registry=https%3A%2F%2Fk%3A******%40sr"},
		{"kafka://h:9092/t?schema-registry=%zz", "kafka://h:9092/t?schema-registry=******"},
		{"kafka://h:9092/t?sasl-password=a,b;c&x=1", "kafka://h:9092/t?sasl-password=******&x=1"},
		{"not a uri sasl-password=abc", "not a uri sasl-password=******"},
		{"kafka://h:9092/t?protocol=avro", "kafka://h:9092/t?protocol=avro"},
	}
	for _, tc := range cases {
		require.Equal(t, tc.want, Redact(tc.in), tc.in)
		require.Equal(t, tc.want, Redact(Redact(tc.in)), "idempotent: %s", tc.in)
	}
}

func TestRedactText(t *testing.T) {
	cases := []struct{ in, want string }{
		{"plain log line", "plain log line"},
		{`sink="kafka://h:1/t?sasl-password=xyz&a=1" ok`, `sink="kafka://h:1/t?sasl-password=******&a=1" ok`},
		{`registry https://K:S3@h:8081 failed`, `registry https://K:******@h:8081 failed`},
		{`{"password":"p\"w","user":"u"}`, `{"password":"******","user":"u"}`},
		{`sasl-password = "toml"`, `sasl-password = "******"`},
		{`oauth_client_secret: abc def`, `oauth_client_secret: ******`[:len(`oauth_client_secret: ******`)] + " def"},
		{`Password=abc`, `Password=******`},
		{`passthrough works`, `passthrough works`},
		{`mail me@example.com`, `mail me@example.com`},
		{`a://b:c@d and e://f:g@h`, `a://b:******@d and e://f:******@h`},
	}
	for _, tc := range cases {
		require.Equal(t, tc.want, RedactText(tc.in), tc.in)
	}
}

func TestRedactTextNoAllocWhenClean(t *testing.T) {
	line := `level=info msg="table pipeline started" table=shop.orders epoch=3`
	allocs := testing.AllocsPerRun(100, func() { _ = RedactText(line) })
	require.Zero(t, allocs)
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		seedURI,
		"kafka://u:p@h:1/t",
		"kafka://h:1/t?schema-registry=https%3A%2F%2Fk%3As%40h",
		"https://K:S@h/p",
		"kafka://h:1,h:2/t?protocol=avro&sasl-gssapi-password=x&sasl-password=y",
		"kafka://h:1/t?sasl-password=a%2",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		red := Redact(raw)
		_ = RedactText(raw)
		if r, err := ParseRegistry(raw); err == nil {
			checkMasked(t, raw, red, r.Password)
			checkMasked(t, raw, r.Redacted(), r.Password)
		} else if strings.Contains(err.Error(), "\x00") {
			t.Fatal("impossible")
		}
		u, err := ParsePartial(raw)
		if err != nil {
			return
		}
		_ = u.Validate()
		for _, secret := range []string{u.SASLPassword, u.GSSAPIPassword} {
			checkMasked(t, raw, red, secret)
		}
		if u.SchemaRegistry != "" {
			r, err := ParseRegistry(u.SchemaRegistry)
			require.NoError(t, err)
			checkMasked(t, raw, red, r.Password)
		}
		// Re-parsing the redacted URI must show only masks.
		if u2, err := ParsePartial(red); err == nil {
			for _, s := range []string{u2.SASLPassword, u2.GSSAPIPassword} {
				require.True(t, s == "" || s == Redacted, "secret survived: %q -> %q", raw, red)
			}
		}
	})
}

// checkMasked fails if the secret shows up in red in a form that was not
// also present in raw outside of the secret itself (a one-letter secret that
// is also a letter of the host name cannot be hidden and is not a leak).
func checkMasked(t *testing.T, raw, red, secret string) {
	t.Helper()
	if secret == "" || secret == Redacted {
		return
	}
	for _, form := range []string{secret, url.QueryEscape(secret), url.PathEscape(secret)} {
		if !strings.Contains(red, form) {
			continue
		}
		if strings.Count(red, form) > strings.Count(raw, form)-1 {
			t.Fatalf("secret %q leaked: %q -> %q", secret, raw, red)
		}
	}
}

func FuzzRedactSecret(f *testing.F) {
	f.Add("S3cr3t+/=", "user")
	f.Add("a/b?c#d@e", "K")
	f.Fuzz(func(t *testing.T, secret, user string) {
		if len(secret) < 6 || strings.ContainsAny(secret, "\x00") {
			return
		}
		forms := []string{
			"kafka://h:9092/t?protocol=avro&sasl-user=" + url.QueryEscape(user) + "&sasl-password=" + url.QueryEscape(secret),
			"https://" + url.UserPassword(user, secret).String() + "@sr.example.com:8081",
			"kafka://h:9092/t?schema-registry=" + url.QueryEscape("https://"+url.UserPassword(user, secret).String()+"@sr"),
		}
		for _, raw := range forms {
			red := Redact(raw)
			// Only meaningful when the secret is not also elsewhere in the
			// template (user name, host, parameter names).
			rest := strings.Replace(raw, url.QueryEscape(secret), "", 1)
			if strings.Contains(rest, secret) || strings.Contains(red, "******"+secret) {
				continue
			}
			if strings.Contains(strings.Replace(raw, url.UserPassword(user, secret).String(), "", 1), secret) {
				continue
			}
			for _, form := range []string{secret, url.QueryEscape(secret)} {
				if strings.Contains(red, form) && !strings.Contains(strings.ReplaceAll(raw, form, ""), form) &&
					strings.Count(red, form) >= strings.Count(raw, form) {
					t.Fatalf("secret %q leaked: %q -> %q", secret, raw, red)
				}
			}
		}
	})
}
