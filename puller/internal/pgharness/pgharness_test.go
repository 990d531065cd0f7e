package pgharness

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// One playground through its whole life: SQL, a fault call, a restart that
// keeps the data, and the stop in cleanup.
func TestStartFaultRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the playground")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p := Start(t, "--resolved-ts-interval", "200ms")
	db := p.DB()
	for _, q := range []string{"CREATE DATABASE h", "CREATE TABLE h.t (id INT PRIMARY KEY)", "INSERT INTO h.t VALUES (7)"} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var out map[string]any
	if err := p.Fault("/fault/delay-events", "ms=0", &out); err != nil {
		t.Fatalf("fault: %v", err)
	}
	if err := p.Fault("/fault/no-such-fault", "", nil); err == nil {
		t.Fatal("unknown fault endpoint: no error")
	}

	p.Restart()
	var id int
	if err := db.QueryRowContext(ctx, "SELECT id FROM h.t").Scan(&id); err != nil || id != 7 {
		t.Fatalf("after restart: id %d, %v", id, err)
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
}
