package changefeed

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

func TestCheckTransition(t *testing.T) {
	allowed := map[[2]pb.ChangefeedState]bool{}
	for from, tos := range transitions {
		for _, to := range tos {
			allowed[[2]pb.ChangefeedState{from, to}] = true
		}
	}
	all := []pb.ChangefeedState{pb.ChangefeedState_CHANGEFEED_STATE_UNSPECIFIED, normal, warning, stopped, failed, finished, removed}
	for _, from := range all {
		for _, to := range all {
			err := CheckTransition(from, to)
			if allowed[[2]pb.ChangefeedState{from, to}] {
				require.NoError(t, err, "%s -> %s", StateName(from), StateName(to))
				continue
			}
			require.Error(t, err, "%s -> %s", StateName(from), StateName(to))
			require.True(t, errors.Is(err, cdcerr.ErrFailedPrecondition))
		}
	}
	// The transitions users drive.
	require.NoError(t, CheckTransition(normal, stopped)) // pause
	require.NoError(t, CheckTransition(stopped, normal)) // resume
	require.NoError(t, CheckTransition(failed, normal))  // resume after failure
	require.Error(t, CheckTransition(finished, normal))  // finished is final
	require.Error(t, CheckTransition(stopped, stopped))  // pause twice
	require.Error(t, CheckTransition(removed, normal))   // removed is final
	require.Error(t, CheckTransition(stopped, finished)) // only a running feed finishes
}

func TestStateName(t *testing.T) {
	require.Equal(t, "normal", StateName(normal))
	require.Equal(t, "stopped", StateName(stopped))
	require.Equal(t, "unknown", StateName(pb.ChangefeedState_CHANGEFEED_STATE_UNSPECIFIED))
}

func TestValidateID(t *testing.T) {
	for _, ok := range []string{"confluent-changefeed", "a", "A1-b2-C3", "kafka-avro"} {
		require.NoError(t, ValidateID(ok), ok)
	}
	for _, bad := range []string{"", "-a", "a-", "a--b", "a_b", "a b", "a/b", "ä", string(make([]byte, 200))} {
		err := ValidateID(bad)
		require.Error(t, err, bad)
		require.ErrorIs(t, err, cdcerr.ErrInvalidArgument)
		require.Contains(t, err.Error(), "changefeed-id")
	}
}
