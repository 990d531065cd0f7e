package consumer

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"math/big"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	hamba "github.com/hamba/avro/v2"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/tidestream/tidestream/services/dbtest"
	"github.com/tidestream/tidestream/services/devstack/registry"
)

// kafkaEnv is kfake plus the devstack registry, with a producer that
// frames Avro the way the encoder does.
type kafkaEnv struct {
	t        *testing.T
	brokers  []string
	registry string
	reg      *sr.Client
	cl       *kgo.Client
	ids      map[string]int
}

func newKafkaEnv(t *testing.T, partitions int) *kafkaEnv {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(partitions), kfake.AllowAutoTopicCreation())
	require.NoError(t, err)
	t.Cleanup(c.Close)
	r, err := registry.New(registry.Config{})
	require.NoError(t, err)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	reg, err := sr.NewClient(sr.URLs(srv.URL))
	require.NoError(t, err)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.AllowAutoTopicCreation(),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return &kafkaEnv{t: t, brokers: c.ListenAddrs(), registry: srv.URL, reg: reg, cl: cl, ids: map[string]int{}}
}

// encode registers schema under subject and frames v.
func (e *kafkaEnv) encode(subject, schema string, v map[string]any) []byte {
	e.t.Helper()
	id, ok := e.ids[subject+schema]
	if !ok {
		ss, err := e.reg.CreateSchema(context.Background(), subject, sr.Schema{Schema: schema})
		require.NoError(e.t, err)
		id = ss.ID
		e.ids[subject+schema] = id
	}
	s, err := hamba.ParseWithCache(schema, "", &hamba.SchemaCache{})
	require.NoError(e.t, err)
	body, err := hamba.Marshal(s, v)
	require.NoError(e.t, err)
	out := binary.BigEndian.AppendUint32([]byte{0}, uint32(id))
	return append(out, body...)
}

// put produces an upsert (value != nil) or a tombstone.
func (e *kafkaEnv) put(topic, keySchema string, key map[string]any, valueSchema string, value map[string]any) {
	e.t.Helper()
	r := &kgo.Record{Topic: topic, Key: e.encode(topic+"-key", keySchema, key)}
	if value != nil {
		r.Value = e.encode(topic+"-value", valueSchema, value)
	}
	require.NoError(e.t, e.cl.ProduceSync(context.Background(), r).FirstErr())
}

