package checker

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pingcap/kvproto/pkg/cdcpb"
	"github.com/pingcap/kvproto/pkg/errorpb"
	"github.com/pingcap/kvproto/pkg/raft_cmdpb"
)

const (
	rq = 7 // request id
	rg = 5 // region id
)

var (
	k1, k2, k3 = tk(1), tk(2), tk(3)
)

type checkerCase struct {
	name  string
	opts  []Option // default: Multiplexing(true)
	steps []step
	want  []string // rules, in any order, with multiplicity
}

func runCase(t *testing.T, tc checkerCase) *Checker {
	t.Helper()
	opts := tc.opts
	if opts == nil {
		opts = []Option{Multiplexing(true)}
	}
	c := New(opts...)
	for _, s := range tc.steps {
		s.apply(c)
	}
	var got []string
	for _, v := range c.Violations() {
		got = append(got, v.Rule)
	}
	want := slices.Clone(tc.want)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("rules = %v, want %v\nviolations:\n%s", got, want, dump(c.Violations()))
	}
	return c
}

func dump(vs []Violation) string {
	var b strings.Builder
	for _, v := range vs {
		fmt.Fprintf(&b, "  %s\n", v)
	}
	return b.String()
}

// initialized is the prefix of most cases: register with checkpoint 100 and
// an empty scan.
func initialized() []step {
	return []step{R(reg(rq, rg, 100)), E(rows(rq, rg, initRow()))}
}

func with(prefix []step, more ...step) []step { return append(slices.Clone(prefix), more...) }

