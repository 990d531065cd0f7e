// Package schema is the encoder's schema history for one changefeed: which
// version of which table a physical table id (a table or a partition) had at
// a given commit ts, built from a meta snapshot at a start ts S plus the
// ordered stream of finished DDL jobs after S.
//
// It is responsible for:
//   - reading the meta snapshot at S from TiKV through client-go and TiDB's
//     pkg/meta reader (OpenStore, LoadSnapshot);
//   - turning raw KV events of mysql.tidb_ddl_job into finished jobs
//     (JobDecoder);
//   - ordering, de-duplicating and applying those jobs (History.AddJob,
//     History.AdvanceResolved) and answering per-table version lookups for
//     many concurrent readers (History.RowTable for a row at its commit ts,
//     History.TableAt and History.Lookup for a ts, History.Tables);
//   - classifying each table version's eligibility as data (Eligibility).
//
// It is not responsible for subscribing the DDL span (the puller and sorter
// do that like for any span), for emitting DDL events, or for starting and
// stopping data spans: the owner derives those from the versions and
// eligibilities recorded here (Tables at D−1 and at D).
//
// One History per changefeed per process is shared by every pipeline of
// that changefeed; one goroutine feeds it.
package schema
