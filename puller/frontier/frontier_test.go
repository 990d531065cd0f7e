package frontier

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

type span struct {
	start, end string
	ts         uint64
}

func entries(f *Frontier) []span {
	var out []span
	f.Entries(func(s, e []byte, ts uint64) bool {
		out = append(out, span{string(s), string(e), ts})
		return true
	})
	return out
}

// checkInvariants verifies the internal structure: entries tile the span in
// key order, every entry is in the heap at its idx, and the heap is ordered.
func checkInvariants(t testing.TB, f *Frontier) {
	t.Helper()
	var prev *entry
	n := 0
	f.tree.Ascend(func(en *entry) bool {
		if prev == nil {
			require.Equal(t, f.start, en.start, "first entry must start at the span start")
		} else {
			require.True(t, bytes.Equal(prev.end, en.start), "gap or overlap between %q and %q", prev.end, en.start)
		}
		require.True(t, before(en.start, en.end), "empty entry [%q,%q)", en.start, en.end)
		require.Same(t, en, f.heap[en.idx], "heap index out of date")
		prev = en
		n++
		return true
	})
	require.NotNil(t, prev)
	require.True(t, bytes.Equal(prev.end, f.end), "last entry must end at the span end")
	require.Equal(t, n, len(f.heap))
	for i := 1; i < len(f.heap); i++ {
		require.LessOrEqual(t, f.heap[(i-1)/2].ts, f.heap[i].ts, "heap order")
	}
}

func TestForwardTable(t *testing.T) {
	type op struct {
		start, end string
		ts         uint64
	}
	tests := []struct {
		name        string
		span        span
		ops         []op
		want        []span
		wantLen     int
		wantMin     uint64
		minInStart  string
		minInEnd    string
		wantMinIn   uint64
		description string
	}{
		{
			name: "new span", span: span{"a", "z", 5},
			want: []span{{"a", "z", 5}}, wantLen: 1, wantMin: 5,
			minInStart: "b", minInEnd: "c", wantMinIn: 5,
		},
		{
			name: "forward the middle splits in three", span: span{"a", "z", 5},
			ops:  []op{{"c", "f", 9}},
			want: []span{{"a", "c", 5}, {"c", "f", 9}, {"f", "z", 5}}, wantLen: 3, wantMin: 5,
			minInStart: "c", minInEnd: "f", wantMinIn: 9,
		},
		{
			name: "forward the whole span", span: span{"a", "z", 5},
			ops:  []op{{"c", "f", 9}, {"a", "z", 7}},
			want: []span{{"a", "c", 7}, {"c", "f", 9}, {"f", "z", 7}}, wantLen: 3, wantMin: 7,
			minInStart: "b", minInEnd: "d", wantMinIn: 7,
		},
		{
			name: "never lowers", span: span{"a", "z", 5},
			ops:  []op{{"c", "f", 9}, {"c", "f", 6}, {"a", "z", 3}},
			want: []span{{"a", "c", 5}, {"c", "f", 9}, {"f", "z", 5}}, wantLen: 3, wantMin: 5,
			minInStart: "d", minInEnd: "e", wantMinIn: 9,
		},
		{
			name: "range outside the span is clipped", span: span{"c", "m", 5},
			ops:  []op{{"a", "e", 8}, {"k", "", 9}, {"x", "y", 100}, {"", "b", 100}},
			want: []span{{"c", "e", 8}, {"e", "k", 5}, {"k", "m", 9}}, wantLen: 3, wantMin: 5,
			minInStart: "", minInEnd: "", wantMinIn: 5,
		},
		{
			name: "unbounded span end", span: span{"", "", 1},
			ops:  []op{{"m", "", 4}, {"", "m", 3}},
			want: []span{{"", "m", 3}, {"m", "", 4}}, wantLen: 2, wantMin: 3,
			minInStart: "x", minInEnd: "", wantMinIn: 4,
		},
		{
			name: "equal neighbours are merged in Entries but kept as boundaries", span: span{"a", "z", 1},
			ops:  []op{{"a", "m", 4}, {"m", "z", 4}},
			want: []span{{"a", "z", 4}}, wantLen: 2, wantMin: 4,
			minInStart: "a", minInEnd: "z", wantMinIn: 4,
		},
		{
			name: "a covering forward removes stale inner boundaries (region merge)", span: span{"a", "z", 1},
			ops:  []op{{"a", "c", 4}, {"c", "f", 6}, {"f", "z", 5}, {"a", "z", 7}},
			want: []span{{"a", "z", 7}}, wantLen: 1, wantMin: 7,
			minInStart: "b", minInEnd: "y", wantMinIn: 7,
		},
		{
			name: "covering forward keeps higher parts", span: span{"a", "z", 1},
			ops:  []op{{"a", "c", 4}, {"c", "f", 9}, {"f", "z", 5}, {"a", "z", 7}},
			want: []span{{"a", "c", 7}, {"c", "f", 9}, {"f", "z", 7}}, wantLen: 3, wantMin: 7,
			minInStart: "b", minInEnd: "d", wantMinIn: 7,
		},
		{
			name: "empty and inverted ranges are no-ops", span: span{"a", "z", 1},
			ops:  []op{{"c", "c", 9}, {"d", "c", 9}},
			want: []span{{"a", "z", 1}}, wantLen: 1, wantMin: 1,
			minInStart: "c", minInEnd: "c", wantMinIn: 0,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := New([]byte(tc.span.start), []byte(tc.span.end), tc.span.ts)
			for _, o := range tc.ops {
				f.Forward([]byte(o.start), []byte(o.end), o.ts)
				checkInvariants(t, f)
			}
			require.Equal(t, tc.want, entries(f))
			require.Equal(t, tc.wantLen, f.Len())
			require.Equal(t, tc.wantMin, f.Frontier())
			require.Equal(t, tc.wantMinIn, f.MinIn([]byte(tc.minInStart), []byte(tc.minInEnd)))
		})
	}
}

