package diff

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

// Kind is how a TiDB column's values are made canonical. Every side of a
// comparison — TiDB's own text, the Avro record, the value a database
// returns for the column the consumer created — is turned into the same
// text for the same TiDB value, so the row checksums compare values, not
// the ways of spelling them.
type Kind uint8

// The canonical kinds, by TiDB column type.
const (
	// KindInt: signed integers. Canonical: base-10 int64.
	KindInt Kind = iota + 1
	// KindUint: unsigned integers. Canonical: base-10 uint64; a negative
	// int64 is the long-mode wrap of BIGINT UNSIGNED (spec §3.1) and is
	// read back as the uint64 it came from.
	KindUint
	// KindYear: YEAR. Canonical: base-10 integer, the zero year "0"
	// (TiDB prints "0000").
	KindYear
	// KindFloat: FLOAT. Canonical: the shortest text of the float32.
	KindFloat
	// KindDouble: DOUBLE. Canonical: the shortest text of the float64.
	KindDouble
	// KindDecimal: DECIMAL(p,s). Canonical: exactly s fraction digits,
	// no leading zeros, no "-0".
	KindDecimal
	// KindText: CHAR, VARCHAR, TEXT, ENUM, SET, DATE, DATETIME, TIMESTAMP,
	// TIME, VECTOR: the text as TiDB (and the Avro encoder) renders it.
	KindText
	// KindJSON: JSON. Canonical: compact, object keys sorted, numbers as
	// written.
	KindJSON
	// KindBytes: BINARY, VARBINARY, BLOB. Canonical: lowercase hex.
	KindBytes
	// KindBit: BIT(n). Canonical: the base-10 value of the big-endian bits.
	KindBit
)

