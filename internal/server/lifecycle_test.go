package server

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/config"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/vault"
)

// A lease whose holder was disabled while the hook could not run (a crash
// between the commit and the hook) is ended at the next start.
func TestReconcileHolders(t *testing.T) {
	ctx := context.Background()
	cfg := config.Default()
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.Listen = "127.0.0.1:0"
	s, err := New(ctx, cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.DevBootstrap(ctx); err != nil {
		t.Fatal(err)
	}
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
}
