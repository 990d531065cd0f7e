package service

import (
	"context"
	"fmt"
	"testing"
	"time"

	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
	"github.com/tidestream/tidestream/puller/internal/pgharness"
	"github.com/tidestream/tidestream/puller/kvclient"
	"github.com/tikv/client-go/v2/util/codec"
)

// TestSubscribeAgainstPlayground runs the service over the real EventFeed
// client: rows inserted through SQL into two tables (one pipeline, two spans)
// arrive once each, and the pipeline's resolved ts passes the last commit
// only after its events.
func TestSubscribeAgainstPlayground(t *testing.T) {
	p := pgharness.Start(t, "--resolved-ts-interval", "200ms", "--check-invariants")
	db := p.DB()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var spans []*tidestreamv1.Span
	for _, name := range []string{"a", "b"} {
		if _, err := db.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS svc"); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, "CREATE TABLE svc."+name+" (id INT PRIMARY KEY, v VARCHAR(10))"); err != nil {
			t.Fatal(err)
		}
		var id int64
		if err := db.QueryRowContext(ctx, "SELECT TIDB_TABLE_ID FROM information_schema.tables WHERE table_schema = 'svc' AND table_name = ?", name).Scan(&id); err != nil {
			t.Fatal(err)
		}
		prefix := append([]byte{'t'}, codec.EncodeInt(nil, id)...)
		spans = append(spans, &tidestreamv1.Span{
			StartKey: codec.EncodeBytes(nil, append(append([]byte(nil), prefix...), "_r"...)),
			EndKey:   codec.EncodeBytes(nil, append(append([]byte(nil), prefix...), "_s"...)),
		})
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tso := func() uint64 {
		t.Helper()
		var ts uint64
		if _, err := conn.ExecContext(ctx, "BEGIN"); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRowContext(ctx, "SELECT @@tidb_current_ts").Scan(&ts); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
			t.Fatal(err)
		}
		return ts
	}
	from := tso()

	kc, err := kvclient.New(ctx, kvclient.Config{PDAddrs: []string{p.PDAddr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	c := startService(t, Config{Upstreams: Fixed(kc, nil)})
	st, err := c.Subscribe(ctx, &tidestreamv1.SubscribeRequest{ChangefeedId: "cf", PipelineId: 1, Epoch: 1, FromTs: from, Spans: spans})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if _, err := conn.ExecContext(ctx, fmt.Sprintf("INSERT INTO svc.%s VALUES (?, 'x')", []string{"a", "b"}[i%2]), i); err != nil {
			t.Fatal(err)
		}
	}
	last := tso()
	seen := map[string]int{}
	var resolved uint64
	for resolved < last {
		b, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range b.Events {
			if e.CommitTs <= resolved || e.CommitTs <= from {
				t.Fatalf("event at %d with resolved %d, from %d", e.CommitTs, resolved, from)
			}
			seen[fmt.Sprintf("%x@%d", e.Key, e.CommitTs)]++
		}
		if b.ResolvedTs > resolved {
			resolved = b.ResolvedTs
		}
	}
	if len(seen) != 100 {
		t.Fatalf("got %d distinct events, want 100", len(seen))
	}
	for k, n := range seen {
		if n != 1 {
			t.Fatalf("%s delivered %d times", k, n)
		}
	}
}
