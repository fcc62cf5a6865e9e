package server

import (
	"context"
	"sync"
	"testing"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/vault"
)

// A person's concurrent sessions on one account share one check-out; the
// last to end checks it in; another person still finds it checked out.
func TestSessionLeasesShared(t *testing.T) {
	ctx := context.Background()
	s := newDevServer(t)
	o := audit.Origin{Actor: "test"}
	for _, u := range []string{"carol", "dave"} {
		if _, err := s.identity.CreateUser(ctx, o, identity.UserSpec{Name: u}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.authz.Put(ctx, o, "conn", `permit(principal, action == Action::"connect", resource in Target::"db");`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.vault.AddTarget(ctx, o, vault.TargetSpec{Name: "db", Kind: "postgres", Host: "127.0.0.1", Port: 5432}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.vault.AddAccount(ctx, o, vault.AccountSpec{Target: "db", Username: "app",
		Credential: &connector.Credential{Kind: connector.Password, Secret: []byte("pw-app")}, RotateOnCheckin: new(bool)}); err != nil {
		t.Fatal(err)
	}
	carol := identity.Principal{Kind: identity.KindUser, Name: "carol"}
	req := func(p identity.Principal) vault.CheckoutRequest {
		return vault.CheckoutRequest{Account: "db/app", Principal: p, Reason: "session", Action: authz.ActionConnect,
			Context: authz.Context{Via: authz.ViaDB}}
	}
	held := func() int {
		ls, err := s.vault.Leases(ctx, "db/app")
		if err != nil {
			t.Fatal(err)
		}
		return len(ls.Leases)
	}

	// Eight sessions at once, as pgbench -c 8 opens them.
	const n = 8
	var wg sync.WaitGroup
	leases := make([]vault.Lease, n)
	dones := make([]func(), n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { leases[i], dones[i], errs[i] = s.sessionLeases.Acquire(ctx, o, req(carol)) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("session %d: %v", i, errs[i])
		}
		if leases[i].ID != leases[0].ID || string(leases[i].Credential.Secret) != "pw-app" {
			t.Fatalf("session %d: lease %s; want the shared %s with the credential", i, leases[i].ID, leases[0].ID)
		}
	}
	clear(leases[0].Credential.Secret) // a gateway zeroes its copy; the others keep theirs
	if string(leases[1].Credential.Secret) != "pw-app" {
		t.Fatal("sessions share one credential buffer")
	}
	if got := held(); got != 1 {
		t.Fatalf("%d leases held; want 1", got)
	}
	// Another person is refused: the account is exclusive.
	if _, _, err := s.sessionLeases.Acquire(ctx, o, req(identity.Principal{Kind: identity.KindUser, Name: "dave"})); !errkind.Is(err, errkind.Conflict) {
		t.Fatalf("dave's session: %v; want Conflict", err)
	}
	for i := range n - 1 {
		dones[i]()
		dones[i]() // idempotent
	}
	if got := held(); got != 1 {
		t.Fatalf("after %d of %d sessions ended: %d leases held; want 1", n-1, n, got)
	}
	dones[n-1]()
	if got := held(); got != 0 {
		t.Fatalf("after the last session: %d leases held; want 0", got)
	}
	// And the next session checks out afresh.
	l, done, err := s.sessionLeases.Acquire(ctx, o, req(carol))
	if err != nil || l.ID == leases[0].ID {
		t.Fatalf("next session: lease %s, %v; want a new lease", l.ID, err)
	}
	// An administrator force-checks it in while the session runs: a new
	// session does not join the ended lease, and the old session's end
	// does not check in the new one.
	if _, err := s.vault.ForceCheckin(ctx, o, l.ID); err != nil {
		t.Fatal(err)
	}
	l2, done2, err := s.sessionLeases.Acquire(ctx, o, req(carol))
	if err != nil || l2.ID == l.ID {
		t.Fatalf("session after a force check-in: lease %s, %v; want a new lease", l2.ID, err)
	}
	done()
	if got := held(); got != 1 {
		t.Fatalf("the old session's end changed the new lease: %d leases held; want 1", got)
	}
	done2()
	if got := held(); got != 0 {
		t.Fatalf("after the last session: %d leases held; want 0", got)
	}
}
