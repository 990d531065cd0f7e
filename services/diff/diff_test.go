package diff

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"math/big"
	"net/http/httptest"
	"testing"
	"time"

	hamba "github.com/hamba/avro/v2"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/tidestream/tidestream/services/consumer"
	"github.com/tidestream/tidestream/services/dbtest"
	"github.com/tidestream/tidestream/services/devstack/registry"
)

// The table of the test, as TiDB would describe it and as the encoder
// writes it (with the TiDB extension fields).
var mixTable = &Table{
	Schema: "s", Name: "mix", Topic: "tidb_s_mix",
	Columns: []Column{
		{Name: "id", Field: "id", Kind: KindInt},
		{Name: "u", Field: "u", Kind: KindUint},
		{Name: "f", Field: "f", Kind: KindFloat},
		{Name: "d", Field: "d", Kind: KindDouble},
		{Name: "dec", Field: "dec", Kind: KindDecimal, Scale: 3},
		{Name: "s", Field: "s", Kind: KindText},
		{Name: "b", Field: "b", Kind: KindBytes},
		{Name: "bits", Field: "bits", Kind: KindBit},
		{Name: "j", Field: "j", Kind: KindJSON},
		{Name: "y", Field: "y", Kind: KindYear},
		{Name: "ts", Field: "ts", Kind: KindText},
		{Name: "n", Field: "n", Kind: KindText},
	},
	Key: []int{0},
}

const (
	mixKey   = `{"type":"record","name":"mix","namespace":"default.s","fields":[{"name":"id","type":{"type":"int","connect.parameters":{"tidb_type":"INT"}}}]}`
	mixValue = `{"type":"record","name":"mix","namespace":"default.s","fields":[
	{"name":"id","type":{"type":"int","connect.parameters":{"tidb_type":"INT"}}},
	{"name":"u","type":{"type":"long","connect.parameters":{"tidb_type":"BIGINT UNSIGNED"}}},
	{"name":"f","type":{"type":"float","connect.parameters":{"tidb_type":"FLOAT"}}},
	{"name":"d","type":{"type":"double","connect.parameters":{"tidb_type":"DOUBLE"}}},
	{"name":"dec","type":{"type":"bytes","connect.parameters":{"tidb_type":"DECIMAL"},"logicalType":"decimal","precision":10,"scale":3}},
	{"name":"s","type":{"type":"string","connect.parameters":{"tidb_type":"TEXT"}}},
	{"name":"b","type":{"type":"bytes","connect.parameters":{"tidb_type":"BLOB"}}},
	{"name":"bits","type":{"type":"bytes","connect.parameters":{"length":"10","tidb_type":"BIT"}}},
	{"name":"j","type":{"type":"string","connect.parameters":{"tidb_type":"JSON"}}},
	{"name":"y","type":{"type":"int","connect.parameters":{"tidb_type":"YEAR"}}},
	{"name":"ts","type":{"type":"string","connect.parameters":{"tidb_type":"TIMESTAMP"}}},
	{"default":null,"name":"n","type":["null",{"type":"string","connect.parameters":{"tidb_type":"TEXT"}}]},
	{"default":"","name":"_tidb_op","type":"string"},
	{"default":0,"name":"_tidb_commit_ts","type":"long"},
	{"default":0,"name":"_tidb_commit_physical_time","type":"long"}]}`
)

