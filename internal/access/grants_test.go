package access

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/testenv"
)

// TestGrantExpiry checks that the policy engine refuses a grant from the
// microsecond it expires, before any cleanup ran, and that Sweep then ends
// it.
func TestGrantExpiry(t *testing.T) {
	for _, b := range testenv.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, b.Open(t))
			e.role(t, "prod-dba", false)
			e.eligible(t, Eligibility{Role: "prod-dba", Subject: Subject{SubjectGroup, "dba"}, Approvals: 1, ApproverGroup: "approvers"})
			r := e.request(t, alice, RequestSpec{Role: "prod-dba", TTL: 30 * time.Minute, Reason: "x"})
			e.clk.Add(10 * time.Minute)
			approvedAt := e.clk.Now()
			r = e.approve(t, bob, r.ID)
			g, err := e.a.Grant(ctx, r.GrantID)
			if err != nil || !g.StartsAt.Equal(approvedAt) || !g.ExpiresAt.Equal(approvedAt.Add(30*time.Minute)) {
				t.Fatalf("grant %+v, %v; want from the approval for 30m", g, err)
			}
			e.clk.Set(g.ExpiresAt.Add(-time.Microsecond))
			if d := e.allowed(t, alice); !d.Allow {
				t.Errorf("just before expiry: %+v", d)
			}
			e.clk.Set(g.ExpiresAt)
			if d := e.allowed(t, alice); d.Allow {
				t.Errorf("at expiry, before Sweep: %+v; want deny", d)
			}
			if g, _ := e.a.Grant(ctx, g.ID); g.Status != GrantExpired {
				t.Errorf("status at expiry: %s", g.Status)
			}
			if gs, _ := e.a.Grants(ctx, GrantFilter{Active: true}); len(gs) != 0 {
				t.Errorf("active grants at expiry: %+v", gs)
			}
			if n, err := e.a.ExpireGrants(ctx); err != nil || n != 1 {
				t.Fatalf("ExpireGrants: %d, %v", n, err)
			}
			if n, err := e.a.ExpireGrants(ctx); err != nil || n != 0 {
				t.Errorf("ExpireGrants again: %d, %v", n, err)
			}
			g, _ = e.a.Grant(ctx, g.ID)
			if g.Status != GrantExpired || g.EndedBy != "system:access" {
				t.Errorf("after ExpireGrants: %+v", g)
			}
			if got := e.actions(t); got[len(got)-1] != "access.grant.expire" {
				t.Errorf("last audited %q", got[len(got)-1])
			}
			if got := e.notes.events(); !slices.Equal(got, []string{EventRequested, EventApproved, EventExpired}) {
				t.Errorf("notified %q", got)
			}
		})
	}
}

func TestRevokeGrant(t *testing.T) {
	for _, b := range testenv.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, b.Open(t))
			e.role(t, "prod-dba", false)
			e.eligible(t, Eligibility{Role: "prod-dba", Subject: Subject{SubjectUser, "alice"}, MaxTTL: time.Hour})
			r := e.request(t, alice, RequestSpec{Role: "prod-dba", TTL: time.Hour, Reason: "x"})
			g, err := e.a.RevokeGrant(ctx, admin, r.GrantID, "incident closed")
			if err != nil || g.Status != GrantRevoked || g.EndedBy != "user:admin" {
				t.Fatalf("RevokeGrant: %+v, %v", g, err)
			}
			if d := e.allowed(t, alice); d.Allow {
				t.Errorf("after revocation: %+v; want deny", d)
			}
			_, err = e.a.RevokeGrant(ctx, admin, r.GrantID, "")
			wantErr(t, "revoking twice", err, errkind.Conflict, ErrGrantEnded)
			_, err = e.a.RevokeGrant(ctx, admin, "nope", "")
			wantErr(t, "revoking nothing", err, errkind.NotFound, nil)
			if got := e.notes.events(); !slices.Equal(got, []string{EventRequested, EventApproved, EventRevoked}) {
				t.Errorf("notified %q", got)
			}
		})
	}
}

func TestExtendGrant(t *testing.T) {
	for _, b := range testenv.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, b.Open(t))
			e.role(t, "prod-dba", false)
			e.eligible(t, Eligibility{Role: "prod-dba", Subject: Subject{SubjectGroup, "dba"}, Approvals: 1, ApproverGroup: "approvers"})
			r := e.approve(t, bob, e.request(t, alice, RequestSpec{Role: "prod-dba", TTL: 30 * time.Minute, Reason: "x"}).ID)
			old, _ := e.a.Grant(ctx, r.GrantID)

			_, err := e.a.ExtendGrant(ctx, origin(bob), bob, old.ID, RequestSpec{TTL: time.Hour, Reason: "y"})
			wantErr(t, "extension by someone else", err, errkind.NotFound, nil)
			ext, err := e.a.ExtendGrant(ctx, origin(alice), alice, old.ID, RequestSpec{TTL: 2 * time.Hour, Reason: "more"})
			if err != nil || ext.Kind != KindExtension || ext.Status != StatusPending || ext.GrantID != old.ID {
				t.Fatalf("ExtendGrant: %+v, %v", ext, err)
			}
			e.clk.Add(20 * time.Minute)
			_, err = e.a.Approve(ctx, origin(alice), alice, ext.ID, "", e.clk.Now())
			wantErr(t, "self-approval of an extension", err, errkind.Denied, ErrSelfApproval)
			ext = e.approve(t, carol, ext.ID)
			g, _ := e.a.Grant(ctx, old.ID)
			if ext.Status != StatusApproved || !g.ExpiresAt.Equal(e.clk.Now().Add(2*time.Hour)) {
				t.Fatalf("after approval: request %+v, grant expires %v", ext, g.ExpiresAt)
			}
			e.clk.Set(old.ExpiresAt.Add(time.Minute))
			if d := e.allowed(t, alice); !d.Allow || !slices.Equal(d.Policies, []string{g.Policy}) {
				t.Errorf("after the old expiry: %+v; want allow by %s", d, g.Policy)
			}
			e.clk.Set(g.ExpiresAt)
			if d := e.allowed(t, alice); d.Allow {
				t.Errorf("at the new expiry: %+v", d)
			}
			_, err = e.a.ExtendGrant(ctx, origin(alice), alice, old.ID, RequestSpec{TTL: time.Hour, Reason: "z"})
			wantErr(t, "extension of an expired grant", err, errkind.Conflict, ErrGrantEnded)
		})
	}
}

