package typematrix

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	_ "time/tzdata"

	hamba "github.com/hamba/avro/v2"
	"github.com/pingcap/tidb/pkg/meta/model"
	"github.com/pingcap/tidb/pkg/parser/mysql"
	"github.com/pingcap/tidb/pkg/tablecodec"
	"github.com/stretchr/testify/require"
	"github.com/tikv/client-go/v2/config"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/tidestream/tidestream/encoder/avro"
	"github.com/tidestream/tidestream/encoder/dispatch"
	"github.com/tidestream/tidestream/encoder/internal/avrotest"
	"github.com/tidestream/tidestream/encoder/internal/pgtest"
	"github.com/tidestream/tidestream/encoder/mount"
	"github.com/tidestream/tidestream/encoder/registry"
	"github.com/tidestream/tidestream/encoder/row"
	"github.com/tidestream/tidestream/encoder/schema"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// The session zone of every statement, and so of every TIMESTAMP literal
// and every TIMESTAMP SELECT returns. A half-hour offset with daylight
// saving catches a conversion that only handles whole hours or one fixed
// offset; mount gets the same zone, as a TiCDC server started with --tz
// would. time/tzdata keeps the test independent of the host's zone files.
const sessionZone = "Australia/Adelaide"

// Tables of the matrix. matrix has one column per type of spec
// kafka-avro-output §3.1 (and the charsets TiDB stores as UTF-8) over an
// int handle; keys2 a clustered composite key with a BIGINT UNSIGNED part
// (key decoding, unsigned modes in the key); uk no primary key, its Kafka
// key a NOT NULL unique index over a _tidb_rowid handle; the rest say what
// they are for.
var ddl = []string{
	"CREATE DATABASE tm",
	`CREATE TABLE tm.matrix (
		id INT PRIMARY KEY,
		c_bool BOOL, c_ti TINYINT, c_tiu TINYINT UNSIGNED, c_si SMALLINT, c_siu SMALLINT UNSIGNED,
		c_mi MEDIUMINT, c_miu MEDIUMINT UNSIGNED, c_i INT, c_iu INT UNSIGNED, c_bi BIGINT, c_biu BIGINT UNSIGNED,
		c_d65 DECIMAL(65,30), c_d38 DECIMAL(38,19), c_d10 DECIMAL(10,0), c_dun DECIMAL(6,2) UNSIGNED,
		c_f FLOAT, c_db DOUBLE,
		c_b1 BIT(1), c_b10 BIT(10), c_b64 BIT(64),
		c_date DATE, c_dt DATETIME(6), c_dt0 DATETIME, c_ts TIMESTAMP(3) NULL, c_tm TIME(3), c_tm0 TIME, c_yr YEAR,
		c_ch CHAR(10), c_vc VARCHAR(100), c_tx TEXT, c_ttx TINYTEXT, c_mtx MEDIUMTEXT, c_ltx LONGTEXT,
		c_chb CHAR(6) CHARACTER SET binary, c_vcb VARCHAR(20) CHARACTER SET binary, c_txb TEXT CHARACTER SET binary,
		c_bn BINARY(8), c_vb VARBINARY(20), c_bl BLOB, c_tbl TINYBLOB, c_mbl MEDIUMBLOB, c_lbl LONGBLOB,
		c_en ENUM('a','b,c','it''s'), c_set SET('x','y','z'), c_js JSON,
		c_nn VARCHAR(10) NOT NULL DEFAULT 'dflt', c_nni INT NOT NULL DEFAULT 7,
		c_vec VECTOR(3), c_vecu VECTOR,
		c_lat VARCHAR(10) CHARACTER SET latin1, c_gbk VARCHAR(10) CHARACTER SET gbk, c_ascii CHAR(5) CHARACTER SET ascii
	)`,
	`CREATE TABLE tm.keys2 (k VARCHAR(20) NOT NULL, n BIGINT UNSIGNED NOT NULL, v DECIMAL(20,5),
		PRIMARY KEY (k, n) CLUSTERED)`,
	`CREATE TABLE tm.uk (id INT NULL, u VARCHAR(10) NOT NULL, x DOUBLE, UNIQUE KEY (u))`,
	// Key columns that a clustered key stores in a form mount must undo:
	// a TIMESTAMP (UTC in the key, the session zone in SELECT), a case-
	// insensitive string (a sort key in the key) and a decimal.
	`CREATE TABLE tm.ckey (ts TIMESTAMP(3) NOT NULL, s VARCHAR(10) COLLATE utf8mb4_general_ci NOT NULL,
		d DECIMAL(12,4) NOT NULL, dt DATETIME(2) NOT NULL, v VARCHAR(10),
		PRIMARY KEY (ts, s, d, dt) CLUSTERED)`,
	// Defaults as TiDB stores them, for the schemas' field defaults: every
	// column NOT NULL or nullable with a non-NULL default.
	`CREATE TABLE tm.dflt (id INT PRIMARY KEY,
		ti TINYINT NOT NULL DEFAULT -7, iu INT UNSIGNED NOT NULL DEFAULT 4294967295,
		bu BIGINT UNSIGNED NOT NULL DEFAULT 18446744073709551615, bi BIGINT DEFAULT -9223372036854775808,
		f FLOAT NOT NULL DEFAULT 1.1, d DOUBLE DEFAULT -2.5e-300, dec1 DECIMAL(10,3) NOT NULL DEFAULT 1.5,
		dec2 DECIMAL(40,20) DEFAULT -0.00000000000000000001,
		b1 BIT(1) NOT NULL DEFAULT b'1', b10 BIT(10) DEFAULT b'101',
		bn BINARY(4) NOT NULL DEFAULT 'ab', vb VARBINARY(8) DEFAULT X'00FF', bl BLOB,
		en ENUM('a','b,c') NOT NULL DEFAULT 'b,c', st SET('x','y','z') DEFAULT 'z,x',
		dt DATE NOT NULL DEFAULT '2020-02-02', dtm DATETIME(3) DEFAULT '2020-02-02 02:02:02.5',
		tsn TIMESTAMP(2) NOT NULL DEFAULT CURRENT_TIMESTAMP(2), tm TIME(1) NOT NULL DEFAULT '-01:02:03.4',
		yr YEAR NOT NULL DEFAULT 2000, vc VARCHAR(10) DEFAULT 'null', ch CHAR(4) NOT NULL DEFAULT 'ab',
		js JSON DEFAULT (JSON_OBJECT('k', 1)), vcu VARCHAR(36) DEFAULT (UUID()))`,
	// More key-only types: TiDB leaves every clustered-key column the key
	// can restore out of the value, so these come from the key alone.
	`CREATE TABLE tm.ckey2 (tm TIME(2) NOT NULL, e ENUM('x','y,z') NOT NULL, st SET('p','q') NOT NULL,
		bt BIT(12) NOT NULL, y YEAR NOT NULL, f FLOAT NOT NULL, db DOUBLE NOT NULL, vb VARBINARY(10) NOT NULL,
		sp VARCHAR(10) NOT NULL, ch CHAR(5) COLLATE utf8mb4_general_ci NOT NULL, pre VARCHAR(30) NOT NULL, v INT,
		PRIMARY KEY (tm, e, st, bt, y, f, db, vb, sp, ch, pre(3)) CLUSTERED)`,
	// A BIGINT UNSIGNED int handle (the key value is only in the row key),
	// stored and virtual generated columns, and partitions.
	`CREATE TABLE tm.ubig (id BIGINT UNSIGNED PRIMARY KEY, a INT, g BIGINT AS (a * 2) STORED, gv BIGINT AS (a + 1) VIRTUAL)
		PARTITION BY RANGE (id) (PARTITION p0 VALUES LESS THAN (100), PARTITION p1 VALUES LESS THAN MAXVALUE)`,
}

