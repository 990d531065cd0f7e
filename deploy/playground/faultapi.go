package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pingcap/tidb/pkg/kv"
	"github.com/pingcap/tidb/pkg/tablecodec"
	"github.com/tidestream/tidestream/deploy/playground/cdcemu"
	"github.com/tidestream/tidestream/deploy/playground/checker"
	"github.com/tidestream/tidestream/deploy/playground/kvserver"
	"google.golang.org/grpc/codes"
)

// faultUsage is served at GET /fault/ and documented in README.md.
const faultUsage = `Fault injection (POST, loopback clients only; answers JSON):

  /fault/split?key=HEX                 split the region holding raw key HEX at it
  /fault/split?table=ID&handle=N       split table ID's record range at row handle N
  /fault/region-error?kind=K[&region=ID][&when=now|register][&count=N][&backoff_ms=N]
        kind: not_leader, region_not_found, epoch_not_match, server_is_busy,
              congested, duplicate_request, cluster_id_mismatch, compatibility
        when=now (default): send to the live subscriptions of region ID (0 or absent: all);
              a region error ends each one; server_is_busy, duplicate_request,
              cluster_id_mismatch and compatibility, which TiKV sends only in answer
              to a Register, come as the answer to a second Register for the live
              key, which keeps streaming
        when=register: fail the next N (default 1) registrations of region ID (0: any)
  /fault/close-streams[?code=unavailable|unknown|canceled|internal|ok]
                                       end every change-data stream (ok: clean end of stream)
  /fault/hold-resolved-ts?seconds=N[&region=ID]   send no resolved ts for N seconds
  /fault/tso-error?seconds=N           resolved-ts rounds run without a TSO for N seconds:
                                       nothing advances, current values are re-reported
  /fault/delay-events?ms=N             deliver every change-data message N ms late (0 ends it)
  /fault/store-unavailable?seconds=N   every KV and change-data RPC fails UNAVAILABLE for N
                                       seconds; open streams are cut
  /fault/delay-initialized?ms=N[&region=ID]   hold incremental scan output
  /fault/eventfeed-v2?enabled=true|false      false: EventFeedV2 answers UNIMPLEMENTED
  /fault/multiplexing?reject=true|false       true: stream-multiplexing is refused
  /fault/pending-scan-limit?n=N        registrations beyond N pending scans get server_is_busy (0 resets)
  /fault/resolved-ts-tick              run one resolved-ts round now

Change-data state (GET):
  /cdc/stats                           counters and live subscriptions
  /cdc/checker                         invariant violations (with --check-invariants)
`

type faultAPI struct {
	emu *cdcemu.Emulator
	kv  *kvserver.Server
	chk *checker.Checker
	log *slog.Logger
}

func (a *faultAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !loopback(r.RemoteAddr) {
		http.Error(w, "fault injection is served to loopback clients only", http.StatusForbidden)
		return
	}
	path := strings.TrimSuffix(r.URL.Path, "/")
	if r.Method == http.MethodGet {
		switch path {
		case "/fault":
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			fmt.Fprint(w, faultUsage)
		case "/cdc/stats":
			writeJSON(w, http.StatusOK, a.emu.Snapshot())
		case "/cdc/checker":
			if a.chk == nil {
				writeJSON(w, http.StatusNotFound, map[string]string{"error": "start the playground with --check-invariants"})
				return
			}
			writeJSON(w, http.StatusOK, map[string]any{"violations": a.chk.Violations()})
		default:
			http.Error(w, "unknown path; GET /fault/ lists the endpoints", http.StatusNotFound)
		}
		return
	}
	if r.Method != http.MethodPost {
		http.Error(w, "use POST for faults and GET for /cdc/ and /fault/", http.StatusMethodNotAllowed)
		return
	}
	res, err := a.fault(path, r)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	a.log.Info("fault injected", "path", path, "query", r.URL.RawQuery)
	writeJSON(w, http.StatusOK, res)
}