func TestEntriesStops(t *testing.T) {
	f := New([]byte("a"), []byte("z"), 1)
	f.Forward([]byte("c"), []byte("f"), 2)
	calls := 0
	f.Entries(func(_, _ []byte, _ uint64) bool {
		calls++
		return false
	})
	require.Equal(t, 1, calls)
}

func TestKeysAreCopied(t *testing.T) {
	start, end := []byte("a"), []byte("z")
	f := New(start, end, 1)
	s, e := []byte("c"), []byte("f")
	f.Forward(s, e, 2)
	start[0], end[0], s[0], e[0] = 'X', 'X', 'X', 'X'
	require.Equal(t, []span{{"a", "c", 1}, {"c", "f", 2}, {"f", "z", 1}}, entries(f))
}

// TestBoundariesStayBounded replays region layouts that keep splitting and
// merging at different keys: the number of tracked entries must follow the
// current layout instead of accumulating every boundary ever seen.
func TestBoundariesStayBounded(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	f := New(nil, nil, 1)
	ts := uint64(1)
	maxLen := 0
	for round := 0; round < 200; round++ {
		n := 1 + rng.IntN(20)
		bounds := make([]int, 0, n)
		for i := 0; i < n; i++ {
			bounds = append(bounds, rng.IntN(1000))
		}
		regions := layout(bounds)
		// Two resolved-ts rounds per layout, each region reporting in random
		// order, as TiKV's batched ResolvedTs does.
		for r := 0; r < 2; r++ {
			ts++
			for _, i := range rng.Perm(len(regions)) {
				f.Forward(regions[i][0], regions[i][1], ts)
			}
			require.Equal(t, ts, f.Frontier())
		}
		checkInvariants(t, f)
		require.LessOrEqual(t, f.Len(), len(regions), "round %d", round)
		maxLen = max(maxLen, f.Len())
	}
	require.LessOrEqual(t, maxLen, 21)
}

// layout turns split points into contiguous regions covering (-∞, +∞).
func layout(points []int) [][2][]byte {
	seen := map[int]bool{}
	var keys [][]byte
	for _, p := range points {
		if !seen[p] {
			seen[p] = true
			keys = append(keys, []byte(fmt.Sprintf("k%04d", p)))
		}
	}
	slicesSortBytes(keys)
	var out [][2][]byte
	prev := []byte(nil)
	for _, k := range keys {
		out = append(out, [2][]byte{prev, k})
		prev = k
	}
	return append(out, [2][]byte{prev, nil})
}

