package cdcemu_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pingcap/kvproto/pkg/cdcpb"
	"github.com/pingcap/kvproto/pkg/kvrpcpb"
	"github.com/pingcap/kvproto/pkg/metapb"
	"github.com/pingcap/kvproto/pkg/tikvpb"
	"github.com/pingcap/tidb/pkg/util/codec"
	"github.com/tidestream/tidestream/deploy/playground/cdcemu"
	"github.com/tidestream/tidestream/deploy/playground/checker"
	"github.com/tidestream/tidestream/deploy/playground/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// maxMsg lets the test client send and receive the multi-MiB messages of
// one large command, as the playground's KV port and TiCDC's client do.
const maxMsg = 64 << 20

type env struct {
	t   *testing.T
	st  *store.Store
	emu *cdcemu.Emulator
	kv  tikvpb.TikvClient
	cdc cdcpb.ChangeDataClient
	cc  *grpc.ClientConn
}

func newEnv(t *testing.T, interval time.Duration) *env {
	t.Helper()
	chk := checker.New()
	emu, err := cdcemu.New(cdcemu.Config{ResolvedTsInterval: interval, Tap: chk})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(store.Config{Dir: t.TempDir(), StoreAddr: lis.Addr().String(), WrapWriter: emu.WrapWriter})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Attach(cdcemu.StoreBackend(st)); err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(
		grpc.MaxRecvMsgSize(maxMsg), grpc.MaxSendMsgSize(maxMsg),
		grpc.ChainUnaryInterceptor(emu.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(emu.StreamInterceptor()),
	)
	tikvpb.RegisterTikvServer(srv, st.Server)
	emu.Register(srv)
	go func() { _ = srv.Serve(lis) }()
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { defer close(runDone); _ = emu.Run(ctx) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsg), grpc.MaxCallSendMsgSize(maxMsg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		cancel()
		<-runDone
		srv.Stop()
		if err := st.Close(); err != nil {
			t.Error(err)
		}
		if err := chk.Err(); err != nil {
			t.Errorf("protocol invariants: %v", err)
		}
	})
	return &env{t: t, st: st, emu: emu, kv: tikvpb.NewTikvClient(cc), cdc: cdcpb.NewChangeDataClient(cc), cc: cc}
}

func (e *env) ts() uint64 {
	p, l, err := e.st.PD.GetTS(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return uint64(p)<<18 | uint64(l)
}

func (e *env) region(key []byte) (*metapb.Region, *kvrpcpb.Context) {
	r, peer, _, _ := e.st.Regions.GetRegionByKey(codec.EncodeBytes(nil, key))
	if r == nil {
		e.t.Fatalf("no region for %q", key)
	}
	return r, &kvrpcpb.Context{RegionId: r.Id, RegionEpoch: r.RegionEpoch, Peer: peer}
}

type mut struct {
	key, val []byte
	del      bool
	lock     bool // Op_Lock: locked, not written (SELECT … FOR UPDATE)
}

func (e *env) prewrite(start uint64, muts []mut, opts func(*kvrpcpb.PrewriteRequest)) *kvrpcpb.PrewriteResponse {
	e.t.Helper()
	_, rc := e.region(muts[0].key)
	req := &kvrpcpb.PrewriteRequest{Context: rc, PrimaryLock: muts[0].key, StartVersion: start, LockTtl: 20000}
	for _, m := range muts {
		op := kvrpcpb.Op_Put
		switch {
		case m.del:
			op = kvrpcpb.Op_Del
		case m.lock:
			op = kvrpcpb.Op_Lock
		}
		req.Mutations = append(req.Mutations, &kvrpcpb.Mutation{Op: op, Key: m.key, Value: m.val})
	}
	if opts != nil {
		opts(req)
	}
	resp, err := e.kv.KvPrewrite(context.Background(), req)
	if err != nil || resp.RegionError != nil || len(resp.Errors) > 0 {
		e.t.Fatalf("prewrite: %v %v %v", err, resp.GetRegionError(), resp.GetErrors())
	}
	return resp
}

func (e *env) commit(start, commit uint64, keys ...[]byte) {
	e.t.Helper()
	_, rc := e.region(keys[0])
	resp, err := e.kv.KvCommit(context.Background(), &kvrpcpb.CommitRequest{Context: rc, StartVersion: start, CommitVersion: commit, Keys: keys})
	if err != nil || resp.RegionError != nil || resp.Error != nil {
		e.t.Fatalf("commit: %v %v %v", err, resp.GetRegionError(), resp.GetError())
	}
}

func (e *env) put(key, val string) uint64 {
	start := e.ts()
	e.prewrite(start, []mut{{key: []byte(key), val: []byte(val)}}, nil)
	c := e.ts()
	e.commit(start, c, []byte(key))
	return c
}

// feed is a test client stream that records everything received.
type feed struct {
	t      *testing.T
	stream cdcpb.ChangeData_EventFeedV2Client
	mu     sync.Mutex
	events []*cdcpb.Event
	rts    []*cdcpb.ResolvedTs
	err    error
	done   chan struct{}
	cancel context.CancelFunc
}

func (e *env) openFeed(features string) *feed {
	ctx, cancel := context.WithCancel(context.Background())
	if features != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "features", features)
	}
	s, err := e.cdc.EventFeedV2(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	f := &feed{t: e.t, stream: s, done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(f.done)
		for {
			ev, err := s.Recv()
			f.mu.Lock()
			if err != nil {
				f.err = err
				f.mu.Unlock()
				return
			}
			f.events = append(f.events, ev.Events...)
			if ev.ResolvedTs != nil {
				f.rts = append(f.rts, ev.ResolvedTs)
			}
			f.mu.Unlock()
		}
	}()
	e.t.Cleanup(cancel)
	return f
}

