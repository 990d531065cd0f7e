package sinkuri

import (
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"
)

// Scope says where a parameter may be written.
type Scope uint8

const (
	// ScopeURI: the sink URI query.
	ScopeURI Scope = 1 << iota
	// ScopeKafkaConfig: the changefeed file's [sink.kafka-config].
	ScopeKafkaConfig
	// ScopeCodecConfig: [sink.kafka-config.codec-config].
	ScopeCodecConfig
	// ScopeSink: the changefeed file's [sink] section itself.
	ScopeSink
)

type kind uint8

const (
	kindString kind = iota
	kindInt
	kindBool
	kindDuration
	kindStrings
)

type param struct {
	name   string
	kind   kind
	scope  Scope
	secret bool
	// set validates and stores a single value. Its error is the reason only
	// and must never contain the value of a secret parameter.
	set func(o *Options, v string) error
	// setList is used instead of set for kindStrings.
	setList func(o *Options, v []string) error
}

const (
	uriKafka  = ScopeURI | ScopeKafkaConfig
	uriCodec  = ScopeURI | ScopeCodecConfig
	uriSink   = ScopeURI | ScopeSink
	fileKafka = ScopeKafkaConfig
)

var (
	clientIDPattern     = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	kafkaVersionPattern = regexp.MustCompile(`^[0-9]+(\.[0-9]+){2,3}$`)
)

