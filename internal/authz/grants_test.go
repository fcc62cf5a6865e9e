package authz

import (
	"context"
	"database/sql"
	"slices"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

const pgTemplate = `permit(principal == ?principal, action == Action::"checkout", resource in Target::"pg1");`

func TestValidateTemplate(t *testing.T) {
	tests := []struct {
		name, text string
		ok         bool
	}{
		{"eq", pgTemplate, true},
		{"in", `permit(principal in ?principal, action == Action::"connect", resource);`, true},
		{"with condition", `permit(principal == ?principal, action, resource in Target::"pg1") when { context.mfa };`, true},
		{"forbid", `forbid(principal == ?principal, action == Action::"rotate", resource);`, true},
		{"no slot", `permit(principal, action, resource);`, false},
		{"slot twice", `permit(principal == ?principal, action, resource) when { principal == ?principal };`, false},
		{"slot in a string only", `permit(principal, action, resource) when { context has reason && context.reason == "?principal" };`, false},
		{"slot in a comment only", "// ?principal\npermit(principal, action, resource);", false},
		{"slot in the condition", `permit(principal, action, resource) when { principal == ?principal };`, false},
		{"two statements", pgTemplate + `permit(principal, action == Action::"checkin", resource);`, false},
		{"@id", `@id("mine") ` + pgTemplate, false},
		{"unknown action", `permit(principal == ?principal, action == Action::"fly", resource);`, false},
		{"resource slot", `permit(principal == ?principal, action, resource == ?resource);`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateTemplate(tt.text)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateTemplate: %v; want ok=%v", err, tt.ok)
			}
			if err != nil && !errkind.Is(err, errkind.Invalid) {
				t.Errorf("error kind %v, want Invalid", errkind.Of(err))
			}
		})
	}
}

// link links tmpl to p as id until exp, committing, and refreshes e.az.
func (e *env) link(t testing.TB, id, tmpl string, p UID, exp time.Time) {
	t.Helper()
	ctx := context.Background()
	err := e.db.InTx(ctx, func(tx *sql.Tx) error {
		return e.az.LinkTx(ctx, tx, Link{ID: id, Template: tmpl, Principal: p, ExpiresAt: exp})
	})
	if err != nil {
		t.Fatalf("LinkTx %s: %v", id, err)
	}
	e.az.Refresh(ctx)
}

func (e *env) unlink(t testing.TB, id string) {
	t.Helper()
	ctx := context.Background()
	if err := e.db.InTx(ctx, func(tx *sql.Tx) error { return e.az.UnlinkTx(ctx, tx, id) }); err != nil {
		t.Fatalf("UnlinkTx %s: %v", id, err)
	}
	e.az.Refresh(ctx)
}

func TestGrantExpiresAtTheExactInstant(t *testing.T) {
	for _, b := range testenv.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			e := newEnv(t, b.Open(t), Config{})
			exp := e.clk.Now().Add(30 * time.Minute)
			e.link(t, "grant.g1", pgTemplate, user("alice"), exp)
			req := Request{Principal: user("alice"), Action: ActionCheckout, Resource: account("pg1/postgres")}
			e.res.add(account("pg1/postgres"), target("pg1"))

			if d := e.check(t, req); !d.Allow || !slices.Equal(d.Policies, []string{"grant.g1"}) || !d.NotAfter.Equal(exp) {
				t.Fatalf("during the grant: %+v; want allow by grant.g1 until %v", d, exp)
			}
			// Two grants: the later expiry bounds the decision.
			e.link(t, "grant.g2", pgTemplate, user("alice"), exp.Add(time.Minute))
			if d := e.check(t, req); !d.NotAfter.Equal(exp.Add(time.Minute)) {
				t.Errorf("two grants: NotAfter %v; want %v", d.NotAfter, exp.Add(time.Minute))
			}
			e.unlink(t, "grant.g2")
			// A standing policy that also allows: not bounded.
			e.put(t, "standing", `permit(principal == User::"alice", action == Action::"checkout", resource);`)
			if d := e.check(t, req); !d.Allow || !d.NotAfter.IsZero() {
				t.Errorf("with a standing permit: %+v; want allow without NotAfter", d)
			}
			if err := e.az.Delete(context.Background(), testOrigin, "standing"); err != nil {
				t.Fatal(err)
			}
			other := req
			other.Principal = user("bob")
			if d := e.check(t, other); d.Allow {
				t.Errorf("bob allowed by alice's grant: %+v", d)
			}
			for _, c := range []struct {
				at    time.Time
				allow bool
			}{{exp.Add(-time.Microsecond), true}, {exp, false}, {exp.Add(time.Hour), false}} {
				e.clk.Set(c.at)
				if d := e.check(t, req); d.Allow != c.allow {
					t.Errorf("at expiry%+v: %+v; want allow=%v", c.at.Sub(exp), d, c.allow)
				}
				d := e.fullCheck(t, req)
				if d.Allow != c.allow {
					t.Errorf("full evaluation at expiry%+v: %+v; want allow=%v", c.at.Sub(exp), d, c.allow)
				}
			}

			// Linking again moves the expiry.
			e.link(t, "grant.g1", pgTemplate, user("alice"), exp.Add(2*time.Hour))
			if d := e.check(t, req); !d.Allow {
				t.Errorf("after the expiry moved: %+v; want allow", d)
			}
		})
	}
}

