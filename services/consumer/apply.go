package consumer

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"math/big"
	"sort"
	"strings"
)

// column is what the applier knows of one existing column.
type column struct {
	name     string
	sqlType  string // COLUMN_TYPE (MySQL) or data_type (PostgreSQL)
	nullable bool
	// hasDefault: the column has a DEFAULT, which an insert that omits
	// it takes.
	hasDefault bool
}

// table is the applier's cache of one target table.
type table struct {
	name    string
	exists  bool
	cols    map[string]column // by folded name
	pk      map[string]bool   // folded names of the primary key columns
	evolved map[uint32]bool   // value schema ids already reconciled
}

// applier writes decoded changes into one database as the Confluent JDBC
// sink would with insert.mode=upsert, pk.mode=record_key,
// delete.enabled=true, auto.create=true and auto.evolve=true.
type applier struct {
	db      *sql.DB
	d       Dialect
	tables  map[string]*table
	maxRows int
}

func newApplier(db *sql.DB, d Dialect) *applier {
	return &applier{db: db, d: d, tables: make(map[string]*table), maxRows: 500}
}

// fold is how the dialect compares column names: MySQL's are
// case-insensitive, PostgreSQL's quoted ones are not.
func (a *applier) fold(name string) string {
	if a.d == MySQL {
		return strings.ToLower(name)
	}
	return name
}

