package logging

import (
	"context"
	"log/slog"

	"go.uber.org/zap/zapcore"
)

// NewZapCore returns a zapcore.Core that writes into logger, for libraries
// that log through zap (the PD client, through pingcap/log's global
// logger). Their records then share our JSON format, destination and secret
// redaction instead of interleaving a second format on stderr. Entries
// below minLevel are dropped: those libraries are chatty at info.
func NewZapCore(logger *slog.Logger, minLevel zapcore.Level) zapcore.Core {
	return &zapCore{log: OrDiscard(logger), min: minLevel}
}

type zapCore struct {
	log    *slog.Logger
	min    zapcore.Level
	fields []zapcore.Field
}

func (c *zapCore) Enabled(l zapcore.Level) bool { return l >= c.min }

func (c *zapCore) With(fields []zapcore.Field) zapcore.Core {
	return &zapCore{log: c.log, min: c.min, fields: append(append([]zapcore.Field(nil), c.fields...), fields...)}
}

func (c *zapCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *zapCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
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
	c.log.LogAttrs(context.Background(), zapToSlog(e.Level), e.Message, attrs...)
	return nil
}

func (c *zapCore) Sync() error { return nil }

func zapToSlog(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}
