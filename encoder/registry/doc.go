// Package registry gets Confluent Schema Registry ids for the encoder's Avro
// schemas (specs/kafka-avro-output.md §5): it looks a schema up under its
// subject and registers it only when the registry does not have it yet,
// caches the id per (table id, schema version, key|value) and per schema
// text, bounds the calls in flight, and retries what is transient with
// jittered exponential backoff under the caller's context.
//
// It is not responsible for building schemas (encoder/avro), choosing the
// topic (encoder/dispatch) or framing records; it only turns (subject,
// schema) into an id, and never returns without one.
//
// Errors: a registry answer that retrying cannot change (409 incompatible,
// 422 invalid, 401/403, other 4xx, a TLS verification failure) is an *Error
// marked fatal (errors.Is(err, ErrFatal)); transport errors, timeouts, 408,
// 429 and 5xx are retried until the context ends, and the retrying state is
// visible through Client.Retrying and Config.OnRetry so the pipeline can
// report the changefeed as `warning` meanwhile. Credentials from the URL's
// userinfo go to the Authorization header only and never into an error or a
// log line.
package registry
