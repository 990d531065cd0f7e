package pdserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pingcap/kvproto/pkg/metapb"
	"github.com/pingcap/kvproto/pkg/pdpb"
	pdhttp "github.com/tikv/pd/client/http"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tidestream/tidestream/deploy/playground/store"
)

// httpAPI is the part of PD's HTTP API (on the same port, under /pd/api/v1/) that
// TiDB calls through its PD HTTP client: DROP DATABASE, TRUNCATE TABLE and the GC
// of dropped tables read and patch region label rules and fail when PD does not
// answer; the DDL owner polls the store list and sets TiFlash's rule group every
// few seconds. Label rules, placement rules and rule groups are kept in etcd (they
// change nothing in the playground: there is one store and no scheduler), the rest
// is read-only cluster information. Other paths answer 404.
type httpAPI struct {
	s  *service
	mu sync.Mutex // serialises read-modify-write of rules
}

const apiPrefix = "/pd/api/v1"

func (h *httpAPI) labelRuleKey(id string) string { return h.s.rootPath() + "/region_label/" + id }

func (h *httpAPI) ruleGroupKey(id string) string { return h.s.rootPath() + "/rule_group/" + id }

// rulePrefix is where a group's placement rules live; "" means all groups.
func (h *httpAPI) rulePrefix(group string) string {
	if group == "" {
		return h.s.rootPath() + "/rules/"
	}
	return h.s.rootPath() + "/rules/" + group + "/"
}

// handlers returns etcd UserHandlers: one handler for everything under /pd/.
func (h *httpAPI) handlers() map[string]http.Handler {
	mux := http.NewServeMux()
	get := func(path string, f http.HandlerFunc) { mux.HandleFunc("GET "+apiPrefix+path, f) }
	get("/version", h.version)
	get("/status", h.status)
	get("/health", h.health)
	get("/members", h.members)
	get("/leader", h.leader)
	get("/cluster", h.cluster)
	get("/cluster/status", h.clusterStatus)
	get("/config/replicate", h.replicateConfig)
	get("/config/cluster-version", h.clusterVersion)
	get("/stores", h.stores)
	get("/store/{id}", h.storeByID)
	get("/gc/safepoint", h.gcSafePoints)

	get("/config/region-label/rules", h.labelRules)
	get("/config/region-label/rules/ids", h.labelRulesByIDs)
	get("/config/region-label/rule/{id}", h.labelRule)
	mux.HandleFunc("POST "+apiPrefix+"/config/region-label/rule", h.setLabelRule)
	mux.HandleFunc("DELETE "+apiPrefix+"/config/region-label/rule/{id}", h.deleteLabelRule)
	mux.HandleFunc("PATCH "+apiPrefix+"/config/region-label/rules", h.patchLabelRules)

	get("/config/placement-rule", h.bundles)
	get("/config/placement-rule/{group}", h.bundle)
	mux.HandleFunc("POST "+apiPrefix+"/config/placement-rule", h.setBundles)
	mux.HandleFunc("DELETE "+apiPrefix+"/config/placement-rule/{group}", h.deleteBundle)
	get("/config/rules", h.allRules)
	get("/config/rules/group/{group}", h.groupRules)
	get("/config/rule/{group}/{id}", h.rule)
	mux.HandleFunc("POST "+apiPrefix+"/config/rule", h.setRule)
	mux.HandleFunc("DELETE "+apiPrefix+"/config/rule/{group}/{id}", h.deleteRule)
	get("/config/rule_groups", h.ruleGroups)
	get("/config/rule_group/{id}", h.ruleGroup)
	mux.HandleFunc("POST "+apiPrefix+"/config/rule_group", h.setRuleGroup)
	mux.HandleFunc("DELETE "+apiPrefix+"/config/rule_group/{id}", h.deleteRuleGroup)

	mux.HandleFunc("/pd/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Errorf("%s %s is not served by the playground's PD", r.Method, r.URL.Path))
	})
	return map[string]http.Handler{"/pd/": mux}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, err.Error())
}

