package authz

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/testenv"
)

// benchEnv is the benchmark world on a SQLite store: 10,000 users,
// 1,000 nested groups, 100 machines, 100,000 accounts over 1,000 targets
// and 500 policies (plus the built-in one).
func benchEnv(b *testing.B) (*env, *world) {
	b.Helper()
	w := newWorld(7, 10000, 1000, 100, 1000, 100000, 500)
	w.res.noCount = true
	e := newEnv(b, testenv.SQLite(b), Config{})
	e.res = w.res
	e.az.resolver = w.res
	for name, text := range w.policies {
		e.put(b, name, text)
	}
	e.clk.Set(time.Date(2026, 1, 7, 10, 0, 0, 0, time.UTC))
	return e, w
}

// reportLatency reports the p50 and p99 of ds.
func reportLatency(b *testing.B, ds []time.Duration) {
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(ds[len(ds)*99/100].Nanoseconds()), "p99-ns")
}

// BenchmarkAuthorize measures Check, the evaluation Authorize does before
// it audits, over random requests.
func BenchmarkAuthorize(b *testing.B) {
	e, w := benchEnv(b)
	ctx := context.Background()
	reqs := make([]Request, 4096)
	for i := range reqs {
		reqs[i] = w.request(e.clk.Now())
	}
	var ds []time.Duration
	var allows int
	i := 0
	for b.Loop() {
		start := time.Now()
		d, err := e.az.Check(ctx, reqs[i%len(reqs)])
		ds = append(ds, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		if d.Allow {
			allows++
		}
		i++
	}
	reportLatency(b, ds)
	b.ReportMetric(float64(allows)/float64(i), "allow-ratio")
}

// BenchmarkAuthorizeAudited measures Authorize with its audit append to a
// real SQLite audit log (one fsync'd commit per decision, group-committed
// across the parallel callers).
func BenchmarkAuthorizeAudited(b *testing.B) {
	e, w := benchEnv(b)
	ctx := context.Background()
	reqs := make([]Request, 4096)
	for i := range reqs {
		reqs[i] = w.request(e.clk.Now())
	}
	var ds []time.Duration
	i := 0
	for b.Loop() {
		start := time.Now()
		_, err := e.az.Authorize(ctx, testOrigin, reqs[i%len(reqs)])
		ds = append(ds, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		i++
	}
	reportLatency(b, ds)
}

// BenchmarkAuthorizeUnindexed is BenchmarkAuthorize evaluating every
// policy, as without the index: the baseline the index is measured against.
func BenchmarkAuthorizeUnindexed(b *testing.B) {
	e, w := benchEnv(b)
	ctx := context.Background()
	reqs := make([]Request, 4096)
	for i := range reqs {
		reqs[i] = w.request(e.clk.Now())
	}
	s := e.az.set.Load()
	var ds []time.Duration
	i := 0
	for b.Loop() {
		start := time.Now()
		_, err := e.az.evaluate(ctx, reqs[i%len(reqs)], s, true)
		ds = append(ds, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		i++
	}
	reportLatency(b, ds)
}
