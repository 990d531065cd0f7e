package registry

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	schemaV1 = `{"type":"record","name":"orders","namespace":"default.shop","fields":[{"name":"id","type":"long"}]}`
	schemaV2 = `{"type":"record","name":"orders","namespace":"default.shop","fields":[{"name":"id","type":"long"},{"name":"note","type":["null","string"],"default":null}]}`
)

// calls counts the registry requests by kind, seen before srfake answers.
type calls struct{ lookups, registers, other atomic.Int32 }

func (c *calls) interceptor(w http.ResponseWriter, r *http.Request) bool {
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/versions"):
		c.registers.Add(1)
	case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/subjects/"):
		c.lookups.Add(1)
	default:
		c.other.Add(1)
	}
	return false
}

// hold stalls a request until release closes or the client gives up on it,
// then lets srfake answer it. It reads the body first: the server notices a
// client hanging up only once the handler has consumed the body.
func hold(r *http.Request, release <-chan struct{}) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	select {
	case <-release:
	case <-r.Context().Done():
	}
}

func (c *calls) total() int32 { return c.lookups.Load() + c.registers.Load() + c.other.Load() }

func newFake(t *testing.T, opts ...srfake.Option) (*srfake.Registry, *calls) {
	t.Helper()
	reg := srfake.New(opts...)
	t.Cleanup(reg.Close)
	c := &calls{}
	reg.Intercept(c.interceptor)
	return reg, c
}

func newClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	if cfg.RetryBase == 0 {
		cfg.RetryBase, cfg.RetryMax = time.Millisecond, 5*time.Millisecond
	}
	c, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

func TestLookupHitAvoidsRegister(t *testing.T) {
	reg, n := newFake(t)
	reg.SeedSchema("tidb_shop_orders-value", 1, 42, sr.Schema{Schema: schemaV1})
	c := newClient(t, Config{URL: reg.URL()})
	id, err := c.ID(t.Context(), "tidb_shop_orders-value", schemaV1)
	require.NoError(t, err)
	require.Equal(t, uint32(42), id)
	require.Equal(t, int32(1), n.lookups.Load())
	require.Equal(t, int32(0), n.registers.Load())
}

func TestRegisterWhenMissingThenCache(t *testing.T) {
	reg, n := newFake(t)
	c := newClient(t, Config{URL: reg.URL()})
	ctx := t.Context()
	id1, err := c.ID(ctx, "t-value", schemaV1)
	require.NoError(t, err)
	require.NotZero(t, id1)
	require.Equal(t, int32(1), n.lookups.Load())
	require.Equal(t, int32(1), n.registers.Load())

	// The text cache answers without a call.
	again, err := c.ID(ctx, "t-value", schemaV1)
	require.NoError(t, err)
	require.Equal(t, id1, again)
	require.Equal(t, int32(2), n.total())

	// A new schema version is a new registration; the registry really has
	// it under the subject.
	id2, err := c.ID(ctx, "t-value", schemaV2)
	require.NoError(t, err)
	require.NotEqual(t, id1, id2)
	got, ok := reg.GetSchema("t-value", 2)
	require.True(t, ok)
	require.Equal(t, int(id2), got.ID)

	// The same text under another subject is looked up there, not taken
	// from the first subject's cache entry.
	before := n.total()
	_, err = c.ID(ctx, "u-value", schemaV1)
	require.NoError(t, err)
	require.Greater(t, n.total(), before)
}

