package kafka

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"

	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

func TestAutoCreateTopic(t *testing.T) {
	c := newCluster(t, kfake.NumBrokers(1))
	ctx := ctxT(t)

	t.Run("partition-num", func(t *testing.T) {
		s := sink(c.ListenAddrs(), "ticdc-meta")
		s.PartitionNum = 5
		p := newProducer(t, s)
		require.NoError(t, p.CheckDefaultTopic(ctx))
		require.Equal(t, 5, len(c.PartitionInfos("ticdc-meta")))

		n, err := p.EnsureTopic(ctx, "tidb_tpcc_orders")
		require.NoError(t, err)
		require.Equal(t, int32(5), n)
		require.Equal(t, 5, len(c.PartitionInfos("tidb_tpcc_orders")))

		// A record to a new per-table topic creates it lazily.
		a := newAcks(1)
		require.NoError(t, p.Produce(ctx, &tidestreamv1.EncodedRecord{Topic: "tidb_tpcc_stock", Key: []byte("k"), Value: []byte("v")}, a.fn()))
		require.NoError(t, a.wait(t, 1)[0])
		require.Equal(t, 5, len(c.PartitionInfos("tidb_tpcc_stock")))
	})

	t.Run("default 3", func(t *testing.T) {
		p := newProducer(t, sink(c.ListenAddrs(), "meta-default"))
		n, err := p.EnsureTopic(ctx, "tidb_x_y")
		require.NoError(t, err)
		require.Equal(t, int32(DefaultPartitionNum), n)
	})

	t.Run("existing topic keeps its count", func(t *testing.T) {
		require.NoError(t, c.CreateTopic("existing", 2, nil))
		s := sink(c.ListenAddrs(), "existing")
		s.PartitionNum = 1 // smaller: allowed (warning)
		p := newProducer(t, s)
		require.NoError(t, p.CheckDefaultTopic(ctx))
		n, err := p.EnsureTopic(ctx, "existing")
		require.NoError(t, err)
		require.Equal(t, int32(2), n)
	})

	t.Run("partition-num above the default topic's count", func(t *testing.T) {
		require.NoError(t, c.CreateTopic("small", 2, nil))
		s := sink(c.ListenAddrs(), "small")
		s.PartitionNum = 4
		err := newProducer(t, s).CheckDefaultTopic(ctx)
		var ce *ConfigError
		require.ErrorAs(t, err, &ce)
		require.Equal(t, "partition-num", ce.Field)
		require.ErrorContains(t, err, `greater than the 2 partitions of topic "small"`)
	})
}

func TestMissingTopicWithoutAutoCreate(t *testing.T) {
	c := newCluster(t, kfake.NumBrokers(1))
	ctx := ctxT(t)
	s := sink(c.ListenAddrs(), "ticdc-meta")
	s.AutoCreateTopic = false
	p := newProducer(t, s)

	err := p.CheckDefaultTopic(ctx)
	require.ErrorIs(t, err, ErrTopicNotFound)
	require.EqualError(t, err, `kafka: auto-create-topic is false, and topic "ticdc-meta" not found`)
	require.Equal(t, Fatal, Classify(err))
	require.Nil(t, c.TopicInfo("ticdc-meta"), "nothing created")

	require.NoError(t, c.CreateTopic("ticdc-meta", 1, nil))
	require.NoError(t, p.CheckDefaultTopic(ctx))

	err = p.Produce(ctx, &tidestreamv1.EncodedRecord{Topic: "tidb_db_missing", Key: []byte("k")}, func(error) { t.Error("onAck after a Produce error") })
	require.ErrorContains(t, err, `topic "tidb_db_missing" not found`)
	require.Nil(t, c.TopicInfo("tidb_db_missing"))
}

