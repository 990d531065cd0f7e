package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/tidestream/tidestream/proto/contract"
)

// Sentinels. Their messages start with the package name so a wrapped chain
// still says where it came from.
var (
	// ErrConfig: the Kafka configuration is invalid (see ConfigError).
	ErrConfig = errors.New("kafka: invalid configuration")
	// ErrUnsupported: a configured feature exists in TiCDC but not here
	// (sasl-mechanism=gssapi).
	ErrUnsupported = errors.New("kafka: not supported")
	// ErrTopicNotFound: a topic does not exist and auto-create-topic is
	// false (see TopicNotFoundError).
	ErrTopicNotFound = errors.New("kafka: topic not found")
	// ErrMessageTooLarge: a record exceeds max-message-bytes (see
	// RecordTooLargeError). Also errors.Is kerr.MessageTooLarge.
	ErrMessageTooLarge = errors.New("kafka: message too large")
	// ErrClosed: Produce or Flush after Close.
	ErrClosed = errors.New("kafka: producer closed")
)

// ConfigError names the sink URI parameter that is wrong and why. It
// never quotes a secret.
type ConfigError struct {
	Field       string
	Reason      string
	unsupported bool
}

func configErr(field, format string, args ...any) *ConfigError {
	return &ConfigError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

func (e *ConfigError) Error() string { return "kafka: " + e.Field + ": " + e.Reason }

// Is makes a ConfigError errors.Is ErrConfig, and ErrUnsupported for an
// unsupported mechanism.
func (e *ConfigError) Is(target error) bool {
	return target == ErrConfig || (e.unsupported && target == ErrUnsupported)
}

// TopicNotFoundError is a missing topic with auto-create-topic=false. The
// message is TiCDC's.
type TopicNotFoundError struct{ Topic string }

func (e *TopicNotFoundError) Error() string {
	return fmt.Sprintf("kafka: auto-create-topic is false, and topic %q not found", e.Topic)
}

func (e *TopicNotFoundError) Is(target error) bool { return target == ErrTopicNotFound }

// RecordTooLargeError is a record over the topic's limit: TiCDC's
// len(key)+len(value)+RecordOverhead > max-message-bytes (clamped to the
// topic's max.message.bytes − MessageOverhead). The record is never
// dropped: the pipeline fails with this error, naming the topic (one table
// per topic with Avro), the key and the size.
type RecordTooLargeError struct {
	Topic    string
	Key      []byte
	Size     int // len(key)+len(value)+RecordOverhead
	Limit    int
	CommitTs uint64
}

// maxKeyHex is how many key bytes the message shows.
const maxKeyHex = 32

func (e *RecordTooLargeError) Error() string {
	k := e.Key
	more := ""
	if len(k) > maxKeyHex {
		k, more = k[:maxKeyHex], fmt.Sprintf("… (%d bytes)", len(e.Key))
	}
	return fmt.Sprintf("kafka: record too large for topic %q: key %s%s, commit ts %d: %d bytes > max-message-bytes %d",
		e.Topic, hex.EncodeToString(k), more, e.CommitTs, e.Size, e.Limit)
}

// Is makes the error ErrMessageTooLarge and kerr.MessageTooLarge.
func (e *RecordTooLargeError) Is(target error) bool {
	return target == ErrMessageTooLarge || target == kerr.MessageTooLarge
}

// BrokerError wraps a failure of one produced record with the topic and
// partition it was bound for; the cause keeps the broker's code and, where
// the broker sent one (SASL, topic creation), its message.
type BrokerError struct {
	Topic     string
	Partition int32
	Err       error
}

func (e *BrokerError) Error() string {
	return fmt.Sprintf("kafka: producing to %s[%d]: %v", e.Topic, e.Partition, e.Err)
}

func (e *BrokerError) Unwrap() error { return e.Err }

// Class is what an error from this package means for the pipeline.
type Class int

const (
	// OK: no error.
	OK Class = iota
	// Retryable: the cause can clear by itself (leader moves, timeouts,
	// network, a broker restart, exhausted in-client retries). The records
	// in flight are failed, so the pipeline restarts from its checkpoint
	// (contract.Restart) with backoff; the changefeed shows warning.
	Retryable
	// Fatal: retrying cannot help until someone acts — credentials, ACLs,
	// a record over the limit, a missing topic with auto-create off, a
	// configuration Kafka rejects. The changefeed moves to failed with the
	// message (contract.Fatal). "For now": an operator fixes and resumes.
	Fatal
)

func (c Class) String() string {
	switch c {
	case OK:
		return "OK"
	case Retryable:
		return "RETRYABLE"
	case Fatal:
		return "FATAL"
	}
	return fmt.Sprintf("Class(%d)", int(c))
}

// Outcome is the stream contract's outcome for the class.
func (c Class) Outcome() contract.Outcome {
	switch c {
	case Retryable:
		return contract.Restart
	case Fatal:
		return contract.Fatal
	}
	return contract.OK
}

// fatalKerr are the Kafka errors no retry fixes. Authentication and
// authorization are fatal for now: a changefeed should not hammer a broker
// with bad credentials, and the broker's message (kept in the chain) tells
// the operator what to fix.
var fatalKerr = []*kerr.Error{
	kerr.SaslAuthenticationFailed,
	kerr.UnsupportedSaslMechanism,
	kerr.IllegalSaslState,
	kerr.TopicAuthorizationFailed,
	kerr.ClusterAuthorizationFailed,
	kerr.GroupAuthorizationFailed,
	kerr.TransactionalIDAuthorizationFailed,
	kerr.DelegationTokenAuthorizationFailed,
	kerr.MessageTooLarge,
	kerr.RecordListTooLarge,
	kerr.InvalidRequiredAcks,
	kerr.InvalidReplicationFactor,
	kerr.InvalidPartitions,
	kerr.InvalidTopicException,
	kerr.InvalidConfig,
	kerr.PolicyViolation,
	kerr.UnsupportedVersion,
	kerr.UnsupportedCompressionType,
	kerr.UnsupportedForMessageFormat,
	kerr.InvalidRecord,
}

// Classify tells whether err, from Produce, an onAck callback, Flush,
// EnsureTopic or CheckDefaultTopic, is worth a pipeline restart. It sees
// through %w wrapping. franz-go has already retried what it knows to be
// transient by the time an error reaches the caller, so at this level the
// default is Retryable and Fatal is the explicit list: a wrong Fatal stops
// a changefeed that would have recovered, a wrong Retryable only costs
// restarts that the warning state makes visible.
func Classify(err error) Class {
	if err == nil {
		return OK
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return Retryable
	}
	if errors.Is(err, ErrConfig) || errors.Is(err, ErrUnsupported) ||
		errors.Is(err, ErrTopicNotFound) || errors.Is(err, ErrMessageTooLarge) {
		return Fatal
	}
	for _, k := range fatalKerr {
		if errors.Is(err, k) {
			return Fatal
		}
	}
	var te *TokenError
	if errors.As(err, &te) && te.StatusCode/100 == 4 {
		return Fatal
	}
	// A broker certificate that does not verify will not start verifying.
	var (
		unknownCA  x509.UnknownAuthorityError
		hostname   x509.HostnameError
		invalid    x509.CertificateInvalidError
		verifyFail *tls.CertificateVerificationError
	)
	if errors.As(err, &unknownCA) || errors.As(err, &hostname) || errors.As(err, &invalid) || errors.As(err, &verifyFail) {
		return Fatal
	}
	// Everything else: kerr retriable codes (NOT_LEADER_FOR_PARTITION,
	// REQUEST_TIMED_OUT, NETWORK_EXCEPTION, NOT_ENOUGH_REPLICAS, …),
	// kgo.ErrRecordRetries / ErrRecordTimeout (in-client retries ran out),
	// connection errors and EOFs (kgo.ErrFirstReadEOF too: usually a TLS or
	// SASL mismatch, but also a broker closing connections while it shuts
	// down), out-of-order sequence / unknown producer id (a new client
	// after the restart gets a new producer id), UNKNOWN_SERVER_ERROR.
	return Retryable
}