func TestTableCache(t *testing.T) {
	reg, n := newFake(t)
	c := newClient(t, Config{URL: reg.URL()})
	ctx := t.Context()
	k := TableKey{TableID: 100, Version: 7, Kind: ValueSchema}
	_, ok := c.Cached(k, "t-value")
	require.False(t, ok)
	id, err := c.IDFor(ctx, k, "t-value", schemaV1)
	require.NoError(t, err)
	calls := n.total()

	got, ok := c.Cached(k, "t-value")
	require.True(t, ok)
	require.Equal(t, id, got)
	got, err = c.IDFor(ctx, k, "t-value", schemaV1)
	require.NoError(t, err)
	require.Equal(t, id, got)
	require.Equal(t, calls, n.total(), "a table cache hit makes no call")

	// Another version, kind or subject misses the table cache (an unchanged
	// schema text is then answered by the text cache, still with no call).
	_, ok = c.Cached(TableKey{TableID: 100, Version: 8, Kind: ValueSchema}, "t-value")
	require.False(t, ok)
	_, ok = c.Cached(TableKey{TableID: 100, Version: 7, Kind: KeySchema}, "t-value")
	require.False(t, ok)
	_, ok = c.Cached(k, "renamed-value")
	require.False(t, ok)
	got, err = c.IDFor(ctx, TableKey{TableID: 100, Version: 8, Kind: ValueSchema}, "t-value", schemaV1)
	require.NoError(t, err)
	require.Equal(t, id, got)
	require.Equal(t, calls, n.total())

	// The newest version stays cached when an older one is asked again.
	_, err = c.IDFor(ctx, k, "t-value", schemaV1)
	require.NoError(t, err)
	_, ok = c.Cached(TableKey{TableID: 100, Version: 8, Kind: ValueSchema}, "t-value")
	require.True(t, ok)
}

func TestConcurrentCallersShareOneCall(t *testing.T) {
	reg, n := newFake(t)
	gate := make(chan struct{})
	var first atomic.Bool
	// Hold the first request until every caller has joined the flight.
	reg.Intercept(func(_ http.ResponseWriter, r *http.Request) bool {
		if !first.Swap(true) {
			hold(r, gate)
		}
		return false
	})
	c := newClient(t, Config{URL: reg.URL()})
	const callers = 16
	ids := make([]uint32, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() { ids[i], errs[i] = c.ID(t.Context(), "t-value", schemaV1) })
	}
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		f := c.flights[digest("t-value", schemaV1)]
		return f != nil && f.waiters == callers-1
	}, 5*time.Second, time.Millisecond)
	close(gate)
	wg.Wait()
	for i := range callers {
		require.NoError(t, errs[i])
		require.Equal(t, ids[0], ids[i])
	}
	require.Equal(t, int32(1), n.lookups.Load())
	require.Equal(t, int32(1), n.registers.Load())
}

func TestRetryOn503ThenSuccess(t *testing.T) {
	reg, n := newFake(t)
	var failures atomic.Int32
	reg.Intercept(func(w http.ResponseWriter, _ *http.Request) bool {
		if failures.Add(1) > 3 {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error_code":50003,"message":"Register operation timed out"}`))
		return true
	})
	var retries []int
	var sawRetrying atomic.Bool
	var c *Client
	c = newClient(t, Config{URL: reg.URL(), OnRetry: func(subject string, attempt int, wait time.Duration, err error) {
		require.Equal(t, "t-value", subject)
		require.ErrorContains(t, err, "Register operation timed out")
		require.Positive(t, wait)
		retries = append(retries, attempt)
		if k, last := c.Retrying(); k == 1 && last != nil {
			sawRetrying.Store(true)
		}
	}})
	id, err := c.ID(t.Context(), "t-value", schemaV1)
	require.NoError(t, err)
	require.NotZero(t, id)
	require.Equal(t, []int{1, 2, 3}, retries)
	require.True(t, sawRetrying.Load(), "Retrying reports the stall while it lasts")
	k, last := c.Retrying()
	require.Zero(t, k)
	require.NoError(t, last)
	require.Equal(t, int32(1), n.registers.Load())
}

func TestRetryOnTimeout(t *testing.T) {
	reg, _ := newFake(t)
	var slow atomic.Bool
	slow.Store(true)
	never := make(chan struct{})
	reg.Intercept(func(_ http.ResponseWriter, r *http.Request) bool {
		if slow.Swap(false) {
			hold(r, never) // the client's Timeout ends it
			return true
		}
		return false
	})
	var retried atomic.Int32
	c := newClient(t, Config{URL: reg.URL(), Timeout: 100 * time.Millisecond,
		OnRetry: func(string, int, time.Duration, error) { retried.Add(1) }})
	_, err := c.ID(t.Context(), "t-value", schemaV1)
	require.NoError(t, err)
	require.Equal(t, int32(1), retried.Load())
}

func TestIncompatibleIsTypedAndFatal(t *testing.T) {
	reg, n := newFake(t)
	const msg = "Schema being registered is incompatible with an earlier schema for subject \"t-value\""
	reg.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/versions") {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		fmt.Fprintf(w, `{"error_code":409,"message":%q}`, msg)
		return true
	})
	c := newClient(t, Config{URL: reg.URL()})
	_, err := c.ID(t.Context(), "t-value", schemaV2)
	require.ErrorIs(t, err, ErrIncompatible)
	require.ErrorIs(t, err, ErrFatal)
	require.True(t, IsFatal(fmt.Errorf("encoder: table shop.orders after DDL 42: %w", err)), "survives wrapping")
	var re *Error
	require.ErrorAs(t, err, &re)
	require.Equal(t, "t-value", re.Subject)
	require.Equal(t, "register", re.Op)
	require.Equal(t, http.StatusConflict, re.Status)
	require.Equal(t, 409, re.Code)
	require.Equal(t, msg, re.Message)
	require.True(t, re.Fatal())
	require.Equal(t, int32(1), n.registers.Load(), "not retried")

	// Nothing was cached: once the subject is opened up (compatibility
	// NONE), the same call succeeds.
	reg.ClearInterceptors()
	id, err := c.ID(t.Context(), "t-value", schemaV2)
	require.NoError(t, err)
	require.NotZero(t, id)
}

