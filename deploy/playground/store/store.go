package store

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pingcap/badger"
	"github.com/pingcap/badger/options"
	"github.com/pingcap/kvproto/pkg/metapb"
	usconf "github.com/pingcap/tidb/pkg/store/mockstore/unistore/config"
	"github.com/pingcap/tidb/pkg/store/mockstore/unistore/lockstore"
	"github.com/pingcap/tidb/pkg/store/mockstore/unistore/tikv"
	"github.com/pingcap/tidb/pkg/store/mockstore/unistore/tikv/mvcc"
)

// StoreVersion is the TiKV version the playground's store reports to PD clients.
// TiCDC-style clients refuse stores without a version or below 7.5; TiDB and
// client-go gate features on it too. It is what the emulated protocol follows.
const StoreVersion = "8.5.0"

// Files and folders under Config.Dir.
const (
	badgerSubdir  = "kv"         // badger DB, unistore's "kv" sub path
	tsoFile       = "tso"        // persisted TSO upper limit (ms, big-endian)
	clusterIDFile = "cluster_id" // decimal cluster id
	// unistore's MVCCStore.Close dumps the in-memory lock store to <dir>/lock_store
	// but never reads it back; Open loads it (see loadLocks).
	lockDumpFile = "lock_store"
)

// Config says where the store keeps its data and how it presents itself.
type Config struct {
	// Dir holds everything the store persists. Required.
	Dir string
	// ClusterID is the cluster id on first start. 0 means: keep the persisted one, or
	// pick a random one on first start. A non-zero value that differs from the
	// persisted one is an error (clients cache the id and would reject the store).
	ClusterID uint64
	// StoreAddr is the address clients dial for the tikvpb service (the --kv-port
	// listener). Required. On restart with a different address the store meta is
	// updated in place.
	StoreAddr string
	// PDAddr is the PD address recorded in the region options (informational).
	PDAddr string
	// WrapWriter, when set, wraps the mvcc.DBWriter that all MVCC mutations go
	// through. It is called once, before the MVCC store opens the writer.
	WrapWriter func(mvcc.DBWriter) mvcc.DBWriter
	// Now is the clock for the TSO; nil means time.Now. Tests set it.
	Now func() time.Time
}

// Validate reports the first missing or bad field.
func (c Config) Validate() error {
	if c.Dir == "" {
		return errors.New("store: Config.Dir is required")
	}
	if c.StoreAddr == "" {
		return errors.New("store: Config.StoreAddr is required")
	}
	return nil
}

// PD is unistore's mock PD with the store's persistent TSO in place of unistore's
// process-global, clock-only one. It implements unistore's pd.Client (what the MVCC
// store and inner server use), not tikv/pd/client.Client.
type PD struct {
	*tikv.MockPD
	tso *tso
}

// GetTS returns a timestamp that is above every timestamp issued before, also by an
// earlier process on the same Dir.
func (p *PD) GetTS(context.Context) (int64, int64, error) { return p.tso.next() }

// Store is an open unistore instance.
type Store struct {
	// Server serves the tikvpb.Tikv RPCs (register it on a gRPC server).
	Server *tikv.Server
	// Regions is the region manager (splits, region lookups).
	Regions *tikv.MockRegionManager
	// PD is the mock PD over Regions, with the persistent TSO.
	PD *PD
	// Bundle is the badger DB and the in-memory lock store.
	Bundle *mvcc.DBBundle
	// StoreID is the id of the one store; ClusterID the cluster's id.
	StoreID   uint64
	ClusterID uint64

	cfg Config
}