func readJSON(r *http.Request, v any) error {
	b, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read request body: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode request body: %w", err)
	}
	return nil
}

// --- cluster information ---

func (h *httpAPI) version(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"version": "v" + store.StoreVersion})
}

func (h *httpAPI) status(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, pdhttp.State{Version: "v" + store.StoreVersion, StartTimestamp: h.s.started.Unix()})
}

func (h *httpAPI) health(w http.ResponseWriter, _ *http.Request) {
	m := h.s.member()
	writeJSON(w, http.StatusOK, []pdhttp.Health{{
		Name: m.GetName(), MemberID: m.GetMemberId(), ClientUrls: m.GetClientUrls(), Health: true,
	}})
}

func (h *httpAPI) members(w http.ResponseWriter, _ *http.Request) {
	m := h.s.member()
	writeJSON(w, http.StatusOK, pdhttp.MembersInfo{Header: h.s.header(), Members: []*pdpb.Member{m}, Leader: m, EtcdLeader: m})
}

func (h *httpAPI) leader(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, h.s.member())
}

func (h *httpAPI) cluster(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, &metapb.Cluster{Id: h.s.clusterID, MaxPeerCount: 1})
}

func (h *httpAPI) clusterStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, pdhttp.ClusterState{RaftBootstrapTime: h.s.started, IsInitialized: true})
}

func (h *httpAPI) replicateConfig(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"max-replicas":                 1,
		"location-labels":              "",
		"strictly-match-label":         "false",
		"enable-placement-rules":       "true",
		"enable-placement-rules-cache": "false",
		"isolation-level":              "",
	})
}

func (h *httpAPI) clusterVersion(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, store.StoreVersion)
}

func (h *httpAPI) storeInfo(st *metapb.Store) pdhttp.StoreInfo {
	labels := make([]pdhttp.StoreLabel, 0, len(st.GetLabels()))
	for _, l := range st.GetLabels() {
		labels = append(labels, pdhttp.StoreLabel{Key: l.GetKey(), Value: l.GetValue()})
	}
	now := time.Now()
	return pdhttp.StoreInfo{
		Store: pdhttp.MetaStore{
			ID:             int64(st.GetId()),
			Address:        st.GetAddress(),
			State:          int64(st.GetState()),
			StateName:      st.GetState().String(),
			Version:        st.GetVersion(),
			Labels:         labels,
			StatusAddress:  st.GetStatusAddress(),
			StartTimestamp: st.GetStartTimestamp(),
		},
		Status: pdhttp.StoreStatus{
			LeaderWeight:    1,
			RegionWeight:    1,
			StartTS:         h.s.started,
			LastHeartbeatTS: now,
			Uptime:          now.Sub(h.s.started).Round(time.Second).String(),
		},
	}
}

func (h *httpAPI) stores(w http.ResponseWriter, _ *http.Request) {
	all := h.s.stores()
	out := pdhttp.StoresInfo{Count: len(all)}
	for _, st := range all {
		out.Stores = append(out.Stores, h.storeInfo(st))
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *httpAPI) storeByID(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("bad store id %q", r.PathValue("id")))
		return
	}
	for _, st := range h.s.stores() {
		if st.GetId() == id {
			writeJSON(w, http.StatusOK, h.storeInfo(st))
			return
		}
	}
	writeError(w, http.StatusNotFound, fmt.Errorf("store %d not found", id))
}

// gcSafePoints is pd-ctl's service-gc-safepoint view.
func (h *httpAPI) gcSafePoints(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	sp, err := h.s.loadGCSafePoint(ctx)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	res, err := h.s.kv.Get(ctx, h.s.serviceSafePointPrefix(), clientv3.WithPrefix())
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	ssps := make([]serviceSafePoint, 0, len(res.Kvs))
	minSP := uint64(math.MaxUint64)
	for _, kv := range res.Kvs {
		var ssp serviceSafePoint
		if err := json.Unmarshal(kv.Value, &ssp); err != nil {
			writeError(w, http.StatusInternalServerError, fmt.Errorf("service safepoint %s: %w", kv.Key, err))
			return
		}
		ssps = append(ssps, ssp)
		minSP = min(minSP, ssp.SafePoint)
	}
	out := map[string]any{"service_gc_safe_points": ssps, "gc_safe_point": sp}
	if len(ssps) > 0 {
		out["min_service_gc_safe_point"] = minSP
	}
	writeJSON(w, http.StatusOK, out)
}

