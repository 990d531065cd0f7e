package sinkuri

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
)

// Defaults, from TiCDC's Kafka sink and Avro codec.
const (
	DefaultReplicationFactor = 1
	// DefaultMaxMessageBytes is 10 MiB; the producer later clamps it to the
	// topic's or broker's limit.
	DefaultMaxMessageBytes = 10 * 1024 * 1024
	DefaultMaxRetry        = 5
	DefaultCompression     = "none"
	DefaultRequiredAcks    = -1
	DefaultTimeout         = 10 * time.Second
	DefaultMaxBatchSize    = 16
	DefaultOAuthGrantType  = "client_credentials"
	DefaultDecimalMode     = "precise"
	DefaultBigintMode      = "long"
)

// Redacted replaces every secret value in output.
const Redacted = "******"

// Options are the Kafka producer and codec parameters of a changefeed, as
// given in the sink URI's query or in the changefeed file. Each value is
// validated on its own when it is set; Validate checks the rules that tie
// several together once every source has been merged in.
type Options struct {
	// Protocol is "avro" (the alias flat-avro is normalised to it), or ""
	// when not given.
	Protocol string
	// PartitionNum is 0 when unset: use the topic's real partition count, or
	// 3 when the topic must be created.
	PartitionNum      int32
	ReplicationFactor int32
	// KafkaVersion is "" when unset: detected from the broker.
	KafkaVersion    string
	MaxMessageBytes int32
	MaxRetry        int32
	// Compression is none, gzip, snappy, lz4 or zstd.
	Compression string
	// ClientID is "" when unset; the producer derives TiCDC's default
	// (TiCDC_producer_<addr>_<namespace>_<changefeed>) since the changefeed
	// id and the process address are not known here.
	ClientID        string
	AutoCreateTopic bool
	// RequiredAcks is -1 (all in-sync replicas), 0 or 1.
	RequiredAcks int32
	DialTimeout  time.Duration
	ReadTimeout  time.Duration
	WriteTimeout time.Duration

	// EnableTLS is the effective switch: Validate turns it on when TLS
	// files are given and enable-tls is not.
	EnableTLS          bool
	CA, Cert, Key      string
	InsecureSkipVerify bool

	// SASLMechanism is lower case: plain, scram-sha-256, scram-sha-512,
	// gssapi or oauthbearer; "" when SASL is off.
	SASLMechanism string
	SASLUser      string
	SASLPassword  string

	GSSAPIAuthType           string // user or keytab
	GSSAPIKeytabPath         string
	GSSAPIKerberosConfigPath string
	GSSAPIServiceName        string
	GSSAPIUser               string
	GSSAPIPassword           string
	GSSAPIRealm              string
	GSSAPIDisablePAFXFAST    bool

	OAuthClientID string
	// OAuthClientSecret is the decoded secret; the file holds it base64
	// encoded, as TiCDC requires.
	OAuthClientSecret string
	OAuthTokenURL     string
	OAuthScopes       []string
	OAuthGrantType    string
	OAuthAudience     string

	// OutputRawChangeEvent disables splitting PK/UK updates into
	// delete + insert.
	OutputRawChangeEvent bool

	EnableTiDBExtension        bool
	DecimalHandlingMode        string // precise or string
	BigintUnsignedHandlingMode string // long or string
	// SchemaRegistry is the registry URL from the schema-registry
	// parameter, unredacted, trailing '/' trimmed; "" when not given.
	SchemaRegistry  string
	EnableWatermark bool
	MaxBatchSize    int32
	// TransactionAtomicity is always "none" for Kafka.
	TransactionAtomicity string
	EncodingFormat       string

	// fields maps each explicitly set parameter to the field path it was
	// set from ("sink-uri: ca", "config: sink.kafka-config.ca"), so errors
	// found after merging still name where the user wrote the value.
	fields map[string]string
	// raw keeps the value as given so a merge can replay it.
	raw map[string]any
}

