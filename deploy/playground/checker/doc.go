// Package checker verifies the cdcpb ChangeData protocol as it is seen on the
// wire, following shared/specs/tikv-changefeed-protocol.md §1–2 and the
// invariant list of §6.6.
//
// A Checker is fed, per connection and in order, every ChangeDataRequest the
// server received and every ChangeDataEvent it sent. The emulator taps its
// streams into one; a test client can feed what it sends and receives just the
// same. The checker keeps one state machine per subscription generation
// (connection, request_id, region_id, and a fresh generation for every
// Register) and records a Violation for every rule a message breaks. The
// rules, each named by a Rule* constant, are those a correct puller depends
// on: nothing after a subscription's Error, no resolved ts before INITIALIZED,
// exactly one INITIALIZED, no row at or below a resolved ts already sent, every
// COMMIT preceded by its PREWRITE, scan rows above the checkpoint, rows inside
// the registered range, and well-formed rows and messages.
//
// The Assembler and Compare form the history cross-check: the Assembler turns
// one subscription's rows into committed changes the way a correct puller does
// (spec §3.5), and Compare checks a set of delivered changes against the
// expected MVCC history over a (from, to] window.
//
// The package is pure logic: it depends on kvproto and TiDB's key codec only,
// so it can run on either side of a connection.
package checker
