package checker

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/pingcap/tidb/pkg/util/codec"
)

const diffLinesPerKind = 20

// Compare checks delivery against history: within the window
// from < CommitTS ≤ to, every expected change is delivered and nothing else
// is. Changes are identified by (key, commit_ts); repeated deliveries of the
// same change are tolerated (a region re-subscribed after a split or error
// legitimately re-sends what was committed after its new checkpoint), but
// repeated deliveries that disagree are not. The error is a readable diff.
func Compare(expected, got []Change, from, to uint64) error {
	return compare(expected, got, from, to, false)
}

// CompareExactlyOnce is Compare that also fails on repeated deliveries; use
// it where no re-subscription happened.
func CompareExactlyOnce(expected, got []Change, from, to uint64) error {
	return compare(expected, got, from, to, true)
}

type versionKey struct {
	key      string
	commitTS uint64
}

func compare(expected, got []Change, from, to uint64, exactlyOnce bool) error {
	in := func(c Change) bool { return c.CommitTS > from && c.CommitTS <= to }
	var d diff
	want := make(map[versionKey]Change)
	for _, c := range expected {
		if !in(c) {
			continue
		}
		k := versionKey{string(c.Key), c.CommitTS}
		if prev, ok := want[k]; ok && !sameChange(prev, c) {
			d.add(&d.badExpected, c.CommitTS, c.Key, fmt.Sprintf("expected lists %s and %s", prev, c))
			continue
		}
		want[k] = c
	}
	delivered := make(map[versionKey][]Change)
	for _, c := range got {
		if in(c) {
			k := versionKey{string(c.Key), c.CommitTS}
			delivered[k] = append(delivered[k], c)
		}
	}
	for k, w := range want {
		gs := delivered[k]
		if len(gs) == 0 {
			d.add(&d.missing, w.CommitTS, w.Key, w.String())
			continue
		}
		for _, g := range gs {
			if !sameChange(w, g) {
				d.add(&d.mismatched, w.CommitTS, w.Key, fmt.Sprintf("want %s\n      got  %s", w, g))
				break
			}
		}
		if exactlyOnce && len(gs) > 1 {
			d.add(&d.duplicated, w.CommitTS, w.Key, fmt.Sprintf("%s delivered %d times", w, len(gs)))
		}
	}
	for k, gs := range delivered {
		if _, ok := want[k]; ok {
			continue
		}
		line := gs[0].String()
		if len(gs) > 1 {
			line = fmt.Sprintf("%s (delivered %d times)", line, len(gs))
		}
		d.add(&d.extra, gs[0].CommitTS, gs[0].Key, line)
	}
	return d.err(from, to)
}

func sameChange(a, b Change) bool {
	return a.StartTS == b.StartTS && a.Op == b.Op && bytes.Equal(a.Value, b.Value)
}

type diffLine struct {
	commitTS uint64
	key      []byte
	text     string
}

type diff struct {
	missing, extra, mismatched, duplicated, badExpected []diffLine
}

func (d *diff) add(list *[]diffLine, ts uint64, key []byte, text string) {
	*list = append(*list, diffLine{ts, key, text})
}

func (d *diff) err(from, to uint64) error {
	n := len(d.missing) + len(d.extra) + len(d.mismatched) + len(d.duplicated) + len(d.badExpected)
	if n == 0 {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "checker: delivered changes differ from history in (%d, %d]: %d missing, %d extra, %d mismatched, %d duplicated",
		from, to, len(d.missing), len(d.extra), len(d.mismatched), len(d.duplicated))
	section := func(name string, lines []diffLine) {
		if len(lines) == 0 {
			return
		}
		slices.SortFunc(lines, func(a, b diffLine) int {
			if a.commitTS != b.commitTS {
				if a.commitTS < b.commitTS {
					return -1
				}
				return 1
			}
			return bytes.Compare(a.key, b.key)
		})
		fmt.Fprintf(&b, "\n%s:", name)
		for i, l := range lines {
			if i == diffLinesPerKind {
				fmt.Fprintf(&b, "\n  … and %d more", len(lines)-i)
				break
			}
			fmt.Fprintf(&b, "\n  %s", l.text)
		}
	}
	section("invalid expected history", d.badExpected)
	section("missing", d.missing)
	section("extra", d.extra)
	section("mismatched", d.mismatched)
	section("duplicated", d.duplicated)
	return fmt.Errorf("%s", b.String())
}

// FormatKey renders a raw key for people: TiDB record keys as
// t<table>_r<int handle>, other table keys as t<table>_<rest in hex>,
// anything else in hex.
func FormatKey(k []byte) string {
	const tableKeyLen = 1 + 8 // 't' + encoded table id
	if len(k) < tableKeyLen || k[0] != 't' {
		return fmt.Sprintf("%x", k)
	}
	_, tid, err := codec.DecodeInt(k[1:tableKeyLen])
	if err != nil {
		return fmt.Sprintf("%x", k)
	}
	rest := k[tableKeyLen:]
	if len(rest) == 2+8 && rest[0] == '_' && rest[1] == 'r' {
		_, h, _ := codec.DecodeInt(rest[2:])
		return fmt.Sprintf("t%d_r%d", tid, h)
	}
	if len(rest) >= 2 && rest[0] == '_' {
		return fmt.Sprintf("t%d_%c%x", tid, rest[1], rest[2:])
	}
	return fmt.Sprintf("t%d%x", tid, rest)
}

func fmtValue(v []byte) string {
	const maxShown = 24
	short := v
	if len(short) > maxShown {
		short = short[:maxShown]
	}
	var s string
	if utf8.Valid(short) {
		s = fmt.Sprintf("%q", short)
	} else {
		s = fmt.Sprintf("%x", short)
	}
	if len(v) > maxShown {
		s += fmt.Sprintf("…(%d bytes)", len(v))
	}
	return s
}
