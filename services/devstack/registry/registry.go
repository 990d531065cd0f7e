package registry

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"sync"

	"github.com/twmb/franz-go/pkg/sr"
)

// contentType is what Confluent answers with; clients accept plain JSON too.
const contentType = "application/vnd.schemaregistry.v1+json"

// maxBody bounds a request body: a schema larger than this is a mistake in
// a dev stack, not a workload.
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

// Registry serves the Confluent Schema Registry API from memory with
// compatibility enforcement, config and basic auth. It is an http.Handler;
// serve it on any listener (httptest.NewServer in tests). Safe for
// concurrent use.
type Registry struct {
	users map[string]string
	mux   *http.ServeMux

	// mu guards store and the levels, and makes a registration's check
	// and its store one step: without it two registrations could both
	// pass against the same latest version and both land, and a config
	// change could slip between a check's reading of the level and its
	// verdict. Reads share it.
	mu       sync.RWMutex
	store    *store
	global   sr.CompatibilityLevel
	subjects map[string]sr.CompatibilityLevel
}

// New builds a Registry; it starts nothing.
func New(cfg Config) (*Registry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Registry{
		store:    newStore(),
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
	mux.HandleFunc("POST /compatibility/subjects/{subject}/versions/{version}", r.compatibility)
	mux.HandleFunc("POST /compatibility/subjects/{subject}/versions", r.compatibility)

	mux.HandleFunc("GET /schemas", r.getSchemas)
	mux.HandleFunc("GET /schemas/ids/{id}", r.getSchemaByID)
	mux.HandleFunc("GET /schemas/ids/{id}/schema", r.getRawSchemaByID)
	mux.HandleFunc("GET /schemas/ids/{id}/versions", r.getVersionsByID)
	mux.HandleFunc("GET /schemas/ids/{id}/subjects", r.getSubjectsByID)
	mux.HandleFunc("GET /schemas/guids/{guid}", r.getSchemaByGUID)
	mux.HandleFunc("GET /schemas/guids/{guid}/ids", r.getIDsByGUID)
	mux.HandleFunc("GET /subjects", r.getSubjects)
	mux.HandleFunc("POST /subjects/{subject}", r.lookup)
	mux.HandleFunc("DELETE /subjects/{subject}", r.deleteSubject)
	mux.HandleFunc("GET /subjects/{subject}/versions", r.getSubjectVersions)
	mux.HandleFunc("POST /subjects/{subject}/versions", r.register)
	mux.HandleFunc("GET /subjects/{subject}/versions/{version}", r.getVersion)
	mux.HandleFunc("DELETE /subjects/{subject}/versions/{version}", r.deleteVersion)
	mux.HandleFunc("GET /subjects/{subject}/versions/{version}/schema", r.getRawVersion)
	mux.HandleFunc("GET /subjects/{subject}/versions/{version}/referencedby", r.getReferencedBy)

	mux.HandleFunc("GET /contexts", r.getContexts)
	mux.HandleFunc("DELETE /contexts/{context}", r.deleteContext)
	mux.HandleFunc("GET /mode", r.getGlobalMode)
	mux.HandleFunc("PUT /mode", r.putGlobalMode)
	mux.HandleFunc("DELETE /mode", r.deleteGlobalMode)
	mux.HandleFunc("GET /mode/{subject}", r.getSubjectMode)
	mux.HandleFunc("PUT /mode/{subject}", r.putSubjectMode)
	mux.HandleFunc("DELETE /mode/{subject}", r.deleteSubjectMode)
	r.mux = mux
	return r, nil
}

// ServeHTTP implements http.Handler.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if len(r.users) > 0 && !r.authorized(req) {
		// Confluent (Jetty's basic authenticator behind rest-utils)
		// answers 401 with this body for a missing header and a wrong
		// password alike; a 403 for the latter would make clients report
		// a permission problem instead of bad credentials.
		w.Header().Set("WWW-Authenticate", `Basic realm="SchemaRegistry"`)
		writeError(w, &apiError{http.StatusUnauthorized, http.StatusUnauthorized, "Unauthorized"})
		return
	}
	r.mux.ServeHTTP(w, withContext(req))
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
// clients probe it at start and refuse anything else.
func (r *Registry) root(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", contentType)
	_, _ = io.WriteString(w, "{}")
}

