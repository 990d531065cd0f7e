package diff

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/tidestream/tidestream/encoder/avro"
	"github.com/tidestream/tidestream/encoder/dispatch"
)

// Table is one upstream table and where its copy lives downstream.
type Table struct {
	Schema, Name string
	// Topic is the Kafka topic, and the downstream table name.
	Topic string
	// Columns are the CDC-visible columns (virtual generated ones are not
	// replicated), in table order.
	Columns []Column
	// Key indexes Columns: the handle key the Avro key is built from.
	Key []int
	// Skip says why the table is not compared ("" when it is).
	Skip string
}

// FullName is schema.table.
func (t *Table) FullName() string { return t.Schema + "." + t.Name }

func (t *Table) keyCols() []Column {
	out := make([]Column, len(t.Key))
	for i, k := range t.Key {
		out[i] = t.Columns[k]
	}
	return out
}

var systemSchemas = map[string]bool{
	"mysql": true, "information_schema": true, "performance_schema": true,
	"metrics_schema": true, "sys": true, "lightning_task_info": true, "tidb_cdc": true,
}

func quoteTiDB(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

// loadTables reads the tables at the session's snapshot.
func loadTables(ctx context.Context, conn *sql.Conn, schemas []string, topic dispatch.Topic) ([]*Table, error) {
	want := map[string]bool{}
	for _, s := range schemas {
		want[strings.ToLower(s)] = true
	}
	rows, err := conn.QueryContext(ctx, `SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE'`)
	if err != nil {
		return nil, fmt.Errorf("diff: upstream tables: %w", err)
	}
	var tables []*Table
	for rows.Next() {
		var t Table
		if err := rows.Scan(&t.Schema, &t.Name); err != nil {
			rows.Close()
			return nil, err
		}
		l := strings.ToLower(t.Schema)
		if systemSchemas[l] || len(want) > 0 && !want[l] {
			continue
		}
		t.Topic = topic.Substitute(t.Schema, t.Name)
		tables = append(tables, &t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	sort.Slice(tables, func(i, j int) bool { return tables[i].FullName() < tables[j].FullName() })
	for _, t := range tables {
		if err := loadColumns(ctx, conn, t); err != nil {
			return nil, err
		}
	}
	return tables, nil
}

func loadColumns(ctx context.Context, conn *sql.Conn, t *Table) error {
	rows, err := conn.QueryContext(ctx, `SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IFNULL(NUMERIC_SCALE, 0), EXTRA, IS_NULLABLE
		FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION`, t.Schema, t.Name)
	if err != nil {
		return fmt.Errorf("diff: columns of %s: %w", t.FullName(), err)
	}
	notNull := map[string]bool{}
	for rows.Next() {
		var name, dataType, colType, extra, nullable string
		var scale int
		if err := rows.Scan(&name, &dataType, &colType, &scale, &extra, &nullable); err != nil {
			rows.Close()
			return err
		}
		if strings.Contains(strings.ToUpper(extra), "VIRTUAL GENERATED") {
			continue
		}
		k, err := KindOf(dataType, strings.Contains(strings.ToLower(colType), "unsigned"))
		if err != nil {
			t.Skip = fmt.Sprintf("column %s: %v", name, err)
			continue
		}
		notNull[strings.ToLower(name)] = nullable == "NO"
		t.Columns = append(t.Columns, Column{Name: name, Field: avro.SanitizeName(name), Kind: k, Scale: scale})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	// The handle key (spec §2.2): the primary key, else the NOT NULL
	// unique index with the fewest columns, ties to the oldest index.
	rows, err = conn.QueryContext(ctx, `SELECT KEY_NAME, NON_UNIQUE, COLUMN_NAME, INDEX_ID, SEQ_IN_INDEX
		FROM information_schema.TIDB_INDEXES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?`, t.Schema, t.Name)
	if err != nil {
		return fmt.Errorf("diff: indexes of %s: %w", t.FullName(), err)
	}
	type index struct {
		id   int64
		cols map[int]string
		ok   bool
	}
	idx := map[string]*index{}
	for rows.Next() {
		var name, col string
		var nonUnique int
		var id int64
		var seq int
		if err := rows.Scan(&name, &nonUnique, &col, &id, &seq); err != nil {
			rows.Close()
			return err
		}
		if nonUnique != 0 {
			continue
		}
		ix := idx[name]
		if ix == nil {
			ix = &index{id: id, cols: map[int]string{}, ok: true}
			idx[name] = ix
		}
		ix.cols[seq] = col
		if name != "PRIMARY" && !notNull[strings.ToLower(col)] {
			ix.ok = false
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	var best *index
	if p := idx["PRIMARY"]; p != nil {
		best = p
	} else {
		for _, ix := range idx {
			if !ix.ok {
				continue
			}
			if best == nil || len(ix.cols) < len(best.cols) || len(ix.cols) == len(best.cols) && ix.id < best.id {
				best = ix
			}
		}
	}
	if best == nil {
		if t.Skip == "" {
			t.Skip = "no primary key or NOT NULL unique key: not replicated with Avro"
		}
		return nil
	}
	inKey := map[string]bool{}
	for _, c := range best.cols {
		inKey[strings.ToLower(c)] = true
	}
	for i, c := range t.Columns { // table column order, as the Avro key
		if inKey[strings.ToLower(c.Name)] {
			t.Key = append(t.Key, i)
		}
	}
	if len(t.Key) != len(best.cols) && t.Skip == "" {
		t.Skip = "a key column is not replicated"
	}
	return nil
}

// upstreamRows reads t at the session's snapshot into rs.
func upstreamRows(ctx context.Context, conn *sql.Conn, t *Table, rs *rowSet) error {
	names := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		names[i] = quoteTiDB(c.Name)
	}
	q := fmt.Sprintf("SELECT %s FROM %s.%s", strings.Join(names, ", "), quoteTiDB(t.Schema), quoteTiDB(t.Name))
	rows, err := conn.QueryContext(ctx, q)
	if err != nil {
		return fmt.Errorf("diff: read %s: %w", t.FullName(), err)
	}
	defer rows.Close()
	vals := make([]any, len(t.Columns))
	ptrs := make([]any, len(t.Columns))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return fmt.Errorf("diff: read %s: %w", t.FullName(), err)
		}
		if err := rs.add(t, func(i int) any { return vals[i] }); err != nil {
			return fmt.Errorf("diff: upstream %s: %w", t.FullName(), err)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("diff: read %s: %w", t.FullName(), err)
	}
	return nil
}

func tsString(ts uint64) string { return strconv.FormatUint(ts, 10) }
