package server

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/access"
	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/config"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/recording"
	"github.com/warderhq/warder/internal/vault"
)

// A lease whose holder was disabled while the hook could not run (a crash
// between the commit and the hook) is ended at the next start.
func TestReconcileHolders(t *testing.T) {
	ctx := context.Background()
	s := newDevServer(t)
	o := audit.Origin{Actor: "test"}
	if _, err := s.identity.CreateUser(ctx, o, identity.UserSpec{Name: "carol"}); err != nil {
		t.Fatal(err)
	}
	if err := s.identity.AddMember(ctx, o, "admins", identity.Member{Kind: "user", Name: "carol"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.vault.AddTarget(ctx, o, vault.TargetSpec{Name: "db", Kind: "postgres", Host: "127.0.0.1", Port: 5432}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.vault.AddAccount(ctx, o, vault.AccountSpec{Target: "db", Username: "app",
		Credential: &connector.Credential{Kind: connector.Password, Secret: []byte("pw")}, RotateOnCheckin: new(bool)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.vault.Checkout(ctx, o, vault.CheckoutRequest{Account: "db/app", Principal: identity.Principal{Kind: identity.KindUser, Name: "carol"}, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	// carol also holds a just-in-time grant.
	if _, err := s.access.CreateRole(ctx, o, access.RoleSpec{Name: "r", Template: `permit(principal == ?principal, action == Action::"connect", resource);`}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.access.SetEligibility(ctx, o, access.Eligibility{Role: "r", Subject: access.Subject{Kind: access.SubjectUser, Name: "carol"}, MaxTTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.access.CreateRequest(ctx, o, identity.Principal{Kind: identity.KindUser, Name: "carol"}, access.RequestSpec{Role: "r", TTL: time.Hour, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	// Disable carol behind the hook's back, as a crash after the commit would.
	if _, err := s.db.ExecContext(ctx, `UPDATE identity_users SET status = 'disabled' WHERE name = 'carol'`); err != nil {
		t.Fatal(err)
	}
	if ll, _ := s.vault.Leases(ctx, "db/app"); len(ll.Leases) != 1 {
		t.Fatalf("before reconcile: %d leases", len(ll.Leases))
	}
	s.reconcileHolders(ctx)
	if ll, _ := s.vault.Leases(ctx, "db/app"); len(ll.Leases) != 0 {
		t.Errorf("after reconcile: %d leases of a disabled holder remain", len(ll.Leases))
	}
	if gs, _ := s.access.Grants(ctx, access.GrantFilter{Active: true}); len(gs) != 0 {
		t.Errorf("after reconcile: %d grants of a disabled holder remain", len(gs))
	}
}

// Disabling a user through the directory ends its leases and grants at
// once (the hook), before any restart.
func TestDisableEndsGrants(t *testing.T) {
	ctx := context.Background()
	s := newDevServer(t)
	o := audit.Origin{Actor: "test"}
	dave := identity.Principal{Kind: identity.KindUser, Name: "dave"}
	if _, err := s.identity.CreateUser(ctx, o, identity.UserSpec{Name: "dave"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.access.CreateRole(ctx, o, access.RoleSpec{Name: "r", Template: `permit(principal == ?principal, action == Action::"connect", resource);`}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.access.SetEligibility(ctx, o, access.Eligibility{Role: "r", Subject: access.Subject{Kind: access.SubjectUser, Name: "dave"}, MaxTTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.access.CreateRequest(ctx, o, dave, access.RequestSpec{Role: "r", TTL: time.Hour, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if err := s.identity.DisableUser(ctx, o, "dave"); err != nil {
		t.Fatal(err)
	}
	if gs, _ := s.access.Grants(ctx, access.GrantFilter{Principal: &dave, Active: true}); len(gs) != 0 {
		t.Errorf("a disabled user keeps %d active grants", len(gs))
	}
}

// Disabling or deleting a user ends its live sessions at once, with a
// message, and leaves other users' sessions running.
func TestLifecycleEndsSessions(t *testing.T) {
	ctx := context.Background()
	s := newDevServer(t)
	o := audit.Origin{Actor: "test"}
	for _, name := range []string{"erin", "frank", "grace"} {
		if _, err := s.identity.CreateUser(ctx, o, identity.UserSpec{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	start := func(principal string, kind recording.Kind) *recording.Session {
		t.Helper()
		rs, err := s.recorder.Start(ctx, audit.Origin{Actor: principal}, recording.Meta{Kind: kind, Principal: principal, Target: "web1"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rs.Close(ctx, recording.StatusClosed) })
		return rs
	}
	erinSSH, erinDB := start("user:erin", recording.SSH), start("user:erin", recording.DB)
	frank, grace := start("user:frank", recording.SSH), start("user:grace", recording.SSH)

	if err := s.identity.DisableUser(ctx, o, "erin"); err != nil {
		t.Fatal(err)
	}
	if err := s.identity.DeleteUser(ctx, o, "frank"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		rs   *recording.Session
		want string
	}{{erinSSH, "your Warder account was disabled"}, {erinDB, "your Warder account was disabled"}, {frank, "your Warder account was deleted"}} {
		select {
		case <-c.rs.Context().Done():
		case <-time.After(time.Second):
			t.Fatalf("session %s did not end", c.rs.ID())
		}
		if got := c.rs.KillMessage(); got != c.want {
			t.Errorf("kill message %q, want %q", got, c.want)
		}
	}
	if grace.Context().Err() != nil {
		t.Error("another user's session ended")
	}
}

// newDevServer returns a bootstrapped dev-mode Server on a fresh SQLite
// store, closed when t ends.
func newDevServer(t *testing.T) *Server {
	t.Helper()
	ctx := context.Background()
	cfg := config.Default()
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.Listen = "127.0.0.1:0"
	s, err := New(ctx, cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.DevBootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}
