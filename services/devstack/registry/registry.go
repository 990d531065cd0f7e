package registry

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"

	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

// contentType is what Confluent answers with; clients accept plain JSON too.
const contentType = "application/vnd.schemaregistry.v1+json"

// maxBody bounds a request body, the same bound srfake applies: a schema
// larger than this is a mistake in a dev stack, not a workload.
const maxBody = 1 << 20

// Config configures a Registry.
type Config struct {
	// Users maps user name to password for HTTP basic auth. Empty disables
	// auth: every request is served.
	Users map[string]string
	// GlobalLevel is the global compatibility level until a PUT /config
	// changes it. Zero means BACKWARD, Confluent's default.
	GlobalLevel sr.CompatibilityLevel
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	for user := range c.Users {
		if user == "" {
			return errors.New("registry: Config.Users: empty user name")
		}
	}
	if c.GlobalLevel != 0 && c.GlobalLevel.String() == "" {
		return fmt.Errorf("registry: Config.GlobalLevel: unknown compatibility level %d", c.GlobalLevel)
	}
	return nil
}

// Registry serves the Confluent Schema Registry API over srfake with
// compatibility enforcement, config and basic auth added. It is an
// http.Handler; serve it on any listener (httptest.NewServer in tests).
// Safe for concurrent use.
type Registry struct {
	inner http.Handler // srfake's handler: storage and everything we do not override
	fake  *srfake.Registry
	// store is a typed client on inner that needs no listener; we read
	// srfake's state through its own API rather than duplicating it.
	store *sr.Client
	users map[string]string
	mux   *http.ServeMux

	// mu makes a registration's check and srfake's store one step: without
	// it two registrations could both pass against the same latest version
	// and both land, and a config change could slip between a check's
	// reading of the level and its verdict. Config lives here, not in
	// srfake, because srfake stores levels but never consults them.
	mu       sync.Mutex
	global   sr.CompatibilityLevel
	subjects map[string]sr.CompatibilityLevel
}

// New builds a Registry; it starts nothing.
func New(cfg Config) (*Registry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// NewRegistry, not New: srfake.New would start an httptest server we
	// never use.
	fake := srfake.NewRegistry()
	inner := fake.Handler()
	store, err := sr.NewClient(
		sr.URLs("http://srfake.invalid"),
		sr.HTTPClient(&http.Client{Transport: handlerTransport{inner}}),
	)
	if err != nil {
		return nil, fmt.Errorf("registry: in-process client: %w", err)
	}
	r := &Registry{
		inner:    inner,
		fake:     fake,
		store:    store,
		users:    make(map[string]string, len(cfg.Users)),
		global:   cfg.GlobalLevel,
		subjects: make(map[string]sr.CompatibilityLevel),
	}
	if r.global == 0 {
		r.global = sr.CompatBackward
	}
	for u, p := range cfg.Users {
		r.users[u] = p
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", r.root)
	mux.HandleFunc("GET /config", r.getGlobalConfig)
	mux.HandleFunc("PUT /config", r.putGlobalConfig)
	mux.HandleFunc("DELETE /config", r.deleteGlobalConfig)
	mux.HandleFunc("GET /config/{subject}", r.getSubjectConfig)
	mux.HandleFunc("PUT /config/{subject}", r.putSubjectConfig)
	mux.HandleFunc("DELETE /config/{subject}", r.deleteSubjectConfig)
	mux.HandleFunc("POST /subjects/{subject}/versions", r.register)
	mux.HandleFunc("DELETE /subjects/{subject}", r.deleteSubject)
	mux.HandleFunc("POST /compatibility/subjects/{subject}/versions/{version}", r.compatibility)
	mux.HandleFunc("POST /compatibility/subjects/{subject}/versions", r.compatibility)
	mux.Handle("/", inner)
	r.mux = mux
	return r, nil
}

// ServeHTTP implements http.Handler.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if len(r.users) > 0 && !r.authorized(req) {
		// Confluent (Jetty's basic authenticator behind rest-utils)
		// answers 401 with this body for a missing header and a wrong
		// password alike; srfake's 403 for the latter would make clients
		// report a permission problem instead of bad credentials.
		w.Header().Set("WWW-Authenticate", `Basic realm="SchemaRegistry"`)
		writeError(w, &apiError{http.StatusUnauthorized, http.StatusUnauthorized, "Unauthorized"})
		return
	}
	r.mux.ServeHTTP(w, req)
}