const matrixCols = `(id, c_bool, c_ti, c_tiu, c_si, c_siu, c_mi, c_miu, c_i, c_iu, c_bi, c_biu,
	c_d65, c_d38, c_d10, c_dun, c_f, c_db, c_b1, c_b10, c_b64,
	c_date, c_dt, c_dt0, c_ts, c_tm, c_tm0, c_yr,
	c_ch, c_vc, c_tx, c_ttx, c_mtx, c_ltx, c_chb, c_vcb, c_txb, c_bn, c_vb, c_bl, c_tbl, c_mbl, c_lbl,
	c_en, c_set, c_js, c_nn, c_nni, c_vec, c_vecu, c_lat, c_gbk, c_ascii)`

// matrixDML fills tm.matrix.
var matrixDML = []string{
	// Minimums, then maximums, in one transaction.
	"INSERT INTO tm.matrix " + matrixCols + ` VALUES
	(1, 0, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0,
	 -99999999999999999999999999999999999.999999999999999999999999999999, -9999999999999999999.9999999999999999999, -9999999999, 0,
	 -3.402823466e38, -1.7976931348623157e308, b'0', b'0000000000', 0,
	 '1000-01-01', '1000-01-01 00:00:00.000000', '1000-01-01 00:00:00', '1970-01-01 09:30:01.000', '-838:59:59.000', '-838:59:59', 1901,
	 '', '', '', '', '', '', '', '', '', '', '', '', '', '', '',
	 'a', '', '[]', '', -2147483648, '[-3.4028235e38,0,1.17549435e-38]', '[]', '', '', ''),
	(2, 1, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295, 9223372036854775807, 18446744073709551615,
	 99999999999999999999999999999999999.999999999999999999999999999999, 9999999999999999999.9999999999999999999, 9999999999, 9999.99,
	 3.402823466e38, 1.7976931348623157e308, b'1', b'1111111111', 0xFFFFFFFFFFFFFFFF,
	 '9999-12-31', '9999-12-31 23:59:59.999999', '9999-12-31 23:59:59', '2038-01-19 13:44:07.999', '838:59:59.000', '838:59:59', 2155,
	 'ab  ', '😀 ünïcödé 中文 ''quoted'' \\ <&>', REPEAT('t', 300), 'tiny', 'medium', REPEAT('λ', 2000),
	 'xyz', X'00FF80', X'DEADBEEF00', 'ab', X'0001', X'00FF', 'tiny', X'80', REPEAT(X'FE', 1000),
	 'it''s', 'x,y,z', '{"b": [1, 2.5, "s", null, true, false], "a": {"n": -1, "big": 18446744073709551615, "f": 1e300}, "u": "ü😀"}',
	 'nd', 2147483647, '[3.4028235e38,-0.5,1e-45]', '[1,2.5,3,0.1,-7]', 'déjà vu', '中文字符', 'ascii')`,
	// NULL in every nullable column; the NOT NULL ones take their defaults.
	"INSERT INTO tm.matrix (id) VALUES (3)",
	// Non-strict mode for what only it lets in: an invalid ENUM value
	// stored as the empty value (index 0), zero dates and a zero TIMESTAMP.
	"SET SESSION sql_mode = ''",
	"INSERT INTO tm.matrix " + matrixCols + ` VALUES
	(4, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 9223372036854775808,
	 0.000000000000000000000000000001, -0.0000000000000000001, 0, 0.01,
	 1.17549435e-38, 4.9e-324, b'1', b'0000000101', 0x0102030405060708,
	 '0000-00-00', '0000-00-00 00:00:00', '2024-02-29 12:34:56', '0000-00-00 00:00:00', '-00:00:01.500', '-12:00:00', 0,
	 'x', 'tab	newline
end', 'text', '', '', '', 'b', '', X'00', 'a', '', X'', '', '', '',
	 'nope', '', 'null', '', 0, '[0,0,0]', '[0.1]', 'ÿ', '€', '~')`,
	"SET SESSION sql_mode = DEFAULT",
	"UPDATE tm.matrix SET c_vc = 'updated', c_ts = '2024-04-07 02:30:00.123', c_tm = '-00:00:00.001', " +
		`c_js = '{"k": [true, {"z": 0.1}]}', c_en = 'b,c', c_b64 = NULL, c_f = -0.5 WHERE id = 4`,
	"DELETE FROM tm.matrix WHERE id = 3",
	// JSON scalars only functions make: temporal values and opaque bytes.
	"UPDATE tm.matrix SET c_js = JSON_ARRAY(CAST('2024-01-02' AS DATE), CAST('2024-01-02 03:04:05.5' AS DATETIME(1)), " +
		"CAST('-12:34:56.5' AS TIME(1)), CAST(X'00FF' AS JSON), 1.5, -0.0, 18446744073709551615, -9223372036854775808, '\\u00e9\\\"') WHERE id = 1",
}

