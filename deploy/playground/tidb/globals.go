package tidb

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/pingcap/tidb/pkg/config"
	"github.com/pingcap/tidb/pkg/ddl"
	"github.com/pingcap/tidb/pkg/kv"
	"github.com/pingcap/tidb/pkg/session"
	"github.com/pingcap/tidb/pkg/sessionctx/variable"
	"github.com/pingcap/tidb/pkg/util/logutil"
	"github.com/tikv/client-go/v2/tikv"
)

// Files under Config.Dir.
const (
	logFile        = "tidb.log"
	slowLogFile    = "tidb-slow.log"
	tempDir        = "tmp"
	tempStorageDir = "tmp-storage"
)

// active guards TiDB's process globals: only one Server may own them at a time.
var active atomic.Bool

// tidbConfig is TiDB's configuration for cfg: tidb-server's defaults, except
// for where things live and what it logs.
func tidbConfig(cfg Config) (*config.Config, error) {
	tc := config.NewConfig()
	// See the package comment: TiKV defaults (async commit, 1PC) hinge on this.
	tc.Store = "tikv"
	tc.Path = cfg.PDAddr
	tc.Host = cfg.Host
	tc.AdvertiseAddress = cfg.Host
	tc.Port = uint(cfg.SQLPort)
	// No unix socket: its default path is shared by every TiDB on the machine.
	tc.Socket = ""
	tc.Status.ReportStatus = true
	// TiDB's own status server sits behind the front server (see status.go).
	tc.Status.StatusHost = "127.0.0.1"
	tc.Status.StatusPort = 0
	// CREATE TABLE splits a region per table, as on a real cluster; the
	// change-data emulator's consumers must see those splits.
	tc.SplitTable = true
	tc.TempDir = filepath.Join(cfg.Dir, tempDir)
	tc.TempStoragePath = filepath.Join(cfg.Dir, tempStorageDir)
	tc.Log.Level = "warn"
	tc.Log.File.Filename = filepath.Join(cfg.Dir, logFile)
	tc.Log.SlowQueryFile = filepath.Join(cfg.Dir, slowLogFile)
	if err := tc.Valid(); err != nil {
		return nil, fmt.Errorf("tidb: config: %w", err)
	}
	return tc, nil
}

// installGlobals makes tc TiDB's process configuration and sets the globals
// tidb-server's main derives from it.
func installGlobals(tc *config.Config) error {
	config.StoreGlobalConfig(tc)
	// Not logutil.InitLogger, which also replaces gRPC's global logger: that may
	// only happen before any gRPC activity in the process, and the store, PD and
	// KV ports are serving already. gRPC keeps its default logger (errors to
	// stderr).
	if err := logutil.ReplaceLogger(tc.Log.ToLogConfig()); err != nil {
		return fmt.Errorf("tidb: init pingcap/log logger: %w", err)
	}
	tikv.SetLogContextKey(logutil.CtxLogKey)

	lease, err := time.ParseDuration(tc.Lease)
	if err != nil || lease <= 0 {
		return fmt.Errorf("tidb: bad schema lease %q", tc.Lease)
	}
	session.SetSchemaLease(lease)
	statsLease, err := time.ParseDuration(tc.Performance.StatsLease)
	if err != nil {
		return fmt.Errorf("tidb: bad stats lease %q: %w", tc.Performance.StatsLease, err)
	}
	session.SetStatsLease(statsLease)

	var split uint32
	if tc.SplitTable {
		split = 1
	}
	atomic.StoreUint32(&ddl.EnableSplitTableRegion, split)

	// tidb-server leaves the transaction size to the session memory tracker
	// unless the limit was configured.
	if tc.Performance.TxnTotalSizeLimit == config.DefTxnTotalSizeLimit {
		kv.TxnTotalSizeLimit.Store(config.SuperLargeTxnSize)
	} else {
		kv.TxnTotalSizeLimit.Store(tc.Performance.TxnTotalSizeLimit)
	}
	kv.TxnEntrySizeLimit.Store(tc.Performance.TxnEntrySizeLimit)

	tikv.SetRegionCacheTTLSec(int64(tc.TiKVClient.RegionCacheTTL))
	liveness, err := time.ParseDuration(tc.TiKVClient.StoreLivenessTimeout)
	if err != nil || liveness < 0 {
		return errors.New("tidb: bad store-liveness-timeout " + tc.TiKVClient.StoreLivenessTimeout)
	}
	tikv.SetStoreLivenessTimeout(liveness)

	variable.SetSysVar(variable.Port, fmt.Sprint(tc.Port))
	variable.SetSysVar(variable.Socket, tc.Socket)
	variable.SetSysVar(variable.DataDir, tc.Path)
	variable.SetSysVar(variable.TiDBSlowQueryFile, tc.Log.SlowQueryFile)
	return nil
}
