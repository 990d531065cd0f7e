package contract

import (
	"bytes"
	"fmt"

	"google.golang.org/grpc/codes"

	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// Validate checks a SubscribeRequest as every stage must before serving it.
// The error is a Fatal status (INVALID_ARGUMENT) naming the field: a bad
// request is the caller's bug, and asking again cannot fix it.
func Validate(stage string, req *tidestreamv1.SubscribeRequest) error {
	bad := func(format string, args ...any) error {
		return Status(Fatal, codes.InvalidArgument, "%s: bad SubscribeRequest: %s", stage, fmt.Sprintf(format, args...))
	}
	switch {
	case req == nil:
		return bad("nil request")
	case req.GetChangefeedId() == "":
		return bad("changefeed_id is required")
	case req.GetEpoch() == 0:
		return bad("epoch must be positive")
	case len(req.GetSpans()) == 0:
		return bad("spans: at least one span is required")
	}
	for i, sp := range req.GetSpans() {
		if len(sp.GetEndKey()) != 0 && bytes.Compare(sp.GetStartKey(), sp.GetEndKey()) >= 0 {
			return bad("spans[%d]: start_key %x must be below end_key %x", i, sp.GetStartKey(), sp.GetEndKey())
		}
	}
	return nil
}
