package registry

import (
	"cmp"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/sr"
)

// store holds subjects, versions and schema ids, with an index for every
// question registration and the hot reads ask, so that none of them scans
// the stored schemas (see doc.go for why it replaced srfake). It has no
// lock of its own: Registry.mu guards it.
type store struct {
	subjects map[string]*subjectState
	ids      map[int]*schema
	// byKey finds a schema by its canonical key (canonicalKey): the global
	// id a registration under any subject reuses. Ids, once given, stay:
	// a schema whose every version was deleted keeps its id, and
	// registering it again anywhere gets that id back.
	byKey  map[string]*schema
	byGUID map[string]*schema
	nextID int
	// referrers maps a subject version to the stored versions whose
	// references name it, live or soft-deleted, so a delete asks only
	// them whether it is still referenced.
	referrers map[versionRef]map[*version]struct{}

	globalMode sr.Mode
	modes      map[string]sr.Mode // per-subject modes; a mode alone does not create a subject
}

// schema is one global id: the text first registered under it and every
// subject version that uses it.
type schema struct {
	id     int
	key    string // canonicalKey
	guid   string
	schema sr.Schema
	uses   map[*version]struct{}
}

// subjectState is a subject's versions, ascending, and the index from
// canonical key to the versions holding that schema.
type subjectState struct {
	versions []*version
	byKey    map[string][]*version // ascending; several only if re-registered after a soft delete
	// highest is the highest version ever given: permanently deleting a
	// version does not free its number (Confluent does the same).
	highest int
	deleted bool // soft-deleted: hidden unless ?deleted=true, refuses registrations
}

// version is one subject version. ss.Schema is the text as registered
// under this subject, which can differ in layout from the id's first text.
type version struct {
	ss      sr.SubjectSchema
	key     string
	deleted bool
	subj    *subjectState
}

type versionRef struct {
	subject string
	version int
}

func newStore() *store {
	return &store{
		subjects:   make(map[string]*subjectState),
		ids:        make(map[int]*schema),
		byKey:      make(map[string]*schema),
		byGUID:     make(map[string]*schema),
		nextID:     1,
		referrers:  make(map[versionRef]map[*version]struct{}),
		globalMode: sr.ModeReadWrite,
		modes:      make(map[string]sr.Mode),
	}
}

// canonicalKey is what makes two registrations the same schema, the
// equality srfake applied and Confluent approximates without ?normalize:
// the same type (none meaning AVRO), the same JSON value for AVRO and JSON
// schemas (whitespace and object key order do not matter, array order
// does), the same text for PROTOBUF, and the same references in any
// order. Text that is not JSON compares as text.
func canonicalKey(s sr.Schema) string {
	text := s.Schema
	if s.Type == sr.TypeAvro || s.Type == sr.TypeJSON {
		var v any
		if err := json.Unmarshal([]byte(s.Schema), &v); err == nil {
			if b, err := json.Marshal(v); err == nil {
				text = string(b)
			}
		}
	}
	var b strings.Builder
	b.WriteString(strconv.Itoa(int(s.Type)))
	b.WriteByte(0)
	b.WriteString(text)
	refs := slices.Clone(s.References)
	slices.SortFunc(refs, func(a, b sr.SchemaReference) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.Subject, b.Subject), cmp.Compare(a.Version, b.Version))
	})
	for _, ref := range refs {
		// Lengths first so no name or subject can forge a separator.
		fmt.Fprintf(&b, "\x00%d:%s%d:%s%d", len(ref.Name), ref.Name, len(ref.Subject), ref.Subject, ref.Version)
	}
	return b.String()
}

