// Package tidb runs the real TiDB SQL layer in-process as a client of the
// playground's PD and TiKV ports.
//
// TiDB reaches its data only over the network, the way a deployed TiDB does: the
// KV store is client-go's (tikv.NewKVStore) with the real tikv/pd/client dialing
// the PD port and client-go's real RPC client dialing the KV port. Every read and
// write therefore crosses the KV gRPC port, where the change-data emulator and the
// async-commit / 1PC interceptors see it. The store is wrapped with TiDB's
// mockstorage adapter instead of being opened by TiDB's tikv:// driver, because the
// driver also wants PD's HTTP API and an etcd-backed deployment (DDL owner
// election in etcd, label and placement rules over PD HTTP) that the playground
// does not serve; with the adapter TiDB runs DDL as the only owner in-process.
//
// The package serves MySQL and TiDB's status HTTP API through TiDB's own server
// package. TiDB's status router cannot take extra routes, so TiDB's status server
// listens on an internal loopback port and the status port given in Config is a
// small front server: Config.ExtraStatusHandlers first, everything else proxied
// to TiDB's.
//
// # Process-global state
//
// TiDB keeps its configuration and much else in process globals; this package is
// the only place in the playground that touches them. Start sets:
//   - config.StoreGlobalConfig (TiDB's and client-go's global config);
//   - the pingcap/log global logger, which every pingcap library in the process
//     logs through (unistore and client-go included): warn level, to
//     <Dir>/tidb.log. gRPC's global logger is left alone: replacing it (as
//     tidb-server does) races with the gRPC servers already running;
//   - session schema and stats leases, ddl.EnableSplitTableRegion, the
//     transaction size limits and client-go's region cache TTL and store liveness
//     timeout, as tidb-server's main does;
//   - server.RunInGoTest and server.RunInGoTestChan, TiDB's hooks for listening on
//     port 0 and signalling that its listeners are up.
//
// Hence at most one Server runs in a process at a time (Start refuses a second);
// a Server can be started again after Close. TiDB's status server never closes its
// root listener, so each in-process restart leaks one loopback listener on an
// ephemeral port; the status port of Config is closed properly.
//
// The config has Store = "tikv" although the storage is not opened through the
// tikv driver: TiDB chooses TiKV defaults on it, notably async commit and 1PC ON
// when the cluster is bootstrapped (with "unistore" they are written OFF). As a
// side effect TiDB's status server tries to open a tikv:// store for its auto-id
// service, fails (no driver registered) and logs that once; auto-id allocation is
// TiDB's default, local to the server.
//
// No GC worker runs (the mockstorage adapter does not start one): old MVCC
// versions stay, and the ranges of dropped or truncated tables are recorded in
// mysql.gc_delete_range but never destroyed. Neither is visible to change-data
// consumers, which do not see GC or range deletion on a real cluster either.
package tidb