func slicesSortBytes(keys [][]byte) {
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && bytes.Compare(keys[j-1], keys[j]) > 0; j-- {
			keys[j-1], keys[j] = keys[j], keys[j-1]
		}
	}
}

// model is the naive reference: elementary segments between every boundary
// ever seen, each with its ts, scanned linearly.
type model struct {
	starts [][]byte // sorted, starts[0] = span start
	ts     []uint64
	end    []byte // empty = +∞
}

func newModel(start, end []byte, ts uint64) *model {
	return &model{starts: [][]byte{bytes.Clone(start)}, ts: []uint64{ts}, end: bytes.Clone(end)}
}

func (m *model) segEnd(i int) []byte {
	if i+1 < len(m.starts) {
		return m.starts[i+1]
	}
	return m.end
}

// cut makes key a segment boundary if it lies strictly inside the span.
func (m *model) cut(key []byte) {
	if bytes.Compare(key, m.starts[0]) <= 0 || !before(key, m.end) {
		return
	}
	for i := range m.starts {
		if bytes.Equal(m.starts[i], key) {
			return
		}
		if before(key, m.segEnd(i)) {
			m.starts = append(m.starts[:i+1], append([][]byte{bytes.Clone(key)}, m.starts[i+1:]...)...)
			m.ts = append(m.ts[:i+1], append([]uint64{m.ts[i]}, m.ts[i+1:]...)...)
			return
		}
	}
}

func (m *model) clip(start, end []byte) ([]byte, []byte) {
	s := start
	if bytes.Compare(s, m.starts[0]) < 0 {
		s = m.starts[0]
	}
	e := end
	if !endLE(e, m.end) {
		e = m.end
	}
	return s, e
}

func (m *model) forward(start, end []byte, ts uint64) {
	s, e := m.clip(start, end)
	if !before(s, e) {
		return
	}
	m.cut(s)
	if len(e) > 0 {
		m.cut(e)
	}
	for i := range m.starts {
		if bytes.Compare(m.starts[i], s) >= 0 && endLE(m.segEnd(i), e) {
			m.ts[i] = max(m.ts[i], ts)
		}
	}
}

func (m *model) frontier() uint64 {
	out := m.ts[0]
	for _, ts := range m.ts {
		out = min(out, ts)
	}
	return out
}

func (m *model) minIn(start, end []byte) uint64 {
	s, e := m.clip(start, end)
	if !before(s, e) {
		return 0
	}
	var out uint64
	found := false
	for i := range m.starts {
		// Segment [a,b) intersects [s,e) iff a < e and s < b.
		if before(m.starts[i], e) && before(s, m.segEnd(i)) {
			if !found || m.ts[i] < out {
				out = m.ts[i]
			}
			found = true
		}
	}
	return out
}

func (m *model) entries() []span {
	var out []span
	for i := range m.starts {
		if n := len(out); n > 0 && out[n-1].ts == m.ts[i] {
			out[n-1].end = string(m.segEnd(i))
			continue
		}
		out = append(out, span{string(m.starts[i]), string(m.segEnd(i)), m.ts[i]})
	}
	return out
}

// keyAlphabet is small on purpose, so that random keys collide with each
// other and with span bounds and the prefix / 0x00 / 0xff orderings are hit.
var keyAlphabet = []byte{0x00, 0x01, 'a', 0xff}

// byteSource turns fuzz input into choices; exhausted input reads as zeros.
type byteSource struct{ data []byte }

func (b *byteSource) next() byte {
	if len(b.data) == 0 {
		return 0
	}
	c := b.data[0]
	b.data = b.data[1:]
	return c
}

func (b *byteSource) key() []byte {
	n := int(b.next() % 4)
	k := make([]byte, n)
	for i := range k {
		k[i] = keyAlphabet[b.next()%byte(len(keyAlphabet))]
	}
	return k
}

// endKey returns an end key, +∞ (empty) about a quarter of the time.
func (b *byteSource) endKey() []byte {
	if b.next()%4 == 0 {
		return nil
	}
	k := b.key()
	if len(k) == 0 {
		k = []byte{0x00}
	}
	return k
}