// Open opens (or creates) the store under cfg.Dir.
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("store: create dir: %w", err)
	}
	clusterID, err := loadClusterID(filepath.Join(cfg.Dir, clusterIDFile), cfg.ClusterID)
	if err != nil {
		return nil, err
	}
	ts, err := openTSO(filepath.Join(cfg.Dir, tsoFile), cfg.Now)
	if err != nil {
		return nil, err
	}
	// StateTS versions unistore's internal keys (region and store meta); it must be
	// above the versions written by earlier runs, which the persistent TSO ensures.
	stateTS, err := ts.compose()
	if err != nil {
		return nil, err
	}

	conf := unistoreConfig(cfg)
	safePoint := &tikv.SafePoint{}
	db, err := openBadger(&conf.Engine, safePoint)
	if err != nil {
		return nil, err
	}
	bundle := &mvcc.DBBundle{
		DB:        db,
		LockStore: lockstore.NewMemStore(8 << 20),
		StateTS:   stateTS,
	}
	if err := loadLocks(filepath.Join(cfg.Dir, lockDumpFile), bundle.LockStore); err != nil {
		db.Close()
		return nil, err
	}

	rm, err := tikv.NewMockRegionManager(bundle, clusterID, tikv.RegionOptions{
		StoreAddr:  cfg.StoreAddr,
		PDAddr:     cfg.PDAddr,
		RegionSize: conf.Server.RegionSize,
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: region manager: %w", err)
	}
	pd := &PD{MockPD: tikv.NewMockPD(rm), tso: ts}
	storeID, err := bootstrap(pd, rm, cfg.StoreAddr)
	if err != nil {
		db.Close()
		return nil, err
	}

	// The same assembly as unistore's standalone server, with our writer.
	inner := tikv.NewStandAlongInnerServer(bundle)
	inner.Setup(pd)
	var writer mvcc.DBWriter = tikv.NewDBWriter(bundle)
	if cfg.WrapWriter != nil {
		writer = cfg.WrapWriter(writer)
	}
	mvccStore := tikv.NewMVCCStore(conf, bundle, cfg.Dir, safePoint, writer, pd)
	mvccStore.DeadlockDetectSvr.ChangeRole(tikv.Leader)
	if err := inner.Start(pd); err != nil {
		_ = mvccStore.Close()
		db.Close()
		return nil, fmt.Errorf("store: start inner server: %w", err)
	}
	mvccStore.StartDeadlockDetection(false)

	return &Store{
		Server:    tikv.NewServer(rm, mvccStore, inner),
		Regions:   rm,
		PD:        pd,
		Bundle:    bundle,
		StoreID:   storeID,
		ClusterID: clusterID,
		cfg:       cfg,
	}, nil
}

// Close stops the server (waiting for in-flight requests), dumps in-memory locks and
// closes badger. Stop any gRPC server serving Server first.
func (s *Store) Close() error {
	// Server.Stop closes the MVCC store (writer, lock dump), the region manager and
	// the inner server, whose Stop closes the badger DB.
	s.Server.Stop()
	return nil
}

// Dir is the directory the store persists into.
func (s *Store) Dir() string { return s.cfg.Dir }

// unistoreConfig is unistore's default configuration set up the way unistore.New
// does for a persistent path.
func unistoreConfig(cfg Config) *usconf.Config {
	conf := usconf.DefaultConf
	conf.Engine.DBPath = cfg.Dir
	conf.Engine.ValueThreshold = 0
	conf.Engine.Compression = append([]string(nil), usconf.DefaultConf.Engine.Compression...)
	conf.Server.Raft = false
	conf.Server.StoreAddr = cfg.StoreAddr
	conf.Server.PDAddr = cfg.PDAddr
	return &conf
}

