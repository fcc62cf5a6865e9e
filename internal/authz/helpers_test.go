package authz

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/store"
)

// memResolver is an in-memory EntityResolver, the fake of identity and
// vault. Unless noCount is set, it counts the Parents calls per entity.
type memResolver struct {
	noCount bool // set before use

	mu      sync.RWMutex
	parents map[UID][]UID
	attrs   map[UID]map[string]any
	calls   map[UID]int
}

func newMemResolver() *memResolver {
	return &memResolver{parents: map[UID][]UID{}, attrs: map[UID]map[string]any{}, calls: map[UID]int{}}
}

// add makes child a direct member of each parent.
func (r *memResolver) add(child UID, parents ...UID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.parents[child] = append(r.parents[child], parents...)
}

func (r *memResolver) Parents(ctx context.Context, uid UID) ([]UID, error) {
	if r.noCount {
		r.mu.RLock()
		defer r.mu.RUnlock()
		return r.parents[uid], nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls[uid]++
	return r.parents[uid], nil
}

func (r *memResolver) Attributes(ctx context.Context, uid UID) (map[string]any, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.attrs[uid], nil
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Entities used across tests.
func user(id string) UID    { return UID{TypeUser, id} }
func group(id string) UID   { return UID{TypeGroup, id} }
func machine(id string) UID { return UID{TypeMachine, id} }
func target(id string) UID  { return UID{TypeTarget, id} }
func account(id string) UID { return UID{TypeAccount, id} }

// env is an Authorizer on a fresh store with its audit log, resolver and clock.
type env struct {
	db  *store.DB
	log *audit.Log
	res *memResolver
	clk *clock
	az  *Authorizer
}

// newEnv opens an Authorizer on db; admin is in Group::"admins".
// The clock starts on Wednesday 2026-01-07 12:00 UTC.
func newEnv(t testing.TB, db *store.DB, cfg Config) *env {
	t.Helper()
	ctx := context.Background()
	log, err := audit.New(ctx, audit.Config{DB: db})
	if err != nil {
		t.Fatalf("audit.New: %v", err)
	}
	t.Cleanup(func() { log.Close() })
	e := &env{db: db, log: log, res: newMemResolver(), clk: &clock{t: time.Date(2026, 1, 7, 12, 0, 0, 0, time.UTC)}}
	e.res.add(user("admin"), group("admins"))
	cfg.DB, cfg.Audit, cfg.Entities, cfg.Now = db, log, e.res, e.clk.Now
	e.az, err = New(ctx, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

var testOrigin = audit.Origin{Actor: "user:admin", Source: "192.0.2.1", RequestID: "req-1"}

// put stores a policy or fails the test.
func (e *env) put(t testing.TB, name, text string) Policy {
	t.Helper()
	p, err := e.az.Put(context.Background(), testOrigin, name, text)
	if err != nil {
		t.Fatalf("Put %s: %v", name, err)
	}
	return p
}

// check evaluates req or fails the test.
func (e *env) check(t testing.TB, req Request) Decision {
	t.Helper()
	d, err := e.az.Check(context.Background(), req)
	if err != nil {
		t.Fatalf("Check %+v: %v", req, err)
	}
	return d
}