func (r *Registry) authorized(req *http.Request) bool {
	user, pass, ok := req.BasicAuth()
	if !ok {
		return false
	}
	want, ok := r.users[user]
	// Constant time so the dev stack does not teach a timing oracle to
	// anything that copies it.
	return ok && subtle.ConstantTimeCompare([]byte(pass), []byte(want)) == 1
}

// root answers Confluent's GET / body, exactly "{}": TiCDC-compatible
// clients probe it at start and refuse anything else (srfake has no root
// route and answers 404).
func (r *Registry) root(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", contentType)
	_, _ = io.WriteString(w, "{}")
}

// register checks a new schema against the subject's history at the
// subject's level, then lets srfake store it (or return the id it already
// has).
func (r *Registry) register(w http.ResponseWriter, req *http.Request) {
	subject := req.PathValue("subject")
	body, s, err := readSchema(w, req)
	if err != nil {
		writeError(w, err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.admit(req.Context(), subject, s); err != nil {
		writeError(w, err)
		return
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	r.inner.ServeHTTP(w, req)
}

// admit returns nil if s may be registered under subject, an *apiError
// saying why not otherwise. r.mu is held.
func (r *Registry) admit(ctx context.Context, subject string, s sr.Schema) error {
	if s.Type != sr.TypeAvro {
		return nil // JSON and PROTOBUF: stored by srfake unchecked (see doc.go)
	}
	next, err := r.parse(ctx, s)
	if err != nil {
		return errInvalidSchema(s, err)
	}
	// Confluent returns the id of a schema the subject already has
	// without checking it again: re-registering an old version must
	// succeed even when a newer one would reject it.
	if _, err := r.store.LookupSchema(ctx, subject, s); err == nil {
		return nil
	} else if code := responseCode(err); code != sr.ErrSubjectNotFound.Code && code != sr.ErrSchemaNotFound.Code {
		return storeError("look up schema", err)
	}
	level := r.levelLocked(subject)
	if level == sr.CompatNone {
		return nil
	}
	prev, err := r.history(ctx, subject, isTransitive(level))
	if err != nil {
		return err
	}
	inc, err := r.check(ctx, level, next, prev)
	if err != nil {
		return err
	}
	if inc != nil {
		return errIncompatible(subject, inc)
	}
	return nil
}

// compatibility answers POST /compatibility/subjects/{s}/versions/{v}
// (one version, or the latest; transitivity does not matter against one
// version) and POST /compatibility/subjects/{s}/versions (the versions the
// level names: the latest, or all of them for a transitive level).
func (r *Registry) compatibility(w http.ResponseWriter, req *http.Request) {
	ctx := req.Context()
	subject := req.PathValue("subject")
	versionText := req.PathValue("version")
	verbose := req.URL.Query().Get("verbose") == "true"

	version := 0 // all versions the level names
	if versionText != "" {
		v, err := parseVersion(versionText)
		if err != nil {
			writeError(w, err)
			return
		}
		version = v
	}
	body, s, err := readSchema(w, req)
	if err != nil {
		writeError(w, err)
		return
	}
	if s.Type != sr.TypeAvro {
		// srfake answers true; we have no checker for these types.
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.ContentLength = int64(len(body))
		r.inner.ServeHTTP(w, req)
		return
	}
	next, err := r.parse(ctx, s)
	if err != nil {
		writeError(w, errInvalidSchema(s, err))
		return
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	level := r.levelLocked(subject)
	var prev []sr.SubjectSchema
	if version == 0 {
		prev, err = r.history(ctx, subject, isTransitive(level))
	} else {
		var ss sr.SubjectSchema
		ss, err = r.store.SchemaByVersion(ctx, subject, version)
		switch code := responseCode(err); {
		case err == nil:
			prev = []sr.SubjectSchema{ss}
		case code == sr.ErrSubjectNotFound.Code:
			err = errSubjectNotFound(subject)
		case code == sr.ErrVersionNotFound.Code:
			err = &apiError{http.StatusNotFound, sr.ErrVersionNotFound.Code, fmt.Sprintf("Version %s not found.", versionText)}
		default:
			err = storeError("read version", err)
		}
	}
	if err != nil {
		writeError(w, err)
		return
	}
	var inc *incompatibility
	if level != sr.CompatNone {
		if inc, err = r.check(ctx, level, next, prev); err != nil {
			writeError(w, err)
			return
		}
	}
	resp := map[string]any{"is_compatible": inc == nil}
	if verbose {
		// Confluent sends the list under verbose even when it is empty.
		msgs := []string{}
		if inc != nil {
			msgs = inc.details()
		}
		resp["messages"] = msgs
	}
	writeJSON(w, http.StatusOK, resp)
}

// deleteSubject lets srfake delete; a permanent delete also drops the
// subject's level, as Confluent does, so a subject re-created later starts
// from the global level again.
func (r *Registry) deleteSubject(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	r.inner.ServeHTTP(sw, req)
	if sw.status == http.StatusOK && req.URL.Query().Get("permanent") == "true" {
		delete(r.subjects, req.PathValue("subject"))
	}
}

// history returns the subject's live versions, oldest first, or only the
// latest when all is false; none if the subject does not exist.
func (r *Registry) history(ctx context.Context, subject string, all bool) ([]sr.SubjectSchema, error) {
	prev, err := r.store.Schemas(ctx, subject)
	if responseCode(err) == sr.ErrSubjectNotFound.Code {
		return nil, nil
	}
	if err != nil {
		return nil, storeError("read versions", err)
	}
	if !all && len(prev) > 1 {
		prev = prev[len(prev)-1:]
	}
	return prev, nil
}

// parseVersion accepts what Confluent accepts in a version path segment:
// "latest" (or -1) and 1..2^31-1. Latest is returned as -1, which is also
// what sr.Client.SchemaByVersion takes for it.
func parseVersion(text string) (int, error) {
	if text == "latest" {
		return -1, nil
	}
	v, err := strconv.Atoi(text)
	if err != nil || v == 0 || v < -1 || v > math.MaxInt32 {
		return 0, &apiError{http.StatusUnprocessableEntity, sr.ErrInvalidVersion.Code,
			fmt.Sprintf("The specified version '%s' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\"", text)}
	}
	return v, nil
}

// readSchema reads a registration or compatibility request body. Unknown
// fields are allowed (Confluent clients send metadata, ruleSet, id,
// version); srfake still sees the original body.
func readSchema(w http.ResponseWriter, req *http.Request) ([]byte, sr.Schema, error) {
	var s sr.Schema
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxBody))
	if err != nil {
		return nil, s, &apiError{http.StatusUnprocessableEntity, sr.ErrInvalidSchema.Code, fmt.Sprintf("Invalid schema: reading request body: %v", err)}
	}
	if err := json.Unmarshal(body, &s); err != nil {
		return nil, s, &apiError{http.StatusUnprocessableEntity, sr.ErrInvalidSchema.Code, fmt.Sprintf("Invalid schema: request body is not a schema object: %v", err)}
	}
	if s.Schema == "" {
		return nil, s, &apiError{http.StatusUnprocessableEntity, sr.ErrInvalidSchema.Code, "Invalid schema: empty schema"}
	}
	return body, s, nil
}

// handlerTransport sends a request to a handler in process, so the store
// client reaches srfake without a listener or a goroutine of its own.
type handlerTransport struct{ h http.Handler }

// RoundTrip implements http.RoundTripper.
func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, req)
	return rec.Result(), nil
}

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// responseCode is the Confluent error code of a store client error, 0 if
// err is nil or not a registry answer.
func responseCode(err error) int {
	var re *sr.ResponseError
	if errors.As(err, &re) {
		return re.ErrorCode
	}
	return 0
}