func (a *faultAPI) fault(path string, r *http.Request) (any, error) {
	q := r.URL.Query()
	switch path {
	case "/fault/split":
		key, err := splitKey(q.Get("key"), q.Get("table"), q.Get("handle"))
		if err != nil {
			return nil, err
		}
		regions, err := a.emu.Split(key)
		if err != nil {
			return nil, err
		}
		return map[string]any{"regions": regions}, nil
	case "/fault/region-error":
		kind := q.Get("kind")
		region, err := uintParam(q, "region", 0)
		if err != nil {
			return nil, err
		}
		backoff, err := uintParam(q, "backoff_ms", 0)
		if err != nil {
			return nil, err
		}
		switch q.Get("when") {
		case "", "now":
			n, err := a.emu.InjectError(kind, region, backoff)
			if err != nil {
				return nil, err
			}
			return map[string]int{"subscriptions": n}, nil
		case "register":
			count, err := uintParam(q, "count", 1)
			if err != nil {
				return nil, err
			}
			if err := a.emu.InjectRegisterError(kind, region, int(count), backoff); err != nil {
				return nil, err
			}
			return map[string]any{"armed": count}, nil
		default:
			return nil, fmt.Errorf("when=%q: want now or register", q.Get("when"))
		}
	case "/fault/close-streams":
		code, err := statusCode(q.Get("code"))
		if err != nil {
			return nil, err
		}
		return map[string]int{"streams": a.emu.CloseStreams(code, "")}, nil
	case "/fault/hold-resolved-ts":
		d, err := durParam(q, "seconds", time.Second)
		if err != nil {
			return nil, err
		}
		region, err := uintParam(q, "region", 0)
		if err != nil {
			return nil, err
		}
		a.emu.HoldResolvedTs(region, d)
		return map[string]string{"until": time.Now().Add(d).Format(time.RFC3339Nano)}, nil
	case "/fault/tso-error":
		d, err := durParam(q, "seconds", time.Second)
		if err != nil {
			return nil, err
		}
		a.emu.FailTSO(d)
		return map[string]string{"until": time.Now().Add(d).Format(time.RFC3339Nano)}, nil
	case "/fault/delay-events":
		d, err := durParam(q, "ms", time.Millisecond)
		if err != nil {
			return nil, err
		}
		a.emu.DelayEvents(d)
		return map[string]string{"delay": d.String()}, nil
	case "/fault/store-unavailable":
		d, err := durParam(q, "seconds", time.Second)
		if err != nil {
			return nil, err
		}
		a.kv.SetUnavailable(d)
		return map[string]string{"until": time.Now().Add(d).Format(time.RFC3339Nano)}, nil
	case "/fault/delay-initialized":
		d, err := durParam(q, "ms", time.Millisecond)
		if err != nil {
			return nil, err
		}
		region, err := uintParam(q, "region", 0)
		if err != nil {
			return nil, err
		}
		a.emu.DelayInitialized(region, d)
		return map[string]string{"delay": d.String()}, nil
	case "/fault/eventfeed-v2":
		on, err := strconv.ParseBool(q.Get("enabled"))
		if err != nil {
			return nil, fmt.Errorf("enabled=%q: want true or false", q.Get("enabled"))
		}
		a.emu.SetEventFeedV2(on)
		return map[string]bool{"enabled": on}, nil
	case "/fault/multiplexing":
		rej, err := strconv.ParseBool(q.Get("reject"))
		if err != nil {
			return nil, fmt.Errorf("reject=%q: want true or false", q.Get("reject"))
		}
		a.emu.SetRejectMultiplexing(rej)
		return map[string]bool{"reject": rej}, nil
	case "/fault/pending-scan-limit":
		n, err := uintParam(q, "n", 0)
		if err != nil {
			return nil, err
		}
		a.emu.SetPendingScanLimit(int(n))
		return map[string]uint64{"limit": n}, nil
	case "/fault/resolved-ts-tick":
		if err := a.emu.Tick(r.Context()); err != nil {
			return nil, err
		}
		return map[string]bool{"ok": true}, nil
	}
	return nil, fmt.Errorf("unknown fault %q; GET /fault/ lists them", path)
}

func splitKey(hexKey, table, handle string) ([]byte, error) {
	if hexKey != "" {
		if table != "" || handle != "" {
			return nil, fmt.Errorf("give either key or table+handle, not both")
		}
		k, err := hex.DecodeString(hexKey)
		if err != nil || len(k) == 0 {
			return nil, fmt.Errorf("key=%q: want a non-empty hex-encoded raw key", hexKey)
		}
		return k, nil
	}
	id, err := strconv.ParseInt(table, 10, 64)
	if err != nil || id <= 0 {
		return nil, fmt.Errorf("table=%q: want a positive table id (or use key=HEX)", table)
	}
	h, err := strconv.ParseInt(handle, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("handle=%q: want an integer row handle", handle)
	}
	return tablecodec.EncodeRowKeyWithHandle(id, kv.IntHandle(h)), nil
}

func uintParam(q map[string][]string, name string, def uint64) (uint64, error) {
	v := ""
	if vs := q[name]; len(vs) > 0 {
		v = vs[0]
	}
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: want a non-negative integer", name, v)
	}
	return n, nil
}

func durParam(q map[string][]string, name string, unit time.Duration) (time.Duration, error) {
	v := ""
	if vs := q[name]; len(vs) > 0 {
		v = vs[0]
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("%s=%q: want a non-negative number", name, v)
	}
	return time.Duration(f * float64(unit)), nil
}

func statusCode(s string) (codes.Code, error) {
	switch strings.ToLower(s) {
	case "", "unavailable":
		return codes.Unavailable, nil
	case "unknown":
		return codes.Unknown, nil
	case "canceled", "cancelled":
		return codes.Canceled, nil
	case "internal":
		return codes.Internal, nil
	case "ok", "eof":
		return codes.OK, nil
	}
	return 0, fmt.Errorf("code=%q: want unavailable, unknown, canceled, internal or ok", s)
}

func loopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
