package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/tidestream/tidestream/puller/kvclient"
	"go.opentelemetry.io/otel/metric"
)

// lazyPuller connects to the upstream on the first Subscribe, not at start:
// a `cdc server` must come up (and serve the control API) while its upstream
// is still unreachable, and a failed connect is retried by the next
// Subscribe, which the sorter repeats on UNAVAILABLE.
type lazyPuller struct {
	pd    []string
	log   *slog.Logger
	meter metric.Meter

	mu     sync.Mutex
	client *kvclient.Client
	closed bool
}

func (p *lazyPuller) get(ctx context.Context) (*kvclient.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, kvclient.ErrClosed
	}
	if p.client != nil {
		return p.client, nil
	}
	if len(p.pd) == 0 {
		return nil, fmt.Errorf("%w: the puller role needs the upstream: start the server with --pd", kvclient.ErrFatal)
	}
	c, err := kvclient.New(ctx, kvclient.Config{PDAddrs: p.pd, Logger: p.log, Meter: p.meter})
	if err != nil {
		return nil, fmt.Errorf("puller: connect to upstream PD %v: %w", p.pd, err)
	}
	p.client = c
	return c, nil
}

// Subscribe implements service.Puller.
func (p *lazyPuller) Subscribe(ctx context.Context, span kvclient.Span, startTs uint64, sink kvclient.Sink) error {
	c, err := p.get(ctx)
	if err != nil {
		return err
	}
	return c.Subscribe(ctx, span, startTs, sink)
}

// Close closes the upstream client, if one was opened.
func (p *lazyPuller) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.client == nil {
		return nil
	}
	err := p.client.Close()
	p.client = nil
	if errors.Is(err, kvclient.ErrClosed) {
		return nil
	}
	return err
}
