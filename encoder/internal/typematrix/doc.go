// Package typematrix holds the encoder's end-to-end acceptance test and
// benchmark: TiDB row changes, written through SQL into a real TiDB (the
// playground) and read back as raw KV from its change-data stream, go
// through the schema history, mount, dispatch, the registry client and the
// Avro codec, and an independent consumer decodes each record with the
// schema it fetches from the registry by the id in the record. Every value
// must equal what TiDB returns for SELECT at the change's commit ts.
//
// It is a package of its own, not a test of package encoder or of one
// stage package, because it crosses every encoder package at once and
// needs a TiDB: the stage packages keep fast unit tests that run without
// one, and the root package stays free for the stage service. It has no
// non-test code beyond this comment.
package typematrix
