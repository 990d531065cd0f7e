package registry

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/sr"
)

// Kind says which half of a record a schema is for.
type Kind uint8

// Kinds.
const (
	KeySchema Kind = iota + 1
	ValueSchema
)

// String returns "key" or "value".
func (k Kind) String() string {
	switch k {
	case KeySchema:
		return "key"
	case ValueSchema:
		return "value"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// KeySubject and ValueSubject name a topic's subjects by Confluent's
// TopicNameStrategy, which ksqlDB and the JDBC / Snowflake sinks use.
//
// TiCDC replaces '.' with '_' in the topic part but still produces to the
// dotted topic (spec §5.3), so schemas of a dotted topic cannot be found by
// topic name; pass TiCDCSubjectTopic(topic) instead of the topic only to
// share subjects with existing TiCDC output.
func KeySubject(topic string) string { return topic + "-key" }

// ValueSubject: see KeySubject.
func ValueSubject(topic string) string { return topic + "-value" }

// TiCDCSubjectTopic is the topic as TiCDC spells it in subject names.
func TiCDCSubjectTopic(topic string) string { return strings.ReplaceAll(topic, ".", "_") }

// TableKey identifies a table schema version's key or value schema in the
// id cache, as the encoder knows it (row.Table's ID and Version).
type TableKey struct {
	TableID int64
	Version int64
	Kind    Kind
}

// Client resolves schema ids. It is safe for concurrent use; make one per
// changefeed (its caches assume one set of dispatch rules).
type Client struct {
	sr        *sr.Client
	transport *http.Transport
	log       *slog.Logger
	onRetry   func(string, int, time.Duration, error)
	base, max time.Duration
	sem       chan struct{}
	secret    string // the basic-auth password, scrubbed from messages

	mu sync.Mutex
	// byText is keyed by a digest of (subject, schema text) so that 100k
	// tables' schemas do not stay in memory twice (the Avro package holds
	// the text); it is never evicted: an entry is ~100 bytes per schema
	// version ever registered by this changefeed.
	byText map[[sha256.Size]byte]uint32
	// byTable holds the newest version seen per (table, kind); a row of an
	// older version falls back to byText.
	byTable map[tableKind]tableEntry
	flights map[[sha256.Size]byte]*flight
	// retrying counts ID calls currently between attempts; lastErr is the
	// most recent transient error, for a `warning` message.
	retrying int
	lastErr  error
}

type tableKind struct {
	id   int64
	kind Kind
}

type tableEntry struct {
	version int64
	subject string
	id      uint32
}

// flight is one registry resolution shared by every caller asking for the
// same (subject, schema) meanwhile.
type flight struct {
	done    chan struct{}
	id      uint32
	err     error
	waiters int // for tests: callers waiting on done
}

// New builds a Client from cfg (validated first). It does not contact the
// registry; call Ping for a startup check.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ep, err := parseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	tc, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if tc != nil {
		tr.TLSClientConfig = tc
	}
	c := &Client{
		transport: tr,
		log:       cfg.Logger,
		onRetry:   cfg.OnRetry,
		base:      orDefault(cfg.RetryBase, DefaultRetryBase),
		max:       orDefault(cfg.RetryMax, DefaultRetryMax),
		secret:    ep.pass,
		byText:    make(map[[sha256.Size]byte]uint32),
		byTable:   make(map[tableKind]tableEntry),
		flights:   make(map[[sha256.Size]byte]*flight),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	n := cfg.MaxInFlight
	if n == 0 {
		n = DefaultMaxInFlight
	}
	c.sem = make(chan struct{}, n)
	opts := []sr.ClientOpt{
		sr.URLs(ep.base),
		sr.HTTPClient(&http.Client{Transport: tr, Timeout: orDefault(cfg.Timeout, DefaultTimeout)}),
		sr.UserAgent("tidestream"),
	}
	if ep.user != "" {
		// sr sets the Authorization header per request; the URL it puts
		// in its errors carries no userinfo.
		opts = append(opts, sr.BasicAuth(ep.user, ep.pass))
	}
	c.sr, err = sr.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	return c, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Close releases idle connections. Calls in progress are not interrupted;
// cancel their contexts for that.
func (c *Client) Close() { c.transport.CloseIdleConnections() }

// Ping checks once, without retrying, that the registry answers and
// accepts the credentials (GET /config — small, and served by Confluent
// SR, its ccompat layers and path-prefixed deployments alike, unlike
// TiCDC's probe of the root for a body of exactly "{}").
func (c *Client) Ping(ctx context.Context) error {
	if err := c.acquire(ctx); err != nil {
		return err
	}
	defer c.release()
	var into map[string]any
	err := c.sr.Do(ctx, http.MethodGet, "/config", nil, &into)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if fe := c.fatal("ping", "", err); fe != nil {
		return fe
	}
	return fmt.Errorf("registry: ping: %s", c.scrub(err))
}

// Cached returns the id cached for a table schema version's key or value
// under subject, without any registry call.
func (c *Client) Cached(k TableKey, subject string) (uint32, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byTable[tableKind{k.TableID, k.Kind}]
	if !ok || e.version != k.Version || e.subject != subject {
		return 0, false
	}
	return e.id, true
}

// IDFor is ID with the per-table cache in front: a hit costs one map
// lookup and neither hashes the schema text nor calls the registry. The
// subject is part of the hit condition because a rename (new version) or a
// rule change can move a table to another topic.
func (c *Client) IDFor(ctx context.Context, k TableKey, subject, schemaJSON string) (uint32, error) {
	if id, ok := c.Cached(k, subject); ok {
		return id, nil
	}
	id, err := c.ID(ctx, subject, schemaJSON)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	tk := tableKind{k.TableID, k.Kind}
	if e, ok := c.byTable[tk]; !ok || e.version <= k.Version {
		c.byTable[tk] = tableEntry{version: k.Version, subject: subject, id: id}
	}
	c.mu.Unlock()
	return id, nil
}

// ID returns the registry id of schemaJSON under subject, registering it if
// the subject does not have it yet. Concurrent calls for the same subject
// and schema share one resolution. It blocks, retrying transient failures,
// until it has an id, the error is fatal (see ErrFatal), or ctx ends.
func (c *Client) ID(ctx context.Context, subject, schemaJSON string) (uint32, error) {
	if subject == "" || schemaJSON == "" {
		return 0, fmt.Errorf("registry: empty subject or schema")
	}
	key := digest(subject, schemaJSON)
	for {
		c.mu.Lock()
		if id, ok := c.byText[key]; ok {
			c.mu.Unlock()
			return id, nil
		}
		if f, ok := c.flights[key]; ok {
			f.waiters++
			c.mu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				c.mu.Lock()
				f.waiters--
				c.mu.Unlock()
				return 0, ctx.Err()
			}
			if f.err == nil {
				return f.id, nil
			}
			// The leader gave up because its own context ended; ours
			// has not, so try again (possibly as the new leader).
			if isContextErr(f.err) && ctx.Err() == nil {
				continue
			}
			return 0, f.err
		}
		f := &flight{done: make(chan struct{})}
		c.flights[key] = f
		c.mu.Unlock()

		f.id, f.err = c.resolve(ctx, subject, schemaJSON)

		c.mu.Lock()
		delete(c.flights, key)
		if f.err == nil {
			c.byText[key] = f.id
		}
		c.mu.Unlock()
		close(f.done)
		return f.id, f.err
	}
}

func digest(subject, schema string) [sha256.Size]byte {
	h := sha256.New()
	_, _ = io.WriteString(h, subject)
	_, _ = h.Write([]byte{0}) // a subject cannot contain NUL in a URL path we send
	_, _ = io.WriteString(h, schema)
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// resolve looks the schema up under the subject and registers it when the
// registry does not have it, retrying transient failures.
func (c *Client) resolve(ctx context.Context, subject, schemaJSON string) (uint32, error) {
	s := sr.Schema{Schema: schemaJSON, Type: sr.TypeAvro}
	for attempt := 1; ; attempt++ {
		id, op, err := c.lookupOrRegister(ctx, subject, s)
		if err == nil {
			if attempt > 1 {
				c.endRetry()
			}
			return id, nil
		}
		if ctx.Err() != nil {
			if attempt > 1 {
				c.endRetry()
			}
			return 0, ctx.Err()
		}
		if fe := c.fatal(op, subject, err); fe != nil {
			if attempt > 1 {
				c.endRetry()
			}
			return 0, fe
		}
		retry := transient(err)
		// Not %w: the chain would carry the unscrubbed text. Whether
		// the cause was transient is all a caller can act on.
		err = fmt.Errorf("registry: %s subject %q: %s", op, subject, c.scrub(err))
		if !retry {
			if attempt > 1 {
				c.endRetry()
			}
			return 0, err
		}
		wait := c.backoff(attempt)
		c.mu.Lock()
		if attempt == 1 {
			c.retrying++
		}
		c.lastErr = err
		c.mu.Unlock()
		c.log.Warn("schema registry call failed, retrying", "subject", subject, "attempt", attempt, "wait", wait, "error", err)
		if c.onRetry != nil {
			c.onRetry(subject, attempt, wait, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			c.endRetry()
			return 0, fmt.Errorf("registry: subject %q: gave up after %d attempts (last: %v): %w", subject, attempt, err, ctx.Err())
		}
	}
}

func (c *Client) endRetry() {
	c.mu.Lock()
	c.retrying--
	if c.retrying == 0 {
		c.lastErr = nil
	}
	c.mu.Unlock()
}

// Retrying reports how many resolutions are waiting to retry and the most
// recent transient error: non-zero means the pipeline is stalled on the
// registry and the changefeed should show `warning` with that error.
func (c *Client) Retrying() (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.retrying, c.lastErr
}

// lookupOrRegister makes one attempt: POST /subjects/{s} (lookup), then on
// "not found" POST /subjects/{s}/versions (register). Looking up first
// spares the registry's single-writer registration path, and works against
// a read-only subject whose schemas were registered beforehand.
func (c *Client) lookupOrRegister(ctx context.Context, subject string, s sr.Schema) (uint32, string, error) {
	if err := c.acquire(ctx); err != nil {
		return 0, "lookup", err
	}
	ss, err := c.sr.LookupSchema(ctx, subject, s)
	c.release()
	if err == nil {
		id, err := checkID(ss.ID)
		return id, "lookup", err
	}
	var re *sr.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusNotFound {
		return 0, "lookup", err
	}
	if err := c.acquire(ctx); err != nil {
		return 0, "register", err
	}
	n, err := c.sr.RegisterSchema(ctx, subject, s, -1, -1)
	c.release()
	if err != nil {
		return 0, "register", err
	}
	id, err := checkID(n)
	return id, "register", err
}

// checkID refuses what is not a Confluent id: the wire format carries a
// positive int32, and 0 is what a registry answering with an unexpected body
// decodes to.
func checkID(n int) (uint32, error) {
	if n <= 0 || n > 1<<31-1 {
		return 0, errBadID{n}
	}
	return uint32(n), nil
}

type errBadID struct{ n int }

func (e errBadID) Error() string { return fmt.Sprintf("the registry answered with schema id %d", e.n) }

func (c *Client) acquire(ctx context.Context) error {
	select {
	case c.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Client) release() { <-c.sem }

// fatal classifies err as a terminal registry answer, or returns nil.
func (c *Client) fatal(op, subject string, err error) *Error {
	var re *sr.ResponseError
	if errors.As(err, &re) {
		e := &Error{Subject: subject, Op: op, Status: re.StatusCode, Code: re.ErrorCode, Message: c.scrub(errors.New(re.Error()))}
		switch s := re.StatusCode; {
		case s == http.StatusConflict:
			e.kind = ErrIncompatible
		case s == http.StatusUnprocessableEntity:
			e.kind = ErrInvalidSchema
		case s == http.StatusUnauthorized || s == http.StatusForbidden:
			e.kind = ErrUnauthorized
		case s == http.StatusRequestTimeout || s == http.StatusTooManyRequests:
			return nil
		case s >= 400 && s < 500:
			e.kind = ErrRejected
		default:
			return nil // 5xx and anything odd: transient
		}
		return e
	}
	// A certificate the client will never accept is a configuration
	// error, not a network blip: retrying it forever would hide it.
	var (
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		record    tls.RecordHeaderError // https to a plain-http port
		opErr     *net.OpError
	)
	// crypto/tls reports an alert from the server (no or bad client
	// certificate, our certificate's CA unknown to it) as an OpError
	// "remote error".
	remoteAlert := errors.As(err, &opErr) && opErr.Op == "remote error"
	if errors.As(err, &unknownCA) || errors.As(err, &hostErr) || errors.As(err, &invalid) || errors.As(err, &verify) ||
		errors.As(err, &record) || remoteAlert {
		return &Error{Subject: subject, Op: op, Message: "TLS: " + c.scrub(err), kind: ErrRejected}
	}
	var bad errBadID
	if errors.As(err, &bad) {
		return &Error{Subject: subject, Op: op, Status: http.StatusOK, Message: bad.Error(), kind: ErrRejected}
	}
	return nil
}

// transient reports whether a non-fatal error is worth retrying: a
// registry 5xx / 408 / 429 answer, a timeout, or a transport failure.
// Anything else (a 2xx body that does not decode, say) is returned to the
// pipeline, whose default is to restart.
func transient(err error) bool {
	var re *sr.ResponseError
	if errors.As(err, &re) {
		return true // fatal() already took the terminal codes
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// backoff returns the wait after the attempt-th failure: equal jitter over
// an exponential capped at max, so that many tables failing together do not
// retry in lockstep.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.base
	for i := 1; i < attempt && d < c.max; i++ {
		d *= 2
	}
	d = min(d, c.max)
	half := d / 2
	return half + rand.N(d-half+1)
}

// scrub renders err with the basic-auth password masked. sr's messages
// carry the request URL, which never has userinfo here, but a registry or a
// proxy could echo credentials back.
func (c *Client) scrub(err error) string {
	s := err.Error()
	if c.secret != "" {
		s = strings.ReplaceAll(s, c.secret, "xxxxx")
	}
	return s
}
