package store

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// tsoWindow is how far ahead of the last issued physical time the persisted limit is
// moved. Every timestamp issued is below the persisted limit, so after a restart
// (even with the wall clock set back) the first timestamp is above every earlier one.
// 3 s is PD's own save interval; it costs one fsync per 3 s of issued time.
const tsoWindow = 3 * time.Second

// logicalBits is the number of bits of a TiDB timestamp holding the logical part.
const logicalBits = 18

// tso issues TiDB/PD-style timestamps (physical ms << 18 | logical) that are strictly
// increasing within a process and across restarts with the same file.
//
// unistore's own tikv.GetTS is a process-global based only on time.Now: a restart
// after the clock moved back would issue timestamps below already committed versions,
// which breaks MVCC reads and badger's newest-version-wins for region metadata.
type tso struct {
	mu       sync.Mutex
	path     string
	physical int64 // ms
	logical  int64
	limit    int64 // ms; persisted; physical < limit always holds after allocation
	now      func() time.Time
}

func openTSO(path string, now func() time.Time) (*tso, error) {
	t := &tso{path: path, now: now}
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if len(b) != 8 {
			return nil, fmt.Errorf("store: tso file %s: want 8 bytes, got %d", path, len(b))
		}
		// Everything issued before had physical < saved limit.
		t.physical = int64(binary.BigEndian.Uint64(b))
		t.limit = t.physical
	case os.IsNotExist(err):
	default:
		return nil, fmt.Errorf("store: read tso file: %w", err)
	}
	return t, nil
}

// next returns a new timestamp split into physical and logical parts.
func (t *tso) next() (int64, int64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now().UnixMilli()
	if now > t.physical {
		t.physical, t.logical = now, 0
	} else {
		t.logical++
		if t.logical >= 1<<logicalBits {
			t.physical++
			t.logical = 0
		}
	}
	if t.physical >= t.limit {
		limit := t.physical + tsoWindow.Milliseconds()
		if err := t.save(limit); err != nil {
			// Do not issue a timestamp that a restart could repeat.
			t.logical--
			return 0, 0, err
		}
		t.limit = limit
	}
	return t.physical, t.logical, nil
}

// compose returns the next timestamp as one uint64.
func (t *tso) compose() (uint64, error) {
	p, l, err := t.next()
	if err != nil {
		return 0, err
	}
	return uint64(p)<<logicalBits | uint64(l), nil
}

func (t *tso) save(limit int64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(limit))
	tmp := t.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("store: save tso limit: %w", err)
	}
	if _, err := f.Write(b[:]); err != nil {
		f.Close()
		return fmt.Errorf("store: save tso limit: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("store: save tso limit: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("store: save tso limit: %w", err)
	}
	if err := os.Rename(tmp, t.path); err != nil {
		return fmt.Errorf("store: save tso limit: %w", err)
	}
	if d, err := os.Open(filepath.Dir(t.path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
