// Package store is the coordinator's etcd persistence: the key layout in
// KEYS.md, changefeed records with compare-and-swap updates, member listing,
// and owner-fenced writes.
//
// It knows nothing about what a valid changefeed is (package changefeed) or
// who the owner is (package owner): callers pass the state transition check
// and the fence.
package store
