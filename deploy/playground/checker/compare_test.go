package checker

import (
	"strings"
	"testing"
)

func TestCompare(t *testing.T) {
	history := []Change{
		chg(k1, 90, 101, []byte("a")),
		del(k2, 95, 110),
		chg(k1, 120, 130, []byte("b")),
		chg(k3, 140, 150, []byte("c")),
	}
	cases := []struct {
		name      string
		got       []Change
		from, to  uint64
		exactOnce bool
		want      []string // substrings of the error; none means success
	}{
		{name: "equal", got: history, from: 0, to: 200},
		{name: "window excludes both sides", got: history[1:3], from: 101, to: 130},
		{name: "window edges: from exclusive, to inclusive", got: history[2:3], from: 110, to: 130},
		{name: "identical duplicates tolerated", got: append(history, history[1], history[2]), from: 0, to: 200},
		{name: "duplicates flagged when exactly once", got: append(history, history[1]), from: 0, to: 200, exactOnce: true,
			want: []string{"1 duplicated", "DELETE t1_r2 start=95 commit=110", "delivered 2 times"}},
		{name: "missing", got: history[:3], from: 0, to: 200,
			want: []string{"1 missing", "missing:\n  PUT t1_r3 start=140 commit=150"}},
		{name: "extra", got: append(history, chg(k3, 160, 170, []byte("d"))), from: 0, to: 200,
			want: []string{"1 extra", "extra:\n  PUT t1_r3 start=160 commit=170"}},
		{name: "extra outside the window is ignored", got: append(history, chg(k3, 160, 170, nil)), from: 0, to: 150},
		{name: "mismatched value", got: []Change{history[0], history[1], chg(k1, 120, 130, []byte("x")), history[3]}, from: 0, to: 200,
			want: []string{"1 mismatched", `want PUT t1_r1 start=120 commit=130 value="b"`, `got  PUT t1_r1 start=120 commit=130 value="x"`}},
		{name: "mismatched op", got: []Change{history[0], del(k1, 120, 130), history[1], history[3]}, from: 0, to: 200,
			want: []string{"1 mismatched"}},
		{name: "conflicting duplicate", got: append(history, chg(k1, 120, 130, []byte("x"))), from: 0, to: 200,
			want: []string{"1 mismatched"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmp := Compare
			if tc.exactOnce {
				cmp = CompareExactlyOnce
			}
			err := cmp(history, tc.got, tc.from, tc.to)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("want an error")
			}
			for _, s := range tc.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error lacks %q:\n%v", s, err)
				}
			}
		})
	}
}

func TestCompareConflictingExpected(t *testing.T) {
	err := Compare([]Change{chg(k1, 1, 2, []byte("a")), chg(k1, 1, 2, []byte("b"))}, nil, 0, 10)
	if err == nil || !strings.Contains(err.Error(), "invalid expected history") {
		t.Fatalf("err = %v", err)
	}
}

func TestCompareLongDiffIsCapped(t *testing.T) {
	var expected []Change
	for i := range 50 {
		expected = append(expected, chg(tk(int64(i)), uint64(10+2*i), uint64(11+2*i), nil))
	}
	err := Compare(expected, nil, 0, 1000)
	if err == nil || !strings.Contains(err.Error(), "50 missing") || !strings.Contains(err.Error(), "… and 30 more") {
		t.Fatalf("err = %v", err)
	}
}

func TestFormatKey(t *testing.T) {
	for k, want := range map[string]string{
		string(tk(7)):                             "t1_r7",
		string(tableKey(42, -3)):                  "t42_r-3",
		string(append(tablePrefix(5, 'i'), 1, 2)): "t5_i0102",
		"m\x01": "6d01",
		"":      "",
	} {
		if got := FormatKey([]byte(k)); got != want {
			t.Errorf("FormatKey(%x) = %q, want %q", k, got, want)
		}
	}
}
