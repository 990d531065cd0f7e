// Package sinkuri parses and validates the Kafka sink URI of a changefeed
// (`kafka://host:port,…/default-topic?protocol=avro&…`), the Schema Registry
// URL given with `--schema-registry`, and hides the secrets both may carry.
//
// It is responsible for the syntax, type, default and allowed values of every
// sink-URI parameter, for the rules that tie parameters together (TLS files,
// SASL credentials), and for redaction of URIs and of free text (log lines).
// The same parameter table also checks values that come from the changefeed
// file's [sink.kafka-config] section, so a value is validated the same way
// wherever it is written; merging the file under the URI and producing the
// effective configuration is package replicaconfig's job. It does not touch
// the network: whether brokers, topics or the registry exist is checked when
// the sink starts.
//
// Where tidestream is stricter than TiCDC:
//
//   - unknown query parameters, parameters given twice and empty values are
//     errors (TiCDC ignores the first, keeps one of the second and treats
//     most of the third as unset), because a typo such as
//     `replication-facter=3` would otherwise silently fall back to a default;
//   - an unknown compression is an error, not a silent fallback to none;
//   - protocols other than avro (canal-json, open-protocol, …) are rejected;
//   - userinfo in the sink URI is rejected (TiCDC ignores it; credentials
//     belong in sasl-user / sasl-password);
//   - settings that would be silently ignored are errors: insecure-skip-verify
//     without TLS, SASL credentials without a mechanism, GSSAPI or OAuth
//     settings with another mechanism, avro-enable-watermark without
//     enable-tidb-extension, and options that do nothing for Avro but change
//     other protocols' output (only-output-updated-columns,
//     content-compatible) when set to true.
//
// As in TiCDC, query values are form-encoded: `+` means a space, so a literal
// `+` in a password must be written %2B. Registry userinfo is not
// form-encoded: `+` stays `+` there (Confluent secrets often contain it).
package sinkuri
