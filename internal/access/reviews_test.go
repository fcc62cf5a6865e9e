package access

import (
	"bytes"
	"context"
	"encoding/csv"
	"slices"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/testenv"
)

func TestReviewRoleScope(t *testing.T) {
	for _, b := range testenv.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, b.Open(t))
			e.role(t, "prod-dba", false)
			e.role(t, "other", false)
			e.eligible(t, Eligibility{Role: "prod-dba", Subject: Subject{SubjectGroup, "dba"}, Approvals: 1, ApproverGroup: "approvers"})
			e.eligible(t, Eligibility{Role: "prod-dba", Subject: Subject{SubjectUser, "carol"}, MaxTTL: time.Hour})
			e.eligible(t, Eligibility{Role: "other", Subject: Subject{SubjectUser, "carol"}, MaxTTL: time.Hour})
			ga := e.approve(t, bob, e.request(t, alice, RequestSpec{Role: "prod-dba", TTL: 8 * time.Hour, Reason: "x"}).ID).GrantID
			gc := e.request(t, carol, RequestSpec{Role: "prod-dba", TTL: time.Hour, Reason: "x"}).GrantID

			c, err := e.a.StartReview(ctx, admin, ReviewSpec{Scope: ScopeRole, Target: "prod-dba", Reviewer: "approvers",
				Deadline: e.clk.Now().Add(7 * 24 * time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			type row struct{ id, kind, subject, grant string }
			var got []row
			for _, it := range c.Items {
				got = append(got, row{it.ID, it.Kind, it.Subject, it.GrantID})
				if it.Role != "prod-dba" || it.Reviewer != "approvers" || it.Decision != "" || it.Detail == "" {
					t.Errorf("item %+v", it)
				}
			}
			want := []row{{"1", ItemEligibility, "user:carol", ""}, {"2", ItemEligibility, "group:dba", ""},
				{"3", ItemGrant, "user:alice", ga}, {"4", ItemGrant, "user:carol", gc}}
			if !slices.Equal(got, want) || c.Default != DecisionRevoke || c.Status != ReviewOpen {
				t.Fatalf("campaign %+v\nitems %+v, want %+v", c, got, want)
			}
			if stored, err := e.a.Review(ctx, c.ID); err != nil || len(stored.Items) != 4 || !stored.Deadline.Equal(c.Deadline) {
				t.Errorf("Review: %+v, %v", stored, err)
			}

			decide := func(p identity.Principal, item, decision string) (ReviewItem, error) {
				return e.a.DecideReview(ctx, origin(p), p, c.ID, item, decision, "checked")
			}
			_, err = decide(eve, "3", DecisionRevoke)
			wantErr(t, "decision by a non-reviewer", err, errkind.Denied, ErrNotReviewer)
			_, err = decide(carol, "4", DecisionKeep)
			wantErr(t, "decision on one's own grant", err, errkind.Denied, ErrSelfReview)
			_, err = decide(bob, "2", DecisionKeep)
			wantErr(t, "decision on one's own group's eligibility", err, errkind.Denied, ErrSelfReview)
			_, err = decide(bob, "3", "maybe")
			wantErr(t, "unknown decision", err, errkind.Invalid, nil)
			_, err = decide(bob, "9", DecisionKeep)
			wantErr(t, "unknown item", err, errkind.NotFound, nil)

			if d := e.allowed(t, alice); !d.Allow {
				t.Fatalf("alice before the review: %+v", d)
			}
			it, err := decide(bob, "3", DecisionRevoke)
			if err != nil || it.Decision != DecisionRevoke || !it.Applied || it.DecidedBy != "user:bob" || it.Defaulted {
				t.Fatalf("revoke alice's grant: %+v, %v", it, err)
			}
			if d := e.allowed(t, alice); d.Allow {
				t.Errorf("alice after her grant was revoked by review: %+v", d)
			}
			if g, _ := e.a.Grant(ctx, ga); g.Status != GrantRevoked {
				t.Errorf("alice's grant %s", g.Status)
			}
			if _, err := decide(dave, "1", DecisionRevoke); err != nil {
				t.Fatal(err)
			}
			if es, _ := e.a.ListEligibility(ctx, "prod-dba"); len(es) != 1 || es[0].Subject != (Subject{SubjectGroup, "dba"}) {
				t.Errorf("eligibilities after revoking carol's: %+v", es)
			}
			_, err = decide(bob, "1", DecisionKeep)
			wantErr(t, "deciding twice", err, errkind.Conflict, ErrAlreadyDecided)
			if _, err := decide(dave, "4", DecisionKeep); err != nil {
				t.Fatal(err)
			}
			if g, _ := e.a.Grant(ctx, gc); g.Status != GrantActive {
				t.Errorf("kept grant is %s", g.Status)
			}

			// Item 2 stays undecided until the deadline: the default revokes it.
			e.clk.Set(c.Deadline)
			_, err = decide(dave, "2", DecisionKeep)
			wantErr(t, "decision at the deadline", err, errkind.Conflict, ErrReviewClosed)
			if n, err := e.a.CloseDueReviews(ctx); err != nil || n != 1 {
				t.Fatalf("CloseDueReviews: %d, %v", n, err)
			}
			if n, err := e.a.CloseDueReviews(ctx); err != nil || n != 0 {
				t.Errorf("CloseDueReviews again: %d, %v", n, err)
			}
			if es, _ := e.a.ListEligibility(ctx, "prod-dba"); len(es) != 0 {
				t.Errorf("eligibilities after the default revoke: %+v", es)
			}
			if es, _ := e.a.ListEligibility(ctx, "other"); len(es) != 1 {
				t.Errorf("other role's eligibilities touched: %+v", es)
			}
			rep, err := e.a.ReviewReport(ctx, c.ID)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Campaign.Status != ReviewClosed || rep.Counts != (ReviewCounts{Total: 4, Kept: 1, Revoked: 3, Defaulted: 1}) {
				t.Errorf("report %+v %+v", rep.Campaign, rep.Counts)
			}
			if it := rep.Campaign.Items[1]; it.Decision != DecisionRevoke || !it.Defaulted || it.DecidedBy != "system:access" || !it.Applied {
				t.Errorf("defaulted item %+v", it)
			}

			var buf bytes.Buffer
			if err := WriteCSV(&buf, rep); err != nil {
				t.Fatal(err)
			}
			recs, err := csv.NewReader(&buf).ReadAll()
			if err != nil {
				t.Fatalf("parse the CSV: %v\n%s", err, buf.String())
			}
			if len(recs) != 1+len(rep.Campaign.Items) || !slices.Equal(recs[0], csvHeader) {
				t.Fatalf("CSV %q", recs)
			}
			for i, r := range recs[1:] {
				it := rep.Campaign.Items[i]
				if r[0] != c.ID || r[1] != it.ID || r[2] != it.Kind || r[3] != it.Subject || r[9] != it.Decision || r[13] != it.Comment {
					t.Errorf("CSV row %q for item %+v", r, it)
				}
			}

			for _, a := range []string{"access.review.start", "access.review.decide", "access.review.close"} {
				if len(e.events(t, a)) == 0 {
					t.Errorf("no %s event", a)
				}
			}
			if n := len(e.events(t, "access.review.decide")); n != 4 {
				t.Errorf("%d access.review.decide events, want 4", n)
			}
		})
	}
}

