// Package cdcerr is tidestream's one error taxonomy for the control plane:
// the sentinels every coordinator package wraps, the field error that makes a
// bad request name what is wrong, the terminal marker that stops the
// pipeline-level retry loop, and the single table that maps all of them to
// gRPC status codes and back.
//
// Every classification here survives %w wrapping (it is checked with
// errors.Is / errors.As), and a status round trip: an error mapped to a gRPC
// status by ToStatus and back by FromStatus is still errors.Is the same
// sentinel.
package cdcerr
