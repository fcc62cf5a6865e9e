package authz

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

func TestPutRefuses(t *testing.T) {
	for _, b := range testenv.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, b.Open(t), Config{})
			e.put(t, "taken", `@id("used") permit(principal == User::"x", action == Action::"connect", resource);`)
			before, err := e.az.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct {
				name, policy, text string
				kind               errkind.Kind
				msg                string // in the error
			}{
				{"syntax", "p", `permit(principal, action, resource`, errkind.Invalid, "parse error"},
				{"unknown action", "p", `permit(principal, action == Action::"fly", resource);`, errkind.Invalid, "unrecognized action `Action::\"fly\"`"},
				{"unknown entity type", "p", `permit(principal is Robot, action, resource);`, errkind.Invalid, "unrecognized entity type `Robot`"},
				{"unknown entity type in condition", "p", `permit(principal, action, resource) when { principal in Team::"a" };`, errkind.Invalid, "Team"},
				{"unknown context attribute", "p", `permit(principal, action, resource) when { context.foo };`, errkind.Invalid, "attribute `foo` in context"},
				{"wrong type", "p", `permit(principal, action, resource) when { context.mfa == "yes" };`, errkind.Invalid, "Bool and String are not compatible"},
				{"misspelt has", "p", `forbid(principal, action, resource) when { context has tikcet };`, errkind.Invalid, "`has` on context.tikcet"},
				{"misspelt has in a record", "p", `permit(principal, action, resource) when { context has forward && context.forward has prot };`, errkind.Invalid, "`has` on context.forward.prot"},
				{"misspelt has on the resource", "p", `forbid(principal, action, resource) when { resource has knd && resource.knd == "postgres" };`, errkind.Invalid, "`has` on resource.knd"},
				{"misspelt has on the principal", "p", `forbid(principal, action, resource) when { principal has emial };`, errkind.Invalid, "`has` on principal.emial"},
				{"unguarded optional", "p", `permit(principal, action, resource) when { context.ticket == "x" };`, errkind.Invalid, "optional attribute `ticket`"},
				{"unknown entity attribute", "p", `permit(principal, action == Action::"connect", resource) when { resource.owner == "x" };`, errkind.Invalid, "attribute `owner`"},
				{"action on wrong resource", "p", `permit(principal, action == Action::"admin", resource is Account);`, errkind.Invalid, "applicable action"},
				{"empty", "p", `// nothing`, errkind.Invalid, "no policy statement"},
				{"bad name", "P!", `permit(principal, action, resource);`, errkind.Invalid, "does not match"},
				{"long name", strings.Repeat("a", 65), `permit(principal, action, resource);`, errkind.Invalid, "does not match"},
				{"bad @id", "p", `@id("No Spaces") permit(principal, action, resource);`, errkind.Invalid, "@id"},
				{"duplicate @id", "p", `@id("a") permit(principal, action, resource); @id("a") forbid(principal, action, resource);`, errkind.Invalid, "used twice"},
				{"id used elsewhere", "p", `@id("used") permit(principal, action, resource);`, errkind.Conflict, "already used"},
				{"name is another's id", "used", `permit(principal, action, resource);`, errkind.Conflict, "already used"},
				{"too large", "p", "permit(principal, action, resource);" + strings.Repeat(" ", MaxPolicyBytes), errkind.TooLarge, "more than"},
				{"NUL", "p", "permit(principal, action, resource); // \x00", errkind.Invalid, "NUL"},
				{"overwrite builtin", "admins", `permit(principal, action, resource);`, errkind.Conflict, "built in"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					_, err := e.az.Put(ctx, testOrigin, tc.policy, tc.text)
					if !errkind.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.msg) {
						t.Fatalf("Put: %v; want kind %v with %q", err, tc.kind, tc.msg)
					}
					if !strings.HasPrefix(err.Error(), "authz: ") {
						t.Errorf("error %q lacks the package prefix", err)
					}
					if tc.kind == errkind.Invalid || tc.kind == errkind.TooLarge {
						if verr := Validate(tc.text); verr == nil && tc.policy == "p" {
							t.Errorf("Validate accepts what Put refuses")
						}
					}
				})
			}
			after, err := e.az.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(after) != len(before) || after[0].Text != before[0].Text {
				t.Errorf("refused Puts changed the store: %v -> %v", before, after)
			}
			if evs, _ := e.log.List(ctx, audit.Filter{Action: "policy.put"}); len(evs) != 2 { // admins, taken
				t.Errorf("%d policy.put events, want 2", len(evs))
			}
		})
	}
}

