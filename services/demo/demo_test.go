package demo

import (
	"testing"
	"time"
)

func TestShowArgs(t *testing.T) {
	got := showArgs([]string{"cli", "changefeed", "create", "--server=http://127.0.0.1:1", "--sink-uri=kafka://h:1/t?a=b&c=d", "--config", "/tmp/c.conf"})
	want := "cli changefeed create \\\n    --server=\"http://127.0.0.1:1\" \\\n    --sink-uri=\"kafka://h:1/t?a=b&c=d\" \\\n    --config /tmp/c.conf"
	if got != want {
		t.Fatalf("showArgs:\n%s\nwant:\n%s", got, want)
	}
}

func TestTSOLagAndPercentiles(t *testing.T) {
	ms := func(n uint64) uint64 { return n << 18 }
	if got := tsoLag(ms(5000)|7, ms(2000)); got != 3*time.Second {
		t.Fatalf("tsoLag = %s, want 3s", got)
	}
	if got := tsoLag(ms(1000), ms(2000)); got != 0 {
		t.Fatalf("a checkpoint ahead of the TSO read lags 0, got %s", got)
	}
	lags := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for i := range lags {
		lags[i] *= time.Second
	}
	if p50, p99 := pct(lags, 50), pct(lags, 99); p50 != 5*time.Second || p99 != 10*time.Second {
		t.Fatalf("p50 %s p99 %s, want 5s 10s", p50, p99)
	}
}