func (e *kafkaEnv) consumer(t *testing.T, target, group string) *Consumer {
	cfg := DefaultConfig()
	cfg.Brokers, cfg.Registry, cfg.Target, cfg.Group = e.brokers, e.registry, target, group
	c, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

const (
	keyInt = `{"type":"record","name":"t","namespace":"default.s","fields":[{"name":"id","type":{"type":"int","connect.parameters":{"tidb_type":"INT"}}}]}`
	valV1  = `{"type":"record","name":"t","namespace":"default.s","fields":[
		{"name":"id","type":{"type":"int","connect.parameters":{"tidb_type":"INT"}}},
		{"default":null,"name":"name","type":["null",{"type":"string","connect.parameters":{"tidb_type":"TEXT"}}]},
		{"default":null,"name":"price","type":["null",{"type":"bytes","connect.parameters":{"tidb_type":"DECIMAL"},"logicalType":"decimal","precision":10,"scale":2}]},
		{"default":null,"name":"blob","type":["null",{"type":"bytes","connect.parameters":{"tidb_type":"BLOB"}}]},
		{"name":"f","type":{"type":"float","connect.parameters":{"tidb_type":"FLOAT"}}},
		{"name":"d","type":{"type":"double","connect.parameters":{"tidb_type":"DOUBLE"}}},
		{"name":"big","type":{"type":"long","connect.parameters":{"tidb_type":"BIGINT UNSIGNED"}}},
		{"name":"dt","type":{"type":"string","connect.parameters":{"tidb_type":"DATETIME"}}}
	]}`
	// valV2 adds a column (auto.evolve) and drops "blob".
	valV2 = `{"type":"record","name":"t","namespace":"default.s","fields":[
		{"name":"id","type":{"type":"int","connect.parameters":{"tidb_type":"INT"}}},
		{"default":null,"name":"name","type":["null",{"type":"string","connect.parameters":{"tidb_type":"TEXT"}}]},
		{"default":null,"name":"price","type":["null",{"type":"bytes","connect.parameters":{"tidb_type":"DECIMAL"},"logicalType":"decimal","precision":10,"scale":2}]},
		{"name":"f","type":{"type":"float","connect.parameters":{"tidb_type":"FLOAT"}}},
		{"name":"d","type":{"type":"double","connect.parameters":{"tidb_type":"DOUBLE"}}},
		{"name":"big","type":{"type":"long","connect.parameters":{"tidb_type":"BIGINT UNSIGNED"}}},
		{"name":"dt","type":{"type":"string","connect.parameters":{"tidb_type":"DATETIME"}}},
		{"default":7,"name":"extra","type":[{"type":"long","connect.parameters":{"tidb_type":"BIGINT"}},"null"]}
	]}`
	keyStr = `{"type":"record","name":"u","namespace":"default.s","fields":[{"name":"k","type":{"type":"string","connect.parameters":{"tidb_type":"TEXT"}}},{"name":"n","type":{"type":"long","connect.parameters":{"tidb_type":"BIGINT"}}}]}`
	valStr = `{"type":"record","name":"u","namespace":"default.s","fields":[{"name":"k","type":{"type":"string","connect.parameters":{"tidb_type":"TEXT"}}},{"name":"n","type":{"type":"long","connect.parameters":{"tidb_type":"BIGINT"}}},{"default":null,"name":"v","type":["null",{"type":"string","connect.parameters":{"tidb_type":"TEXT"}}]}]}`
)

// valW has NOT NULL fields with defaults; valW2 adds more.
const (
	valW = `{"type":"record","name":"w","namespace":"default.s","fields":[
		{"name":"id","type":{"type":"int","connect.parameters":{"tidb_type":"INT"}}},
		{"default":5,"name":"c","type":{"type":"int","connect.parameters":{"tidb_type":"INT"}}},
		{"default":"d'e\\f","name":"s","type":{"type":"string","connect.parameters":{"tidb_type":"TEXT"}}},
		{"default":"\u0000\u00ff","name":"b","type":{"type":"bytes","connect.parameters":{"tidb_type":"BLOB"}}}
	]}`
	valW2 = `{"type":"record","name":"w","namespace":"default.s","fields":[
		{"name":"id","type":{"type":"int","connect.parameters":{"tidb_type":"INT"}}},
		{"default":5,"name":"c","type":{"type":"int","connect.parameters":{"tidb_type":"INT"}}},
		{"default":"d'e\\f","name":"s","type":{"type":"string","connect.parameters":{"tidb_type":"TEXT"}}},
		{"default":"\u0000\u00ff","name":"b","type":{"type":"bytes","connect.parameters":{"tidb_type":"BLOB"}}},
		{"default":1.5,"name":"r","type":{"type":"double","connect.parameters":{"tidb_type":"DOUBLE"}}},
		{"default":"\u00ce","name":"dec","type":{"type":"bytes","connect.parameters":{"tidb_type":"DECIMAL"},"logicalType":"decimal","precision":6,"scale":2}},
		{"default":"it's \\ 'q'","name":"t","type":[{"type":"string","connect.parameters":{"tidb_type":"TEXT"}},"null"]}
	]}`
)

func mustRat(s string) *big.Rat {
	r, _ := new(big.Rat).SetString(s)
	return r
}

func row1(id int, name any, price string, f float32) map[string]any {
	r, _ := new(big.Rat).SetString(price)
	return map[string]any{"id": id, "name": name, "price": r, "blob": []byte{0, 1, byte(id)},
		"f": f, "d": float64(id) / 3, "big": int64(-1), "dt": "2024-01-02 03:04:05.120"}
}

// dump reads a table as sorted lines of text, the same for both dialects.
func dump(t *testing.T, db *sql.DB, d Dialect, query string) []string {
	t.Helper()
	rows, err := db.Query(query)
	require.NoError(t, err)
	defer rows.Close()
	cols, err := rows.Columns()
	require.NoError(t, err)
	var out []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		require.NoError(t, rows.Scan(ptrs...))
		var parts []string
		for i, v := range vals {
			if b, ok := v.([]byte); ok {
				v = string(b)
			}
			if f, ok := v.(float64); ok && cols[i] == "f" {
				v = float32(f) // a REAL comes back as the float64 of the float32
			}
			parts = append(parts, fmt.Sprintf("%s=%v", cols[i], v))
		}
		out = append(out, strings.Join(parts, " "))
	}
	require.NoError(t, rows.Err())
	return out
}

