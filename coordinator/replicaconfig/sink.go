package replicaconfig

import (
	"regexp"
	"strings"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
	"github.com/tidestream/tidestream/coordinator/sinkuri"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// avroTopicExpr is the topic expression grammar with both placeholders
// required (spec §7.3): one topic per table, so TopicNameStrategy subjects
// hold one table's schemas.
var avroTopicExpr = regexp.MustCompile(`^[A-Za-z0-9._-]*\{schema\}[A-Za-z0-9._-]*\{table\}[A-Za-z0-9._-]*$`)

func walkSink(n *node, fc *fileConfig) {
	sc := fc.cfg.Sink
	// [sink] protocol, transaction-atomicity, … go through sinkuri's table
	// so that the sink URI can override them with the same checks.
	for _, k := range []string{"protocol", "transaction-atomicity", "only-output-updated-columns", "content-compatible"} {
		if _, ok := n.m[k]; ok {
			kafkaParam(n, fc.opts, k)
		}
	}
	if v, ok := n.str("schema-registry"); ok {
		if v == "" {
			n.w.fail(cdcerr.Field(n.field("schema-registry"), "must not be empty (omit the key)"))
		} else if _, err := sinkuri.ParseRegistry(v); err != nil {
			n.w.fail(refield(err, n.field("schema-registry")))
		}
		fc.registry = v
	}
	if v, ok := n.integer("encoder-concurrency"); ok {
		if v <= 0 || v > 1<<16 {
			n.w.fail(cdcerr.Field(n.field("encoder-concurrency"), "must be between 1 and 65536, got %d", v))
		}
		sc.EncoderConcurrency = int32(v)
	}
	if v, ok := n.boolean("delete-only-output-handle-key-columns"); ok && v {
		n.w.fail(cdcerr.Field(n.field("delete-only-output-handle-key-columns"),
			"has no effect with protocol=avro (deletes are tombstones keyed by the handle key)"))
	}
	// enable-kafka-sink-v2 picks TiCDC's experimental kafka-go producer;
	// tidestream has one producer (franz-go), so either value is accepted
	// and ignored. advance-timeout-in-sec is deprecated in TiCDC.
	n.boolean("enable-kafka-sink-v2")
	n.integer("advance-timeout-in-sec")

	for _, d := range n.tables("dispatchers") {
		sc.Dispatchers = append(sc.Dispatchers, walkDispatcher(d, fc.cfg.CaseSensitive))
	}
	// Until the encoder applies column selectors, accepting them would
	// publish the columns the user asked to leave out.
	if cs := n.tables("column-selectors"); len(cs) > 0 {
		n.w.fail(cdcerr.Field(n.field("column-selectors"),
			"is not supported yet by tidestream (the Avro encoder writes every column); remove it to replicate all columns"))
	}
	if k := n.table("kafka-config"); k != nil {
		walkKafkaConfig(k, fc.opts)
	}
	n.finish()
}

// walkDispatcher validates one rule. Unknown partition values are errors
// (TiCDC falls back to default with a warning); `rowid` is TiCDC's legacy
// name of index-value.
func walkDispatcher(n *node, caseSensitive bool) *tidestreamv1.DispatchRule {
	r := &tidestreamv1.DispatchRule{}
	r.Matcher = n.matcher(caseSensitive)

	partition, hasPartition := n.str("partition")
	legacy, hasLegacy := n.str("dispatcher")
	field := n.field("partition")
	switch {
	case hasPartition && hasLegacy:
		n.w.fail(cdcerr.Field(field, "cannot be combined with the deprecated dispatcher key (use partition only)"))
	case hasLegacy:
		partition, field = legacy, n.field("dispatcher")
	}
	switch p := strings.ToLower(strings.TrimSpace(partition)); p {
	case "", "default":
		r.Partition = "default"
	case "table", "ts", "index-value", "columns":
		r.Partition = p
	case "rowid":
		r.Partition = "index-value"
	default:
		n.w.fail(cdcerr.Field(field, "unknown partition dispatcher %q (allowed: default, table, ts, index-value, columns)", partition))
	}

	if idx, ok := n.str("index"); ok {
		if r.Partition != "index-value" {
			n.w.fail(cdcerr.Field(n.field("index"), "is only allowed with partition = \"index-value\""))
		} else if idx == "" {
			n.w.fail(cdcerr.Field(n.field("index"), "must not be empty (omit it to use the handle key)"))
		}
		r.Index = idx
	}
	if cols, ok := n.strs("columns"); ok {
		if r.Partition != "columns" {
			n.w.fail(cdcerr.Field(n.field("columns"), "is only allowed with partition = \"columns\""))
		}
		for _, c := range cols {
			if strings.TrimSpace(c) == "" {
				n.w.fail(cdcerr.Field(n.field("columns"), "contains an empty column name"))
			}
		}
		r.Columns = cols
	}
	if r.Partition == "columns" && len(r.Columns) == 0 {
		n.w.fail(cdcerr.Field(n.field("columns"), "partition = \"columns\" requires a non-empty columns list"))
	}

	topic, ok := n.str("topic")
	switch {
	case !ok || topic == "":
		n.w.fail(cdcerr.Field(n.field("topic"),
			"is required with protocol=avro: set a topic expression such as \"tidb_{schema}_{table}\" (one table per topic)"))
	case !avroTopicExpr.MatchString(topic):
		n.w.fail(cdcerr.Field(n.field("topic"),
			"topic rule for Avro must contain {schema} and {table} (got %q; allowed characters besides them: letters, digits, '.', '_', '-')", topic))
	}
	r.Topic = topic
	n.finish()
	return r
}

// walkKafkaConfig reads [sink.kafka-config]. Its plain keys are the sink-URI
// parameters (minus max-retry) plus the OAuth keys, validated by sinkuri's
// table; three keys are sub-tables.
func walkKafkaConfig(n *node, opts *sinkuri.Options) {
	if c := n.table("codec-config"); c != nil {
		for _, k := range c.keys() {
			if sinkuri.Known(k, sinkuri.ScopeCodecConfig) {
				kafkaParam(c, opts, k)
			}
		}
		c.finish()
	}
	if l := n.table("large-message-handle"); l != nil {
		walkLargeMessage(l)
	}
	if _, ok := n.get("glue-schema-registry-config"); ok {
		n.w.fail(cdcerr.Field(n.field("glue-schema-registry-config"),
			"AWS Glue Schema Registry is not supported by tidestream (Confluent Schema Registry only; use schema-registry)"))
	}
	for _, k := range n.keys() {
		if sinkuri.Known(k, sinkuri.ScopeKafkaConfig) {
			kafkaParam(n, opts, k)
		}
	}
	n.finish()
}

// walkLargeMessage accepts only "none": the Avro encoder supports neither
// handle-key-only nor claim-check, and does not apply the compression (spec
// §6.5), so anything else would promise what does not happen.
func walkLargeMessage(n *node) {
	if v, ok := n.str("large-message-handle-option"); ok && strings.ToLower(v) != defaultLargeMessageHandleType {
		n.w.fail(cdcerr.Field(n.field("large-message-handle-option"),
			"large message handle is set to %q, protocol is avro, it's not supported (only none)", v))
	}
	if v, ok := n.str("large-message-handle-compression"); ok && v != "" && strings.ToLower(v) != "none" {
		n.w.fail(cdcerr.Field(n.field("large-message-handle-compression"),
			"is not applied by the Avro encoder; only none is accepted, got %q", v))
	}
	if v, ok := n.str("claim-check-storage-uri"); ok && v != "" {
		n.w.fail(cdcerr.Field(n.field("claim-check-storage-uri"), "claim-check is not supported with protocol=avro"))
	}
	if v, ok := n.boolean("claim-check-raw-value"); ok && v {
		n.w.fail(cdcerr.Field(n.field("claim-check-raw-value"), "claim-check is not supported with protocol=avro"))
	}
	n.finish()
}
