package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/sr"
)

// The read, delete, mode and context routes over store. Each single-item
// route is a map lookup (plus a binary search for a version number);
// listing routes sort what they list.

type ctxKey struct{}

// withContext strips a /contexts/{ctx} prefix and remembers ctx for the
// routes that filter by it (listings and reads by id), as srfake did.
// Everything else under the prefix acts as without it: a registration
// there lands under the plain subject name. GET /contexts and
// DELETE /contexts/{ctx} have no further segment and pass unchanged.
func withContext(req *http.Request) *http.Request {
	rest, ok := strings.CutPrefix(req.URL.Path, "/contexts/")
	if !ok {
		return req
	}
	i := strings.IndexByte(rest, '/')
	if i < 0 {
		return req
	}
	req = req.WithContext(context.WithValue(req.Context(), ctxKey{}, rest[:i]))
	req.URL.Path = rest[i:]
	if raw, ok := strings.CutPrefix(req.URL.RawPath, "/contexts/"); ok {
		if j := strings.IndexByte(raw, '/'); j >= 0 {
			req.URL.RawPath = raw[j:]
		}
	}
	return req
}

func requestContext(req *http.Request) string {
	c, _ := req.Context().Value(ctxKey{}).(string)
	return c
}

// schemaByID finds the id in the path, visible in the request's context
// and, with ?subject=, used under that subject (in any state).
func (r *Registry) schemaByID(req *http.Request) (*schema, error) {
	id, err := strconv.Atoi(req.PathValue("id"))
	if err != nil {
		return nil, errBadRequestSchema("invalid schema id")
	}
	e, ok := r.store.ids[id]
	if !ok {
		return nil, errSchemaNotFound()
	}
	if ctx := requestContext(req); ctx != "" && len(e.usesWhere(ctx, "", deletedFilter{})) == 0 {
		return nil, errSchemaNotFound()
	}
	if subject := req.URL.Query().Get("subject"); subject != "" {
		// Through the subject's own index: a schema shared by every
		// subject must not make this a walk over all of them.
		if sub, ok := r.store.subjects[subject]; !ok || len(sub.byKey[e.key]) == 0 {
			return nil, errSchemaNotFound()
		}
	}
	return e, nil
}

func (r *Registry) getSchemaByID(w http.ResponseWriter, req *http.Request) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, err := r.schemaByID(req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, e.schema)
}

// getRawSchemaByID answers the schema text itself, as Confluent does (not
// a JSON string holding it).
func (r *Registry) getRawSchemaByID(w http.ResponseWriter, req *http.Request) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, err := r.schemaByID(req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeRaw(w, e.schema.Schema)
}

// idUses is the versions of the path's id under ?subject= and the
// request's context, with the ?deleted filters; with a context and none,
// the id is not found.
func (r *Registry) idUses(req *http.Request) ([]*version, error) {
	id, err := strconv.Atoi(req.PathValue("id"))
	if err != nil {
		return nil, errBadRequestSchema("invalid schema id")
	}
	e, ok := r.store.ids[id]
	if !ok {
		return nil, errSchemaNotFound()
	}
	ctx := requestContext(req)
	uses := e.usesWhere(ctx, req.URL.Query().Get("subject"), parseDeleted(req))
	if ctx != "" && len(uses) == 0 {
		return nil, errSchemaNotFound()
	}
	return uses, nil
}

func (r *Registry) getVersionsByID(w http.ResponseWriter, req *http.Request) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	uses, err := r.idUses(req)
	if err != nil {
		writeError(w, err)
		return
	}
	type subjectVersion struct {
		Subject string `json:"subject"`
		Version int    `json:"version"`
	}
	out := make([]subjectVersion, 0, len(uses))
	for _, v := range uses {
		out = append(out, subjectVersion{v.ss.Subject, v.ss.Version})
	}
	writeJSON(w, http.StatusOK, out)
}