var dml = []string{

	"INSERT INTO tm.keys2 VALUES ('a', 0, 1.5), ('b', 18446744073709551615, -2.25), ('ü', 9223372036854775808, NULL)",
	"UPDATE tm.keys2 SET n = 1 WHERE k = 'a'", // a new row key: TiKV writes delete + put
	"DELETE FROM tm.keys2 WHERE k = 'b'",

	"INSERT INTO tm.uk VALUES (1, 'one', 1.5), (2, 'two', NULL)",
	"UPDATE tm.uk SET u = 'uno' WHERE id = 1", // the Kafka key changes: split into delete + insert
	"UPDATE tm.uk SET x = 3 WHERE id = 2",

	`INSERT INTO tm.ckey VALUES ('2001-02-03 04:05:06.789', 'MiXeD', -12345678.1234, '2020-01-01 00:00:00.5', 'x'),
		('1970-01-01 09:30:01.000', 'ß', 0, '1000-01-01 00:00:00', NULL)`,
	"UPDATE tm.ckey SET v = 'y' WHERE s = 'mixed'",
	"UPDATE tm.ckey SET ts = '2038-01-19 13:44:07.999' WHERE s = 'ß'", // a new row key
	"DELETE FROM tm.ckey WHERE s = 'MIXED'",

	`INSERT INTO tm.ckey2 VALUES ('-838:59:59.00', 'y,z', 'p,q', b'101010101010', 2155, -1.5e-7, 1e300, X'00FF', 'sp  ', 'Ab', 'prefix-long-value', 1),
		('00:00:00.01', 'x', '', 0, 1901, 3.402823466e38, -0, '', '', 'Z', 'pr', NULL)`,
	"UPDATE tm.ckey2 SET v = 2 WHERE y = 1901",
	"DELETE FROM tm.ckey2 WHERE y = 2155",

	"INSERT INTO tm.dflt (id) VALUES (1)",

	"INSERT INTO tm.ubig (id, a) VALUES (0, 1), (99, NULL), (9223372036854775808, -5), (18446744073709551615, 2147483647)",
	"UPDATE tm.ubig SET a = 3 WHERE id = 18446744073709551615",
	"UPDATE tm.ubig SET id = 100 WHERE id = 99", // moves to the other partition
	"DELETE FROM tm.ubig WHERE id = 0",
}

