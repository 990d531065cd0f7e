// Package placement is the owner's placement decision (DESIGN §8): given
// the pipelines that should run, the live members and the assignment
// records in etcd, Plan returns the assignment writes that make the
// records right, and the pipelines it cannot place.
//
// It is pure and deterministic: no etcd, no clock, no randomness, and the
// result does not depend on the order of the input slices. That is what
// lets a new owner take over: it reads the records its predecessor wrote,
// plans, and gets no writes, because every rule below keeps a record that
// is still valid exactly as it is.
//
// The rules, in the order Plan applies them:
//
//   - Removed: a record whose pipeline is not wanted is deleted, and so is
//     all but the newest of several records of one pipeline (only a write
//     that bypassed the owner's fenced Assign can leave them).
//   - Sticky: a record whose four members are live and still run their
//     role, whose route addresses are the members' current addresses and
//     whose spans and upstream are the pipeline's is left alone.
//   - Repair: a record naming a member that is gone (or dropped the role)
//     is rewritten at a new epoch with only the dead roles replaced, each
//     by the least-loaded live member of the role; the live ones stay,
//     because every member that changes must tear down and rebuild its
//     part of the chain. A changed member address, span set or upstream is
//     rewritten the same way with the same members.
//   - New: a wanted pipeline with no record gets the least-loaded member of
//     each role.
//   - Balance: per role, while the most- and least-loaded members differ by
//     more than one, a pipeline moves from the former to the latter. A
//     pipeline that is rewritten this round anyway (new, repaired, or moved
//     in another role) moves for free: its chain restarts regardless. Any
//     other move restarts a pipeline that was running fine, so at most
//     Input.MaxMoves of those are made per call; repeated calls converge.
//
// Load is the number of placed pipelines a member carries in a role,
// counting this round's decisions; ties go to the smaller member id.
//
// Every rewrite raises the epoch above both the record's and the
// pipeline's LastEpoch and starts at the pipeline's checkpoint (never below
// the record's start ts): stages fence on the epoch and remember released
// epochs for a while (proto/contract.Registry), so a pipeline resumed after
// a pause must not come back at an epoch they would refuse.
//
// The package does not read or write etcd (the owner applies Result.Ops
// with store.Assign / store.Unassign, in order), decide which pipelines
// should run (the owner's schema history and changefeed states do), nor
// weigh pipelines by their traffic: every pipeline counts one.
package placement
