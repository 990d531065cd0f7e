// Package consumer is tidestream's reference consumer: it reads the Avro
// topics a changefeed writes (Confluent wire format, schemas from the
// Schema Registry) and applies them to MariaDB/MySQL or PostgreSQL the way
// the seed guide's Confluent JDBC sink is configured
// (specs/kafka-avro-output.md Appendix B):
//
//	table.name.format = ${topic}   the table is named after the topic
//	pk.mode           = record_key the primary key is the key schema's fields
//	insert.mode       = upsert     INSERT … ON DUPLICATE KEY UPDATE (MySQL),
//	                               INSERT … ON CONFLICT (pk) DO UPDATE (PostgreSQL)
//	delete.enabled    = true       a null value (tombstone) deletes the key
//	auto.create       = true       CREATE TABLE from the value schema, PK from the key schema
//	auto.evolve       = true       ALTER TABLE ADD COLUMN (nullable) for a new field; a
//	                               field that disappears stays as a column and is made nullable
//	                               unless it has a default
//
// Avro field defaults become column DEFAULTs, in CREATE TABLE and in
// ALTER TABLE ADD COLUMN, as the JDBC sink writes them: the rows already
// in a table take the new column's default (TiDB gives its rows the
// default of an added column too). An upsert names the fields of the
// record's own schema only, so a record written before a column was
// added leaves that column as it is, or at its default when the row is
// new — again as the JDBC sink, whose statement is built from the
// record's schema.
//
// Delivery: records are applied per fetch in one database transaction
// (a partition's records in offset order; only the last change of each key
// within a fetch is written, which gives the same result). Kafka offsets
// are committed to the consumer group only after that transaction
// commits, so a crash replays at most one fetch, and replays are harmless
// because upserts and deletes are idempotent. Without a group every run
// reads from the beginning and converges to the same state.
//
// Type mapping (Avro type of the field, its null union removed):
//
//	Avro                MariaDB/MySQL                       PostgreSQL        Confluent JDBC sink (MySQL / PG)
//	int                 INT                                 INTEGER           INT / INT
//	long                BIGINT                              BIGINT            same
//	float               FLOAT                               REAL              same
//	double              DOUBLE                              DOUBLE PRECISION  same
//	boolean             BOOLEAN                             BOOLEAN           TINYINT / BOOLEAN
//	string              LONGTEXT utf8mb4_bin                TEXT              TEXT (VARCHAR(256) in a key) / TEXT
//	  in the key        VARCHAR(256) utf8mb4_bin            TEXT
//	bytes               LONGBLOB                            BYTEA             VARBINARY(1024) / BYTEA
//	  in the key        VARBINARY(1024)                     BYTEA
//	decimal(p,s) bytes  DECIMAL(p,s)                        NUMERIC(p,s)      DECIMAL(65,s) / DECIMAL
//
// So TiCDC's temporal types (DATE, DATETIME, TIMESTAMP, TIME), JSON, ENUM,
// SET and VECTOR arrive as text exactly as the encoder rendered them, BIT
// and BINARY as bytes, BIGINT UNSIGNED as BIGINT (values above 2^63-1 wrap,
// as in the Avro record, unless the changefeed uses
// avro-bigint-unsigned-handling-mode=string) and YEAR as INT. Where we
// differ from the JDBC sink it is to keep every value: LONGTEXT/LONGBLOB
// instead of TEXT/VARBINARY(1024) (TiDB text and blobs are larger), the
// schema's DECIMAL precision instead of 65 (same values), and a binary
// collation for text so keys that differ only in case stay distinct rows
// (TiDB's default utf8mb4_bin). String key columns must be bounded in
// MySQL; 256 characters is the JDBC sink's choice and longer keys fail with
// MySQL's error. PostgreSQL rejects NUL characters in TEXT; such a value
// stops the consumer with the record's position.
//
// Not handled: a field whose Avro type changes (MODIFY COLUMN upstream
// widening int to long) keeps the old column type; a changed key schema
// (a new primary key upstream) is applied with the table's existing
// primary key; a changed default (ALTER COLUMN SET DEFAULT upstream) is not
// applied to an existing column; TLS and SASL to Kafka.
package consumer
