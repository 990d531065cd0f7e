package control_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
	"github.com/tidestream/tidestream/coordinator/control"
)

// fakeSchema is an injected schema read: it records what it was asked and
// answers with tables or err.
type fakeSchema struct {
	tables []control.TableName
	err    error

	mu    sync.Mutex
	calls []schemaCall
}

type schemaCall struct {
	pd     []string
	ts     uint64
	filter control.TableFilter
}

func (f *fakeSchema) list(_ context.Context, pd []string, ts uint64, filter control.TableFilter) ([]control.TableName, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, schemaCall{pd: pd, ts: ts, filter: filter})
	return f.tables, f.err
}

func (f *fakeSchema) lastCall(t *testing.T) schemaCall {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	require.NotEmpty(t, f.calls, "the schema was never read")
	return f.calls[len(f.calls)-1]
}

// fakeUpstream is a PD that always answers: these tests are about the
// table check, and pdfake's pd client adds nothing to them but timing.
type fakeUpstream struct{}

const fakeNow = uint64(470937422440693761)

func (fakeUpstream) ClusterID() uint64                          { return 7 }
func (fakeUpstream) CurrentTS(context.Context) (uint64, error)  { return fakeNow, nil }
func (fakeUpstream) CheckStartTS(context.Context, uint64) error { return nil }
func (fakeUpstream) Close()                                     {}
func (fakeUpstream) UpdateServiceGCSafePoint(_ context.Context, _ string, _ time.Duration, ts uint64) (uint64, error) {
	return ts, nil
}

func openFake(context.Context, []string) (control.Upstream, error) { return fakeUpstream{}, nil }

var keyless = []control.TableName{{"test", "t_nokey"}, {"app", "log"}, {"test", "t_nokey"}}

func TestCreateRefusesIneligibleTables(t *testing.T) {
	f := &fakeSchema{tables: keyless}
	e := setupWith(t, f.list, openFake)
	req := seed("cf")
	req.ConfigToml = seedConf + "[filter]\nrules = ['test.*', 'app.*']\n"
	req.StartTs = 0
	_, err := e.cf.Create(e.ctx, req)
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	msg := status.Convert(err).Message()
	require.Contains(t, msg, "(app.log, test.t_nokey)", "sorted, schema.table, once each")
	require.Contains(t, msg, "ignore-ineligible-table")

	back := cdcerr.FromStatus(err)
	var ite *cdcerr.IneligibleTablesError
	require.ErrorAs(t, back, &ite)
	require.Equal(t, []string{"app.log", "test.t_nokey"}, ite.Tables)

	call := f.lastCall(t)
	require.Equal(t, []string{e.pdAddr}, call.pd)
	require.Equal(t, fakeNow, call.ts, "read at the start ts drawn from the upstream")
	require.Equal(t, []string{"test.*", "app.*"}, call.filter.Rules, "the changefeed's own filter")

	_, err = e.st.Get(e.ctx, "default", "cf")
	require.ErrorIs(t, err, cdcerr.ErrNotFound, "nothing stored for a refused create")
}

func TestCreateIgnoresIneligibleTablesWhenAsked(t *testing.T) {
	f := &fakeSchema{tables: keyless}
	e := setupWith(t, f.list, openFake)

	// As the CLI's --no-confirm or a "Y" at its prompt sends it.
	req := seed("by-flag")
	req.IgnoreIneligibleTable = true
	info, err := e.cf.Create(e.ctx, req)
	require.NoError(t, err)
	require.True(t, info.Config.IgnoreIneligibleTable)
	require.Equal(t, info.StartTs, f.lastCall(t).ts, "the list is read at the start ts")

	// As ignore-ineligible-table = true in the changefeed's TOML (a
	// top-level key, as in TiCDC's ReplicaConfig, not in [filter]).
	req = seed("by-toml")
	req.ConfigToml = "ignore-ineligible-table = true\n" + seedConf
	info, err = e.cf.Create(e.ctx, req)
	require.NoError(t, err)
	require.True(t, info.Config.IgnoreIneligibleTable)
}

func TestCreateFailsWhenTheSchemaCannotBeRead(t *testing.T) {
	f := &fakeSchema{err: errors.New("tikv: region unavailable")}
	e := setupWith(t, f.list, openFake)
	_, err := e.cf.Create(e.ctx, seed("cf"))
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	msg := status.Convert(err).Message()
	require.Contains(t, msg, e.pdAddr, "names the upstream")
	require.Contains(t, msg, "region unavailable", "keeps the cause")
	require.ErrorIs(t, cdcerr.FromStatus(err), cdcerr.ErrUnavailable, "retryable")
	_, err = e.st.Get(e.ctx, "default", "cf")
	require.ErrorIs(t, err, cdcerr.ErrNotFound)

	// With the tables ignored the list would only be logged: the create
	// goes on.
	req := seed("ignored")
	req.IgnoreIneligibleTable = true
	_, err = e.cf.Create(e.ctx, req)
	require.NoError(t, err)
}

func TestCreateChecksNothingForEligibleTables(t *testing.T) {
	f := &fakeSchema{}
	e := setupWith(t, f.list, openFake)
	info, err := e.cf.Create(e.ctx, seed("cf"))
	require.NoError(t, err)
	require.False(t, info.Config.IgnoreIneligibleTable)
	call := f.lastCall(t)
	require.Equal(t, info.StartTs, call.ts)
	require.False(t, call.filter.CaseSensitive)
}

// The read is bounded by the request: a schema read that would hang ends
// with the caller's deadline.
func TestCreateSchemaReadEndsWithTheRequest(t *testing.T) {
	e := setupWith(t, func(ctx context.Context, _ []string, _ uint64, _ control.TableFilter) ([]control.TableName, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}, openFake)
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Second)
	defer cancel()
	_, err := e.cf.Create(ctx, seed("cf"))
	require.Equal(t, codes.DeadlineExceeded, status.Code(err), "%v", err)
}