func targets(t *testing.T) map[string]*dbtest.Server {
	return map[string]*dbtest.Server{"mariadb": dbtest.StartMariaDB(t), "postgres": dbtest.StartPostgres(t)}
}

// TestApply covers auto.create, upsert, delete on tombstone, replay
// idempotence, auto.evolve (added column; a dropped NOT NULL-less column
// left in place) and committed group offsets, on both databases.
func TestApply(t *testing.T) {
	for name, srv := range targets(t) {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			env := newKafkaEnv(t, 3)
			db := srv.Open(t)
			target, err := ParseTarget(srv.URL)
			require.NoError(t, err)
			d := target.Dialect
			q := func(s string) string {
				return strings.ReplaceAll(s, "`", map[Dialect]string{MySQL: "`", Postgres: `"`}[d])
			}

			for i := 1; i <= 5; i++ {
				env.put("tidb_s_t", keyInt, map[string]any{"id": i}, valV1, row1(i, map[string]any{"string": fmt.Sprint("n", i)}, fmt.Sprintf("%d.5", i), 0.1))
			}
			env.put("tidb_s_t", keyInt, map[string]any{"id": 2}, valV1, row1(2, nil, "-2.25", 1.5)) // update
			env.put("tidb_s_t", keyInt, map[string]any{"id": 3}, "", nil)                           // delete
			env.put("tidb_s_t", keyInt, map[string]any{"id": 9}, "", nil)                           // delete of nothing

			c := env.consumer(t, srv.URL, "g1")
			st, err := c.CatchUp(ctx)
			require.NoError(t, err)
			require.EqualValues(t, 8, st.Records)
			sel := q("SELECT `id`, `name`, `price`, `f`, `big`, `dt` FROM `tidb_s_t` ORDER BY `id`")
			want := []string{
				"id=1 name=n1 price=1.50 f=0.1 big=-1 dt=2024-01-02 03:04:05.120",
				"id=2 name=<nil> price=-2.25 f=1.5 big=-1 dt=2024-01-02 03:04:05.120",
				"id=4 name=n4 price=4.50 f=0.1 big=-1 dt=2024-01-02 03:04:05.120",
				"id=5 name=n5 price=5.50 f=0.1 big=-1 dt=2024-01-02 03:04:05.120",
			}
			require.Equal(t, want, dump(t, db, d, sel))

			// The group committed: a second catch-up has nothing to do.
			st, err = c.CatchUp(ctx)
			require.NoError(t, err)
			require.EqualValues(t, 0, st.Records)

			// Replay from the beginning (no group): same state.
			c2 := env.consumer(t, srv.URL, "")
			st, err = c2.CatchUp(ctx)
			require.NoError(t, err)
			require.EqualValues(t, 8, st.Records)
			require.Equal(t, want, dump(t, db, d, sel))

			// Schema evolution: a new column, "blob" gone from the schema.
			v := row1(6, map[string]any{"string": "six"}, "6", 2)
			delete(v, "blob")
			v["extra"] = map[string]any{"long": int64(42)}
			env.put("tidb_s_t", keyInt, map[string]any{"id": 6}, valV2, v)
			v = row1(1, map[string]any{"string": "one"}, "1", 2)
			delete(v, "blob")
			v["extra"] = nil
			env.put("tidb_s_t", keyInt, map[string]any{"id": 1}, valV2, v)
			_, err = c.CatchUp(ctx)
			require.NoError(t, err)
			// The rows already there take the added column's default (7), as
			// with the JDBC sink's auto.evolve and as TiDB has them.
			require.Equal(t, []string{
				"id=1 name=one extra=<nil> blob=\x00\x01\x01",
				"id=2 name=<nil> extra=7 blob=\x00\x01\x02",
				"id=4 name=n4 extra=7 blob=\x00\x01\x04",
				"id=5 name=n5 extra=7 blob=\x00\x01\x05",
				"id=6 name=six extra=42 blob=<nil>",
			}, dump(t, db, d, q("SELECT `id`, `name`, `extra`, `blob` FROM `tidb_s_t` ORDER BY `id`")))

			// Records of the old schema after the column exists (a late
			// partition, a replay): the upsert names only their fields, so an
			// existing row keeps its extra and a new row takes the default.
			env.put("tidb_s_t", keyInt, map[string]any{"id": 6}, valV1, row1(6, map[string]any{"string": "six"}, "6", 2))
			env.put("tidb_s_t", keyInt, map[string]any{"id": 7}, valV1, row1(7, map[string]any{"string": "seven"}, "7", 2))
			_, err = c.CatchUp(ctx)
			require.NoError(t, err)
			require.Equal(t, []string{
				"id=6 name=six extra=42 blob=\x00\x01\x06",
				"id=7 name=seven extra=7 blob=\x00\x01\x07",
			}, dump(t, db, d, q("SELECT `id`, `name`, `extra`, `blob` FROM `tidb_s_t` WHERE `id` >= 6 ORDER BY `id`")))

			// Defaults of every literal kind, created with the table and
			// added to it.
			env.put("tidb_s_w", keyInt, map[string]any{"id": 1}, valW, map[string]any{"id": 1, "c": 1, "s": "x", "b": []byte("y")})
			env.put("tidb_s_w", keyInt, map[string]any{"id": 2}, valW2, map[string]any{"id": 2, "c": 2, "s": "z", "b": []byte{0}, "r": 0.5, "dec": mustRat("1.25"), "t": map[string]any{"string": "q"}})
			env.put("tidb_s_w", keyInt, map[string]any{"id": 3}, valW, map[string]any{"id": 3, "c": 3, "s": "x", "b": []byte("y")})
			_, err = c.CatchUp(ctx)
			require.NoError(t, err)
			require.Equal(t, []string{
				"id=1 c=1 s=x b=y r=1.5 dec=-0.50 t=it's \\ 'q'",
				"id=2 c=2 s=z b=\x00 r=0.5 dec=1.25 t=q",
				"id=3 c=3 s=x b=y r=1.5 dec=-0.50 t=it's \\ 'q'",
			}, dump(t, db, d, q("SELECT `id`, `c`, `s`, `b`, `r`, `dec`, `t` FROM `tidb_s_w` ORDER BY `id`")))

			// A string + bigint key: case matters, both rows stay.
			env.put("tidb_s_u", keyStr, map[string]any{"k": "a", "n": int64(1)}, valStr, map[string]any{"k": "a", "n": int64(1), "v": map[string]any{"string": "lower"}})
			env.put("tidb_s_u", keyStr, map[string]any{"k": "A", "n": int64(1)}, valStr, map[string]any{"k": "A", "n": int64(1), "v": nil})
			env.put("tidb_s_u", keyStr, map[string]any{"k": "b", "n": int64(2)}, valStr, map[string]any{"k": "b", "n": int64(2), "v": nil})
			env.put("tidb_s_u", keyStr, map[string]any{"k": "b", "n": int64(2)}, "", nil)
			_, err = c.CatchUp(ctx)
			require.NoError(t, err)
			order := "ORDER BY `k`"
			if d == Postgres {
				order = `ORDER BY "k" COLLATE "C"`
			}
			require.Equal(t, []string{"k=A n=1 v=<nil>", "k=a n=1 v=lower"},
				dump(t, db, d, q("SELECT `k`, `n`, `v` FROM `tidb_s_u` "+order)))
		})
	}
}

