package kvclient

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/pingcap/kvproto/pkg/cdcpb"
	"github.com/tidestream/tidestream/puller/matcher"
)

// scriptedStream replays ChangeDataEvents, then ends.
type scriptedStream struct{ msgs []*cdcpb.ChangeDataEvent }

func (s *scriptedStream) Send(*cdcpb.ChangeDataRequest) error { return nil }
func (s *scriptedStream) Recv() (*cdcpb.ChangeDataEvent, error) {
	if len(s.msgs) == 0 {
		return nil, io.EOF
	}
	m := s.msgs[0]
	s.msgs = s.msgs[1:]
	return m, nil
}

// A message carrying rows and a resolved ts that covers them (TiKV sends
// them apart, spec §1.3, but nothing in the types forbids it) must deliver
// the rows, then the resolved ts. Applied the other way round — as both the
// receive loop and the subscription did — the rows are commits below a
// resolved ts already applied: a protocol error that fails the pipeline
// (issue 10, defect 5).
func TestRowsOfAMessageComeBeforeItsResolvedTs(t *testing.T) {
	entries := func(rows ...*cdcpb.Event_Row) *cdcpb.Event {
		return &cdcpb.Event{RegionId: 7, RequestId: 1, Event: &cdcpb.Event_Entries_{Entries: &cdcpb.Event_Entries{Entries: rows}}}
	}
	initialized := &cdcpb.ChangeDataEvent{Events: []*cdcpb.Event{entries(&cdcpb.Event_Row{Type: cdcpb.Event_INITIALIZED})}}
	mixed := &cdcpb.ChangeDataEvent{
		Events: []*cdcpb.Event{entries(&cdcpb.Event_Row{Type: cdcpb.Event_COMMITTED, OpType: cdcpb.Event_Row_PUT,
			Key: []byte("k"), Value: []byte("v"), StartTs: 140, CommitTs: 150})},
		ResolvedTs: &cdcpb.ResolvedTs{Regions: []uint64{7}, Ts: 200, RequestId: 1},
	}
	ctx := context.Background()
	for _, path := range []string{"receive loop", "one inbound"} {
		t.Run(path, func(t *testing.T) {
			s, w, rec := oneRegionSubscription(t)
			if path == "receive loop" {
				if err := w.recv(ctx, &scriptedStream{msgs: []*cdcpb.ChangeDataEvent{initialized, mixed}}); err != io.EOF {
					t.Fatalf("recv: %v", err)
				}
				close(s.in)
			} else {
				s.in <- inbound{w: w, events: initialized.Events}
				s.in <- inbound{w: w, events: mixed.Events, resolved: mixed.ResolvedTs}
				close(s.in)
			}
			for in := range s.in {
				if err := s.handle(ctx, in); err != nil {
					t.Fatalf("handle: %v", err)
				}
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if len(rec.violations) > 0 {
				t.Fatalf("sink contract: %v", rec.violations)
			}
			if len(rec.events) != 1 || rec.events[0].CommitTs != 150 || rec.resolved != 200 {
				t.Fatalf("sink got events %v and resolved ts %d, want the commit at 150 then 200", rec.events, rec.resolved)
			}
		})
	}
}

// oneRegionSubscription is a subscription from ts 100 with region 7
// registered on worker w, without any server.
func oneRegionSubscription(t *testing.T) (*subscription, *worker, *recorder) {
	t.Helper()
	met, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &Client{log: slog.New(slog.DiscardHandler), met: met, ctx: context.Background(), subs: make(map[uint64]*subscription)}
	rec := newRecorder()
	s := newSubscription(c, 1, Span{Start: []byte("a"), End: []byte("z")}, 100, rec)
	c.subs[s.id] = s
	w := &worker{st: &store{c: c}, key: slotKey{key: 0}}
	rs := &regionState{sub: s, id: 7, store: w.st, start: []byte("a"), end: []byte("z"), checkpoint: 100, m: matcher.New(100)}
	rs.sentOn.Store(w)
	s.regions[rs.id] = rs
	return s, w, rec
}
