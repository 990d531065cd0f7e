package logging

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// Options configures New. The zero value is not useful; start from
// DefaultOptions so that the level has a valid default.
type Options struct {
	// Level is the minimum level written: one of debug, info, warn, error
	// (case-insensitive). Default info.
	Level string
	// File, when not empty, is a path the log is appended to instead of
	// Writer. It is created with mode 0o600 because logs may still carry
	// data (row keys, table names) that operators consider sensitive.
	File string
	// Writer receives the log when File is empty. Nil means os.Stderr.
	Writer io.Writer
	// Redact is applied to the message and to every string value the record
	// carries (including nested groups, errors and fmt.Stringer values)
	// before the handler serialises it. Nil means no redaction; main must
	// always set it in production.
	Redact func(string) string
	// AddSource adds the caller's file:line to each record. Off by default:
	// it costs a runtime.Callers per record on hot paths.
	AddSource bool
}

// DefaultOptions returns Options that log at info level to stderr.
func DefaultOptions() Options {
	return Options{Level: "info"}
}

// AddFlags registers --log-level and --log-file on fs, bound to o.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Level, "log-level", o.Level, "minimum log level: debug, info, warn or error")
	fs.StringVar(&o.File, "log-file", o.File, "append logs to this file instead of stderr")
}

// Validate reports the first invalid field.
func (o Options) Validate() error {
	if _, err := ParseLevel(o.Level); err != nil {
		return fmt.Errorf("logging: Options.Level: %w", err)
	}
	return nil
}

// ParseLevel parses one of debug, info, warn, error (case-insensitive,
// surrounding spaces ignored). Unlike slog.Level.UnmarshalText it rejects
// offsets such as "info+2": operators type these by hand and a typo should
// fail loudly rather than silently select a level between the named ones.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown log level %q (allowed: debug, info, warn, error)", s)
}

// New builds a JSON logger from o. The returned io.Closer closes the log
// file when Options.File is set and is a no-op otherwise; main closes it
// last, after every component has returned.
func New(o Options) (*slog.Logger, io.Closer, error) {
	if err := o.Validate(); err != nil {
		return nil, nil, err
	}
	level, _ := ParseLevel(o.Level) // validated above

	var (
		w                = o.Writer
		closer io.Closer = nopCloser{}
	)
	if o.File != "" {
		f, err := os.OpenFile(o.File, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("logging: Options.File: %w", err)
		}
		w, closer = f, f
	}
	if w == nil {
		w = os.Stderr
	}

	var h slog.Handler = slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level:     level,
		AddSource: o.AddSource,
	})
	if o.Redact != nil {
		h = NewRedactingHandler(h, o.Redact)
	}
	return slog.New(h), closer, nil
}

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// OrDiscard returns l, or a logger that discards everything when l is nil.
// Constructors call it so that tests and tools may pass nil.
func OrDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return Discard()
	}
	return l
}

// Discard returns a logger that writes nothing.
func Discard() *slog.Logger {
	return slog.New(slog.DiscardHandler)
}

// Component returns l (or a discarding logger when l is nil) tagged with the
// component key. Each component calls it once in its constructor so every
// record it writes can be filtered by component.
func Component(l *slog.Logger, name string) *slog.Logger {
	return OrDiscard(l).With(ComponentKey, name)
}

// ComponentKey is the attribute key Component uses.
const ComponentKey = "component"