// TestBadRecord: a record that is not Confluent Avro stops the consumer
// with the topic, partition and offset in the error, and nothing of its
// batch is committed.
func TestBadRecord(t *testing.T) {
	srv := dbtest.StartMariaDB(t)
	env := newKafkaEnv(t, 1)
	env.put("tidb_s_t", keyInt, map[string]any{"id": 1}, valV1, row1(1, nil, "1", 1))
	require.NoError(t, env.cl.ProduceSync(context.Background(), &kgo.Record{Topic: "tidb_s_t", Key: []byte("plain"), Value: []byte("x")}).FirstErr())
	c := env.consumer(t, srv.URL, "")
	_, err := c.CatchUp(context.Background())
	require.ErrorIs(t, err, ErrBadRecord)
	require.Contains(t, err.Error(), "topic tidb_s_t partition 0 offset 1")
	require.Contains(t, err.Error(), "not Confluent-framed")
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Brokers: []string{"127.0.0.1:9092"}, Registry: "http://127.0.0.1:8081", Target: "mysql://root@127.0.0.1:3306/db"}
	require.NoError(t, ok.Validate())
	require.Equal(t, DefaultTopics, ok.Topics)
	for name, mut := range map[string]func(*Config){
		"Brokers":  func(c *Config) { c.Brokers = nil },
		"Registry": func(c *Config) { c.Registry = "127.0.0.1:8081" },
		"Topics":   func(c *Config) { c.Topics = "(" },
		"Target":   func(c *Config) { c.Target = "sqlite:///x" },
	} {
		c := ok
		mut(&c)
		err := c.Validate()
		require.Error(t, err, name)
		require.Contains(t, err.Error(), name)
	}
}

