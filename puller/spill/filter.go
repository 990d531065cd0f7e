package spill

import "hash/maphash"

// keyFilter remembers, approximately, the keys a Space has put on disk
// since it last had none, so that the look-up every PREWRITE makes for an
// older one of its lock (almost always absent) costs no read: pebble's own
// filters answer it too, but only after a memtable search and a filter
// block per file, which churn through the block cache while a large
// transaction's rows stream past.
//
// It is a chain of Bloom filters, each sized for twice the keys of the one
// before, since a Space cannot know how many rows will come; deletes are
// not removed (a Bloom filter cannot), and the chain is dropped when the
// Space's last row on disk is gone.
type keyFilter struct {
	seed  maphash.Seed
	parts []bloomPart
}

type bloomPart struct {
	bits     []uint64
	n, limit int
}

// 14 bits and 10 probes a key: about 0.1% false positives a full part, so
// the dozen parts of a million rows stay near 1%, at 1.75 bytes a row on
// disk. A Space with a few rows on disk pays for the first part: 896
// bytes.
const (
	filterBitsPerKey = 14
	filterProbes     = 10
	filterFirstKeys  = 512
)

// add adds k and returns the bytes it allocated for it (a new part).
func (f *keyFilter) add(k []byte) (grew int64) {
	if len(f.parts) == 0 {
		f.seed = maphash.MakeSeed()
	}
	if len(f.parts) == 0 || f.parts[len(f.parts)-1].n >= f.parts[len(f.parts)-1].limit {
		limit := filterFirstKeys
		if len(f.parts) > 0 {
			limit = 2 * f.parts[len(f.parts)-1].limit
		}
		f.parts = append(f.parts, bloomPart{bits: make([]uint64, (limit*filterBitsPerKey+63)/64), limit: limit})
		grew = int64(len(f.parts[len(f.parts)-1].bits) * 8)
	}
	p := &f.parts[len(f.parts)-1]
	h := maphash.Bytes(f.seed, k)
	h1, h2 := uint32(h), uint32(h>>32)|1
	m := uint32(len(p.bits) * 64)
	for i := range uint32(filterProbes) {
		b := (h1 + i*h2) % m
		p.bits[b/64] |= 1 << (b % 64)
	}
	p.n++
	return grew
}

// mayContain is false when k was certainly not added since the last reset.
func (f *keyFilter) mayContain(k []byte) bool {
	if len(f.parts) == 0 {
		return false
	}
	h := maphash.Bytes(f.seed, k)
	h1, h2 := uint32(h), uint32(h>>32)|1
next:
	for i := range f.parts {
		p := &f.parts[i]
		m := uint32(len(p.bits) * 64)
		for j := range uint32(filterProbes) {
			b := (h1 + j*h2) % m
			if p.bits[b/64]&(1<<(b%64)) == 0 {
				continue next
			}
		}
		return true
	}
	return false
}

func (f *keyFilter) reset() { f.parts = nil }

// bytes is the memory the filter holds.
func (f *keyFilter) bytes() int64 {
	var n int64
	for _, p := range f.parts {
		n += int64(len(p.bits) * 8)
	}
	return n
}
