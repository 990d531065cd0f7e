// Package etcdtest starts a real, in-process etcd for tests (STYLE lesson
// 15: fakes that speak the real protocol) and hands out clients.
package etcdtest

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tidestream/tidestream/coordinator/etcdembed"
)

// Cluster is a running embedded etcd.
type Cluster struct {
	srv *etcdembed.Server
}

// Start starts etcd in t.TempDir and stops it when the test ends.
func Start(t testing.TB) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := etcdembed.Start(ctx, etcdembed.DefaultConfig(t.TempDir()))
	if err != nil {
		t.Fatalf("start embedded etcd: %v", err)
	}
	t.Cleanup(srv.Close)
	return &Cluster{srv: srv}
}

// Endpoints are the client URLs.
func (c *Cluster) Endpoints() []string { return c.srv.Endpoints() }

// Client returns a new client, closed when the test ends.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.srv.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}
