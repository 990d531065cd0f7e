package diff

import (
	"context"
	"database/sql"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tidestream/tidestream/services/consumer"
)

// commitTsField is the TiDB extension field (enable-tidb-extension=true)
// that lets records committed after the snapshot be cut.
const commitTsField = "_tidb_commit_ts"

// dbRows reads the downstream copy of t, made by the consumer, into rs.
// A column the downstream table lacks reads as NULL (and differs where
// TiDB has a value); a missing table is empty.
func dbRows(ctx context.Context, db *sql.DB, tg consumer.Target, t *Table, snapshot uint64, rs *rowSet) error {
	var q string
	if tg.Dialect == consumer.MySQL {
		q = `SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?`
	} else {
		q = `SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1`
	}
	rows, err := db.QueryContext(ctx, q, t.Topic)
	if err != nil {
		return fmt.Errorf("diff: downstream columns of %s: %w", t.Topic, err)
	}
	have := map[string]string{}
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			rows.Close()
			return err
		}
		have[strings.ToLower(c)] = c
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if len(have) == 0 {
		return nil // no table: nothing arrived
	}
	var sel []string
	pos := make([]int, len(t.Columns)) // select position of each column, -1 missing
	for i, c := range t.Columns {
		name, ok := have[strings.ToLower(c.Field)]
		if !ok {
			pos[i] = -1
			continue
		}
		pos[i] = len(sel)
		sel = append(sel, tg.Dialect.Quote(name))
	}
	tsPos := -1
	if name, ok := have[commitTsField]; ok {
		tsPos = len(sel)
		sel = append(sel, tg.Dialect.Quote(name))
	}
	if len(sel) == 0 {
		return fmt.Errorf("diff: downstream table %s has none of the columns of %s", t.Topic, t.FullName())
	}
	// A prepared statement: MySQL's binary protocol returns FLOAT and
	// DOUBLE exactly (its text protocol rounds FLOAT to 6 digits).
	stmt, err := db.PrepareContext(ctx, fmt.Sprintf("SELECT %s FROM %s", strings.Join(sel, ", "), tg.Dialect.Quote(t.Topic)))
	if err != nil {
		return fmt.Errorf("diff: read downstream %s: %w", t.Topic, err)
	}
	defer stmt.Close()
	rows, err = stmt.QueryContext(ctx)
	if err != nil {
		return fmt.Errorf("diff: read downstream %s: %w", t.Topic, err)
	}
	defer rows.Close()
	vals := make([]any, len(sel))
	ptrs := make([]any, len(sel))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	get := func(i int) any {
		if pos[i] < 0 {
			return nil
		}
		return vals[pos[i]]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return fmt.Errorf("diff: read downstream %s: %w", t.Topic, err)
		}
		id, disp, sum, err := rs.canonical(t, get)
		if err != nil {
			return fmt.Errorf("diff: downstream %s: %w", t.Topic, err)
		}
		if tsPos >= 0 && snapshot > 0 {
			if ts, ok := commitTs(vals[tsPos]); ok && ts > snapshot {
				rs.newer[id] = true
			}
		}
		rs.sums[id] = sum
		rs.display[id] = disp
	}
	return rows.Err()
}

func commitTs(v any) (uint64, bool) {
	switch x := v.(type) {
	case int64:
		return uint64(x), true
	case int:
		return uint64(x), true
	case []byte:
		var n big.Int
		if _, ok := n.SetString(string(x), 10); ok {
			return n.Uint64(), true
		}
	case string:
		var n big.Int
		if _, ok := n.SetString(x, 10); ok {
			return n.Uint64(), true
		}
	}
	return 0, false
}

