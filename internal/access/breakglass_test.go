package access

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/testenv"
)

// breakGlassRole creates the break-glass role "bg" on pg1, rotating
// pg1/postgres when a grant ends.
func (e *env) breakGlassRole(t testing.TB) {
	t.Helper()
	if _, err := e.a.CreateRole(context.Background(), admin, RoleSpec{Name: "bg", Template: pg1Template, BreakGlass: true,
		RotateAccounts: []string{"pg1/postgres"}}); err != nil {
		t.Fatalf("CreateRole: %v", err)
	}
}

// events returns the audit events with action.
func (e *env) events(t testing.TB, action string) []audit.Event {
	t.Helper()
	evs, err := e.log.List(context.Background(), audit.Filter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(evs, func(ev audit.Event) bool { return ev.Action != action })
}

func TestBreakGlassDualControl(t *testing.T) {
	for _, b := range testenv.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, b.Open(t))
			e.breakGlassRole(t)
			e.role(t, "plain", false)

			for _, el := range []Eligibility{
				{Role: "bg", Subject: Subject{SubjectGroup, "dba"}, MaxTTL: time.Hour},
				{Role: "bg", Subject: Subject{SubjectGroup, "dba"}, Approvals: 1, ApproverGroup: "approvers", MaxTTL: time.Hour},
			} {
				_, err := e.a.SetEligibility(ctx, admin, el)
				wantErr(t, "break-glass eligibility with "+el.ApproverGroup, err, errkind.Invalid, ErrDualControl)
			}
			_, err := e.a.SetEligibility(ctx, admin, Eligibility{Role: "plain", Subject: Subject{SubjectGroup, "dba"}, Approvals: 2,
				ApproverGroup: "approvers", MaxTTL: time.Hour, AllowEmergency: true})
			wantErr(t, "emergency use of a plain role", err, errkind.Invalid, nil)
			e.eligible(t, Eligibility{Role: "bg", Subject: Subject{SubjectGroup, "dba"}, Approvals: 2, ApproverGroup: "approvers"})

			_, err = e.a.CreateRequest(ctx, origin(alice), alice, RequestSpec{Role: "bg", TTL: time.Hour, Reason: "db down", Emergency: true})
			wantErr(t, "emergency without AllowEmergency", err, errkind.Denied, ErrNoEmergency)
			_, err = e.a.CreateRequest(ctx, origin(alice), alice, RequestSpec{Role: "plain", TTL: time.Hour, Reason: "x", Emergency: true})
			wantErr(t, "emergency on a plain role", err, errkind.Invalid, nil)

			r := e.request(t, alice, RequestSpec{Role: "bg", TTL: time.Hour, Reason: "db down"})
			if r.Status != StatusPending || r.ApprovalsRequired != 2 || r.Emergency {
				t.Fatalf("request %+v", r)
			}
			e.approve(t, bob, r.ID)
			_, err = e.a.Approve(ctx, origin(bob), bob, r.ID, "", e.clk.Now())
			wantErr(t, "the same approver twice", err, errkind.Conflict, ErrAlreadyApproved)
			if d := e.allowed(t, alice); d.Allow {
				t.Fatalf("allowed with one approval: %+v", d)
			}
			if r = e.approve(t, carol, r.ID); r.Status != StatusApproved {
				t.Fatalf("after two approvals: %+v", r)
			}
			if d := e.allowed(t, alice); !d.Allow {
				t.Errorf("refused after two approvals: %+v", d)
			}
			if _, err := e.a.RevokeGrant(ctx, admin, r.GrantID, "done"); err != nil {
				t.Fatal(err)
			}
			if got := e.rot.triggered(); !slices.Equal(got, []string{"pg1/postgres"}) {
				t.Errorf("rotated %q after a dual-control grant", got)
			}
			if is, _ := e.a.Incidents(ctx, false); len(is) != 0 {
				t.Errorf("incidents without an emergency: %+v", is)
			}
		})
	}
}

