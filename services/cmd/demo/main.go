// Command demo is `make demo`: the seed guide run end to end on this
// machine (see services/demo). It exits 0 once the diff found every row of
// the TPC-C tables in their topics, 1 when it did not or something failed,
// and 2 for bad flags.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/tidestream/tidestream/services/demo"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("demo", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	exe, _ := os.Executable()
	cfg := demo.Config{BinDir: filepath.Dir(exe), Warehouses: 1, RunTime: 30 * time.Second, Progress: 5 * time.Second, Out: stdout}
	fs.StringVar(&cfg.BinDir, "bin", cfg.BinDir, "directory holding playground, devstack, cdc and go-tpc")
	fs.StringVar(&cfg.WorkDir, "work-dir", "", "keep every process's data and log here (default: a temporary directory, removed at the end)")
	fs.IntVar(&cfg.Warehouses, "warehouses", cfg.Warehouses, "go-tpc tpcc --warehouses")
	fs.DurationVar(&cfg.RunTime, "run-time", cfg.RunTime, "how long go-tpc tpcc run runs after prepare (0 skips it)")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep everything running after the verdict until Ctrl-C")
	fs.DurationVar(&cfg.Progress, "progress", cfg.Progress, "how often a progress line is printed")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "Error: "+err.Error())
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "Error: demo takes no arguments, got %q\n", fs.Args())
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "Error: "+err.Error())
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := demo.Run(ctx, cfg); err != nil {
		if cfg.Keep && ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return 0
		}
		fmt.Fprintln(stderr, "Error: "+err.Error())
		return 1
	}
	return 0
}
