package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/twmb/franz-go/pkg/sr"
)

// apiError is an answer in Confluent's error shape: an HTTP status and a
// body {"error_code": code, "message": msg}.
type apiError struct {
	status int
	code   int
	msg    string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("registry: %d %d: %s", e.status, e.code, e.msg)
}

func errInvalidSchema(s sr.Schema, err error) *apiError {
	return &apiError{http.StatusUnprocessableEntity, sr.ErrInvalidSchema.Code,
		fmt.Sprintf("Invalid schema %s with refs %v of type %s, details: %v", s.Schema, s.References, s.Type, err)}
}

func errSubjectNotFound(subject string) *apiError {
	return &apiError{http.StatusNotFound, sr.ErrSubjectNotFound.Code, fmt.Sprintf("Subject '%s' not found.", subject)}
}

func errInvalidLevel() *apiError {
	return &apiError{http.StatusUnprocessableEntity, sr.ErrInvalidCompatibilityLevel.Code,
		"Invalid compatibility level. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive"}
}

// storeError is a failure in the registry's own state, such as a stored
// schema that no longer parses, which should not happen: a 500 with
// Confluent's store error code.
func storeError(what string, err error) *apiError {
	return &apiError{http.StatusInternalServerError, sr.ErrStoreError.Code, fmt.Sprintf("Error in the backend data store: %s: %v", what, err)}
}

// writeError writes err in Confluent's shape; an error that is not an
// *apiError is a 500 store error.
func writeError(w http.ResponseWriter, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		ae = storeError("unexpected", err)
	}
	writeJSON(w, ae.status, map[string]any{"error_code": ae.code, "message": ae.msg})
}

// writeJSON writes v without a trailing newline, as Confluent's Jackson
// does.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(fmt.Sprintf(`{"error_code":%d,"message":"encoding the response failed"}`, sr.ErrStoreError.Code))
	}
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func errVersionNotFound(subject string, version int) *apiError {
	return &apiError{http.StatusNotFound, sr.ErrVersionNotFound.Code, fmt.Sprintf("Version %d not found for subject '%s'.", version, subject)}
}

func errSchemaNotFound() *apiError {
	return &apiError{http.StatusNotFound, sr.ErrSchemaNotFound.Code, "Schema not found"}
}

// errBadRequestSchema is a registration or lookup the store refuses: a
// bad subject name, type or reference, or a reference cycle.
func errBadRequestSchema(msg string) *apiError {
	return &apiError{http.StatusUnprocessableEntity, sr.ErrInvalidSchema.Code, "Invalid schema: " + msg}
}