func (e *env) registerReq(r *metapb.Region, reqID, checkpoint uint64, start, end []byte) *cdcpb.ChangeDataRequest {
	req := &cdcpb.ChangeDataRequest{
		Header:       &cdcpb.Header{ClusterId: e.st.ClusterID, TicdcVersion: "8.5.0"},
		RegionId:     r.Id,
		RegionEpoch:  r.RegionEpoch,
		CheckpointTs: checkpoint,
		RequestId:    reqID,
		ExtraOp:      kvrpcpb.ExtraOp_ReadOldValue,
		Request:      &cdcpb.ChangeDataRequest_Register_{Register: &cdcpb.ChangeDataRequest_Register{}},
	}
	if start != nil {
		req.StartKey = codec.EncodeBytes(nil, start)
	}
	if end != nil {
		req.EndKey = codec.EncodeBytes(nil, end)
	}
	return req
}

func (f *feed) send(req *cdcpb.ChangeDataRequest) {
	if err := f.stream.Send(req); err != nil {
		f.t.Fatal(err)
	}
}

func (f *feed) rows() []*cdcpb.Event_Row {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*cdcpb.Event_Row
	for _, ev := range f.events {
		out = append(out, ev.GetEntries().GetEntries()...)
	}
	return out
}

func (f *feed) errors() []*cdcpb.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*cdcpb.Event
	for _, ev := range f.events {
		if ev.GetError() != nil {
			out = append(out, ev)
		}
	}
	return out
}

func (f *feed) maxResolved(region uint64) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var m uint64
	for _, rt := range f.rts {
		for _, r := range rt.Regions {
			if r == region {
				m = max(m, rt.Ts)
			}
		}
	}
	return m
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func find(rows []*cdcpb.Event_Row, tp cdcpb.Event_LogType, key string) []*cdcpb.Event_Row {
	var out []*cdcpb.Event_Row
	for _, r := range rows {
		if r.Type == tp && string(r.Key) == key {
			out = append(out, r)
		}
	}
	return out
}

