package tablefilter

import (
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"
)

// parseRule parses one rule. skip is true for blank lines and comments. The
// returned error has only its Reason (and Err) filled in; Parse adds the
// index and text.
func parseRule(text string, fold bool) (r rule, skip bool, err *RuleError) {
	line := strings.Trim(text, " \t")
	if line == "" || line[0] == '#' {
		return rule{}, true, nil
	}
	switch line[0] {
	case '!':
		r.exclude = true
		line = line[1:]
	case '@':
		return rule{}, false, &RuleError{Reason: "importing rules from a file (@file) is only supported by the command line; list the rules inline"}
	}
	p := partParser{fold: fold}
	var rest string
	if r.schema, rest, err = p.part(line, "schema"); err != nil {
		return rule{}, false, err
	}
	if rest == "" {
		return rule{}, false, &RuleError{Reason: "missing '.' and table pattern (a rule is schema.table)"}
	}
	if rest[0] != '.' {
		return rule{}, false, &RuleError{Reason: fmt.Sprintf("unexpected %q after schema pattern (a rule is schema.table)", firstRune(rest))}
	}
	if r.table, rest, err = p.part(rest[1:], "table"); err != nil {
		return rule{}, false, err
	}
	if rest != "" {
		return rule{}, false, &RuleError{Reason: fmt.Sprintf("unexpected %q after table pattern (quote or escape special characters)", firstRune(rest))}
	}
	return r, false, nil
}

type partParser struct{ fold bool }

// part parses one schema or table pattern at the start of s and returns the
// unparsed remainder, which starts at the '.' separator (or is empty).
func (p partParser) part(s, what string) (matcher, string, *RuleError) {
	if s == "" || s[0] == '.' {
		return nil, "", &RuleError{Reason: "missing " + what + " pattern"}
	}
	switch s[0] {
	case '/':
		return p.regex(s, what)
	case '"', '`':
		return p.quoted(s, what)
	default:
		return p.wildcard(s, what)
	}
}

// regex parses `/re/`. A `\/` inside stays in the expression, where RE2 reads
// it as a literal slash.
func (p partParser) regex(s, what string) (matcher, string, *RuleError) {
	end := -1
	for i := 1; i < len(s); i++ {
		if s[i] == '\\' {
			i++
			continue
		}
		if s[i] == '/' {
			end = i
			break
		}
	}
	if end < 0 {
		return nil, "", &RuleError{Reason: "unclosed regular expression in " + what + " pattern (missing closing '/')"}
	}
	body := s[1:end]
	if body == "" {
		return nil, "", &RuleError{Reason: "empty regular expression in " + what + " pattern"}
	}
	if p.fold {
		body = "(?i)" + body
	}
	re, err := regexp.Compile(body)
	if err != nil {
		return nil, "", &RuleError{Reason: "invalid regular expression in " + what + " pattern: " + err.Error(), Err: err}
	}
	return pattern{re: re}, s[end+1:], nil
}

// quoted parses "name" or `name`; a doubled quote embeds the quote.
func (p partParser) quoted(s, what string) (matcher, string, *RuleError) {
	q := s[0]
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		if s[i] != q {
			b.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == q {
			b.WriteByte(q)
			i++
			continue
		}
		if b.Len() == 0 {
			return nil, "", &RuleError{Reason: "empty quoted " + what + " name"}
		}
		return literal{name: b.String(), fold: p.fold}, s[i+1:], nil
	}
	return nil, "", &RuleError{Reason: fmt.Sprintf("unclosed quoted %s name (missing closing %c)", what, q)}
}

