package tidb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

// statusFront serves the status port: the caller's extra handlers, and TiDB's
// status API (which cannot take extra routes) behind a reverse proxy.
type statusFront struct {
	lis       net.Listener
	srv       *http.Server
	transport *http.Transport // the proxy's own, so that close drops its connections
	done      chan struct{}
}

// listenStatus binds the status port early, so that a taken port fails Start
// before TiDB is bootstrapped.
func listenStatus(addr string) (net.Listener, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("tidb: listen on status address %s: %w", addr, err)
	}
	return lis, nil
}

// serveStatus serves lis with extra in front of the TiDB status server at
// tidbStatus (host:port).
func serveStatus(lis net.Listener, tidbStatus string, extra map[string]http.Handler, log *slog.Logger) *statusFront {
	mux := http.NewServeMux()
	for pattern, h := range extra {
		mux.Handle(pattern, h)
	}
	transport := &http.Transport{
		Proxy:           nil, // loopback: never through an environment proxy
		MaxIdleConns:    8,
		IdleConnTimeout: 30 * time.Second,
	}
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: tidbStatus})
	proxy.Transport = transport
	proxy.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	mux.Handle("/", proxy)
	f := &statusFront{
		lis:       lis,
		transport: transport,
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		done: make(chan struct{}),
	}
	go func() {
		defer close(f.done)
		if err := f.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("status server stopped", "err", err)
		}
	}()
	return f
}

// close stops the status port, giving requests in flight a moment.
func (f *statusFront) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := f.srv.Shutdown(ctx)
	if err != nil {
		err = f.srv.Close()
	}
	<-f.done
	f.transport.CloseIdleConnections()
	if err != nil {
		return fmt.Errorf("tidb: close status server: %w", err)
	}
	return nil
}
