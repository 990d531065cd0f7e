// Package tikvconn opens what every puller component needs to talk to an
// upstream TiKV cluster: a PD client whose lifetime is its own (not the
// caller's start-up context) and a client-go KVStore over it, with TiDB's
// API v1 key codec.
package tikvconn

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tikv/client-go/v2/config"
	"github.com/tikv/client-go/v2/tikv"
	pd "github.com/tikv/pd/client"
	"github.com/tikv/pd/client/opt"
	"github.com/tikv/pd/client/pkg/caller"
)

// Options says where PD is and how to reach it.
type Options struct {
	Addrs []string
	// Component names the caller in PD's logs and the KVStore's uuid.
	Component string
	Security  config.Security
	// PDTimeout bounds each PD call; 0 keeps the pd client's default.
	PDTimeout time.Duration
}

// ErrTLS marks a TLS configuration that cannot be loaded: the caller's
// mistake, found before any connection is tried.
var ErrTLS = errors.New("bad TLS configuration")

// Conn is an open connection to one upstream cluster.
type Conn struct {
	// PD is the raw pd client: its regions carry memcomparable keys, as
	// PD and EventFeed see them.
	PD pd.Client
	// KV reads and resolves locks with raw TiDB keys.
	KV        *tikv.KVStore
	ClusterID uint64

	cancelPD context.CancelFunc
}

// Open connects. ctx bounds only the connection: the pd client lives until
// Close, because the context it is created with is its whole lifetime.
func Open(ctx context.Context, o Options) (*Conn, error) {
	if len(o.Addrs) == 0 {
		return nil, errors.New("no PD address")
	}
	tlsConfig, err := o.Security.ToTLSConfig()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTLS, err)
	}
	pdCtx, cancelPD := context.WithCancel(context.WithoutCancel(ctx))
	stopWatch := context.AfterFunc(ctx, cancelPD)
	pdOpts := []opt.ClientOption{
		// By default this pd client looks regions up through the streaming
		// pdpb.PD/QueryRegion RPC, which PD before 9.0 (v8.5 included, and
		// the playground) answers UNIMPLEMENTED with no fallback, so every
		// region lookup would fail after its backoff. The unary GetRegion /
		// ScanRegions calls work on every version.
		opt.WithEnableRouterClient(false),
	}
	if o.PDTimeout > 0 {
		pdOpts = append(pdOpts, opt.WithCustomTimeoutOption(o.PDTimeout))
	}
	pdCli, err := pd.NewClientWithContext(pdCtx, caller.Component(o.Component), o.Addrs,
		pd.SecurityOption{CAPath: o.Security.ClusterSSLCA, CertPath: o.Security.ClusterSSLCert, KeyPath: o.Security.ClusterSSLKey},
		pdOpts...)
	if !stopWatch() && err == nil {
		// Connected just as ctx ended: the client is already cancelled, so
		// treat it as not connected.
		pdCli.Close()
		err = ctx.Err()
	}
	if err != nil {
		cancelPD()
		return nil, fmt.Errorf("connect PD %v: %w", o.Addrs, err)
	}
	clusterID := pdCli.GetClusterID(ctx)
	codecCli := tikv.NewCodecPDClient(tikv.ModeTxn, pdCli)
	spkv, err := tikv.NewEtcdSafePointKV(o.Addrs, tlsConfig)
	if err != nil {
		codecCli.Close()
		cancelPD()
		return nil, fmt.Errorf("connect PD etcd %v: %w", o.Addrs, err)
	}
	rpc := tikv.NewRPCClient(tikv.WithSecurity(o.Security), tikv.WithCodec(codecCli.GetCodec()))
	store, err := tikv.NewKVStore(fmt.Sprintf("%s-%d", o.Component, clusterID), codecCli, spkv, rpc)
	if err != nil {
		// NewKVStore closes what it built itself on failure, but not the
		// clients handed to it.
		_ = rpc.Close()
		_ = spkv.Close()
		codecCli.Close()
		cancelPD()
		return nil, fmt.Errorf("open KV store: %w", err)
	}
	return &Conn{PD: pdCli, KV: store, ClusterID: clusterID, cancelPD: cancelPD}, nil
}

// Close closes the KVStore (and with it the pd client) and ends the pd
// client's context.
func (c *Conn) Close() error {
	err := c.KV.Close()
	c.cancelPD()
	return err
}