func TestCheckerGoodStreams(t *testing.T) {
	cases := []checkerCase{
		{name: "worked example of spec 2.14", steps: []step{
			R(reg(rq, rg, 100)),
			E(rows(rq, rg, put(k1, 90))),
			E(rows(rq, rg, cm(k1, 90, 120))),
			E(rows(rq, rg, cd(k2, 105, 110), cdDel(k2, 95, 101))),
			E(rows(rq, rg, initRow())),
			E(rts(rq, 130, rg)),
			E(rows(rq, rg, put(k3, 140))),
			E(rts(rq, 140, rg)),
			E(rows(rq, rg, cm(k3, 140, 150))),
			E(epochErr(rq, rg)),
		}},
		{name: "realtime COMMIT before the scan PREWRITE of its lock", steps: []step{
			R(reg(rq, rg, 100)),
			E(rows(rq, rg, cm(k1, 90, 120))),
			E(rows(rq, rg, put(k1, 90), initRow())),
			E(rts(rq, 121, rg)),
		}},
		{name: "realtime COMMIT also scanned as COMMITTED", steps: []step{
			R(reg(rq, rg, 100)),
			E(rows(rq, rg, cm(k1, 90, 120))),
			E(rows(rq, rg, cd(k1, 90, 120), initRow())),
		}},
		{name: "1PC COMMITTED after INITIALIZED above resolved ts", steps: with(initialized(),
			E(rts(rq, 130, rg)),
			E(rows(rq, rg, cd(k1, 131, 132))),
		)},
		{name: "resolved ts below an earlier one is tolerated", steps: with(initialized(),
			E(rts(rq, 130, rg)),
			E(rts(rq, 120, rg)),
			E(rows(rq, rg, cd(k1, 131, 132))),
		)},
		{name: "first resolved ts below checkpoint", steps: with(initialized(),
			E(rts(rq, 50, rg)),
		)},
		{name: "duplicate register rejected, original carries on", steps: with(initialized(),
			R(reg(rq, rg, 100)),
			E(dupErr(rq, rg)),
			E(rows(rq, rg, put(k1, 140))),
			E(rts(rq, 140, rg)),
			E(rows(rq, rg, cm(k1, 140, 150))),
		)},
		{name: "lock-record rows before and after INITIALIZED", steps: []step{
			R(reg(rq, rg, 100)),
			E(rows(rq, rg, &cdcpb.Event_Row{}, initRow())),
			E(rows(rq, rg, put(k1, 140), &cdcpb.Event_Row{})),
			E(rts(rq, 140, rg)),
			E(rows(rq, rg, cm(k1, 140, 150), &cdcpb.Event_Row{})),
		}},
		{name: "register-time error for a Register not seen leaves the live one", steps: with(initialized(),
			E(rows(rq, rg, put(k1, 140))),
			E(dupErr(rq, rg)),
			E(msg(errEvent(rq, rg, &cdcpb.Error{Compatibility: &cdcpb.Compatibility{RequiredVersion: "6.2.0"}}))),
			E(rows(rq, rg, cm(k1, 140, 150))),
			E(rts(rq, 150, rg)),
		)},
		{name: "register rejected as busy while live, original carries on", steps: with(initialized(),
			R(reg(rq, rg, 100)),
			E(msg(errEvent(rq, rg, &cdcpb.Error{ServerIsBusy: &errorpb.ServerIsBusy{Reason: "too many pending incremental scans"}}))),
			E(rows(rq, rg, put(k1, 140))),
			E(rts(rq, 140, rg)),
		)},
		{name: "first of two quick registers rejected, second accepted", steps: []step{
			R(reg(rq, rg, 100)),
			R(reg(rq, rg, 50)),
			E(msg(errEvent(rq, rg, &cdcpb.Error{ClusterIdMismatch: &cdcpb.ClusterIDMismatch{Current: 1, Request: 2}}))),
			E(rows(rq, rg, cd(k1, 60, 70), initRow())), // above 50, the surviving checkpoint
		}},
		{name: "original ended while a re-register was in flight", steps: with(initialized(),
			R(reg(rq, rg, 100)),
			E(epochErr(rq, rg)), // ends the original; the server then accepted the re-register
			E(rows(rq, rg, initRow())),
			E(rts(rq, 130, rg)),
		)},
		{name: "register after error starts a new generation", steps: with(initialized(),
			E(rts(rq, 130, rg)),
			E(epochErr(rq, rg)),
			R(reg(rq, rg, 120)),
			E(rows(rq, rg, cd(k1, 121, 125), initRow())), // below the old generation's 130: fine
			E(rts(rq, 140, rg)),
		)},
		{name: "register after deregister, before its Error", steps: with(initialized(),
			R(dereg(rq, rg)),
			E(rows(rq, rg, put(k1, 140))), // queued before the deregister
			R(reg(rq, rg, 150)),
			E(notFoundErr(rq, rg)), // ends the old generation
			E(rows(rq, rg, cd(k2, 151, 155))),
			E(rts(rq, 1, rg)), // before the new INITIALIZED: flagged below, not here
		), want: []string{RuleResolvedBeforeInit}},
		{name: "deregister all regions of a request", steps: []step{
			R(reg(rq, 5, 100)), R(reg(rq, 6, 100)),
			E(msg(entries(rq, 5, initRow()), entries(rq, 6, initRow()))),
			R(dereg(rq, 0)),
			E(notFoundErr(rq, 5)), E(notFoundErr(rq, 6)),
			R(reg(rq, 5, 100)),
			E(rows(rq, 5, initRow())),
		}},
		{name: "two request ids on one region", steps: []step{
			R(reg(1, rg, 100)), R(reg(2, rg, 200)),
			E(rows(1, rg, initRow())),
			E(rts(1, 150, rg)),
			E(rows(2, rg, cd(k1, 150, 201))),
			E(rows(2, rg, initRow())),
			E(rows(1, rg, cd(k1, 200, 202))),
		}},
		{name: "without multiplexing resolved ts names regions of all requests", opts: []Option{}, steps: []step{
			R(reg(1, 5, 100)), R(reg(2, 6, 100)),
			E(rows(1, 5, initRow())), E(rows(2, 6, initRow())),
			E(rts(0, 130, 5, 6)),
			E(rows(2, 6, cd(k1, 131, 135))),
		}},
		{name: "SetMultiplexing overrides the default", opts: []Option{}, steps: []step{
			Mux(1, true),
			R(reg(rq, rg, 100)), E(rows(rq, rg, initRow())),
			E(rts(rq, 130, rg)),
		}},
		{name: "client older than 4.0.8 gets legacy resolved ts", steps: []step{
			R(regV("4.0.7", rq, rg, 100, tableStart, tableEnd)),
			E(rows(rq, rg, initRow())),
			E(legacyRts(rq, rg, 130)),
			E(rows(rq, rg, cd(k1, 131, 135))),
		}},
		{name: "empty version is compat mode", steps: []step{
			R(regV("", rq, rg, 100, tableStart, tableEnd)),
			E(rows(rq, rg, initRow())),
			E(legacyRts(rq, rg, 130)),
		}},
		{name: "ROLLBACK before the scan PREWRITE of its lock", steps: []step{
			R(reg(rq, rg, 100)),
			E(rows(rq, rg, rb(k1, 90))),
			E(rows(rq, rg, put(k1, 90), initRow())),
		}},
		{name: "re-sent PREWRITE of a rewritten lock", steps: with(initialized(),
			E(rows(rq, rg, pw(k1, 140, cdcpb.Event_Row_DELETE))),
			E(rows(rq, rg, pw(k1, 140, cdcpb.Event_Row_DELETE))),
			E(rows(rq, rg, cmDel(k1, 140, 150))),
		)},
		{name: "undecodable bounds disable the range rule", steps: []step{
			R(regV(modernVersion, rq, rg, 100, []byte("not memcomparable"), nil)),
			E(rows(rq, rg, cd([]byte("anything"), 101, 102), initRow())),
		}},
		{name: "unbounded range", steps: []step{
			R(regV(modernVersion, rq, rg, 100, nil, nil)),
			E(rows(rq, rg, cd([]byte("m"), 101, 102), cd(tk(9), 101, 103), initRow())),
		}},
		{name: "rows and Error of one message", steps: with(initialized(),
			E(msg(entries(rq, rg, put(k1, 140)), errEvent(rq, rg, &cdcpb.Error{Congested: &cdcpb.Congested{RegionId: rg}}))),
		)},
		{name: "strict monotonic accepts equal reports", opts: []Option{Multiplexing(true), StrictMonotonic()}, steps: with(initialized(),
			E(rts(rq, 130, rg)), E(rts(rq, 130, rg)), E(rts(rq, 131, rg)),
		)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { runCase(t, tc) })
	}
}

