package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tidestream/tidestream/e2e/harness"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// TestSorterThroughCDCServer subscribes to `cdc server`'s SorterService as an
// encoder would; the server's sorter pulls from its own PullerService against
// the playground, while a 200k-row transaction and concurrent small ones run
// on a table split over several regions. Every row arrives once, in (commit
// ts, start ts, key) order, never behind a resolved ts, and the resolved ts
// passes the last commit.
func TestSorterThroughCDCServer(t *testing.T) {
	pg := startPlayground(t)
	db := pg.db
	srv := startServer(t, "cdc-server", "", "http://"+pg.pdAddr)
	sorterAddr := srv.addr
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	for _, q := range []string{"CREATE DATABASE s", "CREATE TABLE s.t (id BIGINT PRIMARY KEY, v VARCHAR(32))",
		"SPLIT TABLE s.t BETWEEN (0) AND (2000000) REGIONS 4"} {
		_, err := db.ExecContext(ctx, q)
		require.NoError(t, err, q)
	}
	span := recordSpan(ctx, t, db, "s", "t")
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	exec := func(c *sql.Conn, q string, args ...any) {
		_, err := c.ExecContext(ctx, q, args...)
		require.NoError(t, err, q)
	}
	tso := func() uint64 { return currentTS(ctx, t, conn) }
	lastCommit := func(c *sql.Conn) uint64 {
		var info string
		require.NoError(t, c.QueryRowContext(ctx, "SELECT @@tidb_last_txn_info").Scan(&info))
		var v struct {
			CommitTs uint64 `json:"commit_ts"`
		}
		require.NoError(t, json.Unmarshal([]byte(info), &v), info)
		return v.CommitTs
	}

	from := tso()
	client := tidestreamv1.NewSorterServiceClient(harness.Dial(t, sorterAddr))
	stream, err := client.Subscribe(ctx, &tidestreamv1.SubscribeRequest{
		ChangefeedId: "e2e", PipelineId: 1, Epoch: 1, FromTs: from, Spans: []*tidestreamv1.Span{span},
	})
	require.NoError(t, err)

	// The encoder side reads concurrently with the writes, as it would.
	type received struct {
		events   []*tidestreamv1.RawKVEvent
		resolved uint64
		err      error
	}
	var (
		mu     sync.Mutex
		got    received
		target uint64 // read until the resolved ts reaches it; set once writes end
	)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		var last *tidestreamv1.RawKVEvent
		for {
			b, err := stream.Recv()
			mu.Lock()
			if err != nil {
				got.err = err
				mu.Unlock()
				return
			}
			for _, e := range b.Events {
				if e.CommitTs <= got.resolved {
					got.err = fmt.Errorf("event at %d after resolved ts %d", e.CommitTs, got.resolved)
				} else if last != nil && !less(last, e) {
					got.err = fmt.Errorf("out of order: (%d,%d,%x) then (%d,%d,%x)", last.CommitTs, last.StartTs, last.Key, e.CommitTs, e.StartTs, e.Key)
				}
				last = e
				got.events = append(got.events, e)
			}
			if b.ResolvedTs != 0 {
				if b.ResolvedTs <= got.resolved && got.err == nil {
					got.err = fmt.Errorf("resolved ts went from %d to %d", got.resolved, b.ResolvedTs)
				}
				got.resolved = b.ResolvedTs
			}
			stop := got.err != nil || (target != 0 && got.resolved >= target)
			mu.Unlock()
			if stop {
				return
			}
		}
	}()

	// Small transactions on their own connections while the big one runs.
	const bigRows, smallWriters, smallPerWriter = 200000, 4, 50
	smallDone := make(chan struct{})
	var smallErr error
	var smallOnce sync.Once
	var smallWG sync.WaitGroup
	for w := range smallWriters {
		smallWG.Go(func() {
			c, err := db.Conn(ctx)
			if err != nil {
				smallOnce.Do(func() { smallErr = err })
				return
			}
			defer c.Close()
			for i := range smallPerWriter {
				h := 1000000 + w*smallPerWriter + i
				if _, err := c.ExecContext(ctx, "INSERT INTO s.t VALUES (?, 'small')", h); err != nil {
					smallOnce.Do(func() { smallErr = err })
					return
				}
				select {
				case <-smallDone:
				default:
					time.Sleep(20 * time.Millisecond) // spread them over the big one
				}
			}
		})
	}

	began := time.Now()
	exec(conn, "BEGIN")
	const per = 1000
	for lo := 0; lo < bigRows; lo += per {
		var sb strings.Builder
		args := make([]any, 0, 2*per)
		for h := lo; h < lo+per; h++ {
			if h > lo {
				sb.WriteString(",")
			}
			sb.WriteString("(?, ?)")
			args = append(args, h, fmt.Sprintf("big-%d", h))
		}
		exec(conn, "INSERT INTO s.t VALUES "+sb.String(), args...)
	}
	exec(conn, "COMMIT")
	bigTs := lastCommit(conn)
	t.Logf("200k-row transaction committed at %d in %s", bigTs, time.Since(began).Round(time.Millisecond))
	close(smallDone)
	smallWG.Wait()
	require.NoError(t, smallErr)

	last := tso()
	mu.Lock()
	target = last
	mu.Unlock()
	select {
	case <-readDone:
	case <-ctx.Done():
		t.Fatalf("resolved ts did not reach %d: %v", last, ctx.Err())
	}
	mu.Lock()
	defer mu.Unlock()
	require.NoError(t, got.err)
	require.GreaterOrEqual(t, got.resolved, last, "resolved ts past the last commit")

	seen := make(map[string]bool, bigRows+smallWriters*smallPerWriter)
	bigSeen := 0
	for _, e := range got.events {
		require.Equal(t, tidestreamv1.OpType_OP_TYPE_PUT, e.Op)
		k := string(e.Key)
		require.False(t, seen[k], "row key %x delivered twice", e.Key)
		seen[k] = true
		if e.CommitTs == bigTs {
			bigSeen++
		}
	}
	require.Len(t, seen, bigRows+smallWriters*smallPerWriter, "every row once")
	require.Equal(t, bigRows, bigSeen, "the big transaction's rows all carry its commit ts")
	t.Logf("received %d rows in order; resolved ts %d >= last commit probe %d; %s after the big commit started",
		len(got.events), got.resolved, last, time.Since(began).Round(time.Millisecond))
}

func less(a, b *tidestreamv1.RawKVEvent) bool {
	if a.CommitTs != b.CommitTs {
		return a.CommitTs < b.CommitTs
	}
	if a.StartTs != b.StartTs {
		return a.StartTs < b.StartTs
	}
	return bytes.Compare(a.Key, b.Key) < 0
}
