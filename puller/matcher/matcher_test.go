package matcher

import (
	"errors"
	"fmt"
	"testing"

	"github.com/pingcap/kvproto/pkg/cdcpb"
	"github.com/stretchr/testify/require"
)

const (
	put = cdcpb.Event_Row_PUT
	del = cdcpb.Event_Row_DELETE
)

func pw(key string, start uint64, op cdcpb.Event_Row_OpType, value, old string) *cdcpb.Event_Row {
	return &cdcpb.Event_Row{Type: cdcpb.Event_PREWRITE, Key: []byte(key), StartTs: start, OpType: op, Value: bytesOf(value), OldValue: bytesOf(old)}
}

func pwGen(key string, start uint64, op cdcpb.Event_Row_OpType, value, old string, gen uint64) *cdcpb.Event_Row {
	r := pw(key, start, op, value, old)
	r.Generation = gen
	return r
}

func cm(key string, start, commit uint64, op cdcpb.Event_Row_OpType, shortValue string) *cdcpb.Event_Row {
	return &cdcpb.Event_Row{Type: cdcpb.Event_COMMIT, Key: []byte(key), StartTs: start, CommitTs: commit, OpType: op, Value: bytesOf(shortValue)}
}

func cd(key string, start, commit uint64, op cdcpb.Event_Row_OpType, value, old string) *cdcpb.Event_Row {
	return &cdcpb.Event_Row{Type: cdcpb.Event_COMMITTED, Key: []byte(key), StartTs: start, CommitTs: commit, OpType: op, Value: bytesOf(value), OldValue: bytesOf(old)}
}

func rb(key string, start uint64) *cdcpb.Event_Row {
	return &cdcpb.Event_Row{Type: cdcpb.Event_ROLLBACK, Key: []byte(key), StartTs: start}
}

func ini() *cdcpb.Event_Row { return &cdcpb.Event_Row{Type: cdcpb.Event_INITIALIZED} }

func bytesOf(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}

func ev(key string, op Op, value, old string, start, commit uint64) Event {
	return Event{Key: []byte(key), Value: bytesOf(value), OldValue: bytesOf(old), Op: op, StartTs: start, CommitTs: commit}
}

// step is one input of a table test: a row, or (row == nil) a resolved ts.
type step struct {
	row      *cdcpb.Event_Row
	resolved uint64
	want     []Event
	wantErr  error
	advanced bool // for resolved steps
}

func resolved(ts uint64, advanced bool) step { return step{resolved: ts, advanced: advanced} }

