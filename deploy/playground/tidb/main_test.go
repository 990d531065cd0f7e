package tidb

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package on a goroutine left behind by our code. The
// ignored ones belong to libraries TiDB links, started for the life of the
// process and never stopped by any API: glog's and OpenCensus's daemons
// (from their init), and lumberjack's mill goroutine, which TiDB's
// process-wide logger starts on every log (re)initialisation. client-go's
// asynchronous pessimistic rollback is fire-and-forget: a statement that
// fails after taking pessimistic locks starts it, nothing waits for it, and
// on a slow machine it can still be in its region-lookup backoff (bounded
// by client-go, not by the caller) when the store has closed and the tests
// end. CI caught one such goroutine once.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreTopFunction("gopkg.in/natefinch/lumberjack%2ev2.(*Logger).millRun"),
		goleak.IgnoreAnyFunction("github.com/tikv/client-go/v2/txnkv/transaction.(*KVTxn).asyncPessimisticRollback.func1"),
	)
}
