package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/access"
	"github.com/warderhq/warder/internal/api"
	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/recording"
	"github.com/warderhq/warder/internal/vault"
)

// endpoint describes how to call one route successfully. Every route the
// API registers must have an entry: a new endpoint fails this test until
// its access rules are written down here.
type endpoint struct {
	// request returns the path and body of a call that succeeds for an
	// authorised caller; n is unique per call, for names.
	request func(f *fixture, t *testing.T, n int) (path, body string)
	// ok is the status of the authorised call.
	ok int
}

var seq atomic.Int64

func uniq() int { return int(seq.Add(1)) }

// mkUser creates a user directly in the directory and returns its name.
func mkUser(f *fixture, t *testing.T, n int) string {
	t.Helper()
	name := fmt.Sprintf("victim%d", n)
	if _, err := f.id.CreateUser(context.Background(), audit.Origin{Actor: "test"}, identity.UserSpec{Name: name}); err != nil {
		t.Fatal(err)
	}
	return name
}

func mkGroup(f *fixture, t *testing.T, n int) string {
	t.Helper()
	name := fmt.Sprintf("g%d", n)
	if _, err := f.id.CreateGroup(context.Background(), audit.Origin{Actor: "test"}, name, ""); err != nil {
		t.Fatal(err)
	}
	return name
}

func fixed(path, body string) func(*fixture, *testing.T, int) (string, string) {
	return func(*fixture, *testing.T, int) (string, string) { return path, body }
}

// mkAccount creates target "tgt" (once) and a fresh account on it.
func mkAccount(f *fixture, t *testing.T, n int) string {
	t.Helper()
	ctx := context.Background()
	if _, err := f.vault.Target(ctx, "tgt"); err != nil {
		if _, err := f.vault.AddTarget(ctx, audit.Origin{Actor: "test"}, vault.TargetSpec{Name: "tgt", Kind: "mem", Host: "127.0.0.1", Port: 1}); err != nil {
			t.Fatal(err)
		}
	}
	a, err := f.vault.AddAccount(ctx, audit.Origin{Actor: "test"}, vault.AccountSpec{Target: "tgt", Username: fmt.Sprintf("acct%d", n),
		Credential: &connector.Credential{Kind: connector.Password, Secret: []byte("right")}})
	if err != nil {
		t.Fatal(err)
	}
	return a.ID
}

var (
	bobP   = identity.Principal{Kind: identity.KindUser, Name: "bob"}
	adminP = identity.Principal{Kind: identity.KindUser, Name: "admin"}
	testO  = audit.Origin{Actor: "test"}
)

// mkRole creates a role granting checkout on target tgt; eligible (when
// not nil) is made eligible with the given approvals from group approvers.
func mkRole(f *fixture, t *testing.T, n int, eligible *identity.Principal, approvals int) string {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("role%d", n)
	if _, err := f.access.CreateRole(ctx, testO, access.RoleSpec{Name: name,
		Template: `permit(principal == ?principal, action == Action::"checkout", resource in Target::"tgt");`}); err != nil {
		t.Fatal(err)
	}
	if eligible != nil {
		e := access.Eligibility{Role: name, Subject: access.Subject{Kind: access.SubjectUser, Name: eligible.Name}, Approvals: approvals, MaxTTL: 8 * time.Hour}
		if approvals > 0 {
			e.ApproverGroup = "approvers"
		}
		if _, err := f.access.SetEligibility(ctx, testO, e); err != nil {
			t.Fatal(err)
		}
	}
	return name
}

