package dispatch

import "errors"

// Sentinels; every error of the package wraps one of them.
var (
	// ErrInvalidTopic: a topic rule, the default topic or a topic name is
	// malformed.
	ErrInvalidTopic = errors.New("dispatch: invalid topic")
	// ErrInvalidRule: a dispatcher rule cannot be used (bad matcher,
	// partitioner, index or columns; a rule that puts several tables on one
	// topic under Avro).
	ErrInvalidRule = errors.New("dispatch: invalid dispatcher rule")
	// ErrTopicConflict: two tables were routed to one topic, which Avro's
	// TopicNameStrategy subjects cannot hold (spec §7.4).
	ErrTopicConflict = errors.New("dispatch: two tables on one topic")
	// ErrRow: a row does not fit its table (image length, value kind).
	ErrRow = errors.New("dispatch: bad row")
)
