package avro

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pingcap/tidb/pkg/parser/mysql"
	"github.com/pingcap/tidb/pkg/types"
	"github.com/stretchr/testify/require"

	"github.com/tidestream/tidestream/encoder/row"
)

// fuzzBytes hands out fuzz input; past its end it yields zeros.
type fuzzBytes []byte

func (b *fuzzBytes) byte() byte {
	if len(*b) == 0 {
		return 0
	}
	c := (*b)[0]
	*b = (*b)[1:]
	return c
}

func (b *fuzzBytes) u64() uint64 {
	var tmp [8]byte
	for i := range tmp {
		tmp[i] = b.byte()
	}
	return binary.LittleEndian.Uint64(tmp[:])
}

func (b *fuzzBytes) bytes(max int) []byte {
	n := int(b.byte()) % (max + 1)
	out := make([]byte, n)
	for i := range out {
		out[i] = b.byte()
	}
	return out
}

func (b *fuzzBytes) digits(n int) string {
	var sb strings.Builder
	for range n {
		sb.WriteByte('0' + b.byte()%10)
	}
	return sb.String()
}

// fuzzDatum derives a datum for column c: mostly values of the column's
// type within range, sometimes out of range or of a foreign kind, so both
// the encoding and the error paths run.
func fuzzDatum(in *fuzzBytes, c *column, faults bool) types.Datum {
	sel := in.byte()
	if sel%8 == 0 {
		return types.NewDatum(nil)
	}
	if faults && sel%31 == 1 {
		return types.NewStringDatum("wrong kind")
	}
	wild := faults && sel%13 == 2 // ignore the column's range
	switch c.kind {
	case kindInt:
		v := in.u64()
		if c.unsigned {
			if !wild {
				v %= c.uhi + 1
			}
			return types.NewUintDatum(v)
		}
		n := int64(v)
		if !wild && c.hi < math.MaxInt64 {
			n = c.lo + int64(v%uint64(c.hi-c.lo+1))
		}
		return types.NewIntDatum(n)
	case kindUint64Long, kindUint64String:
		if wild {
			return types.NewIntDatum(int64(in.u64()))
		}
		return types.NewUintDatum(in.u64())
	case kindFloat:
		return types.NewFloat32Datum(math.Float32frombits(uint32(in.u64())))
	case kindDouble:
		return types.NewFloat64Datum(math.Float64frombits(in.u64()))
	case kindDecimalBytes, kindDecimalString:
		intDigits := int(in.byte()) % (c.precision - c.scale + 1)
		fracDigits := c.scale
		if wild {
			fracDigits = int(in.byte()) % 31
		}
		s := "0" + in.digits(intDigits)
		if fracDigits > 0 {
			s += "." + in.digits(fracDigits)
		}
		if in.byte()%2 == 0 {
			s = "-" + s
		}
		d := new(types.MyDecimal)
		if err := d.FromString([]byte(s)); err != nil {
			panic(fmt.Sprintf("%s: %v", s, err))
		}
		return types.NewDecimalDatum(d)
	case kindText:
		return types.NewStringDatum(string(in.bytes(40)))
	case kindBinary:
		return types.NewBytesDatum(in.bytes(40))
	case kindBit:
		v := in.u64()
		if !wild && c.bits < 64 {
			v &= 1<<c.bits - 1
		}
		if sel%2 == 0 {
			return types.NewUintDatum(v)
		}
		return types.NewMysqlBitDatum(types.NewBinaryLiteralFromUint(v, (c.bits+7)/8))
	case kindEnum:
		i := uint64(in.byte()) % uint64(len(c.elems)+2)
		if i == 0 || i > uint64(len(c.elems)) {
			return types.NewMysqlEnumDatum(types.Enum{Value: i})
		}
		return types.NewMysqlEnumDatum(types.Enum{Name: c.elems[i-1], Value: i})
	case kindSet:
		return types.NewUintDatum(in.u64() & (1<<(len(c.elems)+1) - 1))
	case kindJSON:
		raw := string(in.bytes(30))
		j, err := types.ParseBinaryJSONFromString(raw)
		if err != nil {
			j, _ = types.ParseBinaryJSONFromString(strconv.Quote(strings.ToValidUTF8(raw, "?")))
		}
		return types.NewJSONDatum(j)
	case kindDate, kindDatetime, kindTimestamp:
		y := int(in.byte())<<8 | int(in.byte())
		if !wild {
			y %= 10000
		}
		ct := types.FromDate(y, int(in.byte())%13, int(in.byte())%32, int(in.byte())%24, int(in.byte())%60, int(in.byte())%60, int(in.u64()%1_000_000))
		tp := mysql.TypeDatetime
		if c.kind == kindTimestamp {
			tp = mysql.TypeTimestamp
		}
		return types.NewTimeDatum(types.NewTime(ct, tp, c.fsp))
	case kindTime:
		d := time.Duration(int64(in.u64()) % int64(839*time.Hour))
		d = d.Truncate(time.Microsecond)
		return types.NewDurationDatum(types.Duration{Duration: d, Fsp: c.fsp})
	case kindVector:
		s := "[" + strconv.Itoa(int(int8(in.byte()))) + "," + strconv.Itoa(int(in.byte())) + ".5]"
		v, err := types.ParseVectorFloat32(s)
		if err != nil {
			panic(err)
		}
		return types.NewVectorFloat32Datum(v)
	}
	panic("unknown kind")
}

// FuzzAvroRoundTrip encodes random datums of every type, in both handling
// modes, and checks that each encoding either fails with ErrValue or is
// decoded by hamba against the generated schema and re-encoded identically.
func FuzzAvroRoundTrip(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"))
	f.Add([]byte(strings.Repeat("\xff\x01\x7f\x80", 64)))
	f.Add([]byte(strings.Repeat("\x03abcdefgh", 80)))
	tbl := tableSpec{db: "types", name: "every", cols: everyType(false)}.build(f)
	var codecs []*TableCodec
	for _, mode := range [][2]string{{DecimalPrecise, BigintUnsignedLong}, {DecimalString, BigintUnsignedString}} {
		cfg := DefaultConfig()
		cfg.DecimalHandling, cfg.BigintUnsignedHandling, cfg.EnableTiDBExtension = mode[0], mode[1], true
		c, err := NewCodec(cfg, tbl)
		require.NoError(f, err)
		codecs = append(codecs, c)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, c := range codecs {
			in := fuzzBytes(data)
			// One row in four carries faults; with 39 columns, injecting
			// them everywhere would leave few rows that encode.
			faults := in.byte()%4 == 0
			cols := make([]types.Datum, len(tbl.Columns))
			for i := range c.value {
				cols[i] = fuzzDatum(&in, &c.value[i], faults)
			}
			cols[0] = types.NewIntDatum(int64(in.u64())) // the key: never NULL
			r := &row.Row{Table: tbl, Op: row.Update, CommitTs: in.u64(), Cols: cols}
			val, err := c.AppendValue(nil, 77, r)
			if err != nil {
				require.True(t, errors.Is(err, ErrValue), "%v", err)
				require.Nil(t, val)
				continue
			}
			roundTrip(t, val, 77, c.ValueAvroSchema())
			key, err := c.AppendKey(nil, 76, r)
			require.NoError(t, err)
			m := roundTrip(t, key, 76, c.KeyAvroSchema())
			require.Equal(t, cols[0].GetInt64(), m["id"])
		}
	})
}
