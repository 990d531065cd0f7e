package devstack

import (
	"context"
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// templateWait bounds asking the just-started cluster for its ApiVersions
// answer over loopback; it takes milliseconds.
const templateWait = 10 * time.Second

// speakSASLLikeKafka installs, on a cluster with SASL enabled, the two
// places where kfake's SASL differs from Apache Kafka's in a way clients
// notice: the answer to a wrong PLAIN password (rejectBadPlain) and the
// SaslHandshake versions advertised (advertiseSASLHandshakeV0).
func (s *Stack) speakSASLLikeKafka(c *kfake.Cluster) error {
	rejectBadPlain(c, s.cfg.SASLUsers)
	ctx, cancel := context.WithTimeout(context.Background(), templateWait)
	defer cancel()
	tmpl, err := apiVersionsTemplate(ctx, c.ListenAddrs()[0], s.tls != nil)
	if err != nil {
		return err
	}
	advertiseSASLHandshakeV0(c, tmpl)
	return nil
}

// saslFailedMessage is what Apache Kafka's PLAIN server answers a wrong user
// or password with (PlainSaslServer), under SASL_AUTHENTICATION_FAILED.
const saslFailedMessage = "Authentication failed: Invalid username or password"

// rejectBadPlain makes the brokers answer a PLAIN login whose user and
// password are not one of users the way Apache Kafka does: a
// SASLAuthenticate response with SASL_AUTHENTICATION_FAILED (58) and
// saslFailedMessage. kfake itself closes the connection, so a client sees
// only "EOF" and cannot tell a wrong password from a broker that went away
// (franz-go and librdkafka both retry the latter).
//
// Only PLAIN is judged here. Its auth bytes are "authzid\x00user\x00pass";
// SCRAM messages (RFC 5802) contain no NUL, so anything that does not split
// into three parts is left to kfake, as is a PLAIN login of a configured
// user with its configured password.
//
// With Config.DataDir, kfake reloads the SASL users it persisted and judges
// by those, while this hook judges by users, the configured ones: a user
// persisted by an earlier run but no longer configured is rejected here, and
// a configured password that differs from the persisted one passes this
// hook and then gets kfake's closed connection.
func rejectBadPlain(c *kfake.Cluster, users []Credential) {
	valid := credentialMap(users)
	c.ControlKey(int16(kmsg.SASLAuthenticate), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		// kfake drops a control function once it has handled a request
		// unless it is kept; this one serves every login for the
		// cluster's life.
		c.KeepControl()
		req := kr.(*kmsg.SASLAuthenticateRequest)
		parts := strings.SplitN(string(req.SASLAuthBytes), "\x00", 3)
		if len(parts) != 3 {
			return nil, nil, false // SCRAM, or malformed PLAIN: kfake's call
		}
		if pass, ok := valid[parts[1]]; ok && pass == parts[2] {
			return nil, nil, false // kfake authenticates it
		}
		resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		resp.ErrorMessage = kmsg.StringPtr(saslFailedMessage)
		return resp, nil, true
	})
}

// apiVersionsTemplate is the cluster's own ApiVersions answer, asked for
// over addr before any login, as every client does first.
func apiVersionsTemplate(ctx context.Context, addr string, useTLS bool) (*kmsg.ApiVersionsResponse, error) {
	opts := []kgo.Opt{kgo.SeedBrokers(addr)}
	if useTLS {
		// Our own listener, bound a moment ago on loopback; the
		// certificate may name a host other than 127.0.0.1 and there is
		// nobody in between to verify against.
		opts = append(opts, kgo.DialTLSConfig(&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})) //nolint:gosec // see above
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("reading kfake's ApiVersions: %w", err)
	}
	defer cl.Close()
	resp, err := kmsg.NewPtrApiVersionsRequest().RequestWith(ctx, cl)
	if err == nil {
		err = kerr.ErrorForCode(resp.ErrorCode)
	}
	if err != nil {
		return nil, fmt.Errorf("reading kfake's ApiVersions from %s: %w", addr, err)
	}
	return resp, nil
}

// advertiseSASLHandshakeV0 answers ApiVersions with tmpl, kfake's own
// answer, except that SaslHandshake is advertised from version 0, as Apache
// Kafka does, instead of kfake's 1.
//
// librdkafka (Confluent's Python, Go and .NET clients, kcat) enables SASL
// PLAIN and SCRAM only when the broker's SaslHandshake range includes
// version 0 (its SaslHandshake feature, rdkafka_feature.c), then speaks the
// highest common version, 1, with SaslAuthenticate, which kfake serves.
// Against kfake's range it fails every connection with "SASL Handshake not
// supported by broker (required by mechanism PLAIN)". A client that only
// speaks version 0 (unframed SASL bytes after the handshake) still fails,
// as it does without this: kfake closes the connection.
//
// Requests kfake answers with an error (a version above tmpl's, invalid
// client software fields, a v5 request naming a cluster or node) are left
// to kfake, and so is everything after the first UpdateFeatures request,
// which may change the finalized features tmpl holds.
func advertiseSASLHandshakeV0(c *kfake.Cluster, tmpl *kmsg.ApiVersionsResponse) {
	keys := slices.Clone(tmpl.ApiKeys)
	for i := range keys {
		if keys[i].ApiKey == int16(kmsg.SASLHandshake) {
			keys[i].MinVersion = 0
		}
	}
	var featuresChanged atomic.Bool
	c.ControlKey(int16(kmsg.UpdateFeatures), func(kmsg.Request) (kmsg.Response, error, bool) {
		featuresChanged.Store(true)
		return nil, nil, false // observed only; kfake answers
	})
	c.ControlKey(int16(kmsg.ApiVersions), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		if featuresChanged.Load() {
			c.DropControl()
			return nil, nil, false
		}
		c.KeepControl()
		req := kr.(*kmsg.ApiVersionsRequest)
		switch {
		case req.Version > tmpl.Version,
			req.Version >= 3 && (!validSoftware(req.ClientSoftwareName) || !validSoftware(req.ClientSoftwareVersion)),
			req.Version >= 5 && (req.ClusterID != nil || req.NodeID != -1):
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.ApiVersionsResponse)
		resp.ApiKeys = slices.Clone(keys)
		resp.SupportedFeatures = slices.Clone(tmpl.SupportedFeatures)
		resp.FinalizedFeaturesEpoch = tmpl.FinalizedFeaturesEpoch
		resp.FinalizedFeatures = slices.Clone(tmpl.FinalizedFeatures)
		return resp, nil, true
	})
}

// validSoftware is the client software name and version rule that Apache
// Kafka and kfake apply from ApiVersions v3 on (KIP-511):
// [a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?
func validSoftware(s string) bool {
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }
	if s == "" || !alnum(s[0]) || !alnum(s[len(s)-1]) {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		if c := s[i]; !alnum(c) && c != '-' && c != '.' {
			return false
		}
	}
	return true
}
