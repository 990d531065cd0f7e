package upstream

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
	"github.com/tidestream/tidestream/coordinator/upstream/pdfake"
)

// fakeClock is a settable clock for the fake PD, so TTL expiry is tested
// without sleeping. It starts at the real time so TSOs stay plausible.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func startPD(t *testing.T, opts pdfake.Options) *pdfake.Server {
	t.Helper()
	srv, err := pdfake.Start(t.Context(), opts)
	require.NoError(t, err)
	t.Cleanup(srv.Stop)
	// Runs before Stop and after the test's Upstreams are closed (cleanups
	// run last-registered first): everything the pd client asked for while
	// the test ran must have been served.
	t.Cleanup(func() { require.Empty(t, srv.UnimplementedCalls()) })
	return srv
}

func open(t *testing.T, addrs ...string) *Upstream {
	t.Helper()
	u, err := Open(t.Context(), Config{PDAddrs: addrs})
	require.NoError(t, err)
	t.Cleanup(u.Close)
	return u
}

func TestOpenLearnsClusterID(t *testing.T) {
	srv := startPD(t, pdfake.Options{})
	for _, addr := range []string{srv.URL(), srv.Addr(), srv.URL() + "/"} {
		t.Run(addr, func(t *testing.T) {
			u := open(t, addr)
			require.Equal(t, srv.ClusterID(), u.ClusterID())
		})
	}
	// What the pd client needs from a PD to start (see pdfake's doc).
	require.Positive(t, srv.Calls("GetMembers"))
	require.Positive(t, srv.Calls("GetClusterInfo"))
}

func TestCurrentTSIsMonotonicAndNearWallClock(t *testing.T) {
	srv := startPD(t, pdfake.Options{})
	u := open(t, srv.URL())

	before := time.Now()
	var last uint64
	for range 200 {
		ts, err := u.CurrentTS(t.Context())
		require.NoError(t, err)
		require.Greater(t, ts, last)
		last = ts
	}
	require.WithinDuration(t, before, PhysicalTime(last), 2*time.Second)

	// Concurrent callers share batched TSO requests; all answers distinct.
	const workers, each = 8, 50
	var (
		mu  sync.Mutex
		all = map[uint64]bool{}
		wg  sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			var prev uint64
			for range each {
				ts, err := u.CurrentTS(t.Context())
				if !assertNoErr(t, err) {
					return
				}
				if ts <= prev || ts <= last {
					t.Errorf("ts %d not after %d (own) / %d (earlier)", ts, prev, last)
				}
				prev = ts
				mu.Lock()
				all[ts] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.Len(t, all, workers*each)
	require.Positive(t, srv.Calls("Tso"))

	// Let the client's once-a-second background calls (leader health
	// check, service-mode check) happen at least once, so the cleanup's
	// UnimplementedCalls check covers them too.
	require.Eventually(t, func() bool { return srv.Calls("grpc.health.v1.Health/Check") > 0 },
		5*time.Second, 50*time.Millisecond)
}

// assertNoErr is require.NoError for goroutines other than the test's own.
func assertNoErr(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Errorf("unexpected error: %v", err)
		return false
	}
	return true
}

func requireField(t *testing.T, err error, field, contains string) {
	t.Helper()
	require.Error(t, err)
	require.ErrorIs(t, err, cdcerr.ErrInvalidArgument)
	var fe *cdcerr.FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, field, fe.Field)
	require.Contains(t, err.Error(), contains)
}

func TestCheckStartTS(t *testing.T) {
	srv := startPD(t, pdfake.Options{})
	u := open(t, srv.URL())

	safePoint := ComposeTS(time.Now().Add(-10*time.Minute).UnixMilli(), 0)
	srv.SetGCSafePoint(safePoint)
	got, err := u.GCSafePoint(t.Context())
	require.NoError(t, err)
	require.Equal(t, safePoint, got)

	err = u.CheckStartTS(t.Context(), safePoint-1)
	requireField(t, err, "start-ts", "is earlier than or equal to the GC safepoint")
	require.Contains(t, err.Error(), fmt.Sprintf("start-ts %d is earlier", safePoint-1))

	// Equal is refused as well: see CheckStartTS.
	requireField(t, u.CheckStartTS(t.Context(), safePoint), "start-ts", "earlier than or equal")

	require.NoError(t, u.CheckStartTS(t.Context(), safePoint+1))
	now, err := u.CurrentTS(t.Context())
	require.NoError(t, err)
	require.NoError(t, u.CheckStartTS(t.Context(), now))

	future := ComposeTS(time.Now().Add(time.Hour).UnixMilli(), 0)
	requireField(t, u.CheckStartTS(t.Context(), future), "start-ts", "is later than the current PD timestamp")

	requireField(t, u.CheckStartTS(t.Context(), 0), "start-ts", "must not be 0")

	// The probe leaves nothing behind on PD.
	require.Equal(t, map[string]uint64{"gc_worker": safePoint}, srv.ServiceSafePoints())
}