func TestScanRealtimeAndResolvedTs(t *testing.T) {
	e := newEnv(t, 20*time.Millisecond)
	before := e.put("ta", "v0")
	checkpoint := e.ts()
	c1 := e.put("ta", "v1") // committed after the checkpoint: in the scan
	e.put("tb", "old")
	// An open lock from before the subscription: PREWRITE in the scan, and it
	// holds resolved ts at its start ts.
	lockStart := e.ts()
	e.prewrite(lockStart, []mut{{key: []byte("tc"), val: []byte("locked")}}, nil)

	r, _ := e.region([]byte("ta"))
	f := e.openFeed("stream-multiplexing")
	f.send(e.registerReq(r, 7, checkpoint, []byte("t"), []byte("u")))

	eventually(t, "INITIALIZED", func() bool { return len(find(f.rows(), cdcpb.Event_INITIALIZED, "")) == 1 })
	rows := f.rows()
	if got := find(rows, cdcpb.Event_COMMITTED, "ta"); len(got) != 1 || got[0].CommitTs != c1 || string(got[0].Value) != "v1" || string(got[0].OldValue) != "v0" {
		t.Fatalf("scan of ta (before=%d c1=%d): %v", before, c1, got)
	}
	if got := find(rows, cdcpb.Event_PREWRITE, "tc"); len(got) != 1 || got[0].StartTs != lockStart || string(got[0].Value) != "locked" {
		t.Fatalf("scan lock tc: %v", got)
	}
	eventually(t, "resolved ts", func() bool { return f.maxResolved(r.Id) > 0 })
	if rt := f.maxResolved(r.Id); rt > lockStart {
		t.Fatalf("resolved ts %d passed open lock %d", rt, lockStart)
	}

	// Realtime: commit the open lock, then an update with old value.
	c2 := e.ts()
	e.commit(lockStart, c2, []byte("tc"))
	c3 := e.put("tb", "new")
	eventually(t, "realtime rows", func() bool {
		return len(find(f.rows(), cdcpb.Event_COMMIT, "tc")) == 1 && len(find(f.rows(), cdcpb.Event_COMMIT, "tb")) == 1
	})
	rows = f.rows()
	if got := find(rows, cdcpb.Event_COMMIT, "tc")[0]; got.CommitTs != c2 || got.StartTs != lockStart {
		t.Fatalf("commit tc: %v", got)
	}
	pw := find(rows, cdcpb.Event_PREWRITE, "tb")
	if len(pw) != 1 || string(pw[0].Value) != "new" || string(pw[0].OldValue) != "old" {
		t.Fatalf("prewrite tb: %v", pw)
	}
	eventually(t, "resolved past commits", func() bool { return f.maxResolved(r.Id) >= c3 })
	// Rows outside the observed range never arrive.
	e.put("v-outside", "x")
	for _, row := range f.rows() {
		if string(row.Key) == "v-outside" {
			t.Fatal("row outside observed range delivered")
		}
	}
	// The receiver goroutine still appends to rts: read it under the lock.
	f.mu.Lock()
	firstReq := f.rts[0].RequestId
	f.mu.Unlock()
	if firstReq != 7 {
		t.Fatalf("multiplexed resolved ts carries request id %d", firstReq)
	}
}

func TestOnePCAndAsyncCommitHoldResolvedTs(t *testing.T) {
	e := newEnv(t, 10*time.Millisecond)
	e.put("tk", "v0")
	r, _ := e.region([]byte("tk"))
	f := e.openFeed("")
	f.send(e.registerReq(r, 1, e.ts(), nil, nil))
	eventually(t, "initialized", func() bool { return len(find(f.rows(), cdcpb.Event_INITIALIZED, "")) == 1 })

	start := e.ts()
	resp := e.prewrite(start, []mut{{key: []byte("tk"), val: []byte("v1")}}, func(r *kvrpcpb.PrewriteRequest) { r.TryOnePc = true })
	if resp.OnePcCommitTs == 0 {
		t.Fatal("1PC not taken")
	}
	eventually(t, "COMMITTED", func() bool { return len(find(f.rows(), cdcpb.Event_COMMITTED, "tk")) == 1 })
	got := find(f.rows(), cdcpb.Event_COMMITTED, "tk")[0]
	if got.CommitTs != resp.OnePcCommitTs || string(got.Value) != "v1" || string(got.OldValue) != "v0" {
		t.Fatalf("1PC row %v (commit %d)", got, resp.OnePcCommitTs)
	}

	// Async commit: the lock holds resolved ts until it commits.
	as := e.ts()
	ar := e.prewrite(as, []mut{{key: []byte("tk"), val: []byte("v2")}}, func(r *kvrpcpb.PrewriteRequest) {
		r.UseAsyncCommit = true
		r.Secondaries = nil
	})
	// A round between reading `as` and applying the prewrite may pass it
	// legitimately (the commit ts will be above that round's TSO); from the
	// apply on, the lock holds every round. The emulator's own value at
	// that point is the bound, not what the stream delivered so far.
	var held uint64
	for _, s := range e.emu.Snapshot().Subscriptions {
		held = max(held, s.AdvancedTo)
	}
	time.Sleep(100 * time.Millisecond) // several rounds
	if rt := f.maxResolved(r.Id); rt > max(as, held) {
		t.Fatalf("resolved %d passed async-commit lock %d (advanced to %d when it was applied)", rt, as, held)
	}
	e.commit(as, ar.MinCommitTs, []byte("tk"))
	eventually(t, "resolved past async commit", func() bool { return f.maxResolved(r.Id) >= ar.MinCommitTs })
}