// --- storage helpers ---

func (h *httpAPI) list(ctx context.Context, prefix string, each func(key string, val []byte) error) error {
	res, err := h.s.kv.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("load %s: %w", prefix, err)
	}
	for _, kv := range res.Kvs {
		if err := each(string(kv.Key), kv.Value); err != nil {
			return err
		}
	}
	return nil
}

// load reads one JSON value; it reports false when the key is absent.
func (h *httpAPI) load(ctx context.Context, key string, v any) (bool, error) {
	res, err := h.s.kv.Get(ctx, key)
	if err != nil {
		return false, fmt.Errorf("load %s: %w", key, err)
	}
	if len(res.Kvs) == 0 {
		return false, nil
	}
	if err := json.Unmarshal(res.Kvs[0].Value, v); err != nil {
		return false, fmt.Errorf("decode %s: %w", key, err)
	}
	return true, nil
}

// --- region label rules ---

func (h *httpAPI) loadLabelRules(ctx context.Context) ([]*pdhttp.LabelRule, error) {
	var rules []*pdhttp.LabelRule
	err := h.list(ctx, h.labelRuleKey(""), func(key string, val []byte) error {
		var r pdhttp.LabelRule
		if err := json.Unmarshal(val, &r); err != nil {
			return fmt.Errorf("decode %s: %w", key, err)
		}
		rules = append(rules, &r)
		return nil
	})
	return rules, err
}

func (h *httpAPI) labelRules(w http.ResponseWriter, r *http.Request) {
	rules, err := h.loadLabelRules(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, nonNil(rules))
}

