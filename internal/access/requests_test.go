package access

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/testenv"
)

func TestSelfActivation(t *testing.T) {
	for _, b := range testenv.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			e := newEnv(t, b.Open(t))
			e.role(t, "prod-dba", false)
			e.eligible(t, Eligibility{Role: "prod-dba", Subject: Subject{SubjectUser, "alice"}, MaxTTL: time.Hour})
			if d := e.allowed(t, alice); d.Allow {
				t.Fatalf("before any grant: %+v", d)
			}
			r := e.request(t, alice, RequestSpec{Role: "prod-dba", TTL: 30 * time.Minute, Reason: "fix replication"})
			if r.Status != StatusApproved || r.GrantID == "" || r.EligibleAs != "user:alice" {
				t.Fatalf("request %+v; want approved with a grant", r)
			}
			d := e.allowed(t, alice)
			if !d.Allow || !slices.Equal(d.Policies, []string{"grant." + r.GrantID}) {
				t.Errorf("during the grant: %+v; want allow by grant.%s", d, r.GrantID)
			}
			if d := e.allowed(t, bob); d.Allow {
				t.Errorf("bob allowed by alice's grant: %+v", d)
			}
			g, err := e.a.Grant(context.Background(), r.GrantID)
			if err != nil || g.Status != GrantActive || !g.ExpiresAt.Equal(e.clk.Now().Add(30*time.Minute)) || g.Principal != alice {
				t.Errorf("grant %+v, %v", g, err)
			}
			want := []string{"access.role.create", "access.eligibility.set", "access.request.create", "access.grant.create"}
			if got := e.actions(t); !slices.Equal(got, want) {
				t.Errorf("audited %q, want %q", got, want)
			}
			if got := e.notes.events(); !slices.Equal(got, []string{EventRequested, EventApproved}) {
				t.Errorf("notified %q", got)
			}
		})
	}
}

func TestApprovalRules(t *testing.T) {
	for _, b := range testenv.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, b.Open(t))
			e.role(t, "prod-dba", false)
			e.eligible(t, Eligibility{Role: "prod-dba", Subject: Subject{SubjectGroup, "dba"}, Approvals: 2, ApproverGroup: "approvers"})
			r := e.request(t, alice, RequestSpec{Role: "prod-dba", TTL: time.Hour, Reason: "INC"})
			if r.Status != StatusPending || r.ApprovalsRequired != 2 || r.EligibleAs != "group:dba" {
				t.Fatalf("request %+v", r)
			}

			_, err := e.a.Approve(ctx, origin(alice), alice, r.ID, "", e.clk.Now())
			wantErr(t, "self-approval", err, errkind.Denied, ErrSelfApproval)
			_, err = e.a.Approve(ctx, origin(eve), eve, r.ID, "", e.clk.Now())
			wantErr(t, "approver outside the group", err, errkind.Denied, ErrNotApprover)

			if got := e.approve(t, bob, r.ID); got.Status != StatusPending || len(got.Approvals) != 1 {
				t.Fatalf("after bob: %+v", got)
			}
			_, err = e.a.Approve(ctx, origin(bob), bob, r.ID, "again", e.clk.Now())
			wantErr(t, "second approval by bob", err, errkind.Conflict, ErrAlreadyApproved)
			if got, _ := e.a.Request(ctx, r.ID); got.Status != StatusPending || len(got.Approvals) != 1 {
				t.Fatalf("bob's second approval counted: %+v", got)
			}
			if d := e.allowed(t, alice); d.Allow {
				t.Fatalf("allowed with 1 of 2 approvals: %+v", d)
			}

			// dave may approve; so may carol, through senior ⊂ approvers.
			pending, err := e.a.Requests(ctx, RequestFilter{ApprovableBy: &carol})
			if err != nil || len(pending) != 1 || pending[0].ID != r.ID {
				t.Errorf("pending for carol: %+v, %v", pending, err)
			}
			if pending, _ := e.a.Requests(ctx, RequestFilter{ApprovableBy: &bob}); len(pending) != 0 {
				t.Errorf("pending for bob, who approved: %+v", pending)
			}
			got := e.approve(t, carol, r.ID)
			if got.Status != StatusApproved || got.GrantID == "" || got.DecidedBy != "user:carol" {
				t.Fatalf("after carol: %+v", got)
			}
			if d := e.allowed(t, alice); !d.Allow {
				t.Errorf("after 2 of 2 approvals: %+v", d)
			}
			_, err = e.a.Approve(ctx, origin(dave), dave, r.ID, "", e.clk.Now())
			wantErr(t, "approval of an approved request", err, errkind.Conflict, ErrNotPending)
		})
	}
}

