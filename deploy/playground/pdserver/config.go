package pdserver

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"

	"github.com/tidestream/tidestream/deploy/playground/store"
)

// Config says where the PD server keeps its etcd data, where it listens and what it
// serves.
type Config struct {
	// Dir is the embedded etcd's data dir. It persists across restarts: service GC
	// safepoints, the GC safepoint and whatever tools keep in PD's etcd live there.
	Dir string
	// ClientAddr is the host:port of the PD port: etcd's client URL and the pdpb.PD
	// gRPC service, e.g. 127.0.0.1:2379. Port 0 is not allowed: the address is
	// advertised to clients (GetMembers) and recorded by etcd before it listens.
	ClientAddr string
	// PeerAddr is the host:port of etcd's peer URL. "" means 127.0.0.1 and a port
	// that is free when Start runs. A single-member etcd never dials it, so it may
	// change between restarts.
	PeerAddr string
	// Store is the playground's unistore store the PD API is served from. Required.
	Store *store.Store
	// Logger receives the server's and etcd's logs. nil discards them.
	Logger *slog.Logger
}

// Validate reports the first missing or bad field.
func (c Config) Validate() error {
	if c.Dir == "" {
		return errors.New("pdserver: Config.Dir is required")
	}
	if err := checkHostPort("ClientAddr", c.ClientAddr); err != nil {
		return err
	}
	if c.PeerAddr != "" {
		if err := checkHostPort("PeerAddr", c.PeerAddr); err != nil {
			return err
		}
		if c.PeerAddr == c.ClientAddr {
			return errors.New("pdserver: Config.PeerAddr must differ from ClientAddr")
		}
	}
	if c.Store == nil {
		return errors.New("pdserver: Config.Store is required")
	}
	return nil
}

func checkHostPort(field, addr string) error {
	if addr == "" {
		return fmt.Errorf("pdserver: Config.%s is required", field)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("pdserver: Config.%s %q: %w", field, addr, err)
	}
	if host == "" {
		return fmt.Errorf("pdserver: Config.%s %q: host is required", field, addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("pdserver: Config.%s %q: bad port", field, addr)
	}
	if n == 0 {
		return fmt.Errorf("pdserver: Config.%s %q: port 0 is not allowed", field, addr)
	}
	return nil
}
