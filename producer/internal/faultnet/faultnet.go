// Package faultnet makes the broker faults the producer's tests need and
// kfake's hooks cannot: a produce response lost after the broker applied
// the request, and an outage that cuts every client off. It wraps kfake's
// listeners (kfake.ListenFn). FailProduce adds the error-before-write kind
// through kfake's control hooks. Tests only.
package faultnet

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Net is the network between kfake's brokers and their clients. The zero
// value passes everything through.
type Net struct {
	// Spared, when set, names the clients an outage does not cut off (a
	// test's checker reading what the brokers hold), by remote address.
	Spared func(remote net.Addr) bool

	drop    atomic.Int32 // produce responses still to lose
	dropped atomic.Int32

	mu    sync.Mutex
	down  bool
	conns map[*conn]struct{}
}

// Listen is a kfake.ListenFn.
func (n *Net) Listen(network, address string) (net.Listener, error) {
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	return &listener{Listener: ln, n: n}, nil
}

// DropProduceResponses loses the next k produce responses: the broker has
// written the batch, the connection closes before the client hears so.
func (n *Net) DropProduceResponses(k int) { n.drop.Add(int32(k)) }

// Dropped is how many produce responses were lost.
func (n *Net) Dropped() int { return int(n.dropped.Load()) }

// Down cuts every client not spared off: open connections close, new ones
// close as soon as they are accepted, until Up.
func (n *Net) Down() {
	n.mu.Lock()
	n.down = true
	var cut []*conn
	for c := range n.conns {
		if !n.spared(c) {
			cut = append(cut, c)
		}
	}
	n.mu.Unlock()
	for _, c := range cut {
		c.Conn.Close()
	}
}

// Up ends an outage.
func (n *Net) Up() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.down = false
}

func (n *Net) spared(c *conn) bool { return n.Spared != nil && n.Spared(c.RemoteAddr()) }

type listener struct {
	net.Listener
	n *Net
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		c := &conn{Conn: nc, n: l.n, produce: map[int32]bool{}}
		l.n.mu.Lock()
		if l.n.down && !l.n.spared(c) {
			l.n.mu.Unlock()
			nc.Close()
			continue
		}
		if l.n.conns == nil {
			l.n.conns = map[*conn]struct{}{}
		}
		l.n.conns[c] = struct{}{}
		l.n.mu.Unlock()
		return c, nil
	}
}

// conn frames Kafka's requests and responses to tell produce responses
// apart.
type conn struct {
	net.Conn
	n *Net

	mu      sync.Mutex
	rbuf    []byte // request bytes not yet framed
	wbuf    []byte // response bytes not yet framed
	produce map[int32]bool
}

func (c *conn) Close() error {
	c.n.mu.Lock()
	delete(c.n.conns, c)
	c.n.mu.Unlock()
	return c.Conn.Close()
}

// Read frames requests: int32 size, int16 api key, int16 version, int32
// correlation id.
func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.rbuf = append(c.rbuf, p[:n]...)
	for len(c.rbuf) >= 4 {
		size := int(binary.BigEndian.Uint32(c.rbuf))
		if len(c.rbuf) < 4+size {
			break
		}
		if size >= 8 && int16(binary.BigEndian.Uint16(c.rbuf[4:])) == int16(kmsg.Produce) {
			c.produce[int32(binary.BigEndian.Uint32(c.rbuf[8:]))] = true
		}
		c.rbuf = c.rbuf[4+size:]
	}
	c.mu.Unlock()
	return n, err
}

// Write frames responses (int32 size, int32 correlation id) and passes
// them on whole, unless one answers a produce request and a drop is due.
func (c *conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wbuf = append(c.wbuf, p...)
	for len(c.wbuf) >= 8 {
		size := int(binary.BigEndian.Uint32(c.wbuf))
		if len(c.wbuf) < 4+size {
			break
		}
		frame := c.wbuf[:4+size]
		corr := int32(binary.BigEndian.Uint32(c.wbuf[4:]))
		if c.produce[corr] {
			delete(c.produce, corr)
			if c.n.drop.Add(-1) >= 0 {
				c.n.dropped.Add(1)
				c.Conn.Close()
				return 0, errors.New("faultnet: response dropped")
			}
			c.n.drop.Add(1)
		}
		if _, err := c.Conn.Write(frame); err != nil {
			return 0, err
		}
		c.wbuf = c.wbuf[4+size:]
	}
	return len(p), nil
}

// FailProduce answers the next n produce requests with code for every
// partition, without writing anything, and returns how many it answered.
func FailProduce(c *kfake.Cluster, code *kerr.Error, n int) *atomic.Int32 {
	var hits atomic.Int32
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		if hits.Add(1) > int32(n) {
			hits.Add(-1)
			c.DropControl()
			return nil, nil, false
		}
		c.KeepControl()
		req := kr.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = code.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	return &hits
}
