// Package service serves tidestream.v1.EncoderService: for each pipeline a
// producer subscribes, it pulls the sorted raw events from the sorter the
// route names, decodes them into rows with the changefeed's schema history
// at each commit ts − 1, encodes them as Confluent Avro with ids from the
// Schema Registry, routes them to a topic and partition hash, and streams
// the records in the sorter's order.
//
// It is responsible for the per-changefeed state its pipelines share (the
// changefeed's record read by id, one schema history following the DDL-job
// span through the same sorter and puller, the codecs, the router and the
// registry client), for holding rows until the history covers them, for
// encoding on several cores while each pipeline's output keeps its order,
// and for relaying the producer's acks to the sorter. It is not
// responsible for where pipelines run (the owner) nor for Kafka (the
// producer).
//
// Errors follow proto/contract: a sorter stream's transient failure is
// retried in place; a row that cannot be decoded or encoded, or a schema
// the registry refuses, is Fatal for the changefeed and names the table (and
// the key and commit ts, or the DDL); nothing is skipped except the rows of
// table versions that are not replicated, which are counted and logged, and
// rows that belong at their commit ts to another table than the pipeline's
// (an exchanged partition id), which that table's pipeline delivers.
package service
