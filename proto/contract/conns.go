package contract

import (
	"errors"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// ErrConnsClosed is what Conns.Get returns once Close ran.
var ErrConnsClosed = errors.New("contract: stage connections closed")

// Conns holds one connection per upstream stage address, dialed on first
// use with DialOptions and shared by every pipeline routed there. Every
// stage that pulls from another keeps one. It is safe for concurrent use;
// the zero value is ready.
type Conns struct {
	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool
}

// Get returns the connection to addr, dialing it the first time. gRPC
// connects lazily, so an unreachable address shows up as UNAVAILABLE on the
// first call, which callers retry. After Close it fails with
// ErrConnsClosed: a handler still unwinding must not dial a connection
// nobody would close.
func (c *Conns) Get(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrConnsClosed
	}
	if cc := c.conns[addr]; cc != nil {
		return cc, nil
	}
	cc, err := grpc.NewClient(addr, append(DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		return nil, err
	}
	if c.conns == nil {
		c.conns = make(map[string]*grpc.ClientConn)
	}
	c.conns[addr] = cc
	return cc, nil
}

// Len is the number of addresses dialed.
func (c *Conns) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns)
}

// Close closes every connection and refuses new ones. Idempotent.
func (c *Conns) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var errs []error
	for addr, cc := range c.conns {
		errs = append(errs, cc.Close())
		delete(c.conns, addr)
	}
	return errors.Join(errs...)
}
