package tablefilter

import (
	"testing"
)

func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"*.*", "!a.b", "a.[b", "[!a-z].t?", `/^x\d+$/.y`, `"a""b".c`, "`x`.`y`",
		`a\.b.c`, "@file", "# comment", "库.表", "[z-a].t", `[\]].t`, "//.t",
	} {
		f.Add(seed, "a", "b", false)
	}
	f.Fuzz(func(t *testing.T, rule, schema, table string, caseSensitive bool) {
		flt, err := Parse([]string{rule}, caseSensitive)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		flt.Match(schema, table)
		// A matching include rule must flip to a reject when negated, and
		// negation must never make an unmatched table match.
		neg, err := Parse([]string{"!" + rule}, caseSensitive)
		if err != nil || len(flt.rules) == 0 {
			return
		}
		if neg.Match(schema, table) {
			t.Fatalf("negated rule %q accepted %q.%q", rule, schema, table)
		}
	})
}