// openBadger opens the MVCC badger DB with the options unistore's standalone server
// derives from its engine config: managed transactions (versions are txn
// timestamps), the GC safe point as compaction filter, persistent (not volatile).
func openBadger(e *usconf.Engine, safePoint *tikv.SafePoint) (*badger.DB, error) {
	opts := badger.DefaultOptions
	opts.Dir = filepath.Join(e.DBPath, badgerSubdir)
	opts.ValueDir = opts.Dir
	opts.ManagedTxns = true
	opts.NumCompactors = e.NumCompactors
	opts.ValueThreshold = e.ValueThreshold
	opts.ValueLogWriteOptions.WriteBufferSize = 4 << 20
	opts.ValueLogFileSize = e.VlogFileSize
	opts.ValueLogMaxNumFiles = 3
	opts.MaxMemTableSize = e.MaxMemTableSize
	opts.TableBuilderOptions.MaxTableSize = e.MaxTableSize
	opts.NumMemtables = e.NumMemTables
	opts.NumLevelZeroTables = e.NumL0Tables
	opts.NumLevelZeroTablesStall = e.NumL0TablesStall
	opts.LevelOneSize = e.L1Size
	opts.SyncWrites = e.SyncWrite
	perLevel := make([]options.CompressionType, len(e.Compression))
	for i, c := range e.Compression {
		perLevel[i] = usconf.ParseCompression(c)
	}
	opts.TableBuilderOptions.CompressionPerLevel = perLevel
	opts.MaxBlockCacheSize = e.BlockCacheSize
	opts.MaxIndexCacheSize = e.IndexCacheSize
	opts.TableBuilderOptions.SuRFStartLevel = e.SurfStartLevel
	opts.CompactionFilterFactory = safePoint.CreateCompactionFilter
	opts.CompactL0WhenClose = e.CompactL0WhenClose
	opts.VolatileMode = false
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("store: open badger in %s: %w", opts.Dir, err)
	}
	return db, nil
}

// bootstrap creates the one store and the one region on first start; on later starts
// it finds the store and updates its address and version if they changed.
func bootstrap(pd *PD, rm *tikv.MockRegionManager, addr string) (uint64, error) {
	ctx := context.Background()
	ok, err := pd.IsBootstrapped(ctx)
	if err != nil {
		return 0, fmt.Errorf("store: read bootstrap state: %w", err)
	}
	if !ok {
		storeID, regionID, peerID := rm.AllocID(), rm.AllocID(), rm.AllocID()
		st := &metapb.Store{Id: storeID, Address: addr, Version: StoreVersion, State: metapb.StoreState_Up}
		region := &metapb.Region{
			Id:          regionID,
			RegionEpoch: &metapb.RegionEpoch{ConfVer: 1, Version: 1},
			Peers:       []*metapb.Peer{{Id: peerID, StoreId: storeID}},
		}
		if _, err := pd.Bootstrap(ctx, st, region); err != nil {
			return 0, fmt.Errorf("store: bootstrap: %w", err)
		}
		return storeID, nil
	}
	stores := rm.GetAllStores()
	if len(stores) != 1 {
		return 0, fmt.Errorf("store: want exactly one persisted store, found %d", len(stores))
	}
	st := stores[0]
	if st.Address != addr || st.Version != StoreVersion {
		// Only PD's view changes; unistore keeps its persisted store meta, whose
		// address it uses for nothing the playground relies on.
		st.Address, st.Version = addr, StoreVersion
		if err := pd.PutStore(ctx, st); err != nil {
			return 0, fmt.Errorf("store: update store address: %w", err)
		}
	}
	return st.Id, nil
}

// loadClusterID returns the persisted cluster id, or persists want (or a random id
// when want is 0) on first start.
func loadClusterID(path string, want uint64) (uint64, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		id, perr := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if perr != nil || id == 0 {
			return 0, fmt.Errorf("store: bad cluster id file %s", path)
		}
		if want != 0 && want != id {
			return 0, fmt.Errorf("store: cluster id %d requested but %s holds %d", want, path, id)
		}
		return id, nil
	}
	if !os.IsNotExist(err) {
		return 0, fmt.Errorf("store: read cluster id: %w", err)
	}
	id := want
	for id == 0 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return 0, fmt.Errorf("store: random cluster id: %w", err)
		}
		// Keep it positive as int64 too: some tools print it signed.
		id = binary.BigEndian.Uint64(b[:]) >> 1
	}
	if err := os.WriteFile(path, []byte(strconv.FormatUint(id, 10)+"\n"), 0o600); err != nil {
		return 0, fmt.Errorf("store: write cluster id: %w", err)
	}
	return id, nil
}

// TSO returns a fresh timestamp (physical ms << 18 | logical) from the same
// persistent oracle unistore's MVCC store uses.
func (s *Store) TSO(ctx context.Context) (uint64, error) {
	p, l, err := s.PD.GetTS(ctx)
	if err != nil {
		return 0, err
	}
	return uint64(p)<<logicalBits | uint64(l), nil
}