// replay reads every record of the tables' topics up to their end
// offsets as of the call and keeps the last record per key, a tombstone
// deleting it: the state a JDBC sink would reach. A record written with
// a schema that lacks a column (one added to the table later) reads that
// column as its Avro default, from the lowest-id schema of the topic that has
// it — what the sink's ALTER TABLE ADD COLUMN … DEFAULT gave the row, and
// what TiDB gives it.
func replay(ctx context.Context, kafka []kgo.Opt, dec *consumer.Decoder, tables []*Table, snapshot uint64, sets map[string]*rowSet) error {
	byTopic := map[string]*Table{}
	for _, t := range tables {
		if t.Skip == "" {
			byTopic[t.Topic] = t
		}
	}
	cl, err := kgo.NewClient(kafka...)
	if err != nil {
		return fmt.Errorf("diff: kafka client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	td, err := adm.ListTopics(ctx)
	if err != nil {
		return fmt.Errorf("diff: list topics: %w", err)
	}
	var topics []string
	for _, name := range td.Names() {
		if byTopic[name] != nil {
			topics = append(topics, name)
		}
	}
	if len(topics) == 0 {
		return nil
	}
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return fmt.Errorf("diff: end offsets: %w", err)
	}
	if err := ends.Error(); err != nil {
		return fmt.Errorf("diff: end offsets: %w", err)
	}
	remaining := map[string]map[int32]int64{}
	n := 0
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			if remaining[o.Topic] == nil {
				remaining[o.Topic] = map[int32]int64{}
			}
			remaining[o.Topic][o.Partition] = o.Offset
			n++
		}
	})
	if n == 0 {
		return nil
	}
	rc, err := kgo.NewClient(append(kafka[:len(kafka):len(kafka)], kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(500*time.Millisecond))...)
	if err != nil {
		return fmt.Errorf("diff: kafka client: %w", err)
	}
	defer rc.Close()
	for n > 0 {
		fetches := rc.PollRecords(ctx, 10000)
		if err := ctx.Err(); err != nil {
			return err
		}
		var ferr error
		fetches.EachError(func(t string, p int32, err error) {
			if ferr == nil {
				ferr = fmt.Errorf("diff: fetch topic %s partition %d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return ferr
		}
		for it := fetches.RecordIter(); !it.Done(); {
			r := it.Next()
			end, ok := remaining[r.Topic][r.Partition]
			if !ok || r.Offset >= end {
				continue // after the end offsets of the call
			}
			if r.Offset+1 >= end {
				delete(remaining[r.Topic], r.Partition)
				n--
			}
			t := byTopic[r.Topic]
			c, err := dec.Decode(ctx, r)
			if err != nil {
				return err
			}
			if err := applyRecord(t, &c, snapshot, sets[r.Topic]); err != nil {
				return err
			}
		}
	}
	for _, name := range topics {
		if err := resolveDefaults(byTopic[name], sets[name]); err != nil {
			return err
		}
	}
	return nil
}

// resolveDefaults re-reads the rows of rs whose last record's schema
// lacks some of t's columns, giving each such column the default of the
// lowest-id schema seen that has the field (schema ids grow as schemas
// are registered, so that is the schema which added the column; a later
// SET DEFAULT changes neither TiDB's existing rows nor the sink's
// column). A column no schema seen has stays NULL: the sink has no such
// column yet.
func resolveDefaults(t *Table, rs *rowSet) error {
	if len(rs.partial) == 0 {
		return nil
	}
	ids := make([]uint32, 0, len(rs.schemas))
	for id := range rs.schemas {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	first := map[string]consumer.Field{}
	for _, id := range ids {
		for _, f := range rs.schemas[id].Fields {
			if _, ok := first[f.Name]; !ok {
				first[f.Name] = f
			}
		}
	}
	for id, c := range rs.partial {
		get := func(i int) any {
			name := t.Columns[i].Field
			if v, ok := c.Value[name]; ok {
				return v
			}
			if _, ok := c.ValueSchema.Field(name); !ok {
				if f, ok := first[name]; ok && f.HasDefault {
					return f.Default
				}
			}
			return nil
		}
		_, disp, sum, err := rs.canonical(t, get)
		if err != nil {
			return fmt.Errorf("%s: %w", c.Where(), err)
		}
		rs.sums[id] = sum
		rs.display[id] = disp
	}
	clear(rs.partial)
	return nil
}

// applyRecord folds one record into rs.
func applyRecord(t *Table, c *consumer.Change, snapshot uint64, rs *rowSet) error {
	keyVals := make([]string, len(t.Key))
	for i, k := range t.Key {
		col := t.Columns[k]
		v, ok := c.Key[col.Field]
		if !ok {
			return fmt.Errorf("%w: %s: key has no field %s (key of %s is %v)", consumer.ErrBadRecord, c.Where(), col.Field, t.FullName(), keyNames(t))
		}
		s, _, err := Canonical(col, v)
		if err != nil {
			return fmt.Errorf("%s: key: %w", c.Where(), err)
		}
		keyVals[i] = s
	}
	id, disp := keyString(t, keyVals)
	if c.Delete() {
		// Tombstones carry no commit ts, so a delete after the snapshot
		// cannot be cut (TiCDC issue #9421).
		delete(rs.sums, id)
		delete(rs.display, id)
		delete(rs.newer, id)
		delete(rs.partial, id)
		return nil
	}
	if _, ok := rs.schemas[c.ValueSchema.ID]; !ok {
		rs.schemas[c.ValueSchema.ID] = c.ValueSchema
	}
	if snapshot > 0 {
		if v, ok := c.Value[commitTsField]; ok {
			if ts, ok := v.(int64); ok && uint64(ts) > snapshot {
				// Committed after the snapshot: keep the version before it
				// (already in rs, or none), unless nothing earlier is known.
				if _, had := rs.sums[id]; !had {
					rs.newer[id] = true
					rs.display[id] = disp
				}
				return nil
			}
		}
	}
	id2, disp2, sum, err := rs.canonical(t, func(i int) any { return c.Value[t.Columns[i].Field] })
	if err != nil {
		return fmt.Errorf("%s: %w", c.Where(), err)
	}
	_ = id2
	rs.sums[id] = sum
	rs.display[id] = disp2
	delete(rs.newer, id)
	delete(rs.partial, id)
	for _, col := range t.Columns {
		if _, ok := c.ValueSchema.Field(col.Field); !ok {
			rs.partial[id] = c
			break
		}
	}
	return nil
}

func keyNames(t *Table) []string {
	var out []string
	for _, c := range t.keyCols() {
		out = append(out, c.Field)
	}
	return out
}
