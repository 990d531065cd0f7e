package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestZapCoreForwardsAboveLevelWithRedaction(t *testing.T) {
	var buf bytes.Buffer
	log, closer, err := New(Options{Level: "debug", Writer: &buf, Redact: func(s string) string {
		return strings.ReplaceAll(s, "hunter2", "******")
	}})
	require.NoError(t, err)
	defer closer.Close()
	z := zap.New(NewZapCore(Component(log, "pd-client"), zapcore.WarnLevel)).With(zap.String("pd", "http://u:hunter2@h"))
	z.Info("chatty") // below the bridge's level
	z.Warn("leader changed", zap.Int("attempt", 3))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 1, buf.String())
	var rec map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &rec))
	require.Equal(t, "WARN", rec["level"])
	require.Equal(t, "leader changed", rec["msg"])
	require.Equal(t, "pd-client", rec["component"])
	require.EqualValues(t, 3, rec["attempt"])
	require.Equal(t, "http://u:******@h", rec["pd"])
}