func TestCheckerViolations(t *testing.T) {
	notify := &cdcpb.ChangeDataRequest{RegionId: rg, RequestId: rq,
		Request: &cdcpb.ChangeDataRequest_NotifyTxnStatus_{NotifyTxnStatus: &cdcpb.ChangeDataRequest_NotifyTxnStatus{}}}
	unknownOp := cm(k1, 140, 150)
	unknownOp.OpType = cdcpb.Event_Row_UNKNOWN
	unknownType := put(k1, 140)
	unknownType.Type = cdcpb.Event_UNKNOWN
	pwWithCommit := put(k1, 140)
	pwWithCommit.CommitTs = 141
	rbWithCommit := rb(k1, 140)
	rbWithCommit.CommitTs = 141

	cases := []checkerCase{
		{name: "row after error", steps: with(initialized(),
			E(epochErr(rq, rg)),
			E(rows(rq, rg, put(k1, 140))),
		), want: []string{RuleAfterError}},
		{name: "resolved ts after error", steps: with(initialized(),
			E(epochErr(rq, rg)),
			E(rts(rq, 140, rg)),
		), want: []string{RuleAfterError}},
		{name: "second error", steps: with(initialized(),
			E(epochErr(rq, rg)),
			E(notFoundErr(rq, rg)),
		), want: []string{RuleAfterError}},
		{name: "INITIALIZED after error", steps: []step{
			R(reg(rq, rg, 100)),
			E(epochErr(rq, rg)),
			E(rows(rq, rg, initRow())),
		}, want: []string{RuleAfterError}},
		{name: "register rejected by cluster id", steps: []step{
			R(reg(rq, rg, 100)),
			E(msg(errEvent(rq, rg, &cdcpb.Error{ClusterIdMismatch: &cdcpb.ClusterIDMismatch{Current: 1, Request: 2}}))),
			E(rows(rq, rg, initRow())),
		}, want: []string{RuleAfterError}},
		{name: "nil row", steps: with(initialized(),
			E(rows(rq, rg, nil)),
		), want: []string{RuleMalformedEvent}},
		{name: "resolved ts before INITIALIZED", steps: []step{
			R(reg(rq, rg, 100)),
			E(rts(rq, 130, rg)),
		}, want: []string{RuleResolvedBeforeInit}},
		{name: "resolved ts before INITIALIZED without multiplexing", opts: []Option{}, steps: []step{
			R(reg(rq, rg, 100)),
			E(rts(0, 130, rg)),
		}, want: []string{RuleResolvedBeforeInit}},
		{name: "legacy resolved ts before INITIALIZED", steps: []step{
			R(regV("4.0.0", rq, rg, 100, tableStart, tableEnd)),
			E(legacyRts(rq, rg, 130)),
		}, want: []string{RuleResolvedBeforeInit}},
		{name: "COMMIT at resolved ts", steps: with(initialized(),
			E(rows(rq, rg, put(k1, 120))),
			E(rts(rq, 130, rg)),
			E(rows(rq, rg, cm(k1, 120, 130))),
		), want: []string{RuleRowNotAboveResolved}},
		{name: "COMMITTED below resolved ts", steps: with(initialized(),
			E(rts(rq, 130, rg)),
			E(rows(rq, rg, cd(k1, 120, 125))),
		), want: []string{RuleRowNotAboveResolved}},
		{name: "row below a resolved ts that was later reported lower", steps: with(initialized(),
			E(rts(rq, 130, rg)),
			E(rts(rq, 110, rg)),
			E(rows(rq, rg, cd(k1, 120, 125))),
		), want: []string{RuleRowNotAboveResolved}},
		{name: "resolved ts without multiplexing covers every request of the region", opts: []Option{}, steps: []step{
			R(reg(1, rg, 100)), E(rows(1, rg, initRow())),
			E(rts(0, 130, rg)),
			E(rows(1, rg, cd(k1, 120, 125))),
		}, want: []string{RuleRowNotAboveResolved}},
		{name: "duplicate INITIALIZED", steps: with(initialized(),
			E(rows(rq, rg, initRow())),
		), want: []string{RuleDuplicateInitialized}},
		{name: "COMMIT without PREWRITE after INITIALIZED", steps: with(initialized(),
			E(rows(rq, rg, cm(k1, 140, 150))),
		), want: []string{RuleCommitWithoutPrewrite}},
		{name: "COMMIT before INITIALIZED never matched", steps: []step{
			R(reg(rq, rg, 100)),
			E(rows(rq, rg, cm(k1, 90, 120))),
			E(rows(rq, rg, cd(k1, 90, 121))), // different commit_ts: no match
			E(rows(rq, rg, initRow())),
		}, want: []string{RuleCommitWithoutPrewrite}},
		{name: "COMMIT twice", steps: with(initialized(),
			E(rows(rq, rg, put(k1, 140))),
			E(rows(rq, rg, cm(k1, 140, 150))),
			E(rows(rq, rg, cm(k1, 140, 150))),
		), want: []string{RuleCommitWithoutPrewrite}},
		{name: "COMMIT after ROLLBACK", steps: with(initialized(),
			E(rows(rq, rg, put(k1, 140))),
			E(rows(rq, rg, rb(k1, 140))),
			E(rows(rq, rg, cm(k1, 140, 150))),
		), want: []string{RuleCommitWithoutPrewrite}},
		{name: "COMMIT of a lock rolled back before its scan PREWRITE", steps: []step{
			R(reg(rq, rg, 100)),
			E(rows(rq, rg, rb(k1, 90))),
			E(rows(rq, rg, put(k1, 90), initRow())),
			E(rows(rq, rg, cm(k1, 90, 120))),
		}, want: []string{RuleCommitWithoutPrewrite}},
		{name: "COMMIT matched against another generation's PREWRITE", steps: with(initialized(),
			E(rows(rq, rg, put(k1, 140))),
			E(epochErr(rq, rg)),
			R(reg(rq, rg, 130)),
			E(rows(rq, rg, initRow())),
			E(rows(rq, rg, cm(k1, 140, 150))),
		), want: []string{RuleCommitWithoutPrewrite}},
		{name: "scan COMMITTED at checkpoint", steps: []step{
			R(reg(rq, rg, 100)),
			E(rows(rq, rg, cd(k1, 90, 100), initRow())),
		}, want: []string{RuleCommittedNotAboveCheckpoint}},
		{name: "1PC COMMITTED below checkpoint", steps: with(initialized(),
			E(rows(rq, rg, cd(k1, 90, 99))),
		), want: []string{RuleCommittedNotAboveCheckpoint}},
		{name: "commit_ts not above start_ts", steps: with(initialized(),
			E(rows(rq, rg, put(k1, 140))),
			E(rows(rq, rg, cm(k1, 140, 140))),
		), want: []string{RuleCommitNotAboveStart}},
		{name: "PREWRITE with commit_ts", steps: with(initialized(),
			E(rows(rq, rg, pwWithCommit)),
		), want: []string{RuleUnexpectedCommitTs}},
		{name: "ROLLBACK with commit_ts", steps: with(initialized(),
			E(rows(rq, rg, rbWithCommit)),
		), want: []string{RuleUnexpectedCommitTs}},
		{name: "COMMIT with op UNKNOWN", steps: with(initialized(),
			E(rows(rq, rg, put(k1, 140))),
			E(rows(rq, rg, unknownOp)),
		), want: []string{RuleBadOpType}},
		{name: "row type UNKNOWN with fields set", steps: with(initialized(),
			E(rows(rq, rg, unknownType)),
			E(rows(rq, rg, &cdcpb.Event_Row{OpType: cdcpb.Event_Row_PUT})),
		), want: []string{RuleBadLogType, RuleBadLogType}},
		{name: "register-time error for an unstarted registration ends it", steps: []step{
			R(reg(rq, rg, 100)),
			E(dupErr(rq, rg)),
			E(rows(rq, rg, initRow())),
		}, want: []string{RuleAfterError}},
		{name: "key below start_key", steps: []step{
			R(regV(modernVersion, rq, rg, 100, enc(tk(10)), enc(tk(20)))),
			E(rows(rq, rg, cd(tk(9), 101, 102), cd(tk(10), 101, 103), initRow())),
		}, want: []string{RuleKeyOutOfRange}},
		{name: "key at end_key", steps: []step{
			R(regV(modernVersion, rq, rg, 100, enc(tk(10)), enc(tk(20)))),
			E(rows(rq, rg, cd(tk(19), 101, 102), cd(tk(20), 101, 103), initRow())),
		}, want: []string{RuleKeyOutOfRange}},
		{name: "key of another table", steps: with(initialized(),
			E(rows(rq, rg, put(tableKey(2, 1), 140))),
		), want: []string{RuleKeyOutOfRange}},
		{name: "ROLLBACK out of range", steps: with(initialized(),
			E(rows(rq, rg, rb(tableKey(2, 1), 140))),
		), want: []string{RuleKeyOutOfRange}},
		{name: "event for an unregistered request id", steps: with(initialized(),
			E(rows(rq+1, rg, put(k1, 140))),
		), want: []string{RuleUnregistered}},
		{name: "event for an unregistered region", steps: with(initialized(),
			E(rts(rq, 130, rg, rg+1)),
		), want: []string{RuleUnregistered}},
		{name: "event before any request", steps: []step{
			E(rows(rq, rg, initRow())),
		}, want: []string{RuleUnregistered}},
		{name: "event after the connection closed", steps: with(initialized(),
			Close(1),
			E(rts(rq, 130, rg)),
		), want: []string{RuleUnregistered}},
		{name: "error for an unknown subscription", steps: with(initialized(),
			E(dupErr(rq+1, rg)),
		), want: []string{RuleUnregistered}},
		{name: "connections are separate", steps: with(initialized(),
			EC(2, rows(rq, rg, put(k1, 140))),
		), want: []string{RuleUnregistered}},
		{name: "regressed resolved ts with StrictMonotonic", opts: []Option{Multiplexing(true), StrictMonotonic()}, steps: with(initialized(),
			E(rts(rq, 130, rg)),
			E(rts(rq, 129, rg)),
		), want: []string{RuleResolvedTsRegressed}},
		{name: "batched resolved ts to a compat client", steps: []step{
			R(regV("4.0.7", rq, rg, 100, tableStart, tableEnd)),
			E(rows(rq, rg, initRow())),
			E(rts(rq, 130, rg)),
		}, want: []string{RuleResolvedTsForm}},
		{name: "legacy resolved ts to a modern client", steps: with(initialized(),
			E(legacyRts(rq, rg, 130)),
		), want: []string{RuleResolvedTsForm}},
		{name: "request id in resolved ts without multiplexing", opts: []Option{}, steps: with(initialized(),
			E(rts(rq, 130, rg)),
		), want: []string{RuleResolvedTsForm}},
		{name: "only the first request decides the version", steps: []step{
			R(regV("8.5.0", 1, rg, 100, tableStart, tableEnd)),
			R(regV("4.0.0", 2, rg, 100, tableStart, tableEnd)),
			E(rows(2, rg, initRow())),
			E(legacyRts(2, rg, 130)),
		}, want: []string{RuleResolvedTsForm}},
		{name: "events and resolved ts in one message", steps: with(initialized(),
			E(&cdcpb.ChangeDataEvent{Events: []*cdcpb.Event{entries(rq, rg, put(k1, 140))},
				ResolvedTs: &cdcpb.ResolvedTs{Regions: []uint64{rg}, Ts: 130, RequestId: rq}}),
		), want: []string{RuleMixedMessage}},
		{name: "admin event", steps: with(initialized(),
			E(msg(&cdcpb.Event{RegionId: rg, RequestId: rq, Event: &cdcpb.Event_Admin_{Admin: &cdcpb.Event_Admin{AdminRequest: &raft_cmdpb.AdminRequest{}}}})),
		), want: []string{RuleMalformedEvent}},
		{name: "event without payload", steps: with(initialized(),
			E(msg(&cdcpb.Event{RegionId: rg, RequestId: rq})),
		), want: []string{RuleMalformedEvent}},
		{name: "error without field", steps: with(initialized(),
			E(msg(errEvent(rq, rg, &cdcpb.Error{}))),
			E(rows(rq, rg, put(k1, 140))), // still terminal
		), want: []string{RuleMalformedEvent, RuleAfterError}},
		{name: "NotifyTxnStatus", steps: with(initialized(),
			R(notify),
		), want: []string{RuleNotifyTxnStatus}},
		{name: "every bad row of an event is reported", steps: with(initialized(),
			E(rts(rq, 130, rg)),
			E(rows(rq, rg, cd(k1, 120, 121), cd(k2, 120, 122))),
		), want: []string{RuleRowNotAboveResolved, RuleRowNotAboveResolved}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { runCase(t, tc) })
	}
}

