// Command cdc is tidestream's one binary: `cdc server` runs every role in
// one process, `cdc coordinator`, `cdc puller`, `cdc sorter`, `cdc encoder` and `cdc producer` run one, and
// `cdc cli changefeed …` / `cdc changefeed …` manage changefeeds with
// TiCDC's words, and `cdc consumer` / `cdc diff` are the reference consumer
// and the upstream/downstream comparison.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	pclog "github.com/pingcap/log"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tidestream/tidestream/coordinator/sinkuri"
	"github.com/tidestream/tidestream/services/cli"
	"github.com/tidestream/tidestream/services/node"
	"github.com/tidestream/tidestream/services/runtime/flagenv"
	"github.com/tidestream/tidestream/services/runtime/logging"
	"github.com/tidestream/tidestream/services/runtime/signals"
)

// version is set with -ldflags "-X main.version=…" by release builds.
var version = ""

func binaryVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "v0.1.0-dev"
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line and returns the exit code. Failures print
// one line to stderr: the reason, nothing else (no usage dump), so scripts
// and humans both read it.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRoot()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.Execute(); err != nil {
		msg := strings.ReplaceAll(err.Error(), "\n", " ")
		fmt.Fprintln(stderr, "Error: "+sinkuri.RedactText(msg))
		return 1
	}
	return 0
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "cdc",
		Short:         "tidestream: TiDB change data capture into Kafka as Confluent Avro",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       binaryVersion(),
		// Every flag can also come from TIDESTREAM_<FLAG_NAME>; explicit
		// flags win.
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return flagenv.Apply(cmd.Flags(), flagenv.DefaultConfig())
		},
	}
	root.AddCommand(
		roleCmd("server", "Run every role (and an embedded etcd unless --etcd is given) in one process", []string{node.RoleCoordinator, node.RolePuller, node.RoleSorter, node.RoleEncoder, node.RoleProducer}),
		roleCmd("coordinator", "Run the coordinator role: owner election, changefeeds, control API", []string{node.RoleCoordinator}),
		roleCmd("puller", "Run the puller role alone: TiKV change data for the pipelines routed here (needs --etcd)", []string{node.RolePuller}),
		roleCmd("sorter", "Run the sorter role alone: sorts the pipelines routed here, pulling from the puller each route names (needs --etcd)", []string{node.RoleSorter}),
		roleCmd("encoder", "Run the encoder role alone: decodes and Avro-encodes the pipelines routed here, pulling from the sorter each route names (needs --etcd)", []string{node.RoleEncoder}),
		roleCmd("producer", "Run the producer role alone: produces the pipelines assigned to this member to Kafka, pulling from the encoder each assignment names (needs --etcd)", []string{node.RoleProducer}),
		cliCmd(),
		cli.NewChangefeedCommand(),
		consumerCmd(),
		diffCmd(),
		versionCmd(),
	)
	return root
}

func cliCmd() *cobra.Command {
	c := &cobra.Command{Use: "cli", Short: "Manage tidestream (TiCDC-compatible commands)"}
	c.AddCommand(cli.NewChangefeedCommand(), cli.NewCaptureCommand(), cli.NewProcessorCommand())
	return c
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "tidestream", binaryVersion())
		},
	}
}

// roleCmd builds `cdc server` and the one-role commands.
func roleCmd(use, short string, roles []string) *cobra.Command {
	cfg := node.DefaultConfig()
	cfg.Roles = roles
	logOpts := logging.DefaultOptions()
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Last line of defence: whatever a component logs, secrets in
			// sink URIs and registry URLs are masked before they are
			// written.
			logOpts.Redact = sinkuri.RedactText
			log, closer, err := logging.New(logOpts)
			if err != nil {
				return err
			}
			defer closer.Close()
			// The PD client logs through pingcap/log's process-global zap
			// logger; route it into ours (warnings and up) so there is one
			// format, one destination and one redaction. Only main may
			// touch that global.
			core := logging.NewZapCore(logging.Component(log, "pd-client"), zapcore.WarnLevel)
			pclog.ReplaceGlobals(zap.New(core), &pclog.ZapProperties{Core: core, Level: zap.NewAtomicLevelAt(zapcore.WarnLevel)})
			cfg.Version = binaryVersion()
			if err := node.EnsureDataDir(cfg.DataDir); err != nil {
				return err
			}
			ctx, stop := signals.NotifyContext(cmd.Context(), log, func(os.Signal) { os.Exit(1) })
			defer stop()
			// Serve, not Start and Run: a lost etcd session (the lease
			// expired while the process was starved) restarts the process
			// in place, as TiCDC's capture does, instead of exiting.
			err = node.Serve(ctx, cfg, log)
			if err != nil && !errors.Is(err, context.Canceled) {
				log.Error("stopped with error", "err", err)
				return err
			}
			log.Info("stopped")
			return nil
		},
	}
	cfg.AddFlags(cmd.Flags())
	logOpts.AddFlags(cmd.Flags())
	return cmd
}
