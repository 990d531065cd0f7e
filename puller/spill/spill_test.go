package spill_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pingcap/kvproto/pkg/cdcpb"
	"github.com/stretchr/testify/require"

	"github.com/tidestream/tidestream/puller/spill"
)

func row(key string, startTs uint64, value string) *cdcpb.Event_Row {
	return &cdcpb.Event_Row{Type: cdcpb.Event_PREWRITE, OpType: cdcpb.Event_Row_PUT, StartTs: startTs,
		Key: []byte(key), Value: []byte(value), OldValue: []byte("old-" + value), Generation: 3}
}

// The budget is shared by the Spaces; a Space's Close gives back its
// memory and its rows, and rows of one Space are not another's.
func TestBudgetAndSpaces(t *testing.T) {
	dir := t.TempDir()
	s, err := spill.Open(spill.Config{Dir: dir, Budget: 100})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	_, err = os.Stat(filepath.Join(dir, "db"))
	require.ErrorIs(t, err, os.ErrNotExist, "no disk until a row needs it")

	a, b := s.Space(), s.Space()
	require.True(t, a.Hold(60))
	require.False(t, b.Hold(60), "over the shared budget")
	require.True(t, b.Hold(40))
	require.EqualValues(t, 100, s.Stats().Held)

	r := row("k1", 10, "v1")
	require.NoError(t, b.Put(r, false))
	require.NoError(t, b.Put(row("k2", 10, "v2"), false))
	got, err := b.Get(10, []byte("k1"))
	require.NoError(t, err)
	require.Equal(t, r.String(), got.String(), "the row comes back whole")
	got, err = a.Get(10, []byte("k1"))
	require.NoError(t, err)
	require.Nil(t, got, "another Space's row")
	got, err = b.Get(11, []byte("k1"))
	require.NoError(t, err)
	require.Nil(t, got, "another start ts")

	require.NoError(t, b.Put(row("k1", 10, "v1b"), true))
	require.EqualValues(t, 2, b.OnDisk(), "a replaced row counts once")
	got, err = b.Get(10, []byte("k1"))
	require.NoError(t, err)
	require.Equal(t, "v1b", string(got.Value))

	require.NoError(t, b.Delete(10, []byte("k1")))
	got, err = b.Get(10, []byte("k1"))
	require.NoError(t, err)
	require.Nil(t, got)
	st := s.Stats()
	require.Equal(t, spill.Stats{Held: st.Held, OnDisk: 1, Spilled: 3}, st)
	require.Greater(t, st.Held, int64(100), "the filter and read-ahead of b's rows on disk count against the budget")
	require.NoError(t, b.Delete(10, []byte("k2")))
	require.Equal(t, spill.Stats{Held: 100, OnDisk: 0, Spilled: 3}, s.Stats(), "with no row on disk, b keeps nothing for them")

	require.NoError(t, b.Close())
	require.Equal(t, spill.Stats{Held: 60, OnDisk: 0, Spilled: 3}, s.Stats())
	c := s.Space()
	require.True(t, c.Hold(40), "b's memory is back")
	a.Unhold(60)
	require.NoError(t, a.Close())
	require.NoError(t, c.Close())
	require.Zero(t, s.Stats().Held)
}

// A Space answers as a map of its rows would, whatever the order of its
// writes and reads: its filter and read-ahead never answer for a row
// changed since they learnt of it. Rows of up to 24 KiB cut the read-ahead
// into several segments over a few hundred keys.
func TestSpaceAgainstMap(t *testing.T) {
	s, err := spill.Open(spill.Config{Dir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range 12 {
		sp := s.Space()
		model := map[string]string{}
		name := func(ts uint64, k string) string { return fmt.Sprint(ts, "/", k) }
		for range 3000 {
			ts := uint64(1 + rng.IntN(3))
			k := fmt.Sprintf("k%04d", rng.IntN(300))
			_, present := model[name(ts, k)]
			switch op := rng.IntN(10); {
			case op < 4:
				v := strings.Repeat(string(rune('a'+rng.IntN(26))), rng.IntN(24<<10))
				require.NoError(t, sp.Put(row(k, ts, v), present))
				model[name(ts, k)] = v
			case op < 7 && present:
				require.NoError(t, sp.Delete(ts, []byte(k)))
				delete(model, name(ts, k))
			default:
				got, err := sp.Get(ts, []byte(k))
				require.NoError(t, err)
				if !present {
					require.True(t, got == nil, "round %d: %s is not there", round, name(ts, k))
					continue
				}
				require.NotNil(t, got, "round %d: %s is there", round, name(ts, k))
				require.Equal(t, model[name(ts, k)], string(got.Value), "round %d: %s", round, name(ts, k))
			}
			require.EqualValues(t, len(model), sp.OnDisk())
		}
		if round%2 == 0 {
			// Empty it row by row: with nothing on disk the Space holds
			// nothing in memory for it.
			for n := range model {
				var ts uint64
				var k string
				_, err := fmt.Sscanf(n, "%d/%s", &ts, &k)
				require.NoError(t, err)
				require.NoError(t, sp.Delete(ts, []byte(k)))
			}
			require.Zero(t, s.Stats().Held, "round %d", round)
		}
		require.NoError(t, sp.Close())
		require.Equal(t, spill.Stats{Spilled: s.Stats().Spilled}, s.Stats(), "round %d", round)
	}
}

// A Space's Close drops its rows from disk, not only from the count.
func TestCloseDropsRows(t *testing.T) {
	s, err := spill.Open(spill.Config{Dir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	a := s.Space()
	for i := range 100 {
		require.NoError(t, a.Put(row(string(rune('a'+i%26))+string(rune('a'+i/26)), 7, "v"), false))
	}
	require.NoError(t, a.Close())
	// A fresh Space of the same store sees nothing, and the store counts
	// nothing on disk.
	b := s.Space()
	require.NoError(t, b.Put(row("zz", 7, "v"), false))
	got, err := b.Get(7, []byte("aa"))
	require.NoError(t, err)
	require.Nil(t, got)
	require.EqualValues(t, 1, s.Stats().OnDisk)
	require.NoError(t, b.Close())
}

// Open wipes what an earlier process left, and refuses a directory that
// is not its own; after Close the Spaces fail.
func TestOpenAndClose(t *testing.T) {
	dir := t.TempDir()
	s, err := spill.Open(spill.Config{Dir: dir})
	require.NoError(t, err)
	require.NoError(t, s.Space().Put(row("k", 1, "v"), false))
	require.NoError(t, s.Close())
	require.ErrorIs(t, s.Space().Put(row("k", 1, "v"), false), spill.ErrClosed)

	require.NoError(t, os.WriteFile(filepath.Join(dir, "leftover"), []byte("x"), 0o600))
	s, err = spill.Open(spill.Config{Dir: dir})
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(dir, "leftover"))
	require.ErrorIs(t, err, os.ErrNotExist, "wiped")
	require.NoError(t, s.Close())

	other := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(other, "precious"), []byte("x"), 0o600))
	_, err = spill.Open(spill.Config{Dir: other})
	require.ErrorContains(t, err, "refusing to wipe")
	_, err = os.Stat(filepath.Join(other, "precious"))
	require.NoError(t, err)
}