// wantOps is how many changes of each kind each table must produce.
var wantOps = map[string]map[row.Op]int{
	"matrix": {row.Insert: 4, row.Update: 2, row.Delete: 1},
	"keys2":  {row.Insert: 4, row.Delete: 2},
	"uk":     {row.Insert: 3, row.Update: 1, row.Delete: 1},
	"ckey":   {row.Insert: 3, row.Update: 1, row.Delete: 2},
	"ubig":   {row.Insert: 5, row.Update: 1, row.Delete: 2},
	"ckey2":  {row.Insert: 2, row.Update: 1, row.Delete: 1},
	"dflt":   {row.Insert: 1},
}

// modes are the four combinations of TiCDC's decimal and BIGINT UNSIGNED
// handling; the last also carries the TiDB extension fields, whose op and
// commit ts the consumer checks too.
var modes = []avro.Config{
	{DecimalHandling: avro.DecimalPrecise, BigintUnsignedHandling: avro.BigintUnsignedLong, Namespace: "default"},
	{DecimalHandling: avro.DecimalPrecise, BigintUnsignedHandling: avro.BigintUnsignedString, Namespace: "default"},
	{DecimalHandling: avro.DecimalString, BigintUnsignedHandling: avro.BigintUnsignedLong, Namespace: "default"},
	{DecimalHandling: avro.DecimalString, BigintUnsignedHandling: avro.BigintUnsignedString, Namespace: "default", EnableTiDBExtension: true},
}

// TestTypeMatrix is the encoder's acceptance test for values: every column
// type TiDB has, at its extremes and NULL, written through SQL, read back as
// raw KV, mounted, routed, registered and encoded in the four combinations
// of the decimal and BIGINT UNSIGNED modes, then decoded as an independent
// consumer would — schema fetched from the registry by the id in the
// Confluent header — and compared with what TiDB's SELECT returns for the
// row at the change's commit ts (a delete: its key, one ts earlier).
func TestTypeMatrix(t *testing.T) {
	pg := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	db := pg.DB(t, pgtest.SessionZone(sessionZone))
	// One connection throughout: sql_mode and tidb_snapshot are session
	// state.
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	store, err := schema.OpenStore(ctx, []string{pg.PDAddr}, config.Security{})
	require.NoError(t, err)
	defer func() { require.NoError(t, store.Close()) }()
	// A changefeed started before the tables existed: its history is a
	// snapshot without them plus the DDL jobs that created them.
	before, err := pg.CurrentTS(ctx)
	require.NoError(t, err)
	snapBefore, err := schema.LoadSnapshot(ctx, store, before, 0)
	require.NoError(t, err)

	pgtest.Exec(t, conn, ddl...)
	// Stale reads (tidb_snapshot) check the ts against the GC safe point,
	// which TiDB's GC worker records only after it first runs, minutes
	// after start; until then every stale read fails. Nothing is collected
	// in this short-lived cluster, so a safe point in the past is true.
	pgtest.Exec(t, conn, "INSERT IGNORE INTO mysql.tidb (VARIABLE_NAME, VARIABLE_VALUE, COMMENT) "+
		"VALUES ('tikv_gc_safe_point', '20000101-00:00:00.000 +0000', 'typematrix test: allow stale reads')")

	// A changefeed started after the DDL: a snapshot that has the tables.
	from, err := pg.CurrentTS(ctx)
	require.NoError(t, err)
	snap, err := schema.LoadSnapshot(ctx, store, from, 0)
	require.NoError(t, err)

	require.Equal(t, [][]string{{sessionZone}}, pgtest.Strings(t, conn, "SELECT @@time_zone"))
	pgtest.Exec(t, conn, matrixDML...)
	pgtest.Exec(t, conn, dml...)
	to, err := pg.CurrentTS(ctx)
	require.NoError(t, err)

	histSnap, err := schema.New(snap, schema.Options{})
	require.NoError(t, err)
	require.NoError(t, histSnap.AdvanceResolved(to))
	hist, err := schema.New(snapBefore, schema.Options{})
	require.NoError(t, err)
	dec, err := schema.NewJobDecoder(snapBefore.JobTable)
	require.NoError(t, err)
	jobPrefix := tablecodec.GenTableRecordPrefix(schema.JobTableID)
	var jobs int
	for _, ev := range pg.ChangedRows(ctx, t, jobPrefix, jobPrefix.PrefixNext(), before, to) {
		if ev.Op != tidestreamv1.OpType_OP_TYPE_PUT {
			continue
		}
		j, err := dec.Decode(ev.Key, ev.Value, ev.StartTs, ev.CommitTs)
		require.NoError(t, err)
		if j != nil {
			jobs++
			require.NoError(t, hist.AddJob(schema.JobEvent{Job: j, CommitTs: ev.CommitTs}))
		}
	}
	require.Equal(t, len(ddl), jobs, "finished DDL jobs")
	require.NoError(t, hist.AdvanceResolved(to))

	var events []*tidestreamv1.RawKVEvent
	for name := range wantOps {
		for _, id := range schema.PhysicalIDs(tableInfo(t, snap, "tm", name)) {
			prefix := tablecodec.GenTableRecordPrefix(id)
			events = append(events, pg.ChangedRows(ctx, t, prefix, prefix.PrefixNext(), from, to)...)
		}
	}
	// One commit-ts order over all tables, as the sorter merges spans.
	slices.SortStableFunc(events, func(a, b *tidestreamv1.RawKVEvent) int {
		return cmp.Or(cmp.Compare(a.CommitTs, b.CommitTs), cmp.Compare(a.StartTs, b.StartTs))
	})

	zone, err := time.LoadLocation(sessionZone)
	require.NoError(t, err)
	rows := mountAll(t, events, hist, zone)
	// Both histories must give the same tables: same schemas, same bytes.
	sameEncoding(t, rows, mountAll(t, events, histSnap, zone))
	gotOps := map[string]map[row.Op]int{}
	for _, r := range rows {
		if gotOps[r.Table.Name] == nil {
			gotOps[r.Table.Name] = map[row.Op]int{}
		}
		gotOps[r.Table.Name][r.Op]++
	}
	require.Equal(t, wantOps, gotOps)

	router, err := dispatch.NewRouter(dispatch.Config{
		Rules:        []*tidestreamv1.DispatchRule{{Matcher: []string{"tm.*"}, Topic: "tidb_{schema}_{table}"}},
		DefaultTopic: "tidestream-default",
	})
	require.NoError(t, err)

	for _, cfg := range modes {
		name := fmt.Sprintf("decimal=%s/unsigned=%s", cfg.DecimalHandling, cfg.BigintUnsignedHandling)
		t.Run(name, func(t *testing.T) {
			recs := encode(ctx, t, cfg, router, rows)
			checkRecords(ctx, t, cfg, conn, recs)
		})
	}
}