// labelRulesByIDs answers the rules that exist among the ids in the body (a GET
// with a JSON body, as PD's client sends it); unknown ids are skipped.
func (h *httpAPI) labelRulesByIDs(w http.ResponseWriter, r *http.Request) {
	var ids []string
	if err := readJSON(r, &ids); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	out := make([]*pdhttp.LabelRule, 0, len(ids))
	for _, id := range ids {
		var rule pdhttp.LabelRule
		ok, err := h.load(r.Context(), h.labelRuleKey(id), &rule)
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		if ok {
			out = append(out, &rule)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *httpAPI) labelRule(w http.ResponseWriter, r *http.Request) {
	var rule pdhttp.LabelRule
	ok, err := h.load(r.Context(), h.labelRuleKey(r.PathValue("id")), &rule)
	switch {
	case err != nil:
		writeError(w, http.StatusInternalServerError, err)
	case !ok:
		writeError(w, http.StatusNotFound, errors.New("rule not found"))
	default:
		writeJSON(w, http.StatusOK, &rule)
	}
}

func checkLabelRule(r *pdhttp.LabelRule) error {
	if r == nil || r.ID == "" {
		return errors.New("label rule id is required")
	}
	if r.RuleType != "" && r.RuleType != "key-range" {
		return fmt.Errorf("invalid label rule type %q", r.RuleType)
	}
	return nil
}

func (h *httpAPI) setLabelRule(w http.ResponseWriter, r *http.Request) {
	var rule pdhttp.LabelRule
	if err := readJSON(r, &rule); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if err := checkLabelRule(&rule); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.putJSON(r.Context(), h.labelRuleKey(rule.ID), &rule); err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, "Update region label rule successfully.")
}

func (h *httpAPI) deleteLabelRule(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	res, err := h.s.kv.Delete(r.Context(), h.labelRuleKey(r.PathValue("id")))
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	if res.Deleted == 0 {
		writeError(w, http.StatusNotFound, errors.New("rule not found"))
		return
	}
	writeJSON(w, http.StatusOK, "Delete region label rule successfully.")
}

// patchLabelRules deletes, then sets, in one etcd transaction.
func (h *httpAPI) patchLabelRules(w http.ResponseWriter, r *http.Request) {
	var patch pdhttp.LabelRulePatch
	if err := readJSON(r, &patch); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	ops := make([]clientv3.Op, 0, len(patch.DeleteRules)+len(patch.SetRules))
	for _, id := range patch.DeleteRules {
		ops = append(ops, clientv3.OpDelete(h.labelRuleKey(id)))
	}
	for _, rule := range patch.SetRules {
		if err := checkLabelRule(rule); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		b, err := json.Marshal(rule)
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		ops = append(ops, clientv3.OpPut(h.labelRuleKey(rule.ID), string(b)))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.txn(r.Context(), ops); err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, "Patch region label rules successfully.")
}

// txn applies ops in order, in as few transactions as etcd allows: a key deleted
// and set in the same patch needs two (etcd refuses duplicate keys in one), and
// one transaction holds at most maxTxnOps operations. A patch is therefore not
// atomic when it is that large; nothing in the playground reads the rules
// concurrently in a way that would notice.
func (h *httpAPI) txn(ctx context.Context, ops []clientv3.Op) error {
	seen := make(map[string]bool, len(ops))
	var first, second []clientv3.Op
	for _, op := range ops {
		k := string(op.KeyBytes())
		if seen[k] {
			second = append(second, op)
			continue
		}
		seen[k] = true
		first = append(first, op)
	}
	return h.commit(ctx, first, second)
}

// commit applies each batch in transactions of at most maxTxnOps operations.
func (h *httpAPI) commit(ctx context.Context, batches ...[]clientv3.Op) error {
	for _, batch := range batches {
		for len(batch) > 0 {
			n := min(len(batch), maxTxnOps)
			if _, err := h.s.kv.Txn(ctx).Then(batch[:n]...).Commit(); err != nil {
				return fmt.Errorf("apply rule changes: %w", err)
			}
			batch = batch[n:]
		}
	}
	return nil
}

func (h *httpAPI) putJSON(ctx context.Context, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	if _, err := h.s.kv.Put(ctx, key, string(b)); err != nil {
		return fmt.Errorf("save %s: %w", key, err)
	}
	return nil
}

// --- placement rules ---

// rule is a placement rule as JSON. The server keeps rules as sent (PD's client
// type would re-encode the key fields); only group_id and id matter to it.
type rule map[string]any

func (r rule) str(field string) string {
	s, _ := r[field].(string)
	return s
}

// bundle is a placement group with its rules (PD's GroupBundle JSON).
type bundle struct {
	ID       string `json:"group_id"`
	Index    int    `json:"group_index"`
	Override bool   `json:"group_override"`
	Rules    []rule `json:"rules"`
}

// defaultRule is PD's built-in rule: every region has max-replicas voters (one,
// in the playground).
func defaultRule() rule {
	return rule{"group_id": "pd", "id": "default", "start_key": "", "end_key": "", "role": "voter", "count": 1}
}

func (h *httpAPI) ruleKey(group, id string) string { return h.rulePrefix(group) + id }

// initRules stores PD's default rule on first start.
func (h *httpAPI) initRules(ctx context.Context) error {
	res, err := h.s.kv.Get(ctx, h.rulePrefix(""), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("pdserver: load placement rules: %w", err)
	}
	if res.Count > 0 {
		return nil
	}
	r := defaultRule()
	if err := h.putJSON(ctx, h.ruleKey(r.str("group_id"), r.str("id")), r); err != nil {
		return fmt.Errorf("pdserver: %w", err)
	}
	return nil
}

func (h *httpAPI) loadRules(ctx context.Context, group string) ([]rule, error) {
	var rules []rule
	err := h.list(ctx, h.rulePrefix(group), func(key string, val []byte) error {
		var r rule
		if err := json.Unmarshal(val, &r); err != nil {
			return fmt.Errorf("decode %s: %w", key, err)
		}
		rules = append(rules, r)
		return nil
	})
	return rules, err
}

func (h *httpAPI) loadGroup(ctx context.Context, id string) (*pdhttp.RuleGroup, error) {
	g := &pdhttp.RuleGroup{ID: id}
	if _, err := h.load(ctx, h.ruleGroupKey(id), g); err != nil {
		return nil, err
	}
	return g, nil
}

// loadBundles groups the rules by group id, with each group's settings.
func (h *httpAPI) loadBundles(ctx context.Context) ([]*bundle, error) {
	rules, err := h.loadRules(ctx, "")
	if err != nil {
		return nil, err
	}
	groups := map[string]*bundle{}
	var order []string
	add := func(id string) (*bundle, error) {
		if b, ok := groups[id]; ok {
			return b, nil
		}
		g, err := h.loadGroup(ctx, id)
		if err != nil {
			return nil, err
		}
		b := &bundle{ID: id, Index: g.Index, Override: g.Override}
		groups[id] = b
		order = append(order, id)
		return b, nil
	}
	for _, r := range rules {
		b, err := add(r.str("group_id"))
		if err != nil {
			return nil, err
		}
		b.Rules = append(b.Rules, r)
	}
	// Groups configured without rules are part of the answer too.
	err = h.list(ctx, h.ruleGroupKey(""), func(key string, _ []byte) error {
		_, err := add(strings.TrimPrefix(key, h.ruleGroupKey("")))
		return err
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(order)
	out := make([]*bundle, 0, len(order))
	for _, id := range order {
		out = append(out, groups[id])
	}
	return out, nil
}

func (h *httpAPI) bundles(w http.ResponseWriter, r *http.Request) {
	out, err := h.loadBundles(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *httpAPI) bundle(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("group")
	g, err := h.loadGroup(r.Context(), id)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	rules, err := h.loadRules(r.Context(), id)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, &bundle{ID: id, Index: g.Index, Override: g.Override, Rules: rules})
}

// bundleOps replaces one group: its rules and settings go, the bundle's come. A
// bundle without rules just removes the group, as in PD.
func (h *httpAPI) bundleOps(b *bundle) ([]clientv3.Op, error) {
	if b.ID == "" {
		return nil, errors.New("group id is required")
	}
	ops := []clientv3.Op{
		clientv3.OpDelete(h.rulePrefix(b.ID), clientv3.WithPrefix()),
		clientv3.OpDelete(h.ruleGroupKey(b.ID)),
	}
	if len(b.Rules) == 0 {
		return ops, nil
	}
	if b.Index != 0 || b.Override {
		g, err := json.Marshal(&pdhttp.RuleGroup{ID: b.ID, Index: b.Index, Override: b.Override})
		if err != nil {
			return nil, err
		}
		ops = append(ops, clientv3.OpPut(h.ruleGroupKey(b.ID), string(g)))
	}
	for _, r := range b.Rules {
		if r == nil || r.str("id") == "" {
			return nil, fmt.Errorf("rule in group %s without id", b.ID)
		}
		r["group_id"] = b.ID
		v, err := json.Marshal(r)
		if err != nil {
			return nil, err
		}
		ops = append(ops, clientv3.OpPut(h.ruleKey(b.ID, r.str("id")), string(v)))
	}
	return ops, nil
}

// setBundles sets the given groups; without partial=true it replaces all groups.
func (h *httpAPI) setBundles(w http.ResponseWriter, r *http.Request) {
	var in []*bundle
	if err := readJSON(r, &in); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	partial := r.URL.Query().Get("partial") == "true"
	h.mu.Lock()
	defer h.mu.Unlock()
	var ops []clientv3.Op
	if !partial {
		ops = append(ops,
			clientv3.OpDelete(h.rulePrefix(""), clientv3.WithPrefix()),
			clientv3.OpDelete(h.ruleGroupKey(""), clientv3.WithPrefix()))
	}
	for _, b := range in {
		if b == nil {
			writeError(w, http.StatusBadRequest, errors.New("null bundle"))
			return
		}
		bops, err := h.bundleOps(b)
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		if !partial {
			bops = bops[2:] // everything was deleted already
		}
		ops = append(ops, bops...)
	}
	if err := h.txnOrdered(r.Context(), ops); err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, "Update rules and groups successfully.")
}

// txnOrdered applies deletes, then puts (etcd does not allow a put and an
// overlapping range delete in the same transaction).
func (h *httpAPI) txnOrdered(ctx context.Context, ops []clientv3.Op) error {
	var dels, puts []clientv3.Op
	for _, op := range ops {
		if op.IsDelete() {
			dels = append(dels, op)
		} else {
			puts = append(puts, op)
		}
	}
	return h.commit(ctx, dels, puts)
}

func (h *httpAPI) deleteBundle(w http.ResponseWriter, r *http.Request) {
	ops, err := h.bundleOps(&bundle{ID: r.PathValue("group")})
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.txnOrdered(r.Context(), ops); err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, "Delete group and rules successfully.")
}

func (h *httpAPI) allRules(w http.ResponseWriter, r *http.Request) {
	rules, err := h.loadRules(r.Context(), "")
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, nonNil(rules))
}

