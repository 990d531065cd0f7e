package pdserver

import (
	"context"
	"log/slog"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// zapToSlog returns a zap logger (what etcd logs through) that writes to lg.
//
// etcd logs several lines per second of normal operation at info level (raft
// ticks, compactions, "apply request took too long" at startup); in a playground
// that is noise, so zap's info becomes slog's debug. Warnings and errors keep their
// level.
func zapToSlog(lg *slog.Logger) *zap.Logger {
	return zap.New(&slogCore{lg: lg.With("component", "etcd")})
}

// entryLevel maps a zap entry to a slog level. A few etcd warnings that every
// playground start or stop produces, and that say nothing about its health, are
// logged at debug level.
func entryLevel(e zapcore.Entry) slog.Level {
	if e.Level == zapcore.WarnLevel {
		switch e.Message {
		case "Running http and grpc server on single port. This is not recommended for production.",
			"simple token is not cryptographically signed",
			"stopping insecure grpc server due to error",
			"stopped insecure grpc server due to error":
			return slog.LevelDebug
		}
	}
	return slogLevel(e.Level)
}

type slogCore struct {
	lg     *slog.Logger
	fields []zapcore.Field
}

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.InfoLevel:
		return slog.LevelDebug
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

func (c *slogCore) Enabled(l zapcore.Level) bool {
	return c.lg.Enabled(context.Background(), slogLevel(l))
}

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	return &slogCore{lg: c.lg, fields: append(append([]zapcore.Field(nil), c.fields...), fields...)}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.lg.Enabled(context.Background(), entryLevel(e)) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	attrs := make([]slog.Attr, 0, len(enc.Fields)+1)
	if e.LoggerName != "" {
		attrs = append(attrs, slog.String("logger", e.LoggerName))
	}
	for k, v := range enc.Fields {
		attrs = append(attrs, slog.Any(k, v))
	}
	c.lg.LogAttrs(context.Background(), entryLevel(e), e.Message, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }
