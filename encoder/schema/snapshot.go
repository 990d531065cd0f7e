package schema

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/pingcap/tidb/pkg/kv"
	"github.com/pingcap/tidb/pkg/meta"
	"github.com/pingcap/tidb/pkg/meta/model"
	"github.com/pingcap/tidb/pkg/structure"
	tikverr "github.com/tikv/client-go/v2/error"
	"github.com/tikv/client-go/v2/txnkv/txnsnapshot"
)

// Snapshot is the schema in TiDB's meta at one ts: every database, the tables
// (with their partitions) of every non-system database, and the global schema
// version. It includes every DDL whose Done row committed at ≤ Ts, and may
// include intermediate states of DDLs finishing later (spec §1.6).
type Snapshot struct {
	Ts            uint64
	SchemaVersion int64
	DBs           []*model.DBInfo
	// Tables maps a database id to its tables, views and sequences. System
	// schemas have no entry: they are never replicated.
	Tables map[int64][]*model.TableInfo
	// JobTable is mysql.tidb_ddl_job's info, for NewJobDecoder; nil when the
	// cluster has none (TiDB before concurrent DDL).
	JobTable *model.TableInfo
}

// SnapshotStore opens a client-go snapshot at a ts. *Store and
// *tikv.KVStore satisfy it (so does *txnkv.Client, but see OpenStore).
type SnapshotStore interface {
	GetSnapshot(ts uint64) *txnsnapshot.KVSnapshot
}

// DefaultConcurrency bounds LoadSnapshot's workers. TiDB's own
// IterAllTables stops at 15; fewer keeps a snapshot taken while pipelines
// run from crowding out their reads of the same stores.
const DefaultConcurrency = 8

// LoadSnapshot reads the schema at ts through client-go. Databases are
// scanned by concurrency workers (DefaultConcurrency when ≤ 0), each on its
// own client-go snapshot at ts, and their tables decoded by as many more in
// chunks, so one huge database is decoded in parallel too.
//
// ts must stay above the GC safe point for the whole read; the caller holds a
// service safe point at or below it (spec §6.3).
func LoadSnapshot(ctx context.Context, store SnapshotStore, ts uint64, concurrency int) (*Snapshot, error) {
	return loadSnapshot(ctx, func() kv.Snapshot { return metaSnapshot{store.GetSnapshot(ts)} }, ts, concurrency)
}

// loadSnapshot reads through open, which returns a fresh snapshot at ts for
// each worker; the meta reader is not documented as safe for concurrent use.
func loadSnapshot(ctx context.Context, open func() kv.Snapshot, ts uint64, concurrency int) (*Snapshot, error) {
	if concurrency <= 0 {
		concurrency = DefaultConcurrency
	}
	r := meta.NewReader(open())
	ver, err := r.GetSchemaVersion()
	if err != nil {
		return nil, fmt.Errorf("schema: snapshot at %d: schema version: %w", ts, err)
	}
	dbs, err := r.ListDatabases()
	if err != nil {
		return nil, fmt.Errorf("schema: snapshot at %d: list databases: %w", ts, err)
	}
	snap := &Snapshot{Ts: ts, SchemaVersion: ver, DBs: dbs, Tables: make(map[int64][]*model.TableInfo, len(dbs))}
	var todo []*model.DBInfo
	for _, db := range dbs {
		if IsSystemSchema(db.Name.L) {
			if db.Name.L == "mysql" {
				if snap.JobTable, err = r.GetTable(db.ID, JobTableID); err != nil {
					return nil, fmt.Errorf("schema: snapshot at %d: mysql.tidb_ddl_job: %w", ts, err)
				}
			}
			continue
		}
		todo = append(todo, db)
	}

	if err := scanTables(ctx, open, todo, concurrency, snap.Tables); err != nil {
		return nil, fmt.Errorf("schema: snapshot at %d: %w", ts, err)
	}
	return snap, nil
}

// decodeChunk bounds the TableInfos one decode task unmarshals, so that one
// database with most of the tables (the common shape of a 100k-table
// cluster) is still decoded by every worker.
const decodeChunk = 256

type decodeTask struct {
	dbID  int64
	pairs []structure.HashPair
}

// scanTables fills out with the tables of dbs. Two stages, each with
// concurrency workers: scanners read one database's hash each (one range
// scan, which cannot be split without knowing meta's key layout), decoders
// unmarshal the Table: fields in chunks. Each scanner has its own snapshot:
// the meta reader is not documented as safe for concurrent use.
func scanTables(ctx context.Context, open func() kv.Snapshot, dbs []*model.DBInfo, concurrency int, out map[int64][]*model.TableInfo) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		firstErr error
		next     = make(chan *model.DBInfo)
		tasks    = make(chan decodeTask, concurrency)
		scanners sync.WaitGroup
		decoders sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
		cancel()
	}
	for range concurrency {
		scanners.Go(func() {
			r := meta.NewReader(open())
			// Keep receiving after a failure so the feeder never blocks.
			for db := range next {
				if ctx.Err() != nil {
					continue
				}
				pairs, err := r.GetMetasByDBID(db.ID)
				if err != nil {
					fail(fmt.Errorf("tables of %s (%d): %w", db.Name.O, db.ID, err))
					continue
				}
				mu.Lock()
				if _, ok := out[db.ID]; !ok {
					out[db.ID] = []*model.TableInfo{} // a database without tables is still listed
				}
				mu.Unlock()
				pairs = slices.DeleteFunc(pairs, func(p structure.HashPair) bool {
					// The other fields are auto-id counters (spec §1.3).
					return !bytes.HasPrefix(p.Field, []byte("Table:"))
				})
				for chunk := range slices.Chunk(pairs, decodeChunk) {
					select {
					case tasks <- decodeTask{dbID: db.ID, pairs: chunk}:
					case <-ctx.Done():
					}
				}
			}
		})
		decoders.Go(func() {
			for task := range tasks {
				if ctx.Err() != nil {
					continue
				}
				infos := make([]*model.TableInfo, 0, len(task.pairs))
				for _, p := range task.pairs {
					info := &model.TableInfo{}
					if err := json.Unmarshal(p.Value, info); err != nil {
						fail(fmt.Errorf("decode %s of database %d: %w", p.Field, task.dbID, err))
						break
					}
					info.DBID = task.dbID
					infos = append(infos, info)
				}
				mu.Lock()
				out[task.dbID] = append(out[task.dbID], infos...)
				mu.Unlock()
			}
		})
	}
feed:
	for _, db := range dbs {
		select {
		case next <- db:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	scanners.Wait()
	close(tasks)
	decoders.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Chunks finish in any order; sort so a snapshot reads the same twice.
	for _, tables := range out {
		slices.SortFunc(tables, func(a, b *model.TableInfo) int { return cmp.Compare(a.ID, b.ID) })
	}
	return nil
}

// metaSnapshot adapts client-go's snapshot to TiDB's kv.Snapshot, which is
// all meta.NewReader needs. TiDB's own adapter (pkg/store/driver/txn) drags
// in TiDB's session variables and privilege code, and it is written against
// an older client-go Get signature than the one pinned here.
type metaSnapshot struct{ s *txnsnapshot.KVSnapshot }

var _ kv.Snapshot = metaSnapshot{}

// Get implements kv.Getter; the meta reader expects kv.ErrNotExist for an
// absent key.
func (m metaSnapshot) Get(ctx context.Context, k kv.Key) ([]byte, error) {
	e, err := m.s.Get(ctx, k)
	if errors.Is(err, tikverr.ErrNotExist) {
		return nil, kv.ErrNotExist
	}
	if err != nil {
		return nil, err
	}
	return e.Value, nil
}

// BatchGet implements kv.BatchGetter.
func (m metaSnapshot) BatchGet(ctx context.Context, keys []kv.Key) (map[string][]byte, error) {
	raw := make([][]byte, len(keys))
	for i, k := range keys {
		raw[i] = k
	}
	got, err := m.s.BatchGet(ctx, raw)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(got))
	for k, e := range got {
		out[k] = e.Value
	}
	return out, nil
}

// Iter implements kv.Retriever.
func (m metaSnapshot) Iter(k, upperBound kv.Key) (kv.Iterator, error) {
	it, err := m.s.Iter(k, upperBound)
	if err != nil {
		return nil, err
	}
	return metaIter{it}, nil
}

// IterReverse implements kv.Retriever.
func (m metaSnapshot) IterReverse(k, lowerBound kv.Key) (kv.Iterator, error) {
	it, err := m.s.IterReverse(k, lowerBound)
	if err != nil {
		return nil, err
	}
	return metaIter{it}, nil
}

// SetOption implements kv.Snapshot. The meta reader sets none that matter
// for a plain snapshot read, so options are ignored.
func (metaSnapshot) SetOption(int, any) {}

// clientIter is client-go's iterator, whose type lives in an internal package.
type clientIter interface {
	Valid() bool
	Key() []byte
	Value() []byte
	Next() error
	Close()
}

type metaIter struct{ clientIter }

func (i metaIter) Key() kv.Key { return i.clientIter.Key() }

// VersionAt reads TiDB's schema version at ts: every DDL raises it, so two
// equal versions mean no schema change in between.
func VersionAt(store SnapshotStore, ts uint64) (int64, error) {
	ver, err := meta.NewReader(metaSnapshot{store.GetSnapshot(ts)}).GetSchemaVersion()
	if err != nil {
		return 0, fmt.Errorf("schema: version at %d: %w", ts, err)
	}
	return ver, nil
}
