package kvclient

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/pingcap/kvproto/pkg/cdcpb"
)

const (
	// Region retries back off per range like the new TiCDC (spec §3.7):
	// 50 ms × 2^(attempt−1), at most 2 s, jittered into [d/2, d]. The attempt
	// count restarts when the range's region initialises.
	rangeBackoffBase = 50 * time.Millisecond
	rangeBackoffMax  = 2 * time.Second
	// Locating a range failed (PD unreachable, a hole in the region map):
	// wait at least this long, as TiCDC does (100 ms).
	locateRetryMin = 100 * time.Millisecond
	// server_is_busy may ask for more; never wait longer than this.
	busyBackoffMax = 10 * time.Minute
	// A store whose stream failed is reconnected after 100 ms × 2^(failures−1),
	// at most 1 s (TiCDC waits 1 s); its failure count restarts when one of
	// its regions initialises.
	storeBackoffBase = 100 * time.Millisecond
	storeBackoffMax  = time.Second
)

func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// expBackoff is base × 2^(attempt−1) capped at max and jittered; 0 for
// attempt <= 0.
func expBackoff(attempt int, base, maxD time.Duration) time.Duration {
	if attempt <= 0 {
		return 0
	}
	d := base << min(attempt-1, 16)
	return jitter(min(d, maxD))
}

func rangeBackoff(attempt int) time.Duration {
	return expBackoff(attempt, rangeBackoffBase, rangeBackoffMax)
}

// cmpEnd compares two range ends where empty means +∞.
func cmpEnd(a, b []byte) int {
	switch {
	case len(a) == 0 && len(b) == 0:
		return 0
	case len(a) == 0:
		return 1
	case len(b) == 0:
		return -1
	}
	return bytes.Compare(a, b)
}

// minEnd is the smaller of two range ends (empty = +∞).
func minEnd(a, b []byte) []byte {
	if cmpEnd(a, b) <= 0 {
		return a
	}
	return b
}

// errKind names a region error for logs and metrics.
func errKind(e *cdcpb.Error) string {
	switch {
	case e.GetNotLeader() != nil:
		return "not_leader"
	case e.GetRegionNotFound() != nil:
		return "region_not_found"
	case e.GetEpochNotMatch() != nil:
		return "epoch_not_match"
	case e.GetDuplicateRequest() != nil:
		return "duplicate_request"
	case e.GetCompatibility() != nil:
		return "compatibility"
	case e.GetClusterIdMismatch() != nil:
		return "cluster_id_mismatch"
	case e.GetServerIsBusy() != nil:
		return "server_is_busy"
	case e.GetCongested() != nil:
		return "congested"
	}
	return "unknown"
}

// semver is major.minor.patch; pre-release and build suffixes are ignored.
type semver [3]int

// parseVersion reads TiKV's store version ("8.5.0", "v7.5.1-alpha").
func parseVersion(s string) (semver, error) {
	s = strings.TrimPrefix(strings.TrimSpace(s), "v")
	if i := strings.IndexAny(s, "-+"); i >= 0 {
		s = s[:i]
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return semver{}, fmt.Errorf("version %q is not major.minor.patch", s)
	}
	var v semver
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return semver{}, fmt.Errorf("version %q: bad component %q", s, p)
		}
		v[i] = n
	}
	return v, nil
}

func (v semver) less(o semver) bool {
	for i := range v {
		if v[i] != o[i] {
			return v[i] < o[i]
		}
	}
	return false
}
