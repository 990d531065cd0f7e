package replicaconfig

import (
	"errors"
	"strings"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
	"github.com/tidestream/tidestream/coordinator/sinkuri"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// Input is what `changefeed create` (or update) was given.
type Input struct {
	// SinkURI is --sink-uri, verbatim.
	SinkURI string
	// SchemaRegistry is --schema-registry, verbatim; "" when not given.
	SchemaRegistry string
	// ConfigTOML is the content of the --config file; empty for none.
	ConfigTOML []byte
	// IgnoreIneligibleTable is set by the CLI's --no-confirm (or the prompt)
	// and ORed with the file's ignore-ineligible-table.
	IgnoreIneligibleTable bool
}

// Result is the effective configuration of a changefeed.
type Result struct {
	// Config is the changefeed file with defaults filled in. Its
	// Sink.SchemaRegistry is the registry URL unredacted: redact on output
	// (see Redact).
	Config *tidestreamv1.ReplicaConfig
	// Kafka is the sink URI merged over [sink.kafka-config].
	Kafka *tidestreamv1.KafkaSink
	// Avro holds the codec settings.
	Avro *tidestreamv1.AvroOptions
}

// Build validates in and returns the effective configuration. Every error is
// cdcerr.ErrInvalidArgument under errors.Is, names the offending field and
// carries no secret.
func Build(in Input) (*Result, error) {
	if strings.TrimSpace(in.SinkURI) == "" {
		return nil, cdcerr.Field("sink-uri", "is required")
	}
	uri, err := sinkuri.ParsePartial(in.SinkURI)
	if err != nil {
		return nil, err
	}
	fc, err := decodeFile(in.ConfigTOML)
	if err != nil {
		return nil, err
	}
	// The URI wins over the file for the protocol and every Kafka/codec
	// parameter (TiCDC's precedence).
	opts := fc.opts
	if err := opts.MergeFrom(uri.Options); err != nil {
		return nil, err
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Protocol == "" {
		return nil, cdcerr.Field("sink-uri: protocol", "is required (protocol=avro)")
	}
	registry, err := pickRegistry(in.SchemaRegistry, fc.registry, opts)
	if err != nil {
		return nil, err
	}
	cfg := fc.cfg
	cfg.IgnoreIneligibleTable = cfg.IgnoreIneligibleTable || in.IgnoreIneligibleTable
	cfg.Sink.Protocol = opts.Protocol
	cfg.Sink.SchemaRegistry = registry
	cfg.Sink.TransactionAtomicity = opts.TransactionAtomicity
	cfg.Sink.OutputRawChangeEvent = opts.OutputRawChangeEvent
	if err := checkAvro(cfg); err != nil {
		return nil, err
	}
	return &Result{Config: cfg, Kafka: kafkaSink(uri, opts), Avro: avroOptions(opts)}, nil
}

// pickRegistry finds the Confluent registry among the three places it may
// be written. Different non-empty values are an error (see the package
// doc); the returned string is the highest-precedence source as given
// (URI parameter, then flag, then file), trailing '/' trimmed.
func pickRegistry(flag, file string, opts *sinkuri.Options) (string, error) {
	type source struct {
		field string
		reg   *sinkuri.Registry
	}
	var sources []source
	if opts.SchemaRegistry != "" {
		r, err := sinkuri.ParseRegistry(opts.SchemaRegistry)
		if err != nil {
			return "", refield(err, opts.Field("schema-registry"))
		}
		sources = append(sources, source{opts.Field("schema-registry"), r})
	}
	if flag != "" {
		r, err := sinkuri.ParseRegistry(flag)
		if err != nil {
			return "", err
		}
		sources = append(sources, source{"schema-registry", r})
	}
	if file != "" {
		r, err := sinkuri.ParseRegistry(file)
		if err != nil {
			return "", refield(err, "config: sink.schema-registry")
		}
		sources = append(sources, source{"config: sink.schema-registry", r})
	}
	if len(sources) == 0 {
		return "", cdcerr.Field("schema-registry",
			"protocol=avro requires a Confluent Schema Registry: pass --schema-registry (or [sink] schema-registry in the file)")
	}
	first := sources[0]
	for _, s := range sources[1:] {
		if s.reg.URL != first.reg.URL || s.reg.Username != first.reg.Username || s.reg.Password != first.reg.Password {
			// Compare parsed values so "https://h/" and "https://h" agree;
			// name both places but quote neither (they may hold
			// credentials).
			return "", cdcerr.Field(s.field, "names a different registry than %s; give the registry once", first.field)
		}
	}
	return first.reg.Raw(), nil
}

// checkAvro holds the checks on the file as a whole that protocol=avro
// needs; the walk only sees one key at a time, so an absent section is
// judged here.
func checkAvro(cfg *tidestreamv1.ReplicaConfig) error {
	if len(cfg.Sink.Dispatchers) == 0 {
		return cdcerr.Field("config: sink.dispatchers",
			"protocol=avro needs dispatchers routing every table to its own topic, e.g. "+
				"dispatchers = [{matcher = ['*.*'], topic = \"tidb_{schema}_{table}\", partition = \"index-value\"}]; "+
				"without them all tables share the default topic and their schemas clash in the registry")
	}
	return nil
}

func kafkaSink(uri *sinkuri.URI, o *sinkuri.Options) *tidestreamv1.KafkaSink {
	return &tidestreamv1.KafkaSink{
		Brokers:           append([]string(nil), uri.Brokers...),
		Topic:             uri.Topic,
		PartitionNum:      o.PartitionNum,
		ReplicationFactor: o.ReplicationFactor,
		KafkaVersion:      o.KafkaVersion,
		MaxMessageBytes:   o.MaxMessageBytes,
		MaxRetry:          o.MaxRetry,
		Compression:       o.Compression,
		ClientId:          o.ClientID,
		AutoCreateTopic:   o.AutoCreateTopic,
		RequiredAcks:      o.RequiredAcks,
		DialTimeout:       durationpb.New(o.DialTimeout),
		ReadTimeout:       durationpb.New(o.ReadTimeout),
		WriteTimeout:      durationpb.New(o.WriteTimeout),
		Tls: &tidestreamv1.TLSConfig{
			Enabled:            o.EnableTLS,
			CaPath:             o.CA,
			CertPath:           o.Cert,
			KeyPath:            o.Key,
			InsecureSkipVerify: o.InsecureSkipVerify,
		},
		Sasl: &tidestreamv1.SASLConfig{
			Mechanism:                o.SASLMechanism,
			User:                     o.SASLUser,
			Password:                 o.SASLPassword,
			OauthClientId:            o.OAuthClientID,
			OauthClientSecret:        o.OAuthClientSecret,
			OauthTokenUrl:            o.OAuthTokenURL,
			OauthScopes:              append([]string(nil), o.OAuthScopes...),
			OauthGrantType:           oauthGrantType(o),
			OauthAudience:            o.OAuthAudience,
			GssapiAuthType:           o.GSSAPIAuthType,
			GssapiKeytabPath:         o.GSSAPIKeytabPath,
			GssapiKerberosConfigPath: o.GSSAPIKerberosConfigPath,
			GssapiServiceName:        o.GSSAPIServiceName,
			GssapiUser:               o.GSSAPIUser,
			GssapiPassword:           o.GSSAPIPassword,
			GssapiRealm:              o.GSSAPIRealm,
			GssapiDisablePafxfast:    o.GSSAPIDisablePAFXFAST,
		},
	}
}

// oauthGrantType is only meaningful with OAUTHBEARER; leaving it empty
// otherwise keeps the stored config free of settings that do nothing.
func oauthGrantType(o *sinkuri.Options) string {
	if o.SASLMechanism != "oauthbearer" {
		return ""
	}
	return o.OAuthGrantType
}

func avroOptions(o *sinkuri.Options) *tidestreamv1.AvroOptions {
	return &tidestreamv1.AvroOptions{
		EnableTidbExtension:        o.EnableTiDBExtension,
		DecimalHandlingMode:        o.DecimalHandlingMode,
		BigintUnsignedHandlingMode: o.BigintUnsignedHandlingMode,
		EnableWatermark:            o.EnableWatermark,
	}
}

// refield moves a field error to another field path, keeping its reason
// (which never holds a secret).
func refield(err error, field string) error {
	var fe *cdcerr.FieldError
	if errors.As(err, &fe) {
		return &cdcerr.FieldError{Field: field, Reason: fe.Reason}
	}
	return err
}