func TestOtherFatalAnswers(t *testing.T) {
	for _, tc := range []struct {
		status int
		want   error
	}{
		{http.StatusUnprocessableEntity, ErrInvalidSchema},
		{http.StatusForbidden, ErrUnauthorized},
		{http.StatusBadRequest, ErrRejected},
	} {
		reg, n := newFake(t)
		reg.Intercept(func(w http.ResponseWriter, _ *http.Request) bool {
			w.WriteHeader(tc.status)
			_, _ = w.Write([]byte(`{"error_code":1,"message":"no"}`))
			return true
		})
		c := newClient(t, Config{URL: reg.URL()})
		_, err := c.ID(t.Context(), "t-value", schemaV1)
		require.ErrorIs(t, err, tc.want, "HTTP %d", tc.status)
		require.True(t, IsFatal(err))
		require.Equal(t, int32(1), n.total(), "HTTP %d is not retried", tc.status)
	}
}

func TestContextCancelEndsRetryLoop(t *testing.T) {
	// Nothing listens on this address: every attempt is a connection error.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	ctx, cancel := context.WithCancel(t.Context())
	var attempts atomic.Int32
	var sawFatal atomic.Bool
	c := newClient(t, Config{URL: "http://" + addr, OnRetry: func(_ string, attempt int, _ time.Duration, err error) {
		sawFatal.Store(sawFatal.Load() || IsFatal(err))
		if attempts.Add(1) == 3 {
			cancel()
		}
	}})
	done := make(chan error, 1)
	go func() {
		_, err := c.ID(ctx, "t-value", schemaV1)
		done <- err
	}()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
		require.ErrorContains(t, err, "gave up after 3 attempts")
	case <-time.After(10 * time.Second):
		t.Fatal("ID did not return after cancel")
	}
	require.False(t, sawFatal.Load(), "a connection error is transient")
	k, last := c.Retrying()
	require.Zero(t, k)
	require.NoError(t, last)
}

func TestWaiterOutlivesCancelledLeader(t *testing.T) {
	reg, _ := newFake(t)
	release, held := make(chan struct{}), make(chan struct{})
	defer close(release)
	var first atomic.Bool
	reg.Intercept(func(_ http.ResponseWriter, r *http.Request) bool {
		if !first.Swap(true) {
			close(held)
			hold(r, release)
		}
		return false
	})
	c := newClient(t, Config{URL: reg.URL()})
	leaderCtx, cancelLeader := context.WithCancel(t.Context())
	leaderErr := make(chan error, 1)
	go func() {
		_, err := c.ID(leaderCtx, "t-value", schemaV1)
		leaderErr <- err
	}()
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.flights[digest("t-value", schemaV1)] != nil
	}, 5*time.Second, time.Millisecond)
	waiter := make(chan error, 1)
	go func() {
		_, err := c.ID(t.Context(), "t-value", schemaV1)
		waiter <- err
	}()
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		f := c.flights[digest("t-value", schemaV1)]
		return f != nil && f.waiters == 1
	}, 5*time.Second, time.Millisecond)
	// Cancel only once the leader's request is held at the registry:
	// cancelled earlier, it never reaches the registry, and the waiter's
	// request would be the one held (until its 30 s attempt timeout).
	<-held
	began := time.Now()
	cancelLeader()
	require.ErrorIs(t, <-leaderErr, context.Canceled)
	require.NoError(t, <-waiter, "the waiter takes over instead of inheriting the leader's cancellation")
	require.Less(t, time.Since(began), 10*time.Second, "the waiter's own request was held: the test lost its race")
}

