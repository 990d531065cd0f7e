package snapshot_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/tikv/client-go/v2/tikv"

	"github.com/tidestream/tidestream/puller/internal/pgharness"
	"github.com/tidestream/tidestream/puller/snapshot"
)

// recordKey builds TiDB's row key t{table}_r{handle} for an int handle:
// each int is 8 bytes big-endian with the sign bit flipped, so keys sort
// like the numbers. Written out here so the test does not pull TiDB in.
func recordKey(table, handle int64) []byte {
	k := make([]byte, 0, 19)
	k = append(k, 't')
	k = binary.BigEndian.AppendUint64(k, uint64(table)^(1<<63))
	k = append(k, "_r"...)
	return binary.BigEndian.AppendUint64(k, uint64(handle)^(1<<63))
}

// recordSpan is [t{table}_r, t{table}_s): every row of the table.
func recordSpan(table int64) (start, end []byte) {
	start = recordKey(table, 0)[:11]
	end = append(bytes.Clone(start[:10]), 's')
	return start, end
}

type row struct {
	key, value []byte
}

func scanAll(ctx context.Context, t *testing.T, r *snapshot.Reader, start, end []byte, ts uint64, limit int) []row {
	t.Helper()
	var rows []row
	err := r.Scan(ctx, start, end, ts, limit, func(k, v []byte) error {
		rows = append(rows, row{bytes.Clone(k), bytes.Clone(v)})
		return nil
	})
	if err != nil {
		t.Fatalf("scan at %d: %v", ts, err)
	}
	return rows
}