func (r *Registry) getSubjectsByID(w http.ResponseWriter, req *http.Request) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	uses, err := r.idUses(req)
	if err != nil {
		writeError(w, err)
		return
	}
	out := []string{}
	for _, v := range uses { // ordered by subject: duplicates are adjacent
		if len(out) == 0 || out[len(out)-1] != v.ss.Subject {
			out = append(out, v.ss.Subject)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// getSchemaByGUID answers one live version with the GUID, whatever the
// request's context: the first by subject and version in the default
// context, else the first in any.
func (r *Registry) getSchemaByGUID(w http.ResponseWriter, req *http.Request) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.store.byGUID[req.PathValue("guid")]
	var uses []*version
	if ok {
		uses = e.usesWhere("", "", deletedFilter{})
	}
	if len(uses) == 0 {
		writeError(w, errSchemaNotFound())
		return
	}
	pick := uses[0]
	if i := slices.IndexFunc(uses, func(v *version) bool { return subjectContext(v.ss.Subject) == "." }); i >= 0 {
		pick = uses[i]
	}
	writeJSON(w, http.StatusOK, pick.ss)
}

// getIDsByGUID answers the contexts holding a live version with the GUID.
// Ids are global here, so each context answers the same id.
func (r *Registry) getIDsByGUID(w http.ResponseWriter, req *http.Request) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.store.byGUID[req.PathValue("guid")]
	out := []sr.ContextID{}
	if ok {
		for _, v := range e.usesWhere("", "", deletedFilter{}) {
			c := subjectContext(v.ss.Subject)
			if !slices.ContainsFunc(out, func(x sr.ContextID) bool { return x.Context == c }) {
				out = append(out, sr.ContextID{Context: c, ID: e.id})
			}
		}
	}
	if len(out) == 0 {
		writeError(w, errSchemaNotFound())
		return
	}
	slices.SortFunc(out, func(a, b sr.ContextID) int { return strings.Compare(a.Context, b.Context) })
	writeJSON(w, http.StatusOK, out)
}