func TestPolicyLifecycle(t *testing.T) {
	for _, b := range testenv.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, b.Open(t), Config{})
			ps, err := e.az.List(ctx)
			if err != nil || len(ps) != 1 || ps[0].Name != "admins" || !ps[0].Builtin || !slices.Equal(ps[0].IDs, []string{"admins"}) {
				t.Fatalf("List on a new store: %+v, %v; want the builtin admins", ps, err)
			}
			if err := e.az.Delete(ctx, testOrigin, "admins"); !errkind.Is(err, errkind.Conflict) {
				t.Errorf("Delete admins: %v, want Conflict", err)
			}
			if err := e.az.Delete(ctx, testOrigin, "nope"); !errkind.Is(err, errkind.NotFound) {
				t.Errorf("Delete nope: %v, want NotFound", err)
			}
			if _, err := e.az.Get(ctx, "nope"); !errkind.Is(err, errkind.NotFound) {
				t.Errorf("Get nope: %v, want NotFound", err)
			}

			e.res.add(user("alice"), group("dba"))
			req := Request{Principal: user("alice"), Action: ActionConnect, Resource: target("db1")}
			p := e.put(t, "dba", "permit(principal in Group::\"dba\", action == Action::\"connect\", resource);\nforbid(principal, action, resource) when { context.via == \"db\" };")
			if !slices.Equal(p.IDs, []string{"dba.1", "dba.2"}) || p.Builtin || !p.CreatedAt.Equal(e.clk.Now()) {
				t.Errorf("Put: %+v", p)
			}
			if d := e.check(t, req); !d.Allow || !slices.Equal(d.Policies, []string{"dba.1"}) {
				t.Errorf("after Put: %+v, want allow by dba.1", d)
			}
			created := p.CreatedAt
			e.clk.Add(time.Hour)
			p = e.put(t, "dba", `permit(principal in Group::"dba", action == Action::"checkout", resource);`)
			got, err := e.az.Get(ctx, "dba")
			if err != nil || got.Text != p.Text || !got.CreatedAt.Equal(created) || !got.UpdatedAt.Equal(e.clk.Now()) || !slices.Equal(got.IDs, []string{"dba"}) {
				t.Errorf("Get after replace: %+v, %v", got, err)
			}
			if d := e.check(t, req); d.Allow {
				t.Errorf("after replace: %+v, want deny", d)
			}
			if err := e.az.Delete(ctx, testOrigin, "dba"); err != nil {
				t.Fatal(err)
			}
			if _, err := e.az.Get(ctx, "dba"); !errkind.Is(err, errkind.NotFound) {
				t.Errorf("Get after Delete: %v", err)
			}
			req.Action = ActionCheckout
			req.Resource = account("a")
			if d := e.check(t, req); d.Allow {
				t.Errorf("after Delete: %+v, want deny", d)
			}
			evs, err := e.log.List(ctx, audit.Filter{})
			if err != nil {
				t.Fatal(err)
			}
			var actions []string
			for _, ev := range evs {
				actions = append(actions, ev.Action+" "+ev.Resource)
			}
			want := []string{"policy.put admins", "policy.put dba", "policy.put dba", "policy.delete dba"}
			if !slices.Equal(actions, want) {
				t.Errorf("audit: %q, want %q", actions, want)
			}
			// A second Authorizer on the same store installs nothing more.
			if _, err := New(ctx, Config{DB: e.db, Audit: e.log, Entities: e.res}); err != nil {
				t.Fatal(err)
			}
			if ps, _ := e.az.List(ctx); len(ps) != 1 {
				t.Errorf("%d policies after a second New, want 1", len(ps))
			}
		})
	}
}

