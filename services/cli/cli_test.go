package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

func TestTargetAcceptsTiCDCServerForms(t *testing.T) {
	cases := []struct {
		in, want string
		tls      bool
		bad      bool
	}{
		{"", "127.0.0.1:8300", false, false},
		{"http://127.0.0.1:8300", "127.0.0.1:8300", false, false},
		{"https://cdc.example:8300", "cdc.example:8300", true, false},
		{"10.0.0.1:8300", "10.0.0.1:8300", false, false},
		{"ftp://x:1", "", false, true},
		{"http://", "", false, true},
	}
	for _, c := range cases {
		got, tls, err := target(c.in)
		if c.bad {
			require.Error(t, err, c.in)
			require.Contains(t, err.Error(), "--server")
			continue
		}
		require.NoError(t, err, c.in)
		require.Equal(t, c.want, got, c.in)
		require.Equal(t, c.tls, tls, c.in)
	}
}

func TestSummaryErrorIsNullWhileNormal(t *testing.T) {
	ts := uint64(time.Date(2024, 4, 20, 17, 0, 55, 645e6, time.UTC).UnixMilli()) << 18
	info := &pb.ChangefeedInfo{
		Id: "kafka-avro", Namespace: "default", CheckpointTs: ts,
		State: pb.ChangefeedState_CHANGEFEED_STATE_NORMAL,
		Error: &pb.RunningError{Code: "CDC:ErrX", Message: "old"},
	}
	s := renderSummary(info)
	require.Nil(t, s.Summary.Error, "TiCDC shows no error on a normal changefeed")
	require.Equal(t, "normal", s.Summary.State)
	require.Equal(t, ts, s.Summary.TSO)
	require.Equal(t, time.UnixMilli(int64(ts>>18)).Local().Format(checkpointFormat), s.Summary.Checkpoint)

	info.State = pb.ChangefeedState_CHANGEFEED_STATE_WARNING
	s = renderSummary(info)
	require.NotNil(t, s.Summary.Error)
	require.Equal(t, "CDC:ErrX", s.Summary.Error.Code)
}

func TestPrintJSONKeepsURIsReadable(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, printJSON(&b, map[string]string{"sink_uri": "kafka://h:9092/t?a=1&b=2"}, false))
	require.Equal(t, `{"sink_uri":"kafka://h:9092/t?a=1&b=2"}`+"\n", b.String())
	b.Reset()
	require.NoError(t, printJSON(&b, []int{1}, true))
	require.Equal(t, "[\n  1\n]\n", b.String())
}

func TestInfoJSONShape(t *testing.T) {
	info := &pb.ChangefeedInfo{
		Id: "cf", Namespace: "default", UpstreamId: 7, SinkUri: "kafka://h:9092/t?protocol=avro",
		StartTs: 10 << 18, CheckpointTs: 10 << 18, State: pb.ChangefeedState_CHANGEFEED_STATE_NORMAL,
		Config: &pb.ReplicaConfig{Sink: &pb.SinkConfig{Protocol: "avro"}},
	}
	out, err := renderInfo(info)
	require.NoError(t, err)
	var b bytes.Buffer
	require.NoError(t, printJSON(&b, out, false))
	line := b.String()
	require.Equal(t, 1, strings.Count(line, "\n"), "Info must be one line")
	for _, key := range []string{`"upstream_id":7`, `"namespace":"default"`, `"id":"cf"`, `"sink_uri":`, `"start_ts":2621440`, `"config":{`, `"protocol":"avro"`, `"state":"normal"`, `"checkpoint_ts":2621440`, `"checkpoint_time":`} {
		require.Contains(t, line, key)
	}
	require.NotContains(t, line, `"target_ts"`, "target_ts is omitted when 0, as in TiCDC")
}
