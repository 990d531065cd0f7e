package feedclient_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pingcap/kvproto/pkg/cdcpb"
	"github.com/pingcap/kvproto/pkg/kvrpcpb"
	"github.com/pingcap/kvproto/pkg/tikvpb"
	"github.com/pingcap/tidb/pkg/kv"
	"github.com/pingcap/tidb/pkg/tablecodec"
	"github.com/pingcap/tidb/pkg/util/codec"
	"github.com/tidestream/tidestream/deploy/playground/cdcemu"
	"github.com/tidestream/tidestream/deploy/playground/checker"
	"github.com/tidestream/tidestream/deploy/playground/internal/feedclient"
	"github.com/tidestream/tidestream/deploy/playground/kvserver"
	"github.com/tidestream/tidestream/deploy/playground/pdserver"
	"github.com/tidestream/tidestream/deploy/playground/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// The tests run the client against an in-process playground: unistore with
// the change-data emulator on a real TiKV port, and PD on a real PD port. The
// client itself only sees the two ports.

const tableID = 100

func testLogger() *slog.Logger {
	if os.Getenv("FEEDCLIENT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

type env struct {
	t      *testing.T
	st     *store.Store
	emu    *cdcemu.Emulator
	kvs    *kvserver.Server
	pd     *pdserver.Server
	kv     tikvpb.TikvClient
	server *checker.Checker // sees the server's side of every stream

	mu    sync.Mutex
	model map[string][]byte     // committed value per key (nil: absent)
	want  map[string]wantChange // key/commit ts -> change expected
}

type wantChange struct {
	key           []byte
	start, commit uint64
	op            cdcpb.Event_Row_OpType
	value, old    []byte
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func newEnv(t *testing.T, interval time.Duration) *env {
	t.Helper()
	e := &env{t: t, model: make(map[string][]byte), want: make(map[string]wantChange)}
	e.server = checker.New()
	emu, err := cdcemu.New(cdcemu.Config{ResolvedTsInterval: interval, Tap: e.server, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	e.emu = emu
	root := t.TempDir()
	kvAddr, pdAddr := freeAddr(t), freeAddr(t)
	st, err := store.Open(store.Config{Dir: filepath.Join(root, "tikv"), StoreAddr: kvAddr, PDAddr: pdAddr, WrapWriter: emu.WrapWriter})
	if err != nil {
		t.Fatal(err)
	}
	e.st = st
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	if err := emu.Attach(cdcemu.StoreBackend(st)); err != nil {
		t.Fatal(err)
	}
	kvs, err := kvserver.Start(kvserver.Config{
		Addr: kvAddr, KV: st.Server, Register: []func(*grpc.Server){emu.Register},
		Unary: []grpc.UnaryServerInterceptor{emu.UnaryInterceptor()}, Stream: []grpc.StreamServerInterceptor{emu.StreamInterceptor()},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.kvs = kvs
	t.Cleanup(func() { kvs.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pd, err := pdserver.Start(ctx, pdserver.Config{Dir: filepath.Join(root, "pd"), ClientAddr: pdAddr, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	e.pd = pd
	t.Cleanup(func() { pd.Close() })
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = emu.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })
	cc, err := grpc.NewClient(kvAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	e.kv = tikvpb.NewTikvClient(cc)
	return e
}

func rowKey(h int64) []byte { return tablecodec.EncodeRowKeyWithHandle(tableID, kv.IntHandle(h)) }

func span() (start, end []byte) {
	p := tablecodec.GenTableRecordPrefix(tableID)
	return p, p.PrefixNext()
}

func (e *env) ts() uint64 {
	p, l, err := e.st.PD.GetTS(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return uint64(p)<<18 | uint64(l)
}

func (e *env) rpcCtx(key []byte) *kvrpcpb.Context {
	r, peer, _, _ := e.st.Regions.GetRegionByKey(codec.EncodeBytes(nil, key))
	if r == nil {
		e.t.Fatalf("no region for %x", key)
	}
	return &kvrpcpb.Context{RegionId: r.Id, RegionEpoch: r.RegionEpoch, Peer: peer}
}

type writeOpt int

const (
	twoPC writeOpt = iota
	onePC
	asyncCommit
	inProcess // 2PC straight into unistore, past the KV port (for when it is down)
)

func (e *env) prewrite(key []byte, start uint64, val []byte, opt writeOpt) *kvrpcpb.PrewriteResponse {
	e.t.Helper()
	m := &kvrpcpb.Mutation{Op: kvrpcpb.Op_Put, Key: key, Value: val}
	if val == nil {
		m.Op = kvrpcpb.Op_Del
	}
	req := &kvrpcpb.PrewriteRequest{Context: e.rpcCtx(key), PrimaryLock: key, StartVersion: start, LockTtl: 20000,
		Mutations: []*kvrpcpb.Mutation{m}, TryOnePc: opt == onePC, UseAsyncCommit: opt == asyncCommit}
	var resp *kvrpcpb.PrewriteResponse
	var err error
	if opt == inProcess {
		resp, err = e.st.Server.KvPrewrite(context.Background(), req)
	} else {
		resp, err = e.kv.KvPrewrite(context.Background(), req)
	}
	if err != nil || resp.RegionError != nil || len(resp.Errors) > 0 {
		e.t.Fatalf("prewrite %x: %v %v %v", key, err, resp.GetRegionError(), resp.GetErrors())
	}
	return resp
}

func (e *env) commit(key []byte, start, commit uint64, opt writeOpt) {
	e.t.Helper()
	req := &kvrpcpb.CommitRequest{Context: e.rpcCtx(key), StartVersion: start, CommitVersion: commit, Keys: [][]byte{key}}
	var resp *kvrpcpb.CommitResponse
	var err error
	if opt == inProcess {
		resp, err = e.st.Server.KvCommit(context.Background(), req)
	} else {
		resp, err = e.kv.KvCommit(context.Background(), req)
	}
	if err != nil || resp.RegionError != nil || resp.Error != nil {
		e.t.Fatalf("commit %x: %v %v %v", key, err, resp.GetRegionError(), resp.GetError())
	}
}

// write commits val (nil: delete) at key and records the change it must
// produce. It returns the commit ts.
func (e *env) write(key []byte, val []byte, opt writeOpt) uint64 {
	e.t.Helper()
	start := e.ts()
	resp := e.prewrite(key, start, val, opt)
	var commit uint64
	switch opt {
	case onePC:
		if resp.OnePcCommitTs == 0 {
			e.t.Fatal("1PC not taken")
		}
		commit = resp.OnePcCommitTs
	case asyncCommit:
		commit = resp.MinCommitTs
		e.commit(key, start, commit, opt)
	default:
		commit = e.ts()
		e.commit(key, start, commit, opt)
	}
	e.record(key, val, start, commit)
	return commit
}

// openLock prewrites val at key and returns a function committing it.
func (e *env) openLock(key []byte, val []byte) (start uint64, commit func() uint64) {
	start = e.ts()
	e.prewrite(key, start, val, twoPC)
	return start, func() uint64 {
		c := e.ts()
		e.commit(key, start, c, twoPC)
		e.record(key, val, start, c)
		return c
	}
}

func (e *env) rollback(key []byte, start uint64) {
	e.t.Helper()
	resp, err := e.kv.KvBatchRollback(context.Background(), &kvrpcpb.BatchRollbackRequest{Context: e.rpcCtx(key), StartVersion: start, Keys: [][]byte{key}})
	if err != nil || resp.RegionError != nil || resp.Error != nil {
		e.t.Fatalf("rollback %x: %v %v %v", key, err, resp.GetRegionError(), resp.GetError())
	}
}

func (e *env) record(key, val []byte, start, commit uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	op := cdcpb.Event_Row_PUT
	if val == nil {
		op = cdcpb.Event_Row_DELETE
	}
	e.want[fmt.Sprintf("%x@%d", key, commit)] = wantChange{key: key, start: start, commit: commit, op: op, value: val, old: e.model[string(key)]}
	e.model[string(key)] = val
}

// forget drops the expected changes at or below ts: they precede the
// client's checkpoint.
func (e *env) forget(ts uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for k, w := range e.want {
		if w.commit <= ts {
			delete(e.want, k)
		}
	}
}

// check compares what the client assembled (deduplicated) with what was
// written in its span, and checks both sides of the protocol were clean.
func (e *env) check(c *feedclient.Client, clientSide *checker.Checker) {
	e.t.Helper()
	start, end := span()
	e.mu.Lock()
	want := make(map[string]wantChange)
	for k, w := range e.want {
		if bytes.Compare(w.key, start) >= 0 && bytes.Compare(w.key, end) < 0 {
			want[k] = w
		}
	}
	e.mu.Unlock()
	var diffs []string
	for _, ch := range feedclient.Dedup(c.Changes()) {
		k := fmt.Sprintf("%x@%d", ch.Key, ch.CommitTS)
		w, ok := want[k]
		if !ok {
			diffs = append(diffs, "unexpected "+k)
			continue
		}
		delete(want, k)
		if w.start != ch.StartTS || w.op != ch.Op || !bytes.Equal(w.value, ch.Value) || !bytes.Equal(w.old, ch.OldValue) {
			diffs = append(diffs, fmt.Sprintf("%s: got start %d %v %q old %q, want start %d %v %q old %q",
				k, ch.StartTS, ch.Op, ch.Value, ch.OldValue, w.start, w.op, w.value, w.old))
		}
	}
	for k := range want {
		diffs = append(diffs, "missing "+k)
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		e.t.Errorf("%d differences:\n%s", len(diffs), strings.Join(diffs, "\n"))
	}
	if p := c.Problems(); len(p) > 0 {
		e.t.Errorf("client problems:\n%s", strings.Join(p, "\n"))
	}
	for name, chk := range map[string]*checker.Checker{"server": e.server, "client": clientSide} {
		if err := chk.Err(); err != nil {
			e.t.Errorf("%s-side checker: %v", name, err)
		}
	}
}

// runClient starts a client on the env's PD port with its taps feeding a
// fresh checker; the client stops at cleanup. It returns the client, the
// checker, and a channel with Run's result.
func (e *env) runClient(checkpoint uint64, multiplex bool) (*feedclient.Client, *checker.Checker, <-chan error) {
	e.t.Helper()
	chk := checker.New()
	start, end := span()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := feedclient.New(ctx, feedclient.Config{
		PDAddrs: []string{e.pd.Addr()}, Start: start, End: end, CheckpointTs: checkpoint, Multiplex: multiplex,
		OnRequest: chk.Request, OnEvent: chk.Event, OnStream: chk.SetMultiplexing, OnStreamEnd: chk.CloseConn,
		Logger: testLogger(),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		done <- c.Run(runCtx)
		close(finished)
	}()
	e.t.Cleanup(func() {
		stop()
		<-finished
		select {
		case err := <-done:
			if err != nil {
				e.t.Errorf("Run: %v", err)
			}
		default: // the test took the result
		}
		c.Close()
	})
	return c, chk, done
}

func waitResolved(t *testing.T, c *feedclient.Client, ts uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.WaitResolved(ctx, ts); err != nil {
		t.Fatal(err)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// writePessimistic commits val (nil: delete) at key the way TiDB's
// pessimistic transactions do: a pessimistic lock first, then a prewrite that
// converts it, committed in two phases or, with onePC, in one.
func (e *env) writePessimistic(key, val []byte, onePC bool) uint64 {
	e.t.Helper()
	start, forUpdate := e.ts(), e.ts()
	lr, err := e.kv.KvPessimisticLock(context.Background(), &kvrpcpb.PessimisticLockRequest{
		Context: e.rpcCtx(key), Mutations: []*kvrpcpb.Mutation{{Op: kvrpcpb.Op_PessimisticLock, Key: key}},
		PrimaryLock: key, StartVersion: start, ForUpdateTs: forUpdate, LockTtl: 20000,
	})
	if err != nil || lr.RegionError != nil || len(lr.Errors) > 0 {
		e.t.Fatalf("pessimistic lock %x: %v %v %v", key, err, lr.GetRegionError(), lr.GetErrors())
	}
	m := &kvrpcpb.Mutation{Op: kvrpcpb.Op_Put, Key: key, Value: val}
	if val == nil {
		m.Op = kvrpcpb.Op_Del
	}
	pr, err := e.kv.KvPrewrite(context.Background(), &kvrpcpb.PrewriteRequest{
		Context: e.rpcCtx(key), Mutations: []*kvrpcpb.Mutation{m}, PrimaryLock: key, StartVersion: start,
		ForUpdateTs: forUpdate, LockTtl: 20000, TryOnePc: onePC,
		PessimisticActions: []kvrpcpb.PrewriteRequest_PessimisticAction{kvrpcpb.PrewriteRequest_DO_PESSIMISTIC_CHECK},
	})
	if err != nil || pr.RegionError != nil || len(pr.Errors) > 0 {
		e.t.Fatalf("prewrite %x: %v %v %v", key, err, pr.GetRegionError(), pr.GetErrors())
	}
	commit := pr.OnePcCommitTs
	if onePC && commit == 0 {
		e.t.Fatal("1PC not taken")
	}
	if !onePC {
		commit = e.ts()
		e.commit(key, start, commit, twoPC)
	}
	e.record(key, val, start, commit)
	return commit
}
