package vault

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// resolver is the test's entity resolver: users' groups from a map, the
// vault's entities from the vault.
type resolver struct {
	groups map[string][]string // user or machine name -> groups
	mu     sync.Mutex
	vault  *Vault
}

func (r *resolver) Parents(ctx context.Context, uid authz.UID) ([]authz.UID, error) {
	switch uid.Type {
	case authz.TypeUser, authz.TypeMachine:
		var out []authz.UID
		for _, g := range r.groups[uid.ID] {
			out = append(out, authz.UID{Type: authz.TypeGroup, ID: g})
		}
		return out, nil
	}
	r.mu.Lock()
	v := r.vault
	r.mu.Unlock()
	if v == nil {
		return nil, nil
	}
	return v.Parents(ctx, uid)
}

// testPolicy lets dba check out accounts of db1 with a ticket and connect
// to db2 through a gateway, and apps read secrets under app/.
const testPolicy = `
permit(principal in Group::"dba", action == Action::"connect", resource in Target::"db2");
permit(principal in Group::"dba", action == Action::"checkout", resource in Target::"db1")
when { context has ticket };
permit(principal in Group::"apps", action == Action::"read_secret", resource)
when { resource in Target::"app" };
`

// env is a Vault on a fresh store with a real barrier, audit log and
// authorizer.
type env struct {
	ctx     context.Context
	db      *store.DB
	barrier *barrier.Barrier
	audit   *audit.Log
	authz   *authz.Authorizer
	vault   *Vault
	clock   *fakeClock // nil: real time
	key     []byte     // the barrier's unseal key file
}

type envOpts struct {
	fixedClock bool
	tweak      func(*Config)
	unsealKey  []byte // join an initialized barrier (a second process)
}

var admin = audit.Origin{Actor: "user:admin", RequestID: "test"}

func newEnv(t testing.TB, db *store.DB, opts envOpts) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{ctx: ctx, db: db}
	now := time.Now
	if opts.fixedClock {
		e.clock = newClock()
		now = e.clock.Now
	}
	b, err := barrier.New(ctx, barrier.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	key := opts.unsealKey
	if key == nil {
		res, err := b.Init(ctx, barrier.InitOptions{Shares: 1, Threshold: 1})
		if err != nil {
			t.Fatal(err)
		}
		key = res.UnsealKey
	}
	if err := b.UnsealWithKeyFile(ctx, key); err != nil {
		t.Fatal(err)
	}
	e.barrier, e.key = b, key
	if e.audit, err = audit.New(ctx, audit.Config{DB: db, Now: now}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.audit.Close() })
	res := &resolver{groups: map[string][]string{
		"admin": {"admins"}, "alice": {"dba"}, "bob": {"dba"}, "ci": {"apps"},
	}}
	for i := range 64 {
		res.groups["u"+strconv.Itoa(i)] = []string{"dba"}
	}
	if e.authz, err = authz.New(ctx, authz.Config{DB: db, Audit: e.audit, Entities: res, Now: now}); err != nil {
		t.Fatal(err)
	}
	if opts.unsealKey == nil {
		if _, err := e.authz.Put(ctx, admin, "test", testPolicy); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{DB: db, Audit: e.audit, Barrier: b, Authz: e.authz, Now: now, WaitPoll: 20 * time.Millisecond}
	if opts.tweak != nil {
		opts.tweak(&cfg)
	}
	if e.vault, err = New(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	res.mu.Lock()
	res.vault = e.vault
	res.mu.Unlock()
	return e
}

// forBackends runs f once per store backend.
func forBackends(t *testing.T, f func(t *testing.T, open func(testing.TB) *store.DB)) {
	for _, be := range testenv.Backends() {
		t.Run(be.Name, func(t *testing.T) { f(t, be.Open) })
	}
}

func user(name string) identity.Principal {
	return identity.Principal{Kind: identity.KindUser, Name: name}
}

func password(s string) *connector.Credential {
	return &connector.Credential{Kind: connector.Password, Secret: []byte(s)}
}

// addTarget adds a postgres target name.
func (e *env) addTarget(t testing.TB, name string) Target {
	t.Helper()
	tg, err := e.vault.AddTarget(e.ctx, admin, TargetSpec{Name: name, Kind: "postgres", Host: "127.0.0.1", Port: 5432})
	if err != nil {
		t.Fatalf("AddTarget(%s): %v", name, err)
	}
	return tg
}

// addAccount adds target/user with password pw and max checkouts n.
func (e *env) addAccount(t testing.TB, target, username, pw string, n int) Account {
	t.Helper()
	a, err := e.vault.AddAccount(e.ctx, admin, AccountSpec{Target: target, Username: username, Credential: password(pw), MaxCheckouts: n})
	if err != nil {
		t.Fatalf("AddAccount(%s/%s): %v", target, username, err)
	}
	return a
}

// checkout checks out account for user with a ticket.
func (e *env) checkout(ctx context.Context, account, who string, wait bool) (Lease, error) {
	return e.vault.Checkout(ctx, audit.Origin{Actor: "user:" + who}, CheckoutRequest{
		Account: account, Principal: user(who), Reason: "maintenance", Ticket: "CHG-1", Wait: wait})
}

func wantKind(t testing.TB, what string, err error, k errkind.Kind) {
	t.Helper()
	if !errkind.Is(err, k) {
		t.Fatalf("%s: got error %v (kind %v), want kind %v", what, err, errkind.Of(err), k)
	}
}

// events returns every audit event.
func (e *env) events(t testing.TB) []audit.Event {
	t.Helper()
	var out []audit.Event
	var after int64
	for {
		evs, err := e.audit.List(e.ctx, audit.Filter{AfterSeq: after, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			return out
		}
		out = append(out, evs...)
		after = evs[len(evs)-1].Seq
	}
}

// eventsOf returns the audit events with action.
func (e *env) eventsOf(t testing.TB, action string) []audit.Event {
	t.Helper()
	var out []audit.Event
	for _, ev := range e.events(t) {
		if ev.Action == action {
			out = append(out, ev)
		}
	}
	return out
}

// eventsWith returns the audit events with action and outcome.
func (e *env) eventsWith(t testing.TB, action, outcome string) []audit.Event {
	t.Helper()
	var out []audit.Event
	for _, ev := range e.eventsOf(t, action) {
		if ev.Outcome == outcome {
			out = append(out, ev)
		}
	}
	return out
}

func itoa(i int) string { return strconv.Itoa(i) }
