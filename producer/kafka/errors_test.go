package kafka

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tidestream/tidestream/proto/contract"
)

// TestClassify: one table, every entry also checked wrapped twice (the
// classification must survive %w, STYLE §3).
func TestClassify(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want Class
	}{
		{"nil", nil, OK},
		{"not leader", kerr.NotLeaderForPartition, Retryable},
		{"request timed out", kerr.RequestTimedOut, Retryable},
		{"network exception", kerr.NetworkException, Retryable},
		{"not enough replicas", kerr.NotEnoughReplicas, Retryable},
		{"unknown topic (deleted under us)", kerr.UnknownTopicOrPartition, Retryable},
		{"unknown server error", kerr.UnknownServerError, Retryable},
		{"out of order sequence", kerr.OutOfOrderSequenceNumber, Retryable},
		{"record retries exhausted", kgo.ErrRecordRetries, Retryable},
		{"record timeout", kgo.ErrRecordTimeout, Retryable},
		{"client closed", kgo.ErrClientClosed, Retryable},
		{"eof", io.EOF, Retryable},
		{"context canceled", context.Canceled, Retryable},
		{"sasl failed with broker message", fmt.Errorf("%w: %s", kerr.SaslAuthenticationFailed, brokerSASLMessage), Fatal},
		{"topic authorization", kerr.TopicAuthorizationFailed, Fatal},
		{"topic authorization via kadm", &kadm.AuthError{Err: kerr.TopicAuthorizationFailed}, Fatal},
		{"cluster authorization", kerr.ClusterAuthorizationFailed, Fatal},
		{"message too large (broker)", kerr.MessageTooLarge, Fatal},
		{"record too large (ours)", &RecordTooLargeError{Topic: "t", Key: []byte{1}, Size: 10, Limit: 5}, Fatal},
		{"invalid replication factor", kerr.InvalidReplicationFactor, Fatal},
		{"policy violation", kerr.PolicyViolation, Fatal},
		{"topic not found", &TopicNotFoundError{Topic: "t"}, Fatal},
		{"config", configErr("compression", "bad"), Fatal},
		{"unknown CA", x509.UnknownAuthorityError{}, Fatal},
		{"token 401", &TokenError{StatusCode: 401}, Fatal},
		{"token 503", &TokenError{StatusCode: 503}, Retryable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, Classify(tc.err))
			if tc.err != nil {
				wrapped := fmt.Errorf("pipeline 7: %w", &BrokerError{Topic: "t", Partition: 1, Err: tc.err})
				require.Equal(t, tc.want, Classify(wrapped))
			}
		})
	}
	require.Equal(t, contract.Restart, Retryable.Outcome())
	require.Equal(t, contract.Fatal, Fatal.Outcome())
	require.True(t, errors.Is(&RecordTooLargeError{}, ErrMessageTooLarge))
}
