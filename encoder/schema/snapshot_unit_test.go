package schema

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pingcap/tidb/pkg/kv"
	"github.com/pingcap/tidb/pkg/meta"
	"github.com/pingcap/tidb/pkg/meta/model"
	"github.com/pingcap/tidb/pkg/structure"
	"github.com/stretchr/testify/require"
)

// memKV is an in-memory kv.Snapshot (and, for writing fixtures through
// TiDB's own structure encoding, a kv.RetrieverMutator).
type memKV struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (s *memKV) Get(_ context.Context, k kv.Key) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[string(k)]
	if !ok {
		return nil, kv.ErrNotExist
	}
	return v, nil
}

func (s *memKV) BatchGet(ctx context.Context, keys []kv.Key) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, k := range keys {
		if v, err := s.Get(ctx, k); err == nil {
			out[string(k)] = v
		}
	}
	return out, nil
}

func (s *memKV) Iter(k, upper kv.Key) (kv.Iterator, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	it := &memIter{}
	for key, v := range s.m {
		if key >= string(k) && (len(upper) == 0 || key < string(upper)) {
			it.keys = append(it.keys, key)
			it.vals = append(it.vals, v)
		}
	}
	idx := make([]int, len(it.keys))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return strings.Compare(it.keys[a], it.keys[b]) })
	keys, vals := make([]string, len(idx)), make([][]byte, len(idx))
	for i, j := range idx {
		keys[i], vals[i] = it.keys[j], it.vals[j]
	}
	it.keys, it.vals = keys, vals
	return it, nil
}

func (s *memKV) IterReverse(kv.Key, kv.Key) (kv.Iterator, error) {
	panic("not used by the meta reader")
}
func (s *memKV) SetOption(int, any) {}
func (s *memKV) Set(k kv.Key, v []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[string(k)] = bytes.Clone(v)
	return nil
}
func (s *memKV) Delete(k kv.Key) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, string(k))
	return nil
}

type memIter struct {
	keys []string
	vals [][]byte
	i    int
}

func (it *memIter) Valid() bool   { return it.i < len(it.keys) }
func (it *memIter) Key() kv.Key   { return kv.Key(it.keys[it.i]) }
func (it *memIter) Value() []byte { return it.vals[it.i] }
func (it *memIter) Next() error   { it.i++; return nil }
func (it *memIter) Close()        {}

// metaFixture writes meta the way TiDB lays it out (spec §1.3), through
// TiDB's structure encoding.
func metaFixture(t *testing.T) (*memKV, func(db *model.DBInfo, tables ...*model.TableInfo), func(dbID int64, field, value string)) {
	mem := &memKV{m: map[string][]byte{}}
	st := structure.NewStructure(mem, mem, []byte("m"))
	require.NoError(t, st.Set([]byte("SchemaVersionKey"), []byte("42")))
	addDB := func(db *model.DBInfo, tables ...*model.TableInfo) {
		b, err := json.Marshal(db)
		require.NoError(t, err)
		require.NoError(t, st.HSet([]byte("DBs"), meta.DBkey(db.ID), b))
		for _, ti := range tables {
			b, err := json.Marshal(ti)
			require.NoError(t, err)
			require.NoError(t, st.HSet(meta.DBkey(db.ID), meta.TableKey(ti.ID), b))
		}
	}
	raw := func(dbID int64, field, value string) {
		require.NoError(t, st.HSet(meta.DBkey(dbID), []byte(field), []byte(value)))
	}
	return mem, addDB, raw
}

func TestLoadSnapshotFromMeta(t *testing.T) {
	mem, addDB, raw := metaFixture(t)
	jobTable := jobTableInfo()
	addDB(dbInfo(1, "mysql"), jobTable, keyed(50, "user"))
	var many []*model.TableInfo
	for i := range 3*decodeChunk + 7 { // several decode chunks of one database
		many = append(many, keyed(int64(1000+i), fmt.Sprint("t", i)))
	}
	addDB(dbInfo(2, "test"), many...)
	raw(2, "TID:1000", "77") // auto-id counters are skipped
	raw(2, "IID:1000", "5")
	addDB(dbInfo(3, "empty"))
	addDB(dbInfo(4, "other"), partitioned(60, "pt", 61, 62), view(63, "v"))

	for _, conc := range []int{1, 3, 0} {
		opened := 0
		var mu sync.Mutex
		snap, err := loadSnapshot(context.Background(), func() kv.Snapshot {
			mu.Lock()
			opened++
			mu.Unlock()
			return mem
		}, 7, conc)
		require.NoError(t, err)
		require.Equal(t, uint64(7), snap.Ts)
		require.Equal(t, int64(42), snap.SchemaVersion)
		require.Len(t, snap.DBs, 4)
		require.NotContains(t, snap.Tables, int64(1), "system schemas are not scanned")
		require.Equal(t, []*model.TableInfo{}, snap.Tables[3])
		require.Len(t, snap.Tables[2], len(many))
		for i, ti := range snap.Tables[2] {
			require.Equal(t, int64(1000+i), ti.ID, "sorted by id")
			require.Equal(t, int64(2), ti.DBID)
		}
		require.Len(t, snap.Tables[4], 2)
		require.Equal(t, JobTableID, snap.JobTable.ID)
		if conc > 0 {
			require.LessOrEqual(t, opened, 1+conc, "one snapshot per scanner plus the first")
		}

		h, err := New(snap, Options{})
		require.NoError(t, err)
		at(t, h, 62, 7, "other", "pt")
		at(t, h, 1000+decodeChunk, 7, "test", fmt.Sprint("t", decodeChunk))
		unknown(t, h, 50, 7)
	}

	// A cancelled context stops the scan.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := loadSnapshot(ctx, func() kv.Snapshot { return mem }, 7, 2)
	require.ErrorIs(t, err, context.Canceled)

	// A table that does not decode fails the snapshot, naming it.
	raw(4, "Table:64", "{not json")
	_, err = loadSnapshot(context.Background(), func() kv.Snapshot { return mem }, 7, 2)
	require.ErrorContains(t, err, "Table:64")
}
