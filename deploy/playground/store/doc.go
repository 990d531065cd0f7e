// Package store assembles the playground's TiKV: TiDB's unistore engine (badger +
// in-memory lock store + MVCC + region manager + mock PD) put together by hand
// instead of through unistore.New / server.NewMock, so that the caller can wrap the
// mvcc.DBWriter every MVCC mutation goes through (the change-data emulator needs to
// see each Prewrite / Commit / Rollback as it is applied).
//
// It is responsible for: the on-disk layout under Config.Dir, persistence across
// restarts (data, region metadata, store meta, cluster id, in-memory locks on a clean
// shutdown), a TSO that never goes backwards across restarts, and an in-process
// tikv/pd/client.Client (PDClient) over the mock PD for callers in the same process.
//
// It is not responsible for any network listener: it exposes Server (a
// tikvpb.TikvServer) and PD; registering them on gRPC ports is the binary's job (or
// kvserver's / pdserver's).
package store
