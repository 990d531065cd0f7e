// Package etcdembed runs a single-member etcd inside a `cdc server` process,
// so one command gives a working cluster store with no external etcd. Its
// data lives under the process's data dir, so state survives a restart with
// the same --data-dir. It listens on loopback only: other processes that
// need to share state should use an external etcd (--etcd).
package etcdembed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Config configures the embedded etcd.
type Config struct {
	// Dir holds etcd's data; created if missing.
	Dir string
	// ClientAddr is host:port for clients; port 0 picks a free one.
	ClientAddr string
	// PeerAddr is host:port for the (unused) peer listener; port 0 picks.
	PeerAddr string
	// StartTimeout bounds how long Start waits for etcd to serve.
	StartTimeout time.Duration
	Logger       *slog.Logger
}

// DefaultConfig returns loopback addresses with ports chosen at start.
func DefaultConfig(dir string) Config {
	return Config{Dir: dir, ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0", StartTimeout: 30 * time.Second}
}

// Validate checks the config.
func (c *Config) Validate() error {
	if c.Dir == "" {
		return errors.New("etcdembed: Dir must be set")
	}
	for name, a := range map[string]string{"ClientAddr": c.ClientAddr, "PeerAddr": c.PeerAddr} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("etcdembed: %s %q: %w", name, a, err)
		}
	}
	if c.StartTimeout <= 0 {
		return errors.New("etcdembed: StartTimeout must be positive")
	}
	return nil
}

// Server is a running embedded etcd.
type Server struct {
	etcd      *embed.Etcd
	endpoints []string
}

// Start starts etcd and waits until it serves.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("etcdembed: create %s: %w", cfg.Dir, err)
	}
	// A port picked at run time can be taken by another process before etcd
	// binds it; pick again then. A port the caller chose is never changed.
	picked := strings.HasSuffix(cfg.ClientAddr, ":0") || strings.HasSuffix(cfg.PeerAddr, ":0")
	var e *embed.Etcd
	for attempt := 1; ; attempt++ {
		var err error
		e, err = startOnce(cfg)
		if err == nil {
			break
		}
		// etcd does not always wrap the listener's error, so match its text too.
		inUse := errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
		if !picked || attempt == 5 || !inUse {
			return nil, err
		}
	}
	t := time.NewTimer(cfg.StartTimeout)
	defer t.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcdembed: %w", err)
	case <-t.C:
		e.Close()
		return nil, fmt.Errorf("etcdembed: not ready within %s", cfg.StartTimeout)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	clientURL := e.Config().AdvertiseClientUrls[0]
	if cfg.Logger != nil {
		cfg.Logger.Info("embedded etcd ready", "component", "etcd", "client_url", clientURL.String(), "dir", cfg.Dir)
	}
	return &Server{etcd: e, endpoints: []string{clientURL.String()}}, nil
}

// startOnce resolves the addresses and starts etcd.
func startOnce(cfg Config) (*embed.Etcd, error) {
	clientURL, err := resolve(cfg.ClientAddr)
	if err != nil {
		return nil, err
	}
	peerURL, err := resolve(cfg.PeerAddr)
	if err != nil {
		return nil, err
	}
	ec := embed.NewConfig()
	ec.Name = "tidestream"
	ec.Dir = filepath.Clean(cfg.Dir)
	ec.ListenClientUrls = []url.URL{*clientURL}
	ec.AdvertiseClientUrls = []url.URL{*clientURL}
	ec.ListenPeerUrls = []url.URL{*peerURL}
	ec.AdvertisePeerUrls = []url.URL{*peerURL}
	ec.InitialCluster = ec.Name + "=" + peerURL.String()
	// Compact old revisions: producers rewrite every pipeline's progress
	// each interval, so without compaction the history grows without
	// bound (10k pipelines: ~20k revisions a second) until the backend
	// hits its quota and etcd refuses every write. Watchers that fall
	// behind a compaction re-list (store.WatchAssignments).
	ec.AutoCompactionMode = "periodic"
	ec.AutoCompactionRetention = "1m"
	// etcd logs through zap; keep it to errors so our JSON log stays ours.
	ec.Logger = "zap"
	ec.LogLevel = "error"
	ec.LogOutputs = []string{"stderr"}
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("etcdembed: start: %w", err)
	}
	return e, nil
}

// resolve turns host:port into a URL, choosing a free port for port 0.
// etcd's config needs concrete ports up front, so the free port is found by
// a throwaway listen; the short race with another process is accepted for a
// loopback-only, single-process store.
func resolve(addr string) (*url.URL, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("etcdembed: %q: %w", addr, err)
	}
	if port == "0" {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, fmt.Errorf("etcdembed: pick a port on %s: %w", host, err)
		}
		port = strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
		_ = l.Close()
	}
	return &url.URL{Scheme: "http", Host: net.JoinHostPort(host, port)}, nil
}

// Endpoints are the client URLs.
func (s *Server) Endpoints() []string { return s.endpoints }

// Err reports a fatal etcd error.
func (s *Server) Err() <-chan error { return s.etcd.Err() }

// Close stops etcd, flushing its state.
func (s *Server) Close() { s.etcd.Close() }
