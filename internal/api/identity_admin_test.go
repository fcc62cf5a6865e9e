package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/api"
	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/identity"
)

// mkMachine creates machine "mach<n>" with one secret id and returns its
// name and the secret id's accessor.
func mkMachine(f *fixture, t *testing.T, n int) (name, accessor string) {
	t.Helper()
	name = fmt.Sprintf("mach%d", n)
	if _, err := f.id.CreateMachine(context.Background(), testO, identity.MachineSpec{Name: name}); err != nil {
		t.Fatal(err)
	}
	_, info, err := f.id.IssueSecretID(context.Background(), testO, name, identity.SecretIDSpec{})
	if err != nil {
		t.Fatal(err)
	}
	return name, info.ID
}

// auditActions returns the actions of the audit events after seq after.
func auditActions(t *testing.T, f *fixture, after int64) []string {
	t.Helper()
	evs, err := f.audit.List(context.Background(), audit.Filter{AfterSeq: after, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Action)
	}
	return out
}

func lastSeq(t *testing.T, f *fixture) int64 {
	t.Helper()
	evs, err := f.audit.List(context.Background(), audit.Filter{Limit: 1})
	if err != nil || len(evs) == 0 {
		t.Fatalf("audit: %v, %d events", err, len(evs))
	}
	return evs[0].Seq
}

func hasAction(actions []string, a string) bool {
	for _, x := range actions {
		if x == a {
			return true
		}
	}
	return false
}

// TestMachineAdminRoutes drives the machine routes an administrator needs
// after creating one: show, secret ids (list, revoke one, revoke all),
// disable, enable and delete, each audited.
func TestMachineAdminRoutes(t *testing.T) {
	f := newFixture(t)
	admin := f.initAndUnseal(t)
	ctx := context.Background()
	name, acc := mkMachine(f, t, 1)
	sid, info2, err := f.id.IssueSecretID(ctx, testO, name, identity.SecretIDSpec{Uses: 3})
	if err != nil {
		t.Fatal(err)
	}
	m, err := f.id.Machine(ctx, name)
	if err != nil {
		t.Fatal(err)
	}

	r := f.do(t, "GET", "/v1/machines/"+name, admin, "")
	if r.status != 200 || !strings.Contains(r.body, `"status":"active"`) || !strings.Contains(r.body, `"role_id":"`+m.RoleID+`"`) {
		t.Errorf("show: %d %s", r.status, r.body)
	}
	wantError(t, f.do(t, "GET", "/v1/machines/nobody", admin, ""), 404, "not_found")

	r = f.do(t, "GET", "/v1/machines/"+name+"/secret-ids", admin, "")
	var list api.SecretIDList
	if err := json.Unmarshal([]byte(r.body), &list); r.status != 200 || err != nil || len(list.SecretIDs) != 2 ||
		list.SecretIDs[0].ID != acc || list.SecretIDs[1].UsesLeft != 3 {
		t.Errorf("secret ids: %d %s", r.status, r.body)
	}
	if strings.Contains(r.body, sid[len(sid)-43:]) {
		t.Error("the listing shows a secret")
	}

	seq := lastSeq(t, f)
	if r := f.do(t, "DELETE", "/v1/machines/"+name+"/secret-ids/"+acc, admin, ""); r.status != 204 {
		t.Errorf("revoke one: %d %s", r.status, r.body)
	}
	wantError(t, f.do(t, "DELETE", "/v1/machines/"+name+"/secret-ids/"+acc, admin, ""), 404, "not_found")
	wantError(t, f.do(t, "DELETE", "/v1/machines/"+name+"/secret-ids/not-an-accessor", admin, ""), 400, "invalid")
	r = f.do(t, "DELETE", "/v1/machines/"+name+"/secret-ids", admin, "")
	if r.status != 200 || strings.TrimSpace(r.body) != `{"revoked":["`+info2.ID+`"]}` {
		t.Errorf("revoke all: %d %s", r.status, r.body)
	}
	if _, _, err := f.id.LoginMachine(ctx, testO, m.RoleID, sid, netip.MustParseAddr("192.0.2.1")); err != identity.ErrMachineCredentials {
		t.Errorf("login with a revoked secret id = %v", err)
	}
	if a := auditActions(t, f, seq); !hasAction(a, "identity.machine.secret_id.revoke") {
		t.Errorf("audit after revoking: %v", a)
	}

	// Disable revokes the machine's tokens; enable lets it log in again.
	name2, _ := mkMachine(f, t, 2)
	sid2, _, err := f.id.IssueSecretID(ctx, testO, name2, identity.SecretIDSpec{})
	if err != nil {
		t.Fatal(err)
	}
	m2, _ := f.id.Machine(ctx, name2)
	tok, _, err := f.id.LoginMachine(ctx, testO, m2.RoleID, sid2, netip.MustParseAddr("192.0.2.1"))
	if err != nil {
		t.Fatal(err)
	}
	if r := f.do(t, "GET", "/v1/auth/token/self", tok, ""); r.status != 200 {
		t.Fatalf("machine token: %d %s", r.status, r.body)
	}
	seq = lastSeq(t, f)
	r = f.do(t, "POST", "/v1/machines/"+name2+"/disable", admin, "")
	if r.status != 200 || !strings.Contains(r.body, `"status":"disabled"`) {
		t.Errorf("disable: %d %s", r.status, r.body)
	}
	wantError(t, f.do(t, "GET", "/v1/auth/token/self", tok, ""), 401, "unauthenticated")
	r = f.do(t, "POST", "/v1/machines/"+name2+"/enable", admin, "")
	if r.status != 200 || !strings.Contains(r.body, `"status":"active"`) {
		t.Errorf("enable: %d %s", r.status, r.body)
	}
	if r := f.do(t, "DELETE", "/v1/machines/"+name2, admin, ""); r.status != 204 {
		t.Errorf("delete: %d %s", r.status, r.body)
	}
	wantError(t, f.do(t, "GET", "/v1/machines/"+name2, admin, ""), 404, "not_found")
	a := auditActions(t, f, seq)
	for _, want := range []string{"identity.machine.disable", "identity.machine.enable", "identity.machine.delete"} {
		if !hasAction(a, want) {
			t.Errorf("audit lacks %s: %v", want, a)
		}
	}
}

