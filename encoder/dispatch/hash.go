package dispatch

import (
	"fmt"
	"hash/crc32"
	"math"
	"strconv"

	"github.com/pingcap/tidb/pkg/meta/model"
	"github.com/pingcap/tidb/pkg/parser/mysql"
	"github.com/pingcap/tidb/pkg/types"
)

// xorHash is TiCDC's partition hash: each write is the CRC-32 (IEEE) of its
// parts concatenated, XORed into the state. Because XOR commutes, the order
// of the columns does not matter — which is why TiCDC could iterate a Go map
// for a named index and still be stable.
type xorHash uint32

func (h *xorHash) write(parts ...string) {
	// crc32.Update rather than a hash.Hash: NewIEEE allocates, once per
	// row on the encoder's hot path.
	var c uint32
	for _, p := range parts {
		c = crc32.Update(c, crc32.IEEETable, []byte(p))
	}
	*h ^= xorHash(c)
}

// ValueString is the text TiCDC hashes for a column value (its
// ColumnValueString over the value its mounter made of the datum):
// integers in base 10 (unsigned ones as unsigned), FLOAT / DOUBLE in the
// shortest 'f' form (NaN and ±Inf as 0, as TiCDC's mounter replaces them),
// strings and bytes raw, DECIMAL / DATE / DATETIME / TIMESTAMP / TIME / JSON
// / VECTOR as TiDB prints them, ENUM / SET / BIT as their numeric value, and
// NULL as "null".
//
// Temporal values are printed as the datum holds them: TiCDC's mounter
// decodes TIMESTAMP in its --tz zone, so a TIMESTAMP key hashes like TiCDC's
// only if mount used the same zone.
func ValueString(d *types.Datum, col *model.ColumnInfo) (string, error) {
	if d.IsNull() {
		return "null", nil
	}
	switch col.GetType() {
	case mysql.TypeDate, mysql.TypeDatetime, mysql.TypeNewDate, mysql.TypeTimestamp:
		if d.Kind() == types.KindMysqlTime {
			return d.GetMysqlTime().String(), nil
		}
	case mysql.TypeDuration:
		if d.Kind() == types.KindMysqlDuration {
			return d.GetMysqlDuration().String(), nil
		}
	case mysql.TypeJSON:
		if d.Kind() == types.KindMysqlJSON {
			return d.GetMysqlJSON().String(), nil
		}
	case mysql.TypeNewDecimal:
		if d.Kind() == types.KindMysqlDecimal {
			return d.GetMysqlDecimal().String(), nil
		}
	case mysql.TypeEnum:
		switch d.Kind() {
		case types.KindMysqlEnum:
			return strconv.FormatUint(d.GetMysqlEnum().Value, 10), nil
		case types.KindUint64:
			return strconv.FormatUint(d.GetUint64(), 10), nil
		}
	case mysql.TypeSet:
		switch d.Kind() {
		case types.KindMysqlSet:
			return strconv.FormatUint(d.GetMysqlSet().Value, 10), nil
		case types.KindUint64:
			return strconv.FormatUint(d.GetUint64(), 10), nil
		}
	case mysql.TypeBit:
		switch d.Kind() {
		case types.KindMysqlBit, types.KindBinaryLiteral, types.KindBytes, types.KindString:
			// TiCDC hashes BIT as an integer (it avoids TiDB issue
			// 10988, where BIT text is lossy).
			v, err := d.GetBinaryLiteral().ToInt(types.DefaultStmtNoWarningContext)
			if err != nil {
				return "", fmt.Errorf("%w: BIT column %s: %v", ErrRow, col.Name.O, err)
			}
			return strconv.FormatUint(v, 10), nil
		case types.KindUint64:
			return strconv.FormatUint(d.GetUint64(), 10), nil
		}
	case mysql.TypeFloat:
		if k := d.Kind(); k == types.KindFloat32 || k == types.KindFloat64 {
			return strconv.FormatFloat(float64(finite32(d.GetFloat32())), 'f', -1, 32), nil
		}
	case mysql.TypeDouble:
		if k := d.Kind(); k == types.KindFloat32 || k == types.KindFloat64 {
			return strconv.FormatFloat(finite64(d.GetFloat64()), 'f', -1, 64), nil
		}
	case mysql.TypeTiDBVectorFloat32:
		if d.Kind() == types.KindVectorFloat32 {
			return d.GetVectorFloat32().String(), nil
		}
	}
	// Integer types, YEAR and the string / blob family; also any type
	// above whose datum came in a plain kind.
	switch d.Kind() {
	case types.KindInt64:
		return strconv.FormatInt(d.GetInt64(), 10), nil
	case types.KindUint64:
		return strconv.FormatUint(d.GetUint64(), 10), nil
	case types.KindString, types.KindBytes:
		return string(d.GetBytes()), nil
	}
	return "", fmt.Errorf("%w: column %s of type %s holds a datum of kind %d", ErrRow,
		col.Name.O, types.TypeToStr(col.GetType(), col.GetCharset()), d.Kind())
}

func finite32(v float32) float32 {
	if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
		return 0
	}
	return v
}

func finite64(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}