// runAgainstModel applies ops decoded from src to a Frontier and the model
// and requires them to agree after each step.
func runAgainstModel(t testing.TB, src *byteSource, ops int) {
	start, end := src.key(), src.endKey()
	if len(end) > 0 && bytes.Compare(start, end) >= 0 {
		start, end = nil, nil
	}
	base := uint64(src.next() % 8)
	f := New(start, end, base)
	m := newModel(start, end, base)
	last := f.Frontier()
	for i := 0; i < ops; i++ {
		s, e, ts := src.key(), src.endKey(), uint64(src.next()%32)
		f.Forward(s, e, ts)
		m.forward(s, e, ts)
		checkInvariants(t, f)
		require.Equal(t, m.frontier(), f.Frontier(), "Frontier after Forward(%x,%x,%d)", s, e, ts)
		require.GreaterOrEqual(t, f.Frontier(), last, "frontier went backwards")
		last = f.Frontier()
		require.Equal(t, m.entries(), entries(f), "Entries after Forward(%x,%x,%d)", s, e, ts)
		qs, qe := src.key(), src.endKey()
		require.Equal(t, m.minIn(qs, qe), f.MinIn(qs, qe), "MinIn(%x,%x)", qs, qe)
		require.LessOrEqual(t, f.Len(), len(m.starts))
	}
}

func TestAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for iter := 0; iter < 2000; iter++ {
		data := make([]byte, 1024)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		runAgainstModel(t, &byteSource{data: data}, 60)
	}
}

func FuzzFrontier(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	f.Add([]byte(strings.Repeat("\x03\x01\x02\x03\x05\x07\x11", 40)))
	f.Fuzz(func(t *testing.T, data []byte) {
		src := &byteSource{data: data}
		// Bounded so that one long input cannot stall the fuzzer: every
		// step checks the whole structure against the quadratic model.
		runAgainstModel(t, src, min(1+len(data)/6, 100))
	})
}

// regionKeys returns n sorted keys shaped like memcomparable TiDB record
// keys of one table (19 bytes sharing a 10-byte prefix), so comparisons cost
// what they cost in production.
func regionKeys(n int) [][]byte {
	keys := make([][]byte, n)
	for i := range keys {
		k := []byte("t\x80\x00\x00\x00\x00\x00\x00\xff\x2a_r")
		k = binary.BigEndian.AppendUint64(k, uint64(i)*1000)
		keys[i] = k
	}
	return keys
}

func BenchmarkForwardFrontier(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("ranges=%d", n), func(b *testing.B) {
			keys := regionKeys(n + 1)
			f := New(keys[0], keys[n], 1)
			for i := 0; i < n; i++ {
				f.Forward(keys[i], keys[i+1], 2)
			}
			require.Equal(b, n, f.Len())
			order := rand.New(rand.NewPCG(3, 4)).Perm(n)
			ts := uint64(2)
			var sink uint64
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				j := i % n
				if j == 0 {
					ts++
				}
				r := order[j]
				f.Forward(keys[r], keys[r+1], ts)
				sink += f.Frontier()
			}
			b.StopTimer()
			require.NotZero(b, sink)
			require.Equal(b, n, f.Len())
		})
	}
}

// BenchmarkForwardSplit measures the first report of regions into a fresh
// span (every Forward splits an entry), i.e. the cost of a subscription's
// start or of a wave of region splits.
func BenchmarkForwardSplit(b *testing.B) {
	const n = 100_000
	keys := regionKeys(n + 1)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; {
		f := New(keys[0], keys[n], 1)
		for r := 0; r < n && i < b.N; r, i = r+1, i+1 {
			f.Forward(keys[r], keys[r+1], 2)
		}
	}
}

func BenchmarkMinIn(b *testing.B) {
	const n = 100_000
	keys := regionKeys(n + 1)
	f := New(keys[0], keys[n], 1)
	for i := 0; i < n; i++ {
		f.Forward(keys[i], keys[i+1], uint64(2+i%7))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := i % (n - 4)
		_ = f.MinIn(keys[r], keys[r+4])
	}
}