func TestViolationNamesTheOffender(t *testing.T) {
	c := runCase(t, checkerCase{steps: with(initialized(),
		E(rts(rq, 130, rg)),
		E(rows(rq, rg, cd(tk(42), 120, 125))),
	), want: []string{RuleRowNotAboveResolved}})
	v := c.Violations()[0]
	if v.Conn != 1 || v.RequestID != rq || v.RegionID != rg {
		t.Errorf("violation ids = conn %d request %d region %d", v.Conn, v.RequestID, v.RegionID)
	}
	for _, s := range []string{"COMMITTED", "t1_r42", "start=120", "commit=125", "130"} {
		if !strings.Contains(v.Detail, s) {
			t.Errorf("detail %q lacks %q", v.Detail, s)
		}
	}
}

func TestNilMessages(t *testing.T) {
	c := New()
	c.Request(1, nil)
	c.Event(1, nil)
	if vs := c.Violations(); len(vs) != 1 || vs[0].Rule != RuleMalformedEvent {
		t.Fatalf("violations:\n%s", dump(vs))
	}
}

func TestErrSummarises(t *testing.T) {
	c := New(Multiplexing(true))
	if err := c.Err(); err != nil {
		t.Fatalf("Err on a fresh checker = %v", err)
	}
	for i := range 8 {
		c.Event(1, rows(uint64(i), rg, initRow()))
	}
	err := c.Err()
	if !errors.Is(err, ErrViolation) {
		t.Fatalf("Err = %v, want ErrViolation", err)
	}
	if !strings.Contains(err.Error(), "8 violation(s)") || strings.Count(err.Error(), RuleUnregistered) != errSummaryCount {
		t.Errorf("Err = %v", err)
	}
}

