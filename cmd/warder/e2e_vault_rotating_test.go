package main

// End-to-end tests of what happens around a rotation: using an account
// right after the check-in that rotates it, and an add --generate that the
// target refuses.

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/warderhq/warder/internal/testenv"
)

// vaultAuditEvent is the API's audit event, the fields the tests read.
type vaultAuditEvent struct {
	Actor    string            `json:"actor"`
	Action   string            `json:"action"`
	Resource string            `json:"resource"`
	Outcome  string            `json:"outcome"`
	Source   string            `json:"source"`
	Details  map[string]string `json:"details"`
}

// auditEvents lists the server's audit events with action.
func auditEvents(t *testing.T, api *apiClient, action string) []vaultAuditEvent {
	t.Helper()
	var out struct {
		Events []vaultAuditEvent `json:"events"`
	}
	api.must(t, "GET", "/v1/audit/events?limit=1000&action="+url.QueryEscape(action), nil, &out)
	return out.Events
}

// TestVaultRightAfterCheckin: the check-in of an account that rotates on
// check-in starts its rotation in the background; a check-out, `account
// verify` and `account rotate` sent at once wait for it rather than fail
// ("is being rotated", "a rotation of this account is already in
// progress"), and the check-out gets the new password.
func TestVaultRightAfterCheckin(t *testing.T) {
	ctx := context.Background()
	pg := testenv.PostgresSCRAM(t)
	s := newVaultServer(t)
	addPGTarget(t, s.api, pg, "prod-pg", 0)
	role := pg.CreateRole(t, "unknown-"+rand.Text(), "")
	s.api.must(t, "POST", "/v1/accounts", map[string]any{"target": "prod-pg", "username": role, "generate": true}, nil)
	path := "/v1/accounts/prod-pg/" + role

	var co checkoutAnswer
	s.api.must(t, "POST", path+"/checkout", map[string]any{"reason": "e2e"}, &co)
	for i := range 3 {
		s.api.must(t, "POST", path+"/checkin", nil, nil)
		var next checkoutAnswer
		if err := s.api.call(ctx, "POST", path+"/checkout", map[string]any{"reason": "right after the check-in"}, &next); err != nil {
			t.Fatalf("round %d: check-out right after the check-in: %v", i, err)
		}
		if next.Password == co.Password || next.CredentialVersion <= co.CredentialVersion {
			t.Fatalf("round %d: the check-out got version %d, not the rotated credential (after %d)", i, next.CredentialVersion, co.CredentialVersion)
		}
		if err := pgLogin(ctx, pg, role, next.Password); err != nil {
			t.Fatalf("round %d: the new password does not log in: %v", i, err)
		}
		co = next
	}

	s.api.must(t, "POST", path+"/checkin", nil, nil)
	var v struct {
		OK bool `json:"ok"`
	}
	if err := s.api.call(ctx, "POST", path+"/verify", nil, &v); err != nil || !v.OK {
		t.Fatalf("verify right after the check-in: %+v, %v", v, err)
	}

	s.api.must(t, "POST", path+"/checkout", map[string]any{"reason": "e2e"}, &co)
	s.api.must(t, "POST", path+"/checkin", nil, nil)
	var res struct {
		Outcome string `json:"outcome"`
		Version int64  `json:"version"`
	}
	if err := s.api.call(ctx, "POST", path+"/rotate", nil, &res); err != nil || res.Outcome != "rotated" {
		t.Fatalf("rotate right after the check-in: %+v, %v", res, err)
	}
	var a account
	s.api.must(t, "GET", path, nil, &a)
	if a.CredentialVersion < co.CredentialVersion+2 || a.RotationDue || a.HasPending || a.Status != "ok" {
		t.Errorf("after the check-in's rotation and one more: %+v (checked out version %d)", a, co.CredentialVersion)
	}
	if evs := auditEvents(t, s.api, "account.rotate"); len(evs) == 0 {
		t.Error("no account.rotate events")
	} else {
		for _, ev := range evs {
			if ev.Outcome != "success" {
				t.Errorf("rotation event %+v", ev)
			}
		}
	}
}

