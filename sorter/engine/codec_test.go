package engine

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

func FuzzCodecRoundTrip(f *testing.F) {
	f.Add([]byte("t\x80k"), []byte("v"), []byte{}, uint8(1), uint64(1), uint64(2), uint64(7), uint64(3))
	f.Add([]byte{}, []byte{}, []byte("old"), uint8(2), uint64(1<<63), uint64(1<<64-1), uint64(1<<40), uint64(1<<64-1))
	f.Fuzz(func(t *testing.T, key, val, old []byte, op uint8, start, commit, region, slot uint64) {
		if commit == 0 {
			commit = 1
		}
		ev := &tidestreamv1.RawKVEvent{Key: key, Value: val, OldValue: old, Op: tidestreamv1.OpType(op),
			StartTs: start, CommitTs: commit, RegionId: region}
		require.NoError(t, validateEvent(ev))
		k := make([]byte, encodedKeyLen(ev))
		v := make([]byte, encodedValueLen(ev))
		putKey(k, slot, ev)
		putValue(v, ev)
		got, size, err := decodeEvent(k, v)
		require.NoError(t, err)
		require.Equal(t, eventSize(ev), size)
		require.True(t, bytes.Equal(key, got.Key) && bytes.Equal(val, got.Value) && bytes.Equal(old, got.OldValue))
		require.Equal(t, [4]uint64{start, commit, region, uint64(op)}, [4]uint64{got.StartTs, got.CommitTs, got.RegionId, uint64(got.Op)})
		// Keys of one slot sort by (commit, start, key).
		require.True(t, bytes.HasPrefix(k, slotPrefix(slot)))
		if commit < 1<<64-1 {
			require.Negative(t, bytes.Compare(k, afterBound(slot, commit)))
		}
		require.GreaterOrEqual(t, bytes.Compare(k, tsBound(slot, commit)), 0)
	})
}

func TestDecodeCorrupt(t *testing.T) {
	for _, c := range []struct{ k, v []byte }{
		{make([]byte, 3), []byte{1, 0, 0}},
		{make([]byte, keyHeader), nil},
		{make([]byte, keyHeader), []byte{1, 0x80}},
		{make([]byte, keyHeader), []byte{1, 0, 5, 'a'}},
	} {
		_, _, err := decodeEvent(c.k, c.v)
		require.ErrorIs(t, err, ErrCorrupt)
	}
}

func TestValidateEvent(t *testing.T) {
	require.ErrorIs(t, validateEvent(nil), ErrInvalidEvent)
	require.ErrorIs(t, validateEvent(&tidestreamv1.RawKVEvent{}), ErrInvalidEvent)
	require.ErrorIs(t, validateEvent(&tidestreamv1.RawKVEvent{CommitTs: 1, Op: 300}), ErrInvalidEvent)
}
