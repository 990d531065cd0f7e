package tablefilter

import (
	"errors"
	"regexp/syntax"
	"testing"

	"github.com/stretchr/testify/require"
)

type table struct{ schema, table string }

func TestMatch(t *testing.T) {
	cases := []struct {
		name          string
		rules         []string
		caseSensitive bool
		accept        []table
		reject        []table
	}{
		{
			name:   "all",
			rules:  []string{"*.*"},
			accept: []table{{"shop", "orders"}, {"", ""}, {"a.b", "c"}},
		},
		{
			name:   "literal",
			rules:  []string{"shop.orders"},
			accept: []table{{"shop", "orders"}, {"SHOP", "Orders"}},
			reject: []table{{"shop", "orders2"}, {"shop2", "orders"}},
		},
		{
			name:          "case sensitive",
			rules:         []string{"shop.orders", "Db.*"},
			caseSensitive: true,
			accept:        []table{{"shop", "orders"}, {"Db", "x"}},
			reject:        []table{{"Shop", "orders"}, {"db", "x"}},
		},
		{
			name:   "star and question mark",
			rules:  []string{"sh?p.ord*"},
			accept: []table{{"shop", "orders"}, {"shxp", "ord"}, {"shép", "ordx"}},
			reject: []table{{"shp", "orders"}, {"shoop", "orders"}, {"shop", "xord"}},
		},
		{
			name:   "question mark is one code point",
			rules:  []string{"?.t"},
			accept: []table{{"é", "t"}, {"中", "t"}},
			reject: []table{{"ab", "t"}, {"", "t"}},
		},
		{
			name:   "ranges",
			rules:  []string{"db[0-9].t[!a-c]"},
			accept: []table{{"db1", "td"}, {"db9", "tZ"}},
			reject: []table{{"dbx", "td"}, {"db1", "ta"}, {"db1", "tB"}, {"db12", "td"}},
		},
		{
			name:   "caret is literal in a class",
			rules:  []string{"[^a].t"},
			accept: []table{{"^", "t"}, {"a", "t"}},
			reject: []table{{"b", "t"}},
		},
		{
			name:   "escaped bracket and dot",
			rules:  []string{`a\.b.c\*`},
			accept: []table{{"a.b", "c*"}},
			reject: []table{{"a.b", "cx"}, {"axb", "c*"}},
		},
		{
			name:   "escaped class members",
			rules:  []string{`[\]\!].t`},
			accept: []table{{"]", "t"}, {"!", "t"}},
			reject: []table{{"a", "t"}},
		},
		{
			name:   "regex is a substring match",
			rules:  []string{`/^shop_\d+$/./ord/`},
			accept: []table{{"shop_1", "orders"}, {"SHOP_22", "my_ord"}},
			reject: []table{{"shop_x", "orders"}, {"shop_1", "items"}},
		},
		{
			name:   "regex with escaped slash",
			rules:  []string{`/a\/b/.t`},
			accept: []table{{"xa/by", "t"}},
		},
		{
			name:   "double quotes",
			rules:  []string{`"a.b"."c""d"`},
			accept: []table{{"a.b", `c"d`}, {"A.B", `C"D`}},
			reject: []table{{"a", "b"}},
		},
		{
			name:   "backquotes",
			rules:  []string{"`my db`.`t``x`"},
			accept: []table{{"my db", "t`x"}},
		},
		{
			name:   "exclusion after include",
			rules:  []string{"*.*", "!mysql.*", "!shop.tmp_*"},
			accept: []table{{"shop", "orders"}},
			reject: []table{{"mysql", "user"}, {"shop", "tmp_1"}},
		},
		{
			name:   "last match decides",
			rules:  []string{"!shop.*", "shop.orders"},
			accept: []table{{"shop", "orders"}},
			reject: []table{{"shop", "items"}, {"other", "x"}},
		},
		{
			name:   "only exclusions reject everything",
			rules:  []string{"!shop.*"},
			reject: []table{{"shop", "orders"}, {"other", "x"}},
		},
		{
			name:   "comments and blanks are skipped",
			rules:  []string{"", "  ", "# shop.*", "  db.t  "},
			accept: []table{{"db", "t"}},
			reject: []table{{"shop", "x"}},
		},
		{
			name:   "non-ascii literal",
			rules:  []string{"库.表"},
			accept: []table{{"库", "表"}},
			reject: []table{{"库", "表2"}},
		},
		{
			name:   "dollar and underscore",
			rules:  []string{"a$b_c.*"},
			accept: []table{{"a$b_c", "t"}},
		},
		{
			name:   "empty list matches nothing",
			rules:  nil,
			reject: []table{{"a", "b"}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Parse(tc.rules, tc.caseSensitive)
			require.NoError(t, err)
			for _, tb := range tc.accept {
				require.True(t, f.Match(tb.schema, tb.table), "%s.%s should match", tb.schema, tb.table)
			}
			for _, tb := range tc.reject {
				require.False(t, f.Match(tb.schema, tb.table), "%s.%s should not match", tb.schema, tb.table)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		rules []string
		want  string
	}{
		{[]string{"*.*", "a.[b"}, `rules[1] "a.[b": unclosed bracket in table pattern`},
		{[]string{"a"}, `rules[0] "a": missing '.' and table pattern`},
		{[]string{".t"}, `missing schema pattern`},
		{[]string{"a."}, `missing table pattern`},
		{[]string{"a.b.c"}, `unexpected "." after table pattern`},
		{[]string{"a b.c"}, `unexpected character ' ' in schema pattern`},
		{[]string{"a-b.c"}, `unexpected character '-' in schema pattern`},
		{[]string{`a\`}, `trailing backslash`},
		{[]string{`\a.b`}, `cannot escape a letter or digit (\a)`},
		{[]string{"[].t"}, `empty character class`},
		{[]string{"[!].t"}, `empty character class`},
		{[]string{"[z-a].t"}, `invalid range`},
		{[]string{"/a.t"}, `unclosed regular expression`},
		{[]string{"//.t"}, `empty regular expression`},
		{[]string{"/(/.t"}, `invalid regular expression in schema pattern`},
		{[]string{`"abc.t`}, `unclosed quoted schema name`},
		{[]string{`"".t`}, `empty quoted schema name`},
		{[]string{"a.`t"}, "unclosed quoted table name"},
		{[]string{"@rules.txt"}, `only supported by the command line`},
		{[]string{"!"}, `missing schema pattern`},
		{[]string{`"a"x.t`}, `unexpected "x" after schema pattern`},
	}
	for _, tc := range cases {
		_, err := Parse(tc.rules, false)
		require.Error(t, err, "%q", tc.rules)
		require.Contains(t, err.Error(), tc.want)
		var re *RuleError
		require.True(t, errors.As(err, &re))
	}
}

func TestRegexErrorUnwraps(t *testing.T) {
	_, err := Parse([]string{"/(/.t"}, false)
	var syn *syntax.Error
	require.True(t, errors.As(err, &syn))
}

func TestIsSystemSchema(t *testing.T) {
	for _, s := range []string{
		"mysql", "MySQL", "sys", "information_schema", "PERFORMANCE_SCHEMA",
		"metrics_schema", "inspection_schema", "lightning_task_info", "tidb_cdc",
		"__TiDB_BR_Temporary_mysql", "__tidb_br_temporary_sys", "workload_schema",
	} {
		require.True(t, IsSystemSchema(s), s)
	}
	for _, s := range []string{"shop", "mysql2", "tpcc", "", "__TiDB_BR"} {
		require.False(t, IsSystemSchema(s), s)
	}
}

func TestReplicable(t *testing.T) {
	f, err := Parse([]string{"*.*"}, false)
	require.NoError(t, err)
	require.True(t, Replicable(f, "shop", "orders"))
	require.False(t, Replicable(f, "mysql", "user"))
	require.False(t, Replicable(f, "__TiDB_BR_Temporary_mysql", "user"))
}
