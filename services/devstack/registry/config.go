package registry

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/twmb/franz-go/pkg/sr"
)

// levelLocked is the level that applies to subject: its own, else the
// global one. r.mu is held.
func (r *Registry) levelLocked(subject string) sr.CompatibilityLevel {
	if l, ok := r.subjects[subject]; ok {
		return l
	}
	return r.global
}

// readLevel decodes a PUT /config body, {"compatibility": "LEVEL", …}.
// Other fields Confluent accepts (alias, normalize, metadata and rule
// defaults) are ignored: nothing here acts on them.
func readLevel(w http.ResponseWriter, req *http.Request) (sr.CompatibilityLevel, error) {
	var body struct {
		Compatibility *string `json:"compatibility"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, req.Body, maxBody)).Decode(&body); err != nil {
		// rest-utils answers a body that is not JSON with a plain 400.
		return 0, &apiError{http.StatusBadRequest, http.StatusBadRequest, fmt.Sprintf("request body is not JSON: %v", err)}
	}
	if body.Compatibility == nil {
		return 0, errInvalidLevel()
	}
	var l sr.CompatibilityLevel
	if err := l.UnmarshalText([]byte(*body.Compatibility)); err != nil {
		return 0, errInvalidLevel()
	}
	return l, nil
}

// levelAnswer is a config read: Confluent names the level
// compatibilityLevel when reading and compatibility when writing.
func levelAnswer(l sr.CompatibilityLevel) map[string]string {
	return map[string]string{"compatibilityLevel": l.String()}
}

// deletedAnswer is the level a DELETE removed. Confluent returns its
// config object (compatibilityLevel); sr.Client.ResetCompatibility reads
// compatibility. Both keys, so either client learns what was removed.
func deletedAnswer(l sr.CompatibilityLevel) map[string]string {
	return map[string]string{"compatibilityLevel": l.String(), "compatibility": l.String()}
}

func (r *Registry) getGlobalConfig(w http.ResponseWriter, _ *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	writeJSON(w, http.StatusOK, levelAnswer(r.global))
}

func (r *Registry) putGlobalConfig(w http.ResponseWriter, req *http.Request) {
	l, err := readLevel(w, req)
	if err != nil {
		writeError(w, err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.global = l
	writeJSON(w, http.StatusOK, map[string]string{"compatibility": l.String()})
}

// deleteGlobalConfig resets the global level to BACKWARD, Confluent's
// default, and answers the level it replaced.
func (r *Registry) deleteGlobalConfig(w http.ResponseWriter, _ *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.global
	r.global = sr.CompatBackward
	writeJSON(w, http.StatusOK, deletedAnswer(old))
}

// getSubjectConfig answers the subject's own level; without one, the
// global level if ?defaultToGlobal=true, else Confluent's 40408 (srfake
// fell back to the global level unasked, which hides a missing subject
// config from a client that wants to know).
func (r *Registry) getSubjectConfig(w http.ResponseWriter, req *http.Request) {
	subject := req.PathValue("subject")
	r.mu.Lock()
	defer r.mu.Unlock()
	if l, ok := r.subjects[subject]; ok {
		writeJSON(w, http.StatusOK, levelAnswer(l))
		return
	}
	if req.URL.Query().Get("defaultToGlobal") == "true" {
		writeJSON(w, http.StatusOK, levelAnswer(r.global))
		return
	}
	writeError(w, &apiError{http.StatusNotFound, sr.ErrSubjectLevelCompatibilityNotConfigured.Code,
		fmt.Sprintf("Subject '%s' does not have subject-level compatibility configured", subject)})
}

// putSubjectConfig sets the subject's level; the subject need not exist
// yet (a level set before the first registration applies to it).
func (r *Registry) putSubjectConfig(w http.ResponseWriter, req *http.Request) {
	subject := req.PathValue("subject")
	l, err := readLevel(w, req)
	if err != nil {
		writeError(w, err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.subjects[subject] = l
	writeJSON(w, http.StatusOK, map[string]string{"compatibility": l.String()})
}

// deleteSubjectConfig removes the subject's level, so the global one
// applies again, and answers the level it removed.
func (r *Registry) deleteSubjectConfig(w http.ResponseWriter, req *http.Request) {
	subject := req.PathValue("subject")
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.subjects[subject]
	switch {
	case ok:
		delete(r.subjects, subject)
		writeJSON(w, http.StatusOK, deletedAnswer(l))
	case r.store.exists(subject):
		writeError(w, &apiError{http.StatusNotFound, sr.ErrSubjectLevelCompatibilityNotConfigured.Code,
			fmt.Sprintf("Subject '%s' does not have subject-level compatibility configured", subject)})
	default:
		writeError(w, errSubjectNotFound(subject))
	}
}
