package feedclient_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/pingcap/kvproto/pkg/cdcpb"
	"github.com/pingcap/tidb/pkg/parser/mysql"
	"github.com/pingcap/tidb/pkg/tablecodec"
	"github.com/pingcap/tidb/pkg/types"
	"github.com/tidestream/tidestream/deploy/playground/checker"
	"github.com/tidestream/tidestream/deploy/playground/internal/feedclient"
	"github.com/tidestream/tidestream/deploy/playground/internal/pgtest"
)

// TestAgainstPlaygroundSQL runs the client against the playground binary
// with changes made through TiDB: autocommit (1PC) and explicit transactions,
// and a SPLIT TABLE in the middle. It builds and starts the binary, so it
// only runs when FEEDCLIENT_PLAYGROUND is set.
func TestAgainstPlaygroundSQL(t *testing.T) {
	if os.Getenv("FEEDCLIENT_PLAYGROUND") == "" {
		t.Skip("set FEEDCLIENT_PLAYGROUND=1 to run against the playground binary")
	}
	p := pgtest.Start(t, pgtest.Options{Args: []string{"--resolved-ts-interval", "200ms"}})
	db := p.DB("")
	mustExec(t, db, "CREATE DATABASE fc")
	mustExec(t, db, "CREATE TABLE fc.t (id INT PRIMARY KEY, v VARCHAR(64))")
	var tid int64
	if err := db.QueryRow("SELECT tidb_table_id FROM information_schema.tables WHERE table_schema = 'fc' AND table_name = 't'").Scan(&tid); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		mustExec(t, db, "INSERT INTO fc.t VALUES (?, ?)", 10000+i, "before")
	}
	checkpoint := tso(t, db)

	chk := checker.New()
	start := tablecodec.GenTableRecordPrefix(tid)
	c, err := feedclient.New(context.Background(), feedclient.Config{
		PDAddrs: []string{p.PDAddr()}, Start: start, End: start.PrefixNext(), CheckpointTs: checkpoint, Multiplex: true,
		OnRequest: chk.Request, OnEvent: chk.Event, OnStream: chk.SetMultiplexing, OnStreamEnd: chk.CloseConn,
		Logger: testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	for i := range 1000 {
		mustExec(t, db, "INSERT INTO fc.t VALUES (?, ?)", i, fmt.Sprintf("v0-%d", i))
		if i == 500 {
			mustExec(t, db, "SPLIT TABLE fc.t BETWEEN (0) AND (4000) REGIONS 4")
		}
	}
	for i := range 300 {
		mustExec(t, db, "UPDATE fc.t SET v = ? WHERE id = ?", fmt.Sprintf("v1-%d", i), i)
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if _, err := tx.Exec("DELETE FROM fc.t WHERE id = ?", 999-i); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	mustExec(t, db, "UPDATE fc.t SET v = 'after' WHERE id >= 10000")
	last := tso(t, db)
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	if err := c.WaitResolved(wctx, last); err != nil {
		t.Fatal(err)
	}

	// Per row, the changes in commit order must chain: each old value is the
	// previous change's value, and the last one is the table's content.
	cols := map[int64]*types.FieldType{2: types.NewFieldType(mysql.TypeVarchar)}
	decode := func(b []byte) string {
		if len(b) == 0 {
			return "<none>"
		}
		m, err := tablecodec.DecodeRowToDatumMap(b, cols, time.UTC)
		if err != nil {
			t.Fatalf("decode %x: %v", b, err)
		}
		d := m[2]
		return d.GetString()
	}
	byID := make(map[int64][]feedclient.Change)
	for _, ch := range feedclient.Dedup(c.Changes()) {
		_, h, err := tablecodec.DecodeRecordKey(ch.Key)
		if err != nil {
			t.Fatal(err)
		}
		if ch.CommitTS <= checkpoint {
			t.Errorf("id %d: commit ts %d at or below the checkpoint %d", h.IntValue(), ch.CommitTS, checkpoint)
		}
		byID[h.IntValue()] = append(byID[h.IntValue()], ch)
	}
	ops := map[string]int{}
	for id := range int64(1000) {
		chs := byID[id]
		sort.Slice(chs, func(i, j int) bool { return chs[i].CommitTS < chs[j].CommitTS })
		want := []string{fmt.Sprintf("PUT v0-%d old <none>", id)}
		if id < 300 {
			want = append(want, fmt.Sprintf("PUT v1-%d old v0-%d", id, id))
		}
		if id >= 800 {
			want = append(want, fmt.Sprintf("DELETE <none> old v0-%d", id))
		}
		var got []string
		for _, ch := range chs {
			got = append(got, fmt.Sprintf("%v %s old %s", ch.Op, decode(ch.Value), decode(ch.OldValue)))
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("id %d: %v, want %v", id, got, want)
		}
		for i, ch := range chs {
			if i > 0 && !bytes.Equal(ch.OldValue, chs[i-1].Value) {
				t.Errorf("id %d: old value of change %d is not the previous value", id, i)
			}
			ops[ch.Op.String()]++
		}
	}
	for id := int64(10000); id < 10050; id++ {
		if chs := byID[id]; len(chs) != 1 || decode(chs[0].Value) != "after" || decode(chs[0].OldValue) != "before" {
			t.Errorf("id %d: %d changes, want the update from before to after", id, len(chs))
		}
	}
	if ops[cdcpb.Event_Row_PUT.String()] != 1300 || ops[cdcpb.Event_Row_DELETE.String()] != 200 {
		t.Errorf("ops %v", ops)
	}
	if err := chk.Err(); err != nil {
		t.Error(err)
	}
	if pr := c.Problems(); len(pr) > 0 {
		t.Errorf("%d problems, first: %s", len(pr), pr[0])
	}
	t.Logf("%d changes (%d distinct), region errors %v, reconnects %d, %d resolved advances",
		len(c.Changes()), len(feedclient.Dedup(c.Changes())), c.RegionErrors(), c.Reconnects(), len(c.ResolvedHistory()))
}

func mustExec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// tso returns a fresh timestamp from PD through TiDB: a new transaction's
// start ts.
func tso(t *testing.T, db *sql.DB) uint64 {
	t.Helper()
	// Outside a transaction TIDB_CURRENT_TSO() is 0.
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	var ts uint64
	if err := tx.QueryRow("SELECT TIDB_CURRENT_TSO()").Scan(&ts); err != nil {
		t.Fatal(err)
	}
	if ts == 0 {
		t.Fatal("TIDB_CURRENT_TSO() = 0")
	}
	return ts
}
