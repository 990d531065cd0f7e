package engine

import (
	"encoding/binary"
	"fmt"
	"math"

	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// Key layout (see FORMAT.md):
//
//	slot (8, BE) | commit_ts (8, BE) | start_ts (8, BE) | raw key
//
// Big-endian fixed-width integers compare bytewise like the integers they
// encode, and the raw key is the last component, so pebble's default
// bytewise comparer yields (pipeline, commit ts, start ts, key) order with no
// custom comparer: a custom comparer would cost an indirect call per
// comparison on the hottest path (memtable insert and merging iteration).
const (
	slotLen   = 8
	tsLen     = 8
	keyHeader = slotLen + 2*tsLen
)

// slotPrefix returns the 8-byte prefix of every key of a slot.
func slotPrefix(slot uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, slotLen), slot)
}

// tsBound returns slot|ts: the smallest key of the slot whose commit ts is
// ts. Used as an inclusive lower or exclusive upper bound.
func tsBound(slot, ts uint64) []byte {
	b := make([]byte, 0, slotLen+tsLen)
	b = binary.BigEndian.AppendUint64(b, slot)
	return binary.BigEndian.AppendUint64(b, ts)
}

// afterBound returns the exclusive upper bound covering commit ts ≤ ts.
// ts = MaxUint64 has no successor, so the bound becomes the next slot.
func afterBound(slot, ts uint64) []byte {
	if ts == math.MaxUint64 {
		return slotPrefix(slot + 1)
	}
	return tsBound(slot, ts+1)
}

func encodedKeyLen(ev *tidestreamv1.RawKVEvent) int { return keyHeader + len(ev.Key) }

func putKey(dst []byte, slot uint64, ev *tidestreamv1.RawKVEvent) {
	binary.BigEndian.PutUint64(dst[0:], slot)
	binary.BigEndian.PutUint64(dst[8:], ev.CommitTs)
	binary.BigEndian.PutUint64(dst[16:], ev.StartTs)
	copy(dst[keyHeader:], ev.Key)
}

// Value layout:
//
//	op (1) | uvarint region_id | uvarint len(value) | value | old_value
//
// old_value needs no length: it runs to the end. A typical row costs 3–5
// bytes of framing, against ~12 for the protobuf encoding of the same
// fields, and decoding is two varint reads instead of a reflective unmarshal.
func encodedValueLen(ev *tidestreamv1.RawKVEvent) int {
	return 1 + uvarintLen(ev.RegionId) + uvarintLen(uint64(len(ev.Value))) + len(ev.Value) + len(ev.OldValue)
}

func putValue(dst []byte, ev *tidestreamv1.RawKVEvent) {
	dst[0] = byte(ev.Op)
	n := 1
	n += binary.PutUvarint(dst[n:], ev.RegionId)
	n += binary.PutUvarint(dst[n:], uint64(len(ev.Value)))
	n += copy(dst[n:], ev.Value)
	copy(dst[n:], ev.OldValue)
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// validateEvent rejects events the layout cannot represent faithfully.
// commit_ts 0 would sort before every real event and fall outside every
// (after, upTo] window, i.e. be silently lost; an op outside one byte would
// be truncated.
func validateEvent(ev *tidestreamv1.RawKVEvent) error {
	switch {
	case ev == nil:
		return fmt.Errorf("%w: nil event", ErrInvalidEvent)
	case ev.CommitTs == 0:
		return fmt.Errorf("%w: commit_ts is 0 (key %x)", ErrInvalidEvent, ev.Key)
	case ev.Op < 0 || ev.Op > math.MaxUint8:
		return fmt.Errorf("%w: op %d out of range", ErrInvalidEvent, ev.Op)
	}
	return nil
}

// decodeEvent rebuilds an event from a stored key and value. The result owns
// its bytes (one allocation holds key, value and old value), because pebble
// reuses the iterator's buffers on Next and callers keep events in batches.
func decodeEvent(k, v []byte) (*tidestreamv1.RawKVEvent, int, error) {
	if len(k) < keyHeader || len(v) < 1 {
		return nil, 0, fmt.Errorf("%w: short record (key %d, value %d bytes)", ErrCorrupt, len(k), len(v))
	}
	ev := &tidestreamv1.RawKVEvent{
		CommitTs: binary.BigEndian.Uint64(k[8:]),
		StartTs:  binary.BigEndian.Uint64(k[16:]),
		Op:       tidestreamv1.OpType(v[0]),
	}
	n := 1
	region, m := binary.Uvarint(v[n:])
	if m <= 0 {
		return nil, 0, fmt.Errorf("%w: bad region varint", ErrCorrupt)
	}
	n += m
	vlen, m := binary.Uvarint(v[n:])
	if m <= 0 || vlen > uint64(len(v)-n-m) {
		return nil, 0, fmt.Errorf("%w: bad value length", ErrCorrupt)
	}
	n += m
	ev.RegionId = region
	rawKey := k[keyHeader:]
	val := v[n : n+int(vlen)]
	old := v[n+int(vlen):]
	size := len(rawKey) + len(val) + len(old)
	buf := make([]byte, size)
	copy(buf, rawKey)
	copy(buf[len(rawKey):], val)
	copy(buf[len(rawKey)+len(val):], old)
	ev.Key = buf[:len(rawKey):len(rawKey)]
	if len(val) > 0 {
		ev.Value = buf[len(rawKey) : len(rawKey)+len(val) : len(rawKey)+len(val)]
	}
	if len(old) > 0 {
		ev.OldValue = buf[len(rawKey)+len(val):]
	}
	return ev, size, nil
}

// eventSize is the byte count Read charges against limitBytes and the
// events counters use: the payload, not the framing.
func eventSize(ev *tidestreamv1.RawKVEvent) int {
	return len(ev.Key) + len(ev.Value) + len(ev.OldValue)
}