func TestMaxViolationsAndCallback(t *testing.T) {
	var seen []Violation
	var c *Checker
	c = New(MaxViolations(3), OnViolation(func(v Violation) {
		seen = append(seen, v)
		_ = c.Violations() // the callback runs outside the lock
	}))
	for i := range 10 {
		c.Event(1, rows(uint64(i), rg, initRow()))
	}
	if n := len(c.Violations()); n != 3 {
		t.Errorf("kept %d violations, want 3", n)
	}
	if len(seen) != 10 {
		t.Errorf("callback saw %d violations, want 10", len(seen))
	}
	if !strings.Contains(c.Err().Error(), "10 violation(s)") {
		t.Errorf("Err = %v", c.Err())
	}
}

func TestCompatMode(t *testing.T) {
	for v, want := range map[string]bool{
		"": true, "4.0.7": true, "4.0.8": false, "4.0.8-alpha": true, "8.5.0": false, "v8.5.0": true,
		"8.5": true, "08.5.0": true, "5.3.0+build": false, "10.0.0-rc.1": false, "4.0.10": false, "x": true,
	} {
		if got := compatMode(v); got != want {
			t.Errorf("compatMode(%q) = %v, want %v", v, got, want)
		}
	}
}

// Many connections fed concurrently, as the emulator does: run with -race.
func TestConcurrentConnections(t *testing.T) {
	c := New(Multiplexing(true))
	var wg sync.WaitGroup
	for conn := uint64(1); conn <= 16; conn++ {
		wg.Go(func() {
			c.Request(conn, reg(rq, rg, 100))
			c.Event(conn, rows(rq, rg, initRow()))
			for i := uint64(0); i < 200; i++ {
				ts := 200 + 10*i
				c.Event(conn, rows(rq, rg, put(k1, ts)))
				c.Event(conn, rts(rq, ts, rg))
				c.Event(conn, rows(rq, rg, cm(k1, ts, ts+1)))
				_ = c.Violations()
			}
			c.CloseConn(conn)
		})
	}
	wg.Wait()
	if err := c.Err(); err != nil {
		t.Fatal(err)
	}
}
