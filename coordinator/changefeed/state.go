package changefeed

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// Short aliases keep the transition table readable.
const (
	normal   = pb.ChangefeedState_CHANGEFEED_STATE_NORMAL
	warning  = pb.ChangefeedState_CHANGEFEED_STATE_WARNING
	stopped  = pb.ChangefeedState_CHANGEFEED_STATE_STOPPED
	failed   = pb.ChangefeedState_CHANGEFEED_STATE_FAILED
	finished = pb.ChangefeedState_CHANGEFEED_STATE_FINISHED
	removed  = pb.ChangefeedState_CHANGEFEED_STATE_REMOVED
)

// transitions lists, for each state, the states it may move to.
//
//   - normal/warning flip while the pipeline retries with backoff; either
//     can be paused (stopped), fail for good, or be removed.
//   - finished is reached only from normal (target ts reached while healthy)
//     and is final but for removal.
//   - failed needs a human: resume (normal), pause or remove.
//   - removed is final.
var transitions = map[pb.ChangefeedState][]pb.ChangefeedState{
	normal:   {warning, stopped, failed, finished, removed},
	warning:  {normal, stopped, failed, removed},
	stopped:  {normal, removed},
	failed:   {normal, stopped, removed},
	finished: {removed},
	removed:  {},
}

// CheckTransition returns nil if a changefeed may move from one state to
// another, and an error wrapping cdcerr.ErrFailedPrecondition otherwise.
// Staying in the same state is not a transition and is refused too, so that
// "pause a paused changefeed" is reported rather than silently accepted.
func CheckTransition(from, to pb.ChangefeedState) error {
	for _, s := range transitions[from] {
		if s == to {
			return nil
		}
	}
	return fmt.Errorf("changefeed is %s and cannot become %s: %w", StateName(from), StateName(to), cdcerr.ErrFailedPrecondition)
}

// StateName is the lower-case name users see ("normal", "stopped", …).
func StateName(s pb.ChangefeedState) string {
	name, ok := strings.CutPrefix(s.String(), "CHANGEFEED_STATE_")
	if !ok || s == pb.ChangefeedState_CHANGEFEED_STATE_UNSPECIFIED {
		return "unknown"
	}
	return strings.ToLower(name)
}

// idPattern is TiCDC's changefeed id rule: alphanumeric words joined by
// single dashes.
var idPattern = regexp.MustCompile(`^[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*$`)

// maxIDLen keeps ids usable as one etcd path segment and in metric labels.
const maxIDLen = 128

// ValidateID checks a changefeed id given by a user.
func ValidateID(id string) error {
	if len(id) > maxIDLen {
		return cdcerr.Field("changefeed-id", "must be at most %d characters, got %d", maxIDLen, len(id))
	}
	if !idPattern.MatchString(id) {
		return cdcerr.Field("changefeed-id", "%q is invalid: use letters, digits and single dashes between them (^[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*$)", id)
	}
	return nil
}

// ValidateNamespace checks a namespace name; the same rule as ids.
func ValidateNamespace(ns string) error {
	if len(ns) > maxIDLen || !idPattern.MatchString(ns) {
		return cdcerr.Field("namespace", "%q is invalid: use letters, digits and single dashes between them", ns)
	}
	return nil
}
