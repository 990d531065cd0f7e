package store_test

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
	"github.com/tidestream/tidestream/coordinator/internal/etcdtest"
	"github.com/tidestream/tidestream/coordinator/store"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

func newStore(t *testing.T) (*store.Store, *clientv3.Client) {
	cli := etcdtest.Start(t).Client(t)
	keys, err := store.NewKeys("test")
	require.NoError(t, err)
	return store.New(cli, keys), cli
}

func feed(ns, id string) (*pb.ChangefeedInfo, *pb.ChangefeedStatus) {
	return &pb.ChangefeedInfo{Namespace: ns, Id: id, SinkUri: "kafka://k:9092/t?protocol=avro", StartTs: 100},
		&pb.ChangefeedStatus{State: pb.ChangefeedState_CHANGEFEED_STATE_NORMAL, CheckpointTs: 100, Epoch: 1}
}

func TestCreateGetListDelete(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	for _, id := range []string{"b", "a"} {
		info, status := feed("default", id)
		require.NoError(t, st.Create(ctx, info, status))
	}
	info, status := feed("other", "a")
	require.NoError(t, st.Create(ctx, info, status))

	// Duplicate ids fail atomically and leave the first intact.
	dup, dupStatus := feed("default", "a")
	dup.SinkUri = "kafka://other:9092/x"
	err := st.Create(ctx, dup, dupStatus)
	require.ErrorIs(t, err, cdcerr.ErrAlreadyExists)
	got, err := st.Get(ctx, "default", "a")
	require.NoError(t, err)
	require.Equal(t, "kafka://k:9092/t?protocol=avro", got.Info.SinkUri)
	require.Equal(t, pb.ChangefeedState_CHANGEFEED_STATE_NORMAL, got.View().State)
	require.EqualValues(t, 100, got.View().CheckpointTs)

	all, err := st.List(ctx, "")
	require.NoError(t, err)
	require.Len(t, all, 3)
	require.Equal(t, []string{"a", "b", "a"}, []string{all[0].Info.Id, all[1].Info.Id, all[2].Info.Id})
	def, err := st.List(ctx, "default")
	require.NoError(t, err)
	require.Len(t, def, 2)

	_, err = st.Get(ctx, "default", "missing")
	require.ErrorIs(t, err, cdcerr.ErrNotFound)

	_, err = st.Delete(ctx, "default", "a", store.Fence{}, func(*store.Changefeed) error { return nil })
	require.NoError(t, err)
	_, err = st.Get(ctx, "default", "a")
	require.ErrorIs(t, err, cdcerr.ErrNotFound)
	all, err = st.List(ctx, "")
	require.NoError(t, err)
	require.Len(t, all, 2)
}

// Concurrent read-modify-write updates must not lose any increment.
func TestUpdateIsCompareAndSwap(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	info, status := feed("default", "cas")
	require.NoError(t, st.Create(ctx, info, status))
	const writers, each = 4, 5
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				_, err := st.Update(ctx, "default", "cas", store.Fence{}, func(cf *store.Changefeed) error {
					cf.Status.Epoch++
					return nil
				})
				if err != nil {
					t.Errorf("update: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	got, err := st.Get(ctx, "default", "cas")
	require.NoError(t, err)
	require.EqualValues(t, 1+writers*each, got.Status.Epoch)
}

// A write fenced on an election key that is gone must be refused with
// ErrNotOwner, never land.
func TestFencedWritesRefusedAfterOwnerLoss(t *testing.T) {
	st, cli := newStore(t)
	ctx := context.Background()
	info, status := feed("default", "f")
	require.NoError(t, st.Create(ctx, info, status))

	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	require.NoError(t, err)
	el := concurrency.NewElection(sess, st.Keys().OwnerPrefix())
	require.NoError(t, el.Campaign(ctx, "m1"))
	fence := store.Fence{Key: el.Key(), Rev: el.Rev()}

	require.NoError(t, st.FencedPut(ctx, fence, st.Keys().Prefix()+"/x", "1"))
	_, err = st.Update(ctx, "default", "f", fence, func(cf *store.Changefeed) error {
		cf.Status.CheckpointTs = 150
		return nil
	})
	require.NoError(t, err)
	_, err = st.UpdateStatus(ctx, "default", "f", fence, func(cf *store.Changefeed) error {
		cf.Status.CheckpointTs = 200
		return nil
	})
	require.NoError(t, err)

	// Lose ownership: the lease goes, and with it the election key.
	_, err = cli.Revoke(ctx, sess.Lease())
	require.NoError(t, err)

	err = st.FencedPut(ctx, fence, st.Keys().Prefix()+"/x", "2")
	require.ErrorIs(t, err, cdcerr.ErrNotOwner)
	_, err = st.Update(ctx, "default", "f", fence, func(cf *store.Changefeed) error {
		cf.Status.CheckpointTs = 300
		return nil
	})
	require.ErrorIs(t, err, cdcerr.ErrNotOwner)
	_, err = st.UpdateStatus(ctx, "default", "f", fence, func(cf *store.Changefeed) error {
		cf.Status.CheckpointTs = 300
		return nil
	})
	require.ErrorIs(t, err, cdcerr.ErrNotOwner)

	got, err := st.Get(ctx, "default", "f")
	require.NoError(t, err)
	require.EqualValues(t, 200, got.Status.CheckpointTs)
	resp, err := cli.Get(ctx, st.Keys().Prefix()+"/x")
	require.NoError(t, err)
	require.Equal(t, "1", string(resp.Kvs[0].Value))
}

func TestKeysRejectBadCluster(t *testing.T) {
	for _, bad := range []string{"", "a/b", "a b"} {
		_, err := store.NewKeys(bad)
		require.Error(t, err, bad)
	}
}
