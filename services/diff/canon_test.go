package diff

import (
	"math/big"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCanonical: the same TiDB value as TiDB's text protocol, the Avro
// record and each database deliver it comes out as one canonical text.
func TestCanonical(t *testing.T) {
	rat := func(s string) *big.Rat { r, _ := new(big.Rat).SetString(s); return r }
	for _, tc := range []struct {
		col  Column
		want string
		in   []any
	}{
		{Column{Kind: KindInt}, "-7", []any{[]byte("-7"), int64(-7), int(-7), int32(-7), "-7"}},
		{Column{Kind: KindUint}, "18446744073709551615", []any{[]byte("18446744073709551615"), int64(-1), "18446744073709551615", uint64(1<<64 - 1)}},
		{Column{Kind: KindUint}, "42", []any{[]byte("42"), int64(42), int(42)}},
		{Column{Kind: KindYear}, "0", []any{[]byte("0000"), int(0), int64(0)}},
		{Column{Kind: KindYear}, "2024", []any{[]byte("2024"), int(2024)}},
		{Column{Kind: KindFloat}, "0.1", []any{[]byte("0.1"), float32(0.1), float64(float32(0.1)), "0.100000001"}},
		{Column{Kind: KindFloat}, "3.4028235e+38", []any{[]byte("3.4028235e+38"), float32(3.4028235e38)}},
		{Column{Kind: KindDouble}, "0.3333333333333333", []any{[]byte("0.3333333333333333"), float64(1) / 3}},
		{Column{Kind: KindDouble}, "1e+20", []any{[]byte("1e20"), []byte("100000000000000000000"), float64(1e20)}},
		{Column{Kind: KindDecimal, Scale: 2}, "12.30", []any{[]byte("12.30"), "12.3", rat("12.3"), "0012.300"}},
		{Column{Kind: KindDecimal, Scale: 2}, "0.00", []any{[]byte("0.00"), "-0.00", rat("0")}},
		{Column{Kind: KindDecimal, Scale: 0}, "-5", []any{[]byte("-5"), rat("-5"), int64(-5)}},
		{Column{Kind: KindText}, "2024-01-02 03:04:05.120", []any{[]byte("2024-01-02 03:04:05.120"), "2024-01-02 03:04:05.120"}},
		{Column{Kind: KindJSON}, `{"a":[1,2.50,"x"],"b":null}`, []any{[]byte(`{"b": null, "a": [1, 2.50, "x"]}`), `{"a":[1,2.50,"x"],"b":null}`}},
		{Column{Kind: KindJSON}, `"<&>"`, []any{`"<&>"`, `"\u003c&>"`}},
		{Column{Kind: KindBytes}, "00ff10", []any{[]byte{0, 0xff, 0x10}, string([]byte{0, 0xff, 0x10})}},
		{Column{Kind: KindBit}, "258", []any{[]byte{1, 2}, []byte{0, 1, 2}, int64(258), uint64(258), string([]byte{1, 2})}},
	} {
		for _, v := range tc.in {
			got, null, err := Canonical(tc.col, v)
			require.NoError(t, err, "%s %T %v", tc.col.Kind, v, v)
			require.False(t, null)
			require.Equal(t, tc.want, got, "%s %T %v", tc.col.Kind, v, v)
		}
	}
	_, null, err := Canonical(Column{Kind: KindInt}, nil)
	require.NoError(t, err)
	require.True(t, null)
	_, _, err = Canonical(Column{Name: "c", Kind: KindInt}, []byte("x"))
	require.ErrorContains(t, err, "column c")
	_, _, err = Canonical(Column{Name: "c", Kind: KindBit}, []byte{1, 0, 0, 0, 0, 0, 0, 0, 0})
	require.Error(t, err)
}

func TestKindOf(t *testing.T) {
	for dt, want := range map[string]Kind{
		"int": KindInt, "bigint": KindInt, "year": KindYear, "float": KindFloat, "double": KindDouble,
		"decimal": KindDecimal, "varchar": KindText, "enum": KindText, "set": KindText, "timestamp": KindText,
		"time": KindText, "json": KindJSON, "blob": KindBytes, "binary": KindBytes, "bit": KindBit,
	} {
		got, err := KindOf(strings.ToUpper(dt), false)
		require.NoError(t, err)
		require.Equal(t, want, got, dt)
	}
	got, err := KindOf("bigint", true)
	require.NoError(t, err)
	require.Equal(t, KindUint, got)
	_, err = KindOf("geometry", false)
	require.Error(t, err)
}

func TestVerdict(t *testing.T) {
	r := &Report{Tables: []TableResult{
		{Table: "s.a", Topic: "tidb_s_a", Upstream: 3},
		{Table: "s.b", Topic: "tidb_s_b", Upstream: 5},
		{Table: "s.c", Skipped: "no key"},
	}}
	require.True(t, r.OK())
	require.Equal(t, "all 8 rows in 2 tables match TiDB", r.Verdict())
	r.Tables[1].Differ = 2
	require.False(t, r.OK())
	require.Equal(t, "2 rows differ in 1 of 2 tables: tidb_s_b", r.Verdict())
	var sb strings.Builder
	r.Write(&sb)
	require.True(t, strings.HasSuffix(sb.String(), "2 rows differ in 1 of 2 tables: tidb_s_b\n"), sb.String())
}

// FuzzCanonical: canonical text is a fixed point — rendering the
// canonical text of a value again gives the same text — and no input
// panics.
func FuzzCanonical(f *testing.F) {
	for _, s := range []string{"0", "-1", "1.50", "1e20", "0.1", `{"b":1,"a":[2]}`, "2024-01-02", "18446744073709551615", ""} {
		f.Add(s, uint8(0), uint8(2))
	}
	f.Fuzz(func(t *testing.T, s string, k, scale uint8) {
		c := Column{Name: "c", Kind: Kind(k%uint8(KindBit)) + 1, Scale: int(scale % 31)}
		got, null, err := Canonical(c, []byte(s))
		if err != nil || null {
			return
		}
		if c.Kind == KindBytes || c.Kind == KindBit {
			return // their canonical text is an encoding, not an input spelling
		}
		again, _, err := Canonical(c, got)
		if err != nil {
			t.Fatalf("%s: canonical %q of %q does not read back: %v", c.Kind, got, s, err)
		}
		if again != got {
			t.Fatalf("%s: %q -> %q -> %q", c.Kind, s, got, again)
		}
	})
}
