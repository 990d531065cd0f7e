// Package registry is devstack's Confluent Schema Registry: an in-memory
// store of subjects, versions and schema ids behind the Confluent REST API,
// with what tidestream's users rely on.
//
// It is responsible for: registration, lookups and reads (by id, GUID,
// subject version, latest), soft and permanent deletes of subjects and
// versions, references (a referenced version cannot be deleted while a
// live schema names it; reference cycles are refused), modes (stored and
// answered, not enforced) and contexts (":.ctx:subject" names and the
// /contexts/{ctx}/ prefix, which filters listings and reads by id);
// compatibility levels (NONE, BACKWARD, the default, BACKWARD_TRANSITIVE,
// FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE) enforced on
// POST /subjects/{s}/versions and answered by
// POST /compatibility/subjects/{s}/versions[/{v}] (with ?verbose=true
// messages); global and per-subject config (GET/PUT/DELETE /config and
// /config/{s}, ?defaultToGlobal=true), the subject's level overriding the
// global one; Avro schema validation (42201) before anything is stored;
// HTTP basic auth with Confluent's 401 body; and GET / answering {}, the
// root probe TiCDC-compatible clients make at start.
//
// It is not responsible for: persistence (everything is in memory and gone
// when the process stops), TLS (devstack serves it behind a TLS listener
// when asked), checking schema types other than AVRO (JSON and PROTOBUF
// schemas are stored and compared as text, never checked for
// compatibility), or Confluent's ?normalize, metadata and rule sets
// (stored with the schema, never acted on).
//
// # Identity
//
// Two registrations are the same schema when they have the same type, the
// same JSON value for AVRO and JSON (layout and object key order do not
// matter), the same text for PROTOBUF, and the same references in any
// order — the equality srfake applied, which this package used before.
// Ids are global and never freed: the same schema under another subject,
// or registered again after every version holding it was deleted, gets the
// id it had. Versions are per subject and never reused: a permanently
// deleted version's number stays taken until the whole subject is
// permanently deleted. The same schema registered again under a subject
// where it is live answers that version's id and stores nothing, without
// a compatibility check (Confluent does the same). A version keeps the
// text it was registered with; an id keeps the text first registered
// under it.
//
// # Why not srfake
//
// Until the scale test, storage was franz-go's srfake. Its registration
// compares the new schema with every stored one, decoding and re-encoding
// both as JSON each time, whenever the subject does not already hold it:
// that is exactly a new schema, the scale test's common case, and a
// schema another subject already has. Registration cost grew with the
// store (1 ms empty, 14 ms at 1,000 schemas, 35 ms at 1,500), so 20,000
// schemas were out of reach. An index in front of srfake cannot help: a
// known schema could skip srfake, but a new one can only enter it through
// that scan, or through SeedSchema, which refuses an id already in use and
// so cannot record an id shared by two subjects. The store in store.go
// instead indexes everything registration and the hot reads ask: a
// schema's canonical key (canonicalKey) to its id, id and GUID to the
// schema and the versions using it, subject to its versions (sorted, for a
// binary search by number) and to its own canonical-key index, and each
// version to the versions referencing it. Registration is one JSON
// canonicalisation of the new schema plus map lookups, whatever the store
// holds; its compatibility check reads the subject's history only. Lists
// (GET /subjects, GET /schemas, GET /contexts) walk what they list.
//
// Compatibility is decided by hamba/avro's SchemaCompatibility, the checker
// the encoder's tests already trust: BACKWARD means the new schema reads
// data written with the previous one, FORWARD the previous one reads data
// written with the new one, FULL both; the transitive levels check every
// live version, the others only the latest.
package registry