// TestTwoServers checks that a change made through one Authorizer reaches
// another on the same PostgreSQL database within ReloadInterval.
func TestTwoServers(t *testing.T) {
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
	e1 := newEnv(t, open(), Config{})
	e2 := newEnv(t, open(), Config{ReloadInterval: time.Second})
	e2.res.add(user("alice"), group("dba"))
	req := Request{Principal: user("alice"), Action: ActionConnect, Resource: target("db1")}
	if d := e2.check(t, req); d.Allow {
		t.Fatalf("before Put: %+v", d)
	}
	e1.put(t, "dba", `permit(principal in Group::"dba", action == Action::"connect", resource);`)
	e2.clk.Add(500 * time.Millisecond)
	if d := e2.check(t, req); d.Allow {
		t.Errorf("seen before ReloadInterval passed: %+v (the check is paced)", d)
	}
	e2.clk.Add(600 * time.Millisecond)
	if d := e2.check(t, req); !d.Allow {
		t.Errorf("after ReloadInterval: %+v, want allow", d)
	}
	if err := e1.az.Delete(ctx, testOrigin, "dba"); err != nil {
		t.Fatal(err)
	}
	e2.clk.Add(2 * time.Second)
	if d := e2.check(t, req); d.Allow {
		t.Errorf("after Delete elsewhere: %+v, want deny", d)
	}
	// Reload applies a change at once.
	e1.put(t, "dba2", `permit(principal in Group::"dba", action == Action::"connect", resource);`)
	if err := e2.az.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if d := e2.check(t, req); !d.Allow {
		t.Errorf("after Reload: %+v, want allow", d)
	}
}

func TestNewRequires(t *testing.T) {
	db := testenv.SQLite(t)
	log, err := audit.New(context.Background(), audit.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	res := newMemResolver()
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no db", Config{Audit: log, Entities: res}},
		{"no audit", Config{DB: db, Entities: res}},
		{"no resolver", Config{DB: db, Audit: log}},
		{"negative interval", Config{DB: db, Audit: log, Entities: res, ReloadInterval: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(context.Background(), tc.cfg); !errkind.Is(err, errkind.Invalid) {
				t.Errorf("New: %v, want Invalid", err)
			}
		})
	}
}

// port_forward applies to accounts and targets, like connect, and nothing
// else: a policy for it on another resource type is refused. Its
// destination, context.forward, is optional: read only after `has`, and
// misspelt attributes are refused, in a `has` test too.
func TestValidatePortForward(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		ok         bool
	}{
		{"on a target, over ssh", `permit(principal in Group::"ops", action == Action::"port_forward", resource in Target::"web1") when { context.via == "ssh" };`, true},
		{"on an account", `permit(principal == User::"alice", action == Action::"port_forward", resource == Account::"web1/root");`, true},
		{"with connect", `permit(principal, action in [Action::"connect", Action::"port_forward"], resource is Account);`, true},
		{"on the system", `permit(principal, action == Action::"port_forward", resource == System::"warder");`, false},
		{"on a role", `permit(principal, action == Action::"port_forward", resource is Role);`, false},
		{"to one destination", `permit(principal, action == Action::"port_forward", resource) when { context has forward && context.forward.direction == "local" && context.forward.host == "127.0.0.1" && context.forward.port == 5432 };`, true},
		{"forbid a port range", `forbid(principal, action, resource) when { context has forward && context.forward.port < 1024 };`, true},
		{"destination unguarded", `permit(principal, action == Action::"port_forward", resource) when { context.forward.port == 5432 };`, false},
		{"misspelt attribute", `permit(principal, action == Action::"port_forward", resource) when { context has forward && context.forward.prot == 5432 };`, false},
		{"misspelt guard", `forbid(principal, action == Action::"port_forward", resource) when { context has forwrd && context.forwrd.port == 22 };`, false},
		{"misspelt nested guard", `forbid(principal, action, resource) when { context has forward && context.forward has prot };`, false},
		{"port as a string", `permit(principal, action == Action::"port_forward", resource) when { context has forward && context.forward.port == "5432" };`, false},
		{"entity attribute guard", `forbid(principal, action, resource) when { resource has kind && resource.kind == "postgres" && principal has email };`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := Validate(tc.text); (err == nil) != tc.ok {
				t.Errorf("Validate: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