// wildcard parses an unquoted pattern up to the next unescaped '.'. Only
// letters, digits, '_', '$' and non-ASCII characters may appear unescaped,
// as in TiDB, so that punctuation stays free for future syntax.
func (p partParser) wildcard(s, what string) (matcher, string, *RuleError) {
	var (
		lit       strings.Builder // the name, while the pattern is a literal
		re        strings.Builder // the RE2 translation
		isLiteral = true
		i         = 0
	)
	re.WriteString("(?s)^")
	if p.fold {
		re.WriteString("(?i)")
	}
loop:
	for i < len(s) {
		c := s[i]
		switch {
		case c == '.':
			break loop
		case c == '\\':
			if i+1 == len(s) {
				return nil, "", &RuleError{Reason: "trailing backslash in " + what + " pattern"}
			}
			if isASCIIAlnum(s[i+1]) {
				return nil, "", &RuleError{Reason: fmt.Sprintf(`cannot escape a letter or digit (\%c) in %s pattern`, s[i+1], what)}
			}
			_, n := utf8.DecodeRuneInString(s[i+1:])
			lit.WriteString(s[i+1 : i+1+n])
			re.WriteString(regexp.QuoteMeta(s[i+1 : i+1+n]))
			i += 1 + n
		case c == '*':
			isLiteral = false
			re.WriteString(".*")
			i++
		case c == '?':
			isLiteral = false
			re.WriteString(".")
			i++
		case c == '[':
			class, n, err := charClass(s[i:], what)
			if err != nil {
				return nil, "", err
			}
			isLiteral = false
			re.WriteString(class)
			i += n
		case c == '_' || c == '$' || isASCIIAlnum(c):
			lit.WriteByte(c)
			re.WriteString(regexp.QuoteMeta(string(c)))
			i++
		case c >= utf8.RuneSelf:
			_, n := utf8.DecodeRuneInString(s[i:])
			lit.WriteString(s[i : i+n])
			re.WriteString(regexp.QuoteMeta(s[i : i+n]))
			i += n
		default:
			return nil, "", &RuleError{Reason: fmt.Sprintf("unexpected character %q in %s pattern (escape it with \\ or quote the name)", c, what)}
		}
	}
	rest := s[i:]
	if isLiteral {
		return literal{name: lit.String(), fold: p.fold}, rest, nil
	}
	if re.String() == "(?s)^.*" || re.String() == "(?s)^(?i).*" {
		return anything{}, rest, nil
	}
	re.WriteString("$")
	compiled, err := regexp.Compile(re.String())
	if err != nil {
		// The translation only emits quoted literals and well-formed
		// classes, so this is a bug here, not in the rule; report it
		// rather than panic.
		return nil, "", &RuleError{Reason: "internal error compiling " + what + " pattern: " + err.Error(), Err: err}
	}
	return pattern{re: compiled}, rest, nil
}

// charClass translates a glob class such as `[a-z]` or `[!0-9_]` at the start
// of s into an RE2 class and returns how many bytes of s it used. Members are
// code points; `\` escapes a non-alphanumeric character (needed for `]`,
// `\` and a leading `!`); `[^` is a literal caret, as in fnmatch.
func charClass(s, what string) (string, int, *RuleError) {
	var b strings.Builder
	b.WriteByte('[')
	i := 1
	if i < len(s) && s[i] == '!' {
		b.WriteByte('^')
		i++
	}
	members := 0
	for {
		if i >= len(s) {
			return "", 0, &RuleError{Reason: "unclosed bracket in " + what + " pattern"}
		}
		if s[i] == ']' {
			break
		}
		lo, n, err := classChar(s[i:], what)
		if err != nil {
			return "", 0, err
		}
		i += n
		hi := lo
		if i+1 < len(s) && s[i] == '-' && s[i+1] != ']' {
			h, m, err := classChar(s[i+1:], what)
			if err != nil {
				return "", 0, err
			}
			if h < lo {
				return "", 0, &RuleError{Reason: fmt.Sprintf("invalid range %q-%q in %s pattern", lo, h, what)}
			}
			hi = h
			i += 1 + m
		}
		fmt.Fprintf(&b, `\x{%x}`, lo)
		if hi != lo {
			fmt.Fprintf(&b, `-\x{%x}`, hi)
		}
		members++
	}
	if members == 0 {
		return "", 0, &RuleError{Reason: "empty character class in " + what + " pattern"}
	}
	b.WriteByte(']')
	return b.String(), i + 1, nil
}

// classChar reads one (possibly escaped) member of a character class.
func classChar(s, what string) (rune, int, *RuleError) {
	if s[0] == '\\' {
		if len(s) < 2 {
			return 0, 0, &RuleError{Reason: "unclosed bracket in " + what + " pattern"}
		}
		if isASCIIAlnum(s[1]) {
			return 0, 0, &RuleError{Reason: fmt.Sprintf(`cannot escape a letter or digit (\%c) in %s pattern`, s[1], what)}
		}
		r, n := utf8.DecodeRuneInString(s[1:])
		return r, 1 + n, nil
	}
	r, n := utf8.DecodeRuneInString(s)
	return r, n, nil
}

func isASCIIAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

func firstRune(s string) string {
	_, n := utf8.DecodeRuneInString(s)
	return s[:n]
}