func TestMatcherTable(t *testing.T) {
	tests := []struct {
		name       string
		checkpoint uint64
		steps      []step
		wantLen    int
	}{
		{
			name: "prewrite then commit after INITIALIZED", checkpoint: 5,
			steps: []step{
				{row: ini()},
				{row: pw("k", 10, put, "v", "old")},
				{row: cm("k", 10, 20, put, ""), want: []Event{ev("k", OpPut, "v", "old", 10, 20)}},
			},
		},
		{
			name: "the COMMIT's short value wins over the PREWRITE's", checkpoint: 5,
			steps: []step{
				{row: ini()},
				{row: pw("k", 10, put, "v", "old")},
				{row: cm("k", 10, 20, put, "short"), want: []Event{ev("k", OpPut, "short", "old", 10, 20)}},
			},
		},
		{
			name: "delete carries the old value and no value", checkpoint: 5,
			steps: []step{
				{row: ini()},
				{row: pw("k", 10, del, "", "old")},
				{row: cm("k", 10, 20, del, ""), want: []Event{ev("k", OpDelete, "", "old", 10, 20)}},
			},
		},
		{
			name: "commit before INITIALIZED matches a prewrite with a value at once", checkpoint: 5,
			steps: []step{
				{row: pw("k", 10, put, "v", "")},
				{row: cm("k", 10, 20, put, ""), want: []Event{ev("k", OpPut, "v", "", 10, 20)}},
				{row: ini()},
			},
		},
		{
			name: "realtime commit before the scan's prewrite is matched when the prewrite arrives", checkpoint: 5,
			steps: []step{
				{row: cm("k", 3, 20, put, "")},
				{row: pw("k", 3, put, "v", "o"), want: []Event{ev("k", OpPut, "v", "o", 3, 20)}},
				{row: ini()},
			},
		},
		{
			name: "heartbeat's empty prewrite first: commit waits for the real one", checkpoint: 5,
			steps: []step{
				{row: pw("k", 3, put, "", "o")},
				{row: cm("k", 3, 20, put, "")},
				{row: pw("k", 3, put, "v", "o"), want: []Event{ev("k", OpPut, "v", "o", 3, 20)}},
				{row: ini()},
			},
		},
		{
			name: "delete prewrite before INITIALIZED waits for INITIALIZED", checkpoint: 5,
			steps: []step{
				{row: pw("k", 10, del, "", "o")},
				{row: cm("k", 10, 20, del, "")},
				{row: ini(), want: []Event{ev("k", OpDelete, "", "o", 10, 20)}},
			},
		},
		{
			name: "parked commit whose prewrite never came is dropped at INITIALIZED (scan sent COMMITTED)", checkpoint: 5,
			steps: []step{
				{row: cm("k", 10, 20, put, "")},
				{row: cd("k", 10, 20, put, "v", "o"), want: []Event{ev("k", OpPut, "v", "o", 10, 20)}},
				{row: ini()},
			},
		},
		{
			name: "commit without prewrite after INITIALIZED is a protocol error", checkpoint: 5,
			steps: []step{
				{row: ini()},
				{row: cm("k", 10, 20, put, ""), wantErr: ErrUnmatchedCommit},
			},
		},
		{
			name: "commit without prewrite at or below the checkpoint is a replay: dropped", checkpoint: 50,
			steps: []step{
				{row: ini()},
				{row: cm("k", 10, 50, put, "")},
				{row: cm("k", 11, 20, put, "")},
			},
		},
		{
			name: "matched commit at or below the checkpoint releases the prewrite, emits nothing", checkpoint: 50,
			steps: []step{
				{row: ini()},
				{row: pw("k", 10, put, "v", "")},
				{row: cm("k", 10, 40, put, "")},
			},
		},
		{
			name: "COMMITTED rows: above the checkpoint emitted, at or below dropped", checkpoint: 50,
			steps: []step{
				{row: cd("a", 40, 60, put, "v", "o"), want: []Event{ev("a", OpPut, "v", "o", 40, 60)}},
				{row: cd("b", 40, 50, put, "v", "o")},
				{row: cd("c", 45, 55, del, "", "o"), want: []Event{ev("c", OpDelete, "", "o", 45, 55)}},
				{row: ini()},
				{row: cd("d", 70, 71, put, "w", ""), want: []Event{ev("d", OpPut, "w", "", 70, 71)}},
			},
		},
		{
			name: "rollback drops the prewrite", checkpoint: 5,
			steps: []step{
				{row: ini()},
				{row: pw("k", 10, put, "v", "")},
				{row: rb("k", 10)},
				{row: rb("other", 10)},
			},
		},
		{
			name: "rollback before the scan's prewrite: the late prewrite is not cached", checkpoint: 5,
			steps: []step{
				{row: rb("k", 3)},
				{row: pw("k", 3, put, "v", "")},
				{row: ini()},
			},
		},
		{
			name: "commit matched during the scan: the scan's late prewrite is not cached", checkpoint: 5,
			steps: []step{
				{row: pw("k", 3, put, "v", "")}, // realtime rewrite of a short-value lock
				{row: cm("k", 3, 20, put, ""), want: []Event{ev("k", OpPut, "v", "", 3, 20)}},
				{row: pw("k", 3, put, "v", "")}, // the scan's row for the same lock
				{row: ini()},
			},
		},
		{
			name: "pipelined DML without generation: last non-empty prewrite wins", checkpoint: 5,
			steps: []step{
				{row: ini()},
				{row: pw("k", 10, put, "v1", "o")},
				{row: pw("k", 10, put, "v2", "o")},
				{row: pw("k", 10, put, "", "o")},
				{row: cm("k", 10, 20, put, ""), want: []Event{ev("k", OpPut, "v2", "o", 10, 20)}},
			},
		},
		{
			name: "pipelined DML put then delete", checkpoint: 5,
			steps: []step{
				{row: ini()},
				{row: pw("k", 10, put, "v1", "o")},
				{row: pw("k", 10, del, "", "o")},
				{row: cm("k", 10, 20, del, ""), want: []Event{ev("k", OpDelete, "", "o", 10, 20)}},
			},
		},
		{
			name: "generation breaks ties: an older flush arriving late is ignored", checkpoint: 5,
			steps: []step{
				{row: ini()},
				{row: pwGen("k", 10, put, "v2", "o", 2)},
				{row: pwGen("k", 10, put, "v1", "o", 1)},
				{row: cm("k", 10, 20, put, ""), want: []Event{ev("k", OpPut, "v2", "o", 10, 20)}},
			},
		},
		{
			name: "with generations, a commit during the scan waits for INITIALIZED", checkpoint: 5,
			steps: []step{
				{row: pwGen("k", 3, put, "v3", "o", 3)},
				{row: cm("k", 3, 20, put, "")},
				{row: pwGen("k", 3, put, "v2", "o", 2)},
				{row: ini(), want: []Event{ev("k", OpPut, "v3", "o", 3, 20)}},
			},
		},
		{
			name: "a re-sent parked commit yields one event", checkpoint: 5,
			steps: []step{
				{row: cm("k", 3, 20, del, "")},
				{row: cm("k", 3, 20, del, "")},
				{row: pw("k", 3, del, "", "o")},
				{row: ini(), want: []Event{ev("k", OpDelete, "", "o", 3, 20)}},
			},
		},
		{
			name: "resolved ts: ignored before INITIALIZED and when not above", checkpoint: 50,
			steps: []step{
				resolved(60, false),
				{row: ini()},
				resolved(40, false), // first report below the checkpoint is legal and ignored
				resolved(50, false),
				resolved(60, true),
				resolved(60, false),
				resolved(55, false),
				resolved(61, true),
			},
		},
		{
			name: "commit at or below the resolved ts is a protocol error", checkpoint: 50,
			steps: []step{
				{row: ini()},
				{row: pw("k", 55, put, "v", "")},
				resolved(55, true),
				{row: cm("k", 55, 55, put, ""), wantErr: ErrCommitBelowResolved},
			},
			wantLen: 1,
		},
		{
			name: "COMMITTED at or below the resolved ts is a protocol error", checkpoint: 50,
			steps: []step{
				{row: ini()},
				resolved(60, true),
				{row: cd("k", 55, 58, put, "v", ""), wantErr: ErrCommitBelowResolved},
			},
		},
		{
			name: "unknown op and row type", checkpoint: 5,
			steps: []step{
				{row: cm("k", 10, 20, cdcpb.Event_Row_UNKNOWN, ""), wantErr: ErrUnknownOp},
				{row: cd("k", 10, 20, cdcpb.Event_Row_UNKNOWN, "", ""), wantErr: ErrUnknownOp},
				{row: &cdcpb.Event_Row{Type: 42}, wantErr: ErrUnknownRowType},
			},
		},
		{
			// TiKV's row for a committed Lock record (spec §2.5, §3.5):
			// ignored before and after INITIALIZED, matching untouched.
			name: "UNKNOWN rows of lock-only commits are ignored", checkpoint: 5,
			steps: []step{
				{row: pw("k", 10, put, "v", "")},
				{row: &cdcpb.Event_Row{}},
				{row: ini()},
				{row: &cdcpb.Event_Row{}},
				{row: cm("k", 10, 20, put, ""), want: []Event{ev("k", OpPut, "v", "", 10, 20)}},
				{row: &cdcpb.Event_Row{Type: cdcpb.Event_UNKNOWN, Key: []byte("ignored-whatever-it-holds")}},
			},
		},
		{
			name: "a second INITIALIZED is ignored", checkpoint: 5,
			steps: []step{
				{row: ini()},
				{row: pw("k", 10, put, "v", "")},
				{row: ini()},
				{row: cm("k", 10, 20, put, ""), want: []Event{ev("k", OpPut, "v", "", 10, 20)}},
			},
		},
		{
			name: "open transaction stays cached", checkpoint: 5,
			steps: []step{
				{row: pw("k", 3, put, "v", "")},
				{row: ini()},
				{row: pw("j", 10, del, "", "")},
			},
			wantLen: 2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := New(tc.checkpoint)
			for i, s := range tc.steps {
				if s.row == nil {
					require.Equal(t, s.advanced, m.Resolved(s.resolved), "step %d: Resolved(%d)", i, s.resolved)
					continue
				}
				got, err := m.Row(s.row)
				if s.wantErr != nil {
					require.ErrorIs(t, err, s.wantErr, "step %d", i)
					require.ErrorIs(t, err, ErrProtocol, "step %d", i)
					continue
				}
				require.NoError(t, err, "step %d", i)
				if len(s.want) == 0 {
					require.Empty(t, got, "step %d", i)
				} else {
					require.Equal(t, s.want, got, "step %d", i)
				}
			}
			require.Equal(t, tc.wantLen, m.Len())
			if tc.wantLen == 0 {
				require.Zero(t, m.PendingBytes())
			}
		})
	}
}

