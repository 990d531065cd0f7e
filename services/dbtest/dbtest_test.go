package dbtest

import (
	"testing"
)

func TestStartBoth(t *testing.T) {
	for name, start := range map[string]func(testing.TB) *Server{"mariadb": StartMariaDB, "postgres": StartPostgres} {
		t.Run(name, func(t *testing.T) {
			s := start(t)
			db := s.Open(t)
			var n int
			if err := db.QueryRow("SELECT 1").Scan(&n); err != nil || n != 1 {
				t.Fatalf("SELECT 1: %d %v\n%s", n, err, s.Log())
			}
		})
	}
}
