// Package encoder is the encoder stage: it decodes sorted raw KV changes
// into rows with the schema in force at their commit ts, encodes them as
// Confluent Avro registered in Schema Registry, routes them to a topic and
// partition hash, and serves the records through
// tidestream.v1.EncoderService (package service).
//
// The pieces it is built from are its subpackages:
//   - row: the shape of a table version and of one row change;
//   - schema: the schema history (meta snapshot + DDL jobs), per changefeed;
//   - mount: raw KV -> row, with TiDB's own codecs;
//   - avro: key and value schemas and the Confluent-framed encoding;
//   - dispatch: topic expressions and TiCDC's partition hashes;
//   - registry: Schema Registry ids (franz-go sr), cached and retried;
//   - service: EncoderService, which puts them together per pipeline.
package encoder