func TestErrorsSurviveWrapping(t *testing.T) {
	m := New(5)
	_, err := m.Row(ini())
	require.NoError(t, err)
	_, err = m.Row(cm("k", 10, 20, put, ""))
	wrapped := fmt.Errorf("region 7: %w", err)
	require.True(t, errors.Is(wrapped, ErrUnmatchedCommit))
	require.True(t, errors.Is(wrapped, ErrProtocol))
	require.False(t, errors.Is(wrapped, ErrCommitBelowResolved))
	require.Contains(t, err.Error(), "matcher: protocol violation")
	require.Contains(t, err.Error(), "start_ts 10 commit_ts 20")
}

func TestPendingBytes(t *testing.T) {
	m := New(5)
	a := pw("a", 3, put, "value-a", "old-a")
	_, err := m.Row(a)
	require.NoError(t, err)
	require.Equal(t, heldCost(a), m.PendingBytes())
	require.Equal(t, rowOverhead+slotOverhead+2*1+7+5, m.PendingBytes())

	// A replacing prewrite (pipelined flush) swaps its cost in.
	a2 := pw("a", 3, put, "a-longer-value", "old-a")
	_, err = m.Row(a2)
	require.NoError(t, err)
	require.Equal(t, heldCost(a2), m.PendingBytes())

	// A heartbeat's empty prewrite changes nothing.
	_, err = m.Row(pw("a", 3, put, "", "old-a"))
	require.NoError(t, err)
	require.Equal(t, heldCost(a2), m.PendingBytes())

	// A commit parked before INITIALIZED is held too.
	c := cm("b", 4, 20, put, "")
	_, err = m.Row(c)
	require.NoError(t, err)
	require.Equal(t, heldCost(a2)+heldCost(c), m.PendingBytes())
	require.Equal(t, 2, m.Len())

	// A rollback during the scan releases the prewrite but remembers the key.
	_, err = m.Row(rb("a", 3))
	require.NoError(t, err)
	require.Equal(t, heldCost(c)+settledCost(matchKey{3, "a"}), m.PendingBytes())

	// INITIALIZED drops the unmatched parked commit and the settled keys.
	_, err = m.Row(ini())
	require.NoError(t, err)
	require.Zero(t, m.PendingBytes())
	require.Zero(t, m.Len())
}

