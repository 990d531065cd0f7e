package registry_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/tidestream/tidestream/services/devstack/registry"
)

// BenchmarkRegister fills an empty registry with n subjects, each with one
// new schema (a table's key or value record, the scale test's shape),
// through the HTTP handler with sr.Client, and reports the mean cost of a
// registration (ns/reg) and the mean over the last tenth (ns/reg-last10%),
// which is flat when registration does not depend on how much is stored,
// and allocations per registration (allocs/reg), which the machine's load
// does not blur.
// "shared" registers one schema under every subject (the id-reuse path).
// "srfake" is plain srfake, what the registry stored in before: its
// registration compares with every stored schema, so it is run only at
// small sizes, and not with -short (1k alone takes a minute; 20k would
// take hours).
//
//	go test -run '^$' -bench BenchmarkRegister -benchtime 1x ./services/devstack/registry/
func BenchmarkRegister(b *testing.B) {
	ours := func() http.Handler {
		r, err := registry.New(registry.Config{})
		if err != nil {
			b.Fatal(err)
		}
		return r
	}
	plain := func() http.Handler { return srfake.NewRegistry().Handler() }
	for _, bc := range []struct {
		name   string
		h      func() http.Handler
		shared bool
		sizes  []int
	}{
		{"registry/distinct", ours, false, []int{1000, 20000}},
		{"registry/shared", ours, true, []int{1000, 20000}},
		{"srfake/distinct", plain, false, []int{500, 1000}},
	} {
		for _, n := range bc.sizes {
			b.Run(fmt.Sprintf("%s/n=%d", bc.name, n), func(b *testing.B) {
				if testing.Short() && bc.name == "srfake/distinct" {
					b.Skip("plain srfake is quadratic; run without -short")
				}
				benchRegister(b, bc.h, n, bc.shared)
			})
		}
	}
}

func benchRegister(b *testing.B, newHandler func() http.Handler, n int, shared bool) {
	ctx := context.Background()
	schemas := make([]sr.Schema, n)
	for i := range schemas {
		table := i / 2
		if shared {
			table = 0
		}
		schemas[i] = sr.Schema{Schema: fmt.Sprintf(`{"type":"record","name":"t%d","namespace":"db","fields":[`+
			`{"name":"id","type":"long"},{"name":"name","type":["null","string"],"default":null},`+
			`{"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}},`+
			`{"name":"created","type":{"type":"long","logicalType":"timestamp-micros"}},{"name":"k%d","type":"int"}]}`, table, i%2)}
	}
	var total, tail time.Duration
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		cl, err := sr.NewClient(sr.URLs("http://registry.invalid"), sr.HTTPClient(&http.Client{Transport: inProcess{newHandler()}}))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		for i, s := range schemas {
			if i == n-n/10 {
				tail -= time.Since(start)
			}
			subject := fmt.Sprintf("db.t%d-value", i/2)
			if i%2 == 0 {
				subject = fmt.Sprintf("db.t%d-key", i/2)
			}
			if _, err := cl.RegisterSchema(ctx, subject, s, -1, -1); err != nil {
				b.Fatal(err)
			}
		}
		total += time.Since(start)
		tail += time.Since(start)
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(total.Nanoseconds())/float64(b.N*n), "ns/reg")
	// Allocations do not move with the machine's load, unlike time.
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(b.N*n), "allocs/reg")
	b.ReportMetric(float64(tail.Nanoseconds())/float64(b.N*(n/10)), "ns/reg-last10%")
}

// inProcess sends a request to a handler without a listener, so the
// figures are the handler's and not loopback TCP's.
type inProcess struct{ h http.Handler }

func (t inProcess) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, req)
	return rec.Result(), nil
}
