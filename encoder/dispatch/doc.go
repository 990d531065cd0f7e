// Package dispatch routes a row change to a Kafka topic and a partition
// hash the way TiCDC's Kafka sink does (specs/kafka-avro-output.md §7), so
// that tidestream can take over topics TiCDC wrote without breaking per-key
// order across the switch.
//
// It is responsible for: parsing and validating the changefeed's
// dispatcher rules (proto DispatchRule) and the default topic of the sink
// URI; matching a table to the first rule whose table-filter matcher selects
// it; substituting the topic expression; and computing the partition hash of
// the rule's partitioner (default, table, ts, index-value, columns) from the
// decoded row. It enforces Avro's one-table-per-topic constraint (§7.4),
// statically where the rules alone prove a fan-in and otherwise per table
// name (Router.CheckTables for the coordinator, and a guard inside
// Router.Route).
//
// It is not responsible for partition counts: the encoder only knows the
// hash, the producer places the record in hash % partitions (see
// EncodedRecord.partition_hash). Every TiCDC partitioner is a 32-bit hash
// reduced modulo the partition count, or the commit ts reduced modulo it, so
// the split loses nothing provided the producer reduces the unsigned 64-bit
// hash by the unsigned partition count.
//
// Every error this package returns is deterministic — the same rules and
// row give it again — so a caller should treat it as fatal for the
// changefeed rather than retry.
package dispatch
