package spill

import (
	"encoding/binary"
	"testing"
)

// The filter never forgets a key added since its reset, and answers "not
// there" for nearly every other: a false "maybe" costs a read, a false
// "no" would lose a PREWRITE's replacement.
func TestKeyFilter(t *testing.T) {
	var f keyFilter
	key := func(i uint64) []byte { return binary.BigEndian.AppendUint64([]byte("prefix-startts-t_r"), i) }
	const n = 200_000
	var grew int64
	for i := range uint64(n) {
		grew += f.add(key(2 * i))
	}
	if grew != f.bytes() {
		t.Errorf("add reported %d bytes allocated, the filter holds %d", grew, f.bytes())
	}
	if per := float64(f.bytes()) / n; per > 4 {
		t.Errorf("%.1f bytes a key", per)
	}
	for i := range uint64(n) {
		if !f.mayContain(key(2 * i)) {
			t.Fatalf("key %d added and not found", 2*i)
		}
	}
	fp := 0
	for i := range uint64(n) {
		if f.mayContain(key(2*i + 1)) {
			fp++
		}
	}
	if rate := float64(fp) / n; rate > 0.02 {
		t.Errorf("false positives %.2f%%, want under 2%%", 100*rate)
	} else {
		t.Logf("%d parts, %d bytes, false positives %.3f%%", len(f.parts), f.bytes(), 100*rate)
	}
	f.reset()
	if f.mayContain(key(0)) || f.bytes() != 0 {
		t.Error("a reset filter still answers for its keys")
	}
}
