// Package producer will hold the producer stage: it pulls encoded records
// from an encoder, produces them to Kafka with franz-go, and turns "every
// record up to R acknowledged" into the table checkpoint. Today the module
// only fixes its place in go.work.
package producer