func TestBasicAuthFromURL(t *testing.T) {
	const user, pass = "KEY", "p@ss/w+rd:x%"
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	reg, _ := newFake(t, srfake.WithAuth(want))
	host := strings.TrimPrefix(reg.URL(), "http://")
	// Percent-encoded as users must write it for Confluent Cloud secrets.
	raw := "http://" + user + ":p%40ss%2Fw%2Brd%3Ax%25@" + host
	c := newClient(t, Config{URL: raw})
	require.NoError(t, c.Ping(t.Context()))
	id, err := c.ID(t.Context(), "t-value", schemaV1)
	require.NoError(t, err)
	require.NotZero(t, id)

	// A wrong password is a fatal 403 and the message never shows it.
	const wrong = "hunter2-secret"
	bad := newClient(t, Config{URL: "http://" + user + ":" + wrong + "@" + host + "/"})
	_, err = bad.ID(t.Context(), "t-value", schemaV1)
	require.ErrorIs(t, err, ErrUnauthorized)
	require.NotContains(t, err.Error(), wrong)
	err = bad.Ping(t.Context())
	require.ErrorIs(t, err, ErrUnauthorized)
	require.NotContains(t, err.Error(), wrong)

	cfg := Config{URL: "https://" + user + ":" + wrong + "@sr.example:8081/prefix"}
	for _, s := range []string{cfg.String(), fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg), cfg.Redacted()} {
		require.NotContains(t, s, wrong)
		require.Contains(t, s, "KEY:xxxxx@sr.example:8081/prefix")
	}
}

func TestPathPrefix(t *testing.T) {
	reg, _ := newFake(t)
	mux := http.NewServeMux()
	mux.Handle("/sr/", http.StripPrefix("/sr", reg.Handler()))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	c := newClient(t, Config{URL: srv.URL + "/sr/"})
	require.NoError(t, c.Ping(t.Context()))
	_, err := c.ID(t.Context(), "t-value", schemaV1)
	require.NoError(t, err)
	require.True(t, reg.SubjectExists("t-value"))
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, dir)
	serverCert := ca.issue(t, dir, "server", true)
	ca.issue(t, dir, "client", false)

	reg, _ := newFake(t)
	srv := httptest.NewUnstartedServer(reg.Handler())
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.pool,
		MinVersion:   tls.VersionTLS12,
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes below are expected
	srv.StartTLS()
	t.Cleanup(srv.Close)

	c := newClient(t, Config{URL: srv.URL, CAFile: filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "client.pem"), KeyFile: filepath.Join(dir, "client-key.pem")})
	id, err := c.ID(t.Context(), "t-value", schemaV1)
	require.NoError(t, err)
	require.NotZero(t, id)

	// Without a client certificate the server's alert is a configuration
	// error too.
	noCert := newClient(t, Config{URL: srv.URL, CAFile: filepath.Join(dir, "ca.pem")})
	_, err = noCert.ID(t.Context(), "t-value", schemaV1)
	require.ErrorIs(t, err, ErrRejected)
	require.ErrorContains(t, err, "TLS")

	// The system pool does not know the test CA: a fatal error at once,
	// not an endless retry.
	sys := newClient(t, Config{URL: srv.URL})
	_, err = sys.ID(t.Context(), "t-value", schemaV1)
	require.ErrorIs(t, err, ErrRejected)
	require.ErrorIs(t, err, ErrFatal)
	require.ErrorContains(t, err, "TLS")
}

