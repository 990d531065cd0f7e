// Command pdfake serves a fake PD (TSO, members, GC safepoints) on loopback
// for `make demo` and manual testing until deploy/playground provides a real
// TiDB cluster. It is a test tool: never point production at it.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/tidestream/tidestream/coordinator/upstream/pdfake"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:2379", "loopback host:port to serve PD's gRPC API on")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := pdfake.Start(ctx, pdfake.Options{ListenAddr: *addr, Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, "pdfake:", err)
		os.Exit(1)
	}
	fmt.Printf("pdfake serving PD at %s (cluster id %d)\n", srv.URL(), srv.ClusterID())
	<-ctx.Done()
	srv.Stop()
}
