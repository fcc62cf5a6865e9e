package vault

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

// TestExclusiveContention: 50 waiting check-outs of a max_checkouts=1
// account, in one process and across two on one PostgreSQL database.
// Nobody ever holds it together with another, and the waitlist is served
// in the order it was joined.
func TestExclusiveContention(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{})
		contend(t, e, []*Vault{e.vault})
	})
	t.Run("postgres-two-processes", func(t *testing.T) {
		url := testenv.PostgresURL(t)
		var envs []*env
		var vs []*Vault
		for i := range 2 {
			db, err := store.Open(context.Background(), store.Config{PostgresURL: url})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			opts := envOpts{}
			if i > 0 {
				opts.unsealKey = envs[0].key
			}
			envs = append(envs, newEnv(t, db, opts))
			vs = append(vs, envs[i].vault)
		}
		contend(t, envs[0], vs)
	})
}

func contend(t *testing.T, e *env, vs []*Vault) {
	const n = 50
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	e.addTarget(t, "db1")
	e.addAccount(t, "db1", "shared", "pw-shared", 1)
	// A blocker holds the account until everyone has queued.
	if _, err := e.checkout(ctx, "db1/shared", "admin", false); err != nil {
		t.Fatal(err)
	}

	var holding, maxHolding atomic.Int32
	type service struct {
		who string
		at  time.Time
	}
	var mu sync.Mutex
	var served []service
	var wg sync.WaitGroup
	for i := range n {
		v := vs[i%len(vs)]
		who := fmt.Sprintf("u%d", i)
		wg.Go(func() {
			o := audit.Origin{Actor: "user:" + who}
			l, err := v.Checkout(ctx, o, CheckoutRequest{Account: "db1/shared", Principal: user(who), Reason: "contention", Ticket: "T", Wait: true})
			if err != nil {
				t.Errorf("%s: %v", who, err)
				return
			}
			h := holding.Add(1)
			for {
				m := maxHolding.Load()
				if h <= m || maxHolding.CompareAndSwap(m, h) {
					break
				}
			}
			mu.Lock()
			served = append(served, service{who, l.CheckedOutAt})
			mu.Unlock()
			time.Sleep(2 * time.Millisecond)
			holding.Add(-1)
			if _, err := v.Checkin(ctx, o, user(who), "db1/shared"); err != nil {
				t.Errorf("%s: checkin: %v", who, err)
			}
		})
	}
	var queue []Waiter
	waitFor(t, func() bool {
		l, err := e.vault.Leases(ctx, "db1/shared")
		queue = l.Waiting
		return err == nil && len(l.Waiting) == n
	})
	for i, w := range queue {
		if w.Position != i+1 || (i > 0 && w.EnqueuedAt.Before(queue[i-1].EnqueuedAt)) {
			t.Errorf("waiter %d: %+v after %+v", i, w, queue[i-1])
		}
	}
	if _, err := e.vault.Checkin(ctx, admin, user("admin"), "db1/shared"); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if m := maxHolding.Load(); m != 1 {
		t.Errorf("%d held the account at once", m)
	}
	if len(served) != n {
		t.Fatalf("%d served, want %d", len(served), n)
	}
	// Service order by check-out time is the enqueue order.
	sort.SliceStable(served, func(i, j int) bool { return served[i].at.Before(served[j].at) })
	var want, got []string
	for i := range n {
		want = append(want, "user:"+queue[i].Principal[len("user:"):])
		got = append(got, "user:"+served[i].who)
	}
	if !slices.Equal(got, want) {
		t.Errorf("service order differs from enqueue order:\n got %v\nwant %v", got, want)
	}
	if l, _ := e.vault.Leases(ctx, "db1/shared"); len(l.Leases) != 0 || len(l.Waiting) != 0 {
		t.Errorf("left over: %+v", l)
	}
}