func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "f.pem")
	require.NoError(t, os.WriteFile(existing, []byte("x"), 0o600))
	for _, tc := range []struct {
		cfg Config
		msg string
	}{
		{Config{}, "URL is empty"},
		{Config{URL: "ftp://h"}, "scheme must be http or https"},
		{Config{URL: "http://"}, "has no host"},
		{Config{URL: "http://h?x=1"}, "query"},
		{Config{URL: "http://:pw@h"}, "without a user name"},
		{Config{URL: "http://u:p w%zz@h"}, "does not parse"},
		{Config{URL: "http://h", CAFile: existing}, "need an https URL"},
		{Config{URL: "https://h", CertFile: existing}, "go together"},
		{Config{URL: "https://h", CAFile: filepath.Join(dir, "missing.pem")}, "CAFile"},
		{Config{URL: "http://h", MaxInFlight: -1}, "MaxInFlight"},
		{Config{URL: "http://h", Timeout: -time.Second}, "Timeout"},
		{Config{URL: "http://h", RetryBase: time.Minute, RetryMax: time.Second}, "exceeds RetryMax"},
	} {
		err := tc.cfg.Validate()
		require.ErrorIs(t, err, ErrConfig, "%+v", tc.cfg)
		require.ErrorContains(t, err, tc.msg)
		require.NotContains(t, err.Error(), "p w", "the password is never echoed")
	}
	_, err := New(Config{URL: "https://h", CAFile: existing})
	require.ErrorContains(t, err, "holds no PEM certificate")
	require.NoError(t, (&Config{URL: "https://u:p@h:1/x/"}).Validate())
}

func TestBackoffBounds(t *testing.T) {
	c := &Client{base: 100 * time.Millisecond, max: time.Second}
	for attempt, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 60: time.Second} {
		for range 50 {
			d := c.backoff(attempt)
			require.GreaterOrEqual(t, d, want/2, "attempt %d", attempt)
			require.LessOrEqual(t, d, want, "attempt %d", attempt)
		}
	}
}

func TestSubjects(t *testing.T) {
	require.Equal(t, "tidb.shop.orders-key", KeySubject("tidb.shop.orders"))
	require.Equal(t, "tidb_shop_orders-value", ValueSubject(TiCDCSubjectTopic("tidb.shop.orders")))
}

// testCA issues certificates for the TLS test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCA(t *testing.T, dir string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tidestream test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

var serial atomic.Int64

func (ca *testCA) issue(t *testing.T, dir, name string, server bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1) + 1),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	writePEM(t, filepath.Join(dir, name+".pem"), "CERTIFICATE", der)
	writePEM(t, filepath.Join(dir, name+"-key.pem"), "EC PRIVATE KEY", keyDER)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
}

func TestForTableNamesTableAndDDL(t *testing.T) {
	reg, _ := newFake(t)
	const msg = "Schema being registered is incompatible with an earlier schema"
	reg.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/versions") {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		fmt.Fprintf(w, `{"error_code":409,"message":%q}`, msg)
		return true
	})
	c := newClient(t, Config{URL: reg.URL()})
	_, err := c.IDFor(t.Context(), TableKey{TableID: 7, Version: 3, Kind: ValueSchema}, "t-value", schemaV2)
	const ddl = "ALTER TABLE shop.orders MODIFY COLUMN note VARCHAR(10)"
	err = ForTable(err, ValueSchema, "shop.orders", ddl)
	require.EqualError(t, err, `registry: value schema of table shop.orders after DDL "`+ddl+`" refused (schema incompatible): `+
		`register subject "t-value": HTTP 409 (error_code 409): `+msg+`; revert the DDL or set the subject's compatibility level to NONE`)
	require.ErrorIs(t, err, ErrIncompatible)
	require.True(t, IsFatal(err))
	var te *TableError
	require.ErrorAs(t, err, &te)
	require.Equal(t, "shop.orders", te.Table)
	require.Equal(t, ddl, te.DDL)

	// A snapshot version has no DDL; say where the schema came from.
	err = ForTable(&Error{Subject: "k-key", Op: "register", Status: 422, Code: 42201, Message: "bad", kind: ErrInvalidSchema}, KeySchema, "a.b", "")
	require.EqualError(t, err, `registry: key schema of table a.b as of the changefeed's start snapshot refused (invalid schema): register subject "k-key": HTTP 422 (error_code 42201): bad`)

	// Not a registry answer about the schema: unchanged.
	require.NoError(t, ForTable(nil, ValueSchema, "a.b", "x"))
	require.Same(t, context.Canceled, ForTable(context.Canceled, ValueSchema, "a.b", "x"))
}
