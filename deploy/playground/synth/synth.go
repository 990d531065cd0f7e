// Package synth is the playground's synthetic change source for benchmarks:
// tables created through TiDB (so their schema and ids are real), whose row
// changes are generated TiDB-encoded and injected straight into the
// change-data streams at a target rate, bypassing SQL and storage.
//
// Generated rows are not stored: an incremental scan does not see them, so a
// subscriber that re-registers misses what was generated meanwhile. That is
// fine for throughput measurements and is the price of rates SQL cannot reach.
package synth

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pingcap/tidb/pkg/kv"
	"github.com/pingcap/tidb/pkg/tablecodec"
	"github.com/pingcap/tidb/pkg/types"
	"github.com/pingcap/tidb/pkg/util/rowcodec"
	"github.com/tidestream/tidestream/deploy/playground/cdcemu"
)

// Schema is what every synthetic table looks like (sysbench-like); rows are
// encoded for these column ids.
const Schema = "(id BIGINT PRIMARY KEY, k BIGINT NOT NULL, c VARCHAR(120) NOT NULL, pad VARCHAR(60) NOT NULL)"

// Database holds the synthetic tables t0..t{N-1}.
const Database = "synthetic"

// Config configures a Source.
type Config struct {
	Tables  int     // number of tables (>= 1)
	Regions int     // regions per table (>= 1), made with SPLIT TABLE
	Rate    float64 // target row changes per second across all tables (> 0)
	TxnRows int     // rows per generated transaction (>= 1)
	Keys    int64   // distinct ids per table; ids are updated once all exist
	Logger  *slog.Logger
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.Tables < 1:
		return fmt.Errorf("synth: --synthetic-tables must be >= 1, got %d", c.Tables)
	case c.Regions < 1:
		return fmt.Errorf("synth: --synthetic-regions must be >= 1, got %d", c.Regions)
	case c.Rate <= 0:
		return fmt.Errorf("synth: --synthetic-rate must be > 0, got %v", c.Rate)
	case c.TxnRows < 1:
		return fmt.Errorf("synth: --synthetic-txn-rows must be >= 1, got %d", c.TxnRows)
	case c.Keys < 1:
		return fmt.Errorf("synth: keys per table must be >= 1, got %d", c.Keys)
	}
	return nil
}

// Source generates the changes.
type Source struct {
	cfg    Config
	emu    *cdcemu.Emulator
	tables []int64 // table ids
	next   []int64 // per table: changes generated so far

	Generated atomic.Uint64 // rows generated
	Delivered atomic.Uint64 // rows that reached at least one subscription
}

// Setup creates the tables through db (a connection to the playground's SQL
// port) and returns a source ready to Run.
func Setup(ctx context.Context, db *sql.DB, emu *cdcemu.Emulator, cfg Config) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if _, err := db.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS "+Database); err != nil {
		return nil, fmt.Errorf("synth: create database: %w", err)
	}
	s := &Source{cfg: cfg, emu: emu, next: make([]int64, cfg.Tables)}
	// Created over several connections at once: TiDB merges concurrent
	// CREATE TABLE jobs into one DDL job (tidb_enable_fast_create_table, on
	// by default), where one at a time costs a DDL round each; 10k tables
	// one by one take many minutes.
	began := time.Now()
	var created atomic.Int64
	gctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	todo := make(chan int)
	for range min(setupConcurrency, cfg.Tables) {
		wg.Go(func() {
			for i := range todo {
				if err := createTable(gctx, db, cfg, i); err != nil {
					cancel(err)
					continue // drain
				}
				if n := created.Add(1); n%1000 == 0 && int(n) < cfg.Tables {
					cfg.Logger.Info("synthetic tables created", "tables", n, "of", cfg.Tables, "elapsed", time.Since(began).Round(time.Millisecond))
				}
			}
		})
	}
	for i := range cfg.Tables {
		if gctx.Err() != nil {
			break
		}
		todo <- i
	}
	close(todo)
	wg.Wait()
	if err := context.Cause(gctx); err != nil {
		return nil, err
	}
	// One query for every id, not one per table: each information_schema
	// read costs more as the schema grows.
	ids := make(map[string]int64, cfg.Tables)
	rows, err := db.QueryContext(ctx,
		"SELECT TABLE_NAME, TIDB_TABLE_ID FROM information_schema.tables WHERE table_schema = ?", Database)
	if err != nil {
		return nil, fmt.Errorf("synth: table ids: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var id int64
		if err := rows.Scan(&name, &id); err != nil {
			return nil, fmt.Errorf("synth: table ids: %w", err)
		}
		ids[strings.ToLower(name)] = id
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("synth: table ids: %w", err)
	}
	for i := range cfg.Tables {
		id, ok := ids[fmt.Sprintf("t%d", i)]
		if !ok {
			return nil, fmt.Errorf("synth: table %s.t%d not in information_schema after its creation", Database, i)
		}
		s.tables = append(s.tables, id)
	}
	cfg.Logger.Info("synthetic tables ready", "tables", cfg.Tables, "elapsed", time.Since(began).Round(time.Millisecond))
	return s, nil
}

