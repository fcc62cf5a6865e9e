package postgres

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/testenv"
)

// BenchmarkRotatePostgres measures full rotations (Change as the role
// itself, then Verify of the new password: two SCRAM logins and one
// ALTER ROLE) across 1,000 roles on one target, the throwaway SCRAM
// cluster. It reports rotations/s; docs/benchmarks.md quotes it.
//
//	go test -run '^$' -bench RotatePostgres -benchtime 2000x ./internal/connector/postgres/
func BenchmarkRotatePostgres(b *testing.B) {
	const roles = 1000
	c := testenv.PostgresSCRAM(b)
	tgt := scramTarget(c)
	prefix := "wb_" + rand.Text()[:8] + "_"
	c.Exec(b, fmt.Sprintf(`DO $$ BEGIN FOR i IN 1..%d LOOP
		EXECUTE format('CREATE ROLE %%I LOGIN PASSWORD %%L', '%s' || i, 'initial');
	END LOOP; END $$`, roles, prefix))
	b.Cleanup(func() {
		c.Exec(b, fmt.Sprintf(`DO $$ BEGIN FOR i IN 1..%d LOOP
			EXECUTE format('DROP ROLE IF EXISTS %%I', '%s' || i);
		END LOOP; END $$`, roles, prefix))
	})

	type account struct {
		mu       sync.Mutex
		name     string
		password string
	}
	accts := make([]account, roles)
	for i := range accts {
		accts[i].name = fmt.Sprintf("%s%d", prefix, i+1)
		accts[i].password = "initial"
	}
	var next atomic.Int64
	conn := New()
	rotate := func() error {
		a := &accts[int(next.Add(1))%roles]
		a.mu.Lock()
		defer a.mu.Unlock()
		cur := pw(a.password)
		newPassword := rand.Text()
		err := conn.Change(context.Background(), tgt, connector.ChangeRequest{Username: a.name, Current: &cur, Next: pw(newPassword)})
		if err != nil {
			return fmt.Errorf("change %s: %w", a.name, err)
		}
		if err := conn.Verify(context.Background(), tgt, a.name, pw(newPassword)); err != nil {
			return fmt.Errorf("verify %s: %w", a.name, err)
		}
		a.password = newPassword
		return nil
	}

	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if err := rotate(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rotations/s")
	})
	b.Run("parallel4", func(b *testing.B) {
		// Four rotations in flight per GOMAXPROCS, as a per-target
		// concurrency limit would allow.
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := rotate(); err != nil {
					b.Error(err) // Fatal is not allowed off the benchmark goroutine
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rotations/s")
	})
}