func TestReplicationFactorBelowMinInsyncReplicas(t *testing.T) {
	c := newCluster(t, kfake.NumBrokers(1), kfake.BrokerConfigs(map[string]string{"min.insync.replicas": "2"}))
	err := newProducer(t, sink(c.ListenAddrs(), "ticdc-meta")).CheckDefaultTopic(ctxT(t))
	var ce *ConfigError
	require.ErrorAs(t, err, &ce, "%v", err)
	require.Equal(t, "replication-factor", ce.Field)
	require.Nil(t, c.TopicInfo("ticdc-meta"))

	// acks=1 does not need min.insync.replicas.
	s := sink(c.ListenAddrs(), "ticdc-meta")
	s.RequiredAcks = 1
	require.NoError(t, newProducer(t, s).CheckDefaultTopic(ctxT(t)))
}

func TestOversizeRecord(t *testing.T) {
	c := newCluster(t, kfake.NumBrokers(1))
	ctx := ctxT(t)

	t.Run("max-message-bytes", func(t *testing.T) {
		s := sink(c.ListenAddrs(), "ticdc-meta")
		s.MaxMessageBytes = 1024
		p := newProducer(t, s)
		key := bytes.Repeat([]byte{0xab}, 40)
		ok := &tidestreamv1.EncodedRecord{Topic: "tidb_db_t", Key: key, Value: make([]byte, 1024-40-RecordOverhead)}
		a := newAcks(1)
		require.NoError(t, p.Produce(ctx, ok, a.fn()), "exactly at the limit")
		require.NoError(t, a.wait(t, 1)[0])

		big := &tidestreamv1.EncodedRecord{Topic: "tidb_db_t", Key: key, Value: make([]byte, 2000), CommitTs: 42}
		err := p.Produce(ctx, big, func(error) { t.Error("onAck after a Produce error") })
		var te *RecordTooLargeError
		require.ErrorAs(t, err, &te)
		require.Equal(t, 40+2000+RecordOverhead, te.Size)
		require.Equal(t, 1024, te.Limit)
		msg := err.Error()
		require.Contains(t, msg, `topic "tidb_db_t"`)
		require.Contains(t, msg, strings.Repeat("ab", maxKeyHex)+"… (40 bytes)")
		require.Contains(t, msg, "2076 bytes > max-message-bytes 1024")
		require.ErrorIs(t, err, kerr.MessageTooLarge)
		require.Equal(t, Fatal, Classify(err))
	})

	t.Run("clamped to the topic's max.message.bytes", func(t *testing.T) {
		require.NoError(t, c.CreateTopic("tidb_db_small", 1, map[string]string{"max.message.bytes": "4096"}))
		p := newProducer(t, sink(c.ListenAddrs(), "ticdc-meta")) // max-message-bytes 10 MiB
		err := p.Produce(ctx, &tidestreamv1.EncodedRecord{Topic: "tidb_db_small", Key: []byte("k"), Value: make([]byte, 4096)}, func(error) {})
		var te *RecordTooLargeError
		require.ErrorAs(t, err, &te)
		require.Equal(t, 4096-MessageOverhead, te.Limit)
	})
}

// TestPartitionIsHashModN: the partition is partition_hash % n, unsigned,
// and one key always lands in one partition.
func TestPartitionIsHashModN(t *testing.T) {
	c := newCluster(t, kfake.NumBrokers(2))
	require.NoError(t, c.CreateTopic("tidb_db_t", 7, nil))
	p := newProducer(t, sink(c.ListenAddrs(), "tidb_db_t"))
	ctx := ctxT(t)

	hashes := []uint64{0, 1, 6, 7, 13, 1 << 31, 1<<63 + 5, math.MaxUint64, math.MaxUint64 - 3}
	for i := range 50 {
		hashes = append(hashes, uint64(i)*0x9e3779b97f4a7c15)
	}
	a := newAcks(len(hashes))
	for i, h := range hashes {
		rec := &tidestreamv1.EncodedRecord{Topic: "tidb_db_t", Key: []byte{byte(i)}, Value: []byte("v"), PartitionHash: h}
		require.NoError(t, p.Produce(ctx, rec, a.fn()))
	}
	for _, err := range a.wait(t, len(hashes)) {
		require.NoError(t, err)
	}
	got := consume(t, c.ListenAddrs(), "tidb_db_t", len(hashes))
	require.Len(t, got, len(hashes))
	for _, r := range got {
		h := hashes[r.Key[0]]
		require.Equal(t, int32(h%7), r.Partition, "hash %d", h)
	}
}