func TestDenyAndCancel(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, testenv.SQLite(t))
	e.role(t, "prod-dba", false)
	e.eligible(t, Eligibility{Role: "prod-dba", Subject: Subject{SubjectGroup, "dba"}, Approvals: 1, ApproverGroup: "approvers"})
	r := e.request(t, alice, RequestSpec{Role: "prod-dba", TTL: time.Hour, Reason: "x"})
	_, err := e.a.Deny(ctx, origin(bob), bob, r.ID, "")
	wantErr(t, "deny without a comment", err, errkind.Invalid, nil)
	_, err = e.a.Deny(ctx, origin(alice), alice, r.ID, "no")
	wantErr(t, "deny by the requester", err, errkind.Denied, ErrSelfApproval)
	got, err := e.a.Deny(ctx, origin(bob), bob, r.ID, "not during the freeze")
	if err != nil || got.Status != StatusDenied || got.Comment != "not during the freeze" {
		t.Fatalf("Deny: %+v, %v", got, err)
	}
	_, err = e.a.Approve(ctx, origin(dave), dave, r.ID, "", e.clk.Now())
	wantErr(t, "approval after a denial", err, errkind.Conflict, ErrNotPending)

	r = e.request(t, alice, RequestSpec{Role: "prod-dba", TTL: time.Hour, Reason: "x"})
	_, err = e.a.Cancel(ctx, origin(bob), bob, r.ID)
	wantErr(t, "cancel by someone else", err, errkind.NotFound, nil)
	if got, err := e.a.Cancel(ctx, origin(alice), alice, r.ID); err != nil || got.Status != StatusCancelled {
		t.Fatalf("Cancel: %+v, %v", got, err)
	}
	want := []string{EventRequested, EventDenied, EventRequested, EventCancelled}
	if got := e.notes.events(); !slices.Equal(got, want) {
		t.Errorf("notified %q, want %q", got, want)
	}
	mine, err := e.a.Requests(ctx, RequestFilter{Requester: &alice})
	if err != nil || len(mine) != 2 {
		t.Errorf("alice's requests: %d, %v", len(mine), err)
	}
}

func TestApprovalAfterWindow(t *testing.T) {
	for _, b := range testenv.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, b.Open(t))
			e.role(t, "prod-dba", false)
			e.eligible(t, Eligibility{Role: "prod-dba", Subject: Subject{SubjectGroup, "dba"}, Approvals: 1, ApproverGroup: "approvers"})
			r := e.request(t, alice, RequestSpec{Role: "prod-dba", TTL: time.Hour, Reason: "x"})
			if !r.ExpiresAt.Equal(e.clk.Now().Add(24 * time.Hour)) {
				t.Errorf("window ends %v", r.ExpiresAt)
			}
			e.clk.Set(r.ExpiresAt)
			_, err := e.a.Approve(ctx, origin(bob), bob, r.ID, "", e.clk.Now())
			wantErr(t, "approval at the end of the window", err, errkind.Conflict, ErrWindowPassed)
			if err := e.a.Sweep(ctx); err != nil {
				t.Fatal(err)
			}
			if got, _ := e.a.Request(ctx, r.ID); got.Status != StatusExpired {
				t.Errorf("after Sweep: %s; want expired", got.Status)
			}
			if got := e.notes.events(); !slices.Equal(got, []string{EventRequested, EventRequestExpired}) {
				t.Errorf("notified %q", got)
			}
		})
	}
}

