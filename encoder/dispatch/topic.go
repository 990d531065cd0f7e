package dispatch

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// maxTopicLen is Kafka's limit on a topic name (its Topic.MAX_NAME_LENGTH).
const maxTopicLen = 249

const (
	schemaPlaceholder = "{schema}"
	tablePlaceholder  = "{table}"
)

var (
	// literalTopicRE is a name usable as it stands: TiCDC treats any rule
	// topic matching it as a static topic, without placeholder checks.
	literalTopicRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	// exprTopicRE is TiCDC's general expression grammar
	// [prefix]{schema}[middle][{table}][suffix].
	exprTopicRE = regexp.MustCompile(`^[A-Za-z0-9._-]*(\{schema\})?([A-Za-z0-9._-]*\{table\})?[A-Za-z0-9._-]*$`)
	// avroTopicRE is the stricter form TiCDC demands for Avro: both
	// placeholders, so that each topic can hold only one table.
	avroTopicRE = regexp.MustCompile(`^[A-Za-z0-9._-]*\{schema\}[A-Za-z0-9._-]*\{table\}[A-Za-z0-9._-]*$`)
)

// Topic is a parsed topic rule: a literal topic or an expression with
// {schema} and/or {table} placeholders.
type Topic struct {
	expr      string
	hasSchema bool
	hasTable  bool
}

// ParseTopic validates a rule's topic the way TiCDC's Kafka sink does: a
// literal name of [A-Za-z0-9._-], or an expression
// [prefix]{schema}[middle][{table}][suffix] whose fixed parts use the same
// characters. The empty string is not a topic (a rule without one goes to the
// default topic); ParseTopic rejects it.
func ParseTopic(expr string) (Topic, error) {
	if expr == "" {
		return Topic{}, fmt.Errorf("%w: topic expression is empty", ErrInvalidTopic)
	}
	if literalTopicRE.MatchString(expr) {
		if err := ValidateTopicName(expr); err != nil {
			return Topic{}, err
		}
		return Topic{expr: expr}, nil
	}
	if !exprTopicRE.MatchString(expr) {
		return Topic{}, fmt.Errorf("%w: %q: want a literal topic of [A-Za-z0-9._-] or "+
			"[prefix]{schema}[middle][{table}][suffix] with lowercase placeholders and the same characters around them",
			ErrInvalidTopic, expr)
	}
	return Topic{
		expr:      expr,
		hasSchema: strings.Contains(expr, schemaPlaceholder),
		hasTable:  strings.Contains(expr, tablePlaceholder),
	}, nil
}

// String returns the rule text.
func (t Topic) String() string { return t.expr }

// Literal reports whether the topic has no placeholder: every table the rule
// matches goes to the same topic.
func (t Topic) Literal() bool { return !t.hasSchema && !t.hasTable }

// PerTable reports whether the expression names both schema and table, the
// form Avro requires for a rule that can match several tables.
func (t Topic) PerTable() bool { return t.hasSchema && t.hasTable }

// ValidateAvro applies TiCDC's Avro rule for expressions: one that is not a
// literal must contain both {schema} and {table}. (TiCDC stops there; the
// Router also rejects literal topics shared by several tables.)
func (t Topic) ValidateAvro() error {
	if t.Literal() || avroTopicRE.MatchString(t.expr) {
		return nil
	}
	return fmt.Errorf("%w: %q: a topic rule for Avro must contain {schema} and {table}", ErrInvalidTopic, t.expr)
}

// Substitute returns the topic of table schema.table. Characters of the
// names outside [A-Za-z0-9._-] become '_' one per code point (a byte that is
// not valid UTF-8 counts as one), case is kept, the result is cut to 249
// bytes, and "." / ".." — names Kafka refuses — become "_" / "__".
func (t Topic) Substitute(schema, table string) string {
	if t.Literal() {
		return t.expr
	}
	name := strings.ReplaceAll(t.expr, schemaPlaceholder, sanitizeName(schema))
	name = strings.ReplaceAll(name, tablePlaceholder, sanitizeName(table))
	switch {
	case len(name) > maxTopicLen:
		// Only ASCII is left after sanitising, so a byte cut is a
		// character cut.
		return name[:maxTopicLen]
	case name == ".":
		return "_"
	case name == "..":
		return "__"
	}
	return name
}

func sanitizeName(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		if r < 0x80 && isTopicByte(byte(r)) {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

func isTopicByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// ValidateTopicName checks a concrete topic name against Kafka's rules:
// 1–249 characters of [A-Za-z0-9._-], and not "." or "..".
func ValidateTopicName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: topic name is empty", ErrInvalidTopic)
	case len(name) > maxTopicLen:
		return fmt.Errorf("%w: topic name %.40q… is %d bytes, Kafka allows %d", ErrInvalidTopic, name, len(name), maxTopicLen)
	case name == "." || name == "..":
		return fmt.Errorf("%w: topic name %q is reserved by Kafka", ErrInvalidTopic, name)
	case !literalTopicRE.MatchString(name):
		return fmt.Errorf("%w: topic name %q: only [A-Za-z0-9._-] are allowed", ErrInvalidTopic, name)
	}
	return nil
}

// DefaultTopic returns the default topic of a Kafka sink URI: its path
// without the surrounding slashes, which TiCDC requires even for Avro (it
// is created and validated though nothing is written to it).
func DefaultTopic(sinkURI string) (string, error) {
	u, err := url.Parse(sinkURI)
	if err != nil {
		// url.Parse's error quotes the whole URI, which may carry SASL
		// credentials in its query: do not pass it on.
		return "", fmt.Errorf("%w: sink URI does not parse", ErrInvalidTopic)
	}
	topic := strings.Trim(u.Path, "/")
	if topic == "" {
		return "", fmt.Errorf("%w: no topic is specified in the sink URI (kafka://host:port/<topic>?…)", ErrInvalidTopic)
	}
	if err := ValidateTopicName(topic); err != nil {
		return "", fmt.Errorf("default topic of the sink URI: %w", err)
	}
	return topic, nil
}