func mountAll(t *testing.T, events []*tidestreamv1.RawKVEvent, tables mount.Tables, zone *time.Location) []row.Row {
	t.Helper()
	m, err := mount.New(mount.Config{TimeZone: zone})
	require.NoError(t, err)
	var rows []row.Row
	for _, ev := range events {
		rows, err = m.Mount(ev, tables, rows)
		require.NoError(t, err)
	}
	mount.OrderTxns(rows)
	return rows
}

// sameEncoding checks that two mounts of the same events encode alike.
func sameEncoding(t *testing.T, a, b []row.Row) {
	t.Helper()
	require.Len(t, b, len(a))
	for i := range a {
		ca, err := avro.NewCodec(avro.DefaultConfig(), a[i].Table)
		require.NoError(t, err)
		cb, err := avro.NewCodec(avro.DefaultConfig(), b[i].Table)
		require.NoError(t, err)
		require.Equal(t, ca.KeySchema(), cb.KeySchema())
		require.Equal(t, ca.ValueSchema(), cb.ValueSchema())
		for _, f := range []func(*avro.TableCodec, *row.Row) ([]byte, error){
			func(c *avro.TableCodec, r *row.Row) ([]byte, error) { return c.AppendKey(nil, 1, r) },
			func(c *avro.TableCodec, r *row.Row) ([]byte, error) { return c.AppendValue(nil, 2, r) },
		} {
			x, err := f(ca, &a[i])
			require.NoError(t, err)
			y, err := f(cb, &b[i])
			require.NoError(t, err)
			require.Equal(t, x, y, "row %d of %s", i, a[i].Table.Name)
		}
	}
}

// record is one Kafka record as the producer would send it.
type record struct {
	topic      string
	key, value []byte
	row        *row.Row // what it was encoded from, for column metadata only
	fake       *srfake.Registry
}