func TestRequestTerms(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, testenv.SQLite(t))
	e.role(t, "prod-dba", false)
	e.eligible(t, Eligibility{Role: "prod-dba", Subject: Subject{SubjectUser, "alice"}, Approvals: 1, ApproverGroup: "approvers",
		MaxTTL: 2 * time.Hour, RequireTicket: `INC-[0-9]+`, RequireMFA: true})
	now := e.clk.Now()
	good := RequestSpec{Role: "prod-dba", TTL: time.Hour, Reason: "x", Ticket: "INC-42", MFA: true, MFAAt: now.Add(-5 * time.Minute)}
	tests := []struct {
		name     string
		edit     func(*RequestSpec)
		kind     errkind.Kind
		sentinel error
	}{
		{"ok", func(*RequestSpec) {}, 0, nil},
		{"no ticket", func(s *RequestSpec) { s.Ticket = "" }, errkind.Invalid, nil},
		{"wrong ticket", func(s *RequestSpec) { s.Ticket = "CHG-42" }, errkind.Invalid, nil},
		{"ticket matching in part", func(s *RequestSpec) { s.Ticket = "xINC-42" }, errkind.Invalid, nil},
		{"no reason", func(s *RequestSpec) { s.Reason = " " }, errkind.Invalid, nil},
		{"TTL over the max", func(s *RequestSpec) { s.TTL = 2*time.Hour + time.Second }, errkind.Invalid, nil},
		{"no TTL", func(s *RequestSpec) { s.TTL = 0 }, errkind.Invalid, nil},
		{"no MFA", func(s *RequestSpec) { s.MFA, s.MFAAt = false, time.Time{} }, errkind.Denied, ErrMFARequired},
		{"stale MFA", func(s *RequestSpec) { s.MFAAt = now.Add(-11 * time.Minute) }, errkind.Denied, ErrMFARequired},
		{"unknown role", func(s *RequestSpec) { s.Role = "nope" }, errkind.NotFound, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := good
			tt.edit(&spec)
			r, err := e.a.CreateRequest(ctx, origin(alice), alice, spec)
			if tt.kind == 0 {
				if err != nil || r.Status != StatusPending || !r.RequireMFA {
					t.Fatalf("CreateRequest: %+v, %v", r, err)
				}
				// Approvers need recent MFA too.
				_, err = e.a.Approve(ctx, origin(bob), bob, r.ID, "", time.Time{})
				wantErr(t, "approval without MFA", err, errkind.Denied, ErrMFARequired)
				_, err = e.a.Approve(ctx, origin(bob), bob, r.ID, "", now.Add(-time.Hour))
				wantErr(t, "approval with stale MFA", err, errkind.Denied, ErrMFARequired)
				if got := e.approve(t, bob, r.ID); got.Status != StatusApproved || !got.Approvals[0].MFA {
					t.Errorf("approval with MFA: %+v", got)
				}
				return
			}
			wantErr(t, "CreateRequest", err, tt.kind, tt.sentinel)
		})
	}
	_, err := e.a.CreateRequest(ctx, origin(eve), eve, good)
	wantErr(t, "request by someone not eligible", err, errkind.Denied, ErrNotEligible)
}

// TestEligibilityChoice checks that of several eligibilities the request
// goes under the one needing the fewest approvals whose terms it meets.
func TestEligibilityChoice(t *testing.T) {
	e := newEnv(t, testenv.SQLite(t))
	e.role(t, "prod-dba", false)
	e.eligible(t, Eligibility{Role: "prod-dba", Subject: Subject{SubjectUser, "alice"}, MaxTTL: time.Hour})
	e.eligible(t, Eligibility{Role: "prod-dba", Subject: Subject{SubjectGroup, "dba"}, Approvals: 1, ApproverGroup: "approvers", MaxTTL: 8 * time.Hour})
	short := e.request(t, alice, RequestSpec{Role: "prod-dba", TTL: 30 * time.Minute, Reason: "x"})
	long := e.request(t, alice, RequestSpec{Role: "prod-dba", TTL: 4 * time.Hour, Reason: "x"})
	if short.Status != StatusApproved || short.EligibleAs != "user:alice" {
		t.Errorf("30m request: %+v; want self-activated as user:alice", short)
	}
	if long.Status != StatusPending || long.EligibleAs != "group:dba" || long.ApprovalsRequired != 1 {
		t.Errorf("4h request: %+v; want pending as group:dba", long)
	}
	_, err := e.a.CreateRequest(context.Background(), origin(alice), alice, RequestSpec{Role: "prod-dba", TTL: 9 * time.Hour, Reason: "x"})
	wantErr(t, "9h request", err, errkind.Invalid, nil)
}

