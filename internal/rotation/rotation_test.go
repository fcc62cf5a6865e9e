package rotation

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
	"github.com/warderhq/warder/internal/vault"
)

// allowAll decides nothing the rotation tests exercise.
type allowAll struct{}

func (allowAll) Authorize(context.Context, audit.Origin, authz.Request) (authz.Decision, error) {
	return authz.Decision{Allow: true, Decision: "allow"}, nil
}

type env struct {
	ctx   context.Context
	db    *store.DB
	b     *barrier.Barrier
	audit *audit.Log
	vault *vault.Vault
	mem   *memTarget
	eng   *Engine
}

var origin = audit.Origin{Actor: "test"}

// newEnv opens a vault on db with a memTarget registered as kind "mem",
// a target "t1" whose management account is "mgmt", and an engine.
func newEnv(t *testing.T, db *store.DB, unsealKey []byte) *env {
	t.Helper()
	ctx := context.Background()
	b, err := barrier.New(ctx, barrier.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	if unsealKey == nil {
		res, err := b.Init(ctx, barrier.InitOptions{Shares: 1, Threshold: 1})
		if err != nil {
			t.Fatal(err)
		}
		unsealKey = res.UnsealKey
	}
	if err := b.UnsealWithKeyFile(ctx, unsealKey); err != nil {
		t.Fatal(err)
	}
	lg, err := audit.New(ctx, audit.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close() })
	v, err := vault.New(ctx, vault.Config{DB: db, Audit: lg, Barrier: b, Authz: allowAll{}, Kinds: []string{"mem"}})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{ctx: ctx, db: db, b: b, audit: lg, vault: v}
	e.eng = e.engine(t, newMemTarget("mgmt"))
	return e
}

