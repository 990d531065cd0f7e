package tablefilter

import (
	"fmt"
	"regexp"
	"strings"
)

// Filter is a parsed list of table-filter rules. It is immutable and safe for
// concurrent use.
type Filter struct {
	rules []rule
}

type rule struct {
	schema, table matcher
	exclude       bool
}

// matcher matches one name part (a schema or a table name).
type matcher interface {
	match(name string) bool
}

// literal is a part without wildcards; comparing strings is much cheaper than
// running a regexp, and most real rules are literals or `*`.
type literal struct {
	name string
	fold bool
}

func (l literal) match(name string) bool {
	if l.fold {
		return strings.EqualFold(l.name, name)
	}
	return l.name == name
}

type anything struct{}

func (anything) match(string) bool { return true }

type pattern struct{ re *regexp.Regexp }

func (p pattern) match(name string) bool { return p.re.MatchString(name) }

// RuleError is a rule that cannot be parsed. Its message names the rule's
// index and text, e.g. `rules[1] "a.[b": unclosed bracket`.
type RuleError struct {
	Index  int
	Rule   string
	Reason string
	// Err is the underlying error, if any (a regexp compile error).
	Err error
}

func (e *RuleError) Error() string {
	return fmt.Sprintf("rules[%d] %q: %s", e.Index, e.Rule, e.Reason)
}

func (e *RuleError) Unwrap() error { return e.Err }

// Parse compiles rules. Empty rules and rules starting with `#` are skipped,
// as in TiDB's table filter. Matching is case-insensitive unless
// caseSensitive, following TiCDC's `case-sensitive` setting (default false).
//
// An empty list, or one with only comments, yields a filter that matches
// nothing: callers that want TiCDC's default must pass `*.*` themselves.
func Parse(rules []string, caseSensitive bool) (*Filter, error) {
	f := &Filter{rules: make([]rule, 0, len(rules))}
	for i, text := range rules {
		r, skip, err := parseRule(text, !caseSensitive)
		if err != nil {
			err.Index, err.Rule = i, text
			return nil, err
		}
		if !skip {
			f.rules = append(f.rules, r)
		}
	}
	return f, nil
}

// Match reports whether schema.table is selected. The last rule whose
// patterns match decides (an exclusion rejects, any other rule accepts); a
// table no rule matches is rejected, so a block list needs a leading `*.*`.
func (f *Filter) Match(schema, table string) bool {
	for i := len(f.rules) - 1; i >= 0; i-- {
		r := &f.rules[i]
		if r.schema.match(schema) && r.table.match(table) {
			return !r.exclude
		}
	}
	return false
}
