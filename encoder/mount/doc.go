// Package mount turns one raw TiKV row change (tidestream.v1.RawKVEvent)
// into typed row changes (row.Row) with the table schema in force just
// before the change committed, as specified in
// specs/tidb-schema-and-rows.md §3.
//
// It is responsible for: classifying an event (insert, update, delete or
// nothing), finding the table and handle from the row key, decoding both
// row formats (v1 and v2) with TiDB's own codecs, taking primary-key values
// from the key when the value lacks them, filling columns the stored row
// predates from their origin defaults, splitting updates that change a
// primary or unique key into delete + insert, and ordering a transaction's
// rows deletes first.
//
// It is not responsible for: keeping schema history (encoder/schema
// implements Tables), waiting until that history has resolved to a row's
// commit ts, filtering tables or deciding eligibility, or encoding (avro).
//
// New collation: TiDB's collate package turns "new collation" on in its
// init, and tablecodec.DecodeHandleToDatumMap consults that process-wide
// flag to decide which clustered-key columns it may read from the key.
// mount does not use that helper: it reads every handle column the value
// lacks straight from the key, which is what TiCDC gets by switching the
// flag off at startup. So mount works whatever the flag says and callers
// need no startup call for it.
//
// Corrupt input: TiDB's decoders trust the bytes they are given and can
// panic on a truncated value. Mount turns such a panic into an error for
// that row (naming table, key and commit ts), like any other decode
// failure; the pipeline then fails rather than skipping the row.
package mount