func (h *httpAPI) groupRules(w http.ResponseWriter, r *http.Request) {
	rules, err := h.loadRules(r.Context(), r.PathValue("group"))
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, nonNil(rules))
}

func (h *httpAPI) rule(w http.ResponseWriter, r *http.Request) {
	var ru rule
	ok, err := h.load(r.Context(), h.ruleKey(r.PathValue("group"), r.PathValue("id")), &ru)
	switch {
	case err != nil:
		writeError(w, http.StatusInternalServerError, err)
	case !ok:
		writeJSON(w, http.StatusNotFound, nil)
	default:
		writeJSON(w, http.StatusOK, ru)
	}
}

func (h *httpAPI) setRule(w http.ResponseWriter, r *http.Request) {
	var ru rule
	if err := readJSON(r, &ru); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if ru.str("group_id") == "" || ru.str("id") == "" {
		writeError(w, http.StatusBadRequest, errors.New("rule group id and id are required"))
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.putJSON(r.Context(), h.ruleKey(ru.str("group_id"), ru.str("id")), ru); err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, "Update rule successfully.")
}

func (h *httpAPI) deleteRule(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, err := h.s.kv.Delete(r.Context(), h.ruleKey(r.PathValue("group"), r.PathValue("id"))); err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, "Delete rule successfully.")
}

