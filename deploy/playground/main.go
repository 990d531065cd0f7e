// Command playground runs a one-process TiDB cluster for tidestream's tests and
// demo: TiDB's SQL layer on the unistore engine, PD's gRPC API on an embedded
// etcd, TiKV's KV API, and an emulated TiKV change-data (cdcpb) endpoint.
// See README.md in this directory.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	_ "github.com/go-sql-driver/mysql" // the synthetic source creates its tables over SQL
	"github.com/tidestream/tidestream/deploy/playground/cdcemu"
	"github.com/tidestream/tidestream/deploy/playground/checker"
	"github.com/tidestream/tidestream/deploy/playground/kvserver"
	"github.com/tidestream/tidestream/deploy/playground/pdserver"
	"github.com/tidestream/tidestream/deploy/playground/store"
	"github.com/tidestream/tidestream/deploy/playground/synth"
	"github.com/tidestream/tidestream/deploy/playground/tidb"
	"google.golang.org/grpc"
)

type options struct {
	host               string
	sqlPort            int
	statusPort         int
	pdPort             int
	kvPort             int
	dataDir            string
	resolvedTsInterval time.Duration
	checkInvariants    bool
	logLevel           string

	synthetic        bool
	synthTables      int
	synthRegions     int
	synthRate        float64
	synthTxnRows     int
	synthKeys        int64
	synthReportEvery time.Duration
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("playground", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: playground [flags]

A one-process TiDB cluster: TiDB (MySQL protocol) on unistore, PD's gRPC API on an
embedded etcd, TiKV's KV API and an emulated TiKV change-data endpoint (EventFeed,
EventFeedV2). Fault injection and change-data statistics are served on the status
port under /fault/ and /cdc/ (loopback clients only; GET /fault/ lists them).

Flags:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.host, "host", "127.0.0.1", "address every port listens on")
	fs.IntVar(&o.sqlPort, "sql-port", 4000, "TiDB MySQL protocol port")
	fs.IntVar(&o.statusPort, "status-port", 10080, "TiDB status HTTP port (also /fault/ and /cdc/)")
	fs.IntVar(&o.pdPort, "pd-port", 2379, "PD port: PD gRPC API and etcd client API")
	fs.IntVar(&o.kvPort, "kv-port", 20160, "TiKV port: KV gRPC API and the ChangeData service")
	fs.StringVar(&o.dataDir, "data-dir", "playground-data", "directory for all data; a restart with the same directory keeps tables and rows")
	fs.DurationVar(&o.resolvedTsInterval, "resolved-ts-interval", time.Second, "how often resolved ts is sent (TiKV's cdc.min-ts-interval)")
	fs.BoolVar(&o.checkInvariants, "check-invariants", false, "check every change-data stream against the protocol's invariants; violations are logged and served at /cdc/checker")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.BoolVar(&o.synthetic, "synthetic", false, "add synthetic tables whose row changes are generated straight into the change-data streams (benchmarks)")
	fs.IntVar(&o.synthTables, "synthetic-tables", 1, "number of synthetic tables (database "+synth.Database+", tables t0..tN-1)")
	fs.IntVar(&o.synthRegions, "synthetic-regions", 1, "regions per synthetic table")
	fs.Float64Var(&o.synthRate, "synthetic-rate", 100000, "target synthetic row changes per second across all tables")
	fs.IntVar(&o.synthTxnRows, "synthetic-txn-rows", 1, "rows per synthetic transaction")
	fs.Int64Var(&o.synthKeys, "synthetic-keys", 100000, "distinct ids per synthetic table; later changes update them")
	fs.DurationVar(&o.synthReportEvery, "synthetic-report", 10*time.Second, "how often the sustained synthetic rate is printed")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for name, p := range map[string]int{"--sql-port": o.sqlPort, "--status-port": o.statusPort, "--pd-port": o.pdPort, "--kv-port": o.kvPort} {
		if p <= 0 || p > 65535 {
			return nil, fmt.Errorf("%s %d: must be a port number in 1..65535", name, p)
		}
	}
	if o.dataDir == "" {
		return nil, errors.New("--data-dir must not be empty")
	}
	if o.resolvedTsInterval <= 0 {
		return nil, fmt.Errorf("--resolved-ts-interval %v: must be positive", o.resolvedTsInterval)
	}
	if o.synthetic {
		sc := o.synthConfig(nil)
		if err := sc.Validate(); err != nil {
			return nil, err
		}
	}
	return o, nil
}

func (o *options) synthConfig(log *slog.Logger) synth.Config {
	return synth.Config{
		Tables: o.synthTables, Regions: o.synthRegions, Rate: o.synthRate,
		TxnRows: o.synthTxnRows, Keys: o.synthKeys, Logger: log,
	}
}

func (o *options) addr(port int) string { return net.JoinHostPort(o.host, strconv.Itoa(port)) }

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

