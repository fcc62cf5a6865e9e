package audit

// Baselines for the audit benchmarks: the same rows written and read by
// the same database with none of the chain's work (no hashing, no chain
// lock, no head read). They are the physical limit each audit figure in
// docs/benchmarks.md is divided by.

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"

	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

const plainTable = `CREATE TABLE bench_plain (
	seq BIGINT PRIMARY KEY, time_us BIGINT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
	resource TEXT NOT NULL, outcome TEXT NOT NULL, source TEXT NOT NULL, request_id TEXT NOT NULL,
	details TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)`

func plainDB(b *testing.B, be testenv.Backend) *store.DB {
	b.Helper()
	db := be.Open(b)
	if _, err := db.ExecContext(context.Background(), plainTable); err != nil {
		b.Fatal(err)
	}
	return db
}

// plainInsert inserts rows seq..seq+n-1 in one transaction, at most 32
// rows per statement (as the audit writer does on SQLite).
func plainInsert(ctx context.Context, db *store.DB, seq int64, n int) error {
	return db.InTx(ctx, func(tx *sql.Tx) error {
		for n > 0 {
			k := min(n, 32)
			if err := plainInsertStmt(ctx, tx, seq, k); err != nil {
				return err
			}
			seq += int64(k)
			n -= k
		}
		return nil
	})
}

func plainInsertStmt(ctx context.Context, tx *sql.Tx, seq int64, n int) error {
	{
		var q strings.Builder
		q.WriteString(`INSERT INTO bench_plain VALUES `)
		args := make([]any, 0, n*11)
		for i := range n {
			if i > 0 {
				q.WriteByte(',')
			}
			q.WriteByte('(')
			for j := range 11 {
				if j > 0 {
					q.WriteByte(',')
				}
				fmt.Fprintf(&q, "$%d", i*11+j+1)
			}
			q.WriteByte(')')
			ev := sampleEvent(int(seq) + i)
			details, _ := encodeDetails(ev.Details)
			args = append(args, seq+int64(i), int64(1_740_000_000_000_000)+seq, ev.Actor, ev.Action, ev.Resource, ev.Outcome,
				ev.Source, ev.RequestID, details, GenesisHash, GenesisHash)
		}
		_, err := tx.ExecContext(ctx, q.String(), args...)
		return err
	}
}

// BenchmarkBaselineInsert is one durable single-row INSERT per
// transaction: the limit for sequential BenchmarkAppend.
func BenchmarkBaselineInsert(b *testing.B) {
	for _, be := range testenv.Backends() {
		b.Run(be.Name, func(b *testing.B) {
			db := plainDB(b, be)
			ctx := context.Background()
			var seq int64
			for b.Loop() {
				seq++
				if err := plainInsert(ctx, db, seq, 1); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkBaselineInsertBatch inserts rows 64 per transaction: the
// largest batch the 64 concurrent callers of BenchmarkAppendParallel can
// form, so the limit for group commit in that benchmark.
func BenchmarkBaselineInsertBatch(b *testing.B) {
	const batch = 64
	for _, be := range testenv.Backends() {
		b.Run(be.Name, func(b *testing.B) {
			db := plainDB(b, be)
			ctx := context.Background()
			var seq int64 = 1
			for b.Loop() {
				if err := plainInsert(ctx, db, seq, batch); err != nil {
					b.Fatal(err)
				}
				seq += batch
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkBaselineScan reads every row of a chain in seq order and
// decodes it, without hashing: the read limit for BenchmarkVerify1M. It
// uses the same WARDER_BENCH_VERIFY_EVENTS size.
func BenchmarkBaselineScan(b *testing.B) {
	n := verifyBenchEvents(b)
	for _, be := range testenv.Backends() {
		b.Run(be.Name, func(b *testing.B) {
			ctx := context.Background()
			db := be.Open(b)
			l := newLog(b, db, Config{})
			bulkLoad(b, db, n)
			for b.Loop() {
				var count int
				err := l.scan(ctx, `SELECT seq, time_us, actor, action, resource, outcome, source, request_id, details, prev_hash, hash FROM audit_events ORDER BY seq`, nil,
					func(ev Event, err error) error { count++; return err })
				if err != nil || count != n {
					b.Fatalf("scan: %d rows, %v", count, err)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