func TestReaderAgainstPlayground(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the playground")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	p := pgharness.Start(t)
	db := p.DB()
	for _, q := range []string{
		"CREATE DATABASE snap",
		// A BIGINT primary key is the row handle, so record keys are
		// t{id}_r{pk} and the test can name them.
		"CREATE TABLE snap.t (id BIGINT PRIMARY KEY, v VARCHAR(32))",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	const n = 10
	for i := 1; i <= n; i++ {
		if _, err := db.ExecContext(ctx, "INSERT INTO snap.t VALUES (?, ?)", i, fmt.Sprintf("old-%03d", i)); err != nil {
			t.Fatal(err)
		}
	}
	var table int64
	if err := db.QueryRowContext(ctx,
		"SELECT TIDB_TABLE_ID FROM information_schema.tables WHERE table_schema = 'snap' AND table_name = 't'").Scan(&table); err != nil {
		t.Fatal(err)
	}

	r, err := snapshot.New(ctx, []string{p.PDAddr()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer r.Close()

	tsOld, err := r.CurrentTS(ctx)
	if err != nil {
		t.Fatalf("CurrentTS: %v", err)
	}
	for _, q := range []string{
		"UPDATE snap.t SET v = 'new-003' WHERE id = 3",
		"DELETE FROM snap.t WHERE id = 5",
		"INSERT INTO snap.t VALUES (11, 'new-011')",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	tsNew, err := r.CurrentTS(ctx)
	if err != nil {
		t.Fatalf("CurrentTS: %v", err)
	}
	if tsNew <= tsOld {
		t.Fatalf("TSO went back: %d then %d", tsOld, tsNew)
	}
	start, end := recordSpan(table)

	t.Run("ScanMVCC", func(t *testing.T) {
		old := scanAll(ctx, t, r, start, end, tsOld, 0)
		if len(old) != n {
			t.Fatalf("at old ts: %d rows, want %d", len(old), n)
		}
		for i, rw := range old {
			if want := recordKey(table, int64(i+1)); !bytes.Equal(rw.key, want) {
				t.Fatalf("at old ts row %d: key %x, want %x", i, rw.key, want)
			}
			// rowcodec stores a VARCHAR's bytes as they are.
			if want := fmt.Sprintf("old-%03d", i+1); !bytes.Contains(rw.value, []byte(want)) {
				t.Fatalf("at old ts row %d: value %x lacks %q", i, rw.value, want)
			}
		}

		cur := scanAll(ctx, t, r, start, end, tsNew, 0)
		var handles []int64
		for _, rw := range cur {
			handles = append(handles, int64(binary.BigEndian.Uint64(rw.key[11:])^(1<<63)))
		}
		if fmt.Sprint(handles) != "[1 2 3 4 6 7 8 9 10 11]" {
			t.Fatalf("at new ts: handles %v", handles)
		}
		if !bytes.Contains(cur[2].value, []byte("new-003")) {
			t.Fatalf("at new ts: row 3 = %x, want new-003", cur[2].value)
		}
	})

	t.Run("ScanLimitAndCallbackError", func(t *testing.T) {
		if got := scanAll(ctx, t, r, start, end, tsNew, 4); len(got) != 4 {
			t.Fatalf("limit 4: %d rows", len(got))
		}
		stop := errors.New("stop")
		calls := 0
		err := r.Scan(ctx, start, end, tsNew, 0, func(k, v []byte) error {
			calls++
			return stop
		})
		if !errors.Is(err, stop) || calls != 1 {
			t.Fatalf("callback error: err %v after %d calls", err, calls)
		}
		// Ranges that select nothing.
		if got := scanAll(ctx, t, r, recordKey(table, 100), end, tsNew, 0); len(got) != 0 {
			t.Fatalf("past the last row: %d rows", len(got))
		}
		if err := r.Scan(ctx, end, start, tsNew, 0, nil); !errors.Is(err, snapshot.ErrInvalidArgument) {
			t.Fatalf("end before start: %v", err)
		}
	})

	t.Run("GetAndBatchGet", func(t *testing.T) {
		v, err := r.Get(ctx, recordKey(table, 3), tsOld)
		if err != nil || !bytes.Contains(v, []byte("old-003")) {
			t.Fatalf("Get row 3 at old ts: %x, %v", v, err)
		}
		v, err = r.Get(ctx, recordKey(table, 3), tsNew)
		if err != nil || !bytes.Contains(v, []byte("new-003")) {
			t.Fatalf("Get row 3 at new ts: %x, %v", v, err)
		}
		for _, h := range []int64{5, 999} {
			if v, err := r.Get(ctx, recordKey(table, h), tsNew); err != nil || v != nil {
				t.Fatalf("Get missing row %d: %x, %v; want nil, nil", h, v, err)
			}
		}
		keys := [][]byte{recordKey(table, 3), recordKey(table, 5), recordKey(table, 999)}
		m, err := r.BatchGet(ctx, keys, tsOld)
		if err != nil {
			t.Fatal(err)
		}
		if len(m) != 2 || !bytes.Contains(m[string(keys[1])], []byte("old-005")) {
			t.Fatalf("BatchGet at old ts: %d keys %q", len(m), m)
		}
		m, err = r.BatchGet(ctx, keys, tsNew)
		if err != nil {
			t.Fatal(err)
		}
		if len(m) != 1 || !bytes.Contains(m[string(keys[0])], []byte("new-003")) {
			t.Fatalf("BatchGet at new ts: %d keys %q", len(m), m)
		}
	})

	t.Run("CancelledContext", func(t *testing.T) {
		cctx, ccancel := context.WithCancel(ctx)
		ccancel()
		if _, err := r.Get(cctx, recordKey(table, 1), tsNew); !errors.Is(err, context.Canceled) || snapshot.IsRetryable(err) {
			t.Fatalf("Get with cancelled ctx: %v", err)
		}
	})

	// Last: it moves the cluster's txn safe point past tsOld.
	t.Run("BelowGCSafepoint", func(t *testing.T) {
		setTxnSafePoint(t, p.PDAddr(), tsNew)
		// A new Reader loads the safe point at once; the first one would see
		// it within client-go's 10 s poll.
		r2, err := snapshot.New(ctx, []string{p.PDAddr()})
		if err != nil {
			t.Fatal(err)
		}
		defer r2.Close()
		checkGC := func(what string, err error) {
			t.Helper()
			if !errors.Is(err, snapshot.ErrBelowGCSafepoint) || snapshot.IsRetryable(err) {
				t.Fatalf("%s below the safe point: %v, want fatal %v", what, err, snapshot.ErrBelowGCSafepoint)
			}
		}
		_, err = r2.Get(ctx, recordKey(table, 1), tsOld)
		checkGC("Get", err)
		_, err = r2.BatchGet(ctx, [][]byte{recordKey(table, 1)}, tsOld)
		checkGC("BatchGet", err)
		checkGC("Scan", r2.Scan(ctx, start, end, tsOld, 0, func(k, v []byte) error { return nil }))

		ts, err := r2.CurrentTS(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := scanAll(ctx, t, r2, start, end, ts, 0); len(got) != n {
			t.Fatalf("above the safe point: %d rows, want %d", len(got), n)
		}
	})
}

// setTxnSafePoint writes the txn safe point where client-go reads it on a
// cluster without PD's GC states API (before 9.0, as the playground's PD
// reports): PD's etcd, at the key TiDB's GC worker writes.
func setTxnSafePoint(t *testing.T, pdAddr string, ts uint64) {
	t.Helper()
	kv, err := tikv.NewEtcdSafePointKV([]string{pdAddr}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	if err := kv.Put("/tidb/store/gcworker/saved_safe_point", strconv.FormatUint(ts, 10)); err != nil {
		t.Fatal(err)
	}
}

func TestNewRejectsBadArguments(t *testing.T) {
	ctx := context.Background()
	if _, err := snapshot.New(ctx, nil); !errors.Is(err, snapshot.ErrInvalidArgument) {
		t.Fatalf("no PD: %v", err)
	}
	if _, err := snapshot.New(ctx, []string{"127.0.0.1:1"}, snapshot.WithScanBatchSize(0)); !errors.Is(err, snapshot.ErrInvalidArgument) {
		t.Fatalf("batch 0: %v", err)
	}
}

func TestNewUnreachablePDIsRetryable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A port nobody listens on: take one and release it.
	_, err := snapshot.New(ctx, []string{"127.0.0.1:" + strconv.Itoa(closedPort(t))}, snapshot.WithConnectTimeout(2*time.Second))
	if err == nil || !snapshot.IsRetryable(err) {
		t.Fatalf("unreachable PD: %v, want retryable", err)
	}
}

func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