func newLogger(level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// run starts every part, prints the addresses, and stops them in reverse
// order when ctx ends.
func run(ctx context.Context, o *options, out io.Writer) (err error) {
	began := time.Now()
	log, err := newLogger(o.logLevel, os.Stderr)
	if err != nil {
		return err
	}
	dataDir, err := filepath.Abs(o.dataDir)
	if err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	var stack []func() error
	defer func() {
		for i := len(stack) - 1; i >= 0; i-- {
			if cerr := stack[i](); cerr != nil {
				log.Warn("shutdown", "err", cerr)
			}
		}
	}()

	var chk *checker.Checker
	ecfg := cdcemu.Config{ResolvedTsInterval: o.resolvedTsInterval, Logger: log.With("part", "cdc")}
	if o.checkInvariants {
		clog := log.With("part", "checker")
		chk = checker.New(checker.OnViolation(func(v checker.Violation) {
			clog.Error("change-data invariant violated", "violation", v.String())
		}))
		ecfg.Tap = chk
	}
	emu, err := cdcemu.New(ecfg)
	if err != nil {
		return err
	}
	st, err := store.Open(store.Config{
		Dir: filepath.Join(dataDir, "tikv"), StoreAddr: o.addr(o.kvPort), PDAddr: o.addr(o.pdPort),
		WrapWriter: emu.WrapWriter,
	})
	if err != nil {
		return err
	}
	stack = append(stack, st.Close)
	if err := emu.Attach(cdcemu.StoreBackend(st)); err != nil {
		return err
	}

	kv, err := kvserver.Start(kvserver.Config{
		Addr: o.addr(o.kvPort), KV: st.Server, Register: []func(*grpc.Server){emu.Register},
		Unary: []grpc.UnaryServerInterceptor{emu.UnaryInterceptor()}, Stream: []grpc.StreamServerInterceptor{emu.StreamInterceptor()},
		Logger: log.With("part", "kv"),
	})
	if err != nil {
		return err
	}
	stack = append(stack, kv.Close)

	pd, err := pdserver.Start(ctx, pdserver.Config{
		Dir: filepath.Join(dataDir, "pd"), ClientAddr: o.addr(o.pdPort), Store: st, Logger: log.With("part", "pd"),
	})
	if err != nil {
		return err
	}
	stack = append(stack, pd.Close)

	emuCtx, emuCancel := context.WithCancel(context.WithoutCancel(ctx))
	emuDone := make(chan struct{})
	go func() { defer close(emuDone); _ = emu.Run(emuCtx) }()
	stack = append(stack, func() error { emuCancel(); <-emuDone; return nil })

	api := &faultAPI{emu: emu, kv: kv, chk: chk, log: log.With("part", "fault")}
	db, err := tidb.Start(ctx, tidb.Config{
		Host: o.host, SQLPort: o.sqlPort, StatusPort: o.statusPort, PDAddr: pd.Addr(),
		Dir: filepath.Join(dataDir, "tidb"), Logger: log.With("part", "tidb"),
		ExtraStatusHandlers: map[string]http.Handler{"/fault/": api, "/cdc/": api},
	})
	if err != nil {
		return err
	}
	stack = append(stack, db.Close)
	if err := tuneTiDB(ctx, db.SQLAddr()); err != nil {
		return err
	}

	if o.synthetic {
		stopSynth, err := startSynthetic(ctx, o, db.SQLAddr(), emu, log.With("part", "synthetic"), out)
		if err != nil {
			return err
		}
		stack = append(stack, stopSynth)
	}

	fmt.Fprintf(out, "playground ready in %.1fs (data in %s)\n", time.Since(began).Seconds(), dataDir)
	fmt.Fprintf(out, "TiDB   mysql://root@%s  (status http://%s)\n", db.SQLAddr(), db.StatusAddr())
	fmt.Fprintf(out, "PD     %s\n", pd.Addr())
	fmt.Fprintf(out, "TiKV   %s\n", kv.Addr())
	<-ctx.Done()
	fmt.Fprintln(out, "playground stopping")
	if chk != nil {
		if cerr := chk.Err(); cerr != nil {
			return fmt.Errorf("change-data invariants violated: %w", cerr)
		}
	}
	return nil
}

// tuneTiDB sets what TiDB needs on this storage engine for the DDL users
// run. ADD INDEX by default backfills through ingest (local sort, then an
// import into TiKV) under the distributed task framework; unistore has no
// import API, so the job never finishes — the transactional backfill works.
// RECOVER TABLE and FLASHBACK check the GC safe point in mysql.tidb, which
// TiDB's GC worker writes; with no GC running here there is none, so one
// far in the past says every version is still there, which is true.
func tuneTiDB(ctx context.Context, sqlAddr string) error {
	db, err := sql.Open("mysql", "root@tcp("+sqlAddr+")/")
	if err != nil {
		return fmt.Errorf("tidb settings: %w", err)
	}
	defer db.Close()
	for _, q := range []string{
		"SET GLOBAL tidb_ddl_enable_fast_reorg = OFF",
		"SET GLOBAL tidb_enable_dist_task = OFF",
		"INSERT IGNORE INTO mysql.tidb (variable_name, variable_value, comment) VALUES " +
			"('tikv_gc_safe_point', '20000101-00:00:00.000 +0000', 'playground: no GC runs, every version is kept')",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("tidb settings: %s: %w", q, err)
		}
	}
	return nil
}

// startSynthetic creates the synthetic tables and generates until stopped;
// the stop function prints the overall sustained rate.
func startSynthetic(ctx context.Context, o *options, sqlAddr string, emu *cdcemu.Emulator, log *slog.Logger, out io.Writer) (func() error, error) {
	db, err := sql.Open("mysql", "root@tcp("+sqlAddr+")/")
	if err != nil {
		return nil, fmt.Errorf("synthetic: %w", err)
	}
	src, err := synth.Setup(ctx, db, emu, o.synthConfig(log))
	db.Close()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "synthetic tables %s.t0..t%d (ids %v), target %.0f rows/s\n", synth.Database, o.synthTables-1, src.TableIDs(), o.synthRate)
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	type result struct {
		rate float64
		err  error
	}
	done := make(chan result, 1)
	go func() {
		r, err := src.Run(sctx, o.synthReportEvery)
		done <- result{r, err}
	}()
	return func() error {
		cancel()
		r := <-done
		fmt.Fprintf(out, "synthetic source sustained %.0f rows/s (target %.0f), %d rows reached a subscriber\n",
			r.rate, o.synthRate, src.Delivered.Load())
		return r.err
	}, nil
}
