package kafka

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// dropper loses produce responses after the broker has applied the
// request: it wraps kfake's listeners, notes the correlation ids of
// produce requests a connection reads, and when armed closes the
// connection instead of writing such a response — the client cannot tell
// whether its batch was written.
type dropper struct {
	armed   atomic.Int32 // responses still to drop
	dropped atomic.Int32
}

func (d *dropper) listen(network, address string) (net.Listener, error) {
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	return &dropListener{Listener: ln, d: d}, nil
}

type dropListener struct {
	net.Listener
	d *dropper
}

func (l *dropListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &dropConn{Conn: c, d: l.d, produce: map[int32]bool{}}, nil
}

type dropConn struct {
	net.Conn
	d *dropper

	mu      sync.Mutex
	rbuf    []byte // request bytes not yet framed
	wbuf    []byte // response bytes not yet framed
	produce map[int32]bool
}

// Read frames requests: int32 size, int16 api key, int16 version, int32
// correlation id.
func (c *dropConn) Read(p []byte) (int, error) {
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
// them on whole, unless one answers a produce request and a drop is armed.
func (c *dropConn) Write(p []byte) (int, error) {
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
			if c.d.armed.Add(-1) >= 0 {
				c.d.dropped.Add(1)
				c.Conn.Close()
				return 0, errors.New("test: response dropped")
			}
			c.d.armed.Add(1)
		}
		if _, err := c.Conn.Write(frame); err != nil {
			return 0, err
		}
		c.wbuf = c.wbuf[4+size:]
	}
	return len(p), nil
}