func TestReviewGroupScope(t *testing.T) {
	for _, b := range testenv.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, b.Open(t))
			c, err := e.a.StartReview(ctx, admin, ReviewSpec{Scope: ScopeGroup, Target: "dba", Reviewer: "senior",
				Default: DecisionKeep, Deadline: e.clk.Now().Add(time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			var subjects []string
			for _, it := range c.Items {
				if it.Kind != ItemMembership || it.Group != "dba" {
					t.Errorf("item %+v", it)
				}
				subjects = append(subjects, it.Subject)
			}
			if !slices.Equal(subjects, []string{"user:alice", "user:bob"}) {
				t.Fatalf("memberships %q", subjects)
			}
			_, err = e.a.DecideReview(ctx, origin(bob), bob, c.ID, "1", DecisionRevoke, "")
			wantErr(t, "decision by a non-reviewer", err, errkind.Denied, ErrNotReviewer)
			it, err := e.a.DecideReview(ctx, origin(carol), carol, c.ID, "1", DecisionRevoke, "left the team")
			if err != nil || !it.Applied {
				t.Fatalf("revoke alice's membership: %+v, %v", it, err)
			}
			if gs, _ := e.ids.Parents(ctx, "user", "alice"); slices.Contains(gs, "dba") {
				t.Errorf("alice still in dba: %q", gs)
			}
			if n := len(e.events(t, "access.review.apply")); n != 1 {
				t.Errorf("%d access.review.apply events", n)
			}

			e.clk.Add(time.Hour)
			if n, err := e.a.CloseDueReviews(ctx); err != nil || n != 1 {
				t.Fatalf("CloseDueReviews: %d, %v", n, err)
			}
			if gs, _ := e.ids.Parents(ctx, "user", "bob"); !slices.Contains(gs, "dba") {
				t.Errorf("the keep default removed bob from dba: %q", gs)
			}
			rep, _ := e.a.ReviewReport(ctx, c.ID)
			if rep.Counts != (ReviewCounts{Total: 2, Kept: 1, Revoked: 1, Defaulted: 1}) {
				t.Errorf("counts %+v", rep.Counts)
			}

			all, err := e.a.StartReview(ctx, origin(dave), ReviewSpec{Scope: ScopeGroup, Reviewer: "approvers", Deadline: e.clk.Now().Add(time.Hour)})
			if err != nil || len(all.Items) != 6 || all.Target != "" || all.CreatedBy != "user:dave" {
				t.Errorf("review of every group: %+v, %v", all, err)
			}
			if cs, err := e.a.Reviews(ctx); err != nil || len(cs) != 2 {
				t.Errorf("Reviews: %d, %v", len(cs), err)
			}
		})
	}
}

