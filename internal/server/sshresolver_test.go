package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/access"
	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
	sshgw "github.com/warderhq/warder/internal/gateway/ssh"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/vault"
)

func TestAuthMethod(t *testing.T) {
	for _, tc := range []struct {
		name string
		cred *connector.Credential
		ok   bool
	}{
		{"password", &connector.Credential{Kind: connector.Password, Secret: []byte("pw")}, true},
		{"bad ssh key", &connector.Credential{Kind: connector.SSHKey, Secret: []byte("not a key")}, false},
		{"api key", &connector.Credential{Kind: connector.APIKey, Secret: []byte("k")}, false},
		{"none", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := authMethod(tc.cred); (err == nil) != tc.ok {
				t.Errorf("authMethod: err %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// memAuditor keeps events, or fails with err.
type memAuditor struct {
	events []audit.Event
	err    error
}

func (a *memAuditor) Append(_ context.Context, ev audit.Event) (audit.Event, error) {
	if a.err != nil {
		return audit.Event{}, a.err
	}
	a.events = append(a.events, ev)
	return ev, nil
}

func TestCertificateLogin(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	aud := &memAuditor{}
	r := sshResolver{accessCA: ca, audit: aud, now: func() time.Time { return now }}
	alice := identity.Principal{Kind: identity.KindUser, Name: "alice"}
	up, err := r.certificateLogin(context.Background(), alice, "web1", sshgw.Upstream{Addr: "10.0.0.1:22", User: "root"})
	if err != nil {
		t.Fatal(err)
	}
	if len(up.Auth) != 1 || up.Release != nil || up.LeaseID != "" || !up.Expires.Equal(now.Add(time.Hour)) {
		t.Errorf("upstream %+v", up)
	}
	if len(aud.events) != 1 {
		t.Fatalf("audit %+v", aud.events)
	}
	ev := aud.events[0]
	if ev.Action != "ssh.access_certificate.issue" || ev.Actor != "user:alice" || ev.Resource != `Account::"web1/root"` ||
		!strings.HasPrefix(ev.Details["key_id"], "warder:user:alice:") || ev.Details["valid_before"] != now.Add(time.Hour).UTC().Format(time.RFC3339) {
		t.Errorf("event %+v", ev)
	}
	for k, v := range ev.Details {
		if strings.Contains(v, "PRIVATE") || len(v) > 100 {
			t.Errorf("detail %s = %q", k, v)
		}
	}
	// Two logins, two keys.
	_, err = r.certificateLogin(context.Background(), alice, "web1", sshgw.Upstream{User: "root"})
	if err != nil || aud.events[1].Details["fingerprint"] == ev.Details["fingerprint"] || aud.events[1].Details["key_id"] == ev.Details["key_id"] {
		t.Errorf("second login: %v, %+v", err, aud.events)
	}

	for name, tc := range map[string]struct {
		r    sshResolver
		user string
	}{
		"no CA":             {sshResolver{audit: aud}, "root"},
		"bad account":       {r, "root,alice"},
		"audit unavailable": {sshResolver{accessCA: ca, audit: &memAuditor{err: errors.New("audit: disk full")}}, "root"},
	} {
		if _, err := tc.r.certificateLogin(context.Background(), alice, "web1", sshgw.Upstream{User: tc.user}); err == nil {
			t.Errorf("%s: logged in", name)
		}
	}
}

// memRoles adds roles to memGrants: an in-memory sshGrants.
type memRoles struct {
	*memGrants
	roles map[string]access.Role
}

func (m memRoles) Role(_ context.Context, name string) (access.Role, error) {
	r, ok := m.roles[name]
	if !ok {
		return access.Role{}, errkind.New(errkind.NotFound, "access: no role %q", name)
	}
	return r, nil
}

// TestSSHDefaultAccount: a user name naming only the target logs in as
// the account of the user's live grant, else the target's default_account,
// else nobody; never the management account implicitly.
func TestSSHDefaultAccount(t *testing.T) {
	v := &memVault{targets: map[string]vault.Target{
		"web1": {Name: "web1", Kind: "linux", Host: "web1.internal", Port: 22, ManagementAccount: "walk2_mgmt"},
		"web2": {Name: "web2", Kind: "linux", Host: "web2.internal", Port: 22, ManagementAccount: "walk2_mgmt",
			Options: map[string]string{"default_account": "deploy"}},
		"pg": {Name: "pg", Kind: "postgres", Host: "db.internal", Port: 5432},
	}}
	connect := func(account string) access.Role {
		return access.Role{Template: `permit(principal == ?principal, action == Action::"connect", resource == Account::"` + account + `");`}
	}
	now := time.Now()
	grants := memRoles{
		memGrants: &memGrants{grants: []access.Grant{
			{ID: "g1", Role: "web1-ops", Principal: alice, ExpiresAt: now.Add(10 * time.Minute)},
			{ID: "g2", Role: "web1-dba", Principal: alice, ExpiresAt: now.Add(30 * time.Minute)},
			{ID: "g3", Role: "web1-all", Principal: alice, ExpiresAt: now.Add(time.Hour)},
			{ID: "g4", Role: "gone", Principal: alice, ExpiresAt: now.Add(2 * time.Hour)},
			{ID: "g5", Role: "web2-root", Principal: alice, ExpiresAt: now.Add(-time.Minute)}, // expired
			{ID: "g6", Role: "web2-root", Principal: bob, ExpiresAt: now.Add(time.Hour)},
		}},
		roles: map[string]access.Role{
			"web1-ops":  connect("web1/ops"),
			"web1-dba":  connect("web1/dba"),
			"web1-all":  {Template: `permit(principal == ?principal, action == Action::"connect", resource in Target::"web1");`},
			"web2-root": connect("web2/root"),
		},
	}
	carol := identity.Principal{Kind: identity.KindUser, Name: "carol"}
	for _, tc := range []struct {
		name     string
		grants   sshGrants
		p        identity.Principal
		target   string
		want     string
		wantFail bool
	}{
		{"no grant, no default account", grants, carol, "web1", "", false},
		{"no grants configured", nil, alice, "web1", "", false},
		{"default account", grants, carol, "web2", "deploy", false},
		{"the grant that expires last", grants, alice, "web1", "dba", false},
		{"expired grant", grants, alice, "web2", "deploy", false},
		{"another's grant", grants, bob, "web2", "root", false},
		{"not linux", grants, alice, "pg", "", true},
		{"no such target", grants, alice, "web9", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := sshResolver{vault: v, grants: tc.grants}
			got, err := r.DefaultAccount(context.Background(), tc.p, tc.target)
			if (err != nil) != tc.wantFail || got != tc.want {
				t.Errorf("DefaultAccount(%s, %s) = %q, %v; want %q (fail %v)", tc.p.Actor(), tc.target, got, err, tc.want, tc.wantFail)
			}
			if got == "walk2_mgmt" {
				t.Error("the management account was used implicitly")
			}
		})
	}
}
