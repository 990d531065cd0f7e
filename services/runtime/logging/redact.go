package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
)

// NewRedactingHandler returns a handler that passes every record to next
// after applying redact to the message and to every value that will be
// rendered as text: string values, errors, fmt.Stringer values, the
// resolved form of slog.LogValuer values, and any other value in its JSON
// form. Groups are walked recursively, and attributes added through
// WithAttrs are redacted once, when they are added. Keys and group names are
// not redacted: they are code constants, never user input.
//
// Numbers, booleans, times and durations pass through untouched: the
// redactor targets credentials, which never take those shapes. A []byte is
// JSON-encoded as base64 before redaction and so is opaque to it; log
// credentials as strings, never as bytes.
//
// If redact is nil, next is returned unchanged.
func NewRedactingHandler(next slog.Handler, redact func(string) string) slog.Handler {
	if redact == nil {
		return next
	}
	return &redactingHandler{next: next, redact: redact}
}

// redactingHandler implements slog.Handler.
type redactingHandler struct {
	next   slog.Handler
	redact func(string) string
}

func (h *redactingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *redactingHandler) Handle(ctx context.Context, r slog.Record) error {
	// A fresh record rather than mutating r: the caller's record may share
	// its attribute backing array with clones held elsewhere.
	out := slog.NewRecord(r.Time, r.Level, h.redact(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h *redactingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		red[i] = h.attr(a)
	}
	return &redactingHandler{next: h.next.WithAttrs(red), redact: h.redact}
}

func (h *redactingHandler) WithGroup(name string) slog.Handler {
	return &redactingHandler{next: h.next.WithGroup(name), redact: h.redact}
}

func (h *redactingHandler) attr(a slog.Attr) slog.Attr {
	return slog.Attr{Key: a.Key, Value: h.value(a.Value)}
}

func (h *redactingHandler) value(v slog.Value) slog.Value {
	// Resolve first: a LogValuer may return a string (or a group holding
	// one) that would otherwise be expanded by the next handler, after us.
	v = v.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.StringValue(h.redact(v.String()))
	case slog.KindGroup:
		group := v.Group()
		red := make([]slog.Attr, len(group))
		for i, a := range group {
			red[i] = h.attr(a)
		}
		return slog.GroupValue(red...)
	case slog.KindAny:
		return h.anyValue(v.Any())
	default:
		return v
	}
}

func (h *redactingHandler) anyValue(x any) slog.Value {
	switch x := x.(type) {
	case nil:
		return slog.AnyValue(nil)
	case error, fmt.Stringer:
		// fmt.Sprint rather than calling Error/String directly: it turns a
		// nil pointer receiver or a panicking method into text instead of
		// crashing the goroutine that logs.
		return slog.StringValue(h.redact(fmt.Sprint(x)))
	}
	// Anything else (structs, maps, slices) would be JSON-encoded by the
	// next handler, where a credential in a field would escape us. Encode it
	// here, redact the text, and hand the result on as raw JSON. HTML
	// escaping is off so that '<', '>' and '&' in a secret stay literal and
	// the redactor can still match them.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(x); err != nil {
		return slog.StringValue(h.redact(fmt.Sprintf("%+v", x)))
	}
	red := h.redact(string(bytes.TrimRight(buf.Bytes(), "\n")))
	if !json.Valid([]byte(red)) {
		// The redactor broke the JSON structure; a string is still safe.
		return slog.StringValue(red)
	}
	return slog.AnyValue(json.RawMessage(red))
}