// TestVaultGenerateRefused: the README's `account add prod-pg/postgres
// --generate`, where the management role has CREATEROLE but may not alter
// a superuser. The user is told why, in words that quote no statement;
// the account is not left half-created; the failure is audited.
func TestVaultGenerateRefused(t *testing.T) {
	ctx := context.Background()
	pg := testenv.PostgresSCRAM(t)
	s := newVaultServer(t)
	addPGTarget(t, s.api, pg, "prod-pg", 0)
	superPW := "super-" + rand.Text()
	super := pg.CreateRole(t, superPW, "SUPERUSER")

	err := s.api.call(ctx, "POST", "/v1/accounts", map[string]any{"target": "prod-pg", "username": super, "generate": true}, nil)
	var ae *apiError
	if !errors.As(err, &ae) {
		t.Fatalf("add --generate of a superuser: %v; want an error answer", err)
	}
	if ae.Status != 409 || ae.Code != "conflict" || !strings.Contains(ae.Message, "permission denied (SQLSTATE 42501)") ||
		!strings.Contains(ae.Message, "the account was not added") {
		t.Errorf("answer %d %s: %s", ae.Status, ae.Code, ae.Message)
	}
	for _, leak := range []string{"internal error", "superuser", "ALTER", "SCRAM", superPW} {
		if strings.Contains(ae.Message, leak) {
			t.Errorf("answer %q contains %q", ae.Message, leak)
		}
	}
	err = s.api.call(ctx, "GET", "/v1/accounts/prod-pg/"+super, nil, nil)
	if !errors.As(err, &ae) || ae.Status != 404 {
		t.Errorf("the account after the refused add: %v; want it gone", err)
	}
	if err := pgLogin(ctx, pg, super, superPW); err != nil {
		t.Errorf("the superuser's own password no longer logs in: %v", err)
	}
	var failed, discarded bool
	for _, ev := range auditEvents(t, s.api, "account.rotate") {
		if ev.Resource == "account:prod-pg/"+super && ev.Outcome == "failure" && ev.Details["error"] == "permission denied (SQLSTATE 42501)" {
			failed = true
		}
	}
	for _, ev := range auditEvents(t, s.api, "account.remove") {
		if ev.Resource == "account:prod-pg/"+super && ev.Details["discarded"] == "true" {
			discarded = true
		}
	}
	if !failed || !discarded {
		t.Errorf("audit: rotation failure recorded %v, add undone %v", failed, discarded)
	}
	// Nothing is left that would make a second attempt fail for another reason.
	err = s.api.call(ctx, "POST", "/v1/accounts", map[string]any{"target": "prod-pg", "username": super, "generate": true}, nil)
	if !errors.As(err, &ae) || !strings.Contains(ae.Message, "SQLSTATE 42501") {
		t.Errorf("second add --generate: %v", err)
	}
}

// TestDBGatewayBackToBack: psql sessions through the database gateway one
// right after the other on an account that rotates on check-in: each waits
// for the rotation the previous one's end started, and the gateway's
// check-outs are audited with the client's address.
func TestDBGatewayBackToBack(t *testing.T) {
	e := newDBEnv(t)
	mgmtPW := "mgmt-" + rand.Text()
	mgmt := e.pg.CreateRole(t, mgmtPW, "CREATEROLE")
	app := e.pg.CreateRole(t, "App-pw-"+rand.Text(), "")
	mustOK(t, run(t, e.admin, "", "target", "add", "postgres", "pg", "--host", e.pg.Host, "--port", fmt.Sprint(e.pg.Port),
		"--option", "sslmode=disable", "--management-account", mgmt), "target add")
	mustOK(t, run(t, e.admin, mgmtPW+"\n", "account", "add", "pg/"+mgmt, "--password-stdin", "--no-rotate-on-checkin"), "account add mgmt")
	mustOK(t, run(t, e.admin, "", "account", "add", "pg/"+app, "--generate"), "account add --generate")
	e.policy(t, "alice-pg", `permit(principal == User::"alice", action == Action::"connect", resource in Target::"pg");`)
	alice, _ := e.user(t, "alice")

	for i := range 3 {
		r := run(t, alice, "", "db", "connect", "pg", "--as", app, "--", "-X", "-Atq", "-c", fmt.Sprintf("select %d", i))
		if r.code != 0 || strings.TrimSpace(r.stdout) != fmt.Sprint(i) {
			t.Fatalf("session %d right after the previous one: exit %d, stdout %q, stderr %q", i, r.code, r.stdout, r.stderr)
		}
	}
	evs := decodeJSON[[]vaultAuditEvent](t, mustOK(t, run(t, e.admin, "", "audit", "ls", "--action", "account.checkout", "--format", "json"), "audit ls").stdout)
	if len(evs) != 3 {
		t.Errorf("%d account.checkout events, want 3: %+v", len(evs), evs)
	}
	for _, ev := range evs {
		if ev.Actor != "user:alice" || ev.Outcome != "success" || ev.Source != "127.0.0.1" {
			t.Errorf("check-out event %+v; want alice's success from 127.0.0.1", ev)
		}
	}
}