func (h *httpAPI) ruleGroups(w http.ResponseWriter, r *http.Request) {
	bundles, err := h.loadBundles(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	out := make([]*pdhttp.RuleGroup, 0, len(bundles))
	for _, b := range bundles {
		out = append(out, &pdhttp.RuleGroup{ID: b.ID, Index: b.Index, Override: b.Override})
	}
	writeJSON(w, http.StatusOK, out)
}

// ruleGroup answers a group's settings; an unknown group has the defaults, as in
// PD (TiDB then sets TiFlash's group once).
func (h *httpAPI) ruleGroup(w http.ResponseWriter, r *http.Request) {
	g, err := h.loadGroup(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, g)
}

func (h *httpAPI) setRuleGroup(w http.ResponseWriter, r *http.Request) {
	var g pdhttp.RuleGroup
	if err := readJSON(r, &g); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if g.ID == "" {
		writeError(w, http.StatusBadRequest, errors.New("rule group id is required"))
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.putJSON(r.Context(), h.ruleGroupKey(g.ID), &g); err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, "Update rule group successfully.")
}

func (h *httpAPI) deleteRuleGroup(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, err := h.s.kv.Delete(r.Context(), h.ruleGroupKey(r.PathValue("id"))); err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, "Delete rule group successfully.")
}

// nonNil makes an empty list encode as [] (PD's answers), not null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