// params is every parameter tidestream understands, with its type, where it
// may be written and how it is checked. max-retry is URI-only and the OAuth
// keys file-only, as in TiCDC.
var params = []*param{
	{name: "protocol", kind: kindString, scope: uriSink, set: func(o *Options, v string) (err error) {
		o.Protocol, err = parseProtocol(v)
		return err
	}},
	{name: "partition-num", kind: kindInt, scope: uriKafka, set: func(o *Options, v string) error {
		n, err := parseInt(v, 1, 1<<31-1, "must be > 0")
		o.PartitionNum = int32(n)
		return err
	}},
	{name: "replication-factor", kind: kindInt, scope: uriKafka, set: func(o *Options, v string) error {
		n, err := parseInt(v, 1, 1<<15-1, "must be >= 1")
		o.ReplicationFactor = int32(n)
		return err
	}},
	{name: "kafka-version", kind: kindString, scope: uriKafka, set: func(o *Options, v string) error {
		if !kafkaVersionPattern.MatchString(v) {
			return fmt.Errorf("must be a Kafka version such as 2.4.0, got %q", v)
		}
		o.KafkaVersion = v
		return nil
	}},
	{name: "max-message-bytes", kind: kindInt, scope: uriKafka, set: func(o *Options, v string) error {
		n, err := parseInt(v, 1, 1<<31-1, "must be > 0")
		o.MaxMessageBytes = int32(n)
		return err
	}},
	{name: "max-retry", kind: kindInt, scope: ScopeURI, set: func(o *Options, v string) error {
		n, err := parseInt(v, 0, 1<<31-1, "must be >= 0")
		o.MaxRetry = int32(n)
		return err
	}},
	{name: "compression", kind: kindString, scope: uriKafka, set: func(o *Options, v string) error {
		return oneOf(&o.Compression, v, "none", "gzip", "snappy", "lz4", "zstd")
	}},
	{name: "kafka-client-id", kind: kindString, scope: uriKafka, set: func(o *Options, v string) error {
		if !clientIDPattern.MatchString(v) {
			return fmt.Errorf("must match %s, got %q", clientIDPattern, v)
		}
		o.ClientID = v
		return nil
	}},
	{name: "auto-create-topic", kind: kindBool, scope: uriKafka, set: func(o *Options, v string) error {
		return parseBool(&o.AutoCreateTopic, v)
	}},
	{name: "required-acks", kind: kindInt, scope: uriKafka, set: func(o *Options, v string) error {
		switch v {
		case "-1", "0", "1":
			n, _ := strconv.Atoi(v)
			o.RequiredAcks = int32(n)
			return nil
		}
		return fmt.Errorf("must be -1, 0 or 1, got %q", v)
	}},
	{name: "dial-timeout", kind: kindDuration, scope: uriKafka, set: func(o *Options, v string) error {
		return parseDuration(&o.DialTimeout, v)
	}},
	{name: "read-timeout", kind: kindDuration, scope: uriKafka, set: func(o *Options, v string) error {
		return parseDuration(&o.ReadTimeout, v)
	}},
	{name: "write-timeout", kind: kindDuration, scope: uriKafka, set: func(o *Options, v string) error {
		return parseDuration(&o.WriteTimeout, v)
	}},
	{name: "enable-tls", kind: kindBool, scope: uriKafka, set: func(o *Options, v string) error {
		return parseBool(&o.EnableTLS, v)
	}},
	{name: "ca", kind: kindString, scope: uriKafka, set: func(o *Options, v string) error { o.CA = v; return nil }},
	{name: "cert", kind: kindString, scope: uriKafka, set: func(o *Options, v string) error { o.Cert = v; return nil }},
	{name: "key", kind: kindString, scope: uriKafka, set: func(o *Options, v string) error { o.Key = v; return nil }},
	{name: "insecure-skip-verify", kind: kindBool, scope: uriKafka, set: func(o *Options, v string) error {
		return parseBool(&o.InsecureSkipVerify, v)
	}},
	{name: "sasl-mechanism", kind: kindString, scope: uriKafka, set: func(o *Options, v string) error {
		return oneOf(&o.SASLMechanism, v, "plain", "scram-sha-256", "scram-sha-512", "gssapi", "oauthbearer")
	}},
	{name: "sasl-user", kind: kindString, scope: uriKafka, set: func(o *Options, v string) error { o.SASLUser = v; return nil }},
	{name: "sasl-password", kind: kindString, scope: uriKafka, secret: true, set: func(o *Options, v string) error {
		o.SASLPassword = v
		return nil
	}},
	{name: "sasl-gssapi-auth-type", kind: kindString, scope: uriKafka, set: func(o *Options, v string) error {
		return oneOf(&o.GSSAPIAuthType, v, "user", "keytab")
	}},
	{name: "sasl-gssapi-keytab-path", kind: kindString, scope: uriKafka, set: func(o *Options, v string) error {
		o.GSSAPIKeytabPath = v
		return nil
	}},
	{name: "sasl-gssapi-kerberos-config-path", kind: kindString, scope: uriKafka, set: func(o *Options, v string) error {
		o.GSSAPIKerberosConfigPath = v
		return nil
	}},
	{name: "sasl-gssapi-service-name", kind: kindString, scope: uriKafka, set: func(o *Options, v string) error {
		o.GSSAPIServiceName = v
		return nil
	}},
	{name: "sasl-gssapi-user", kind: kindString, scope: uriKafka, set: func(o *Options, v string) error {
		o.GSSAPIUser = v
		return nil
	}},
	{name: "sasl-gssapi-password", kind: kindString, scope: uriKafka, secret: true, set: func(o *Options, v string) error {
		o.GSSAPIPassword = v
		return nil
	}},
	{name: "sasl-gssapi-realm", kind: kindString, scope: uriKafka, set: func(o *Options, v string) error {
		o.GSSAPIRealm = v
		return nil
	}},
	{name: "sasl-gssapi-disable-pafxfast", kind: kindBool, scope: uriKafka, set: func(o *Options, v string) error {
		return parseBool(&o.GSSAPIDisablePAFXFAST, v)
	}},
	{name: "sasl-oauth-client-id", kind: kindString, scope: fileKafka, set: func(o *Options, v string) error {
		o.OAuthClientID = v
		return nil
	}},
	{name: "sasl-oauth-client-secret", kind: kindString, scope: fileKafka, secret: true, set: func(o *Options, v string) error {
		// TiCDC requires the secret base64-encoded in the file; keep that
		// so existing files work. The message must not quote the value.
		dec, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return errors.New("must be base64-encoded")
		}
		o.OAuthClientSecret = string(dec)
		return nil
	}},
	{name: "sasl-oauth-token-url", kind: kindString, scope: fileKafka, set: func(o *Options, v string) error {
		if _, reason := parseHTTPURL(v, false); reason != "" {
			return errors.New(reason)
		}
		o.OAuthTokenURL = v
		return nil
	}},
	{name: "sasl-oauth-scopes", kind: kindStrings, scope: fileKafka, setList: func(o *Options, v []string) error {
		for i, s := range v {
			if s == "" {
				return fmt.Errorf("element %d is empty", i)
			}
		}
		o.OAuthScopes = v
		return nil
	}},
	{name: "sasl-oauth-grant-type", kind: kindString, scope: fileKafka, set: func(o *Options, v string) error {
		o.OAuthGrantType = v
		return nil
	}},
	{name: "sasl-oauth-audience", kind: kindString, scope: fileKafka, set: func(o *Options, v string) error {
		o.OAuthAudience = v
		return nil
	}},
	{name: "output-raw-change-event", kind: kindBool, scope: fileKafka, set: func(o *Options, v string) error {
		return parseBool(&o.OutputRawChangeEvent, v)
	}},
	{name: "enable-tidb-extension", kind: kindBool, scope: uriCodec, set: func(o *Options, v string) error {
		return parseBool(&o.EnableTiDBExtension, v)
	}},
	{name: "avro-decimal-handling-mode", kind: kindString, scope: uriCodec, set: func(o *Options, v string) error {
		return oneOf(&o.DecimalHandlingMode, v, "precise", "string")
	}},
	{name: "avro-bigint-unsigned-handling-mode", kind: kindString, scope: uriCodec, set: func(o *Options, v string) error {
		return oneOf(&o.BigintUnsignedHandlingMode, v, "long", "string")
	}},
	{name: "avro-enable-watermark", kind: kindBool, scope: uriCodec, set: func(o *Options, v string) error {
		return parseBool(&o.EnableWatermark, v)
	}},
	{name: "avro-include-before-value", kind: kindBool, scope: uriCodec, set: func(_ *Options, v string) error {
		return rejectTrue(v, "is not supported by tidestream (new-architecture TiCDC only)")
	}},
	{name: "max-batch-size", kind: kindInt, scope: uriCodec, set: func(o *Options, v string) error {
		n, err := parseInt(v, 1, 1<<31-1, "must be > 0")
		o.MaxBatchSize = int32(n)
		return err
	}},
	{name: "encoding-format", kind: kindString, scope: uriCodec, set: func(o *Options, v string) error {
		// Used only by the simple protocol; accepted so shared files still
		// load, and ignored.
		return oneOf(&o.EncodingFormat, v, "json", "avro")
	}},
	{name: "schema-registry", kind: kindString, scope: ScopeURI, set: func(o *Options, v string) error {
		r, reason := parseRegistry(v)
		if reason != "" {
			return errors.New(reason)
		}
		o.SchemaRegistry = r.raw
		return nil
	}},
	{name: "transaction-atomicity", kind: kindString, scope: uriSink, set: func(o *Options, v string) error {
		if lower(v) != "none" {
			return fmt.Errorf("must be none for Kafka sinks, got %q", v)
		}
		o.TransactionAtomicity = "none"
		return nil
	}},
	{name: "only-output-updated-columns", kind: kindBool, scope: uriSink, set: func(_ *Options, v string) error {
		return rejectTrue(v, "has no effect with protocol=avro (Avro values always carry every column)")
	}},
	{name: "content-compatible", kind: kindBool, scope: uriSink, set: func(_ *Options, v string) error {
		return rejectTrue(v, "has no effect with protocol=avro (canal-json only)")
	}},
}