func TestEligibilityValidation(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, testenv.SQLite(t))
	e.role(t, "r", false)
	for _, el := range []Eligibility{
		{Role: "r", Subject: Subject{"machine", "ci"}, MaxTTL: time.Hour},
		{Role: "r", Subject: Subject{SubjectUser, "alice"}},
		{Role: "r", Subject: Subject{SubjectUser, "alice"}, MaxTTL: time.Hour, Approvals: 1},
		{Role: "r", Subject: Subject{SubjectUser, "alice"}, MaxTTL: time.Hour, ApproverGroup: "approvers"},
		{Role: "r", Subject: Subject{SubjectUser, "alice"}, MaxTTL: time.Hour, RequireTicket: "("},
		{Role: "r", Subject: Subject{SubjectUser, "alice"}, MaxTTL: time.Hour, Approvals: MaxApprovals + 1, ApproverGroup: "a"},
	} {
		_, err := e.a.SetEligibility(ctx, admin, el)
		wantErr(t, "SetEligibility", err, errkind.Invalid, nil)
	}
	_, err := e.a.SetEligibility(ctx, admin, Eligibility{Role: "nope", Subject: Subject{SubjectUser, "alice"}, MaxTTL: time.Hour})
	wantErr(t, "eligibility for an unknown role", err, errkind.NotFound, nil)
	e.eligible(t, Eligibility{Role: "r", Subject: Subject{SubjectUser, "alice"}, MaxTTL: time.Hour})
	e.eligible(t, Eligibility{Role: "r", Subject: Subject{SubjectUser, "alice"}, MaxTTL: 2 * time.Hour}) // replaces
	els, err := e.a.ListEligibility(ctx, "r")
	if err != nil || len(els) != 1 || els[0].MaxTTL != 2*time.Hour {
		t.Errorf("ListEligibility: %+v, %v", els, err)
	}
	if err := e.a.RemoveEligibility(ctx, admin, "r", Subject{SubjectUser, "alice"}); err != nil {
		t.Fatal(err)
	}
	err = e.a.RemoveEligibility(ctx, admin, "r", Subject{SubjectUser, "alice"})
	wantErr(t, "removing twice", err, errkind.NotFound, nil)
	_, err = e.a.CreateRequest(ctx, origin(alice), alice, RequestSpec{Role: "r", TTL: time.Minute, Reason: "x"})
	wantErr(t, "request after removal", err, errkind.Denied, ErrNotEligible)
}

func TestRoles(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, testenv.SQLite(t))
	for _, spec := range []RoleSpec{
		{Name: "Bad Name", Template: pg1Template},
		{Name: "r", Template: `permit(principal, action, resource);`},
		{Name: "r", Template: pg1Template, Ephemeral: &EphemeralRole{Target: "pg1"}},
		{Name: "r", Template: pg1Template, Ephemeral: &EphemeralRole{Target: "pg1", Roles: []string{"bad role"}}},
	} {
		_, err := e.a.CreateRole(ctx, admin, spec)
		wantErr(t, "CreateRole "+spec.Name, err, errkind.Invalid, nil)
	}
	_, err := e.a.CreateRole(ctx, admin, RoleSpec{Name: "r", Template: pg1Template, Ephemeral: &EphemeralRole{Target: "nope", Roles: []string{"x"}}})
	wantErr(t, "role on an unknown target", err, errkind.NotFound, nil)
	e.role(t, "r", true)
	_, err = e.a.CreateRole(ctx, admin, RoleSpec{Name: "r", Template: pg1Template})
	wantErr(t, "role twice", err, errkind.Conflict, nil)
	got, err := e.a.Role(ctx, "r")
	if err != nil || got.Ephemeral == nil || !slices.Equal(got.Ephemeral.Roles, []string{"pg_read_all_data"}) {
		t.Errorf("Role: %+v, %v", got, err)
	}

	e.eligible(t, Eligibility{Role: "r", Subject: Subject{SubjectUser, "alice"}, MaxTTL: time.Hour})
	req := e.request(t, alice, RequestSpec{Role: "r", TTL: time.Hour, Reason: "x"})
	err = e.a.DeleteRole(ctx, admin, "r")
	wantErr(t, "delete with a live grant", err, errkind.Conflict, nil)
	if _, err := e.a.RevokeGrant(ctx, admin, req.GrantID, "done"); err != nil {
		t.Fatal(err)
	}
	if err := e.a.DeleteRole(ctx, admin, "r"); err != nil {
		t.Fatalf("DeleteRole after revocation: %v", err)
	}
	if rs, _ := e.a.Roles(ctx); len(rs) != 0 {
		t.Errorf("roles left: %+v", rs)
	}
}