// encode runs the pipeline's encode half for one mode against a fresh fake
// registry, so that the four modes' schemas do not meet under one subject.
func encode(ctx context.Context, t *testing.T, cfg avro.Config, router *dispatch.Router, rows []row.Row) []record {
	fake := srfake.New()
	t.Cleanup(fake.Close)
	reg, err := registry.New(registry.Config{URL: fake.URL()})
	require.NoError(t, err)
	t.Cleanup(reg.Close)

	cl, err := sr.NewClient(sr.URLs(fake.URL()))
	require.NoError(t, err)
	// The registry must hand back the text we registered, byte for byte:
	// TiCDC-compatible ids depend on it (spec kafka-avro-output §2.5).
	checked := map[uint32]bool{}
	sameText := func(id uint32, text string) {
		if checked[id] {
			return
		}
		got, err := cl.SchemaByID(ctx, int(id))
		require.NoError(t, err)
		require.Equal(t, text, got.Schema, "schema %d", id)
		checked[id] = true
	}
	codecs := map[[2]int64]*avro.TableCodec{}
	var out []record
	for i := range rows {
		r := &rows[i]
		ck := [2]int64{r.Table.ID, r.Table.Version}
		c := codecs[ck]
		if c == nil {
			c, err = avro.NewCodec(cfg, r.Table)
			require.NoError(t, err)
			codecs[ck] = c
		}
		topic, _, err := router.Route(r)
		require.NoError(t, err)
		require.Equal(t, "tidb_tm_"+r.Table.Name, topic)
		keyID, err := reg.IDFor(ctx, registry.TableKey{TableID: r.Table.ID, Version: r.Table.Version, Kind: registry.KeySchema},
			registry.KeySubject(topic), c.KeySchema())
		require.NoError(t, err)
		sameText(keyID, c.KeySchema())
		key, err := c.AppendKey(nil, keyID, r)
		require.NoError(t, err)
		rec := record{topic: topic, key: key, row: r, fake: fake}
		if r.Op != row.Delete {
			valueID, err := reg.IDFor(ctx, registry.TableKey{TableID: r.Table.ID, Version: r.Table.Version, Kind: registry.ValueSchema},
				registry.ValueSubject(topic), c.ValueSchema())
			require.NoError(t, err)
			sameText(valueID, c.ValueSchema())
			rec.value, err = c.AppendValue(nil, valueID, r)
			require.NoError(t, err)
		} else {
			v, err := c.AppendValue(nil, 1, r)
			require.NoError(t, err)
			require.Empty(t, v, "a delete has no value")
		}
		out = append(out, rec)
	}
	return out
}

func checkRecords(ctx context.Context, t *testing.T, cfg avro.Config, conn pgtest.Conn, recs []record) {
	require.NotEmpty(t, recs)
	cl, err := sr.NewClient(sr.URLs(recs[0].fake.URL()))
	require.NoError(t, err)
	cons := avrotest.NewConsumer(cl)
	var compared int
	for _, rec := range recs {
		tbl := rec.row.Table
		key, keySchema := cons.Decode(ctx, t, rec.key)
		require.Equal(t, avro.SanitizeName(tbl.Name), keySchema.Name())
		require.Len(t, keySchema.Fields(), len(tbl.Key))

		// Find the row in TiDB by the key the record carries.
		var where []string
		var args []any
		for _, ci := range tbl.Key {
			col := tbl.Columns[ci]
			where = append(where, "`"+col.Name.O+"` = ?")
			args = append(args, sqlArg(t, cfg, col, key[col.Name.O]))
		}
		ts := rec.row.CommitTs
		if rec.value == nil {
			ts-- // a delete's row is what was there just before
		}
		got := selectAt(t, conn, ts, tbl, strings.Join(where, " AND "), args)
		what := fmt.Sprintf("%s %s at %d key %v", tbl.Name, rec.row.Op, rec.row.CommitTs, key)
		if len(got) != 1 {
			// Narrow down which key field TiDB does not find, to tell a
			// wrong key from a missing row.
			for i := range where {
				n := selectAt(t, conn, ts, tbl, strings.Join(where[:i+1], " AND "), args[:i+1])
				t.Logf("%s: the key up to %s matches %d rows", what, where[i], len(n))
			}
		}
		require.Len(t, got, 1, what)
		sel := got[0]
		for _, ci := range tbl.Key {
			col := tbl.Columns[ci]
			compareField(t, what+" key."+col.Name.O, cfg, col, sel[ci], key[col.Name.O])
		}
		if rec.value == nil {
			require.Equal(t, row.Delete, rec.row.Op)
			require.Empty(t, selectAt(t, conn, rec.row.CommitTs, tbl, strings.Join(where, " AND "), args), what+": deleted")
			continue
		}
		value, valueSchema := cons.Decode(ctx, t, rec.value)
		wantFields := len(tbl.Columns)
		if cfg.EnableTiDBExtension {
			wantFields += 3
			wantOp := map[row.Op]string{row.Insert: "c", row.Update: "u"}[rec.row.Op]
			require.Equal(t, wantOp, value["_tidb_op"], what)
			require.Equal(t, int64(rec.row.CommitTs), value["_tidb_commit_ts"], what)
		}
		require.Len(t, valueSchema.Fields(), wantFields)
		for i, col := range tbl.Columns {
			compareField(t, what+" "+col.Name.O, cfg, col, sel[i], value[col.Name.O])
			compared++
		}
		if tbl.Name == "dflt" {
			checkDefaults(t, what, tbl, valueSchema, value)
		}
	}
	t.Logf("%d records, %d values compared with SELECT", len(recs), compared)
}

