package diff

import "github.com/tidestream/tidestream/services/consumer"

// rowSet is one side of a table: key → checksum of the row.
type rowSet struct {
	sums    map[string]Sum
	display map[string]string
	// newer holds keys whose downstream version was committed after the
	// snapshot (cut with _tidb_commit_ts): not compared.
	newer map[string]bool
	// Replay only: partial holds the last record of each key whose writer
	// schema lacks a compared column, to be resolved against the defaults
	// of the schemas seen once the replay is done; schemas holds those
	// value schemas by id.
	partial map[string]*consumer.Change
	schemas map[uint32]*consumer.Schema
	h       rowHasher
	vals    []string
}

func newRowSet() *rowSet {
	return &rowSet{sums: map[string]Sum{}, display: map[string]string{}, newer: map[string]bool{},
		partial: map[string]*consumer.Change{}, schemas: map[uint32]*consumer.Schema{}}
}

// canonical renders the columns of t from get (nil value = NULL) and
// returns the key id, its display form and the row checksum.
func (rs *rowSet) canonical(t *Table, get func(i int) any) (string, string, Sum, error) {
	rs.h.reset()
	keyVals := rs.vals[:0]
	next := 0 // t.Key is ascending: key columns in table order
	for i, c := range t.Columns {
		s, null, err := Canonical(c, get(i))
		if err != nil {
			return "", "", Sum{}, err
		}
		rs.h.add(s, null)
		if next < len(t.Key) && t.Key[next] == i {
			keyVals = append(keyVals, s)
			next++
		}
	}
	rs.vals = keyVals
	id, disp := keyString(t, keyVals)
	return id, disp, rs.h.sum(), nil
}

func (rs *rowSet) add(t *Table, get func(i int) any) error {
	id, disp, sum, err := rs.canonical(t, get)
	if err != nil {
		return err
	}
	rs.sums[id] = sum
	rs.display[id] = disp
	return nil
}
