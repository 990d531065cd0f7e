package server_test

import (
	"context"
	"os"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/tidestream/tidestream/services/runtime/flagenv"
	"github.com/tidestream/tidestream/services/runtime/health"
	"github.com/tidestream/tidestream/services/runtime/logging"
	"github.com/tidestream/tidestream/services/runtime/server"
	"github.com/tidestream/tidestream/services/runtime/signals"
	"github.com/tidestream/tidestream/services/runtime/telemetry"
)

// Example shows how main wires the runtime around one role. It is compiled,
// not run: it would bind real ports and wait for a signal.
func Example() {
	logOpts, httpCfg, grpcCfg := logging.DefaultOptions(), server.DefaultHTTPConfig(), server.DefaultGRPCConfig()
	fs := pflag.NewFlagSet("cdc", pflag.ExitOnError)
	logOpts.AddFlags(fs)
	httpCfg.AddFlags(fs)
	grpcCfg.AddFlags(fs)
	_ = fs.Parse(os.Args[1:])
	if err := flagenv.Apply(fs, flagenv.DefaultConfig()); err != nil {
		os.Exit(2)
	}

	logOpts.Redact = func(s string) string { return s } // main injects the real URI redactor
	logger, logFile, err := logging.New(logOpts)
	if err != nil {
		os.Exit(2)
	}
	defer logFile.Close()

	ctx, stop := signals.NotifyContext(context.Background(), logger, func(os.Signal) { os.Exit(1) })
	defer stop()

	tel, _ := telemetry.New(telemetry.DefaultConfig(), logger)
	checker := health.New(logger, "tidestream.v1.PullerService")
	// Stop being advertised the moment the first signal arrives, before
	// any component starts closing.
	context.AfterFunc(ctx, checker.Drain)

	status, _ := server.NewHTTPServer(httpCfg, server.NewStatusMux(server.StatusRoutes{
		Metrics: tel.Handler, Health: checker, Pprof: httpCfg.EnablePprof,
	}), logger)
	grpcSrv, _ := server.NewGRPCServer(grpcCfg, checker, logger)
	// pullerpb.RegisterPullerServiceServer(grpcSrv, puller) goes here.

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return status.Run(gctx) })
	g.Go(func() error { return grpcSrv.Run(gctx) })
	g.Go(func() error {
		// The role's Run: once its dependencies are up it calls
		// checker.SetReady(), then works until gctx ends.
		checker.SetReady()
		<-gctx.Done()
		return nil
	})
	err = g.Wait()
	_ = tel.Shutdown(context.WithoutCancel(ctx))
	if err != nil {
		logger.Error("cdc stopped", "err", err)
	}
}
