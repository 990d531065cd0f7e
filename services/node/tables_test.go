package node

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tidestream/tidestream/coordinator/control"
)

// The check's filter must select what the encoder's selects: TiDB's table
// filter, case-insensitive unless asked, everything when there are no rules.
func TestTableFilterMatchesTheEncoders(t *testing.T) {
	all, err := tableFilter(control.TableFilter{})
	require.NoError(t, err)
	require.Nil(t, all, "no rules: every table (the encoder's nil filter)")

	f, err := tableFilter(control.TableFilter{Rules: []string{"app.*", "!app.tmp_*"}})
	require.NoError(t, err)
	require.True(t, f("app", "orders"))
	require.True(t, f("APP", "Orders"), "case-insensitive by default")
	require.False(t, f("app", "tmp_1"))
	require.False(t, f("other", "orders"))

	cs, err := tableFilter(control.TableFilter{Rules: []string{"app.*"}, CaseSensitive: true})
	require.NoError(t, err)
	require.False(t, cs("APP", "orders"))

	_, err = tableFilter(control.TableFilter{Rules: []string{"app"}})
	require.ErrorContains(t, err, "filter.rules")
}