func TestBreakGlassEmergency(t *testing.T) {
	for _, b := range testenv.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, b.Open(t))
			var logs bytes.Buffer
			e.a.log = slog.New(slog.NewTextHandler(&logs, nil))
			e.breakGlassRole(t)
			e.eligible(t, Eligibility{Role: "bg", Subject: Subject{SubjectGroup, "dba"}, Approvals: 2, ApproverGroup: "approvers",
				AllowEmergency: true, RequireTicket: `INC-[0-9]+`})

			_, err := e.a.CreateRequest(ctx, origin(alice), alice, RequestSpec{Role: "bg", TTL: time.Hour, Ticket: "INC-1", Emergency: true})
			wantErr(t, "emergency without a reason", err, errkind.Invalid, nil)
			_, err = e.a.CreateRequest(ctx, origin(alice), alice, RequestSpec{Role: "bg", TTL: time.Hour, Reason: "x", Emergency: true})
			wantErr(t, "emergency without the ticket", err, errkind.Invalid, nil)

			r := e.request(t, alice, RequestSpec{Role: "bg", TTL: time.Hour, Reason: "primary down", Ticket: "INC-7", Emergency: true})
			if r.Status != StatusApproved || !r.Emergency || r.GrantID == "" {
				t.Fatalf("emergency request %+v; want approved at once", r)
			}
			if d := e.allowed(t, alice); !d.Allow {
				t.Fatalf("emergency grant refused: %+v", d)
			}
			g, _ := e.a.Grant(ctx, r.GrantID)
			if !g.Emergency || !slices.Equal(g.RotateAccounts, []string{"pg1/postgres"}) {
				t.Errorf("grant %+v", g)
			}

			evs := e.events(t, "access.breakglass.emergency")
			if len(evs) != 1 || evs[0].Details["severity"] != "high" || evs[0].Details["grant"] != g.ID ||
				evs[0].Details["approver_group"] != "approvers" || evs[0].Actor != "user:alice" {
				t.Errorf("emergency events %+v", evs)
			}
			if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "BREAK-GLASS") {
				t.Errorf("no error-level alert in %q", logs.String())
			}
			e.notes.mu.Lock()
			ns := slices.Clone(e.notes.ns)
			e.notes.mu.Unlock()
			if len(ns) != 1 || ns[0].Event != EventEmergency || ns[0].ApproverGroup != "approvers" || ns[0].Severity != "high" ||
				ns[0].GrantID != g.ID || ns[0].IncidentID == "" {
				t.Fatalf("notified %+v", ns)
			}

			open, err := e.a.Incidents(ctx, true)
			if err != nil || len(open) != 1 || open[0].ID != ns[0].IncidentID || open[0].Status != IncidentOpen ||
				open[0].Principal != alice || open[0].Ticket != "INC-7" {
				t.Fatalf("open incidents %+v, %v", open, err)
			}
			id := open[0].ID
			_, err = e.a.ReviewIncident(ctx, origin(alice), alice, id, "all good")
			wantErr(t, "review by the grantee", err, errkind.Denied, ErrSelfReview)
			_, err = e.a.ReviewIncident(ctx, origin(eve), eve, id, "all good")
			wantErr(t, "review by a non-approver", err, errkind.Denied, ErrNotApprover)
			_, err = e.a.ReviewIncident(ctx, origin(bob), bob, id, "all good")
			wantErr(t, "review during the grant", err, errkind.Conflict, ErrEmergencyActive)

			e.clk.Set(g.ExpiresAt)
			if n, err := e.a.ExpireGrants(ctx); err != nil || n != 1 {
				t.Fatalf("ExpireGrants: %d, %v", n, err)
			}
			if got := e.rot.triggered(); !slices.Equal(got, []string{"pg1/postgres"}) {
				t.Errorf("rotated %q at expiry", got)
			}
			if n := len(e.events(t, "access.grant.rotate")); n != 1 {
				t.Errorf("%d access.grant.rotate events", n)
			}
			if err := e.a.Sweep(ctx); err != nil {
				t.Fatal(err)
			}
			if got := e.rot.triggered(); len(got) != 1 {
				t.Errorf("Sweep rotated again: %q", got)
			}

			if is, _ := e.a.Incidents(ctx, true); len(is) != 1 {
				t.Fatalf("the incident closed by itself: %+v", is)
			}
			inc, err := e.a.ReviewIncident(ctx, origin(bob), bob, id, "justified: primary failover")
			if err != nil || inc.Status != IncidentReviewed || inc.Reviewer != "user:bob" || !inc.ReviewedAt.Equal(e.clk.Now()) {
				t.Fatalf("ReviewIncident: %+v, %v", inc, err)
			}
			_, err = e.a.ReviewIncident(ctx, origin(carol), carol, id, "again")
			wantErr(t, "second review", err, errkind.Conflict, ErrReviewClosed)
			if is, _ := e.a.Incidents(ctx, true); len(is) != 0 {
				t.Errorf("open after review: %+v", is)
			}
			if is, _ := e.a.Incidents(ctx, false); len(is) != 1 || is[0].Notes != "justified: primary failover" {
				t.Errorf("all incidents: %+v", is)
			}
			if n := len(e.events(t, "access.incident.review")); n != 1 {
				t.Errorf("%d access.incident.review events", n)
			}
		})
	}
}

// TestBreakGlassRotationOnRevoke checks the rotation when an emergency
// grant is revoked, and that a rotation left pending (a crash after the
// revocation committed) is triggered by Sweep.
func TestBreakGlassRotationOnRevoke(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, testenv.SQLite(t))
	e.breakGlassRole(t)
	e.eligible(t, Eligibility{Role: "bg", Subject: Subject{SubjectUser, "alice"}, Approvals: 2, ApproverGroup: "approvers", AllowEmergency: true})
	r := e.request(t, alice, RequestSpec{Role: "bg", TTL: time.Hour, Reason: "outage", Emergency: true})
	if _, err := e.a.RevokeGrant(ctx, origin(bob), r.GrantID, "over"); err != nil {
		t.Fatal(err)
	}
	if d := e.allowed(t, alice); d.Allow {
		t.Errorf("allowed after revocation: %+v", d)
	}
	if got := e.rot.triggered(); !slices.Equal(got, []string{"pg1/postgres"}) {
		t.Errorf("rotated %q at revocation", got)
	}
	if _, err := e.db.ExecContext(ctx, `UPDATE access_grants SET rotate_pending = TRUE WHERE id = $1`, r.GrantID); err != nil {
		t.Fatal(err)
	}
	if err := e.a.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.rot.triggered(); len(got) != 2 {
		t.Errorf("pending rotation not retried: %q", got)
	}

	// Without a Rotator, a role that rotates accounts is refused.
	e.a.rotator = nil
	_, err := e.a.CreateRole(ctx, admin, RoleSpec{Name: "bg2", Template: pg1Template, BreakGlass: true, RotateAccounts: []string{"pg1/postgres"}})
	wantErr(t, "RotateAccounts without a Rotator", err, errkind.Invalid, nil)
}
