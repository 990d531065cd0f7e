// Package control implements the control API that `cdc cli` talks to:
// ChangefeedService (create, get, query, list, update, pause, resume,
// remove, list processors) and ClusterService (members, owner, health).
// Query and ListProcessors read the owner's assignment records and the
// producers' progress records (coordinator/store/KEYS.md) as they are in
// etcd; they never ask the owner.
//
// Every process running the coordinator role serves it; requests are
// validated here (through replicaconfig, the upstream PD and, for the tables
// a new changefeed would select, the upstream's schema) and written to
// etcd through the store with compare-and-swap, so it does not matter which
// coordinator a CLI reaches. It never returns a secret: every ChangefeedInfo
// leaving the package goes through redact. It is not responsible for running
// changefeeds; the owner reacts to what is written here.
package control