func TestColumnType(t *testing.T) {
	for _, tc := range []struct {
		f            Field
		key          bool
		mysql, pgsql string
	}{
		{Field{Kind: KindInt}, false, "INT", "INTEGER"},
		{Field{Kind: KindLong}, true, "BIGINT", "BIGINT"},
		{Field{Kind: KindFloat}, false, "FLOAT", "REAL"},
		{Field{Kind: KindDouble}, false, "DOUBLE", "DOUBLE PRECISION"},
		{Field{Kind: KindBoolean}, false, "BOOLEAN", "BOOLEAN"},
		{Field{Kind: KindString}, false, "LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin", "TEXT"},
		{Field{Kind: KindString}, true, "VARCHAR(256) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin", "TEXT"},
		{Field{Kind: KindBytes}, false, "LONGBLOB", "BYTEA"},
		{Field{Kind: KindBytes}, true, "VARBINARY(1024)", "BYTEA"},
		{Field{Kind: KindDecimal, Precision: 65, Scale: 30}, false, "DECIMAL(65,30)", "NUMERIC(65,30)"},
	} {
		got, err := MySQL.ColumnType(tc.f, tc.key)
		require.NoError(t, err)
		require.Equal(t, tc.mysql, got)
		got, err = Postgres.ColumnType(tc.f, tc.key)
		require.NoError(t, err)
		require.Equal(t, tc.pgsql, got)
	}
	_, err := MySQL.ColumnType(Field{Name: "x", Kind: KindDecimal, Precision: 66, Scale: 2}, false)
	require.ErrorContains(t, err, "DECIMAL(65,30)")
}

func TestParseTarget(t *testing.T) {
	tg, err := ParseTarget("mysql://u:p@127.0.0.1:3306/db")
	require.NoError(t, err)
	require.Equal(t, MySQL, tg.Dialect)
	require.Contains(t, tg.DSN, "u:p@tcp(127.0.0.1:3306)/db")
	tg, err = ParseTarget("postgres://u@127.0.0.1:5432/db?sslmode=disable")
	require.NoError(t, err)
	require.Equal(t, Postgres, tg.Dialect)
	require.Equal(t, "tidestream-consumer-postgres-127.0.0.1:5432-db", DefaultGroup("postgres://u@127.0.0.1:5432/db?sslmode=disable"))
	require.NotEqual(t, DefaultGroup("mysql://u@127.0.0.1:3306/a"), DefaultGroup("mysql://u@127.0.0.1:3306/b"))
	_, err = ParseTarget("mysql://u:secret@127.0.0.1:3306/")
	require.ErrorContains(t, err, "one database")
	require.NotContains(t, err.Error(), "secret")
}