// NewOptions returns Options holding every default and nothing set.
func NewOptions() *Options {
	return &Options{
		ReplicationFactor:          DefaultReplicationFactor,
		MaxMessageBytes:            DefaultMaxMessageBytes,
		MaxRetry:                   DefaultMaxRetry,
		Compression:                DefaultCompression,
		AutoCreateTopic:            true,
		RequiredAcks:               DefaultRequiredAcks,
		DialTimeout:                DefaultTimeout,
		ReadTimeout:                DefaultTimeout,
		WriteTimeout:               DefaultTimeout,
		OAuthGrantType:             DefaultOAuthGrantType,
		DecimalHandlingMode:        DefaultDecimalMode,
		BigintUnsignedHandlingMode: DefaultBigintMode,
		MaxBatchSize:               DefaultMaxBatchSize,
		TransactionAtomicity:       "none",
		fields:                     map[string]string{},
		raw:                        map[string]any{},
	}
}

// IsSet reports whether parameter name was given explicitly.
func (o *Options) IsSet(name string) bool {
	_, ok := o.fields[name]
	return ok
}

// Field returns the field path parameter name was set from, or "" when it
// was not set.
func (o *Options) Field(name string) string { return o.fields[name] }

// SetParams returns the names of the explicitly set parameters, sorted.
func (o *Options) SetParams() []string {
	names := make([]string, 0, len(o.fields))
	for n := range o.fields {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// SetString sets parameter name from its text form (as in a URI query).
// field is the path used in errors, e.g. "sink-uri: partition-num". The
// caller is responsible for checking that name belongs to the source (see
// Known); an unknown name is an error.
func (o *Options) SetString(name, value, field string) error {
	p, ok := paramsByName[name]
	if !ok {
		return cdcerr.Field(field, "unknown parameter")
	}
	if value == "" {
		return cdcerr.Field(field, "empty value (omit the parameter to use the default)")
	}
	if p.kind == kindStrings {
		return o.apply(p, []string{value}, field)
	}
	return o.apply(p, value, field)
}

// SetValue sets parameter name from a decoded TOML value (string, int64,
// bool or an array of strings), checking that the TOML type fits.
func (o *Options) SetValue(name string, v any, field string) error {
	p, ok := paramsByName[name]
	if !ok {
		return cdcerr.Field(field, "unknown parameter")
	}
	var text string
	switch p.kind {
	case kindString, kindDuration:
		s, ok := v.(string)
		if !ok {
			return cdcerr.Field(field, "must be a string, got %s", TOMLTypeName(v))
		}
		text = s
	case kindInt:
		n, ok := v.(int64)
		if !ok {
			return cdcerr.Field(field, "must be an integer, got %s", TOMLTypeName(v))
		}
		text = strconv.FormatInt(n, 10)
	case kindBool:
		b, ok := v.(bool)
		if !ok {
			return cdcerr.Field(field, "must be a boolean, got %s", TOMLTypeName(v))
		}
		text = strconv.FormatBool(b)
	case kindStrings:
		list, err := stringList(v)
		if err != nil {
			return cdcerr.Field(field, "%s", err)
		}
		return o.apply(p, list, field)
	}
	if text == "" {
		return cdcerr.Field(field, "empty value (omit the key to use the default)")
	}
	return o.apply(p, text, field)
}

func (o *Options) apply(p *param, v any, field string) error {
	var err error
	if list, ok := v.([]string); ok {
		err = p.setList(o, list)
	} else {
		err = p.set(o, v.(string))
	}
	if err != nil {
		return cdcerr.Field(field, "%s", err)
	}
	o.fields[p.name] = field
	o.raw[p.name] = v
	return nil
}

// MergeFrom applies every parameter explicitly set in over on top of o, so
// over wins (the sink URI over the file). Values were validated when they were
// first set.
func (o *Options) MergeFrom(over *Options) error {
	for _, name := range over.SetParams() {
		if err := o.apply(paramsByName[name], over.raw[name], over.fields[name]); err != nil {
			return err
		}
	}
	return nil
}

// TOMLTypeName names the type of a decoded TOML value for error messages
// ("must be a string, got an integer"); shared with replicaconfig so both
// speak of TOML types the same way.
func TOMLTypeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	case time.Time:
		return "a datetime"
	default:
		return fmt.Sprintf("a %T", v)
	}
}

func stringList(v any) ([]string, error) {
	switch list := v.(type) {
	case []string:
		return list, nil
	case []any:
		out := make([]string, 0, len(list))
		for i, e := range list {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("element %d must be a string, got %s", i, TOMLTypeName(e))
			}
			out = append(out, s)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("must be an array of strings, got %s", TOMLTypeName(v))
	}
}

func lower(s string) string { return strings.ToLower(strings.TrimSpace(s)) }
