package pgtest

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/pingcap/tidb/pkg/kv"
	"github.com/pingcap/tidb/pkg/tablecodec"
	"github.com/stretchr/testify/require"
	"github.com/tikv/client-go/v2/oracle"
	"go.uber.org/goleak"

	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeEnv); mode != "" {
		os.Exit(fakePlayground(mode)) // this process is a fake playground (pgtest_test.go)
	}
	goleak.VerifyTestMain(m)
}

// TestChangedRowsScanAndLive checks both ways ChangedRows gets rows: a
// change committed before it subscribes comes from the incremental scan,
// two-phase commits while it waits for the resolved ts come as PREWRITE +
// COMMIT and must be paired; a rolled-back transaction leaves nothing, and
// nothing outside (from, to] is returned.
func TestChangedRowsScanAndLive(t *testing.T) {
	pg := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := pg.DB(t, nil)
	Exec(t, db,
		"CREATE DATABASE f",
		"CREATE TABLE f.t (id INT PRIMARY KEY, v VARCHAR(10))",
		"INSERT INTO f.t VALUES (0, 'before')",
	)
	id, err := strconv.ParseInt(Strings(t, db, "SELECT TIDB_TABLE_ID FROM information_schema.tables WHERE TABLE_SCHEMA = 'f' AND TABLE_NAME = 't'")[0][0], 10, 64)
	require.NoError(t, err)
	from, err := pg.CurrentTS(ctx)
	require.NoError(t, err)
	Exec(t, db, "INSERT INTO f.t VALUES (1, 'scan')")

	// to lies a few seconds ahead, so the subscription is live by the time
	// the next statements commit and ChangedRows has to wait for them.
	to := oracle.ComposeTS(oracle.GetPhysical(time.Now().Add(5*time.Second)), 0)
	type result struct {
		evs   []*tidestreamv1.RawKVEvent
		stats feedStats
		err   error
	}
	done := make(chan result, 1)
	prefix := tablecodec.GenTableRecordPrefix(id)
	go func() {
		evs, stats, err := pg.changedRows(ctx, prefix, prefix.PrefixNext(), from, to)
		done <- result{evs, stats, err}
	}()
	time.Sleep(time.Second)
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	Exec(t, conn,
		// A one-phase commit reaches CDC as one COMMITTED entry, like a
		// scanned row; two-phase commits are what needs pairing.
		"SET SESSION tidb_enable_1pc = OFF",
		"INSERT INTO f.t VALUES (2, 'live')",
		"UPDATE f.t SET v = 'upd' WHERE id = 1",
		"BEGIN", "INSERT INTO f.t VALUES (3, 'rolled')", "ROLLBACK",
		"DELETE FROM f.t WHERE id = 2",
	)
	last, err := pg.CurrentTS(ctx)
	require.NoError(t, err)
	require.Less(t, last, to, "the statements took too long to land inside (from, to]")

	res := <-done
	require.NoError(t, res.err)
	type change struct {
		key       []byte
		op        tidestreamv1.OpType
		hasValue  bool
		hasOld    bool
		committed bool
	}
	var got []change
	for _, ev := range res.evs {
		require.Greater(t, ev.CommitTs, from)
		require.LessOrEqual(t, ev.CommitTs, to)
		got = append(got, change{ev.Key, ev.Op, len(ev.Value) > 0, len(ev.OldValue) > 0, ev.CommitTs > ev.StartTs})
	}
	key := func(h int64) []byte { return tablecodec.EncodeRowKeyWithHandle(id, kvHandle(h)) }
	put, del := tidestreamv1.OpType_OP_TYPE_PUT, tidestreamv1.OpType_OP_TYPE_DELETE
	require.Equal(t, []change{
		{key(1), put, true, false, true},
		{key(2), put, true, false, true},
		{key(1), put, true, true, true},
		{key(2), del, false, true, true},
	}, got)
	require.Equal(t, 1, res.stats.scanned, "row 1's insert from the incremental scan")
	require.GreaterOrEqual(t, res.stats.matched, 3, "the live changes as PREWRITE + COMMIT")
}

func kvHandle(h int64) kv.Handle { return kv.IntHandle(h) }