// mixRow is row i as TiDB's text protocol returns it and as the Avro
// record carries it.
func mixRow(i int) (tidb []any, avro map[string]any) {
	f := float32(i) + 0.1
	d := float64(i) / 3
	dec, _ := new(big.Rat).SetString(fmt.Sprintf("%d.5", i))
	s := fmt.Sprintf("héllo %d 'q' \\ ", i)
	b := []byte{0, byte(i), 0xff}
	tidb = []any{
		[]byte(fmt.Sprint(i)), []byte("18446744073709551615"), []byte(fmt.Sprint(f)), []byte(fmt.Sprint(d)),
		[]byte(fmt.Sprintf("%d.500", i)), []byte(s), b, []byte{0x02, byte(i)},
		[]byte(fmt.Sprintf(`{"b": %d, "a": "x<y"}`, i)), []byte("0000"), []byte("2024-01-02 03:04:05.678"), nil,
	}
	avro = map[string]any{
		"id": i, "u": int64(-1), "f": f, "d": d, "dec": dec, "s": s, "b": b, "bits": []byte{0x02, byte(i)},
		"j": fmt.Sprintf(`{"a": "x<y", "b": %d}`, i), "y": 0, "ts": "2024-01-02 03:04:05.678", "n": nil,
		"_tidb_op": "c", "_tidb_commit_ts": int64(100 + i), "_tidb_commit_physical_time": int64(0),
	}
	return tidb, avro
}

type env struct {
	brokers  []string
	registry string
	reg      *sr.Client
	cl       *kgo.Client
}

func newEnv(t *testing.T) *env {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(2), kfake.AllowAutoTopicCreation())
	require.NoError(t, err)
	t.Cleanup(c.Close)
	r, err := registry.New(registry.Config{})
	require.NoError(t, err)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	reg, err := sr.NewClient(sr.URLs(srv.URL))
	require.NoError(t, err)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.AllowAutoTopicCreation())
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return &env{brokers: c.ListenAddrs(), registry: srv.URL, reg: reg, cl: cl}
}

func (e *env) frame(t *testing.T, subject, schema string, v map[string]any) []byte {
	ss, err := e.reg.CreateSchema(context.Background(), subject, sr.Schema{Schema: schema})
	require.NoError(t, err)
	s, err := hamba.ParseWithCache(schema, "", &hamba.SchemaCache{})
	require.NoError(t, err)
	if v != nil {
		for k, x := range v {
			if k == "n" && x != nil {
				v[k] = map[string]any{"string": x}
			}
		}
	}
	body, err := hamba.Marshal(s, v)
	require.NoError(t, err)
	return append(binary.BigEndian.AppendUint32([]byte{0}, uint32(ss.ID)), body...)
}

func (e *env) put(t *testing.T, id int, value map[string]any) {
	r := &kgo.Record{Topic: mixTable.Topic, Key: e.frame(t, mixTable.Topic+"-key", mixKey, map[string]any{"id": id})}
	if value != nil {
		r.Value = e.frame(t, mixTable.Topic+"-value", mixValue, value)
	}
	require.NoError(t, e.cl.ProduceSync(context.Background(), r).FirstErr())
}

