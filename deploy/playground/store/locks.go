package store

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/pingcap/tidb/pkg/store/mockstore/unistore/lockstore"
)

// loadLocks reads back the lock dump unistore's MVCCStore.Close writes and unistore
// itself never loads. Without it, a transaction whose primary was committed before a
// clean shutdown would lose its uncommitted secondaries' locks, and a later
// resolve would not find them (silently dropping rows).
//
// The dump is a sequence of records: key length and value length as two uint32 in
// the machine's byte order (unistore writes its header struct verbatim; the
// playground runs on little-endian amd64/arm64), then key and value.
//
// The file is renamed once loaded: after a crash (no new dump) a stale dump would
// otherwise resurrect locks of transactions that were resolved since.
func loadLocks(path string, ls *lockstore.MemStore) error {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: open lock dump: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var hdr [8]byte
	for n := 0; ; n++ {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return fmt.Errorf("store: lock dump record %d header: %w", n, err)
		}
		kl := binary.LittleEndian.Uint32(hdr[0:4])
		vl := binary.LittleEndian.Uint32(hdr[4:8])
		buf := make([]byte, int(kl)+int(vl))
		if _, err := io.ReadFull(r, buf); err != nil {
			return fmt.Errorf("store: lock dump record %d body: %w", n, err)
		}
		ls.Put(buf[:kl], buf[kl:])
	}
	if err := os.Rename(path, path+".loaded"); err != nil {
		return fmt.Errorf("store: retire lock dump: %w", err)
	}
	return nil
}