// TestPendingExtensionOfEndedGrant checks that a grant's end cancels its
// pending extensions.
func TestPendingExtensionOfEndedGrant(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, testenv.SQLite(t))
	e.role(t, "prod-dba", false)
	e.eligible(t, Eligibility{Role: "prod-dba", Subject: Subject{SubjectUser, "alice"}, MaxTTL: time.Hour})
	e.eligible(t, Eligibility{Role: "prod-dba", Subject: Subject{SubjectGroup, "dba"}, Approvals: 1, ApproverGroup: "approvers", MaxTTL: 8 * time.Hour})
	r := e.request(t, alice, RequestSpec{Role: "prod-dba", TTL: time.Hour, Reason: "x"})
	ext, err := e.a.ExtendGrant(ctx, origin(alice), alice, r.GrantID, RequestSpec{TTL: 4 * time.Hour, Reason: "more"})
	if err != nil || ext.Status != StatusPending {
		t.Fatalf("ExtendGrant: %+v, %v", ext, err)
	}
	if _, err := e.a.RevokeGrant(ctx, admin, r.GrantID, ""); err != nil {
		t.Fatal(err)
	}
	_, err = e.a.Approve(ctx, origin(bob), bob, ext.ID, "", e.clk.Now())
	wantErr(t, "approving the extension of a revoked grant", err, errkind.Conflict, ErrNotPending)
	if d := e.allowed(t, alice); d.Allow {
		t.Errorf("allowed after revocation: %+v", d)
	}
}

func TestEndGrantsOf(t *testing.T) {
	for _, b := range testenv.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, b.Open(t))
			e.role(t, "prod-dba", true)
			e.role(t, "other", false)
			e.eligible(t, Eligibility{Role: "prod-dba", Subject: Subject{SubjectGroup, "dba"}, MaxTTL: time.Hour})
			e.eligible(t, Eligibility{Role: "other", Subject: Subject{SubjectGroup, "dba"}, Approvals: 1, ApproverGroup: "approvers"})
			ga := e.request(t, alice, RequestSpec{Role: "prod-dba", TTL: time.Hour, Reason: "x"})
			gb := e.request(t, bob, RequestSpec{Role: "prod-dba", TTL: time.Hour, Reason: "x"})
			pending := e.request(t, alice, RequestSpec{Role: "other", TTL: time.Hour, Reason: "x"})
			g, _ := e.a.Grant(ctx, ga.GrantID)
			if _, ok := e.fake.user("pg1", g.Ephemeral.Username); !ok {
				t.Fatal("alice's ephemeral user was not created")
			}

			n, err := e.a.EndGrantsOf(ctx, admin, alice)
			if err != nil || n != 1 {
				t.Fatalf("EndGrantsOf: %d, %v", n, err)
			}
			if d := e.allowed(t, alice); d.Allow {
				t.Errorf("alice after EndGrantsOf: %+v", d)
			}
			if d := e.allowed(t, bob); !d.Allow {
				t.Errorf("bob after alice's end: %+v", d)
			}
			if g, _ := e.a.Grant(ctx, ga.GrantID); g.Status != GrantRevoked || g.Ephemeral.State != ephDropped {
				t.Errorf("alice's grant: %+v %+v", g, g.Ephemeral)
			}
			if _, ok := e.fake.user("pg1", g.Ephemeral.Username); ok {
				t.Error("alice's ephemeral user still exists")
			}
			if r, _ := e.a.Request(ctx, pending.ID); r.Status != StatusCancelled {
				t.Errorf("alice's pending request: %s", r.Status)
			}
			if g, _ := e.a.Grant(ctx, gb.GrantID); g.Status != GrantActive {
				t.Errorf("bob's grant: %s", g.Status)
			}
		})
	}
}

// TestConcurrentGrantsAndPolicyChanges runs self-activations, revocations
// and policy changes at once on PostgreSQL, where they take the authz and
// audit locks: they must not deadlock.
func TestConcurrentGrantsAndPolicyChanges(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, testenv.Postgres(t))
	e.role(t, "prod-dba", false)
	e.eligible(t, Eligibility{Role: "prod-dba", Subject: Subject{SubjectGroup, "dba"}, MaxTTL: time.Hour})
	errs := make(chan error, 16)
	for i := range cap(errs) {
		go func() {
			var err error
			switch i % 2 {
			case 0:
				var r Request
				p := []identity.Principal{alice, bob}[i%4/2]
				if r, err = e.a.CreateRequest(ctx, origin(p), p, RequestSpec{Role: "prod-dba", TTL: time.Hour, Reason: "x"}); err == nil {
					_, err = e.a.RevokeGrant(ctx, admin, r.GrantID, "")
				}
			case 1:
				_, err = e.az.Put(ctx, admin, fmt.Sprintf("p%d", i), `permit(principal in Group::"dba", action == Action::"connect", resource);`)
			}
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
