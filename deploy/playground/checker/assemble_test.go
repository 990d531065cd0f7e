package checker

import (
	"strings"
	"testing"

	"github.com/pingcap/kvproto/pkg/cdcpb"
)

func chg(key []byte, start, commit uint64, value []byte) Change {
	return Change{Key: key, StartTS: start, CommitTS: commit, Op: cdcpb.Event_Row_PUT, Value: value}
}

func del(key []byte, start, commit uint64) Change {
	return Change{Key: key, StartTS: start, CommitTS: commit, Op: cdcpb.Event_Row_DELETE}
}

func assemble(t *testing.T, rs ...*cdcpb.Event_Row) ([]Change, error) {
	t.Helper()
	a := NewAssembler()
	var out []Change
	for _, r := range rs {
		chs, err := a.Rows(r)
		if err != nil {
			return out, err
		}
		out = append(out, chs...)
	}
	return out, nil
}

func TestAssembler(t *testing.T) {
	emptyPut := put(k1, 90)
	emptyPut.Value = nil
	withShortValue := cm(k1, 90, 120)
	withShortValue.Value = []byte("short")
	gen2 := put(k1, 90)
	gen2.Generation, gen2.Value = 2, []byte("g2")
	gen1 := put(k1, 90)
	gen1.Generation, gen1.Value = 1, []byte("g1")
	badOp := cd(k1, 90, 120)
	badOp.OpType = cdcpb.Event_Row_UNKNOWN

	cases := []struct {
		name    string
		rows    []*cdcpb.Event_Row
		want    []Change
		wantErr string
	}{
		{name: "prewrite then commit takes the prewrite value",
			rows: []*cdcpb.Event_Row{initRow(), put(k1, 140), cm(k1, 140, 150)},
			want: []Change{chg(k1, 140, 150, val(140))}},
		{name: "a short value on the commit wins",
			rows: []*cdcpb.Event_Row{put(k1, 90), initRow(), withShortValue},
			want: []Change{chg(k1, 90, 120, []byte("short"))}},
		{name: "delete",
			rows: []*cdcpb.Event_Row{initRow(), pw(k1, 140, cdcpb.Event_Row_DELETE), cmDel(k1, 140, 150)},
			want: []Change{del(k1, 140, 150)}},
		{name: "committed rows stand alone, newest first from the scan",
			rows: []*cdcpb.Event_Row{cd(k2, 105, 110), cdDel(k2, 95, 101), initRow(), cd(k3, 160, 161)},
			want: []Change{chg(k2, 105, 110, val(105)), del(k2, 95, 101), chg(k3, 160, 161, val(160))}},
		{name: "rollback drops the prewrite",
			rows: []*cdcpb.Event_Row{initRow(), put(k1, 140), rb(k1, 140)}},
		{name: "commit before the scan prewrite waits for it",
			rows: []*cdcpb.Event_Row{cm(k1, 90, 120), put(k2, 95), put(k1, 90), initRow()},
			want: []Change{chg(k1, 90, 120, val(90))}},
		{name: "commit before init with a complete prewrite is emitted at once",
			rows: []*cdcpb.Event_Row{put(k1, 90), cm(k1, 90, 120)},
			want: []Change{chg(k1, 90, 120, val(90))}},
		{name: "unmatched commit before init is dropped at INITIALIZED",
			rows: []*cdcpb.Event_Row{cm(k1, 90, 120), cd(k1, 90, 120), initRow()},
			want: []Change{chg(k1, 90, 120, val(90))}},
		{name: "valueless PUT prewrite does not replace the real one",
			rows: []*cdcpb.Event_Row{initRow(), put(k1, 90), emptyPut, cm(k1, 90, 120)},
			want: []Change{chg(k1, 90, 120, val(90))}},
		{name: "valueless PUT prewrite before the scan's waits for it",
			rows: []*cdcpb.Event_Row{emptyPut, cm(k1, 90, 120), put(k1, 90), initRow()},
			want: []Change{chg(k1, 90, 120, val(90))}},
		{name: "valueless PUT prewrite is all there is at INITIALIZED",
			rows: []*cdcpb.Event_Row{emptyPut, cm(k1, 90, 120), initRow()},
			want: []Change{chg(k1, 90, 120, nil)}},
		{name: "older pipelined generation does not replace a newer one",
			rows: []*cdcpb.Event_Row{initRow(), gen2, gen1, cm(k1, 90, 120)},
			want: []Change{chg(k1, 90, 120, []byte("g2"))}},
		{name: "rollback before the scan prewrite",
			rows:    []*cdcpb.Event_Row{rb(k1, 90), put(k1, 90), initRow(), cm(k1, 90, 120)},
			wantErr: "has no PREWRITE"},
		{name: "commit without prewrite after INITIALIZED",
			rows:    []*cdcpb.Event_Row{initRow(), cm(k1, 140, 150)},
			wantErr: "has no PREWRITE"},
		{name: "unknown op",
			rows:    []*cdcpb.Event_Row{badOp},
			wantErr: "op_type UNKNOWN"},
		{name: "unknown row type with fields set",
			rows:    []*cdcpb.Event_Row{{Type: cdcpb.Event_UNKNOWN, Key: tk(1)}},
			wantErr: "row of type UNKNOWN"},
		{name: "lock-record rows are ignored",
			rows: []*cdcpb.Event_Row{{}, initRow(), {}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := assemble(t, tc.rows...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := CompareExactlyOnce(tc.want, got, 0, ^uint64(0)); err != nil {
				t.Error(err)
			}
			if len(got) != len(tc.want) {
				t.Errorf("got %d changes, want %d", len(got), len(tc.want))
			}
		})
	}
}

func TestAssemblerRowSingle(t *testing.T) {
	a := NewAssembler()
	if _, ok, err := a.Row(put(k1, 140)); ok || err != nil {
		t.Fatalf("PREWRITE: ok=%v err=%v", ok, err)
	}
	ch, ok, err := a.Row(cm(k1, 140, 150))
	if !ok || err != nil || ch.CommitTS != 150 || string(ch.Value) != string(val(140)) {
		t.Fatalf("COMMIT: %v ok=%v err=%v", ch, ok, err)
	}

	// Two valueless PUT prewrites committed before INITIALIZED both settle
	// at INITIALIZED, which Row cannot return.
	a = NewAssembler()
	for _, k := range [][]byte{k1, k2} {
		p := put(k, 90)
		p.Value = nil
		for _, r := range []*cdcpb.Event_Row{p, cm(k, 90, 120)} {
			if _, _, err := a.Row(r); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, _, err := a.Row(initRow()); err == nil {
		t.Fatal("Row(INITIALIZED) settling two commits: want an error")
	}
	if !a.Initialized() || a.PendingPrewrites() != 0 {
		t.Errorf("initialized=%v pending=%d", a.Initialized(), a.PendingPrewrites())
	}
}
