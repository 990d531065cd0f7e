// Package producer is the producer stage: it pulls encoded records from an
// encoder, produces them to Kafka with franz-go, and turns "every record up
// to R acknowledged" into the table checkpoint, written to etcd under the
// fence of the pipeline's assignment.
//
//   - kafka: the Kafka client (sink-URI options, topics, partitioning,
//     idempotent produce with per-record acknowledgement, errors);
//   - pipeline: one assignment running (encoder stream, in-flight tracking,
//     checkpoint);
//   - runner: a member's pipelines from its assignments, batched fenced
//     progress writes, acks to the encoders.
package producer
