package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/access"
	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
	pggw "github.com/warderhq/warder/internal/gateway/postgres"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/vault"
)

// memVault is an in-memory dbVault: targets, accounts with credentials,
// one check-out slot per account.
type memVault struct {
	targets  map[string]vault.Target
	accounts map[string]*connector.Credential // "target/user"
	deny     bool                             // every check-out is denied

	mu        sync.Mutex
	out       map[string]bool
	checkouts []vault.CheckoutRequest
	origins   []audit.Origin
	checkins  []string
}

func (m *memVault) Target(_ context.Context, name string) (vault.Target, error) {
	t, ok := m.targets[name]
	if !ok {
		return vault.Target{}, errkind.New(errkind.NotFound, "vault: no target %q", name)
	}
	return t, nil
}

func (m *memVault) Checkout(_ context.Context, o audit.Origin, req vault.CheckoutRequest) (vault.Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.checkouts = append(m.checkouts, req)
	m.origins = append(m.origins, o)
	cred, ok := m.accounts[req.Account]
	switch {
	case m.deny:
		return vault.Lease{}, errkind.New(errkind.Denied, "vault: %s may not %s %s", req.Principal.Actor(), req.Action, req.Account)
	case !ok:
		return vault.Lease{}, errkind.New(errkind.NotFound, "vault: no account %q", req.Account)
	case m.out[req.Account]:
		return vault.Lease{}, errkind.New(errkind.Conflict, "vault: account %q is checked out", req.Account)
	}
	if m.out == nil {
		m.out = map[string]bool{}
	}
	m.out[req.Account] = true
	c := *cred
	c.Secret = bytes.Clone(cred.Secret)
	return vault.Lease{ID: fmt.Sprintf("lease-%d", len(m.checkouts)), Account: req.Account, Holder: req.Principal.Actor(),
		ExpiresAt: time.Now().Add(time.Hour).Truncate(time.Second), Credential: &c}, nil
}

func (m *memVault) Checkin(_ context.Context, _ audit.Origin, p identity.Principal, account string) (vault.Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.checkins = append(m.checkins, p.Actor()+" "+account)
	if !m.out[account] {
		return vault.Lease{}, errkind.New(errkind.NotFound, "vault: no lease")
	}
	delete(m.out, account)
	return vault.Lease{}, nil
}

// memGrants is an in-memory dbGrants.
type memGrants struct {
	grants []access.Grant
	creds  map[string]access.EphemeralCredential // by grant id
	errs   map[string]error                      // RevealEphemeral's, by grant id

	mu      sync.Mutex
	reveals []string
}

func (m *memGrants) Grants(_ context.Context, f access.GrantFilter) ([]access.Grant, error) {
	var out []access.Grant
	for _, g := range m.grants {
		if (f.Principal == nil || g.Principal == *f.Principal) && (!f.Active || g.Active(time.Now())) {
			out = append(out, g)
		}
	}
	return out, nil
}

func (m *memGrants) RevealEphemeral(_ context.Context, _ audit.Origin, p identity.Principal, id string) (access.EphemeralCredential, error) {
	m.mu.Lock()
	m.reveals = append(m.reveals, id)
	m.mu.Unlock()
	if err := m.errs[id]; err != nil {
		return access.EphemeralCredential{}, err
	}
	c, ok := m.creds[id]
	if !ok {
		return access.EphemeralCredential{}, errkind.New(errkind.NotFound, "access: no grant %q", id)
	}
	return c, nil
}

var (
	alice = identity.Principal{Kind: identity.KindUser, Name: "alice"}
	bob   = identity.Principal{Kind: identity.KindUser, Name: "bob"}
)

