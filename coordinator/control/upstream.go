package control

import (
	"context"
	"time"
)

// Upstream is what the control API needs from an upstream cluster's PD.
type Upstream interface {
	// ClusterID is the PD cluster id, shown as the changefeed's upstream_id.
	ClusterID() uint64
	// CurrentTS returns a fresh TSO.
	CurrentTS(ctx context.Context) (uint64, error)
	// CheckStartTS rejects a start ts below the GC safepoint or in the
	// future, with an error naming start-ts.
	CheckStartTS(ctx context.Context, startTS uint64) error
	// UpdateServiceGCSafePoint holds GC at ts for serviceID for ttl.
	UpdateServiceGCSafePoint(ctx context.Context, serviceID string, ttl time.Duration, ts uint64) (uint64, error)
	Close()
}

// UpstreamOpener connects to the PD of an upstream cluster.
type UpstreamOpener func(ctx context.Context, pdAddrs []string) (Upstream, error)
