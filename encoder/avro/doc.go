// Package avro turns one table version (row.Table) and its row changes
// (row.Row) into Confluent-framed Avro keys and values that are
// byte-compatible with TiCDC's protocol=avro Kafka sink
// (specs/kafka-avro-output.md §2–§5.1).
//
// It is responsible for the key and value schema JSON text (exactly as
// TiCDC spells it, because Schema Registry ids depend on it), for rendering
// TiDB datums into the Avro binary body and for the 5-byte Confluent header.
// It is not responsible for registering schemas (the caller passes the ids
// the registry returned), for choosing topics or partitions, for splitting
// key-changing updates into delete + insert, or for decoding KV into datums.
//
// A TableCodec is built once per table version and reused for every row of
// that version: all per-column decisions (Avro type, union order, integer
// range, fraction digits, enum members) are made when it is built, so
// encoding a row is a loop over precompiled column descriptors that appends
// to the caller's buffer. The binary writer is ours rather than hamba/avro's
// reflection-driven Marshal because the input is TiDB datums, not Go
// structs: going through an intermediate map or struct would cost more than
// the encoding itself. hamba/avro still parses and validates every schema we
// build, and the tests decode every encoding with it.
//
// Contract with the producer of rows: TIMESTAMP datums arrive in the
// changefeed's time zone — mount converts them from TiDB's UTC while
// decoding, as TiCDC's mounter does with its --tz — and every temporal
// value is written verbatim. One owner of the conversion keeps the record
// and the partition hash (dispatch, which hashes the same text) in step.
//
// Not supported yet: the row-level checksum fields and column-ID field
// order of integrity-check-level=correctness (spec §4.5), and TiCDC's
// before-value mode (§4.7).
//
// The rules that differ from TiCDC on purpose are listed in
// docs/differences.md.
package avro