// apply applies changes in one transaction. Within one fetch only the
// last change of each key matters (a key lives in one partition, whose
// records arrive in offset order), so changes are reduced to the final
// upsert or delete per key first: the result equals applying them one by
// one, with one statement per batch of rows instead of one per record.
// Columns a later schema no longer has are the exception: a key inserted
// and updated within one fetch keeps such a column NULL rather than the
// value of the earlier record, which only a dropped column can show.
func (a *applier) apply(ctx context.Context, changes []Change) error {
	if len(changes) == 0 {
		return nil
	}
	type reduced struct {
		last  map[string]int // key id -> index in changes
		order []string       // key ids in first-seen order
	}
	byTable := map[string]*reduced{}
	var names []string
	for i := range changes {
		c := &changes[i]
		r := byTable[c.Topic]
		if r == nil {
			r = &reduced{last: map[string]int{}}
			byTable[c.Topic] = r
			names = append(names, c.Topic)
		}
		if _, ok := r.last[c.KeyID]; !ok {
			r.order = append(r.order, c.KeyID)
		}
		r.last[c.KeyID] = i
	}
	sort.Strings(names)

	// DDL first, outside the data transaction: MySQL commits DDL
	// implicitly, and an added column must exist before rows use it.
	for _, name := range names {
		r := byTable[name]
		for _, k := range r.order {
			c := &changes[r.last[k]]
			if c.Delete() {
				continue
			}
			if err := a.ensure(ctx, name, c); err != nil {
				return fmt.Errorf("%s: %w", c.Where(), err)
			}
		}
	}

	tx, err := a.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("consumer: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	for _, name := range names {
		r := byTable[name]
		t, err := a.table(ctx, name)
		if err != nil {
			return err
		}
		var dels []*Change
		ups := map[uint32][]*Change{}
		var ids []uint32
		for _, k := range r.order {
			c := &changes[r.last[k]]
			if c.Delete() {
				if t.exists { // nothing to delete in a table never created
					dels = append(dels, c)
				}
				continue
			}
			if _, ok := ups[c.ValueSchema.ID]; !ok {
				ids = append(ids, c.ValueSchema.ID)
			}
			ups[c.ValueSchema.ID] = append(ups[c.ValueSchema.ID], c)
		}
		if err := a.delete(ctx, tx, t, dels); err != nil {
			return err
		}
		for _, id := range ids {
			if err := a.upsert(ctx, tx, t, ups[id]); err != nil {
				return err
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("consumer: commit: %w", err)
	}
	return nil
}

// table loads what the database has for name, once.
func (a *applier) table(ctx context.Context, name string) (*table, error) {
	if t := a.tables[name]; t != nil {
		return t, nil
	}
	if len(name) > a.d.maxIdent() {
		return nil, fmt.Errorf("consumer: table name %q (the topic) is longer than %s's %d-byte identifier limit", name, a.d, a.d.maxIdent())
	}
	t := &table{name: name, cols: map[string]column{}, pk: map[string]bool{}, evolved: map[uint32]bool{}}
	var q, pkq string
	if a.d == MySQL {
		q = `SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?`
		pkq = `SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY'`
	} else {
		q = `SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1`
		pkq = `SELECT k.column_name FROM information_schema.table_constraints c JOIN information_schema.key_column_usage k
			ON k.constraint_name = c.constraint_name AND k.table_schema = c.table_schema AND k.table_name = c.table_name
			WHERE c.constraint_type = 'PRIMARY KEY' AND c.table_schema = current_schema() AND c.table_name = $1`
	}
	rows, err := a.db.QueryContext(ctx, q, name)
	if err != nil {
		return nil, fmt.Errorf("consumer: columns of %s: %w", name, err)
	}
	for rows.Next() {
		var c column
		var null string
		var def sql.NullString
		if err := rows.Scan(&c.name, &c.sqlType, &null, &def); err != nil {
			rows.Close()
			return nil, fmt.Errorf("consumer: columns of %s: %w", name, err)
		}
		c.nullable = null == "YES"
		// Only NOT NULL columns need to know, and there MariaDB's 'NULL'
		// spelling of "default NULL" cannot occur.
		c.hasDefault = def.Valid
		t.cols[a.fold(c.name)] = c
		t.exists = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("consumer: columns of %s: %w", name, err)
	}
	if t.exists {
		rows, err := a.db.QueryContext(ctx, pkq, name)
		if err != nil {
			return nil, fmt.Errorf("consumer: primary key of %s: %w", name, err)
		}
		for rows.Next() {
			var c string
			if err := rows.Scan(&c); err != nil {
				rows.Close()
				return nil, err
			}
			t.pk[a.fold(c)] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	a.tables[name] = t
	return t, nil
}

// ensure creates the table from c's schemas (auto.create) or adds the
// columns c's value schema has and the table lacks (auto.evolve, always
// nullable, with the field's Avro default as the DEFAULT so the rows
// already there take it, as the JDBC sink's auto.evolve does), and lets
// columns the schema no longer has take NULL unless they have a default.
func (a *applier) ensure(ctx context.Context, name string, c *Change) error {
	t, err := a.table(ctx, name)
	if err != nil {
		return err
	}
	vs := c.ValueSchema
	if t.exists && t.evolved[vs.ID] {
		return nil
	}
	if !t.exists {
		if err := a.create(ctx, t, c); err != nil {
			return err
		}
	}
	inSchema := map[string]bool{}
	for _, f := range vs.Fields {
		if len(f.Name) > a.d.maxIdent() {
			return fmt.Errorf("consumer: column name %q is longer than %s's %d-byte identifier limit", f.Name, a.d, a.d.maxIdent())
		}
		inSchema[a.fold(f.Name)] = true
		if _, ok := t.cols[a.fold(f.Name)]; ok {
			continue
		}
		typ, err := a.d.ColumnType(f, false)
		if err != nil {
			return fmt.Errorf("table %s: %w", name, err)
		}
		def, hasDef := a.d.defaultSQL(f)
		stmt := fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s NULL%s", a.d.Quote(name), a.d.Quote(f.Name), typ, def)
		if _, err := a.db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("consumer: auto.evolve: %s: %w", stmt, err)
		}
		t.cols[a.fold(f.Name)] = column{name: f.Name, sqlType: typ, nullable: true, hasDefault: hasDef}
	}
	for k, col := range t.cols {
		if inSchema[k] || col.nullable || col.hasDefault || t.pk[k] {
			continue
		}
		var stmt string
		if a.d == MySQL {
			stmt = fmt.Sprintf("ALTER TABLE %s MODIFY COLUMN %s %s NULL", a.d.Quote(name), a.d.Quote(col.name), col.sqlType)
		} else {
			stmt = fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s DROP NOT NULL", a.d.Quote(name), a.d.Quote(col.name))
		}
		if _, err := a.db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("consumer: auto.evolve: column %s left the schema, making it nullable: %s: %w", col.name, stmt, err)
		}
		col.nullable = true
		t.cols[k] = col
	}
	t.evolved[vs.ID] = true
	return nil
}

// create is auto.create: columns from the value schema (NOT NULL unless
// the field is a union with null, with the field's Avro default), the
// primary key from the key schema.
func (a *applier) create(ctx context.Context, t *table, c *Change) error {
	key := map[string]bool{}
	var pk []string
	for _, f := range c.KeySchema.Fields {
		key[f.Name] = true
		pk = append(pk, a.d.Quote(f.Name))
	}
	if len(pk) == 0 {
		return fmt.Errorf("consumer: table %s: the key schema has no fields, so no primary key", t.name)
	}
	var defs []string
	cols := map[string]column{}
	add := func(f Field, isKey bool) error {
		typ, err := a.d.ColumnType(f, isKey)
		if err != nil {
			return fmt.Errorf("table %s: %w", t.name, err)
		}
		null := " NOT NULL"
		if f.Nullable && !isKey {
			null = " NULL"
		}
		if !isKey {
			def, _ := a.d.defaultSQL(f)
			null += def
		}
		defs = append(defs, a.d.Quote(f.Name)+" "+typ+null)
		cols[a.fold(f.Name)] = column{name: f.Name, sqlType: typ, nullable: f.Nullable && !isKey}
		return nil
	}
	for _, f := range c.ValueSchema.Fields {
		if err := add(f, key[f.Name]); err != nil {
			return err
		}
	}
	for _, f := range c.KeySchema.Fields {
		if _, ok := c.ValueSchema.Field(f.Name); !ok {
			if err := add(f, true); err != nil {
				return err
			}
		}
	}
	stmt := fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (\n  %s,\n  PRIMARY KEY (%s)\n)", a.d.Quote(t.name), strings.Join(defs, ",\n  "), strings.Join(pk, ", "))
	if a.d == MySQL {
		stmt += " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
	}
	if _, err := a.db.ExecContext(ctx, stmt); err != nil {
		return fmt.Errorf("consumer: auto.create: %s: %w", stmt, err)
	}
	// Re-read: CREATE TABLE IF NOT EXISTS may have met a table created by
	// someone else.
	delete(a.tables, t.name)
	nt, err := a.table(ctx, t.name)
	if err != nil {
		return err
	}
	if !nt.exists {
		return fmt.Errorf("consumer: auto.create: table %s is not there after CREATE TABLE", t.name)
	}
	*t = *nt
	a.tables[t.name] = t
	return nil
}

// chunk is how many rows of width cols go in one statement: at most
// maxRows, and under PostgreSQL's 65,535 bind parameters.
func (a *applier) chunk(cols int) int {
	n := a.maxRows
	if cols > 0 && n*cols > 60000 {
		n = max(1, 60000/cols)
	}
	return n
}

func (a *applier) delete(ctx context.Context, tx *sql.Tx, t *table, dels []*Change) error {
	if len(dels) == 0 {
		return nil
	}
	ks := dels[0].KeySchema
	// Group by key schema: every key of one schema has the same fields.
	groups := map[uint32][]*Change{}
	var order []uint32
	for _, c := range dels {
		if _, ok := groups[c.KeySchema.ID]; !ok {
			order = append(order, c.KeySchema.ID)
		}
		groups[c.KeySchema.ID] = append(groups[c.KeySchema.ID], c)
	}
	for _, id := range order {
		g := groups[id]
		ks = g[0].KeySchema
		var names []string
		for _, f := range ks.Fields {
			names = append(names, a.d.Quote(f.Name))
		}
		lhs := strings.Join(names, ", ")
		if len(names) > 1 {
			lhs = "(" + lhs + ")"
		}
		step := a.chunk(len(names))
		for start := 0; start < len(g); start += step {
			part := g[start:min(len(g), start+step)]
			var sb strings.Builder
			args := make([]any, 0, len(part)*len(names))
			fmt.Fprintf(&sb, "DELETE FROM %s WHERE %s IN (", a.d.Quote(t.name), lhs)
			for i, c := range part {
				if i > 0 {
					sb.WriteString(", ")
				}
				if len(names) > 1 {
					sb.WriteByte('(')
				}
				for j, f := range ks.Fields {
					if j > 0 {
						sb.WriteString(", ")
					}
					v, err := sqlValue(f, c.Key[f.Name])
					if err != nil {
						return fmt.Errorf("%w: %s: key: %v", ErrBadRecord, c.Where(), err)
					}
					args = append(args, v)
					sb.WriteString(a.d.placeholder(len(args)))
				}
				if len(names) > 1 {
					sb.WriteByte(')')
				}
			}
			sb.WriteByte(')')
			if _, err := tx.ExecContext(ctx, sb.String(), args...); err != nil {
				return fmt.Errorf("consumer: delete from %s (records up to %s): %w", t.name, part[len(part)-1].Where(), err)
			}
		}
	}
	return nil
}

// upsert writes rows that share one value schema.
func (a *applier) upsert(ctx context.Context, tx *sql.Tx, t *table, rows []*Change) error {
	vs, ks := rows[0].ValueSchema, rows[0].KeySchema
	fields := vs.Fields
	isKey := map[string]bool{}
	var pk []string
	for _, f := range ks.Fields {
		isKey[f.Name] = true
		pk = append(pk, a.d.Quote(f.Name))
	}
	var names, sets []string
	for _, f := range fields {
		q := a.d.Quote(f.Name)
		names = append(names, q)
		if isKey[f.Name] {
			continue
		}
		if a.d == MySQL {
			sets = append(sets, q+" = VALUES("+q+")")
		} else {
			sets = append(sets, q+" = EXCLUDED."+q)
		}
	}
	var tail string
	switch {
	case a.d == MySQL && len(sets) == 0:
		tail = " ON DUPLICATE KEY UPDATE " + pk[0] + " = " + pk[0]
	case a.d == MySQL:
		tail = " ON DUPLICATE KEY UPDATE " + strings.Join(sets, ", ")
	case len(sets) == 0:
		tail = " ON CONFLICT (" + strings.Join(pk, ", ") + ") DO NOTHING"
	default:
		tail = " ON CONFLICT (" + strings.Join(pk, ", ") + ") DO UPDATE SET " + strings.Join(sets, ", ")
	}
	head := fmt.Sprintf("INSERT INTO %s (%s) VALUES ", a.d.Quote(t.name), strings.Join(names, ", "))
	step := a.chunk(len(fields))
	for start := 0; start < len(rows); start += step {
		part := rows[start:min(len(rows), start+step)]
		var sb strings.Builder
		sb.WriteString(head)
		args := make([]any, 0, len(part)*len(fields))
		for i, c := range part {
			if i > 0 {
				sb.WriteString(", ")
			}
			sb.WriteByte('(')
			for j, f := range fields {
				if j > 0 {
					sb.WriteString(", ")
				}
				v, err := sqlValue(f, c.Value[f.Name])
				if err != nil {
					return fmt.Errorf("%w: %s: value: %v", ErrBadRecord, c.Where(), err)
				}
				args = append(args, v)
				sb.WriteString(a.d.placeholder(len(args)))
			}
			sb.WriteByte(')')
		}
		sb.WriteString(tail)
		if _, err := tx.ExecContext(ctx, sb.String(), args...); err != nil {
			return fmt.Errorf("consumer: upsert into %s (records %s .. %s): %w", t.name, part[0].Where(), part[len(part)-1].Where(), err)
		}
	}
	return nil
}

// sqlValue converts a decoded Avro value to a bind parameter for f's
// column.
func sqlValue(f Field, v any) (any, error) {
	if v == nil {
		if !f.Nullable {
			return nil, fmt.Errorf("field %s: null in a non-nullable field", f.Name)
		}
		return nil, nil
	}
	switch f.Kind {
	case KindInt, KindLong:
		switch x := v.(type) {
		case int:
			return int64(x), nil
		case int32:
			return int64(x), nil
		case int64:
			return x, nil
		}
	case KindFloat:
		switch x := v.(type) {
		case float32:
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				return nil, fmt.Errorf("field %s: %v has no SQL value", f.Name, x)
			}
			return float64(x), nil // exact; the FLOAT/REAL column rounds back to x
		}
	case KindDouble:
		if x, ok := v.(float64); ok {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return nil, fmt.Errorf("field %s: %v has no SQL value", f.Name, x)
			}
			return x, nil
		}
	case KindBoolean:
		if x, ok := v.(bool); ok {
			return x, nil
		}
	case KindString:
		if x, ok := v.(string); ok {
			return x, nil
		}
	case KindBytes:
		if x, ok := v.([]byte); ok {
			return x, nil
		}
	case KindDecimal:
		if x, ok := v.(*big.Rat); ok {
			return DecimalText(x, f.Scale), nil
		}
	}
	return nil, fmt.Errorf("field %s: decoded %T for Avro %s", f.Name, v, f.Kind)
}
