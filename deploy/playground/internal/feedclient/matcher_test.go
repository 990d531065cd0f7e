package feedclient

import (
	"fmt"
	"strings"
	"testing"

	"github.com/pingcap/kvproto/pkg/cdcpb"
)

const (
	put = cdcpb.Event_Row_PUT
	del = cdcpb.Event_Row_DELETE
)

func prewrite(key string, start uint64, op cdcpb.Event_Row_OpType, val, old string) *cdcpb.Event_Row {
	return &cdcpb.Event_Row{Type: cdcpb.Event_PREWRITE, Key: []byte(key), StartTs: start, OpType: op, Value: []byte(val), OldValue: []byte(old)}
}

func commit(key string, start, commit uint64, op cdcpb.Event_Row_OpType, val string) *cdcpb.Event_Row {
	return &cdcpb.Event_Row{Type: cdcpb.Event_COMMIT, Key: []byte(key), StartTs: start, CommitTs: commit, OpType: op, Value: []byte(val)}
}

func committed(key string, start, commit uint64, op cdcpb.Event_Row_OpType, val, old string) *cdcpb.Event_Row {
	return &cdcpb.Event_Row{Type: cdcpb.Event_COMMITTED, Key: []byte(key), StartTs: start, CommitTs: commit, OpType: op, Value: []byte(val), OldValue: []byte(old)}
}

func rollback(key string, start uint64) *cdcpb.Event_Row {
	return &cdcpb.Event_Row{Type: cdcpb.Event_ROLLBACK, Key: []byte(key), StartTs: start}
}

var initialized = &cdcpb.Event_Row{Type: cdcpb.Event_INITIALIZED}

func fmtChange(c Change) string {
	return fmt.Sprintf("%s@%d/%d %v %q old %q", c.Key, c.StartTS, c.CommitTS, c.Op, c.Value, c.OldValue)
}

func TestMatcher(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rows     []*cdcpb.Event_Row
		want     []string
		problems int
	}{{
		name: "commit takes value and old value from its prewrite",
		rows: []*cdcpb.Event_Row{initialized, prewrite("k", 10, put, "v", "o"), commit("k", 10, 11, put, "")},
		want: []string{`k@10/11 PUT "v" old "o"`},
	}, {
		name: "a short value in the commit wins",
		rows: []*cdcpb.Event_Row{initialized, prewrite("k", 10, put, "v", "o"), commit("k", 10, 11, put, "w")},
		want: []string{`k@10/11 PUT "w" old "o"`},
	}, {
		name: "delete has no value",
		rows: []*cdcpb.Event_Row{initialized, prewrite("k", 10, del, "", "o"), commit("k", 10, 11, del, "")},
		want: []string{`k@10/11 DELETE "" old "o"`},
	}, {
		name: "a value-less prewrite rewrite keeps the value",
		rows: []*cdcpb.Event_Row{initialized, prewrite("k", 10, put, "v", "o"), prewrite("k", 10, put, "", ""), commit("k", 10, 11, put, "")},
		want: []string{`k@10/11 PUT "v" old "o"`},
	}, {
		name: "committed rows pass as they are",
		rows: []*cdcpb.Event_Row{committed("k", 5, 6, put, "v", "o"), committed("k", 3, 4, del, "", "p"), initialized},
		want: []string{`k@5/6 PUT "v" old "o"`, `k@3/4 DELETE "" old "p"`},
	}, {
		name: "commit before its scanned prewrite waits for INITIALIZED",
		rows: []*cdcpb.Event_Row{commit("k", 10, 11, put, ""), prewrite("k", 10, put, "v", "o"), initialized},
		want: []string{`k@10/11 PUT "v" old "o"`},
	}, {
		name: "commit of a prewrite with a value matches before INITIALIZED",
		rows: []*cdcpb.Event_Row{prewrite("k", 10, put, "v", "o"), commit("k", 10, 11, put, ""), initialized},
		want: []string{`k@10/11 PUT "v" old "o"`},
	}, {
		name: "delete commit before INITIALIZED waits for it",
		rows: []*cdcpb.Event_Row{prewrite("k", 10, del, "", "o"), commit("k", 10, 11, del, ""), initialized},
		want: []string{`k@10/11 DELETE "" old "o"`},
	}, {
		name: "parked commit whose data came as COMMITTED is dropped",
		rows: []*cdcpb.Event_Row{commit("k", 10, 11, put, ""), committed("k", 10, 11, put, "v", "o"), initialized},
		want: []string{`k@10/11 PUT "v" old "o"`},
	}, {
		name:     "rollback drops the prewrite",
		rows:     []*cdcpb.Event_Row{initialized, prewrite("k", 10, put, "v", "o"), rollback("k", 10), commit("k", 10, 11, put, "")},
		problems: 1,
	}, {
		name:     "rollback before INITIALIZED applies after it",
		rows:     []*cdcpb.Event_Row{rollback("k", 10), prewrite("k", 10, put, "v", "o"), initialized, commit("k", 10, 11, put, "")},
		problems: 1,
	}, {
		name:     "commit without prewrite after INITIALIZED is a violation",
		rows:     []*cdcpb.Event_Row{initialized, commit("k", 10, 11, put, "")},
		problems: 1,
	}, {
		name:     "unknown op type is a violation",
		rows:     []*cdcpb.Event_Row{initialized, committed("k", 10, 11, cdcpb.Event_Row_UNKNOWN, "", "")},
		problems: 1,
	}, {
		name:     "second INITIALIZED is a violation",
		rows:     []*cdcpb.Event_Row{initialized, initialized},
		problems: 1,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMatcher()
			var got []string
			problems := 0
			for _, r := range tc.rows {
				out, p := m.add(r)
				for _, c := range out {
					got = append(got, fmtChange(c))
				}
				problems += len(p)
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if problems != tc.problems {
				t.Errorf("%d problems, want %d", problems, tc.problems)
			}
		})
	}
}

func TestDedupAndLatest(t *testing.T) {
	cs := []Change{
		{Key: []byte("a"), CommitTS: 2, Op: put, Value: []byte("1")},
		{Key: []byte("b"), CommitTS: 3, Op: put, Value: []byte("x")},
		{Key: []byte("a"), CommitTS: 2, Op: put, Value: []byte("1")},
		{Key: []byte("a"), CommitTS: 5, Op: del},
		{Key: []byte("a"), CommitTS: 4, Op: put, Value: []byte("2")},
	}
	if d := Dedup(cs); len(d) != 4 || d[2].CommitTS != 5 {
		t.Fatalf("Dedup = %v", d)
	}
	l := Latest(cs)
	if len(l) != 2 || l["a"].Op != del || string(l["b"].Value) != "x" {
		t.Fatalf("Latest = %v", l)
	}
}