// TestCompareSides: rows of every kind, consumed into MariaDB and
// PostgreSQL and replayed in memory, checksum-equal TiDB's text; a row
// changed by hand, a missing row and an extra row are named; a row
// committed after the snapshot is cut by _tidb_commit_ts.
func TestCompareSides(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newEnv(t)
	up := newRowSet()
	for i := 1; i <= 20; i++ {
		tidb, avro := mixRow(i)
		e.put(t, i, avro)
		require.NoError(t, up.add(mixTable, func(c int) any { return tidb[c] }))
	}
	// Key 21 deleted again; key 22 committed after the snapshot (ts 1000).
	_, a21 := mixRow(21)
	e.put(t, 21, a21)
	e.put(t, 21, nil)
	_, a22 := mixRow(22)
	a22["_tidb_commit_ts"] = int64(1000)
	e.put(t, 22, a22)
	const snapshot = 500

	check := func(t *testing.T, down *rowSet, wantDiffer int, wantKeys ...string) {
		var res TableResult
		compare(up, down, 10, &res)
		require.Equal(t, wantDiffer, res.Differ, "%v", res.Keys)
		require.Equal(t, wantKeys, res.Keys)
	}

	t.Run("replay", func(t *testing.T) {
		reg, err := consumer.NewRegistryClient(e.registry)
		require.NoError(t, err)
		sets := map[string]*rowSet{mixTable.Topic: newRowSet()}
		require.NoError(t, replay(ctx, []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, consumer.NewDecoder(reg), []*Table{mixTable}, snapshot, sets))
		require.Equal(t, 1, len(sets[mixTable.Topic].newer))
		check(t, sets[mixTable.Topic], 0)
		// Without the cut, key 22 is extra.
		sets = map[string]*rowSet{mixTable.Topic: newRowSet()}
		require.NoError(t, replay(ctx, []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, consumer.NewDecoder(reg), []*Table{mixTable}, 0, sets))
		check(t, sets[mixTable.Topic], 1, "id=22: not in TiDB")
	})

	for name, start := range map[string]func(testing.TB) *dbtest.Server{"mariadb": dbtest.StartMariaDB, "postgres": dbtest.StartPostgres} {
		t.Run(name, func(t *testing.T) {
			srv := start(t)
			cfg := consumer.DefaultConfig()
			cfg.Brokers, cfg.Registry, cfg.Target = e.brokers, e.registry, srv.URL
			c, err := consumer.New(cfg)
			require.NoError(t, err)
			defer c.Close()
			_, err = c.CatchUp(ctx)
			require.NoError(t, err)
			tg, err := consumer.ParseTarget(srv.URL)
			require.NoError(t, err)
			db, err := sql.Open(tg.Driver, tg.DSN)
			require.NoError(t, err)
			defer db.Close()
			read := func() *rowSet {
				rs := newRowSet()
				require.NoError(t, dbRows(ctx, db, tg, mixTable, snapshot, rs))
				return rs
			}
			check(t, read(), 0)

			q := func(s string) string {
				if tg.Dialect == consumer.Postgres {
					return s
				}
				return map[string]string{
					`UPDATE "tidb_s_mix" SET "s" = 'changed' WHERE "id" = 7`: "UPDATE `tidb_s_mix` SET `s` = 'changed' WHERE `id` = 7",
					`DELETE FROM "tidb_s_mix" WHERE "id" = 3`:                "DELETE FROM `tidb_s_mix` WHERE `id` = 3",
				}[s]
			}
			_, err = db.Exec(q(`UPDATE "tidb_s_mix" SET "s" = 'changed' WHERE "id" = 7`))
			require.NoError(t, err)
			_, err = db.Exec(q(`DELETE FROM "tidb_s_mix" WHERE "id" = 3`))
			require.NoError(t, err)
			check(t, read(), 2, "id=3: missing downstream", "id=7: values differ")
		})
	}
}

// The table of TestAddedColumnDefault after
// ALTER TABLE t ADD COLUMN c INT NOT NULL DEFAULT 5, and its value
// schemas before and after.
var evTable = &Table{
	Schema: "s", Name: "ev", Topic: "tidb_s_ev",
	Columns: []Column{
		{Name: "id", Field: "id", Kind: KindInt},
		{Name: "a", Field: "a", Kind: KindText},
		{Name: "c", Field: "c", Kind: KindInt},
	},
	Key: []int{0},
}

const (
	evKey = `{"type":"record","name":"ev","namespace":"default.s","fields":[{"name":"id","type":{"type":"int","connect.parameters":{"tidb_type":"INT"}}}]}`
	evV1  = `{"type":"record","name":"ev","namespace":"default.s","fields":[
	{"name":"id","type":{"type":"int","connect.parameters":{"tidb_type":"INT"}}},
	{"name":"a","type":{"type":"string","connect.parameters":{"tidb_type":"TEXT"}}}]}`
	evV2 = `{"type":"record","name":"ev","namespace":"default.s","fields":[
	{"name":"id","type":{"type":"int","connect.parameters":{"tidb_type":"INT"}}},
	{"name":"a","type":{"type":"string","connect.parameters":{"tidb_type":"TEXT"}}},
	{"default":5,"name":"c","type":{"type":"int","connect.parameters":{"tidb_type":"INT"}}}]}`
)

