package mount

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/pingcap/tidb/pkg/tablecodec"
	"github.com/pingcap/tidb/pkg/types"
	"github.com/tidestream/tidestream/encoder/row"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// Tables is the schema history as mount needs it. encoder/schema
// implements it.
type Tables interface {
	// TableAt returns the logical table that physical id physicalID (a
	// table id or one of its partitions' ids) belonged to at ts, as of the
	// last DDL with finished ts ≤ ts. An id that was dropped or truncated
	// by then yields an error wrapping row.ErrGone; an id never seen is
	// any other error. Mount's caller must already have waited until the
	// history resolved to the event's commit ts.
	//
	// Mount builds a decoder per table version and keeps it while TableAt
	// returns that *row.Table (or one with the same Version and Info), so
	// implementations should hand out built tables, not rebuild per call.
	TableAt(physicalID int64, ts uint64) (*row.Table, error)
}

// Config configures a Mounter.
type Config struct {
	// TimeZone is the zone TIMESTAMP values (stored in UTC) and TIMESTAMP
	// origin defaults are rendered in; DATE and DATETIME are never
	// converted. Nil means UTC, the spec's safe default (§3.5); TiCDC's
	// changefeed tz defaults to the server's local zone instead.
	TimeZone *time.Location
	// OutputRawChangeEvent keeps an update that changes a primary- or
	// unique-key column as one update instead of delete + insert. Off by
	// default, like TiCDC's output-raw-change-event: with it on, a changed
	// Kafka key leaves the old key's record behind downstream.
	OutputRawChangeEvent bool
}

// Mounter decodes raw KV events. It keeps one decoder per table version it
// has seen and scratch space, so it is not safe for concurrent use: give
// each pipeline goroutine its own.
type Mounter struct {
	loc *time.Location
	raw bool
	// decoders holds the decoder of the table version last used for each
	// logical table id; a newer version replaces it, so the map stays as
	// small as the set of tables this mounter serves.
	decoders map[int64]*tableDecoder
}

// New returns a Mounter for cfg.
func New(cfg Config) (*Mounter, error) {
	loc := cfg.TimeZone
	if loc == nil {
		loc = time.UTC
	}
	return &Mounter{loc: loc, raw: cfg.OutputRawChangeEvent, decoders: make(map[int64]*tableDecoder)}, nil
}

// Mount decodes ev and appends its row changes to out: none when the event
// carries no change (both images empty) or its table is gone, one for an
// insert, delete or update, and two (the delete, then the insert) for an
// update that changes a primary- or unique-key column unless the config
// keeps raw change events. Both images are decoded with the table as of
// ev.CommitTs−1, so a DDL finishing at the same ts does not apply (spec
// §4.3).
//
// An event that cannot be decoded is an error naming table, key and commit
// ts; it is never skipped. The returned rows' datums are read-only and may
// share memory with ev's Key, Value and OldValue (JSON, vectors) and with
// other rows (defaults), so ev's buffers must not be reused while the rows
// are in use.
func (m *Mounter) Mount(ev *tidestreamv1.RawKVEvent, tables Tables, out []row.Row) ([]row.Row, error) {
	// Clipped: TiDB's v2 decoder reslices the value by its own header
	// without comparing against len, so a truncated value could otherwise
	// read stale bytes from spare capacity instead of failing.
	value, old := slices.Clip(ev.GetValue()), slices.Clip(ev.GetOldValue())
	if len(value) == 0 && len(old) == 0 {
		// E.g. a row inserted and deleted inside one transaction.
		return out, nil
	}
	var op row.Op
	switch ev.GetOp() {
	case tidestreamv1.OpType_OP_TYPE_DELETE:
		if len(old) == 0 {
			return out, fmt.Errorf("mount: delete with a value but no old value for key %x at commit ts %d", ev.GetKey(), ev.GetCommitTs())
		}
		op = row.Delete
	case tidestreamv1.OpType_OP_TYPE_PUT:
		if len(value) == 0 {
			return out, fmt.Errorf("mount: put without value for key %x at commit ts %d", ev.GetKey(), ev.GetCommitTs())
		}
		op = row.Insert
		if len(old) > 0 {
			op = row.Update
		}
	default:
		return out, fmt.Errorf("mount: unknown op %v for key %x at commit ts %d", ev.GetOp(), ev.GetKey(), ev.GetCommitTs())
	}
	commitTs := ev.GetCommitTs()
	if commitTs == 0 {
		return out, fmt.Errorf("mount: key %x has no commit ts", ev.GetKey())
	}

	key := row.StripKeyspace(ev.GetKey())
	physicalID, handle, err := tablecodec.DecodeRecordKey(key)
	if err != nil {
		return out, fmt.Errorf("mount: key %x at commit ts %d: %w", ev.GetKey(), commitTs, err)
	}
	t, err := tables.TableAt(physicalID, commitTs-1)
	if errors.Is(err, row.ErrGone) {
		return out, nil
	}
	if err != nil {
		return out, fmt.Errorf("mount: table of key %x at commit ts %d: %w", ev.GetKey(), commitTs, err)
	}
	if t == nil {
		return out, fmt.Errorf("mount: no table and no error for physical id %d at ts %d", physicalID, commitTs-1)
	}
	dec := m.decoder(t)

	r := row.Row{Table: t, PhysicalID: physicalID, StartTs: ev.GetStartTs(), CommitTs: commitTs, Op: op}
	// One backing array for both images: one allocation per event.
	n := len(t.Columns)
	size := n
	if op == row.Update {
		size = 2 * n
	}
	slab := make([]types.Datum, size)
	if op != row.Delete {
		r.Cols = slab[:n:n]
		if err := dec.decode(value, handle, r.Cols); err != nil {
			return out, decodeError(&r, ev.GetKey(), "after", err)
		}
	}
	if op != row.Insert {
		r.PreCols = slab[len(slab)-n:]
		if err := dec.decode(old, handle, r.PreCols); err != nil {
			return out, decodeError(&r, ev.GetKey(), "before", err)
		}
	}
	if op == row.Update && !m.raw && dec.keyChanged(r.PreCols, r.Cols) {
		del, ins := r, r
		del.Op, del.Cols = row.Delete, nil
		ins.Op, ins.PreCols = row.Insert, nil
		return append(out, del, ins), nil
	}
	return append(out, r), nil
}

func decodeError(r *row.Row, key []byte, image string, err error) error {
	t := r.Table
	return fmt.Errorf("mount: decode %s image of %s.%s (table %d, physical %d) key %x at commit ts %d: %w",
		image, t.Schema, t.Name, t.ID, r.PhysicalID, key, r.CommitTs, err)
}