// register checks a new schema against the subject's history at the
// subject's level, then stores it (or answers the id it already has).
func (r *Registry) register(w http.ResponseWriter, req *http.Request) {
	subject := req.PathValue("subject")
	s, err := readSchema(w, req)
	if err != nil {
		writeError(w, err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.admit(subject, s); err != nil {
		writeError(w, err)
		return
	}
	id, _, err := r.store.register(subject, s)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"id": id})
}

// admit returns nil if s may be registered under subject, an *apiError
// saying why not otherwise. r.mu is held.
func (r *Registry) admit(subject string, s sr.Schema) error {
	if s.Type != sr.TypeAvro {
		return nil // JSON and PROTOBUF: stored unchecked (see doc.go)
	}
	next, err := r.parse(s)
	if err != nil {
		return errInvalidSchema(s, err)
	}
	// Confluent returns the id of a schema the subject already has
	// without checking it again: re-registering an old version must
	// succeed even when a newer one would reject it.
	if sub, ok := r.store.subject(subject, false); ok && sub.find(canonicalKey(s), deletedFilter{}) != nil {
		return nil
	}
	level := r.levelLocked(subject)
	if level == sr.CompatNone {
		return nil
	}
	inc, err := r.check(level, next, r.store.history(subject, isTransitive(level)))
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
	s, err := readSchema(w, req)
	if err != nil {
		writeError(w, err)
		return
	}
	if s.Type != sr.TypeAvro {
		// We have no checker for these types.
		writeJSON(w, http.StatusOK, map[string]bool{"is_compatible": true})
		return
	}

	r.mu.RLock()
	defer r.mu.RUnlock()
	// Parsed under the lock: its references are read from the store.
	next, err := r.parse(s)
	if err != nil {
		writeError(w, errInvalidSchema(s, err))
		return
	}
	level := r.levelLocked(subject)
	var prev []sr.SubjectSchema
	if version == 0 {
		prev = r.store.history(subject, isTransitive(level))
	} else {
		v, err := r.store.get(subject, version, false)
		var ae *apiError
		if errors.As(err, &ae) && ae.code == sr.ErrVersionNotFound.Code {
			err = &apiError{http.StatusNotFound, sr.ErrVersionNotFound.Code, fmt.Sprintf("Version %s not found.", versionText)}
		}
		if err != nil {
			writeError(w, err)
			return
		}
		prev = []sr.SubjectSchema{v.ss}
	}
	var inc *incompatibility
	if level != sr.CompatNone {
		if inc, err = r.check(level, next, prev); err != nil {
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

// deleteSubject deletes the subject; a permanent delete also drops the
// subject's level and mode, as Confluent does, so a subject re-created
// later starts from the global ones again.
func (r *Registry) deleteSubject(w http.ResponseWriter, req *http.Request) {
	subject := req.PathValue("subject")
	permanent := req.URL.Query().Get("permanent") == "true"
	r.mu.Lock()
	defer r.mu.Unlock()
	versions, err := r.store.deleteSubject(subject, permanent)
	if err != nil {
		writeError(w, err)
		return
	}
	if permanent {
		delete(r.subjects, subject)
		delete(r.store.modes, subject)
	}
	writeJSON(w, http.StatusOK, versions)
}

// parseVersion accepts what Confluent accepts in a version path segment:
// "latest" (or -1) and 1..2^31-1. Latest is returned as -1, which is also
// what sr.Client.SchemaByVersion sends for it.
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

// readSchema reads a registration or compatibility request body.
// metadata and ruleSet are kept with the schema; id, version and other
// fields Confluent clients send are ignored, not refused.
func readSchema(w http.ResponseWriter, req *http.Request) (sr.Schema, error) {
	var s sr.Schema
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxBody))
	if err != nil {
		return s, &apiError{http.StatusUnprocessableEntity, sr.ErrInvalidSchema.Code, fmt.Sprintf("Invalid schema: reading request body: %v", err)}
	}
	if err := json.Unmarshal(body, &s); err != nil {
		return s, &apiError{http.StatusUnprocessableEntity, sr.ErrInvalidSchema.Code, fmt.Sprintf("Invalid schema: request body is not a schema object: %v", err)}
	}
	if s.Schema == "" {
		return s, &apiError{http.StatusUnprocessableEntity, sr.ErrInvalidSchema.Code, "Invalid schema: empty schema"}
	}
	return s, nil
}