// mkRequest makes p request a fresh role needing approvals from group
// approvers (which bob is in) and returns its id.
func mkRequest(f *fixture, t *testing.T, n int, p identity.Principal, approvals int) access.Request {
	t.Helper()
	r, err := f.access.CreateRequest(context.Background(), testO, p, access.RequestSpec{Role: mkRole(f, t, n, &p, approvals), TTL: time.Hour, Reason: "access table"})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// mkIncident opens and ends an emergency grant of a break-glass role for
// the admin, and returns its incident, which bob (an approver) may review.
func mkIncident(f *fixture, t *testing.T, n int) string {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("bg%d", n)
	if _, err := f.access.CreateRole(ctx, testO, access.RoleSpec{Name: name, BreakGlass: true,
		Template: `permit(principal == ?principal, action == Action::"checkout", resource in Target::"tgt");`}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.access.SetEligibility(ctx, testO, access.Eligibility{Role: name, Subject: access.Subject{Kind: access.SubjectUser, Name: "admin"},
		Approvals: 2, ApproverGroup: "approvers", MaxTTL: time.Hour, AllowEmergency: true}); err != nil {
		t.Fatal(err)
	}
	req, err := f.access.CreateRequest(ctx, testO, adminP, access.RequestSpec{Role: name, TTL: time.Hour, Reason: "outage", Emergency: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.access.RevokeGrant(ctx, testO, req.GrantID, "over"); err != nil {
		t.Fatal(err)
	}
	ins, err := f.access.Incidents(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range ins {
		if in.GrantID == req.GrantID {
			return in.ID
		}
	}
	t.Fatal("no incident opened")
	return ""
}

// mkReview starts a campaign over a fresh role the admin is eligible for,
// reviewed by group approvers.
func mkReview(f *fixture, t *testing.T, n int) string {
	t.Helper()
	role := mkRole(f, t, n, &adminP, 0)
	camp, err := f.access.StartReview(context.Background(), testO, access.ReviewSpec{Scope: access.ScopeRole, Target: role,
		Deadline: time.Now().Add(24 * time.Hour), Reviewer: "approvers"})
	if err != nil {
		t.Fatal(err)
	}
	return camp.ID
}

// mkSession records a short ssh session; a live one (closeAfter > 0)
// stays open that long, so that /live and kill have something to act on.
func mkSession(f *fixture, t *testing.T, closeAfter time.Duration) string {
	t.Helper()
	ctx := context.Background()
	sess, err := f.recorder.Start(ctx, testO, recording.Meta{Kind: recording.SSH, Principal: "user:admin", Target: "web1", Account: "web1/root", PTY: true, Width: 80, Height: 24})
	if err != nil {
		t.Fatal(err)
	}
	sess.Record(recording.Input, []byte("ls -la\r"))
	sess.Record(recording.Output, []byte("total 0\r\n"))
	if closeAfter == 0 {
		sess.Close(ctx, "closed")
	} else {
		time.AfterFunc(closeAfter, func() { sess.Close(context.Background(), "closed") })
	}
	return sess.ID()
}

var endpoints = map[string]endpoint{
	"GET /v1/sessions": {fixed("/v1/sessions", ""), 200},
	"GET /v1/sessions/{id}": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/sessions/" + mkSession(f, t, 0), ""
	}, 200},
	"GET /v1/sessions/{id}/recording": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/sessions/" + mkSession(f, t, 0) + "/recording", ""
	}, 200},
	"GET /v1/sessions/{id}/live": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/sessions/" + mkSession(f, t, 300*time.Millisecond) + "/live", ""
	}, 200},
	"POST /v1/sessions/{id}/kill": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/sessions/" + mkSession(f, t, 5*time.Second) + "/kill", `{"message":"bye"}`
	}, 204},

	"GET /v1/incidents": {fixed("/v1/incidents", ""), 200},
	"POST /v1/incidents/{id}/review": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/incidents/" + mkIncident(f, t, n) + "/review", `{"notes":"reviewed"}`
	}, 200},
	"POST /v1/reviews":     {fixed("/v1/reviews", `{"scope":"role","period":"24h","reviewer":"approvers"}`), 200},
	"GET /v1/reviews":      {fixed("/v1/reviews", ""), 200},
	"GET /v1/reviews/{id}": {func(f *fixture, t *testing.T, n int) (string, string) { return "/v1/reviews/" + mkReview(f, t, n), "" }, 200},
	"POST /v1/reviews/{id}/items/{item}/decide": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/reviews/" + mkReview(f, t, n) + "/items/1/decide", `{"decision":"keep"}`
	}, 200},
	"GET /v1/reviews/{id}/report": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/reviews/" + mkReview(f, t, n) + "/report?format=csv", ""
	}, 200},

	"POST /v1/roles": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/roles", fmt.Sprintf(`{"name":"nr%d","template":"permit(principal == ?principal, action == Action::\"checkout\", resource);"}`, n)
	}, 200},
	"GET /v1/roles": {fixed("/v1/roles", ""), 200},
	"GET /v1/roles/{name}": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/roles/" + mkRole(f, t, n, nil, 0), ""
	}, 200},
	"DELETE /v1/roles/{name}": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/roles/" + mkRole(f, t, n, nil, 0), ""
	}, 204},
	"POST /v1/roles/{name}/eligibility": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/roles/" + mkRole(f, t, n, nil, 0) + "/eligibility", `{"user":"bob","max_ttl":"2h"}`
	}, 200},
	"GET /v1/roles/{name}/eligibility": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/roles/" + mkRole(f, t, n, &bobP, 0) + "/eligibility", ""
	}, 200},
	"DELETE /v1/roles/{name}/eligibility/{kind}/{subject}": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/roles/" + mkRole(f, t, n, &bobP, 0) + "/eligibility/user/bob", ""
	}, 204},
	"POST /v1/requests": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/requests", fmt.Sprintf(`{"role":"%s","ttl":"1h","reason":"access table"}`, mkRole(f, t, n, &bobP, 0))
	}, 200},
	"GET /v1/requests": {fixed("/v1/requests?mine=1", ""), 200},
	"GET /v1/requests/{id}": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/requests/" + mkRequest(f, t, n, bobP, 1).ID, ""
	}, 200},
	"POST /v1/requests/{id}/approve": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/requests/" + mkRequest(f, t, n, adminP, 1).ID + "/approve", `{"comment":"ok"}`
	}, 200},
	"POST /v1/requests/{id}/deny": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/requests/" + mkRequest(f, t, n, adminP, 1).ID + "/deny", `{"comment":"no"}`
	}, 200},
	"POST /v1/requests/{id}/cancel": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/requests/" + mkRequest(f, t, n, bobP, 1).ID + "/cancel", ""
	}, 200},
	"GET /v1/grants": {fixed("/v1/grants?mine=1", ""), 200},
	"POST /v1/grants/{id}/extend": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/grants/" + mkRequest(f, t, n, bobP, 0).GrantID + "/extend", `{"ttl":"2h","reason":"more time"}`
	}, 200},
	"POST /v1/grants/{id}/revoke": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/grants/" + mkRequest(f, t, n, bobP, 0).GrantID + "/revoke", `{"reason":"done"}`
	}, 200},
	"GET /v1/grants/{id}/credential": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/grants/" + mkRequest(f, t, n, bobP, 0).GrantID + "/credential", ""
	}, 404}, // authenticated, bob's own grant; the role defines no ephemeral user

	"POST /v1/targets": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/targets", fmt.Sprintf(`{"name":"t%d","kind":"postgres","host":"127.0.0.1","port":5432}`, n)
	}, 200},
	"GET /v1/targets": {fixed("/v1/targets", ""), 200},
	"GET /v1/targets/{name}": {func(f *fixture, t *testing.T, n int) (string, string) {
		mkAccount(f, t, n)
		return "/v1/targets/tgt", ""
	}, 200},
	"POST /v1/targets/{name}/rotate": {func(f *fixture, t *testing.T, n int) (string, string) {
		mkAccount(f, t, n)
		return "/v1/targets/tgt/rotate", ""
	}, 200},
	"PUT /v1/targets/{name}/rules": {func(f *fixture, t *testing.T, n int) (string, string) {
		mkAccount(f, t, n)
		return "/v1/targets/tgt/rules", `{"rules":[{"pattern":"(?i)drop","action":"block"}]}`
	}, 200},
	"DELETE /v1/targets/{name}": {func(f *fixture, t *testing.T, n int) (string, string) {
		if _, err := f.vault.AddTarget(context.Background(), audit.Origin{Actor: "test"}, vault.TargetSpec{Name: fmt.Sprintf("gone%d", n), Kind: "mem", Host: "127.0.0.1", Port: 1}); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("/v1/targets/gone%d", n), ""
	}, 204},
	"POST /v1/accounts": {func(f *fixture, t *testing.T, n int) (string, string) {
		mkAccount(f, t, n)
		return "/v1/accounts", fmt.Sprintf(`{"target":"tgt","username":"new%d","password":"right"}`, n)
	}, 200},
	"GET /v1/accounts": {fixed("/v1/accounts", ""), 200},
	"GET /v1/accounts/{target}/{user}": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/accounts/" + mkAccount(f, t, n), ""
	}, 200},
	"DELETE /v1/accounts/{target}/{user}": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/accounts/" + mkAccount(f, t, n), ""
	}, 204},
	"GET /v1/accounts/{target}/{user}/versions": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/accounts/" + mkAccount(f, t, n) + "/versions", ""
	}, 200},
	"POST /v1/accounts/{target}/{user}/verify": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/accounts/" + mkAccount(f, t, n) + "/verify", ""
	}, 200},
	"POST /v1/accounts/{target}/{user}/rotate": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/accounts/" + mkAccount(f, t, n) + "/rotate", ""
	}, 200},
	"POST /v1/accounts/{target}/{user}/checkout": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/accounts/" + mkAccount(f, t, n) + "/checkout", `{"reason":"access table"}`
	}, 200},
	"POST /v1/accounts/{target}/{user}/checkin": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/accounts/" + mkAccount(f, t, n) + "/checkin", ""
	}, 404}, // authenticated; bob holds no lease
	"GET /v1/leases":              {fixed("/v1/leases", ""), 200},
	"POST /v1/leases/{id}/extend": {fixed("/v1/leases/nosuchlease/extend", `{"ttl":"10m"}`), 404}, // authenticated; not bob's
	"POST /v1/leases/{id}/force-checkin": {func(f *fixture, t *testing.T, n int) (string, string) {
		l, err := f.vault.Checkout(context.Background(), audit.Origin{Actor: "test"}, vault.CheckoutRequest{
			Account: mkAccount(f, t, n), Principal: identity.Principal{Kind: identity.KindUser, Name: "admin"}, Reason: "test"})
		if err != nil {
			t.Fatal(err)
		}
		return "/v1/leases/" + l.ID + "/force-checkin", ""
	}, 200},
	"PUT /v1/secrets/{path...}": {func(f *fixture, t *testing.T, n int) (string, string) {
		return fmt.Sprintf("/v1/secrets/app/s%d", n), `{"data":{"KEY":"v"}}`
	}, 200},
	"GET /v1/secrets/{path...}": {func(f *fixture, t *testing.T, n int) (string, string) {
		path := fmt.Sprintf("app/r%d", n)
		if _, err := f.vault.PutSecret(context.Background(), audit.Origin{Actor: "test"}, path, map[string]string{"KEY": "v"}); err != nil {
			t.Fatal(err)
		}
		return "/v1/secrets/" + path, ""
	}, 200},
	"GET /v1/secrets": {fixed("/v1/secrets", ""), 200},

	"GET /v1/sys/health":      {fixed("/v1/sys/health", ""), 200},
	"GET /v1/sys/seal-status": {fixed("/v1/sys/seal-status", ""), 200},
	"POST /v1/sys/init":       {fixed("/v1/sys/init", `{"shares":1,"threshold":1}`), 409}, // open, but refused once initialised
	"POST /v1/sys/unseal":     {fixed("/v1/sys/unseal", `{"reset":true}`), 200},
	"POST /v1/sys/seal":       {nil, 200}, // checked last, separately
	"POST /v1/sys/rotate-key": {fixed("/v1/sys/rotate-key", ""), 200},

	"GET /v1/audit/events": {fixed("/v1/audit/events", ""), 200},
	"GET /v1/audit/verify": {fixed("/v1/audit/verify", ""), 200},
	"GET /v1/audit/export": {fixed("/v1/audit/export", ""), 200},

	"POST /v1/auth/login":             {fixed("/v1/auth/login", `{"user":"bob","password":"correct horse battery"}`), 200},
	"POST /v1/auth/machine/login":     {fixed("/v1/auth/machine/login", `{"role_id":"nope","secret_id":"nope"}`), 401}, // open; bad credentials
	"GET /v1/auth/token/self":         {fixed("/v1/auth/token/self", ""), 200},
	"POST /v1/auth/token/renew":       {fixed("/v1/auth/token/renew", ""), 200},
	"POST /v1/auth/token/revoke-self": {fixed("/v1/auth/token/revoke-self", ""), 204},
	"POST /v1/auth/mfa/totp/enroll":   {fixed("/v1/auth/mfa/totp/enroll", ""), 200},
	"POST /v1/auth/mfa/totp/confirm":  {fixed("/v1/auth/mfa/totp/confirm", `{"code":"000000"}`), 400}, // authenticated; no enrolment pending
	"POST /v1/auth/ssh/certificate":   {fixed("/v1/auth/ssh/certificate", `{"public_key":"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"}`), 200},
	"GET /v1/sys/ssh":                 {fixed("/v1/sys/ssh", ""), 200},
	"POST /v1/auth/db/certificate": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/auth/db/certificate", dbCertificateBody(t)
	}, 200},
	"GET /v1/sys/db": {fixed("/v1/sys/db", ""), 200},
	"POST /v1/db/token": {func(f *fixture, t *testing.T, n int) (string, string) {
		mkDBTarget(f, t)
		return "/v1/db/token", `{"target":"pgdb"}`
	}, 200},
	"POST /v1/users": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/users", fmt.Sprintf(`{"name":"new%d"}`, n)
	}, 200},
	"GET /v1/users":        {fixed("/v1/users", ""), 200},
	"GET /v1/users/{name}": {fixed("/v1/users/bob", ""), 200},
	"POST /v1/users/{name}/disable": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/users/" + mkUser(f, t, n) + "/disable", ""
	}, 200},
	"POST /v1/users/{name}/enable": {fixed("/v1/users/bob/enable", ""), 200},
	"DELETE /v1/users/{name}":      {func(f *fixture, t *testing.T, n int) (string, string) { return "/v1/users/" + mkUser(f, t, n), "" }, 204},
	"DELETE /v1/users/{name}/mfa": {func(f *fixture, t *testing.T, n int) (string, string) {
		name := mkUser(f, t, n)
		if _, err := f.id.EnrollTOTP(context.Background(), audit.Origin{Actor: "test"}, name); err != nil {
			t.Fatal(err)
		}
		return "/v1/users/" + name + "/mfa", ""
	}, 204},
	"POST /v1/users/{name}/unlock": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/users/" + mkUser(f, t, n) + "/unlock", ""
	}, 200},
	"POST /v1/users/{name}/password": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/users/" + mkUser(f, t, n) + "/password", `{"password":"a long new passphrase"}`
	}, 200},
	"POST /v1/groups": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/groups", fmt.Sprintf(`{"name":"grp%d"}`, n)
	}, 200},
	"GET /v1/groups":        {fixed("/v1/groups", ""), 200},
	"GET /v1/groups/{name}": {fixed("/v1/groups/admins", ""), 200},
	"POST /v1/groups/{name}/members": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/groups/" + mkGroup(f, t, n) + "/members", `{"kind":"user","name":"bob"}`
	}, 200},
	"DELETE /v1/groups/{name}/members/{kind}/{member}": {func(f *fixture, t *testing.T, n int) (string, string) {
		g := mkGroup(f, t, n)
		if err := f.id.AddMember(context.Background(), audit.Origin{Actor: "test"}, g, identity.Member{Kind: "user", Name: "bob"}); err != nil {
			t.Fatal(err)
		}
		return "/v1/groups/" + g + "/members/user/bob", ""
	}, 200},
	"POST /v1/machines": {func(f *fixture, t *testing.T, n int) (string, string) {
		return "/v1/machines", fmt.Sprintf(`{"name":"m%d"}`, n)
	}, 200},
	"GET /v1/machines": {fixed("/v1/machines", ""), 200},
	"POST /v1/machines/{name}/secret-ids": {func(f *fixture, t *testing.T, n int) (string, string) {
		name := fmt.Sprintf("ci%d", n)
		if _, err := f.id.CreateMachine(context.Background(), audit.Origin{Actor: "test"}, identity.MachineSpec{Name: name}); err != nil {
			t.Fatal(err)
		}
		return "/v1/machines/" + name + "/secret-ids", `{"uses":1}`
	}, 200},
	"GET /v1/machines/{name}": {func(f *fixture, t *testing.T, n int) (string, string) {
		name, _ := mkMachine(f, t, n)
		return "/v1/machines/" + name, ""
	}, 200},
	"POST /v1/machines/{name}/disable": {func(f *fixture, t *testing.T, n int) (string, string) {
		name, _ := mkMachine(f, t, n)
		return "/v1/machines/" + name + "/disable", ""
	}, 200},
	"POST /v1/machines/{name}/enable": {func(f *fixture, t *testing.T, n int) (string, string) {
		name, _ := mkMachine(f, t, n)
		return "/v1/machines/" + name + "/enable", ""
	}, 200},
	"DELETE /v1/machines/{name}": {func(f *fixture, t *testing.T, n int) (string, string) {
		name, _ := mkMachine(f, t, n)
		return "/v1/machines/" + name, ""
	}, 204},
	"GET /v1/machines/{name}/secret-ids": {func(f *fixture, t *testing.T, n int) (string, string) {
		name, _ := mkMachine(f, t, n)
		return "/v1/machines/" + name + "/secret-ids", ""
	}, 200},
	"DELETE /v1/machines/{name}/secret-ids/{accessor}": {func(f *fixture, t *testing.T, n int) (string, string) {
		name, acc := mkMachine(f, t, n)
		return "/v1/machines/" + name + "/secret-ids/" + acc, ""
	}, 204},
	"DELETE /v1/machines/{name}/secret-ids": {func(f *fixture, t *testing.T, n int) (string, string) {
		name, _ := mkMachine(f, t, n)
		return "/v1/machines/" + name + "/secret-ids", ""
	}, 200},
	"PUT /v1/policies/{name}": {func(f *fixture, t *testing.T, n int) (string, string) {
		return fmt.Sprintf("/v1/policies/p%d", n), `{"text":"permit(principal == User::\"bob\", action == Action::\"audit_read\", resource);"}`
	}, 200},
	"GET /v1/policies":        {fixed("/v1/policies", ""), 200},
	"GET /v1/policies/{name}": {fixed("/v1/policies/admins", ""), 200},
	"DELETE /v1/policies/{name}": {func(f *fixture, t *testing.T, n int) (string, string) {
		name := fmt.Sprintf("d%d", n)
		if _, err := f.authz.Put(context.Background(), audit.Origin{Actor: "test"}, name, `forbid(principal == User::"nobody", action, resource);`); err != nil {
			t.Fatal(err)
		}
		return "/v1/policies/" + name, ""
	}, 204},
	"POST /v1/policies/check": {fixed("/v1/policies/check", `{"principal":"User::\"bob\"","action":"checkout","resource":"Account::\"pg/postgres\""}`), 200},
}

// wantAccess is what each route must require, written down independently
// of the API's own route list: "open", "self" (any valid token, acting on
// the caller) or the Cedar action on System::"warder".
var wantAccess = map[string]string{
	"GET /v1/sys/health": "open", "GET /v1/sys/seal-status": "open", "POST /v1/sys/init": "open", "POST /v1/sys/unseal": "open",
	"POST /v1/auth/login": "open", "POST /v1/auth/machine/login": "open",
	"POST /v1/sys/seal": "admin", "POST /v1/sys/rotate-key": "admin",
	"GET /v1/audit/events": "audit_read", "GET /v1/audit/verify": "audit_read", "GET /v1/audit/export": "audit_read",
	"GET /v1/auth/token/self": "self", "POST /v1/auth/token/renew": "self", "POST /v1/auth/token/revoke-self": "self",
	"POST /v1/auth/mfa/totp/enroll": "self", "POST /v1/auth/mfa/totp/confirm": "self",
	"POST /v1/auth/ssh/certificate": "self", "GET /v1/sys/ssh": "open",
	"POST /v1/auth/db/certificate": "self", "GET /v1/sys/db": "open", "POST /v1/db/token": "self",
	"POST /v1/users": "admin", "GET /v1/users": "admin", "GET /v1/users/{name}": "admin",
	"POST /v1/users/{name}/disable": "admin", "POST /v1/users/{name}/enable": "admin", "DELETE /v1/users/{name}": "admin", "DELETE /v1/users/{name}/mfa": "admin",
	"POST /v1/users/{name}/unlock": "admin", "POST /v1/users/{name}/password": "admin",
	"POST /v1/groups": "admin", "GET /v1/groups": "admin", "GET /v1/groups/{name}": "admin",
	"POST /v1/groups/{name}/members": "admin", "DELETE /v1/groups/{name}/members/{kind}/{member}": "admin",
	"POST /v1/machines": "admin", "GET /v1/machines": "admin", "POST /v1/machines/{name}/secret-ids": "admin",
	"GET /v1/machines/{name}": "admin", "POST /v1/machines/{name}/disable": "admin", "POST /v1/machines/{name}/enable": "admin",
	"DELETE /v1/machines/{name}": "admin", "GET /v1/machines/{name}/secret-ids": "admin",
	"DELETE /v1/machines/{name}/secret-ids/{accessor}": "admin", "DELETE /v1/machines/{name}/secret-ids": "admin",
	"PUT /v1/policies/{name}": "admin", "GET /v1/policies": "admin", "GET /v1/policies/{name}": "admin",
	"DELETE /v1/policies/{name}": "admin", "POST /v1/policies/check": "admin",
	"POST /v1/targets": "admin", "GET /v1/targets": "admin", "GET /v1/targets/{name}": "admin",
	"DELETE /v1/targets/{name}": "admin", "POST /v1/targets/{name}/rotate": "admin", "PUT /v1/targets/{name}/rules": "admin",
	"POST /v1/accounts": "admin", "GET /v1/accounts": "admin", "GET /v1/accounts/{target}/{user}": "admin",
	"DELETE /v1/accounts/{target}/{user}": "admin", "GET /v1/accounts/{target}/{user}/versions": "admin",
	"POST /v1/accounts/{target}/{user}/verify": "admin", "POST /v1/accounts/{target}/{user}/rotate": "resource:rotate",
	"POST /v1/accounts/{target}/{user}/checkout": "resource:checkout", "POST /v1/accounts/{target}/{user}/checkin": "self",
	"GET /v1/leases": "self", "POST /v1/leases/{id}/extend": "self", "POST /v1/leases/{id}/force-checkin": "admin",
	"PUT /v1/secrets/{path...}": "admin", "GET /v1/secrets/{path...}": "resource:read_secret", "GET /v1/secrets": "admin",
	"POST /v1/roles": "admin", "GET /v1/roles": "self", "GET /v1/roles/{name}": "self", "DELETE /v1/roles/{name}": "admin",
	"POST /v1/roles/{name}/eligibility": "admin", "GET /v1/roles/{name}/eligibility": "admin",
	"DELETE /v1/roles/{name}/eligibility/{kind}/{subject}": "admin",
	"POST /v1/requests": "self", "GET /v1/requests": "self", "GET /v1/requests/{id}": "self",
	"POST /v1/requests/{id}/approve": "self", "POST /v1/requests/{id}/deny": "self", "POST /v1/requests/{id}/cancel": "self",
	"GET /v1/grants": "self", "POST /v1/grants/{id}/extend": "self", "POST /v1/grants/{id}/revoke": "admin",
	"GET /v1/grants/{id}/credential": "self",
	"GET /v1/incidents":              "self", "POST /v1/incidents/{id}/review": "self",
	"POST /v1/reviews": "admin", "GET /v1/reviews": "self", "GET /v1/reviews/{id}": "self",
	"POST /v1/reviews/{id}/items/{item}/decide": "self", "GET /v1/reviews/{id}/report": "self",
	"GET /v1/sessions": "audit_read", "GET /v1/sessions/{id}": "audit_read", "GET /v1/sessions/{id}/recording": "audit_read",
	"GET /v1/sessions/{id}/live": "audit_read", "POST /v1/sessions/{id}/kill": "admin",
}

func accessName(a api.Access) string {
	switch {
	case a.Open:
		return "open"
	case a.Resource != "":
		return "resource:" + a.Resource
	case a.Action == "":
		return "self"
	}
	return a.Action
}

// TestEndpointAccess calls every endpoint unauthenticated, authenticated
// without permission, and authorised, and checks 401 / 403 / success, so
// that no endpoint is left open by accident.
func TestEndpointAccess(t *testing.T) {
	f := newFixture(t)
	admin := f.initAndUnseal(t)
	ctx := context.Background()
	if _, err := f.id.CreateUser(ctx, audit.Origin{Actor: "test"}, identity.UserSpec{Name: "bob", Password: []byte("correct horse battery")}); err != nil {
		t.Fatal(err)
	}
	// bob approves requests that need the group approvers.
	if _, err := f.id.CreateGroup(ctx, testO, "approvers", ""); err != nil {
		t.Fatal(err)
	}
	if err := f.id.AddMember(ctx, testO, "approvers", identity.Member{Kind: "user", Name: "bob"}); err != nil {
		t.Fatal(err)
	}

	routes := f.api.Routes()
	seen := map[string]bool{}
	for _, rt := range routes {
		seen[rt.Pattern] = true
		ep, ok := endpoints[rt.Pattern]
		if !ok {
			t.Errorf("route %s has no entry in the access table", rt.Pattern)
			continue
		}
		if want, got := wantAccess[rt.Pattern], accessName(rt.Access); want != got {
			t.Errorf("route %s requires %q, want %q", rt.Pattern, got, want)
		}
		if rt.Pattern == "POST /v1/sys/seal" {
			continue
		}
		method, _, _ := strings.Cut(rt.Pattern, " ")
		t.Run(rt.Pattern, func(t *testing.T) {
			if !rt.Access.Open {
				path, body := ep.request(f, t, uniq())
				wantError(t, f.do(t, method, path, "", body), 401, "unauthenticated")
				bob := f.login(t, "bob", "correct horse battery")
				if rt.Access.Action != "" || rt.Access.Resource != "" {
					path, body = ep.request(f, t, uniq())
					wantError(t, f.do(t, method, path, bob, body), 403, "denied")
				}
			}
			// Authorised: admin routes with the admin token; self-service
			// routes with bob's own fresh token.
			token := admin
			if !rt.Access.Open && rt.Access.Action == "" && rt.Access.Resource == "" {
				token = f.login(t, "bob", "correct horse battery")
			}
			path, body := ep.request(f, t, uniq())
			if r := f.do(t, method, path, token, body); r.status != ep.ok {
				t.Errorf("authorised %s %s: %d %s, want %d", method, path, r.status, r.body, ep.ok)
			}
		})
	}
	for p := range endpoints {
		if !seen[p] {
			t.Errorf("access table names %s, which the API does not register", p)
		}
	}
	for p := range wantAccess {
		if !seen[p] {
			t.Errorf("wantAccess names %s, which the API does not register", p)
		}
	}
	// /metrics is deliberately open (no secrets: counts, latencies, the seal
	// state) so that Prometheus can scrape it without a token.
	if r := f.do(t, "GET", "/metrics", "", ""); r.status != 200 {
		t.Errorf("/metrics: %d", r.status)
	}

	// Seal last: bob may not, the admin may.
	bob := f.login(t, "bob", "correct horse battery")
	wantError(t, f.do(t, "POST", "/v1/sys/seal", "", ""), 401, "unauthenticated")
	wantError(t, f.do(t, "POST", "/v1/sys/seal", bob, ""), 403, "denied")
	if r := f.do(t, "POST", "/v1/sys/seal", admin, ""); r.status != http.StatusOK {
		t.Errorf("admin seal: %d %s", r.status, r.body)
	}
}
