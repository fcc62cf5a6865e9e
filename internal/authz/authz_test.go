package authz

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/testenv"
)

// allActions lists every action with a resource it applies to.
var allActions = []struct {
	action   string
	resource UID
}{
	{ActionAdmin, SystemUID()},
	{ActionAuditRead, SystemUID()},
	{ActionCheckout, account("db1/root")},
	{ActionCheckin, account("db1/root")},
	{ActionRotate, target("db1")},
	{ActionConnect, target("db1")},
	{ActionPortForward, account("db1/root")},
	{ActionReadSecret, UID{TypeSecret, "db1/tls"}},
	{ActionRequestAccess, UID{TypeRole, "oncall"}},
	{ActionApprove, UID{TypeRole, "oncall"}},
}

func TestDecisions(t *testing.T) {
	for _, b := range testenv.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			e := newEnv(t, b.Open(t), Config{})
			e.res.add(user("alice"), group("dev"))
			e.res.add(group("dev"), group("eng"))
			e.res.add(group("eng"), group("staff"))
			e.res.add(user("bob"), group("cyc1"))
			e.res.add(group("cyc1"), group("cyc2"))
			e.res.add(group("cyc2"), group("cyc1"), group("staff"))
			e.res.add(account("db1/root"), target("db1"))
			e.res.add(account("db2/root"), target("db2"))

			t.Run("default deny", func(t *testing.T) {
				for _, a := range allActions {
					d := e.check(t, Request{Principal: user("alice"), Action: a.action, Resource: a.resource})
					if d.Allow || d.Decision != "deny" || len(d.Policies) != 0 || d.Policies == nil {
						t.Errorf("%s: %+v, want deny by default with empty policies", a.action, d)
					}
				}
			})
			t.Run("admins allowed every action", func(t *testing.T) {
				for _, a := range allActions {
					d := e.check(t, Request{Principal: user("admin"), Action: a.action, Resource: a.resource})
					if !d.Allow || !slices.Equal(d.Policies, []string{"admins"}) {
						t.Errorf("%s: %+v, want allow by admins", a.action, d)
					}
				}
			})

			e.put(t, "staff-connect", `permit(principal in Group::"staff", action == Action::"connect", resource in Target::"db1");`)
			t.Run("nested groups", func(t *testing.T) {
				d := e.check(t, Request{Principal: user("alice"), Action: ActionConnect, Resource: target("db1")})
				if !d.Allow || !slices.Equal(d.Policies, []string{"staff-connect"}) {
					t.Errorf("alice in dev in eng in staff: %+v, want allow by staff-connect", d)
				}
				d = e.check(t, Request{Principal: user("alice"), Action: ActionConnect, Resource: target("db2")})
				if d.Allow {
					t.Errorf("other target: %+v, want deny", d)
				}
			})
			t.Run("cycle", func(t *testing.T) {
				done := make(chan Decision, 1)
				go func() {
					d, _ := e.az.Check(context.Background(), Request{Principal: user("bob"), Action: ActionConnect, Resource: target("db1")})
					done <- d
				}()
				select {
				case d := <-done:
					if !d.Allow {
						t.Errorf("bob in cyc1 <-> cyc2 in staff: %+v, want allow", d)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("Check hangs on a cycle of groups")
				}
			})
			t.Run("forbid overrides permit", func(t *testing.T) {
				e.put(t, "no-alice", `forbid(principal == User::"alice", action, resource in Target::"db1");`)
				d := e.check(t, Request{Principal: user("alice"), Action: ActionConnect, Resource: target("db1")})
				if d.Allow || !slices.Equal(d.Policies, []string{"no-alice"}) {
					t.Errorf("%+v, want deny by no-alice", d)
				}
				// Even admins.
				e.put(t, "no-admin-rotate", `forbid(principal, action == Action::"rotate", resource == Target::"db1") when { principal in Group::"admins" };`)
				d = e.check(t, Request{Principal: user("admin"), Action: ActionRotate, Resource: target("db1")})
				if d.Allow || !slices.Equal(d.Policies, []string{"no-admin-rotate"}) {
					t.Errorf("admin: %+v, want deny by no-admin-rotate", d)
				}
			})
			t.Run("several permits", func(t *testing.T) {
				e.put(t, "multi", `permit(principal in Group::"eng", action == Action::"checkout", resource in Target::"db2");
@id("bob-db2") permit(principal == User::"bob", action == Action::"checkout", resource);
permit(principal, action == Action::"checkout", resource == Account::"db2/root") when { principal in Group::"staff" };`)
				d := e.check(t, Request{Principal: user("bob"), Action: ActionCheckout, Resource: account("db2/root")})
				if !d.Allow || !slices.Equal(d.Policies, []string{"bob-db2", "multi.3"}) {
					t.Errorf("%+v, want allow by bob-db2 and multi.3", d)
				}
			})
		})
	}
}

