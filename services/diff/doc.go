// Package diff proves that every row arrived: it compares each upstream
// TiDB table, read at a snapshot ts (SET @@tidb_snapshot), with its
// downstream copy, and names the keys that differ.
//
// The downstream is either
//
//   - a database the consumer (services/consumer) filled: the table named
//     after the topic, the topic named by the changefeed's dispatcher
//     expression (TopicPattern, default tidb_{schema}_{table}), columns
//     named by the Avro field names (avro.SanitizeName of the column); or
//   - the topics themselves, replayed in memory up to their end offsets as
//     of the call: the last record of each key wins, a tombstone deletes
//     it — the state any JDBC-style sink converges to. A column the last
//     record's schema lacks (the record predates ADD COLUMN) reads as
//     the field's Avro default, as schema resolution against the newer
//     schema gives it and as the sink's evolved column holds it.
//
// Comparison: for every row, each column value is made canonical
// (canon.go: one text per TiDB value, whether it comes from TiDB's text
// protocol, the Avro record, or MariaDB/PostgreSQL's column of the type
// the consumer chose), hashed into a per-row checksum keyed by the
// canonical handle key (primary key, else the shortest NOT NULL unique
// key, as the encoder picks it). Row counts and checksums are compared;
// a key missing on one side or with a different checksum is a differing
// row, and the first MaxKeys are named per table. The report ends with
// the verdict line "all N rows in T tables match TiDB" or
// "D rows differ in B of T tables: topic, …".
//
// The snapshot: given, or the changefeed checkpoint (cdc diff reads it
// from the server). The downstream must have caught up to it — every
// record with commit ts ≤ snapshot applied, which the consumer's CatchUp
// after reading the checkpoint guarantees. Records committed after the
// snapshot make rows differ, unless they carry _tidb_commit_ts
// (enable-tidb-extension=true): then an upsert after the snapshot is cut
// (replay keeps the key's earlier version; in a database the row is left
// out and counted as newer). Deletes cannot be cut: tombstones carry no
// commit ts (TiCDC issue #9421), so a delete after the snapshot shows as a
// key missing downstream.
//
// Out of scope: tables that are not replicated with Avro (no primary or
// NOT NULL unique key) are listed as skipped; the comparison assumes the
// changefeed's time zone for TIMESTAMP (TimeZone, default UTC as
// tidestream's) and the default Avro modes, though decimal/bigint-unsigned
// string modes canonicalise to the same text. A cluster without a GC
// worker needs a tikv_gc_safe_point row in mysql.tidb before tidb_snapshot
// works (deploy/playground writes one); the error says so.
package diff
