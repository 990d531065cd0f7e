package consumer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"sync"

	hamba "github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
)

// ErrBadRecord marks a Kafka record the consumer cannot apply: not
// Confluent-framed, a schema id the registry does not know, a body that
// does not decode with its schema, a null key. The error text names the
// topic, partition and offset. Such a record is never skipped: the
// consumer stops, because skipping would silently lose a row.
var ErrBadRecord = errors.New("consumer: bad record")

// Kind is the Avro type of a field after its null union is removed, the
// part of it the SQL mapping depends on.
type Kind uint8

// The kinds TiCDC's Avro schemas use (specs/kafka-avro-output.md §3.1),
// plus boolean for completeness.
const (
	KindInt     Kind = iota + 1 // Avro int
	KindLong                    // Avro long
	KindFloat                   // Avro float
	KindDouble                  // Avro double
	KindBoolean                 // Avro boolean
	KindString                  // Avro string (and enum)
	KindBytes                   // Avro bytes (and fixed)
	KindDecimal                 // Avro bytes with logicalType decimal
)

func (k Kind) String() string {
	switch k {
	case KindInt:
		return "int"
	case KindLong:
		return "long"
	case KindFloat:
		return "float"
	case KindDouble:
		return "double"
	case KindBoolean:
		return "boolean"
	case KindString:
		return "string"
	case KindBytes:
		return "bytes"
	case KindDecimal:
		return "decimal"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Field is one field of a record schema.
type Field struct {
	Name     string
	Kind     Kind
	Nullable bool // a union with null
	// Precision and Scale of a decimal.
	Precision, Scale int
	// TiDBType is connect.parameters.tidb_type ("INT UNSIGNED", "BIT", …),
	// empty when the schema has none.
	TiDBType string
	// HasDefault says the field has an Avro default; Default is it, as a
	// decoded value of the field would be (nil for null, *big.Rat for a
	// decimal). Schema resolution gives it to a record written with a
	// schema that lacks the field, and auto.evolve puts it in the DDL.
	HasDefault bool
	Default    any
}

// Schema is a registered record schema, parsed once per id.
type Schema struct {
	ID     uint32
	Avro   hamba.Schema
	Fields []Field
	index  map[string]int
}

// Field returns the field called name.
func (s *Schema) Field(name string) (Field, bool) {
	i, ok := s.index[name]
	if !ok {
		return Field{}, false
	}
	return s.Fields[i], true
}

// Change is one decoded Kafka record: an upsert of Value under Key, or a
// delete of Key when Value is nil (a tombstone).
type Change struct {
	Topic     string
	Partition int32
	Offset    int64

	KeySchema *Schema
	Key       map[string]any
	// KeyID identifies the key: the Avro body of the key without its
	// Confluent header, so two records of one key compare equal even when
	// the key schema was registered twice.
	KeyID string

	ValueSchema *Schema        // nil for a delete
	Value       map[string]any // nil for a delete
}

// Delete reports whether the change is a tombstone.
func (c *Change) Delete() bool { return c.Value == nil }

// Where names the record for error messages.
func (c *Change) Where() string {
	return fmt.Sprintf("topic %s partition %d offset %d", c.Topic, c.Partition, c.Offset)
}

// Decoder turns Confluent-framed Avro records into Changes, fetching each
// schema id from the registry once. It is safe for concurrent use.
type Decoder struct {
	reg *sr.Client

	mu      sync.Mutex
	schemas map[uint32]*Schema
}

// NewDecoder returns a Decoder reading schemas from reg.
func NewDecoder(reg *sr.Client) *Decoder {
	return &Decoder{reg: reg, schemas: make(map[uint32]*Schema)}
}

// Decode decodes one record.
func (d *Decoder) Decode(ctx context.Context, r *kgo.Record) (Change, error) {
	c := Change{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset}
	bad := func(format string, args ...any) (Change, error) {
		return c, fmt.Errorf("%w: %s: %s", ErrBadRecord, c.Where(), fmt.Sprintf(format, args...))
	}
	if len(r.Key) == 0 {
		// TiCDC's Avro keys are never empty; a null key is a watermark or
		// DDL event of the test-only avro-enable-watermark mode, or a
		// record of some other producer.
		return bad("null key: not a TiCDC Avro row record (avro-enable-watermark events are not supported)")
	}
	ks, key, err := d.decode(ctx, r.Key)
	if err != nil {
		return bad("key: %v", err)
	}
	c.KeySchema, c.Key, c.KeyID = ks, key, string(r.Key[5:])
	if r.Value == nil || len(r.Value) == 0 {
		return c, nil
	}
	vs, val, err := d.decode(ctx, r.Value)
	if err != nil {
		return bad("value: %v", err)
	}
	c.ValueSchema, c.Value = vs, val
	return c, nil
}

func (d *Decoder) decode(ctx context.Context, msg []byte) (*Schema, map[string]any, error) {
	if len(msg) < 5 || msg[0] != 0 {
		return nil, nil, fmt.Errorf("not Confluent-framed (want magic byte 0 and a 4-byte schema id): % x", msg[:min(len(msg), 5)])
	}
	id := binary.BigEndian.Uint32(msg[1:5])
	s, err := d.Schema(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	var v map[string]any
	if err := hamba.Unmarshal(s.Avro, msg[5:], &v); err != nil {
		return nil, nil, fmt.Errorf("schema %d: %w", id, err)
	}
	// Unions decode as {"<branch type>": value}; unwrap them.
	for _, f := range s.Fields {
		if !f.Nullable {
			continue
		}
		if m, ok := v[f.Name].(map[string]any); ok && len(m) == 1 {
			for _, inner := range m {
				v[f.Name] = inner
			}
		}
	}
	return s, v, nil
}

// Schema returns the record schema registered under id.
func (d *Decoder) Schema(ctx context.Context, id uint32) (*Schema, error) {
	d.mu.Lock()
	s := d.schemas[id]
	d.mu.Unlock()
	if s != nil {
		return s, nil
	}
	got, err := d.reg.SchemaByID(ctx, int(id))
	if err != nil {
		return nil, fmt.Errorf("schema id %d from the registry: %w", id, err)
	}
	s, err = ParseSchema(id, got.Schema)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.schemas[id] = s
	d.mu.Unlock()
	return s, nil
}

// ParseSchema parses a record schema text and derives its fields.
func ParseSchema(id uint32, text string) (*Schema, error) {
	// A cache per schema: versions of one table share a record name.
	as, err := hamba.ParseWithCache(text, "", &hamba.SchemaCache{})
	if err != nil {
		return nil, fmt.Errorf("schema id %d: %w", id, err)
	}
	rec, ok := as.(*hamba.RecordSchema)
	if !ok {
		return nil, fmt.Errorf("schema id %d is a %s, not a record", id, as.Type())
	}
	s := &Schema{ID: id, Avro: as, index: make(map[string]int, len(rec.Fields()))}
	for _, f := range rec.Fields() {
		fd, err := fieldOf(f)
		if err != nil {
			return nil, fmt.Errorf("schema id %d: %w", id, err)
		}
		s.index[fd.Name] = len(s.Fields)
		s.Fields = append(s.Fields, fd)
	}
	return s, nil
}

func fieldOf(f *hamba.Field) (Field, error) {
	fd := Field{Name: f.Name()}
	t := f.Type()
	if u, ok := t.(*hamba.UnionSchema); ok {
		var other []hamba.Schema
		for _, b := range u.Types() {
			if b.Type() == hamba.Null {
				fd.Nullable = true
				continue
			}
			other = append(other, b)
		}
		if len(other) != 1 {
			return fd, fmt.Errorf("field %s: union %s has %d non-null branches, want 1", fd.Name, u.String(), len(other))
		}
		t = other[0]
	}
	if p, ok := t.(interface{ Prop(string) any }); ok {
		if m, ok := p.Prop("connect.parameters").(map[string]any); ok {
			fd.TiDBType, _ = m["tidb_type"].(string)
		}
	}
	switch t.Type() {
	case hamba.Int:
		fd.Kind = KindInt
	case hamba.Long:
		fd.Kind = KindLong
	case hamba.Float:
		fd.Kind = KindFloat
	case hamba.Double:
		fd.Kind = KindDouble
	case hamba.Boolean:
		fd.Kind = KindBoolean
	case hamba.String, hamba.Enum:
		fd.Kind = KindString
	case hamba.Bytes, hamba.Fixed:
		fd.Kind = KindBytes
		if ls, ok := t.(hamba.LogicalTypeSchema); ok && ls.Logical() != nil && ls.Logical().Type() == hamba.Decimal {
			dec, ok := ls.Logical().(*hamba.DecimalLogicalSchema)
			if !ok {
				return fd, fmt.Errorf("field %s: decimal logical type without precision", fd.Name)
			}
			fd.Kind, fd.Precision, fd.Scale = KindDecimal, dec.Precision(), dec.Scale()
		}
	default:
		return fd, fmt.Errorf("field %s: Avro type %s has no SQL column mapping", fd.Name, t.Type())
	}
	if f.HasDefault() {
		// A default of an unexpected form is left out rather than failing
		// the schema: records still apply, only resolution lacks it.
		fd.Default, fd.HasDefault = defaultOf(fd, f.Default())
	}
	return fd, nil
}

// defaultOf converts a field default as hamba parses it (already of the
// union's first branch) to the form Unmarshal gives the field's values.
func defaultOf(fd Field, v any) (any, bool) {
	if v == nil {
		return nil, true
	}
	switch fd.Kind {
	case KindDecimal:
		// The JSON default of a decimal is its two's-complement unscaled
		// bytes, one code point per byte.
		b, ok := v.([]byte)
		if !ok {
			return nil, false
		}
		n := new(big.Int).SetBytes(b)
		if len(b) > 0 && b[0]&0x80 != 0 {
			n.Sub(n, new(big.Int).Lsh(big.NewInt(1), uint(len(b))*8))
		}
		return new(big.Rat).SetFrac(n, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(fd.Scale)), nil)), true
	case KindBytes:
		if b, ok := v.([]byte); ok {
			return b, true
		}
		// A fixed default is a byte array of the fixed's size.
		rv := reflect.ValueOf(v)
		if rv.Kind() == reflect.Array && rv.Type().Elem().Kind() == reflect.Uint8 {
			b := make([]byte, rv.Len())
			reflect.Copy(reflect.ValueOf(b), rv)
			return b, true
		}
		return nil, false
	}
	return v, true
}

// DecimalText renders a decoded decimal at its scale ("-12.30").
func DecimalText(r *big.Rat, scale int) string {
	return r.FloatString(scale)
}
