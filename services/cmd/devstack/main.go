// Command devstack runs a Kafka cluster (franz-go's kfake) and a Confluent
// Schema Registry (in memory, with compatibility checks) in one process on
// 127.0.0.1, for development and tests: `make devstack`.
//
// Once both listen it prints one line each to stdout, then serves until
// SIGINT or SIGTERM:
//
//	kafka 127.0.0.1:9092[,127.0.0.1:9093…]
//	registry http://127.0.0.1:8081
//
// Logs go to stderr, so scripts read the addresses from stdout alone.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/tidestream/tidestream/services/devstack"
	"github.com/tidestream/tidestream/services/runtime/logging"
	"github.com/tidestream/tidestream/services/runtime/signals"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run returns the exit code: 0 after a signal-driven stop, 2 for bad
// flags, 1 for anything else.
func run(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("devstack", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := devstack.DefaultConfig()
	cfg.AddFlags(fs)
	logOpts := logging.DefaultOptions()
	logOpts.Writer = stderr
	logOpts.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		// Under ContinueOnError pflag returns the error without printing it.
		fmt.Fprintln(stderr, "Error: "+err.Error())
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "Error: devstack takes no arguments, got %q\n", strings.Join(fs.Args(), " "))
		return 2
	}
	if err := logOpts.Validate(); err != nil {
		fmt.Fprintln(stderr, "Error: "+err.Error())
		return 2
	}
	logger, closeLog, err := logging.New(logOpts)
	if err != nil {
		fmt.Fprintln(stderr, "Error: "+err.Error())
		return 1
	}
	defer closeLog.Close()

	stack, err := devstack.New(cfg, logger)
	if err != nil {
		fmt.Fprintln(stderr, "Error: "+err.Error())
		return 2
	}
	ctx, stop := signals.NotifyContext(context.Background(), logger, func(os.Signal) { os.Exit(1) })
	defer stop()
	addrs, err := stack.Listen()
	if err != nil {
		fmt.Fprintln(stderr, "Error: "+err.Error())
		return 1
	}
	fmt.Fprintf(stdout, "kafka %s\n", strings.Join(addrs.Kafka, ","))
	fmt.Fprintf(stdout, "registry %s\n", addrs.Registry)
	if err := stack.Run(ctx); err != nil {
		fmt.Fprintln(stderr, "Error: "+err.Error())
		return 1
	}
	return 0
}