// TestAddedColumnDefault: rows whose last record was written before ADD
// COLUMN c … DEFAULT 5 (with the old schema, no field c) hold 5 in TiDB,
// in the replay (Avro schema resolution: the missing field takes the
// default) and in the consumer's databases (ADD COLUMN … DEFAULT 5), so
// nothing differs. A column of a dropped field is not compared.
func TestAddedColumnDefault(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newEnv(t)
	put := func(id int, schema string, v map[string]any) {
		r := &kgo.Record{Topic: evTable.Topic, Key: e.frame(t, evTable.Topic+"-key", evKey, map[string]any{"id": id})}
		r.Value = e.frame(t, evTable.Topic+"-value", schema, v)
		require.NoError(t, e.cl.ProduceSync(context.Background(), r).FirstErr())
	}
	up := newRowSet()
	row := func(id int, a string, c int) {
		require.NoError(t, up.add(evTable, func(i int) any {
			return []any{[]byte(fmt.Sprint(id)), []byte(a), []byte(fmt.Sprint(c))}[i]
		}))
	}
	for i := 0; i < 10; i++ {
		put(i, evV1, map[string]any{"id": i, "a": fmt.Sprint("a", i)})
	}
	for i := 10; i < 15; i++ {
		put(i, evV2, map[string]any{"id": i, "a": fmt.Sprint("a", i), "c": i})
	}
	put(3, evV2, map[string]any{"id": 3, "a": "three", "c": 5})
	for i := 0; i < 15; i++ {
		switch {
		case i == 3:
			row(i, "three", 5)
		case i < 10:
			row(i, fmt.Sprint("a", i), 5)
		default:
			row(i, fmt.Sprint("a", i), i)
		}
	}
	check := func(t *testing.T, down *rowSet) {
		var res TableResult
		compare(up, down, 20, &res)
		require.Equal(t, 0, res.Differ, "%v", res.Keys)
		require.Equal(t, 15, res.Downstream)
	}

	t.Run("replay", func(t *testing.T) {
		reg, err := consumer.NewRegistryClient(e.registry)
		require.NoError(t, err)
		sets := map[string]*rowSet{evTable.Topic: newRowSet()}
		require.NoError(t, replay(ctx, []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, consumer.NewDecoder(reg), []*Table{evTable}, 0, sets))
		check(t, sets[evTable.Topic])

		// Without column c upstream (dropped again), the records that
		// carry it still match: a field the table lacks is ignored.
		noC := &Table{Schema: "s", Name: "ev", Topic: evTable.Topic, Columns: evTable.Columns[:2], Key: []int{0}}
		up2 := newRowSet()
		for i := 0; i < 15; i++ {
			a := fmt.Sprint("a", i)
			if i == 3 {
				a = "three"
			}
			require.NoError(t, up2.add(noC, func(c int) any { return []any{[]byte(fmt.Sprint(i)), []byte(a)}[c] }))
		}
		sets = map[string]*rowSet{evTable.Topic: newRowSet()}
		require.NoError(t, replay(ctx, []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, consumer.NewDecoder(reg), []*Table{noC}, 0, sets))
		var res TableResult
		compare(up2, sets[evTable.Topic], 20, &res)
		require.Equal(t, 0, res.Differ, "%v", res.Keys)
	})

	for name, start := range map[string]func(testing.TB) *dbtest.Server{"mariadb": dbtest.StartMariaDB, "postgres": dbtest.StartPostgres} {
		t.Run(name, func(t *testing.T) {
			srv := start(t)
			cfg := consumer.DefaultConfig()
			cfg.Brokers, cfg.Registry, cfg.Target = e.brokers, e.registry, srv.URL
			cfg.MaxPollRecords = 1 // one record per transaction: old rows exist before ADD COLUMN
			c, err := consumer.New(cfg)
			require.NoError(t, err)
			defer c.Close()
			_, err = c.CatchUp(ctx)
			require.NoError(t, err)
			tg, err := consumer.ParseTarget(srv.URL)
			require.NoError(t, err)
			db, err := sql.Open(tg.Driver, tg.DSN)
			require.NoError(t, err)
			defer db.Close()
			rs := newRowSet()
			require.NoError(t, dbRows(ctx, db, tg, evTable, 0, rs))
			check(t, rs)
		})
	}
}