var paramsByName = func() map[string]*param {
	m := make(map[string]*param, len(params))
	for _, p := range params {
		m[p.name] = p
	}
	return m
}()

// Known reports whether name is a parameter that may be written in scope.
func Known(name string, scope Scope) bool {
	p, ok := paramsByName[name]
	return ok && p.scope&scope != 0
}

// IsSecret reports whether parameter name holds a secret that must be
// masked in every output.
func IsSecret(name string) bool {
	p, ok := paramsByName[name]
	return ok && p.secret
}

// unsupportedProtocols are TiCDC's other MQ protocols: naming them makes the
// error say "not supported" rather than "unknown".
var unsupportedProtocols = []string{
	"canal", "canal-json", "open-protocol", "default", "maxwell", "craft",
	"simple", "debezium", "csv", "debezium-avro",
}

func parseProtocol(v string) (string, error) {
	switch p := lower(v); p {
	case "avro", "flat-avro":
		return "avro", nil
	default:
		for _, u := range unsupportedProtocols {
			if p == u {
				return "", fmt.Errorf("%q is not supported by tidestream (only avro)", v)
			}
		}
		return "", fmt.Errorf("unknown protocol %q (allowed: avro, flat-avro)", v)
	}
}

func parseInt(v string, lo, hi int64, rangeMsg string) (int64, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("must be an integer, got %q", v)
	}
	if n < lo || n > hi {
		if n < lo {
			return 0, fmt.Errorf("%s, got %d", rangeMsg, n)
		}
		return 0, fmt.Errorf("must be <= %d, got %d", hi, n)
	}
	return n, nil
}

func parseBool(dst *bool, v string) error {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return fmt.Errorf("must be true or false, got %q", v)
	}
	*dst = b
	return nil
}

func rejectTrue(v, reason string) error {
	var b bool
	if err := parseBool(&b, v); err != nil {
		return err
	}
	if b {
		return errors.New(reason)
	}
	return nil
}

func parseDuration(dst *time.Duration, v string) error {
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("must be a duration such as 10s, got %q", v)
	}
	if d <= 0 {
		return fmt.Errorf("must be > 0, got %s", v)
	}
	*dst = d
	return nil
}

// oneOf stores the lower-cased v in dst if it is one of allowed; TiCDC
// compares these names case-insensitively.
func oneOf(dst *string, v string, allowed ...string) error {
	l := lower(v)
	for _, a := range allowed {
		if l == a {
			*dst = a
			return nil
		}
	}
	return fmt.Errorf("must be one of %s, got %q", joinOr(allowed), v)
}

func joinOr(s []string) string {
	switch len(s) {
	case 0:
		return ""
	case 1:
		return s[0]
	}
	out := ""
	for i, x := range s[:len(s)-1] {
		if i > 0 {
			out += ", "
		}
		out += x
	}
	return out + " or " + s[len(s)-1]
}