// failProduce answers the next n produce requests with code for every
// partition, without writing anything.
func failProduce(c *kfake.Cluster, code *kerr.Error, n int) *atomic.Int32 {
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

// TestFaultsKeepEveryRecordOnceInKeyOrder produces through leader changes,
// timeouts before and after the write, and responses lost after the write;
// every record must be acked exactly once and read back exactly once, each
// key's versions in order in one partition.
func TestFaultsKeepEveryRecordOnceInKeyOrder(t *testing.T) {
	recs, produced := produceThroughFaults(t, -1)
	require.Len(t, recs, produced, "no duplicates, nothing lost")
	last := map[string]int{}
	part := map[string]int32{}
	for _, r := range recs { // per partition in offset order
		k := string(r.Key)
		var v int
		_, err := fmt.Sscanf(string(r.Value), "%d", &v)
		require.NoError(t, err)
		require.Equal(t, last[k]+1, v, "key %s: version %d after %d", k, v, last[k])
		last[k] = v
		if p, ok := part[k]; ok {
			require.Equal(t, p, r.Partition, "key %s moved partition", k)
		}
		part[k] = r.Partition
	}
	require.Len(t, last, 64)
}

// TestFaultsDuplicateWithoutIdempotence is the control for the test above:
// with required-acks=1 (idempotence off) the same faults do write records
// twice, so the check above can see duplicates when they happen.
func TestFaultsDuplicateWithoutIdempotence(t *testing.T) {
	recs, produced := produceThroughFaults(t, 1)
	require.Greater(t, len(recs), produced, "post-write failures must duplicate without idempotence")
	seen := map[string]bool{}
	dups := 0
	for _, r := range recs {
		id := string(r.Key) + "/" + string(r.Value)
		if seen[id] {
			dups++
		}
		seen[id] = true
	}
	require.Len(t, seen, produced, "nothing lost")
	t.Logf("%d duplicates among %d records", dups, len(recs))
}

// produceThroughFaults runs three phases of 1500 records over 64 keys into
// 6 partitions on 3 brokers, each phase with one kind of fault, and returns
// what a consumer reads back and how many records were produced.
func produceThroughFaults(t *testing.T, acks int32) ([]*kgo.Record, int) {
	var d dropper
	c := newCluster(t, kfake.NumBrokers(3), kfake.ListenFn(d.listen))
	const topic = "tidb_db_orders"
	require.NoError(t, c.CreateTopic(topic, 6, nil))
	s := sink(c.ListenAddrs(), topic)
	s.RequiredAcks = acks
	p := newProducer(t, s)
	ctx := ctxT(t)
	require.NoError(t, p.CheckDefaultTopic(ctx))

	const keys, perPhase = 64, 1500
	seq := make([]int, keys)
	produced := 0
	var acked atomic.Int64
	phase := func(name string) {
		a := newAcks(perPhase)
		for i := range perPhase {
			k := i % keys
			seq[k]++
			rec := &tidestreamv1.EncodedRecord{
				Topic:         topic,
				Key:           fmt.Appendf(nil, "key-%02d", k),
				Value:         fmt.Appendf(nil, "%d", seq[k]),
				PartitionHash: uint64(k) * 0x9e3779b97f4a7c15,
				CommitTs:      uint64(produced + i),
			}
			require.NoError(t, p.Produce(ctx, rec, func(err error) { acked.Add(1); a.fn()(err) }))
		}
		produced += perPhase
		for _, err := range a.wait(t, perPhase) {
			require.NoError(t, err, name)
		}
		require.NoError(t, p.Flush(ctx))
	}

	// 1. NOT_LEADER_FOR_PARTITION, then REQUEST_TIMED_OUT, each for 2
	// produce tries, nothing written (ControlKey). 4 retries < max-retry 5.
	notLeader := failProduce(c, kerr.NotLeaderForPartition, 2)
	timedOut := failProduce(c, kerr.RequestTimedOut, 2)
	phase("not leader / timed out")
	require.Equal(t, int32(2), notLeader.Load())
	require.Equal(t, int32(2), timedOut.Load())

	// 2. REQUEST_TIMED_OUT after the write (kfake applies the batch, then
	// answers the timeout, as a broker whose replication was slow).
	h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.RequestTimedOut, Count: 3})
	phase("timed out after write")
	require.Equal(t, 3, int(h.Hits()))

	// 3. The connection drops after the write, before the response.
	d.armed.Store(2)
	phase("response lost")
	require.Equal(t, int32(2), d.dropped.Load())

	require.Equal(t, int64(produced), acked.Load(), "every record acked exactly once")
	want := produced
	if acks != -1 {
		want++ // at least one duplicate, or consume times out
	}
	return consume(t, c.ListenAddrs(), topic, want), produced
}

// TestFailedRecordIsReportedNotSkipped: a produce error that outlasts
// max-retry fails the record through onAck (and every later record of the
// partition), classified Retryable; the topic is re-read before the next
// record.
func TestFailedRecordIsReportedNotSkipped(t *testing.T) {
	c := newCluster(t, kfake.NumBrokers(1))
	const topic = "tidb_db_t"
	require.NoError(t, c.CreateTopic(topic, 1, nil))
	s := sink(c.ListenAddrs(), topic)
	s.MaxRetry = 1
	p := newProducer(t, s)
	ctx := ctxT(t)
	require.NoError(t, p.CheckDefaultTopic(ctx))

	failProduce(c, kerr.NotLeaderForPartition, 100)
	a := newAcks(3)
	for i := range 3 {
		require.NoError(t, p.Produce(ctx, &tidestreamv1.EncodedRecord{Topic: topic, Key: []byte{byte(i)}, Value: []byte("v")}, a.fn()))
	}
	for _, err := range a.wait(t, 3) {
		require.Error(t, err)
		var be *BrokerError
		require.ErrorAs(t, err, &be)
		require.Equal(t, topic, be.Topic)
		require.ErrorIs(t, err, kerr.NotLeaderForPartition)
		require.Equal(t, Retryable, Classify(err), "%v", err)
	}
	require.Nil(t, p.lookup(topic), "a failure makes the next Produce re-read the topic")
}