func TestSplitDeregisterAndErrors(t *testing.T) {
	e := newEnv(t, 20*time.Millisecond)
	e.put("t1", "a")
	e.put("t5", "b")
	r, _ := e.region([]byte("t1"))
	f := e.openFeed("stream-multiplexing")
	f.send(e.registerReq(r, 3, 0, nil, nil))
	eventually(t, "initialized", func() bool { return len(find(f.rows(), cdcpb.Event_INITIALIZED, "")) == 1 })

	regions, err := e.emu.Split([]byte("t3"))
	if err != nil {
		t.Fatal(err)
	}
	if len(regions) != 2 {
		t.Fatalf("split gave %d regions", len(regions))
	}
	eventually(t, "epoch_not_match", func() bool { return len(f.errors()) == 1 })
	if en := f.errors()[0].GetError().GetEpochNotMatch(); en == nil || len(en.CurrentRegions) != 2 {
		t.Fatalf("split error: %v", f.errors()[0])
	}
	// Re-register both halves from 0: each scan has its own key.
	for i, nr := range regions {
		f.send(e.registerReq(nr, 10+uint64(i), 0, nil, nil))
	}
	eventually(t, "both initialized", func() bool { return len(find(f.rows(), cdcpb.Event_INITIALIZED, "")) == 3 })
	// Stale epoch at register.
	f.send(e.registerReq(r, 20, 0, nil, nil))
	eventually(t, "stale epoch error", func() bool { return len(f.errors()) == 2 })
	if f.errors()[1].GetError().GetEpochNotMatch() == nil {
		t.Fatalf("want epoch_not_match, got %v", f.errors()[1])
	}
	// Duplicate.
	f.send(e.registerReq(regions[1], 11, 0, nil, nil))
	eventually(t, "duplicate", func() bool { return len(f.errors()) == 3 })
	if f.errors()[2].GetError().GetDuplicateRequest() == nil {
		t.Fatalf("want duplicate_request, got %v", f.errors()[2])
	}
	// Deregister all of request 10 -> region_not_found.
	f.send(&cdcpb.ChangeDataRequest{RequestId: 10, Request: &cdcpb.ChangeDataRequest_Deregister_{Deregister: &cdcpb.ChangeDataRequest_Deregister{}}})
	eventually(t, "deregister", func() bool { return len(f.errors()) == 4 })
	if f.errors()[3].GetError().GetRegionNotFound() == nil || f.errors()[3].RequestId != 10 {
		t.Fatalf("deregister answer %v", f.errors()[3])
	}
	// Injected error on everything left.
	n, err := e.emu.InjectError("not_leader", 0, 0)
	if err != nil || n != 1 {
		t.Fatalf("inject: %d %v", n, err)
	}
	eventually(t, "not_leader", func() bool { return len(f.errors()) == 5 })
	if f.errors()[4].GetError().GetNotLeader() == nil {
		t.Fatalf("want not_leader, got %v", f.errors()[4])
	}
	// Server busy at register.
	if err := e.emu.InjectRegisterError("server_is_busy", 0, 1, 0); err != nil {
		t.Fatal(err)
	}
	f.send(e.registerReq(regions[0], 30, 0, nil, nil))
	eventually(t, "busy", func() bool { return len(f.errors()) == 6 })
	if f.errors()[5].GetError().GetServerIsBusy() == nil {
		t.Fatalf("want server_is_busy, got %v", f.errors()[5])
	}
}

func TestStreamLevelBehaviour(t *testing.T) {
	e := newEnv(t, 20*time.Millisecond)
	r, _ := e.region([]byte("t"))

	// Unknown feature -> UNIMPLEMENTED before anything else.
	f := e.openFeed("stream-multiplexing, bogus")
	<-f.done
	if status.Code(f.err) != codes.Unimplemented {
		t.Fatalf("unknown feature: %v", f.err)
	}

	// Cluster id mismatch with a new enough client.
	f = e.openFeed("")
	req := e.registerReq(r, 1, 0, nil, nil)
	req.Header.ClusterId++
	f.send(req)
	eventually(t, "cluster id mismatch", func() bool { return len(f.errors()) == 1 })
	if f.errors()[0].GetError().GetClusterIdMismatch() == nil {
		t.Fatalf("want cluster_id_mismatch, got %v", f.errors()[0])
	}
	// Half-close ends the stream cleanly.
	if err := f.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	<-f.done
	if !errors.Is(f.err, io.EOF) {
		t.Fatalf("half-close: %v", f.err)
	}

	// Fault: close all streams.
	f = e.openFeed("stream-multiplexing")
	f.send(e.registerReq(r, 1, 0, nil, nil))
	eventually(t, "initialized", func() bool { return len(find(f.rows(), cdcpb.Event_INITIALIZED, "")) == 1 })
	if n := e.emu.CloseStreams(codes.Unavailable, ""); n != 1 {
		t.Fatalf("closed %d streams", n)
	}
	<-f.done
	if status.Code(f.err) != codes.Unavailable {
		t.Fatalf("closed stream: %v", f.err)
	}
}