// sortedSubjects lists subject names in the request's context with
// ?subjectPrefix= whose soft-deleted state keep accepts, sorted.
func (r *Registry) sortedSubjects(req *http.Request, keep func(deleted bool) bool) []string {
	ctx := requestContext(req)
	prefix := req.URL.Query().Get("subjectPrefix")
	out := []string{}
	for name, sub := range r.store.subjects {
		if keep(sub.deleted) && (ctx == "" || subjectContext(name) == ctx) && strings.HasPrefix(name, prefix) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// getSchemas answers GET /schemas: every version in the request's context
// under ?subjectPrefix=, live ones unless ?deleted=true, only each
// subject's latest with ?latestOnly=true.
func (r *Registry) getSchemas(w http.ResponseWriter, req *http.Request) {
	q := req.URL.Query()
	includeDeleted := q.Get("deleted") == "true"
	latestOnly := q.Get("latestOnly") == "true"
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := []sr.SubjectSchema{}
	for _, name := range r.sortedSubjects(req, func(deleted bool) bool { return includeDeleted || !deleted }) {
		sub := r.store.subjects[name]
		latest := sub.latest()
		for _, v := range sub.versions {
			if (includeDeleted || !v.deleted) && (!latestOnly || v == latest) {
				out = append(out, v.ss)
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (r *Registry) getSubjects(w http.ResponseWriter, req *http.Request) {
	f := parseDeleted(req)
	r.mu.RLock()
	defer r.mu.RUnlock()
	writeJSON(w, http.StatusOK, r.sortedSubjects(req, f.keep))
}

func (r *Registry) getSubjectVersions(w http.ResponseWriter, req *http.Request) {
	subject := req.PathValue("subject")
	f := parseDeleted(req)
	r.mu.RLock()
	defer r.mu.RUnlock()
	sub, ok := r.store.subject(subject, f.any())
	if !ok {
		writeError(w, errSubjectNotFound(subject))
		return
	}
	out := []int{}
	for _, v := range sub.versions {
		if f.keep(v.deleted) {
			out = append(out, v.ss.Version)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// pathVersion is the subject version the path names, -1 for latest.
func (r *Registry) pathVersion(req *http.Request) (*version, error) {
	n, err := parseVersion(req.PathValue("version"))
	if err != nil {
		return nil, err
	}
	return r.store.get(req.PathValue("subject"), n, parseDeleted(req).any())
}

func (r *Registry) getVersion(w http.ResponseWriter, req *http.Request) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	v, err := r.pathVersion(req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v.ss)
}

func (r *Registry) getRawVersion(w http.ResponseWriter, req *http.Request) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	v, err := r.pathVersion(req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeRaw(w, v.ss.Schema.Schema)
}

func (r *Registry) getReferencedBy(w http.ResponseWriter, req *http.Request) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	v, err := r.pathVersion(req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, r.store.referencedBy(v.ss.Subject, v.ss.Version, parseDeleted(req)))
}

func (r *Registry) deleteVersion(w http.ResponseWriter, req *http.Request) {
	n, err := parseVersion(req.PathValue("version"))
	if err != nil {
		writeError(w, err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	v, err := r.store.deleteVersion(req.PathValue("subject"), n, req.URL.Query().Get("permanent") == "true")
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// lookup answers POST /subjects/{s}: the subject's version holding the
// schema (by canonicalKey), soft-deleted ones too with ?deleted=true.
func (r *Registry) lookup(w http.ResponseWriter, req *http.Request) {
	subject := req.PathValue("subject")
	var s sr.Schema
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxBody))
	if err == nil {
		err = json.Unmarshal(body, &s)
	}
	if err != nil {
		writeError(w, errBadRequestSchema(fmt.Sprintf("request body is not a schema object: %v", err)))
		return
	}
	f := parseDeleted(req)
	r.mu.RLock()
	defer r.mu.RUnlock()
	sub, ok := r.store.subject(subject, f.any())
	if !ok {
		writeError(w, errSubjectNotFound(subject))
		return
	}
	v := sub.find(canonicalKey(s), f)
	if v == nil {
		writeError(w, errSchemaNotFound())
		return
	}
	writeJSON(w, http.StatusOK, v.ss)
}

// getContexts lists "." and the context of every subject with a live
// version, with ?contextPrefix=, ?offset= and ?limit=.
func (r *Registry) getContexts(w http.ResponseWriter, req *http.Request) {
	q := req.URL.Query()
	prefix := q.Get("contextPrefix")
	seen := map[string]bool{".": true}
	r.mu.RLock()
	for name, sub := range r.store.subjects {
		if !sub.deleted && sub.latest() != nil {
			seen[subjectContext(name)] = true
		}
	}
	r.mu.RUnlock()
	out := []string{}
	for c := range seen {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	sort.Strings(out)
	if off, err := strconv.Atoi(q.Get("offset")); err == nil && off > 0 {
		out = out[min(off, len(out)):]
	}
	if lim, err := strconv.Atoi(q.Get("limit")); err == nil && lim >= 0 && lim < len(out) {
		out = out[:lim]
	}
	writeJSON(w, http.StatusOK, out)
}

// deleteContext succeeds (204) only for a context without live subjects.
func (r *Registry) deleteContext(w http.ResponseWriter, req *http.Request) {
	c := req.PathValue("context")
	r.mu.RLock()
	defer r.mu.RUnlock()
	for name, sub := range r.store.subjects {
		if !sub.deleted && subjectContext(name) == c {
			writeError(w, &apiError{http.StatusConflict, sr.ErrOperationNotPermitted.Code, fmt.Sprintf("Context %q is not empty", c)})
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// Modes are stored and answered, never enforced: a READONLY registry still
// registers, as srfake did.

func modeAnswer(m sr.Mode) map[string]string { return map[string]string{"mode": m.String()} }

func readMode(w http.ResponseWriter, req *http.Request) (sr.Mode, error) {
	var body struct {
		Mode *sr.Mode `json:"mode"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, req.Body, maxBody)).Decode(&body); err != nil || body.Mode == nil {
		return 0, &apiError{http.StatusUnprocessableEntity, sr.ErrInvalidMode.Code,
			"Invalid mode. Valid values are READWRITE, READONLY and IMPORT"}
	}
	return *body.Mode, nil
}

func (r *Registry) getGlobalMode(w http.ResponseWriter, _ *http.Request) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	writeJSON(w, http.StatusOK, modeAnswer(r.store.globalMode))
}

func (r *Registry) putGlobalMode(w http.ResponseWriter, req *http.Request) {
	m, err := readMode(w, req)
	if err != nil {
		writeError(w, err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.store.globalMode = m
	writeJSON(w, http.StatusOK, modeAnswer(m))
}

// deleteGlobalMode resets the global mode to READWRITE and answers the one
// it replaced.
func (r *Registry) deleteGlobalMode(w http.ResponseWriter, _ *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.store.globalMode
	r.store.globalMode = sr.ModeReadWrite
	writeJSON(w, http.StatusOK, modeAnswer(old))
}

// getSubjectMode answers the subject's own mode, else the global one
// unless ?defaultToGlobal=false.
func (r *Registry) getSubjectMode(w http.ResponseWriter, req *http.Request) {
	subject := req.PathValue("subject")
	r.mu.RLock()
	defer r.mu.RUnlock()
	if m, ok := r.store.modes[subject]; ok {
		writeJSON(w, http.StatusOK, modeAnswer(m))
		return
	}
	if req.URL.Query().Get("defaultToGlobal") == "false" {
		writeError(w, errSubjectNotFound(subject))
		return
	}
	writeJSON(w, http.StatusOK, modeAnswer(r.store.globalMode))
}

func (r *Registry) putSubjectMode(w http.ResponseWriter, req *http.Request) {
	m, err := readMode(w, req)
	if err != nil {
		writeError(w, err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.store.modes[req.PathValue("subject")] = m
	writeJSON(w, http.StatusOK, modeAnswer(m))
}

func (r *Registry) deleteSubjectMode(w http.ResponseWriter, req *http.Request) {
	subject := req.PathValue("subject")
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.store.modes[subject]
	if !ok {
		writeError(w, errSubjectNotFound(subject))
		return
	}
	delete(r.store.modes, subject)
	writeJSON(w, http.StatusOK, modeAnswer(m))
}

// writeRaw writes a schema's own text, the body of the .../schema routes.
func writeRaw(w http.ResponseWriter, text string) {
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, text)
}