func TestTombstone(t *testing.T) {
	c := newCluster(t, kfake.NumBrokers(1))
	p := newProducer(t, sink(c.ListenAddrs(), "tidb_db_t"))
	ctx := ctxT(t)
	a := newAcks(2)
	require.NoError(t, p.Produce(ctx, &tidestreamv1.EncodedRecord{Topic: "tidb_db_t", Key: []byte("del"), Tombstone: true}, a.fn()))
	require.NoError(t, p.Produce(ctx, &tidestreamv1.EncodedRecord{Topic: "tidb_db_t", Key: []byte("empty")}, a.fn()))
	require.NoError(t, errors.Join(a.wait(t, 2)...))
	for _, r := range consume(t, c.ListenAddrs(), "tidb_db_t", 2) {
		if string(r.Key) == "del" {
			require.Nil(t, r.Value, "a tombstone is a null value")
		} else {
			require.NotNil(t, r.Value, "an empty value is not a tombstone")
		}
	}
}

// TestPartitionCountChange: after partitions are added, records route by
// the new count once the refresh sees it, and nothing produced before is
// left behind.
func TestPartitionCountChange(t *testing.T) {
	c := newCluster(t, kfake.NumBrokers(1))
	require.NoError(t, c.CreateTopic("tidb_db_t", 2, nil))
	// Re-read the partition count before every record (TiCDC: 10 min).
	p := newProducer(t, sink(c.ListenAddrs(), "tidb_db_t"), func(c *Config) { c.MetadataRefresh = time.Nanosecond })
	ctx := ctxT(t)

	produce := func(n int, base byte) {
		a := newAcks(n)
		for i := range n {
			rec := &tidestreamv1.EncodedRecord{Topic: "tidb_db_t", Key: []byte{base, byte(i)}, Value: []byte("v"), PartitionHash: uint64(i)}
			require.NoError(t, p.Produce(ctx, rec, a.fn()))
		}
		require.NoError(t, errors.Join(a.wait(t, n)...))
	}
	produce(20, 0)
	_, err := p.adm.CreatePartitions(ctx, 3, "tidb_db_t") // 2 → 5
	require.NoError(t, err)
	produce(20, 1)

	for _, r := range consume(t, c.ListenAddrs(), "tidb_db_t", 40) {
		n := int32(2)
		if r.Key[0] == 1 {
			n = 5
		}
		require.Equal(t, int32(r.Key[1])%n, r.Partition)
	}
}

// TestTopicDeletedUnderUs: records to a deleted topic fail (Retryable, not
// skipped); the next record re-reads the topic and, with auto-create,
// recreates it.
func TestTopicDeletedUnderUs(t *testing.T) {
	c := newCluster(t, kfake.NumBrokers(1))
	p := newProducer(t, sink(c.ListenAddrs(), "ticdc-meta"))
	ctx := ctxT(t)
	rec := &tidestreamv1.EncodedRecord{Topic: "tidb_db_t", Key: []byte("k"), Value: []byte("v")}
	a := newAcks(3)
	require.NoError(t, p.Produce(ctx, rec, a.fn()))
	require.NoError(t, a.wait(t, 1)[0])

	require.NoError(t, c.DeleteTopic("tidb_db_t"))
	p.cl.ForceMetadataRefresh()
	require.NoError(t, p.Produce(ctx, rec, a.fn()))
	err := a.wait(t, 1)[0]
	require.Error(t, err)
	require.Equal(t, Retryable, Classify(err), "%v", err)

	require.NoError(t, p.Produce(ctx, rec, a.fn()))
	require.NoError(t, a.wait(t, 1)[0])
	require.NotNil(t, c.TopicInfo("tidb_db_t"), "recreated")
}
