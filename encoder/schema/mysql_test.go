package schema

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// sqlConn is the smallest MySQL text-protocol client the integration test
// needs: log in as root without password, run one statement, read a result
// set as strings. The encoder module has no MySQL driver among its
// dependencies and this test does not justify adding one.
type sqlConn struct {
	c   net.Conn
	r   *bufio.Reader
	seq byte
}

// Capability flags of the client handshake (MySQL protocol, HandshakeResponse41).
const (
	capLongPassword     = 0x1
	capProtocol41       = 0x200
	capTransactions     = 0x2000
	capSecureConnection = 0x8000
	capPluginAuth       = 0x80000
)

func dialSQL(addr string) (*sqlConn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	s := &sqlConn{c: c, r: bufio.NewReader(c)}
	if err := s.login(); err != nil {
		c.Close()
		return nil, fmt.Errorf("mysql login: %w", err)
	}
	return s, nil
}

func (s *sqlConn) Close() error { return s.c.Close() }

func (s *sqlConn) readPacket() ([]byte, error) {
	var h [4]byte
	if _, err := io.ReadFull(s.r, h[:]); err != nil {
		return nil, err
	}
	n := int(h[0]) | int(h[1])<<8 | int(h[2])<<16
	s.seq = h[3] + 1
	p := make([]byte, n)
	_, err := io.ReadFull(s.r, p)
	return p, err
}

func (s *sqlConn) writePacket(p []byte) error {
	h := []byte{byte(len(p)), byte(len(p) >> 8), byte(len(p) >> 16), s.seq}
	s.seq++
	_, err := s.c.Write(append(h, p...))
	return err
}

func (s *sqlConn) login() error {
	// The server's greeting is not parsed: an empty password needs no
	// scramble, and the auth plugin is named in our answer.
	if _, err := s.readPacket(); err != nil {
		return err
	}
	resp := binary.LittleEndian.AppendUint32(nil, capLongPassword|capProtocol41|capTransactions|capSecureConnection|capPluginAuth)
	resp = binary.LittleEndian.AppendUint32(resp, 1<<24)
	resp = append(resp, 45) // utf8mb4_general_ci
	resp = append(resp, make([]byte, 23)...)
	resp = append(resp, "root\x00"...)
	resp = append(resp, 0) // empty auth response
	resp = append(resp, "mysql_native_password\x00"...)
	if err := s.writePacket(resp); err != nil {
		return err
	}
	for {
		p, err := s.readPacket()
		if err != nil {
			return err
		}
		switch {
		case len(p) > 0 && p[0] == 0x00:
			return nil
		case len(p) > 0 && p[0] == 0xff:
			return sqlError(p)
		case len(p) > 0 && p[0] == 0xfe:
			// Auth switch: the empty password is empty for every plugin.
			if err := s.writePacket(nil); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unexpected packet %x", p)
		}
	}
}

func sqlError(p []byte) error {
	if len(p) < 9 {
		return errors.New("mysql: malformed error packet")
	}
	return fmt.Errorf("mysql error %d: %s", binary.LittleEndian.Uint16(p[1:3]), p[9:])
}

func lenenc(p []byte) (uint64, []byte) {
	switch p[0] {
	case 0xfc:
		return uint64(binary.LittleEndian.Uint16(p[1:3])), p[3:]
	case 0xfd:
		return uint64(p[1]) | uint64(p[2])<<8 | uint64(p[3])<<16, p[4:]
	case 0xfe:
		return binary.LittleEndian.Uint64(p[1:9]), p[9:]
	}
	return uint64(p[0]), p[1:]
}

// query runs one statement; rows come back as strings, NULL as "NULL".
func (s *sqlConn) query(q string) ([][]string, error) {
	s.seq = 0
	if err := s.writePacket(append([]byte{0x03}, q...)); err != nil {
		return nil, err
	}
	p, err := s.readPacket()
	if err != nil {
		return nil, err
	}
	switch p[0] {
	case 0x00:
		return nil, nil
	case 0xff:
		return nil, fmt.Errorf("%s: %w", q, sqlError(p))
	}
	ncol, _ := lenenc(p)
	// Column definitions, then an EOF packet (CLIENT_DEPRECATE_EOF is off).
	for i := uint64(0); i <= ncol; i++ {
		if _, err := s.readPacket(); err != nil {
			return nil, err
		}
	}
	var rows [][]string
	for {
		p, err := s.readPacket()
		if err != nil {
			return nil, err
		}
		if p[0] == 0xfe && len(p) < 9 {
			return rows, nil
		}
		if p[0] == 0xff {
			return nil, fmt.Errorf("%s: %w", q, sqlError(p))
		}
		row := make([]string, 0, ncol)
		for range ncol {
			if p[0] == 0xfb {
				row = append(row, "NULL")
				p = p[1:]
				continue
			}
			n, rest := lenenc(p)
			row = append(row, string(rest[:n]))
			p = rest[n:]
		}
		rows = append(rows, row)
	}
}
