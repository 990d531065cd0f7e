package upstream

import (
	"context"
	"time"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
)

// CheckStartTS validates a changefeed's start-ts at create time and fails
// with a cdcerr.FieldError naming "start-ts" when
//
//   - startTS is at or below the GC safepoint (GCSafePoint): the snapshot at
//     startTS may already be collected. Equality is refused too, as TiCDC
//     does: the GC keeper holds the service safepoint at checkpoint−1, which
//     PD would refuse for a checkpoint equal to the minimum, and the
//     changefeed would fail with "snapshot lost" right after being created;
//   - startTS is above a TSO drawn now: no transaction has committed there
//     yet and a typo (milliseconds instead of a TSO, say) would replicate
//     nothing for decades.
//
// startTS 0 is refused: the caller replaces "unset" by CurrentTS first.
// PD failures wrap cdcerr.ErrUnavailable.
//
// The check is advisory: GC may advance right after it. The caller closes
// that window by registering the changefeed's service safepoint at startTS
// and checking the minimum UpdateServiceGCSafePoint returns.
func (u *Upstream) CheckStartTS(ctx context.Context, startTS uint64) error {
	if startTS == 0 {
		return cdcerr.Field("start-ts", "must not be 0 (an unset start-ts means the current TSO)")
	}
	safePoint, err := u.GCSafePoint(ctx)
	if err != nil {
		return err
	}
	if startTS <= safePoint {
		return cdcerr.Field("start-ts", "start-ts %d is earlier than or equal to the GC safepoint %d (%s)",
			startTS, safePoint, fmtTS(safePoint))
	}
	now, err := u.CurrentTS(ctx)
	if err != nil {
		return err
	}
	if startTS > now {
		return cdcerr.Field("start-ts", "start-ts %d (%s) is later than the current PD timestamp %d (%s)",
			startTS, fmtTS(startTS), now, fmtTS(now))
	}
	return nil
}

// fmtTS renders a TSO's physical time for error messages, in UTC so two
// operators in different zones read the same text.
func fmtTS(ts uint64) string {
	return PhysicalTime(ts).UTC().Format(time.RFC3339Nano)
}
