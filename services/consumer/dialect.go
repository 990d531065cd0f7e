package consumer

import (
	"encoding/hex"
	"fmt"
	"math"
	"math/big"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Dialect is the SQL flavour of a target database.
type Dialect uint8

// The supported targets.
const (
	MySQL    Dialect = iota + 1 // MariaDB or MySQL, through go-sql-driver/mysql
	Postgres                    // PostgreSQL, through pgx
)

func (d Dialect) String() string {
	switch d {
	case MySQL:
		return "mysql"
	case Postgres:
		return "postgres"
	}
	return "unknown"
}

// Target is a parsed --target URL.
type Target struct {
	Dialect Dialect
	// Driver and DSN open it with database/sql.
	Driver, DSN string
	// Database is the database (MySQL) or the database name (PostgreSQL)
	// tables are created in.
	Database string
}

// ParseTarget parses mysql://user:pass@host:port/db[?params] (MariaDB or
// MySQL; params are go-sql-driver DSN parameters) or
// postgres://user:pass@host:port/db[?params] (postgresql:// too; params as
// libpq's). The database must exist.
func ParseTarget(raw string) (Target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Target{}, fmt.Errorf("target %q: %w", redact(raw), err)
	}
	db := strings.TrimPrefix(u.Path, "/")
	if db == "" || strings.Contains(db, "/") {
		return Target{}, fmt.Errorf("target %s: the path must name one database (mysql://user@host:3306/db)", redact(raw))
	}
	if u.Host == "" {
		return Target{}, fmt.Errorf("target %s: missing host:port", redact(raw))
	}
	switch u.Scheme {
	case "mysql", "mariadb":
		cfg := mysql.NewConfig()
		cfg.User = u.User.Username()
		cfg.Passwd, _ = u.User.Password()
		cfg.Net, cfg.Addr, cfg.DBName = "tcp", u.Host, db
		if u.Port() == "" {
			cfg.Addr = u.Host + ":3306"
		}
		// Client-side interpolation: one round trip per batch statement and
		// no 65,535-placeholder limit of server-side prepares.
		cfg.InterpolateParams = true
		cfg.Timeout = 10 * time.Second
		cfg.Params = map[string]string{}
		for k, v := range u.Query() {
			if len(v) > 0 {
				cfg.Params[k] = v[len(v)-1]
			}
		}
		if err := cfg.Apply(mysql.Charset("utf8mb4", "utf8mb4_bin")); err != nil {
			return Target{}, err
		}
		return Target{Dialect: MySQL, Driver: "mysql", DSN: cfg.FormatDSN(), Database: db}, nil
	case "postgres", "postgresql":
		return Target{Dialect: Postgres, Driver: "pgx", DSN: raw, Database: db}, nil
	}
	return Target{}, fmt.Errorf("target %s: scheme must be mysql:// (MariaDB/MySQL) or postgres://", redact(raw))
}

// redact hides a password in a URL for messages.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return u.Redacted()
}

// maxIdent is the longest identifier each dialect keeps (PostgreSQL
// truncates silently at 63 bytes, which would merge two tables).
func (d Dialect) maxIdent() int {
	if d == Postgres {
		return 63
	}
	return 64
}