// TestUserAdminRoutes: user show tells the lock, unlock ends it, and an
// admin's password reset revokes the user's tokens.
func TestUserAdminRoutes(t *testing.T) {
	f := newFixture(t)
	admin := f.initAndUnseal(t)
	ctx := context.Background()
	const pw = "correct horse battery"
	if _, err := f.id.CreateUser(ctx, testO, identity.UserSpec{Name: "carol", Password: []byte(pw)}); err != nil {
		t.Fatal(err)
	}
	carol := f.login(t, "carol", pw)
	for range 5 { // the default MaxFailures
		f.do(t, "POST", "/v1/auth/login", "", `{"user":"carol","password":"wrong wrong wrong"}`)
	}
	r := f.do(t, "GET", "/v1/users/carol", admin, "")
	var d api.UserDetail
	if err := json.Unmarshal([]byte(r.body), &d); r.status != 200 || err != nil || d.Name != "carol" ||
		d.FailedLogins != 5 || time.Until(d.LockedUntil) < 10*time.Minute {
		t.Errorf("show a locked user: %d %s", r.status, r.body)
	}
	wantError(t, f.do(t, "POST", "/v1/auth/login", "", `{"user":"carol","password":"`+pw+`"}`), 429, "rate_limited")

	seq := lastSeq(t, f)
	r = f.do(t, "POST", "/v1/users/carol/unlock", admin, "")
	if r.status != 200 || strings.Contains(r.body, "locked_until") || !strings.Contains(r.body, `"failed_logins":0`) {
		t.Errorf("unlock: %d %s", r.status, r.body)
	}
	wantError(t, f.do(t, "POST", "/v1/users/nobody/unlock", admin, ""), 404, "not_found")
	f.login(t, "carol", pw)

	// The admin resets carol's password: her tokens go.
	wantError(t, f.do(t, "POST", "/v1/users/carol/password", admin, `{"password":"short"}`), 400, "invalid")
	wantError(t, f.do(t, "POST", "/v1/users/carol/password", admin, `{}`), 400, "invalid")
	if r := f.do(t, "POST", "/v1/users/carol/password", admin, `{"password":"a new long passphrase"}`); r.status != 200 {
		t.Errorf("set password: %d %s", r.status, r.body)
	}
	wantError(t, f.do(t, "GET", "/v1/auth/token/self", carol, ""), 401, "unauthenticated")
	carol = f.login(t, "carol", "a new long passphrase")
	a := auditActions(t, f, seq)
	for _, want := range []string{"identity.user.unlock", "identity.user.password"} {
		if !hasAction(a, want) {
			t.Errorf("audit lacks %s: %v", want, a)
		}
	}

	// An admin setting their own password keeps the token they use.
	if _, err := f.id.CreateUser(ctx, testO, identity.UserSpec{Name: "root2", Password: []byte(pw)}); err != nil {
		t.Fatal(err)
	}
	if err := f.id.AddMember(ctx, testO, "admins", identity.Member{Kind: "user", Name: "root2"}); err != nil {
		t.Fatal(err)
	}
	root2, other := f.login(t, "root2", pw), f.login(t, "root2", pw)
	if r := f.do(t, "POST", "/v1/users/root2/password", root2, `{"password":"a new long passphrase"}`); r.status != 200 {
		t.Fatalf("set own password: %d %s", r.status, r.body)
	}
	if r := f.do(t, "GET", "/v1/auth/token/self", root2, ""); r.status != 200 {
		t.Errorf("own token after setting own password: %d %s", r.status, r.body)
	}
	wantError(t, f.do(t, "GET", "/v1/auth/token/self", other, ""), 401, "unauthenticated")
	if r := f.do(t, "GET", "/v1/auth/token/self", carol, ""); r.status != 200 {
		t.Errorf("another user's token: %d %s", r.status, r.body)
	}
}