// TestLargeTransactionReleasesMemory: after a transaction of many keys
// commits, the cache must not keep the table it grew to.
func TestLargeTransactionReleasesMemory(t *testing.T) {
	m := New(5)
	_, err := m.Row(ini())
	require.NoError(t, err)
	const n = 5000
	for i := 0; i < n; i++ {
		_, err := m.Row(pw(fmt.Sprintf("key%05d", i), 10, put, "v", ""))
		require.NoError(t, err)
	}
	require.Equal(t, n, m.Len())
	require.Equal(t, int64(n)*(rowOverhead+slotOverhead+2*8+1), m.PendingBytes())
	for i := 0; i < n; i++ {
		got, err := m.Row(cm(fmt.Sprintf("key%05d", i), 10, 20, put, ""))
		require.NoError(t, err)
		require.Len(t, got, 1)
	}
	require.Zero(t, m.Len())
	require.Zero(t, m.PendingBytes())
	require.Nil(t, m.prewrites, "the grown map must be released")
}

func TestAppendRowAppends(t *testing.T) {
	m := New(5)
	dst := []Event{ev("x", OpPut, "", "", 1, 2)}
	dst, err := m.AppendRow(dst, cd("k", 10, 20, put, "v", ""))
	require.NoError(t, err)
	require.Equal(t, []Event{ev("x", OpPut, "", "", 1, 2), ev("k", OpPut, "v", "", 10, 20)}, dst)
}

func TestOpString(t *testing.T) {
	require.Equal(t, "put", OpPut.String())
	require.Equal(t, "delete", OpDelete.String())
	require.Equal(t, "op(9)", Op(9).String())
}

// brokenSpill grants no memory and fails every disk call.
type brokenSpill struct{ onDisk int64 }

func (b *brokenSpill) Hold(int64) bool             { return false }
func (b *brokenSpill) Unhold(int64)                {}
func (b *brokenSpill) OnDisk() int64               { return b.onDisk }
func (b *brokenSpill) Close() error                { return errors.New("disk gone") }
func (b *brokenSpill) Delete(uint64, []byte) error { return errors.New("disk gone") }
func (b *brokenSpill) Put(*cdcpb.Event_Row, bool) error {
	return errors.New("disk gone")
}
func (b *brokenSpill) Get(uint64, []byte) (*cdcpb.Event_Row, error) {
	return nil, errors.New("disk gone")
}

// A failing disk is ErrSpill, never a protocol error: the caller must
// end the subscription rather than re-register the region, which would
// blame TiKV.
func TestSpillFailureIsNotAProtocolError(t *testing.T) {
	sp := &brokenSpill{}
	m := New(5, WithSpill(sp))
	_, err := m.Row(pw("k", 10, put, "v", ""))
	require.ErrorIs(t, err, ErrSpill)
	require.NotErrorIs(t, err, ErrProtocol)
	require.ErrorContains(t, err, "disk gone")

	sp.onDisk = 1 // as if a row were there: reading it fails
	_, err = m.Row(cm("k", 10, 11, put, ""))
	require.ErrorIs(t, err, ErrSpill)
	require.NotErrorIs(t, err, ErrProtocol)
	require.ErrorIs(t, m.Close(), ErrSpill)
}
