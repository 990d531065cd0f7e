// Package replicaconfig turns what a user gives `cdc cli changefeed create`
// (the sink URI, `--schema-registry` and the changefeed TOML file) into the
// validated, effective configuration stored with the changefeed, and masks
// the secrets of a stored changefeed before it leaves the process.
//
// It is responsible for strict decoding of the TOML (every unknown key is an
// error), defaults, the merge of the sink URI over [sink.kafka-config] (the
// URI wins), and every check that can be made without the network: Avro's
// one-table-per-topic rule, dispatcher and filter syntax, registry presence,
// TiCDC features the encoder does not implement yet. It is not responsible
// for checks that need the upstream or Kafka (whether tables have a valid
// index, whether a named index or column exists, topic and broker
// settings): those happen when the changefeed starts. Everything rejected
// here names the field it is about, as `sink-uri: <param>`,
// `schema-registry` or `config: <dotted.path>`, and no error ever contains
// a secret.
//
// Choices where TiCDC is more lenient, all made so a mistake fails at create
// time instead of surfacing later as a wrong stream:
//
//   - protocol=avro needs a dispatcher for every table, each with a topic
//     expression containing {schema} and {table}; literal topics, rules
//     without a topic and "no dispatchers" are rejected (spec §7.4);
//   - unknown partition values are rejected instead of falling back to
//     default; `index` is only allowed with index-value and `columns` only
//     with (and required by) the columns partitioner;
//   - the schema registry may be given in up to three places (the sink-uri
//     parameter, --schema-registry, [sink] schema-registry). TiCDC lets the
//     URI win over the flag and the flag over the file; here giving two
//     different registries is an error, because silently picking one
//     registers schemas somewhere the user did not expect. The same registry
//     given twice is fine;
//   - settings that only make sense for MySQL/TiDB downstreams
//     (enable-sync-point, bdr-mode, [consistent] level other than none) are
//     rejected when true rather than ignored;
//   - AWS Glue Schema Registry is not supported: tidestream speaks the
//     Confluent wire format only, and Glue-framed records cannot be read by
//     Confluent deserializers. [sink.kafka-config.glue-schema-registry-config]
//     is rejected with a clear message;
//   - [sink.kafka-config.large-message-handle] accepts only "none" for both
//     the option and the compression, since the Avro encoder applies neither.
//   - TiCDC features the encoder does not implement yet are rejected when
//     asked for, since ignoring them would change what reaches Kafka
//     without a word: [integrity] integrity-check-level = "correctness" (no
//     checksum fields), a non-empty [sink] column-selectors and a non-empty
//     [[filter.event-filters]]. filter.ignore-txn-start-ts is applied.
package replicaconfig