func TestResolverCalledOncePerEntity(t *testing.T) {
	e := newEnv(t, testenv.SQLite(t), Config{})
	// A diamond: alice in a and b, both in c; db1/root in db1.
	e.res.add(user("alice"), group("a"), group("b"))
	e.res.add(group("a"), group("c"))
	e.res.add(group("b"), group("c"))
	e.res.add(account("db1/root"), target("db1"))
	e.put(t, "p", `permit(principal in Group::"c", action == Action::"checkout", resource in Target::"db1");`)
	if d := e.check(t, Request{Principal: user("alice"), Action: ActionCheckout, Resource: account("db1/root")}); !d.Allow {
		t.Fatalf("%+v, want allow", d)
	}
	for uid, n := range e.res.calls {
		if n != 1 {
			t.Errorf("Parents(%s) called %d times, want 1", uid, n)
		}
	}
	if len(e.res.calls) != 6 {
		t.Errorf("resolver asked about %d entities, want 6: %v", len(e.res.calls), e.res.calls)
	}
}

func TestHierarchyBounds(t *testing.T) {
	e := newEnv(t, testenv.SQLite(t), Config{})
	prev := user("deep")
	for i := range MaxDepth + 2 {
		g := group(fmt.Sprint("d", i))
		e.res.add(prev, g)
		prev = g
	}
	_, err := e.az.Check(context.Background(), Request{Principal: user("deep"), Action: ActionConnect, Resource: target("db1")})
	if !errkind.Is(err, errkind.Invalid) {
		t.Errorf("chain of %d groups: err %v, want Invalid", MaxDepth+2, err)
	}
	for i := range MaxAncestors + 1 {
		e.res.add(user("wide"), group(fmt.Sprint("w", i)))
	}
	_, err = e.az.Check(context.Background(), Request{Principal: user("wide"), Action: ActionConnect, Resource: target("db1")})
	if !errkind.Is(err, errkind.Invalid) {
		t.Errorf("%d groups: err %v, want Invalid", MaxAncestors+1, err)
	}
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t, testenv.SQLite(t), Config{})
	for _, tc := range []struct {
		name string
		req  Request
	}{
		{"unknown action", Request{Principal: user("admin"), Action: "fly", Resource: target("db1")}},
		{"group as principal", Request{Principal: group("admins"), Action: ActionConnect, Resource: target("db1")}},
		{"resource type not for action", Request{Principal: user("admin"), Action: ActionAdmin, Resource: target("db1")}},
		{"unknown type", Request{Principal: UID{"Robot", "r2"}, Action: ActionConnect, Resource: target("db1")}},
		{"empty id", Request{Principal: user(""), Action: ActionConnect, Resource: target("db1")}},
		{"long id", Request{Principal: user(strings.Repeat("x", maxIDLen+1)), Action: ActionConnect, Resource: target("db1")}},
		{"bad via", Request{Principal: user("admin"), Action: ActionConnect, Resource: target("db1"), Context: Context{Via: "rdp"}}},
		{"extra not in schema", Request{Principal: user("admin"), Action: ActionConnect, Resource: target("db1"), Context: Context{Extra: map[string]any{"foo": true}}}},
		{"extra wrong type", Request{Principal: user("admin"), Action: ActionConnect, Resource: target("db1"), Context: Context{Extra: map[string]any{"mfa": "yes"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := e.az.Check(context.Background(), tc.req)
			if !errkind.Is(err, errkind.Invalid) || d.Allow {
				t.Errorf("Check: %+v, %v; want deny and Invalid", d, err)
			}
			d, err = e.az.Authorize(context.Background(), testOrigin, tc.req)
			if !errkind.Is(err, errkind.Invalid) || d.Allow {
				t.Errorf("Authorize: %+v, %v; want deny and Invalid", d, err)
			}
		})
	}
}

func TestAuthorizeAudits(t *testing.T) {
	for _, b := range testenv.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, b.Open(t), Config{})
			e.res.add(user("alice"), group("dba"))
			e.put(t, "dba", `permit(principal in Group::"dba", action == Action::"checkout", resource);`)
			e.put(t, "dba2", `permit(principal in Group::"dba", action in [Action::"checkout", Action::"checkin"], resource);`)
			req := Request{Principal: user("alice"), Action: ActionCheckout, Resource: account("db1/root"), Context: Context{Via: ViaSSH}}
			d, err := e.az.Authorize(ctx, testOrigin, req)
			if err != nil || !d.Allow || !slices.Equal(d.Policies, []string{"dba", "dba2"}) {
				t.Fatalf("Authorize: %+v, %v; want allow by dba, dba2", d, err)
			}
			req.Action = ActionRotate
			if d, err := e.az.Authorize(ctx, testOrigin, req); err != nil || d.Allow {
				t.Fatalf("Authorize rotate: %+v, %v; want deny", d, err)
			}
			evs, err := e.log.List(ctx, audit.Filter{Action: "authz.decide"})
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != 2 {
				t.Fatalf("%d authz.decide events, want 2", len(evs))
			}
			for i, want := range []struct{ outcome, action, policies string }{
				{audit.OutcomeAllow, ActionCheckout, "dba,dba2"},
				{audit.OutcomeDeny, ActionRotate, ""},
			} {
				ev := evs[i]
				if ev.Outcome != want.outcome || ev.Resource != `Account::"db1/root"` || ev.Actor != "user:admin" || ev.RequestID != "req-1" ||
					ev.Details["action"] != want.action || ev.Details["principal"] != `User::"alice"` ||
					ev.Details["policies"] != want.policies || ev.Details["via"] != ViaSSH {
					t.Errorf("event %d: %+v", i, ev)
				}
			}
			// Check does not audit.
			e.check(t, req)
			if evs, _ := e.log.List(ctx, audit.Filter{Action: "authz.decide"}); len(evs) != 2 {
				t.Errorf("Check wrote an event: %d events", len(evs))
			}
		})
	}
}

