// Package avrotest reads Confluent-framed Avro the way an independent
// consumer does, for the encoder's end-to-end tests: the schema by the id
// in the record's header, fetched from the registry over HTTP and cached,
// then a generic decode with hamba/avro. It shares nothing with the code
// that wrote the record.
package avrotest

import (
	"context"
	"encoding/binary"
	"testing"

	hamba "github.com/hamba/avro/v2"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/sr"
)

// Consumer decodes records against schemas fetched by id.
type Consumer struct {
	cl      *sr.Client
	schemas map[int]hamba.Schema
}

// NewConsumer reads schemas through cl.
func NewConsumer(cl *sr.Client) *Consumer {
	return &Consumer{cl: cl, schemas: make(map[int]hamba.Schema)}
}

// Decode returns msg's record as field name -> value, and its schema. A
// union's value comes unwrapped: a generic decode gives {branch: value},
// and a consumer sees the value.
func (c *Consumer) Decode(ctx context.Context, t testing.TB, msg []byte) (map[string]any, *hamba.RecordSchema) {
	t.Helper()
	require.GreaterOrEqual(t, len(msg), 5, "Confluent header")
	require.Equal(t, byte(0), msg[0], "magic byte")
	id := int(binary.BigEndian.Uint32(msg[1:5]))
	s := c.schemas[id]
	if s == nil {
		got, err := c.cl.SchemaByID(ctx, id)
		require.NoError(t, err, "schema %d", id)
		s, err = hamba.ParseWithCache(got.Schema, "", &hamba.SchemaCache{})
		require.NoError(t, err)
		c.schemas[id] = s
	}
	var v any
	require.NoError(t, hamba.Unmarshal(s, msg[5:], &v))
	rec, ok := v.(map[string]any)
	require.True(t, ok, "record decodes to %T", v)
	rs, ok := s.(*hamba.RecordSchema)
	require.True(t, ok, "schema %d is a %T, not a record", id, s)
	for _, f := range rs.Fields() {
		if _, ok := f.Type().(*hamba.UnionSchema); !ok {
			continue
		}
		if m, ok := rec[f.Name()].(map[string]any); ok && len(m) == 1 {
			for _, x := range m {
				rec[f.Name()] = x
			}
		}
	}
	return rec, rs
}
