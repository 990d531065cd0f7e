package node

import (
	"testing"

	"github.com/pingcap/tidb/pkg/meta/model"
	pmodel "github.com/pingcap/tidb/pkg/parser/model"
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

func TestSplittable(t *testing.T) {
	pk := &model.IndexInfo{Name: pmodel.NewCIStr("PRIMARY"), Primary: true, Unique: true}
	uk := &model.IndexInfo{Name: pmodel.NewCIStr("uk"), Unique: true}
	k := &model.IndexInfo{Name: pmodel.NewCIStr("k")}
	for _, c := range []struct {
		name string
		info *model.TableInfo
		want bool
	}{
		{"int primary key", &model.TableInfo{PKIsHandle: true}, true},
		{"clustered primary key", &model.TableInfo{IsCommonHandle: true, Indices: []*model.IndexInfo{pk, k}}, true},
		{"non-clustered primary key: keys move between row ids", &model.TableInfo{Indices: []*model.IndexInfo{pk}}, false},
		{"another unique key", &model.TableInfo{PKIsHandle: true, Indices: []*model.IndexInfo{uk}}, false},
		{"partitioned", &model.TableInfo{PKIsHandle: true, Partition: &model.PartitionInfo{Definitions: []model.PartitionDefinition{{ID: 1}, {ID: 2}}}}, false},
	} {
		t.Run(c.name, func(t *testing.T) { require.Equal(t, c.want, splittable(c.info)) })
	}
}