// setupConcurrency is how many tables Setup creates at once.
const setupConcurrency = 16

// createTable creates synthetic table i and splits it into its regions.
func createTable(ctx context.Context, db *sql.DB, cfg Config, i int) error {
	name := fmt.Sprintf("%s.t%d", Database, i)
	if _, err := db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS "+name+" "+Schema); err != nil {
		return fmt.Errorf("synth: create %s: %w", name, err)
	}
	if cfg.Regions > 1 {
		q := fmt.Sprintf("SPLIT TABLE %s BETWEEN (0) AND (%d) REGIONS %d", name, cfg.Keys, cfg.Regions)
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("synth: split %s: %w", name, err)
		}
	}
	return nil
}

// TableIDs returns the ids of the synthetic tables, in order.
func (s *Source) TableIDs() []int64 { return append([]int64(nil), s.tables...) }

// Run generates changes until ctx ends, logging the sustained rate every
// report interval and returning the overall rate.
func (s *Source) Run(ctx context.Context, report time.Duration) (float64, error) {
	const tick = 10 * time.Millisecond
	start := time.Now()
	lastReport, lastGen := start, uint64(0)
	var enc rowcodec.Encoder
	var credit float64
	t := time.NewTicker(tick)
	defer t.Stop()
	table := 0
	prev := start
	for {
		select {
		case <-ctx.Done():
			el := time.Since(start).Seconds()
			if el == 0 {
				return 0, nil
			}
			return float64(s.Generated.Load()) / el, nil
		case now := <-t.C:
			credit += s.cfg.Rate * now.Sub(prev).Seconds()
			prev = now
			// Never accumulate more than a second of backlog: the printed rate
			// is what was sustained, not a burst after a stall.
			credit = min(credit, s.cfg.Rate)
			for credit >= 1 && ctx.Err() == nil {
				n := min(int(credit), s.cfg.TxnRows)
				rows, err := s.txn(&enc, table, n)
				if err != nil {
					return 0, err
				}
				table = (table + 1) % len(s.tables)
				d, err := s.emu.Synthesize(ctx, rows)
				if err != nil {
					if errors.Is(err, context.Canceled) {
						break
					}
					return 0, err
				}
				s.Generated.Add(uint64(len(rows)))
				s.Delivered.Add(uint64(d))
				credit -= float64(len(rows))
			}
			if report > 0 && now.Sub(lastReport) >= report {
				g := s.Generated.Load()
				s.cfg.Logger.Info("synthetic source",
					"rows_per_sec", fmt.Sprintf("%.0f", float64(g-lastGen)/now.Sub(lastReport).Seconds()),
					"target", s.cfg.Rate, "delivered_total", s.Delivered.Load())
				lastReport, lastGen = now, g
			}
		}
	}
}

// txn builds n row changes for one table: inserts until every id exists, then
// updates (each carrying the previous value as old value).
func (s *Source) txn(enc *rowcodec.Encoder, table, n int) ([]cdcemu.SynthRow, error) {
	rows := make([]cdcemu.SynthRow, 0, n)
	for range n {
		seq := s.next[table]
		s.next[table]++
		id := seq % s.cfg.Keys
		ver := seq / s.cfg.Keys
		val, err := encodeRow(enc, id, ver)
		if err != nil {
			return nil, err
		}
		r := cdcemu.SynthRow{Key: tablecodec.EncodeRowKeyWithHandle(s.tables[table], kv.IntHandle(id)), Value: val}
		if ver > 0 {
			if r.OldValue, err = encodeRow(enc, id, ver-1); err != nil {
				return nil, err
			}
		}
		rows = append(rows, r)
	}
	return rows, nil
}

var padding = strings.Repeat("x", 50)

// encodeRow encodes (k, c, pad) for row id at version ver in TiDB's row
// format v2 with the column ids of Schema (id is the handle, not stored).
func encodeRow(enc *rowcodec.Encoder, id, ver int64) ([]byte, error) {
	c := fmt.Sprintf("%020d-%020d-synthetic-row", id, ver)
	datums := []types.Datum{types.NewIntDatum(ver), types.NewStringDatum(c), types.NewStringDatum(padding)}
	b, err := enc.Encode(time.UTC, []int64{2, 3, 4}, datums, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("synth: encode row %d: %w", id, err)
	}
	return append([]byte(nil), b...), nil
}