func TestUpdateServiceGCSafePointKeepsMinimumAndHonoursTTL(t *testing.T) {
	clock := newFakeClock()
	srv := startPD(t, pdfake.Options{Now: clock.Now})
	u := open(t, srv.URL())
	ctx := t.Context()

	srv.SetGCSafePoint(1000) // TiDB's GC worker ran: gc_worker = 1000.

	// A service cannot go below the minimum; PD says what the minimum is.
	minSP, err := u.UpdateServiceGCSafePoint(ctx, "cdc-a", time.Minute, 500)
	require.NoError(t, err)
	require.EqualValues(t, 1000, minSP)
	require.NotContains(t, srv.ServiceSafePoints(), "cdc-a")

	// Above the minimum it is kept; the minimum stays gc_worker's.
	minSP, err = u.UpdateServiceGCSafePoint(ctx, "cdc-a", time.Second, 2000)
	require.NoError(t, err)
	require.EqualValues(t, 1000, minSP)
	minSP, err = u.UpdateServiceGCSafePoint(ctx, "cdc-b", 100*time.Millisecond, 2500) // rounds up to 1 s
	require.NoError(t, err)
	require.EqualValues(t, 1000, minSP)

	// GC wants to go to 3000 but the services hold it at 2000.
	srv.SetGCSafePoint(3000)
	require.EqualValues(t, 2000, srv.GCSafePoint())
	got, err := u.GCSafePoint(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 2000, got)

	// cdc-b renews with a long TTL; cdc-a stops renewing and expires.
	minSP, err = u.UpdateServiceGCSafePoint(ctx, "cdc-b", time.Hour, 2500)
	require.NoError(t, err)
	require.EqualValues(t, 2000, minSP)
	clock.Advance(1500 * time.Millisecond)
	got, err = u.GCSafePoint(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 2500, got)

	// TTL <= 0 removes: the minimum is gc_worker's again.
	minSP, err = u.UpdateServiceGCSafePoint(ctx, "cdc-b", 0, 0)
	require.NoError(t, err)
	require.EqualValues(t, 3000, minSP)
	require.Equal(t, map[string]uint64{"gc_worker": 3000}, srv.ServiceSafePoints())

	_, err = u.UpdateServiceGCSafePoint(ctx, "", time.Minute, 1)
	require.ErrorIs(t, err, cdcerr.ErrInvalidArgument)
}

func TestOpenPDDownIsUnavailableWithinDialTimeout(t *testing.T) {
	srv := startPD(t, pdfake.Options{})
	addr := srv.URL()
	srv.Stop() // nothing listens there any more

	const dialTimeout = time.Second
	start := time.Now()
	_, err := Open(t.Context(), Config{PDAddrs: []string{addr}, DialTimeout: dialTimeout})
	require.ErrorIs(t, err, cdcerr.ErrUnavailable)
	require.Less(t, time.Since(start), dialTimeout+2*time.Second)
	t.Log(err)

	// The caller's deadline bounds Open as well, with the same meaning.
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = Open(ctx, Config{PDAddrs: []string{addr}, DialTimeout: time.Minute})
	require.ErrorIs(t, err, cdcerr.ErrUnavailable)
	require.Less(t, time.Since(start), 2*time.Second)

	// A caller giving up is reported as such, not as an outage.
	ctx, cancel = context.WithCancel(t.Context())
	time.AfterFunc(200*time.Millisecond, cancel)
	_, err = Open(ctx, Config{PDAddrs: []string{addr}, DialTimeout: time.Minute})
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, cdcerr.ErrUnavailable)
}

func TestCallsAfterPDStopsAreUnavailable(t *testing.T) {
	srv := startPD(t, pdfake.Options{})
	u := open(t, srv.URL())
	_, err := u.CurrentTS(t.Context())
	require.NoError(t, err)
	srv.Stop()

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	start := time.Now()
	_, err = u.CurrentTS(ctx)
	require.ErrorIs(t, err, cdcerr.ErrUnavailable)
	t.Log(time.Since(start), err)
	_, err = u.GCSafePoint(ctx)
	require.ErrorIs(t, err, cdcerr.ErrUnavailable)
	t.Log(time.Since(start), err)
	// What a control-API handler would send back to `cdc cli`.
	require.Equal(t, codes.Unavailable, status.Code(cdcerr.ToStatus(err)))

	// Cancelled by the caller: not an outage.
	cancelled, cancelNow := context.WithCancel(t.Context())
	cancelNow()
	_, err = u.CurrentTS(cancelled)
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, cdcerr.ErrUnavailable)
}

// A TSO stream refused once or twice (PD's TSO not ready: a leader just
// elected, or a client's first stream racing its connection) is not an
// outage to report: `cdc cli changefeed resume --overwrite-checkpoint-ts
// now` failed with UNAVAILABLE on it under load.
func TestCurrentTSRidesOverATSOStreamThatIsNotReady(t *testing.T) {
	srv := startPD(t, pdfake.Options{})
	u := open(t, srv.URL())
	before := srv.Calls("Tso")
	srv.FailTSO(2)
	ts, err := u.CurrentTS(t.Context())
	require.NoError(t, err)
	require.NotZero(t, ts)
	// The client may have had a stream open already, refused at its next
	// request: at least two more were opened, the last one answered.
	require.GreaterOrEqual(t, srv.Calls("Tso")-before, 2, "streams opened after the refusals")
}

func TestTSOHelpers(t *testing.T) {
	at := time.Date(2026, 11, 23, 12, 0, 0, 123e6, time.UTC)
	ts := ComposeTS(at.UnixMilli(), 7)
	require.Equal(t, uint64(at.UnixMilli())<<18|7, ts)
	require.True(t, PhysicalTime(ts).Equal(at))
	require.Equal(t, PhysicalTime(ts), PhysicalTime(ComposeTS(at.UnixMilli(), 1<<18-1)))
}

func TestOpenRefusesAddressesOfTwoClusters(t *testing.T) {
	a := startPD(t, pdfake.Options{})
	b := startPD(t, pdfake.Options{})
	_, err := Open(t.Context(), Config{PDAddrs: []string{a.URL(), b.URL()}, DialTimeout: time.Second})
	// The pd client keeps retrying a cluster-id mismatch until the dial
	// budget ends and then reports only its last attempt, so this comes
	// back as "no answer" (its log names the mismatch). What matters is
	// that Open refuses instead of talking to two clusters.
	require.ErrorIs(t, err, cdcerr.ErrUnavailable)
}
