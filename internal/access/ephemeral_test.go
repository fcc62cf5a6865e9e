package access

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/testenv"
)

func TestEphemeralUser(t *testing.T) {
	for _, b := range testenv.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, b.Open(t))
			e.role(t, "prod-dba", true)
			e.eligible(t, Eligibility{Role: "prod-dba", Subject: Subject{SubjectGroup, "dba"}, Approvals: 1, ApproverGroup: "approvers"})
			r := e.approve(t, bob, e.request(t, alice, RequestSpec{Role: "prod-dba", TTL: time.Hour, Reason: "x"}).ID)
			g, err := e.a.Grant(ctx, r.GrantID)
			if err != nil || g.Ephemeral == nil || g.Ephemeral.State != ephCreated || !strings.HasPrefix(g.Ephemeral.Username, EphemeralPrefix) {
				t.Fatalf("grant %+v, %v", g, err)
			}
			u, ok := e.fake.user("pg1", g.Ephemeral.Username)
			if !ok || !u.validUntil.Equal(g.ExpiresAt.Add(time.Minute)) || !slices.Equal(u.roles, []string{"pg_read_all_data"}) {
				t.Fatalf("user on the target: %+v, %v", u, ok)
			}

			_, err = e.a.RevealEphemeral(ctx, origin(bob), bob, g.ID)
			wantErr(t, "reveal by the approver", err, errkind.NotFound, nil)
			cred, err := e.a.RevealEphemeral(ctx, origin(alice), alice, g.ID)
			if err != nil || cred.Password != u.password || len(cred.Password) < 32 || cred.Username != g.Ephemeral.Username || cred.Host != "db.example" {
				t.Fatalf("RevealEphemeral: %+v, %v", cred.Username, err)
			}
			if !slices.Contains(e.actions(t), "access.ephemeral.reveal") {
				t.Error("reveal not audited")
			}

			// An extension moves the user's own expiry.
			ext, err := e.a.ExtendGrant(ctx, origin(alice), alice, g.ID, RequestSpec{TTL: 3 * time.Hour, Reason: "y"})
			if err != nil {
				t.Fatal(err)
			}
			e.approve(t, carol, ext.ID)
			g, _ = e.a.Grant(ctx, g.ID)
			if u, _ := e.fake.user("pg1", g.Ephemeral.Username); !u.validUntil.Equal(g.ExpiresAt.Add(time.Minute)) || g.Ephemeral.State != ephCreated {
				t.Errorf("after the extension the user is valid until %v, grant expires %v (%s)", u.validUntil, g.ExpiresAt, g.Ephemeral.State)
			}

			e.clk.Set(g.ExpiresAt)
			_, err = e.a.RevealEphemeral(ctx, origin(alice), alice, g.ID)
			wantErr(t, "reveal after expiry", err, errkind.Conflict, ErrGrantEnded)
			if err := e.a.Sweep(ctx); err != nil {
				t.Fatal(err)
			}
			if _, ok := e.fake.user("pg1", g.Ephemeral.Username); ok {
				t.Error("user still on the target after expiry")
			}
			var ct []byte
			if err := e.db.QueryRowContext(ctx, `SELECT eph_password_ct FROM access_grants WHERE id = $1`, g.ID).Scan(&ct); err != nil || ct != nil {
				t.Errorf("password ciphertext after the drop: %d bytes, %v", len(ct), err)
			}
		})
	}
}

// TestEphemeralRestartSafe leaves the target out of step with the grants,
// as a crash would, and checks that Sweep puts it right.
func TestEphemeralRestartSafe(t *testing.T) {
	for _, b := range testenv.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, b.Open(t))
			e.role(t, "prod-dba", true)
			e.eligible(t, Eligibility{Role: "prod-dba", Subject: Subject{SubjectGroup, "dba"}, MaxTTL: time.Hour})

			// An orphan from before a crash; a user Warder did not make.
			e.fake.put("pg1", "wjit_0123456789ab")
			e.fake.put("pg1", "app")

			// Creation fails: the grant stands, its user is pending.
			e.fake.failNext(errors.New("fakedb: connection refused"))
			r := e.request(t, alice, RequestSpec{Role: "prod-dba", TTL: time.Hour, Reason: "x"})
			g, _ := e.a.Grant(ctx, r.GrantID)
			if g.Ephemeral.State != ephPending || !strings.Contains(g.Ephemeral.Error, "connection refused") {
				t.Fatalf("after a failed creation: %+v", g.Ephemeral)
			}
			_, err := e.a.RevealEphemeral(ctx, origin(alice), alice, g.ID)
			wantErr(t, "reveal before creation", err, errkind.Unavailable, nil)

			// Bob's grant is revoked while the target is down: not dropped.
			rb := e.request(t, bob, RequestSpec{Role: "prod-dba", TTL: time.Hour, Reason: "x"})
			gb, _ := e.a.Grant(ctx, rb.GrantID)
			e.fake.failNext(errors.New("fakedb: connection refused"))
			if _, err := e.a.RevokeGrant(ctx, admin, gb.ID, ""); err != nil {
				t.Fatal(err)
			}
			if _, ok := e.fake.user("pg1", gb.Ephemeral.Username); !ok {
				t.Fatal("the drop did not fail as arranged")
			}

			// A new Access on the same database, as after a restart.
			a2, err := New(ctx, Config{DB: e.db, Audit: e.log, Authz: e.az, Identity: e.ids, Vault: e.vault,
				Connectors: e.a.conns, Barrier: e.a.cipher, Now: e.clk.Now})
			if err != nil {
				t.Fatal(err)
			}
			if err := a2.Sweep(ctx); err != nil {
				t.Fatalf("Sweep: %v", err)
			}
			users, _ := e.fake.ListEphemeral(ctx, e.vault.targets["pg1"].Connector(), e.vault.login(), "")
			want := []string{"app", g.Ephemeral.Username}
			slices.Sort(want)
			if !slices.Equal(users, want) {
				t.Errorf("users after Sweep: %q, want %q", users, want)
			}
			if cred, err := a2.RevealEphemeral(ctx, origin(alice), alice, g.ID); err != nil || cred.Username != g.Ephemeral.Username {
				t.Errorf("reveal after Sweep: %v", err)
			}
			if gb, _ := a2.Grant(ctx, gb.ID); gb.Ephemeral.State != ephDropped {
				t.Errorf("bob's user: %+v", gb.Ephemeral)
			}
		})
	}
}

// TestRunExpiresAndStops runs Run with a short interval until it has
// expired a grant, then stops it.
func TestRunExpiresAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	e := newEnv(t, testenv.SQLite(t))
	e.a.interval = 10 * time.Millisecond
	e.role(t, "prod-dba", true)
	e.eligible(t, Eligibility{Role: "prod-dba", Subject: Subject{SubjectUser, "alice"}, MaxTTL: time.Hour})
	r := e.request(t, alice, RequestSpec{Role: "prod-dba", TTL: time.Minute, Reason: "x"})
	e.clk.Add(time.Minute)
	done := make(chan struct{})
	go func() { defer close(done); e.a.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		g, err := e.a.Grant(ctx, r.GrantID)
		if err == nil && !g.EndedAt.IsZero() && g.Ephemeral.State == ephDropped {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Run did not expire the grant: %+v", g)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}
