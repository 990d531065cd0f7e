package replicaconfig

import (
	"slices"
	"strconv"
	"time"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
	"github.com/tidestream/tidestream/coordinator/sinkuri"
	"github.com/tidestream/tidestream/coordinator/tablefilter"
)

// walk is the shared state of one strict walk over a decoded TOML document.
// The walk goes on after an error so that every unknown key is reported at
// once; the first value error is kept.
type walk struct {
	unknown []string
	err     error
}

func (w *walk) fail(err error) {
	if w.err == nil {
		w.err = err
	}
}

// node is one TOML table. Every key read through it is marked used; finish
// reports the rest as unknown.
type node struct {
	w    *walk
	path string // dotted path with [N] indexes, "" for the root
	m    map[string]any
	used map[string]bool
}

func newNode(w *walk, path string, m map[string]any) *node {
	return &node{w: w, path: path, m: m, used: map[string]bool{}}
}

func (n *node) keyPath(key string) string {
	if n.path == "" {
		return key
	}
	return n.path + "." + key
}

// field is the error field for key, e.g. "config: sink.protocol".
func (n *node) field(key string) string { return "config: " + n.keyPath(key) }

func (n *node) get(key string) (any, bool) {
	v, ok := n.m[key]
	if ok {
		n.used[key] = true
	}
	return v, ok
}

// keys returns the keys not read yet, sorted, for sections whose keys are
// validated by a table kept elsewhere (sinkuri's parameter table).
func (n *node) keys() []string {
	var out []string
	for k := range n.m {
		if !n.used[k] {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func (n *node) finish() {
	for _, k := range n.keys() {
		n.w.unknown = append(n.w.unknown, n.keyPath(k))
	}
}

func (n *node) typeErr(key, want string, v any) {
	n.w.fail(cdcerr.Field(n.field(key), "must be %s, got %s", want, sinkuri.TOMLTypeName(v)))
}

func (n *node) str(key string) (string, bool) {
	v, ok := n.get(key)
	if !ok {
		return "", false
	}
	s, ok := v.(string)
	if !ok {
		n.typeErr(key, "a string", v)
	}
	return s, ok
}

func (n *node) boolean(key string) (bool, bool) {
	v, ok := n.get(key)
	if !ok {
		return false, false
	}
	b, ok := v.(bool)
	if !ok {
		n.typeErr(key, "a boolean", v)
	}
	return b, ok
}

func (n *node) integer(key string) (int64, bool) {
	v, ok := n.get(key)
	if !ok {
		return 0, false
	}
	i, ok := v.(int64)
	if !ok {
		n.typeErr(key, "an integer", v)
	}
	return i, ok
}

// duration reads a Go duration string such as "10m", as TiCDC's file does.
func (n *node) duration(key string) (time.Duration, bool) {
	s, ok := n.str(key)
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		n.w.fail(cdcerr.Field(n.field(key), "must be a duration such as \"10m\", got %q", s))
		return 0, false
	}
	return d, true
}

func (n *node) strs(key string) ([]string, bool) {
	v, ok := n.get(key)
	if !ok {
		return nil, false
	}
	list, ok := v.([]any)
	if !ok {
		if l, isStrs := v.([]string); isStrs {
			return l, true
		}
		n.typeErr(key, "an array of strings", v)
		return nil, false
	}
	out := make([]string, 0, len(list))
	for i, e := range list {
		s, ok := e.(string)
		if !ok {
			n.w.fail(cdcerr.Field(n.field(key)+"["+strconv.Itoa(i)+"]", "must be a string, got %s", sinkuri.TOMLTypeName(e)))
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

func (n *node) ints(key string) ([]int64, bool) {
	v, ok := n.get(key)
	if !ok {
		return nil, false
	}
	list, ok := v.([]any)
	if !ok {
		n.typeErr(key, "an array of integers", v)
		return nil, false
	}
	out := make([]int64, 0, len(list))
	for i, e := range list {
		x, ok := e.(int64)
		if !ok {
			n.w.fail(cdcerr.Field(n.field(key)+"["+strconv.Itoa(i)+"]", "must be an integer, got %s", sinkuri.TOMLTypeName(e)))
			return nil, false
		}
		out = append(out, x)
	}
	return out, true
}

// table returns the sub-table key, or nil when absent.
func (n *node) table(key string) *node {
	v, ok := n.get(key)
	if !ok {
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		n.typeErr(key, "a table", v)
		return nil
	}
	return newNode(n.w, n.keyPath(key), m)
}

// tables returns an array of tables, written either inline
// (`key = [{…}, {…}]`) or as `[[key]]` sections; decoders represent the two
// differently.
func (n *node) tables(key string) []*node {
	v, ok := n.get(key)
	if !ok {
		return nil
	}
	var maps []map[string]any
	switch list := v.(type) {
	case []map[string]any:
		maps = list
	case []any:
		for i, e := range list {
			m, ok := e.(map[string]any)
			if !ok {
				n.w.fail(cdcerr.Field(n.field(key)+"["+strconv.Itoa(i)+"]", "must be a table, got %s", sinkuri.TOMLTypeName(e)))
				return nil
			}
			maps = append(maps, m)
		}
	default:
		n.typeErr(key, "an array of tables", v)
		return nil
	}
	out := make([]*node, len(maps))
	for i, m := range maps {
		out[i] = newNode(n.w, n.keyPath(key)+"["+strconv.Itoa(i)+"]", m)
	}
	return out
}

// matcher reads a rule's required `matcher` list and checks it parses as
// table-filter patterns.
func (n *node) matcher(caseSensitive bool) []string {
	m, _ := n.strs("matcher")
	if len(m) == 0 {
		n.w.fail(cdcerr.Field(n.field("matcher"), "is required and must not be empty"))
	} else if _, err := tablefilter.Parse(m, caseSensitive); err != nil {
		n.w.fail(filterError(n.field("matcher"), err))
	}
	return m
}