func TestReviewSpecRefused(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, testenv.SQLite(t))
	e.role(t, "prod-dba", false)
	day := e.clk.Now().Add(24 * time.Hour)
	for _, tc := range []struct {
		name string
		spec ReviewSpec
		kind errkind.Kind
	}{
		{"scope", ReviewSpec{Scope: "account", Deadline: day, Reviewer: "approvers"}, errkind.Invalid},
		{"default", ReviewSpec{Scope: ScopeRole, Deadline: day, Default: "ignore", Reviewer: "approvers"}, errkind.Invalid},
		{"past deadline", ReviewSpec{Scope: ScopeRole, Deadline: e.clk.Now(), Reviewer: "approvers"}, errkind.Invalid},
		{"far deadline", ReviewSpec{Scope: ScopeRole, Deadline: e.clk.Now().Add(2 * MaxReviewPeriod), Reviewer: "approvers"}, errkind.Invalid},
		{"no such role", ReviewSpec{Scope: ScopeRole, Target: "nope", Deadline: day, Reviewer: "approvers"}, errkind.NotFound},
		{"no such group", ReviewSpec{Scope: ScopeGroup, Target: "nope", Deadline: day, Reviewer: "approvers"}, errkind.NotFound},
		{"no such reviewer", ReviewSpec{Scope: ScopeRole, Deadline: day, Reviewer: "nobody"}, errkind.NotFound},
		{"default reviewer missing", ReviewSpec{Scope: ScopeRole, Deadline: day}, errkind.NotFound}, // no "admins" group here
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.a.StartReview(ctx, admin, tc.spec)
			wantErr(t, tc.name, err, tc.kind, nil)
		})
	}
}
