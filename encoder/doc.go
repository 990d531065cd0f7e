// Package encoder will hold the encoder stage: it decodes sorted raw KV
// changes into rows with the schema in force at their commit ts, encodes
// them as Confluent Avro registered in Schema Registry, routes them to a
// topic and partition hash, and serves the records through
// tidestream.v1.EncoderService. Today the module only fixes its place in
// go.work.
package encoder
