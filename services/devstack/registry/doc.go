// Package registry is devstack's Confluent Schema Registry: franz-go's
// srfake for storage and the read API, behind a handler that adds what
// srfake leaves out and tidestream's users rely on.
//
// It is responsible for: compatibility levels (NONE, BACKWARD, the default,
// BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE)
// enforced on POST /subjects/{s}/versions and answered by
// POST /compatibility/subjects/{s}/versions[/{v}] (with ?verbose=true
// messages); global and per-subject config (GET/PUT/DELETE /config and
// /config/{s}, ?defaultToGlobal=true), the subject's level overriding the
// global one; Avro schema validation (42201) before anything is stored;
// HTTP basic auth with Confluent's 401 body; and GET / answering {}, the
// root probe TiCDC-compatible clients make at start.
//
// It is not responsible for: storing schemas, ids and versions, lookups,
// deletes, modes and contexts (srfake does all of these; requests under
// /contexts/{ctx}/ and schema types other than AVRO reach srfake without a
// compatibility check), persistence (everything is in memory and gone when
// the process stops), or TLS (serve it behind a TLS listener if needed).
//
// Compatibility is decided by hamba/avro's SchemaCompatibility, the checker
// the encoder's tests already trust: BACKWARD means the new schema reads
// data written with the previous one, FORWARD the previous one reads data
// written with the new one, FULL both; the transitive levels check every
// live version, the others only the latest.
package registry
