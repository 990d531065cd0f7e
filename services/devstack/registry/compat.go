package registry

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"
)

// incompatibility is the first previous version a new schema fails
// against, with the reason, in the pieces Confluent's details list names.
type incompatibility struct {
	level     sr.CompatibilityLevel
	version   int
	oldSchema string
	reason    string
}

// details renders the incompatibility as Confluent's verbose messages and
// the details list of its 409 message: one {…} element per fact.
func (i *incompatibility) details() []string {
	return []string{
		fmt.Sprintf("{description:'%s'}", i.reason),
		fmt.Sprintf("{oldSchemaVersion: %d}", i.version),
		fmt.Sprintf("{oldSchema: '%s'}", i.oldSchema),
		fmt.Sprintf("{compatibility: '%s'}", i.level),
	}
}

// isTransitive reports whether level checks every live version rather
// than only the latest.
func isTransitive(level sr.CompatibilityLevel) bool {
	switch level {
	case sr.CompatBackwardTransitive, sr.CompatForwardTransitive, sr.CompatFullTransitive:
		return true
	}
	return false
}

// directions reports which way level reads: backward means the new schema
// must read data written with a previous one, forward the reverse.
func directions(level sr.CompatibilityLevel) (backward, forward bool) {
	switch level {
	case sr.CompatBackward, sr.CompatBackwardTransitive:
		return true, false
	case sr.CompatForward, sr.CompatForwardTransitive:
		return false, true
	case sr.CompatFull, sr.CompatFullTransitive:
		return true, true
	}
	return false, false
}

// check returns the first of prev (newest first, as a user fixing the
// schema wants to hear about the version nearest theirs) that next is not
// compatible with under level, or nil. prev's schemas were admitted before,
// so one that no longer parses is a store error, not the caller's.
func (r *Registry) check(level sr.CompatibilityLevel, next avro.Schema, prev []sr.SubjectSchema) (*incompatibility, error) {
	backward, forward := directions(level)
	for i := len(prev) - 1; i >= 0; i-- {
		p := prev[i]
		if p.Type != sr.TypeAvro {
			continue // a subject that changed type: Confluent refuses that earlier; we cannot compare
		}
		old, err := r.parse(p.Schema)
		if err != nil {
			return nil, storeError(fmt.Sprintf("parse version %d", p.Version), err)
		}
		var reason string
		// A fresh SchemaCompatibility per pair: hamba caches verdicts by
		// the schemas' canonical fingerprints, which leave out defaults,
		// so a cached verdict for a pair differing only in a default
		// would be wrong; and its recursion guard makes a concurrent
		// check of the same pair answer "compatible" early.
		if backward {
			if err := avro.NewSchemaCompatibility().Compatible(next, old); err != nil {
				reason = fmt.Sprintf("the new schema cannot read data written with version %d: %v", p.Version, err)
			}
		}
		if reason == "" && forward {
			if err := avro.NewSchemaCompatibility().Compatible(old, next); err != nil {
				reason = fmt.Sprintf("version %d cannot read data written with the new schema: %v", p.Version, err)
			}
		}
		if reason != "" {
			return &incompatibility{level: level, version: p.Version, oldSchema: p.Schema.Schema, reason: reason}, nil
		}
	}
	return nil, nil
}

// parse parses an Avro schema with its references resolved: each
// referenced subject version is parsed first into the same cache, so the
// named types it defines are known when s names them. r.mu is held.
func (r *Registry) parse(s sr.Schema) (avro.Schema, error) {
	cache := &avro.SchemaCache{}
	if err := r.loadReferences(s.References, cache, map[string]bool{}); err != nil {
		return nil, err
	}
	return avro.ParseWithCache(s.Schema, "", cache)
}

func (r *Registry) loadReferences(refs []sr.SchemaReference, cache *avro.SchemaCache, seen map[string]bool) error {
	for _, ref := range refs {
		key := ref.Subject + "\x00" + strconv.Itoa(ref.Version)
		if seen[key] {
			continue // shared or cyclic references: each version is parsed once
		}
		seen[key] = true
		v, err := r.store.get(ref.Subject, ref.Version, false)
		if err != nil {
			return fmt.Errorf("reference %q to subject %q version %d: %w", ref.Name, ref.Subject, ref.Version, err)
		}
		if err := r.loadReferences(v.ss.References, cache, seen); err != nil {
			return err
		}
		if _, err := avro.ParseWithCache(v.ss.Schema.Schema, "", cache); err != nil {
			return fmt.Errorf("reference %q to subject %q version %d: %w", ref.Name, ref.Subject, ref.Version, err)
		}
	}
	return nil
}

// errIncompatible is Confluent's 409 for a registration that fails the
// subject's level.
func errIncompatible(subject string, inc *incompatibility) *apiError {
	return &apiError{409, sr.ErrIncompatibleSchema.Code, fmt.Sprintf(
		"Schema being registered is incompatible with an earlier schema for subject \"%s\", details: [%s]",
		subject, strings.Join(inc.details(), ", "))}
}
