package vault

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

// BenchmarkCheckout measures check-out latency (authorize, lease, audit,
// decrypt) under concurrent load: parallel goroutines, each a different
// user, check out and in one of 8 accounts (max_checkouts 1000, so
// nobody waits). It reports the p50 and p99 of Checkout alone.
func BenchmarkCheckout(b *testing.B) {
	for _, be := range testenv.Backends() {
		b.Run(be.Name, func(b *testing.B) { benchCheckout(b, be.Open) })
	}
}

func benchCheckout(b *testing.B, open func(testing.TB) *store.DB) {
	e := newEnv(b, open(b), envOpts{})
	e.addTarget(b, "db1")
	const accounts = 8
	for i := range accounts {
		e.addAccount(b, "db1", fmt.Sprintf("a%d", i), "pw-bench", 1000)
	}
	var mu sync.Mutex
	var lat []time.Duration
	var next atomic.Int32
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		k := int(next.Add(1)) - 1
		who := fmt.Sprintf("u%d", k)
		o := audit.Origin{Actor: "user:" + who}
		account := fmt.Sprintf("db1/a%d", k%accounts)
		var mine []time.Duration
		for pb.Next() {
			start := time.Now()
			_, err := e.vault.Checkout(e.ctx, o, CheckoutRequest{Account: account, Principal: user(who), Reason: "bench", Ticket: "T"})
			mine = append(mine, time.Since(start))
			if err != nil {
				b.Error(err)
				return
			}
			if _, err := e.vault.Checkin(e.ctx, o, user(who), account); err != nil {
				b.Error(err)
				return
			}
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
