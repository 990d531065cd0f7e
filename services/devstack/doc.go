// Package devstack runs the Kafka cluster and Confluent Schema Registry
// tidestream writes to, in one process on loopback, for development and
// multi-process tests: franz-go's kfake (a Kafka wire-protocol broker) and
// the registry package (Confluent's REST API over an indexed in-memory
// store, with compatibility checks, config and basic auth).
//
// It is responsible for: turning a validated Config into kfake options
// (broker count and ports, default partitions for auto-created topics,
// SASL PLAIN and SCRAM users, TLS, kfake's own on-disk persistence),
// answering SASL as Kafka does where kfake's answer differs visibly to
// clients (a wrong PLAIN password, SaslHandshake v0 for librdkafka; see
// sasl.go), serving the registry over HTTP, reporting the bound addresses
// before serving, and stopping both when Run's context ends.
//
// It is not responsible for: anything but 127.0.0.1 (kfake binds loopback
// only, and so does the registry), TLS or persistence for the registry
// (its state is in memory and lost on stop), ACLs, or signals and printing
// (cmd/devstack does those).
package devstack
