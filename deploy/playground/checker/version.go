package checker

import (
	"strconv"
	"strings"
)

// batchResolvedTsVersion is the first client version TiKV sends batched
// resolved ts to; older clients (and unparsable versions, which TiKV reads as
// 0.0.0) get one legacy Event.resolved_ts per region (spec §1.4).
var batchResolvedTsVersion = semver{major: 4, minor: 0, patch: 8}

type semver struct {
	major, minor, patch uint64
	pre                 bool // has a pre-release suffix, which sorts below the release
}

// parseSemver parses strictly, the way TiKV's semver crate does: three
// numeric parts, optional -pre-release and +build, no leading "v". ok is false
// for anything else.
func parseSemver(s string) (v semver, ok bool) {
	if i := strings.IndexByte(s, '+'); i >= 0 {
		s = s[:i]
	}
	if i := strings.IndexByte(s, '-'); i >= 0 {
		if i == len(s)-1 {
			return semver{}, false
		}
		v.pre = true
		s = s[:i]
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return semver{}, false
	}
	var nums [3]uint64
	for i, p := range parts {
		// Leading zeros are invalid in semver; a bare "0" is fine.
		if p == "" || (len(p) > 1 && p[0] == '0') {
			return semver{}, false
		}
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return semver{}, false
		}
		nums[i] = n
	}
	v.major, v.minor, v.patch = nums[0], nums[1], nums[2]
	return v, true
}

func (v semver) less(o semver) bool {
	if v.major != o.major {
		return v.major < o.major
	}
	if v.minor != o.minor {
		return v.minor < o.minor
	}
	if v.patch != o.patch {
		return v.patch < o.patch
	}
	return v.pre && !o.pre
}

// compatMode reports whether a client announcing version s gets legacy
// per-region resolved ts instead of batches.
func compatMode(s string) bool {
	v, ok := parseSemver(s)
	if !ok {
		return true
	}
	return v.less(batchResolvedTsVersion)
}