func newResolverFixture() (dbResolver, *memVault, *memGrants) {
	v := &memVault{
		targets: map[string]vault.Target{
			"pg": {Name: "pg", Kind: "postgres", Host: "db.internal", Port: 5433,
				Options: map[string]string{"database": "app", "sslmode": "disable"},
				Rules:   []vault.Rule{{Pattern: `(?i)drop\s+table`, Action: vault.RuleBlock, Message: "ask the DBA"}, {Pattern: `(?i)^alter role`, Action: vault.RuleAlert}}},
			"pgdef": {Name: "pgdef", Kind: "postgres", Host: "db2.internal", Port: 5432,
				Options: map[string]string{"default_account": "reader", "sslmode": "disable"}},
			"web": {Name: "web", Kind: "linux", Host: "web.internal", Port: 22},
		},
		accounts: map[string]*connector.Credential{
			"pg/app":       {Kind: connector.Password, Secret: []byte("app-secret")},
			"pg/keyed":     {Kind: connector.SSHKey, Secret: []byte("not for postgres")},
			"pgdef/reader": {Kind: connector.Password, Secret: []byte("reader-secret")},
		},
	}
	now := time.Now()
	g := &memGrants{
		grants: []access.Grant{
			{ID: "g-old", Principal: alice, ExpiresAt: now.Add(10 * time.Minute), Ephemeral: &access.EphemeralGrant{Target: "pg", Username: "wjit_old"}},
			{ID: "g-new", Principal: alice, ExpiresAt: now.Add(30 * time.Minute), Ephemeral: &access.EphemeralGrant{Target: "pg", Username: "wjit_new"}},
			{ID: "g-other", Principal: alice, ExpiresAt: now.Add(time.Hour), Ephemeral: &access.EphemeralGrant{Target: "pgdef", Username: "wjit_x"}},
			{ID: "g-noeph", Principal: alice, ExpiresAt: now.Add(time.Hour)},
			{ID: "g-bob", Principal: bob, ExpiresAt: now.Add(time.Hour), Ephemeral: &access.EphemeralGrant{Target: "pgdef", Username: "wjit_bob"}},
		},
		creds: map[string]access.EphemeralCredential{
			"g-new": {Target: "pg", Host: "db.internal", Port: 5433, Username: "wjit_new", Password: "eph-secret", ValidUntil: now.Add(30 * time.Minute)},
			"g-old": {Target: "pg", Host: "db.internal", Port: 5433, Username: "wjit_old", Password: "old-secret", ValidUntil: now.Add(10 * time.Minute)},
		},
		errs: map[string]error{"g-bob": errkind.New(errkind.Unavailable, "access: ephemeral user of grant g-bob is not created yet")},
	}
	return dbResolver{vault: v, grants: g, log: slog.New(slog.DiscardHandler)}, v, g
}

// originCtx is the context the gateway gives Resolve.
func originCtx(p identity.Principal) context.Context {
	return pggw.WithOrigin(context.Background(), audit.Origin{Actor: p.Actor(), Source: "192.0.2.7", RequestID: "conn-1"})
}

func TestDBResolverAccount(t *testing.T) {
	r, v, g := newResolverFixture()
	mfaAt := time.Now().Add(-time.Minute)
	tok := identity.Token{ID: "t1", Principal: alice, MFA: true, MFAAt: mfaAt}
	up, err := r.Resolve(originCtx(alice), alice, "pg", "app", tok)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	if up.Host != "db.internal" || up.Port != 5433 || up.User != "app" || string(up.Password) != "app-secret" ||
		up.Database != "app" || up.LeaseID != "lease-1" || up.GrantID != "" || up.TLS != nil || up.NotAfter.IsZero() {
		t.Errorf("upstream = %+v", up)
	}
	if len(up.Rules) != 2 || up.Rules[0].Action != pggw.ActionBlock || up.Rules[0].Message != "ask the DBA" ||
		!up.Rules[0].Pattern.MatchString("DROP  TABLE x") || up.Rules[1].Action != pggw.ActionAlert {
		t.Errorf("rules = %+v", up.Rules)
	}
	if len(v.checkouts) != 1 {
		t.Fatalf("%d check-outs, want 1", len(v.checkouts))
	}
	req, o := v.checkouts[0], v.origins[0]
	if req.Account != "pg/app" || req.Principal != alice || req.Action != authz.ActionConnect || req.Reason != dbCheckoutReason ||
		req.Context.Via != authz.ViaDB || !req.Context.MFA || !req.Context.MFAAt.Equal(mfaAt) || req.Context.SourceIP.String() != "192.0.2.7" || req.Wait {
		t.Errorf("check-out request = %+v", req)
	}
	if o.Actor != "user:alice" || o.Source != "192.0.2.7" || o.RequestID != "conn-1" {
		t.Errorf("check-out origin = %+v", o)
	}
	if len(g.reveals) != 0 {
		t.Errorf("an account connection revealed ephemeral credentials: %v", g.reveals)
	}
	// A second connection while the first holds the only slot.
	if _, err := r.Resolve(originCtx(alice), alice, "pg", "app", tok); !isPublic(err, "checked out") {
		t.Errorf("second connection: %v, want a public error saying it is checked out", err)
	}
	up.Release()
	if len(v.checkins) != 1 || v.checkins[0] != "user:alice pg/app" {
		t.Errorf("check-ins = %v", v.checkins)
	}
	if _, err := r.Resolve(originCtx(alice), alice, "pg", "app", tok); err != nil {
		t.Errorf("after the check-in: %v", err)
	}
}

func isPublic(err error, want string) bool {
	var pe *pggw.PublicError
	return errors.As(err, &pe) && strings.Contains(pe.Message, want)
}

