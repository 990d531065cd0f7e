package contract

import (
	"testing"
)

// One connection per address, shared; none after Close.
func TestConns(t *testing.T) {
	var c Conns
	a, err := c.Get("127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Get("127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatal("a second Get of an address dialed again")
	}
	if other, _ := c.Get("127.0.0.1:2"); other == a {
		t.Fatal("two addresses share a connection")
	}
	if c.Len() != 2 {
		t.Fatalf("%d connections, want 2", c.Len())
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get("127.0.0.1:1"); err != ErrConnsClosed {
		t.Fatalf("Get after Close: %v, want ErrConnsClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal("Close is idempotent:", err)
	}
}
