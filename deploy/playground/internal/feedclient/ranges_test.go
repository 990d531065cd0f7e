package feedclient

import (
	"fmt"
	"strings"
	"testing"
)

func dump(m *rangeMap) string {
	var b strings.Builder
	for _, p := range m.parts {
		end := string(p.end)
		if p.end == nil {
			end = "+inf"
		}
		owner := "-"
		if p.sub != nil {
			owner = fmt.Sprint(p.sub.regionID)
		}
		init := ""
		if p.initialized {
			init = "*"
		}
		fmt.Fprintf(&b, "[%s,%s)@%d%s:%s ", p.start, end, p.ts, init, owner)
	}
	return strings.TrimSpace(b.String())
}

func TestRangeMapLockSplitsAndMerges(t *testing.T) {
	for _, end := range [][]byte{[]byte("z"), nil} {
		m := newRangeMap([]byte("a"), end, 10)
		endS := "z"
		if end == nil {
			endS = "+inf"
		}
		s1 := &sub{regionID: 1}
		p1, err := m.lock([]byte("a"), []byte("f"), s1)
		if err != nil {
			t.Fatal(err)
		}
		s2 := &sub{regionID: 2}
		p2, err := m.lock([]byte("f"), end, s2)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := dump(m), "[a,f)@10:1 [f,"+endS+")@10:2"; got != want {
			t.Fatalf("after locks: %s, want %s", got, want)
		}
		if _, ok := m.resolved(); ok {
			t.Fatal("resolved before any range initialised")
		}
		p1.initialized, p2.initialized = true, true
		p1.ts, p2.ts = 30, 20
		if ts, ok := m.resolved(); !ok || ts != 20 {
			t.Fatalf("resolved = %d %v, want 20", ts, ok)
		}
		// Overlapping a locked range is refused and changes nothing.
		if _, err := m.lock([]byte("c"), []byte("g"), &sub{regionID: 3}); err == nil {
			t.Fatal("lock over a locked range succeeded")
		}
		// Region 1 splits at c: the halves inherit its checkpoint.
		p1.sub = nil
		if _, err := m.lock([]byte("c"), []byte("f"), &sub{regionID: 3}); err != nil {
			t.Fatal(err)
		}
		if got, want := dump(m), "[a,c)@30*:- [c,f)@30*:3 [f,"+endS+")@20*:2"; got != want {
			t.Fatalf("after split: %s, want %s", got, want)
		}
		// A region merged over [a,g) takes the lowest checkpoint it covers.
		for _, p := range m.parts {
			p.sub = nil
		}
		p, err := m.lock([]byte("b"), []byte("g"), &sub{regionID: 4})
		if err != nil {
			t.Fatal(err)
		}
		if p.ts != 20 || !p.initialized {
			t.Fatalf("merged part %+v", p)
		}
		if got, want := dump(m), "[a,b)@30*:- [b,g)@20*:4 [g,"+endS+")@20*:-"; got != want {
			t.Fatalf("after merge: %s, want %s", got, want)
		}
		// A fresh piece holds the span back until it initialises.
		m.parts[0].initialized = false
		if _, ok := m.resolved(); ok {
			t.Fatal("resolved with an uninitialised piece")
		}
	}
}

func TestRangeMapRejectsRangesOutsideSpan(t *testing.T) {
	m := newRangeMap([]byte("b"), []byte("y"), 0)
	for _, r := range [][2][]byte{
		{[]byte("a"), []byte("c")},
		{[]byte("c"), []byte("z")},
		{[]byte("c"), nil},
		{[]byte("d"), []byte("d")},
		{[]byte("e"), []byte("d")},
	} {
		if _, err := m.lock(r[0], r[1], &sub{}); err == nil {
			t.Errorf("lock [%s, %s) succeeded", r[0], r[1])
		}
	}
	if len(m.parts) != 1 || m.parts[0].sub != nil {
		t.Fatalf("failed locks changed the map: %s", dump(m))
	}
}
