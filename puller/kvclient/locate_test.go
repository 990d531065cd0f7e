package kvclient

import (
	"testing"

	"github.com/tikv/client-go/v2/kv"
)

func TestMergeRangesForABatchedScan(t *testing.T) {
	r := func(s, e string) kv.KeyRange { return kv.KeyRange{StartKey: []byte(s), EndKey: []byte(e)} }
	got := mergeRanges([]kv.KeyRange{r("m", "p"), r("a", "c"), r("c", "d"), r("b", "c"), r("x", ""), r("y", "z"), r("e", "f")})
	want := []kv.KeyRange{r("a", "d"), r("e", "f"), r("m", "p"), r("x", "")}
	if len(got) != len(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	for i := range want {
		if string(got[i].StartKey) != string(want[i].StartKey) || string(got[i].EndKey) != string(want[i].EndKey) {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}
