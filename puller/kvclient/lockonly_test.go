package kvclient

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tidestream/tidestream/puller/matcher"
)

// TestFeedLockOnlyCommits runs pessimistic transactions that lock rows with
// SELECT … FOR UPDATE and commit without writing them — TiDB's default mode,
// and TPC-C's. TiKV answers each such commit with an empty UNKNOWN row to the
// subscriptions covering the whole region (spec §2.5). The client must
// ignore it: the emulator sends them, the client's registrations do not
// grow, and every written row arrives once.
func TestFeedLockOnlyCommits(t *testing.T) {
	pg := startPlayground(t)
	c := newTestClient(t, pg, nil)
	db := pg.DB()
	tb := createTable(t, db, "lockonly")
	m := newModel(t, db, tb)
	m.insert(1, 301)
	// [100, 200) becomes a region inside the record span, so its
	// subscription covers it and gets the rows; TiKV regions of a large
	// table are like that.
	for _, h := range []int64{100, 200} {
		faultOrFail(t, pg, "/fault/split", fmt.Sprintf("table=%d&handle=%d", tb.id, h))
	}

	startTs := tso(t, c)
	f := subscribe(t, c, tb.span, startTs)
	f.rec.waitResolved(t, startTs+1, 30*time.Second)
	m.rows = make(map[int64][]expOp) // rows 1..300 predate the subscription
	before := emuStats(t, pg)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// lockAndWrite locks [lo, lo+5) and updates row w in one pessimistic
	// transaction. With w in the same region TiDB commits in one phase.
	lockAndWrite := func(lo, w int64) {
		mustExec(ctx, t, m.conn, "BEGIN PESSIMISTIC")
		rows, err := m.conn.QueryContext(ctx, "SELECT id FROM "+tb.fq()+" WHERE id >= ? AND id < ? FOR UPDATE", lo, lo+5)
		if err != nil {
			t.Fatal(err)
		}
		rows.Close()
		mustExec(ctx, t, m.conn, "UPDATE "+tb.fq()+" SET v = ? WHERE id = ?", m.val(), w)
		mustExec(ctx, t, m.conn, "COMMIT")
		m.note(m.lastCommitTs(ctx), w, matcher.OpPut, true)
	}
	for i := range int64(10) {
		lockAndWrite(100+5*i, 250+i) // two regions: 2PC
		lockAndWrite(150+4*i, 190-i) // one region: 1PC
	}
	// Locks only, nothing written.
	for i := range int64(5) {
		mustExec(ctx, t, m.conn, "BEGIN PESSIMISTIC")
		rows, err := m.conn.QueryContext(ctx, "SELECT id FROM "+tb.fq()+" WHERE id >= ? AND id < ? FOR UPDATE", 120+i, 130+i)
		if err != nil {
			t.Fatal(err)
		}
		rows.Close()
		mustExec(ctx, t, m.conn, "COMMIT")
	}
	m.update(290, 300)

	end := tso(t, c)
	f.rec.waitResolved(t, end, 60*time.Second)
	after := emuStats(t, pg)
	f.stop(t)
	st := verify(t, f, m, startTs)
	t.Logf("events %d, distinct %d, duplicates %d; emulator sent %d lock-record rows; registrations %d before, %d after",
		st.events, st.distinct, st.duplicates, after.UnknownRows-before.UnknownRows, before.Registers, after.Registers)
	if after.UnknownRows == before.UnknownRows {
		t.Fatal("the emulator sent no lock-record rows: the test exercised nothing")
	}
	if after.Registers != before.Registers {
		t.Fatalf("registrations grew from %d to %d: lock-record rows made the client register again", before.Registers, after.Registers)
	}
	if st.duplicates != 0 {
		t.Fatalf("%d duplicates without any fault", st.duplicates)
	}
	if after.DuplicateRegisters != 0 {
		t.Fatalf("the client sent %d Registers for live keys", after.DuplicateRegisters)
	}
	checkInvariants(t, pg)
}