// checkDefaults checks that each field default of the value schema is the
// value TiDB gave the column in a row inserted with every default: what a
// consumer reading with that schema substitutes for a missing field.
func checkDefaults(t *testing.T, what string, tbl *row.Table, rs *hamba.RecordSchema, value map[string]any) {
	t.Helper()
	fields := map[string]*hamba.Field{}
	for _, f := range rs.Fields() {
		fields[f.Name()] = f
	}
	for _, col := range tbl.Columns {
		f := fields[col.Name.O]
		if col.Name.O == "id" || col.DefaultIsExpr || (col.GetDefaultValue() == nil && col.DefaultValueBit == nil) {
			continue // no default, or one computed per row (CURRENT_TIMESTAMP, UUID())
		}
		if !f.HasDefault() {
			continue // precise DECIMAL: no default (spec §2.3)
		}
		got := f.Default()
		stored, _ := col.GetDefaultValue().(string)
		switch {
		case strings.HasPrefix(strings.ToUpper(stored), "CURRENT_TIMESTAMP"):
			// Computed per row; the schema names the function (spec §2.4).
			require.Equal(t, stored, got, "%s: default of %s", what, col.Name.O)
		case col.GetType() == mysql.TypeNewDecimal:
			if _, precise := value[col.Name.O].(*big.Rat); precise {
				// Precise mode: a nullable column's default is null
				// whatever TiDB's is (spec §2.3, goavro's limit kept for
				// identical schema text).
				require.Nil(t, got, "%s: default of %s", what, col.Name.O)
				continue
			}
			// String mode: TiDB's stored text, which need not have the
			// column's scale ("1.5" for a row's "1.500"), kept for
			// identical schema text (spec §2.4); the same number.
			require.Equal(t, stored, got, "%s: default of %s", what, col.Name.O)
			want, _ := new(big.Rat).SetString(value[col.Name.O].(string))
			have, _ := new(big.Rat).SetString(stored)
			require.Zero(t, want.Cmp(have), "%s: default of %s", what, col.Name.O)
		default:
			require.Equal(t, value[col.Name.O], got, "%s: default of %s", what, col.Name.O)
		}
	}
}

// selectAt reads the table's CDC-visible columns of the rows matching where
// as of ts, through TiDB's own text rendering (the session is in
// sessionZone).
func selectAt(t *testing.T, conn pgtest.Conn, ts uint64, tbl *row.Table, where string, args []any) [][]*string {
	t.Helper()
	var cols []string
	for _, c := range tbl.Columns {
		if c.GetType() == mysql.TypeFloat {
			// The text protocol rounds FLOAT to 6 significant digits
			// (3.4028235e38 reads 3.40282e38); as a DOUBLE the float32's
			// exact value comes back.
			cols = append(cols, "`"+c.Name.O+"` + 0E0")
			continue
		}
		cols = append(cols, "`"+c.Name.O+"`")
	}
	pgtest.Exec(t, conn, fmt.Sprintf("SET @@tidb_snapshot = '%d'", ts))
	defer pgtest.Exec(t, conn, "SET @@tidb_snapshot = ''")
	return pgtest.Query(t, conn, fmt.Sprintf("SELECT %s FROM `%s`.`%s` WHERE %s",
		strings.Join(cols, ", "), tbl.Schema, tbl.Name, where), args...)
}

// sqlArg turns a decoded key field back into a SQL argument.
func sqlArg(t *testing.T, cfg avro.Config, col *model.ColumnInfo, v any) any {
	t.Helper()
	if col.GetType() == mysql.TypeLonglong && mysql.HasUnsignedFlag(col.GetFlag()) {
		if cfg.BigintUnsignedHandling == avro.BigintUnsignedString {
			u, err := strconv.ParseUint(v.(string), 10, 64)
			require.NoError(t, err)
			return u
		}
		return uint64(v.(int64))
	}
	if col.GetType() == mysql.TypeBit {
		// As an integer: TiDB compares a BIT column with a binary string
		// inconsistently once other predicates join it.
		var u uint64
		for _, c := range v.([]byte) {
			u = u<<8 | uint64(c)
		}
		return u
	}
	if f, ok := v.(float32); ok {
		// TiDB compares a FLOAT column as the DOUBLE it widens to; the
		// driver would print a float32 argument in float32's shortest form.
		return float64(f)
	}
	if r, ok := v.(*big.Rat); ok {
		return r.FloatString(col.GetDecimal())
	}
	return v
}

