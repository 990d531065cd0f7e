package kvclient

import (
	"testing"
	"time"
)

func TestLogThrottleOncePerIntervalCountingTheRest(t *testing.T) {
	var l logThrottle
	t0 := time.Unix(1000, 0)
	steps := []struct {
		at          time.Duration
		ok          bool
		wantSkipped int
	}{
		{0, true, 0},
		{2 * time.Second, false, 0},
		{4 * time.Second, false, 0},
		{59 * time.Second, false, 0},
		{60 * time.Second, true, 3},
		{61 * time.Second, false, 0},
		{3 * time.Minute, true, 1},
	}
	for _, s := range steps {
		skipped, ok := l.allow(t0.Add(s.at), time.Minute)
		if ok != s.ok || skipped != s.wantSkipped {
			t.Fatalf("at %v: allow = (%d, %v), want (%d, %v)", s.at, skipped, ok, s.wantSkipped, s.ok)
		}
	}
}
