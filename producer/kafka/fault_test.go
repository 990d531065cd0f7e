package kafka

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tidestream/tidestream/producer/internal/faultnet"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

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
	var fn faultnet.Net
	c := newCluster(t, kfake.NumBrokers(3), kfake.ListenFn(fn.Listen))
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
	notLeader := faultnet.FailProduce(c, kerr.NotLeaderForPartition, 2)
	timedOut := faultnet.FailProduce(c, kerr.RequestTimedOut, 2)
	phase("not leader / timed out")
	require.Equal(t, int32(2), notLeader.Load())
	require.Equal(t, int32(2), timedOut.Load())

	// 2. REQUEST_TIMED_OUT after the write (kfake applies the batch, then
	// answers the timeout, as a broker whose replication was slow).
	h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.RequestTimedOut, Count: 3})
	phase("timed out after write")
	require.Equal(t, 3, int(h.Hits()))

	// 3. The connection drops after the write, before the response.
	fn.DropProduceResponses(2)
	phase("response lost")
	require.Equal(t, 2, fn.Dropped())

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

	faultnet.FailProduce(c, kerr.NotLeaderForPartition, 100)
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

// TestStalledWhileBrokersAreDown: records the client holds through an
// outage make Stalled report it, with the connection's error, once
// StallAfter passes; it clears when they are acknowledged.
func TestStalledWhileBrokersAreDown(t *testing.T) {
	var fn faultnet.Net
	c := newCluster(t, kfake.NumBrokers(1), kfake.ListenFn(fn.Listen))
	const topic = "tidb_db_t"
	require.NoError(t, c.CreateTopic(topic, 1, nil))
	p := newProducer(t, sink(c.ListenAddrs(), topic), func(c *Config) { c.StallAfter = 200 * time.Millisecond })
	ctx := ctxT(t)
	require.NoError(t, p.CheckDefaultTopic(ctx))
	require.NoError(t, p.Stalled(), "nothing in flight")

	fn.Down()
	a := newAcks(1)
	require.NoError(t, p.Produce(ctx, &tidestreamv1.EncodedRecord{Topic: topic, Key: []byte("k"), Value: []byte("v")}, a.fn()))
	require.NoError(t, p.Stalled(), "not before StallAfter")
	var stall *StallError
	require.Eventually(t, func() bool { return errors.As(p.Stalled(), &stall) && stall.Err != nil }, 10*time.Second, 10*time.Millisecond)
	require.EqualValues(t, 1, stall.InFlight)
	require.Contains(t, stall.Error(), "last broker error: broker")
	require.Equal(t, Retryable, Classify(stall))

	fn.Up()
	require.NoError(t, a.wait(t, 1)[0])
	require.NoError(t, p.Stalled(), "cleared once acknowledged")
}
