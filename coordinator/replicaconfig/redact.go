package replicaconfig

import (
	"github.com/tidestream/tidestream/coordinator/sinkuri"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// Redact masks, in place, every secret of a changefeed before it is returned
// by the API or logged: the sink URI's passwords, the registry password, and
// the SASL password, OAuth client secret and GSSAPI password. The raw inputs
// kept for updates (config_toml, schema_registry_arg) are cleared, since
// they may hold any of these and are never returned. Call it on a copy:
// the stored record must keep its secrets.
func Redact(info *tidestreamv1.ChangefeedInfo) {
	if info == nil {
		return
	}
	info.SinkUri = sinkuri.Redact(info.SinkUri)
	info.ConfigToml = ""
	info.SchemaRegistryArg = ""
	if s := info.GetConfig().GetSink(); s != nil && s.SchemaRegistry != "" {
		s.SchemaRegistry = redactRegistry(s.SchemaRegistry)
	}
	if sasl := info.GetKafka().GetSasl(); sasl != nil {
		mask(&sasl.Password)
		mask(&sasl.OauthClientSecret)
		mask(&sasl.GssapiPassword)
	}
}

func redactRegistry(raw string) string {
	if r, err := sinkuri.ParseRegistry(raw); err == nil {
		return r.Redacted()
	}
	// Not expected for a stored record, but never let it through whole.
	return sinkuri.Redact(raw)
}

func mask(s *string) {
	if *s != "" {
		*s = sinkuri.Redacted
	}
}
