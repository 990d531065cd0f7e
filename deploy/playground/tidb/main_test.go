package tidb

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package on a goroutine left behind by our code. The
// ignored ones belong to libraries TiDB links, started for the life of the
// process and never stopped by any API: glog's and OpenCensus's daemons
// (from their init), and lumberjack's mill goroutine, which TiDB's
// process-wide logger starts on every log (re)initialisation.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreTopFunction("gopkg.in/natefinch/lumberjack%2ev2.(*Logger).millRun"),
	)
}