// fullCheck evaluates req against every loaded policy, without the index.
func (e *env) fullCheck(t testing.TB, req Request) Decision {
	t.Helper()
	d, err := e.az.evaluate(context.Background(), req, e.az.set.Load(), true)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestForbidOverridesGrant(t *testing.T) {
	e := newEnv(t, testenv.SQLite(t), Config{})
	e.res.add(account("pg1/postgres"), target("pg1"))
	e.link(t, "grant.g1", pgTemplate, user("alice"), e.clk.Now().Add(time.Hour))
	e.put(t, "no-pg1", `forbid(principal, action == Action::"checkout", resource in Target::"pg1");`)
	d := e.check(t, Request{Principal: user("alice"), Action: ActionCheckout, Resource: account("pg1/postgres")})
	if d.Allow || !slices.Equal(d.Policies, []string{"no-pg1"}) {
		t.Errorf("%+v; want deny by no-pg1", d)
	}
}

func TestGrantPrincipalEscaped(t *testing.T) {
	e := newEnv(t, testenv.SQLite(t), Config{})
	odd := user(`a" || true || "`)
	e.link(t, "grant.odd", `permit(principal == ?principal, action == Action::"connect", resource);`, odd, e.clk.Now().Add(time.Hour))
	for _, c := range []struct {
		p     UID
		allow bool
	}{{odd, true}, {user("a"), false}, {user("b"), false}} {
		d := e.check(t, Request{Principal: c.p, Action: ActionConnect, Resource: target("x")})
		if d.Allow != c.allow {
			t.Errorf("%s: %+v; want allow=%v", c.p, d, c.allow)
		}
	}
}

func TestLinkRefusals(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, testenv.SQLite(t), Config{})
	exp := e.clk.Now().Add(time.Hour)
	for _, l := range []Link{
		{ID: "g1", Template: pgTemplate, Principal: user("alice"), ExpiresAt: exp},
		{ID: "grant.Bad Id", Template: pgTemplate, Principal: user("alice"), ExpiresAt: exp},
		{ID: "grant.g1", Template: pgTemplate, Principal: user("alice")},
		{ID: "grant.g1", Template: pgTemplate, Principal: group("dba"), ExpiresAt: exp},
		{ID: "grant.g1", Template: `permit(principal, action, resource);`, Principal: user("alice"), ExpiresAt: exp},
	} {
		err := e.db.InTx(ctx, func(tx *sql.Tx) error { return e.az.LinkTx(ctx, tx, l) })
		if !errkind.Is(err, errkind.Invalid) {
			t.Errorf("LinkTx %+v: %v; want Invalid", l, err)
		}
	}
	if _, err := e.az.Put(ctx, testOrigin, "grant.x", `permit(principal, action, resource);`); !errkind.Is(err, errkind.Invalid) {
		t.Errorf("Put of a policy with a grant id: %v; want Invalid", err)
	}
	if _, err := e.az.Put(ctx, testOrigin, "sneaky", `@id("grant.x") permit(principal, action, resource);`); !errkind.Is(err, errkind.Invalid) {
		t.Errorf("Put of a policy with a grant @id: %v; want Invalid", err)
	}
}

// TestRevocationSeenByAnotherServer links and unlinks through one
// Authorizer and watches a second one, on the same PostgreSQL database.
func TestRevocationSeenByAnotherServer(t *testing.T) {
	ctx := context.Background()
	url := testenv.PostgresURL(t)
	open := func() *store.DB {
		db, err := store.Open(ctx, store.Config{PostgresURL: url})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	a := newEnv(t, open(), Config{})
	b := newEnv(t, open(), Config{})
	b.clk = a.clk
	b.az.now = a.clk.Now
	req := Request{Principal: user("alice"), Action: ActionConnect, Resource: target("pg1")}

	a.link(t, "grant.g1", `permit(principal == ?principal, action == Action::"connect", resource);`, user("alice"), a.clk.Now().Add(time.Hour))
	a.clk.Add(time.Second)
	if d := b.check(t, req); !d.Allow || !slices.Equal(d.Policies, []string{"grant.g1"}) {
		t.Fatalf("second server after a reload interval: %+v; want allow by grant.g1", d)
	}
	a.unlink(t, "grant.g1")
	if d := a.check(t, req); d.Allow {
		t.Errorf("first server after the revocation: %+v; want deny", d)
	}
	a.clk.Add(time.Second)
	if d := b.check(t, req); d.Allow {
		t.Errorf("second server a reload interval after the revocation: %+v; want deny", d)
	}
	// Unlinking again does nothing.
	a.unlink(t, "grant.g1")
}

func TestTemplateAccount(t *testing.T) {
	for _, tc := range []struct {
		name, template, want string
	}{
		{"connect", `permit(principal == ?principal, action == Action::"connect", resource == Account::"web1/ops");`, "ops"},
		{"connect among others", `permit(principal == ?principal, action in [Action::"checkout", Action::"connect"], resource == Account::"web1/ops");`, "ops"},
		{"every action", `permit(principal == ?principal, action, resource == Account::"web1/ops");`, "ops"},
		{"group principal", `permit(principal in ?principal, action == Action::"connect", resource == Account::"web1/ops") when { context.mfa };`, "ops"},
		{"checkout only", `permit(principal == ?principal, action == Action::"checkout", resource == Account::"web1/ops");`, ""},
		{"the whole target", `permit(principal == ?principal, action == Action::"connect", resource in Target::"web1");`, ""},
		{"another target", `permit(principal == ?principal, action == Action::"connect", resource == Account::"web10/ops");`, ""},
		{"forbid", `forbid(principal == ?principal, action == Action::"connect", resource == Account::"web1/ops");`, ""},
		{"two statements", `permit(principal == ?principal, action, resource == Account::"web1/a"); permit(principal, action, resource == Account::"web1/b");`, ""},
		{"not cedar", `permit(`, ""},
		{"empty", ``, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := TemplateAccount(tc.template, "web1"); got != tc.want {
				t.Errorf("TemplateAccount = %q, want %q", got, tc.want)
			}
		})
	}
}
