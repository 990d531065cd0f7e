package store_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
	"github.com/tidestream/tidestream/coordinator/store"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// The tests below interleave two writers deterministically: the first
// writer's mutate runs after its read and before its transaction, so a
// second write made from inside it lands exactly in that window. (Real
// callers' mutate functions must not have side effects; here the side
// effect is the point.)

// ownerFence wins an election so status writes are fenced as the owner's are.
func ownerFence(t *testing.T, st *store.Store, cli *clientv3.Client) store.Fence {
	t.Helper()
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	require.NoError(t, err)
	t.Cleanup(func() { _ = sess.Close() })
	el := concurrency.NewElection(sess, st.Keys().OwnerPrefix())
	require.NoError(t, el.Campaign(context.Background(), "m1"))
	return store.Fence{Key: el.Key(), Rev: el.Rev()}
}

func stopped(t *testing.T, st *store.Store, id string) {
	t.Helper()
	info, status := feed("default", id)
	status.State = pb.ChangefeedState_CHANGEFEED_STATE_STOPPED
	require.NoError(t, st.Create(context.Background(), info, status))
}

// read, user's info update, owner's status write: the status write must land
// on its first attempt and must not undo the info update.
func TestStatusWriteIgnoresConcurrentInfoUpdate(t *testing.T) {
	st, cli := newStore(t)
	ctx := context.Background()
	stopped(t, st, "s")
	fence := ownerFence(t, st, cli)

	calls := 0
	cf, err := st.UpdateStatus(ctx, "default", "s", fence, func(cf *store.Changefeed) error {
		calls++
		if calls == 1 {
			_, err := st.UpdateInfo(ctx, "default", "s", func(cf *store.Changefeed) error {
				cf.Info.SinkUri = "kafka://new:9092/t?protocol=avro"
				return nil
			})
			require.NoError(t, err)
		}
		cf.Status.CheckpointTs = 200
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, 1, calls, "a status write retried because of an info write")
	require.EqualValues(t, 200, cf.Status.CheckpointTs)

	got, err := st.Get(ctx, "default", "s")
	require.NoError(t, err)
	require.Equal(t, "kafka://new:9092/t?protocol=avro", got.Info.SinkUri, "the info update was lost")
	require.EqualValues(t, 200, got.Status.CheckpointTs)
	require.Equal(t, pb.ChangefeedState_CHANGEFEED_STATE_STOPPED, got.Status.State)
}

// read, owner's status write, user's info update: the info update must land
// on its first attempt and must not undo the checkpoint.
func TestInfoUpdateIgnoresConcurrentStatusWrite(t *testing.T) {
	st, cli := newStore(t)
	ctx := context.Background()
	stopped(t, st, "i")
	fence := ownerFence(t, st, cli)

	calls := 0
	cf, err := st.UpdateInfo(ctx, "default", "i", func(cf *store.Changefeed) error {
		calls++
		if calls == 1 {
			_, err := st.UpdateStatus(ctx, "default", "i", fence, func(cf *store.Changefeed) error {
				cf.Status.CheckpointTs = 300
				return nil
			})
			require.NoError(t, err)
		}
		cf.Info.TargetTs = 900
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, 1, calls, "an info update retried because of a status write")
	require.EqualValues(t, 900, cf.Info.TargetTs)

	got, err := st.Get(ctx, "default", "i")
	require.NoError(t, err)
	require.EqualValues(t, 900, got.Info.TargetTs)
	require.EqualValues(t, 300, got.Status.CheckpointTs, "the status write was lost")
}

// A pause owns the state, which lives in the status key: a checkpoint
// write racing it must retry on the fresh status, keeping the pause.
func TestStatusWriteKeepsConcurrentPause(t *testing.T) {
	st, cli := newStore(t)
	ctx := context.Background()
	info, status := feed("default", "p")
	require.NoError(t, st.Create(ctx, info, status))
	fence := ownerFence(t, st, cli)

	calls := 0
	_, err := st.UpdateStatus(ctx, "default", "p", fence, func(cf *store.Changefeed) error {
		calls++
		if calls == 1 {
			_, err := st.Update(ctx, "default", "p", store.Fence{}, func(cf *store.Changefeed) error {
				cf.Status.State = pb.ChangefeedState_CHANGEFEED_STATE_STOPPED
				return nil
			})
			require.NoError(t, err)
		}
		cf.Status.CheckpointTs = 200
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, 2, calls)
	got, err := st.Get(ctx, "default", "p")
	require.NoError(t, err)
	require.Equal(t, pb.ChangefeedState_CHANGEFEED_STATE_STOPPED, got.Status.State, "the pause was lost")
	require.EqualValues(t, 200, got.Status.CheckpointTs)
}

// An info update checks the state without comparing the status key; a
// resume landing in between must still make it fail its compare, because
// user transitions move the info key too, and the retry then refuses.
func TestInfoUpdateSeesConcurrentResume(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	stopped(t, st, "r")

	calls := 0
	_, err := st.UpdateInfo(ctx, "default", "r", func(cf *store.Changefeed) error {
		calls++
		if calls == 1 {
			_, err := st.Update(ctx, "default", "r", store.Fence{}, func(cf *store.Changefeed) error {
				cf.Status.State = pb.ChangefeedState_CHANGEFEED_STATE_NORMAL
				cf.Status.Epoch++
				return nil
			})
			require.NoError(t, err)
		}
		if cf.Status.State != pb.ChangefeedState_CHANGEFEED_STATE_STOPPED {
			return cdcerr.ErrFailedPrecondition
		}
		cf.Info.SinkUri = "kafka://new:9092/t?protocol=avro"
		return nil
	})
	require.ErrorIs(t, err, cdcerr.ErrFailedPrecondition)
	require.Equal(t, 2, calls)
	got, err := st.Get(ctx, "default", "r")
	require.NoError(t, err)
	require.Equal(t, "kafka://k:9092/t?protocol=avro", got.Info.SinkUri, "an update landed on a running changefeed")
}

// A change to the record an update does not write would be dropped
// silently; it is refused and nothing is written.
func TestScopedUpdatesRefuseForeignChanges(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	stopped(t, st, "x")

	_, err := st.UpdateStatus(ctx, "default", "x", store.Fence{}, func(cf *store.Changefeed) error {
		cf.Status.CheckpointTs = 500
		cf.Info.SinkUri = "kafka://other:9092/t"
		return nil
	})
	require.ErrorContains(t, err, "changed its info")
	_, err = st.UpdateInfo(ctx, "default", "x", func(cf *store.Changefeed) error {
		cf.Info.TargetTs = 900
		cf.Status.State = pb.ChangefeedState_CHANGEFEED_STATE_NORMAL
		return nil
	})
	require.ErrorContains(t, err, "changed its status")

	got, err := st.Get(ctx, "default", "x")
	require.NoError(t, err)
	require.EqualValues(t, 100, got.Status.CheckpointTs)
	require.Equal(t, "kafka://k:9092/t?protocol=avro", got.Info.SinkUri)
	require.Zero(t, got.Info.TargetTs)
	require.Equal(t, pb.ChangefeedState_CHANGEFEED_STATE_STOPPED, got.Status.State)
}

// A status write racing a removal must not bring back a status key without
// its changefeed.
func TestStatusWriteAfterRemovalIsNotFound(t *testing.T) {
	st, cli := newStore(t)
	ctx := context.Background()
	stopped(t, st, "gone")

	_, err := st.UpdateStatus(ctx, "default", "gone", store.Fence{}, func(cf *store.Changefeed) error {
		if _, err := st.Delete(ctx, "default", "gone", store.Fence{}, func(*store.Changefeed) error { return nil }); err != nil {
			return err
		}
		cf.Status.CheckpointTs = 200
		return nil
	})
	require.ErrorIs(t, err, cdcerr.ErrNotFound)
	resp, err := cli.Get(ctx, st.Keys().Status("default", "gone"))
	require.NoError(t, err)
	require.Empty(t, resp.Kvs)
}
