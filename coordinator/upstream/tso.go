package upstream

import "time"

// LogicalBits is the width of a TSO's logical part: a TSO is
// physical_ms << LogicalBits | logical.
const LogicalBits = 18

// ComposeTS builds a TSO from its physical part (Unix milliseconds) and its
// logical counter (below 1<<LogicalBits, as PD hands out), with the same
// arithmetic as PD and TiDB.
func ComposeTS(physicalMs int64, logical int64) uint64 {
	return uint64(physicalMs)<<LogicalBits + uint64(logical)
}

// PhysicalTime is the wall-clock time a TSO was drawn at, to the
// millisecond (the logical part is dropped).
func PhysicalTime(ts uint64) time.Time {
	return time.UnixMilli(int64(ts >> LogicalBits))
}