func TestAuthorizeFailsClosedWithoutAudit(t *testing.T) {
	e := newEnv(t, testenv.SQLite(t), Config{})
	e.log.Close()
	d, err := e.az.Authorize(context.Background(), testOrigin, Request{Principal: user("admin"), Action: ActionAdmin, Resource: SystemUID()})
	if !errkind.Is(err, errkind.Unavailable) || !errors.Is(err, audit.ErrClosed) {
		t.Errorf("err = %v, want Unavailable wrapping audit.ErrClosed", err)
	}
	if d.Allow || d.Decision != "deny" {
		t.Errorf("decision %+v with a closed audit log, want deny", d)
	}
	// Check, which does not audit, still answers.
	if d := e.check(t, Request{Principal: user("admin"), Action: ActionAdmin, Resource: SystemUID()}); !d.Allow {
		t.Errorf("Check: %+v, want allow", d)
	}
}

func TestMachinePrincipal(t *testing.T) {
	e := newEnv(t, testenv.SQLite(t), Config{})
	e.res.add(machine("ci"), group("deployers"))
	e.put(t, "deploy", `permit(principal is Machine in Group::"deployers", action == Action::"read_secret", resource);`)
	if d := e.check(t, Request{Principal: machine("ci"), Action: ActionReadSecret, Resource: UID{TypeSecret, "s"}}); !d.Allow {
		t.Errorf("%+v, want allow", d)
	}
	e.res.add(user("carol"), group("deployers"))
	if d := e.check(t, Request{Principal: user("carol"), Action: ActionReadSecret, Resource: UID{TypeSecret, "s"}}); d.Allow {
		t.Errorf("user in deployers: %+v, want deny (policy is for machines)", d)
	}
}

func TestAttributes(t *testing.T) {
	e := newEnv(t, testenv.SQLite(t), Config{})
	e.res.attrs[account("pg/root")] = map[string]any{"kind": "postgres"}
	e.res.attrs[account("ssh/root")] = map[string]any{"kind": "ssh"}
	e.res.attrs[user("alice")] = map[string]any{"email": "alice@example.com", "ignored": 1.5}
	e.put(t, "pg", `permit(principal, action == Action::"checkout", resource is Account)
		when { resource has kind && resource.kind == "postgres" && principal has email && principal.email like "*@example.com" };`)
	for _, tc := range []struct {
		p, r  UID
		allow bool
	}{
		{user("alice"), account("pg/root"), true},
		{user("alice"), account("ssh/root"), false},
		{user("alice"), account("unknown"), false},
		{user("bob"), account("pg/root"), false},
	} {
		if d := e.check(t, Request{Principal: tc.p, Action: ActionCheckout, Resource: tc.r}); d.Allow != tc.allow {
			t.Errorf("%s on %s: %+v, want allow=%v", tc.p, tc.r, d, tc.allow)
		}
	}
}

// TestConcurrentUse runs checks while policies change and reloads happen;
// run with -race.
func TestConcurrentUse(t *testing.T) {
	e := newEnv(t, testenv.SQLite(t), Config{ReloadInterval: time.Millisecond})
	e.res.add(user("alice"), group("dba"))
	ctx := context.Background()
	done := make(chan struct{})
	errs := make(chan error, 4)
	for range 3 {
		go func() {
			for {
				select {
				case <-done:
					errs <- nil
					return
				default:
				}
				e.clk.Add(time.Millisecond)
				if _, err := e.az.Authorize(ctx, testOrigin, Request{Principal: user("alice"), Action: ActionConnect, Resource: target("db1")}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := range 20 {
		e.put(t, fmt.Sprint("p", i%3), `permit(principal in Group::"dba", action == Action::"connect", resource);`)
		if i%3 == 2 {
			if err := e.az.Delete(ctx, testOrigin, "p1"); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(done)
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if d := e.check(t, Request{Principal: user("alice"), Action: ActionConnect, Resource: target("db1")}); !slices.Equal(d.Policies, []string{"p0", "p1", "p2"}) {
		t.Errorf("after the changes: %+v, want p0, p1, p2", d)
	}
}