// Quote quotes an identifier.
func (d Dialect) Quote(name string) string {
	if d == MySQL {
		return "`" + strings.ReplaceAll(name, "`", "``") + "`"
	}
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

// placeholder is the n-th (1-based) bind parameter.
func (d Dialect) placeholder(n int) string {
	if d == MySQL {
		return "?"
	}
	return "$" + strconv.Itoa(n)
}

// Key column bounds for MySQL, where a PRIMARY KEY cannot be a TEXT or
// BLOB column: 256 characters (1,024 bytes in utf8mb4) like the Confluent
// JDBC sink's VARCHAR(256), so three such columns still fit InnoDB's
// 3,072-byte key limit. Longer key values fail with MySQL's error.
const (
	mysqlKeyVarchar   = "VARCHAR(256)"
	mysqlKeyVarbinary = "VARBINARY(1024)"
)

// ColumnType is the SQL type a field's column is created with. key says
// the column is part of the primary key.
//
//	Avro                  MariaDB/MySQL                    PostgreSQL
//	int                   INT                              INTEGER
//	long                  BIGINT                           BIGINT
//	float                 FLOAT                            REAL
//	double                DOUBLE                           DOUBLE PRECISION
//	boolean               BOOLEAN                          BOOLEAN
//	string                LONGTEXT (key: VARCHAR(256))     TEXT
//	bytes                 LONGBLOB (key: VARBINARY(1024))  BYTEA
//	bytes decimal(p,s)    DECIMAL(p,s)                     NUMERIC(p,s)
//
// MySQL text columns use utf8mb4 with utf8mb4_bin, TiDB's default
// collation, so keys that differ only in case stay distinct rows.
func (d Dialect) ColumnType(f Field, key bool) (string, error) {
	switch f.Kind {
	case KindInt:
		if d == MySQL {
			return "INT", nil
		}
		return "INTEGER", nil
	case KindLong:
		return "BIGINT", nil
	case KindFloat:
		if d == MySQL {
			return "FLOAT", nil
		}
		return "REAL", nil
	case KindDouble:
		if d == MySQL {
			return "DOUBLE", nil
		}
		return "DOUBLE PRECISION", nil
	case KindBoolean:
		return "BOOLEAN", nil
	case KindString:
		if d == MySQL {
			if key {
				return mysqlKeyVarchar + " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin", nil
			}
			return "LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin", nil
		}
		return "TEXT", nil
	case KindBytes:
		if d == MySQL {
			if key {
				return mysqlKeyVarbinary, nil
			}
			return "LONGBLOB", nil
		}
		return "BYTEA", nil
	case KindDecimal:
		p, s := f.Precision, f.Scale
		if d == MySQL && (p > 65 || s > 30) {
			return "", fmt.Errorf("field %s: decimal(%d,%d) exceeds MySQL's DECIMAL(65,30)", f.Name, p, s)
		}
		if p <= 0 || s < 0 || s > p {
			return "", fmt.Errorf("field %s: invalid decimal(%d,%d)", f.Name, p, s)
		}
		if d == MySQL {
			return fmt.Sprintf("DECIMAL(%d,%d)", p, s), nil
		}
		return fmt.Sprintf("NUMERIC(%d,%d)", p, s), nil
	}
	return "", fmt.Errorf("field %s: no SQL type for Avro %s", f.Name, f.Kind)
}

// defaultSQL is the DEFAULT clause (with a leading space) for f's Avro
// default, and whether there is one. A null default, a float that is
// not finite and a PostgreSQL text with NUL have none. MySQL text and
// bytes defaults are expressions of a hex literal, which MariaDB 10.2+
// and MySQL 8.0.13+ allow on TEXT and BLOB columns and which need no
// escaping under any sql_mode.
func (d Dialect) defaultSQL(f Field) (string, bool) {
	if !f.HasDefault || f.Default == nil {
		return "", false
	}
	var lit string
	switch v := f.Default.(type) {
	case int:
		lit = strconv.FormatInt(int64(v), 10)
	case int64:
		lit = strconv.FormatInt(v, 10)
	case float32:
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return "", false
		}
		lit = strconv.FormatFloat(float64(v), 'g', -1, 32)
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return "", false
		}
		lit = strconv.FormatFloat(v, 'g', -1, 64)
	case bool:
		lit = strings.ToUpper(strconv.FormatBool(v))
	case *big.Rat:
		lit = DecimalText(v, f.Scale)
	case string:
		if d == MySQL {
			lit = "(CONVERT(X'" + hex.EncodeToString([]byte(v)) + "' USING utf8mb4))"
		} else {
			if strings.ContainsRune(v, 0) {
				return "", false
			}
			lit = "'" + strings.ReplaceAll(v, "'", "''") + "'"
		}
	case []byte:
		if d == MySQL {
			lit = "(X'" + hex.EncodeToString(v) + "')"
		} else {
			lit = "decode('" + hex.EncodeToString(v) + "', 'hex')"
		}
	default:
		return "", false
	}
	return " DEFAULT " + lit, true
}
