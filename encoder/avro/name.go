package avro

import (
	"strings"
	"unicode/utf8"
)

// SanitizeName makes s a valid Avro name the way TiCDC (and Debezium) do:
// a first code point outside [A-Za-z_] becomes "_", keeping it after the
// underscore when it is a digit ("1a" -> "_1a"); any later code point
// outside [A-Za-z0-9_] becomes one "_". Two names can sanitise to the same
// result; callers that put names side by side must check for that.
func SanitizeName(s string) string {
	if isAvroName(s) {
		return s // the common case, no allocation
	}
	var b strings.Builder
	b.Grow(len(s) + 1)
	for i, r := range s {
		switch {
		case r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z':
			b.WriteRune(r)
		case r >= '0' && r <= '9':
			if i == 0 {
				b.WriteByte('_')
			}
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

func isAvroName(s string) bool {
	if s == "" {
		return true
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			return false
		}
		ok := c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9'
		if !ok {
			return false
		}
	}
	return true
}

// namespace is the record namespace: the sanitised changefeed namespace and
// database name joined by ".", or only the former when the database name
// sanitises to nothing.
func namespace(ns, schema string) string {
	s := SanitizeName(schema)
	if s == "" {
		return SanitizeName(ns)
	}
	return SanitizeName(ns) + "." + s
}

// allowed renders ENUM/SET members for connect.parameters.allowed: "," is
// escaped as "\," so a consumer can split on unescaped commas, and SQL quote
// escapes are undone (Debezium parity, spec §3.1).
func allowed(elems []string) string {
	var b strings.Builder
	for i, e := range elems {
		if i > 0 {
			b.WriteByte(',')
		}
		e = strings.ReplaceAll(e, ",", `\,`)
		e = strings.ReplaceAll(e, `\'`, `'`)
		e = strings.ReplaceAll(e, `''`, `'`)
		b.WriteString(e)
	}
	return b.String()
}