func TestDBResolverTargetOnly(t *testing.T) {
	r, v, g := newResolverFixture()
	tok := identity.Token{ID: "t1", Principal: alice}

	// alice's live grant with a database user on pg: the latest wins.
	up, err := r.Resolve(originCtx(alice), alice, "pg", "", tok)
	if err != nil {
		t.Fatalf("Resolve(pg): %v", err)
	}
	want := g.creds["g-new"]
	if up.User != "wjit_new" || string(up.Password) != "eph-secret" || up.GrantID != "g-new" || !up.NotAfter.Equal(want.ValidUntil) ||
		up.Host != "db.internal" || up.Port != 5433 || up.Database != "app" || up.LeaseID != "" || up.Release != nil || len(up.Rules) != 2 {
		t.Errorf("upstream = %+v", up)
	}
	if len(v.checkouts) != 0 {
		t.Errorf("a grant's connection checked out %v", v.checkouts)
	}

	// bob's grant on pgdef has no database user yet: he is told so.
	if _, err := r.Resolve(originCtx(bob), bob, "pgdef", "", identity.Token{ID: "t2", Principal: bob}); !isPublic(err, "not ready") {
		t.Errorf("grant not ready: %v", err)
	}

	// Without a grant, the target's default account.
	carol := identity.Principal{Kind: identity.KindUser, Name: "carol"}
	up, err = r.Resolve(originCtx(carol), carol, "pgdef", "", identity.Token{ID: "t3", Principal: carol})
	if err != nil {
		t.Fatalf("Resolve(pgdef) without a grant: %v", err)
	}
	if up.User != "reader" || string(up.Password) != "reader-secret" || v.checkouts[0].Account != "pgdef/reader" || up.Database != "" {
		t.Errorf("default account: %+v, check-outs %+v", up, v.checkouts)
	}
	up.Release()

	// Neither: the client is told to name the account.
	if _, err := r.Resolve(originCtx(carol), carol, "pg", "", identity.Token{ID: "t3", Principal: carol}); !isPublic(err, "connect as ACCOUNT@pg") {
		t.Errorf("no grant, no default: %v", err)
	}
}

func TestDBResolverRefusals(t *testing.T) {
	r, v, _ := newResolverFixture()
	tok := identity.Token{ID: "t1", Principal: alice}
	ctx := originCtx(alice)
	for _, tc := range []struct {
		name, target, account, public string
	}{
		{"unknown target", "nope", "app", `there is no target "nope"`},
		{"not postgres", "web", "root", "not postgres"},
		{"unknown account", "pg", "ghost", `there is no account "ghost"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := r.Resolve(ctx, alice, tc.target, tc.account, tok); !isPublic(err, tc.public) {
				t.Errorf("err = %v, want a public error with %q", err, tc.public)
			}
		})
	}
	// A credential that is not a password is checked back in.
	_, err := r.Resolve(ctx, alice, "pg", "keyed", tok)
	var pe *pggw.PublicError
	if err == nil || errors.As(err, &pe) || strings.Contains(err.Error(), "not for postgres") {
		t.Errorf("ssh-key account: err = %v; want a private error without the secret", err)
	}
	if v.out["pg/keyed"] {
		t.Error("the ssh-key account was not checked back in")
	}
	v.deny = true
	if _, err := r.Resolve(ctx, alice, "pg", "app", tok); !isPublic(err, "may not use account") {
		t.Errorf("denied check-out: %v", err)
	}
	// A stored rule that does not compile (it was valid when stored; a
	// newer regexp syntax, say) refuses the connection.
	v.targets["bad"] = vault.Target{Name: "bad", Kind: "postgres", Host: "h", Port: 1, Rules: []vault.Rule{{Pattern: "(", Action: "block"}}}
	if _, err := r.Resolve(ctx, alice, "bad", "app", tok); err == nil {
		t.Error("a target with an invalid rule resolved")
	}
}

func TestUpstreamTLS(t *testing.T) {
	for _, tc := range []struct {
		mode                     string
		tls, fallback, skipCheck bool
	}{
		{"disable", false, false, false},
		{"allow", true, true, true},
		{"", true, true, true}, // prefer
		{"prefer", true, true, true},
		{"require", true, false, true},
		{"verify-ca", true, false, true}, // the chain, not the name: checked by VerifyPeerCertificate
		{"verify-full", true, false, false},
	} {
		t.Run("sslmode="+tc.mode, func(t *testing.T) {
			tgt := vault.Target{Name: "pg", Kind: "postgres", Host: "db.example", Port: 5432, Options: map[string]string{}}
			if tc.mode != "" {
				tgt.Options["sslmode"] = tc.mode
			}
			c, fallback, err := upstreamTLS(tgt)
			if err != nil {
				t.Fatal(err)
			}
			if (c != nil) != tc.tls || fallback != tc.fallback {
				t.Fatalf("TLS %v, fallback %v; want %v, %v", c != nil, fallback, tc.tls, tc.fallback)
			}
			if c == nil {
				return
			}
			if c.InsecureSkipVerify != tc.skipCheck {
				t.Errorf("InsecureSkipVerify = %v, want %v", c.InsecureSkipVerify, tc.skipCheck)
			}
			if tc.mode == "verify-full" && c.ServerName != "db.example" {
				t.Errorf("ServerName = %q", c.ServerName)
			}
			if tc.mode == "verify-ca" && c.VerifyPeerCertificate == nil {
				t.Error("verify-ca does not verify the chain")
			}
		})
	}
}