func (k Kind) String() string {
	switch k {
	case KindInt:
		return "int"
	case KindUint:
		return "uint"
	case KindYear:
		return "year"
	case KindFloat:
		return "float"
	case KindDouble:
		return "double"
	case KindDecimal:
		return "decimal"
	case KindText:
		return "text"
	case KindJSON:
		return "json"
	case KindBytes:
		return "bytes"
	case KindBit:
		return "bit"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// KindOf maps an information_schema DATA_TYPE (and whether COLUMN_TYPE
// says unsigned) to a Kind.
func KindOf(dataType string, unsigned bool) (Kind, error) {
	switch strings.ToLower(dataType) {
	case "tinyint", "smallint", "mediumint", "int", "integer", "bigint":
		if unsigned {
			return KindUint, nil
		}
		return KindInt, nil
	case "year":
		return KindYear, nil
	case "float":
		return KindFloat, nil
	case "double", "real":
		return KindDouble, nil
	case "decimal", "numeric":
		return KindDecimal, nil
	case "char", "varchar", "tinytext", "text", "mediumtext", "longtext",
		"enum", "set", "date", "datetime", "timestamp", "time", "vector":
		return KindText, nil
	case "json":
		return KindJSON, nil
	case "binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob":
		return KindBytes, nil
	case "bit":
		return KindBit, nil
	}
	return 0, fmt.Errorf("diff: no canonical form for column type %s", dataType)
}

// Column is one compared column.
type Column struct {
	Name  string // TiDB column name
	Field string // Avro field / downstream column name
	Kind  Kind
	Scale int // DECIMAL
}

// Canonical renders v, a value of c as any side delivers it, as canonical
// text. null is true for SQL NULL / Avro null.
func Canonical(c Column, v any) (s string, null bool, err error) {
	if v == nil {
		return "", true, nil
	}
	bad := func() (string, bool, error) {
		return "", false, fmt.Errorf("diff: column %s (%s): cannot read %T %s", c.Name, c.Kind, v, short(v))
	}
	text, isText := asText(v)
	switch c.Kind {
	case KindInt, KindYear:
		switch x := v.(type) {
		case int64:
			return strconv.FormatInt(x, 10), false, nil
		case int:
			return strconv.FormatInt(int64(x), 10), false, nil
		case int32:
			return strconv.FormatInt(int64(x), 10), false, nil
		case uint64:
			return strconv.FormatUint(x, 10), false, nil
		case bool:
			if x {
				return "1", false, nil
			}
			return "0", false, nil
		}
		if isText {
			n, err := strconv.ParseInt(strings.TrimSpace(text), 10, 64)
			if err != nil {
				return bad()
			}
			return strconv.FormatInt(n, 10), false, nil
		}
	case KindUint:
		switch x := v.(type) {
		case int64:
			return strconv.FormatUint(uint64(x), 10), false, nil
		case int:
			return strconv.FormatUint(uint64(int64(x)), 10), false, nil
		case int32:
			return strconv.FormatUint(uint64(int64(x)), 10), false, nil
		case uint64:
			return strconv.FormatUint(x, 10), false, nil
		}
		if isText {
			t := strings.TrimSpace(text)
			if u, err := strconv.ParseUint(t, 10, 64); err == nil {
				return strconv.FormatUint(u, 10), false, nil
			}
			if n, err := strconv.ParseInt(t, 10, 64); err == nil {
				return strconv.FormatUint(uint64(n), 10), false, nil
			}
			return bad()
		}
	case KindFloat:
		switch x := v.(type) {
		case float32:
			return strconv.FormatFloat(float64(x), 'g', -1, 32), false, nil
		case float64:
			return strconv.FormatFloat(float64(float32(x)), 'g', -1, 32), false, nil
		}
		if isText {
			f, err := strconv.ParseFloat(strings.TrimSpace(text), 32)
			if err != nil {
				return bad()
			}
			return strconv.FormatFloat(f, 'g', -1, 32), false, nil
		}
	case KindDouble:
		switch x := v.(type) {
		case float64:
			return strconv.FormatFloat(x, 'g', -1, 64), false, nil
		case float32:
			return strconv.FormatFloat(float64(x), 'g', -1, 64), false, nil
		}
		if isText {
			f, err := strconv.ParseFloat(strings.TrimSpace(text), 64)
			if err != nil {
				return bad()
			}
			return strconv.FormatFloat(f, 'g', -1, 64), false, nil
		}
	case KindDecimal:
		var r *big.Rat
		switch x := v.(type) {
		case *big.Rat:
			r = x
		case int64:
			r = new(big.Rat).SetInt64(x)
		case float64:
			r = new(big.Rat)
			if r.SetFloat64(x) == nil {
				return bad()
			}
		default:
			if !isText {
				return bad()
			}
			var ok bool
			if r, ok = new(big.Rat).SetString(strings.TrimSpace(text)); !ok {
				return bad()
			}
		}
		s := r.FloatString(c.Scale)
		if r.Sign() == 0 && strings.HasPrefix(s, "-") {
			s = s[1:]
		}
		return s, false, nil
	case KindText:
		if isText {
			return text, false, nil
		}
	case KindJSON:
		if isText {
			return canonicalJSON(text), false, nil
		}
	case KindBytes:
		switch x := v.(type) {
		case []byte:
			return hex.EncodeToString(x), false, nil
		case string:
			return hex.EncodeToString([]byte(x)), false, nil
		}
	case KindBit:
		switch x := v.(type) {
		case []byte:
			var u uint64
			for _, b := range x {
				if u>>56 != 0 {
					return bad()
				}
				u = u<<8 | uint64(b)
			}
			return strconv.FormatUint(u, 10), false, nil
		case string:
			return Canonical(c, []byte(x))
		case int64:
			return strconv.FormatUint(uint64(x), 10), false, nil
		case uint64:
			return strconv.FormatUint(x, 10), false, nil
		}
	}
	return bad()
}

func asText(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case []byte:
		return string(x), true
	}
	return "", false
}

func short(v any) string {
	s := fmt.Sprintf("%v", v)
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return strconv.Quote(s)
}

// canonicalJSON re-serialises JSON text compactly with sorted object keys
// and numbers spelled as written; text that does not parse is kept as it
// is (and will differ from anything that does).
func canonicalJSON(text string) string {
	dec := json.NewDecoder(strings.NewReader(text))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		return text
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return text
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

// Sum is a row checksum.
type Sum [16]byte

// rowHasher accumulates canonical values into a Sum.
type rowHasher struct {
	buf []byte
}

func (h *rowHasher) reset() { h.buf = h.buf[:0] }

func (h *rowHasher) add(s string, null bool) {
	if null {
		h.buf = append(h.buf, 0)
		return
	}
	h.buf = append(h.buf, 1)
	h.buf = binary.AppendUvarint(h.buf, uint64(len(s)))
	h.buf = append(h.buf, s...)
}

func (h *rowHasher) sum() Sum {
	full := sha256.Sum256(h.buf)
	var s Sum
	copy(s[:], full[:16])
	return s
}

// keyString joins canonical key values into a map key (length-prefixed,
// so no two keys collide) and a display form "(a=1, b=x)".
func keyString(t *Table, vals []string) (id, display string) {
	var idb []byte
	var disp strings.Builder
	if len(vals) > 1 {
		disp.WriteByte('(')
	}
	for i, v := range vals {
		idb = binary.AppendUvarint(idb, uint64(len(v)))
		idb = append(idb, v...)
		if i > 0 {
			disp.WriteString(", ")
		}
		disp.WriteString(t.Columns[t.Key[i]].Name)
		disp.WriteByte('=')
		disp.WriteString(v)
	}
	if len(vals) > 1 {
		disp.WriteByte(')')
	}
	return string(idb), disp.String()
}