func (e *env) engine(t *testing.T, mt *memTarget) *Engine {
	t.Helper()
	e.mem = mt
	eng, err := New(Config{Vault: e.vault, Connectors: connector.Registry{"mem": mt}, Audit: e.audit, ClaimTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return eng
}

func pw(s string) *connector.Credential {
	return &connector.Credential{Kind: connector.Password, Secret: []byte(s)}
}

// setup adds target t1 with management account mgmt and an account
// t1/app, both known to the target.
func (e *env) setup(t *testing.T, withMgmt bool) {
	t.Helper()
	spec := vault.TargetSpec{Name: "t1", Kind: "mem", Host: "127.0.0.1", Port: 1}
	if withMgmt {
		spec.ManagementAccount = "mgmt"
	}
	if _, err := e.vault.AddTarget(e.ctx, origin, spec); err != nil {
		t.Fatal(err)
	}
	e.mem.set("mgmt", "management-password-1")
	e.mem.set("app", "app-password-1")
	if withMgmt {
		if _, err := e.vault.AddAccount(e.ctx, origin, vault.AccountSpec{Target: "t1", Username: "mgmt", Credential: pw("management-password-1")}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.vault.AddAccount(e.ctx, origin, vault.AccountSpec{Target: "t1", Username: "app", Credential: pw("app-password-1")}); err != nil {
		t.Fatal(err)
	}
}

// stored returns the account's current stored password.
func (e *env) stored(t *testing.T, id string) string {
	t.Helper()
	_, c, err := e.vault.CurrentCredential(e.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return string(c.Secret)
}

// consistent fails unless the stored current credential is the one the
// target accepts and no pending version is left.
func (e *env) consistent(t *testing.T, id, user string) {
	t.Helper()
	if got, want := e.stored(t, id), e.mem.password(user); got != want {
		t.Errorf("%s: stored credential differs from the target's", id)
	}
	if _, _, ok, err := e.vault.PendingCredential(e.ctx, id); err != nil || ok {
		t.Errorf("%s: pending version left: %v %v", id, ok, err)
	}
}

func TestRotate(t *testing.T) {
	for _, be := range testenv.Backends() {
		t.Run(be.Name, func(t *testing.T) {
			e := newEnv(t, be.Open(t), nil)
			e.setup(t, true)
			res, err := e.eng.Rotate(e.ctx, origin, "t1/app")
			if err != nil || res.Outcome != Rotated {
				t.Fatalf("Rotate = %+v, %v", res, err)
			}
			if e.mem.password("app") == "app-password-1" {
				t.Fatal("the target still has the old password")
			}
			e.consistent(t, "t1/app", "app")
			if len(e.stored(t, "t1/app")) != 32 {
				t.Errorf("generated password has %d characters, want the default 32", len(e.stored(t, "t1/app")))
			}
			// Without a management account the account changes itself.
			e2 := newEnv(t, be.Open(t), nil)
			e2.setup(t, false)
			if res, err := e2.eng.Rotate(e2.ctx, origin, "t1/app"); err != nil || res.Outcome != Rotated {
				t.Fatalf("self rotation = %+v, %v", res, err)
			}
			e2.consistent(t, "t1/app", "app")
		})
	}
}

// Each failure point of a rotation ends with the stored credential the
// one the target accepts, and nothing lost.
func TestRotateFailures(t *testing.T) {
	cases := []struct {
		name    string
		mgmt    bool
		prepare func(e *env)
		want    Outcome
		wantErr bool
		changed bool // the target ends with a new password
	}{
		{"change fails before applying", true, func(e *env) { e.mem.failChangeBefore = true }, Kept, true, false},
		{"change applies then fails", true, func(e *env) { e.mem.failChangeAfter = true }, Rotated, true, true},
		{"target down", true, func(e *env) { e.mem.down = true }, Undecided, true, false},
		{"password changed outside, reset by management", true, func(e *env) { e.mem.set("app", "someone-else") }, Rotated, false, true},
	}
	for _, be := range testenv.Backends() {
		for _, c := range cases {
			t.Run(be.Name+"/"+c.name, func(t *testing.T) {
				e := newEnv(t, be.Open(t), nil)
				e.setup(t, c.mgmt)
				c.prepare(e)
				res, err := e.eng.Rotate(e.ctx, origin, "t1/app")
				if res.Outcome != c.want || (err != nil) != c.wantErr {
					t.Fatalf("Rotate = %+v, %v; want outcome %s, error %v", res, err, c.want, c.wantErr)
				}
				if changed := e.mem.password("app") != "app-password-1"; changed != c.changed {
					t.Errorf("target changed = %v, want %v", changed, c.changed)
				}
				if c.want == Undecided {
					// Nothing could be decided: the pending version stays
					// until the target answers again.
					if _, _, ok, _ := e.vault.PendingCredential(e.ctx, "t1/app"); !ok {
						t.Fatal("pending version dropped while the target was unreachable")
					}
					e.mem.down = false
					if res, err := e.eng.Recover(e.ctx, origin, "t1/app"); err != nil || res.Outcome != Kept {
						t.Fatalf("Recover after the target came back = %+v, %v", res, err)
					}
				}
				e.consistent(t, "t1/app", "app")
			})
		}
	}
}

// Crash recovery from every state a crash can leave: a pending version
// that did or did not reach the target, a target that has neither.
func TestRecoverAfterCrash(t *testing.T) {
	for _, be := range testenv.Backends() {
		t.Run(be.Name, func(t *testing.T) {
			cases := []struct {
				name   string
				mgmt   bool
				target func(pending string) string // what the target holds after the "crash"
				want   Outcome
			}{
				{"crashed before the change", true, func(string) string { return "app-password-1" }, Kept},
				{"crashed after the change", true, func(p string) string { return p }, Rotated},
				{"neither works, management resets", true, func(string) string { return "unknown" }, Reset},
				{"neither works, no management", false, func(string) string { return "unknown" }, OutOfSync},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					db := be.Open(t)
					e := newEnv(t, db, nil)
					e.setup(t, c.mgmt)
					// A rotation stages its pending version, then the process dies.
					if _, err := e.vault.StagePending(e.ctx, origin, "t1/app", *pw("pending-password-xyz")); err != nil {
						t.Fatal(err)
					}
					e.mem.set("app", c.target("pending-password-xyz"))

					// A new engine (the restarted process) recovers.
					eng := e.engine(t, e.mem)
					results, err := eng.RecoverAll(e.ctx)
					if err != nil || len(results) != 1 || results[0].Outcome != c.want {
						t.Fatalf("RecoverAll = %+v, %v; want %s", results, err, c.want)
					}
					if c.want == OutOfSync {
						a, _ := e.vault.Account(e.ctx, "t1/app")
						if a.Status != "out_of_sync" {
							t.Errorf("status %q, want out_of_sync", a.Status)
						}
						// Nothing was thrown away: both versions are still stored.
						if _, _, ok, _ := e.vault.PendingCredential(e.ctx, "t1/app"); !ok {
							t.Error("pending version discarded although it might be live")
						}
						if e.stored(t, "t1/app") != "app-password-1" {
							t.Error("current version discarded")
						}
						evs, _ := e.audit.List(e.ctx, audit.Filter{Action: "account.out_of_sync", Limit: 10})
						if len(evs) == 0 {
							t.Error("no account.out_of_sync audit event")
						}
						return
					}
					e.consistent(t, "t1/app", "app")
				})
			}
		})
	}
}

// Two engines (two server processes on one PostgreSQL database) rotating
// the same account at once never both change it.
func TestConcurrentRotationsSerialised(t *testing.T) {
	url := testenv.PostgresURL(t)
	open := func() *store.DB {
		db, err := store.Open(context.Background(), store.Config{PostgresURL: url})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	e1 := newEnv(t, open(), nil)
	e1.setup(t, true)
	// The second "process": its own store handle, vault and engine (it
	// shares the first one's barrier, which holds the same keys).
	v2, err := vault.New(e1.ctx, vault.Config{DB: open(), Audit: e1.audit, Barrier: e1.b, Authz: allowAll{}, Kinds: []string{"mem"}})
	if err != nil {
		t.Fatal(err)
	}
	eng2, err := New(Config{Vault: v2, Connectors: connector.Registry{"mem": e1.mem}, Audit: e1.audit, ClaimTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var rotated, busy int
	for i := range 10 {
		eng := e1.eng
		if i%2 == 1 {
			eng = eng2
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := eng.Rotate(context.Background(), origin, "t1/app")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, ErrBusy):
				busy++
			case err != nil:
				t.Errorf("Rotate: %v", err)
			case res.Outcome == Rotated:
				rotated++
			}
		}()
	}
	wg.Wait()
	if rotated == 0 || rotated+busy != 10 {
		t.Errorf("%d rotated, %d busy; want all 10 accounted for and at least one rotation", rotated, busy)
	}
	if e1.mem.changes != rotated {
		t.Errorf("target saw %d changes for %d rotations", e1.mem.changes, rotated)
	}
	e1.consistent(t, "t1/app", "app")
}

func TestVerifyDetectsDrift(t *testing.T) {
	e := newEnv(t, testenv.SQLite(t), nil)
	e.setup(t, true)
	if ok, err := e.eng.Verify(e.ctx, origin, "t1/app"); !ok || err != nil {
		t.Fatalf("Verify = %v, %v", ok, err)
	}
	e.mem.set("app", "changed-outside")
	if ok, err := e.eng.Verify(e.ctx, origin, "t1/app"); ok || err != nil {
		t.Fatalf("Verify after drift = %v, %v; want false, nil", ok, err)
	}
	a, _ := e.vault.Account(e.ctx, "t1/app")
	if a.Status != "out_of_sync" {
		t.Errorf("status after drift = %q", a.Status)
	}
	e.mem.down = true
	if _, err := e.eng.Verify(e.ctx, origin, "t1/app"); err == nil || errkind.Is(err, errkind.Conflict) {
		t.Errorf("Verify of an unreachable target = %v; want a plain error", err)
	}
	// A rotation through the management account repairs the drift.
	e.mem.down = false
	if res, err := e.eng.Rotate(e.ctx, origin, "t1/app"); err != nil || res.Outcome != Rotated {
		t.Fatalf("Rotate after drift = %+v, %v", res, err)
	}
	e.consistent(t, "t1/app", "app")
}

func TestDependentsUpdated(t *testing.T) {
	e := newEnv(t, testenv.SQLite(t), nil)
	e.setup(t, true)
	if _, err := e.vault.AddAccount(e.ctx, origin, vault.AccountSpec{
		Target: "t1", Username: "svc", Credential: pw("svc-password-1"),
		Dependents: []vault.Dependent{{Target: "t1", Path: "/etc/app.env", Match: "^DB_PASSWORD=", Template: "DB_PASSWORD={{password}}"}},
	}); err != nil {
		t.Fatal(err)
	}
	e.mem.set("svc", "svc-password-1")
	res, err := e.eng.Rotate(e.ctx, origin, "t1/svc")
	if err != nil || res.Outcome != Rotated || len(res.FailedDependents) != 0 {
		t.Fatalf("Rotate = %+v, %v", res, err)
	}
	if got, want := e.mem.files["/etc/app.env"], "DB_PASSWORD="+e.mem.password("svc"); got != want {
		t.Errorf("dependent line not updated")
	}
	// A dependent that cannot be updated is reported; the rotation stands.
	e.mem.set("mgmt", "management-changed-outside")
	res, err = e.eng.Rotate(e.ctx, origin, "t1/svc")
	if err == nil && (res.Outcome != Rotated || len(res.FailedDependents) != 1) {
		t.Fatalf("Rotate with a broken dependent = %+v, %v", res, err)
	}
	for _, f := range res.FailedDependents {
		if strings.Contains(f, e.mem.password("svc")) {
			t.Fatal("a failed dependent's report contains the password")
		}
	}
}
