package sinkuri

import (
	"github.com/tidestream/tidestream/coordinator/cdcerr"
)

// Validate checks the rules that tie parameters together and settles the
// effective TLS switch. Call it once every source has been merged in: a
// password in the file may complete a mechanism given in the URI. Errors name
// the field where the offending value was written; a missing value is named
// with the prefix of the value that requires it.
func (o *Options) Validate() error {
	if err := o.validateTLS(); err != nil {
		return err
	}
	if err := o.validateSASL(); err != nil {
		return err
	}
	if o.EnableWatermark && !o.EnableTiDBExtension {
		return cdcerr.Field(o.Field("avro-enable-watermark"),
			"requires enable-tidb-extension=true (it has no effect otherwise)")
	}
	return nil
}

// validateTLS applies TiCDC's rules: ca, cert and key come together; files
// without enable-tls turn TLS on; enable-tls=false with files is an error.
// insecure-skip-verify without TLS is an error here (TiCDC ignores it).
func (o *Options) validateTLS() error {
	files := []struct{ name, val string }{{"ca", o.CA}, {"cert", o.Cert}, {"key", o.Key}}
	given := ""
	for _, f := range files {
		if f.val != "" {
			given = f.name
			break
		}
	}
	if given != "" {
		for _, f := range files {
			if f.val == "" {
				return cdcerr.Field(o.sibling(given, f.name),
					"ca, cert and key must be given together (%s is set)", given)
			}
		}
		if o.IsSet("enable-tls") && !o.EnableTLS {
			return cdcerr.Field(o.Field("enable-tls"), "is false but ca, cert and key are given")
		}
		o.EnableTLS = true
	}
	if o.InsecureSkipVerify && !o.EnableTLS {
		return cdcerr.Field(o.Field("insecure-skip-verify"), "requires TLS (enable-tls=true or ca/cert/key)")
	}
	return nil
}

func (o *Options) validateSASL() error {
	mech := o.SASLMechanism
	// Settings that belong to a mechanism other than the chosen one would be
	// ignored silently; say so instead.
	for _, group := range []struct {
		names []string
		ok    bool
		need  string
	}{
		{[]string{"sasl-user", "sasl-password"}, mech == "plain" || mech == "scram-sha-256" || mech == "scram-sha-512",
			"sasl-mechanism plain, scram-sha-256 or scram-sha-512"},
		{[]string{"sasl-gssapi-auth-type", "sasl-gssapi-keytab-path", "sasl-gssapi-kerberos-config-path",
			"sasl-gssapi-service-name", "sasl-gssapi-user", "sasl-gssapi-password", "sasl-gssapi-realm",
			"sasl-gssapi-disable-pafxfast"}, mech == "gssapi", "sasl-mechanism gssapi"},
		{[]string{"sasl-oauth-client-id", "sasl-oauth-client-secret", "sasl-oauth-token-url",
			"sasl-oauth-scopes", "sasl-oauth-grant-type", "sasl-oauth-audience"}, mech == "oauthbearer",
			"sasl-mechanism oauthbearer"},
	} {
		if group.ok {
			continue
		}
		for _, n := range group.names {
			if o.IsSet(n) {
				return cdcerr.Field(o.Field(n), "requires %s", group.need)
			}
		}
	}
	at := o.Field("sasl-mechanism")
	switch mech {
	case "plain", "scram-sha-256", "scram-sha-512":
		return o.require(at, mech, "sasl-user", o.SASLUser, "sasl-password", o.SASLPassword)
	case "gssapi":
		if err := o.require(at, mech,
			"sasl-gssapi-auth-type", o.GSSAPIAuthType,
			"sasl-gssapi-kerberos-config-path", o.GSSAPIKerberosConfigPath,
			"sasl-gssapi-service-name", o.GSSAPIServiceName,
			"sasl-gssapi-user", o.GSSAPIUser,
			"sasl-gssapi-realm", o.GSSAPIRealm); err != nil {
			return err
		}
		if o.GSSAPIAuthType == "user" {
			return o.require(o.Field("sasl-gssapi-auth-type"), "gssapi with auth type user",
				"sasl-gssapi-password", o.GSSAPIPassword)
		}
		return o.require(o.Field("sasl-gssapi-auth-type"), "gssapi with auth type keytab",
			"sasl-gssapi-keytab-path", o.GSSAPIKeytabPath)
	case "oauthbearer":
		return o.require(at, mech,
			"sasl-oauth-client-id", o.OAuthClientID,
			"sasl-oauth-client-secret", o.OAuthClientSecret,
			"sasl-oauth-token-url", o.OAuthTokenURL)
	}
	return nil
}

// require checks name/value pairs; a missing one is reported under the
// source of the setting that requires it.
func (o *Options) require(requiredBy, what string, pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] == "" {
			return cdcerr.Field(o.sibling(paramOf(requiredBy), pairs[i]), "required when sasl-mechanism is %s", what)
		}
	}
	return nil
}

// sibling returns the field path for param `name` written in the same place
// as the set parameter `like` ("sink-uri: ca" → "sink-uri: cert").
func (o *Options) sibling(like, name string) string {
	f := o.Field(like)
	if f == "" {
		return "sink-uri: " + name
	}
	return f[:len(f)-len(like)] + name
}

// paramOf extracts the parameter name from a field path such as
// "sink-uri: sasl-mechanism" or "config: sink.kafka-config.sasl-mechanism".
func paramOf(field string) string {
	for i := len(field) - 1; i >= 0; i-- {
		if field[i] == ' ' || field[i] == '.' {
			return field[i+1:]
		}
	}
	return field
}
