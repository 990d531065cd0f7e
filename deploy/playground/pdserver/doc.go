// Package pdserver serves the PD (placement driver) API of the playground.
//
// Like a real PD it runs an embedded etcd server and registers its gRPC services
// on etcd's client port (etcd's ServiceRegister hook), so one address answers the
// PD API used by tikv/pd/client and tikv/client-go and the etcd KV API that TiDB
// and tools such as TiCDC use to keep their metadata "in PD".
//
// The package is responsible for translating PD RPCs onto the playground's store
// (unistore's region manager and mock PD, and the store's persistent TSO): the
// pdpb.PD service (members, TSO batches the way PD's stream hands them out,
// regions with their real epochs, the one store as an "Up" TiKV at the
// playground's KV address with a release version clients accept, GC and service
// GC safepoints with TTLs, global config), the MetaStorage and ResourceManager
// services TiDB's resource group controller needs to start, and the few PD HTTP
// endpoints TiDB's DDL calls (region label and placement rules, store list).
// Everything PD persists is kept in the embedded etcd under PD's own key layout.
//
// It is not responsible for the regions themselves (splits happen in unistore,
// through the KV port or the region manager), for scheduling, for enforcing
// resource group limits (token requests are granted in full), for keyspaces or
// TSO microservices, or for the rest of PD's HTTP API. gRPC methods it does not
// implement answer codes.Unimplemented at once; HTTP paths it does not serve
// answer 404.
package pdserver
