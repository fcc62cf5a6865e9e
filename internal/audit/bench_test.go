package audit

import (
	"context"
	"database/sql"
	"os"
	"strconv"
	"testing"

	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

// BenchmarkAppend measures durable sequential appends: each Append waits for
// its own commit (one fsync on SQLite).
func BenchmarkAppend(b *testing.B) {
	for _, be := range testenv.Backends() {
		b.Run(be.Name, func(b *testing.B) {
			l := newLog(b, be.Open(b), Config{})
			ev := sampleEvent(1)
			ctx := context.Background()
			b.ResetTimer()
			for b.Loop() {
				if _, err := l.Append(ctx, ev); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkAppendParallel measures group commit: many goroutines append at
// once and share transactions.
func BenchmarkAppendParallel(b *testing.B) {
	for _, be := range testenv.Backends() {
		b.Run(be.Name, func(b *testing.B) {
			l := newLog(b, be.Open(b), Config{})
			ctx := context.Background()
			b.SetParallelism(32) // 32 × GOMAXPROCS concurrent callers
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ev := sampleEvent(2)
				for pb.Next() {
					if _, err := l.Append(ctx, ev); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkVerify1M times Verify over a valid chain of 1,000,000 events when
// WARDER_BENCH_VERIFY_EVENTS=1000000 (default 20000, to keep plain runs
// quick). The chain is bulk-loaded once per sub-benchmark through the same
// insert path as Append, with real hashes that Verify recomputes.
func BenchmarkVerify1M(b *testing.B) {
	n := verifyBenchEvents(b)
	for _, be := range testenv.Backends() {
		b.Run(be.Name, func(b *testing.B) {
			ctx := context.Background()
			db := be.Open(b)
			signer := newTestSigner(b)
			l := newLog(b, db, Config{Signer: signer})
			bulkLoad(b, db, n)
			if _, ok, err := l.Checkpoint(ctx); !ok || err != nil {
				b.Fatalf("Checkpoint: %v, %v", ok, err)
			}
			b.ResetTimer()
			for b.Loop() {
				rep, err := l.Verify(ctx, signer.pub())
				if err != nil || !rep.OK || rep.Events != int64(n) {
					b.Fatalf("Verify: %+v, %v", rep, err)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// verifyBenchEvents is the chain length for the verify benchmarks:
// $WARDER_BENCH_VERIFY_EVENTS, default 20000.
func verifyBenchEvents(b *testing.B) int {
	n := 20000
	if s := os.Getenv("WARDER_BENCH_VERIFY_EVENTS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			b.Fatalf("WARDER_BENCH_VERIFY_EVENTS=%q is not a positive count", s)
		}
		n = v
	}
	return n
}

// bulkLoad appends n valid chained events in transactions of 20000.
func bulkLoad(b *testing.B, db *store.DB, n int) {
	b.Helper()
	ctx := context.Background()
	const perTx = 20000
	prevRaw := make([]byte, 32)
	prev := GenesisHash
	t0 := int64(1_740_000_000_000_000)
	for seq := int64(1); seq <= int64(n); {
		evs := make([]Event, 0, perTx)
		for ; seq <= int64(n) && len(evs) < perTx; seq++ {
			ev := sampleEvent(int(seq))
			ev.Seq = seq
			ev.Time = store.FromMicros(t0 + seq*1000)
			ev.PrevHash = prev
			ev.Hash = chainHash(prevRaw, ev)
			prev = ev.Hash
			prevRaw, _ = decodeHash(prev)
			evs = append(evs, ev)
		}
		if err := db.InTx(ctx, func(tx *sql.Tx) error { return insertEvents(ctx, db.Kind(), tx, evs) }); err != nil {
			b.Fatal(err)
		}
	}
}
