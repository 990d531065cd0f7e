// Package kafka is the producer stage's Kafka client: it turns the
// changefeed's validated KafkaSink into franz-go options (Config,
// FromSink), makes sure topics exist the way TiCDC does (EnsureTopic,
// CheckDefaultTopic; the topic requests of concurrent pipelines are
// coalesced, see batcher), and produces encoded records asynchronously with a
// per-record acknowledgement (Producer.Produce), so the caller can track
// the smallest unacknowledged commit ts and advance the table checkpoint.
//
// It is responsible for: the mapping of every sink URI Kafka parameter
// (compression, acks, client id, version cap, timeouts, TLS, SASL PLAIN /
// SCRAM / OAUTHBEARER client credentials), partitioning
// (partition_hash % partition count, counts cached and refreshed), the
// record size limit, per-key order (same key → same partition; the
// idempotent producer keeps retries from reordering or duplicating within a
// partition), and one classification of its errors (Classify: Retryable or
// Fatal).
//
// It is not responsible for: the acked watermark and checkpoint (the
// producer stage does that from the onAck callbacks), retrying a failed
// pipeline (the coordinator restarts it from its checkpoint with a new
// epoch), encoding or choosing the hash (the encoder), or Kerberos (GSSAPI
// is refused with ErrUnsupported).
package kafka