// guidOf derives a schema's GUID from its canonical key, so the same
// content has the same GUID whichever subject it is under.
func guidOf(key string) string {
	h := sha256.Sum256([]byte(key))
	h[6] = h[6]&0x0f | 0x80 // version 8: custom
	h[8] = h[8]&0x3f | 0x80 // RFC 9562 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// live reports whether v shows without ?deleted=true.
func (v *version) live() bool { return !v.deleted && !v.subj.deleted }

// find returns the subject's version holding the schema with key, the
// oldest one filter keeps, or nil.
func (sub *subjectState) find(key string, f deletedFilter) *version {
	for _, v := range sub.byKey[key] {
		if f.keep(v.deleted) {
			return v
		}
	}
	return nil
}

// version returns version n, or nil.
func (sub *subjectState) version(n int) *version {
	i, ok := slices.BinarySearchFunc(sub.versions, n, func(v *version, n int) int { return cmp.Compare(v.ss.Version, n) })
	if !ok {
		return nil
	}
	return sub.versions[i]
}

// latest returns the highest version that is not soft-deleted, or nil.
func (sub *subjectState) latest() *version {
	for i := len(sub.versions) - 1; i >= 0; i-- {
		if !sub.versions[i].deleted {
			return sub.versions[i]
		}
	}
	return nil
}

// subject returns the subject if it exists and, unless includeDeleted,
// is not soft-deleted.
func (s *store) subject(name string, includeDeleted bool) (*subjectState, bool) {
	sub, ok := s.subjects[name]
	if !ok || (sub.deleted && !includeDeleted) {
		return nil, false
	}
	return sub, true
}

// exists reports whether the subject exists and is not soft-deleted.
func (s *store) exists(name string) bool {
	_, ok := s.subject(name, false)
	return ok
}

// get returns subject's version n (-1 for the latest) as GET
// /subjects/{s}/versions/{v} answers it.
func (s *store) get(subject string, n int, includeDeleted bool) (*version, error) {
	sub, ok := s.subject(subject, includeDeleted)
	if !ok {
		return nil, errSubjectNotFound(subject)
	}
	var v *version
	if n == -1 {
		if v = sub.latest(); v == nil && includeDeleted && len(sub.versions) > 0 {
			v = sub.versions[len(sub.versions)-1]
		}
		if v == nil {
			return nil, errSubjectNotFound(subject)
		}
		return v, nil
	}
	if v = sub.version(n); v == nil || (v.deleted && !includeDeleted) {
		return nil, errVersionNotFound(subject, n)
	}
	return v, nil
}

// history returns the subject's live versions, oldest first, or only the
// latest when all is false; none if the subject does not exist or is
// soft-deleted.
func (s *store) history(subject string, all bool) []sr.SubjectSchema {
	sub, ok := s.subject(subject, false)
	if !ok {
		return nil
	}
	if !all {
		if v := sub.latest(); v != nil {
			return []sr.SubjectSchema{v.ss}
		}
		return nil
	}
	var out []sr.SubjectSchema
	for _, v := range sub.versions {
		if !v.deleted {
			out = append(out, v.ss)
		}
	}
	return out
}

// validateRegistration applies the checks a registration passes before anything is
// looked up: a usable subject name, a known type, and text that parses
// as JSON for the JSON-based types. Avro validity proper is checked
// earlier, by the compatibility parser.
func validateRegistration(subject string, s sr.Schema) error {
	switch {
	case subject == "":
		return errBadRequestSchema("subject name cannot be empty")
	case len(subject) > 255:
		return errBadRequestSchema("subject name too long (max 255 characters)")
	case strings.ContainsRune(subject, 0):
		return errBadRequestSchema("subject name cannot contain null bytes")
	}
	switch s.Type {
	case sr.TypeAvro, sr.TypeJSON:
		if !json.Valid([]byte(s.Schema)) {
			return errBadRequestSchema(fmt.Sprintf("invalid %s schema: not JSON", s.Type))
		}
	case sr.TypeProtobuf:
		if strings.TrimSpace(s.Schema) == "" {
			return errBadRequestSchema("empty protobuf schema")
		}
	default:
		return errBadRequestSchema(fmt.Sprintf("unsupported schema type: %s", s.Type))
	}
	return nil
}

// validateReferences requires every reference to name a live version.
func (s *store) validateReferences(refs []sr.SchemaReference) error {
	for _, ref := range refs {
		switch {
		case ref.Name == "":
			return errBadRequestSchema("reference missing name")
		case ref.Subject == "":
			return errBadRequestSchema(fmt.Sprintf("reference %q missing subject", ref.Name))
		case ref.Version <= 0:
			return errBadRequestSchema(fmt.Sprintf("reference %q has invalid version %d", ref.Name, ref.Version))
		}
		if _, err := s.get(ref.Subject, ref.Version, false); err != nil {
			return errBadRequestSchema(fmt.Sprintf("reference %q subject %q version %d not found", ref.Name, ref.Subject, ref.Version))
		}
	}
	return nil
}

// checkCycle refuses references that lead back to a subject already on the
// path from subject, which includes subject itself: a schema may not
// depend, directly or not, on its own subject.
func (s *store) checkCycle(subject string, refs []sr.SchemaReference) error {
	onPath := map[string]bool{subject: true}
	done := map[versionRef]bool{}
	var walk func(refs []sr.SchemaReference) error
	walk = func(refs []sr.SchemaReference) error {
		for _, ref := range refs {
			if onPath[ref.Subject] {
				return errBadRequestSchema(fmt.Sprintf("circular dependency detected: subject %s is referenced in a cycle", ref.Subject))
			}
			k := versionRef{ref.Subject, ref.Version}
			if done[k] {
				continue
			}
			done[k] = true
			sub, ok := s.subjects[ref.Subject]
			if !ok {
				continue
			}
			v := sub.version(ref.Version)
			if v == nil {
				continue
			}
			onPath[ref.Subject] = true
			err := walk(v.ss.References)
			delete(onPath, ref.Subject)
			if err != nil {
				return err
			}
		}
		return nil
	}
	return walk(refs)
}

// register stores sch under subject, or finds it there: the same schema
// (by canonicalKey) live under the subject answers its id and version;
// known under any subject, or known once and since deleted, it gets a new
// version with the existing id; otherwise a new id. Every step is a map
// lookup or a walk of sch's own references.
func (s *store) register(subject string, sch sr.Schema) (id, ver int, err error) {
	if err := validateRegistration(subject, sch); err != nil {
		return 0, 0, err
	}
	if err := s.validateReferences(sch.References); err != nil {
		return 0, 0, err
	}
	sub := s.subjects[subject]
	if sub != nil && sub.deleted {
		return 0, 0, errSubjectNotFound(subject)
	}
	key := canonicalKey(sch)
	if sub != nil {
		if v := sub.find(key, deletedFilter{}); v != nil {
			return v.ss.ID, v.ss.Version, nil
		}
	}
	next := 1
	if sub != nil {
		next = sub.highest + 1
	}
	if err := s.checkCycle(subject, sch.References); err != nil {
		return 0, 0, err
	}

	e := s.byKey[key]
	if e == nil {
		e = &schema{id: s.nextID, key: key, guid: guidOf(key), schema: sch, uses: make(map[*version]struct{})}
		s.nextID++
		s.ids[e.id] = e
		s.byKey[key] = e
		s.byGUID[e.guid] = e
	}
	if sub == nil {
		sub = &subjectState{byKey: make(map[string][]*version)}
		s.subjects[subject] = sub
	}
	v := &version{
		ss:   sr.SubjectSchema{Subject: subject, Version: next, ID: e.id, GUID: e.guid, Schema: sch},
		key:  key,
		subj: sub,
	}
	sub.versions = append(sub.versions, v)
	sub.byKey[key] = append(sub.byKey[key], v)
	sub.highest = next
	e.uses[v] = struct{}{}
	for _, ref := range sch.References {
		k := versionRef{ref.Subject, ref.Version}
		if s.referrers[k] == nil {
			s.referrers[k] = make(map[*version]struct{})
		}
		s.referrers[k][v] = struct{}{}
	}
	return e.id, next, nil
}

// referencedBy returns the ids of the versions referencing subject version
// n that filter keeps, ascending, each once.
func (s *store) referencedBy(subject string, n int, f deletedFilter) []int {
	seen := map[int]bool{}
	ids := []int{}
	for v := range s.referrers[versionRef{subject, n}] {
		if f.keep(v.subj.deleted) && f.keep(v.deleted) && !seen[v.ss.ID] {
			seen[v.ss.ID] = true
			ids = append(ids, v.ss.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

// deleteSubject soft-deletes the subject, or removes it with permanent,
// and returns the versions it had. A version a live schema still
// references blocks the delete.
func (s *store) deleteSubject(subject string, permanent bool) ([]int, error) {
	sub, ok := s.subjects[subject]
	if !ok {
		return nil, errSubjectNotFound(subject)
	}
	versions := make([]int, 0, len(sub.versions))
	var by []int
	for _, v := range sub.versions {
		versions = append(versions, v.ss.Version)
		by = append(by, s.referencedBy(subject, v.ss.Version, deletedFilter{})...)
	}
	if len(by) > 0 {
		return nil, &apiError{http.StatusConflict, sr.ErrInvalidSchema.Code,
			fmt.Sprintf("Cannot delete subject %s as its schemas are still referenced by schema IDs: %v", subject, by)}
	}
	if !permanent {
		sub.deleted = true
		return versions, nil
	}
	for _, v := range sub.versions {
		s.forget(v)
	}
	delete(s.subjects, subject)
	return versions, nil
}

// deleteVersion soft-deletes version n (-1: the latest), or removes it
// with permanent, and returns its number.
func (s *store) deleteVersion(subject string, n int, permanent bool) (int, error) {
	sub, ok := s.subjects[subject]
	if !ok {
		return 0, errSubjectNotFound(subject)
	}
	var v *version
	if n == -1 {
		v = sub.latest()
	} else {
		v = sub.version(n)
	}
	if v == nil {
		return 0, errVersionNotFound(subject, n)
	}
	if by := s.referencedBy(subject, v.ss.Version, deletedFilter{}); len(by) > 0 {
		return 0, &apiError{http.StatusConflict, sr.ErrInvalidSchema.Code,
			fmt.Sprintf("Cannot delete schema %s:%d as it is still referenced by schema IDs: %v", subject, v.ss.Version, by)}
	}
	if !permanent {
		v.deleted = true
		return v.ss.Version, nil
	}
	s.forget(v)
	sub.versions = slices.DeleteFunc(sub.versions, func(x *version) bool { return x == v })
	sub.byKey[v.key] = slices.DeleteFunc(sub.byKey[v.key], func(x *version) bool { return x == v })
	if len(sub.byKey[v.key]) == 0 {
		delete(sub.byKey, v.key)
	}
	return v.ss.Version, nil
}

// forget drops a permanently deleted version from the id and reference
// indexes. The id itself stays (see store.byKey).
func (s *store) forget(v *version) {
	delete(s.ids[v.ss.ID].uses, v)
	for _, ref := range v.ss.References {
		k := versionRef{ref.Subject, ref.Version}
		delete(s.referrers[k], v)
		if len(s.referrers[k]) == 0 {
			delete(s.referrers, k)
		}
	}
}

// usesWhere returns the versions of schema e that filter keeps and that lie in
// context ctx (all contexts if ctx is empty) and, if subject is not empty,
// under that subject; ordered by subject, then version.
func (e *schema) usesWhere(ctx, subject string, f deletedFilter) []*version {
	var out []*version
	for v := range e.uses {
		if !f.keep(v.subj.deleted) || !f.keep(v.deleted) {
			continue
		}
		if (ctx != "" && subjectContext(v.ss.Subject) != ctx) || (subject != "" && v.ss.Subject != subject) {
			continue
		}
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b *version) int {
		return cmp.Or(strings.Compare(a.ss.Subject, b.ss.Subject), cmp.Compare(a.ss.Version, b.ss.Version))
	})
	return out
}

// subjectContext is the context a subject name lies in: ".ctx" for
// ":.ctx:name", "." (the default context) otherwise.
func subjectContext(subject string) string {
	if rest, ok := strings.CutPrefix(subject, ":."); ok {
		if i := strings.IndexByte(rest, ':'); i >= 0 {
			return "." + rest[:i]
		}
	}
	return "."
}

// deletedFilter is the ?deleted=true and ?deletedOnly=true query
// parameters: neither shows live items, deleted shows both, deletedOnly
// only soft-deleted ones.
type deletedFilter struct {
	includeDeleted bool
	onlyDeleted    bool
}

func parseDeleted(req *http.Request) deletedFilter {
	q := req.URL.Query()
	return deletedFilter{includeDeleted: q.Get("deleted") == "true", onlyDeleted: q.Get("deletedOnly") == "true"}
}

// keep reports whether an item whose soft-deleted state is deleted shows.
func (f deletedFilter) keep(deleted bool) bool {
	switch {
	case f.onlyDeleted:
		return deleted
	case f.includeDeleted:
		return true
	}
	return !deleted
}

// any reports whether soft-deleted items may show at all: a single-item
// read with either parameter may return a soft-deleted item.
func (f deletedFilter) any() bool { return f.includeDeleted || f.onlyDeleted }
