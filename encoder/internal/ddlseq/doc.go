// Package ddlseq holds the encoder's acceptance test for schema changes: a
// sequence of DDL statements with row changes between them runs through
// SQL on the playground, and every row change read back as raw KV must be
// mounted with the table version in force at its commit ts, routed to the
// topic of that version's name, registered as the subject version its DDL
// calls for, and decode, as a consumer sees it, to what TiDB's SELECT
// returns at that ts. Under a BACKWARD registry the one incompatible DDL of
// the sequence must fail with an error naming the table and the statement.
//
// It is a package of its own for the reasons package typematrix gives: it
// crosses every encoder package and needs a TiDB. It has no non-test code
// beyond this comment.
package ddlseq
