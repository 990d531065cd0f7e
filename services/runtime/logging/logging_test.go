package logging_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/tidestream/tidestream/services/runtime/logging"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const secret = "hunter2"

// fakeRedact stands in for main's URI-aware redactor.
func fakeRedact(s string) string { return strings.ReplaceAll(s, secret, "***") }

type stringer struct{ s string }

func (s stringer) String() string { return s.s }

type valuer struct{ s string }

func (v valuer) LogValue() slog.Value { return slog.StringValue(v.s) }

type sinkConfig struct {
	URI      string `json:"uri"`
	Replicas int    `json:"replicas"`
}

func newTestLogger(t *testing.T) (*slog.Logger, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	o := logging.DefaultOptions()
	o.Level = "debug"
	o.Writer = &buf
	o.Redact = fakeRedact
	l, c, err := logging.New(o)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return l, &buf
}

func decode(t *testing.T, buf *bytes.Buffer) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &m), buf.String())
	return m
}

func TestRedaction(t *testing.T) {
	uri := "kafka://user:" + secret + "@broker:9092/t"
	var nilStringer *stringerPtr

	cases := []struct {
		name string
		log  func(l *slog.Logger)
	}{
		{"message", func(l *slog.Logger) { l.Info("connecting to " + uri) }},
		{"string attr", func(l *slog.Logger) { l.Info("x", "sink", uri) }},
		{"group", func(l *slog.Logger) {
			l.Info("x", slog.Group("sink", slog.String("uri", uri), slog.Group("inner", "u", uri)))
		}},
		{"error", func(l *slog.Logger) { l.Error("x", "err", fmt.Errorf("dial %s: %w", uri, errors.New("refused"))) }},
		{"stringer", func(l *slog.Logger) { l.Info("x", "sink", stringer{uri}) }},
		{"log valuer", func(l *slog.Logger) { l.Info("x", "sink", valuer{uri}) }},
		{"struct", func(l *slog.Logger) { l.Info("x", "cfg", sinkConfig{URI: uri, Replicas: 3}) }},
		{"with attrs", func(l *slog.Logger) { l.With("sink", uri).Info("x") }},
		{"with group", func(l *slog.Logger) { l.WithGroup("g").With("sink", uri).Info("x", "err", errors.New(uri)) }},
		{"nil stringer", func(l *slog.Logger) { l.Info("x", "s", nilStringer, "u", uri) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, buf := newTestLogger(t)
			tc.log(l)
			require.NotContains(t, buf.String(), secret)
			require.Contains(t, buf.String(), "user:***@broker")
			decode(t, buf) // still one valid JSON object
		})
	}
}

type stringerPtr struct{ s string }

func (s *stringerPtr) String() string { return s.s }

func TestRedactionKeepsStructure(t *testing.T) {
	l, buf := newTestLogger(t)
	l.Info("x", "cfg", sinkConfig{URI: "kafka://u:" + secret + "@h", Replicas: 3}, "n", 7)
	m := decode(t, buf)
	require.Equal(t, map[string]any{"uri": "kafka://u:***@h", "replicas": float64(3)}, m["cfg"])
	require.Equal(t, float64(7), m["n"])
}

func TestComponentAndDiscard(t *testing.T) {
	l, buf := newTestLogger(t)
	logging.Component(l, "puller").Info("started")
	require.Equal(t, "puller", decode(t, buf)["component"])

	// A nil logger must be usable: constructors pass whatever they are given.
	logging.Component(nil, "sorter").Info("dropped")
	logging.OrDiscard(nil).Error("dropped")
}

func TestParseLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{
		"debug": slog.LevelDebug, "INFO": slog.LevelInfo, " warn ": slog.LevelWarn,
		"warning": slog.LevelWarn, "error": slog.LevelError,
	} {
		got, err := logging.ParseLevel(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "trace", "info+2", "fatal"} {
		_, err := logging.ParseLevel(in)
		require.ErrorContains(t, err, "allowed: debug, info, warn, error", in)
	}
}

func TestLevelFilters(t *testing.T) {
	var buf bytes.Buffer
	o := logging.DefaultOptions()
	o.Level = "warn"
	o.Writer = &buf
	l, _, err := logging.New(o)
	require.NoError(t, err)
	l.Info("hidden")
	require.Empty(t, buf.String())
	l.Warn("shown")
	require.Equal(t, "WARN", decode(t, &buf)["level"])
}

func TestBadLevelNamesField(t *testing.T) {
	o := logging.DefaultOptions()
	o.Level = "loud"
	_, _, err := logging.New(o)
	require.ErrorContains(t, err, "Options.Level")
	require.ErrorContains(t, err, `"loud"`)
}

func TestFlagsAndFileAppend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cdc.log")
	require.NoError(t, os.WriteFile(path, []byte("previous\n"), 0o600))

	o := logging.DefaultOptions()
	fs := pflag.NewFlagSet("cdc", pflag.ContinueOnError)
	o.AddFlags(fs)
	require.NoError(t, fs.Parse([]string{"--log-level=error", "--log-file=" + path}))
	o.Redact = fakeRedact

	l, c, err := logging.New(o)
	require.NoError(t, err)
	l.Warn("filtered")
	l.Error("boom", "pw", secret)
	require.NoError(t, c.Close())

	data, err := os.ReadFile(path)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	require.Len(t, lines, 2)
	require.Equal(t, "previous", lines[0])
	require.Contains(t, lines[1], `"pw":"***"`)
}

func TestNilRedactIsPassThrough(t *testing.T) {
	h := slog.NewJSONHandler(&bytes.Buffer{}, nil)
	require.Same(t, h, logging.NewRedactingHandler(h, nil))
}