// compareField checks one decoded Avro value against SELECT's text for it,
// by the rendering rules of spec kafka-avro-output §3.
func compareField(t *testing.T, what string, cfg avro.Config, col *model.ColumnInfo, sel *string, got any) {
	t.Helper()
	if sel == nil {
		require.Nil(t, got, what)
		return
	}
	require.NotNil(t, got, "%s: SELECT has %q", what, *sel)
	s := *sel
	unsigned := mysql.HasUnsignedFlag(col.GetFlag())
	binaryCharset := col.GetCharset() == "binary"
	switch tp := col.GetType(); tp {
	case mysql.TypeTiny, mysql.TypeShort, mysql.TypeInt24, mysql.TypeLong, mysql.TypeYear:
		want, err := strconv.ParseInt(s, 10, 64)
		require.NoError(t, err, what)
		if tp == mysql.TypeLong && unsigned {
			require.Equal(t, want, got, "%s (INT UNSIGNED is long)", what)
		} else {
			require.Equal(t, int(want), got, "%s (int)", what)
		}
	case mysql.TypeLonglong:
		if !unsigned {
			want, err := strconv.ParseInt(s, 10, 64)
			require.NoError(t, err, what)
			require.Equal(t, want, got, what)
			return
		}
		u, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, what)
		if cfg.BigintUnsignedHandling == avro.BigintUnsignedString {
			require.Equal(t, s, got, what)
		} else {
			require.Equal(t, int64(u), got, "%s (two's complement)", what)
		}
	case mysql.TypeFloat:
		// s is the float32 widened to DOUBLE (see selectAt).
		want, err := strconv.ParseFloat(s, 64)
		require.NoError(t, err, what)
		f, ok := got.(float32)
		require.True(t, ok, "%s: FLOAT decodes to %T", what, got)
		require.Equal(t, want, float64(f), what)
	case mysql.TypeDouble:
		want, err := strconv.ParseFloat(s, 64)
		require.NoError(t, err, what)
		require.Equal(t, want, got, what)
	case mysql.TypeNewDecimal:
		if cfg.DecimalHandling == avro.DecimalString {
			require.Equal(t, s, got, what)
			return
		}
		want, ok := new(big.Rat).SetString(s)
		require.True(t, ok, "%s: %q", what, s)
		r, ok := got.(*big.Rat)
		require.True(t, ok, "%s: decimal decodes to %T", what, got)
		require.Zero(t, want.Cmp(r), "%s: want %s got %s", what, want.FloatString(col.GetDecimal()), r.FloatString(col.GetDecimal()))
	case mysql.TypeBit:
		// TiDB sends BIT as its (n+7)/8 big-endian bytes, the width we
		// write too (docs/differences.md #13).
		require.Equal(t, []byte(s), got, what)
	case mysql.TypeDate, mysql.TypeDatetime, mysql.TypeTimestamp, mysql.TypeDuration,
		mysql.TypeEnum, mysql.TypeSet, mysql.TypeTiDBVectorFloat32:
		require.Equal(t, s, got, what)
	case mysql.TypeJSON:
		str, ok := got.(string)
		require.True(t, ok, "%s: JSON decodes to %T", what, got)
		require.Equal(t, jsonValue(t, s), jsonValue(t, str), what)
		// Both are TiDB's serializer's text, so they agree byte for byte.
		require.Equal(t, s, str, what)
	default:
		if binaryCharset {
			require.Equal(t, []byte(s), got, what)
		} else {
			require.Equal(t, s, got, what)
		}
	}
}

func jsonValue(t *testing.T, s string) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.UseNumber()
	var v any
	require.NoError(t, dec.Decode(&v), s)
	return normaliseJSON(v)
}

// normaliseJSON makes numbers comparable by value: TiDB may spell 1e300
// as 1e+300.
func normaliseJSON(v any) any {
	switch x := v.(type) {
	case json.Number:
		r, ok := new(big.Rat).SetString(x.String())
		if !ok {
			return x.String()
		}
		return r.RatString()
	case []any:
		for i := range x {
			x[i] = normaliseJSON(x[i])
		}
	case map[string]any:
		for k := range x {
			x[k] = normaliseJSON(x[k])
		}
	}
	return v
}

func tableInfo(t *testing.T, snap *schema.Snapshot, db, name string) *model.TableInfo {
	t.Helper()
	for _, d := range snap.DBs {
		if d.Name.O != db {
			continue
		}
		for _, ti := range snap.Tables[d.ID] {
			if ti.Name.O == name {
				return ti
			}
		}
	}
	t.Fatalf("%s.%s not in the snapshot", db, name)
	return nil
}
