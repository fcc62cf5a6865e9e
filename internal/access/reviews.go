package access

// Access reviews (certification campaigns).
//
// StartReview snapshots the standing assignments in scope into a campaign:
// for scope "role", every eligibility for the role(s) and every live grant
// of them; for scope "group", every direct membership of the group(s).
// Each item is reviewed by the members of the campaign's reviewer group,
// who keep or revoke it (DecideReview) until the deadline; nobody reviews
// their own access: an item whose subject is the reviewer, or a group the
// reviewer is in (directly or through nested groups), is refused
// (ErrSelfReview). A revocation applies at once: the eligibility is
// removed and the grant revoked in the decision's transaction; a
// membership is removed through Config.Identity just after it commits
// (and retried by Run until it is). At the deadline, CloseDueReviews
// (from Run) gives every undecided item the campaign's default decision
// and applies it, and closes the campaign.

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/store"
)

// The review scopes.
const (
	ScopeRole  = "role"  // eligibilities and live grants of roles
	ScopeGroup = "group" // memberships of groups
)

// The review decisions.
const (
	DecisionKeep   = "keep"
	DecisionRevoke = "revoke"
)

// The campaign statuses.
const (
	ReviewOpen   = "open"
	ReviewClosed = "closed"
)

// The review item kinds.
const (
	ItemEligibility = "eligibility" // Role, Subject (a user or group eligibility)
	ItemGrant       = "grant"       // GrantID, Role, Subject (the grantee)
	ItemMembership  = "membership"  // Group, Subject (the member)
)

// DefaultReviewerGroup reviews a campaign that names no reviewer group.
const DefaultReviewerGroup = "admins"

// Bounds of a campaign.
const (
	MaxReviewPeriod = 366 * 24 * time.Hour
	maxReviewItems  = 5000
)

// ReviewSpec describes an access review to start.
type ReviewSpec struct {
	// Scope is ScopeRole or ScopeGroup.
	Scope string
	// Target is the role or group reviewed. "": every one in scope.
	Target string
	// Deadline is when undecided items get Default; after now and within
	// MaxReviewPeriod.
	Deadline time.Time
	// Default is DecisionRevoke or DecisionKeep. "": DecisionRevoke.
	Default string
	// Reviewer is the group whose members decide. "": DefaultReviewerGroup.
	Reviewer string
}

// Campaign is an access review.
type Campaign struct {
	ID       string    `json:"id"`
	Scope    string    `json:"scope"`
	Target   string    `json:"target"` // "": every role or group
	Reviewer string    `json:"reviewer"`
	Default  string    `json:"default"`
	Deadline time.Time `json:"deadline"`
	// Status is ReviewOpen or ReviewClosed.
	Status    string       `json:"status"`
	CreatedAt time.Time    `json:"created_at"`
	CreatedBy string       `json:"created_by"`
	ClosedAt  time.Time    `json:"closed_at,omitzero"`
	Items     []ReviewItem `json:"items"`
}

// ReviewItem is one standing assignment under review.
type ReviewItem struct {
	ID   string `json:"id"`   // "1", "2", ... within the campaign
	Kind string `json:"kind"` // ItemEligibility, ItemGrant or ItemMembership
	// Subject is who holds the assignment: "user:alice", "group:dba",
	// "machine:ci".
	Subject  string `json:"subject"`
	Role     string `json:"role,omitempty"`
	Group    string `json:"group,omitempty"`
	GrantID  string `json:"grant_id,omitempty"`
	Detail   string `json:"detail"`   // the assignment's terms, for the reviewer
	Reviewer string `json:"reviewer"` // the reviewer group
	// Decision is DecisionKeep, DecisionRevoke or "" (undecided).
	Decision string `json:"decision"`
	// Defaulted: the deadline decided, not a reviewer.
	Defaulted bool      `json:"defaulted"`
	DecidedBy string    `json:"decided_by,omitempty"`
	DecidedAt time.Time `json:"decided_at,omitzero"`
	Comment   string    `json:"comment,omitempty"`
	// Applied: the decision took effect (a keep at once).
	Applied bool `json:"applied"`
	// Error is why applying a revocation last failed; Run retries.
	Error string `json:"error,omitempty"`
}

// StartReview starts an access review of the assignments spec selects,
// audited "access.review.start". An unknown scope, decision or deadline is
// errkind.Invalid; an unknown target or reviewer group errkind.NotFound.
func (a *Access) StartReview(ctx context.Context, o audit.Origin, spec ReviewSpec) (Campaign, error) {
	now, us := a.nowMicros()
	c := Campaign{ID: newID(8), Scope: spec.Scope, Target: spec.Target, Reviewer: spec.Reviewer, Default: spec.Default,
		Deadline: store.FromMicros(store.Micros(spec.Deadline)), Status: ReviewOpen, CreatedAt: now, CreatedBy: actor(o)}
	if c.Default == "" {
		c.Default = DecisionRevoke
	}
	if c.Reviewer == "" {
		c.Reviewer = DefaultReviewerGroup
	}
	switch {
	case c.Scope != ScopeRole && c.Scope != ScopeGroup:
		return Campaign{}, errkind.New(errkind.Invalid, "access: a review's scope is %s or %s", ScopeRole, ScopeGroup)
	case c.Target != "" && !namePattern.MatchString(c.Target):
		return Campaign{}, errkind.New(errkind.Invalid, "access: %q is not a valid %s name", clip(c.Target), c.Scope)
	case c.Default != DecisionKeep && c.Default != DecisionRevoke:
		return Campaign{}, errkind.New(errkind.Invalid, "access: a review's default is %s or %s", DecisionKeep, DecisionRevoke)
	case !c.Deadline.After(now) || c.Deadline.Sub(now) > MaxReviewPeriod:
		return Campaign{}, errkind.New(errkind.Invalid, "access: a review's deadline must be after now and within %s", MaxReviewPeriod)
	case !namePattern.MatchString(c.Reviewer):
		return Campaign{}, errkind.New(errkind.Invalid, "access: %q is not a valid group name", clip(c.Reviewer))
	}
	if _, err := a.identity.Group(ctx, c.Reviewer); err != nil {
		return Campaign{}, fmt.Errorf("access: reviewer group: %w", err)
	}
	var err error
	if c.Scope == ScopeGroup {
		if c.Items, err = a.membershipItems(ctx, c.Target); err != nil {
			return Campaign{}, err
		}
	}
	err = a.inTx(ctx, func(tx *txn) error {
		if c.Scope == ScopeRole {
			if c.Items, err = roleItems(ctx, tx, c.Target, now); err != nil {
				return err
			}
		}
		if len(c.Items) > maxReviewItems {
			return errkind.New(errkind.Invalid, "access: %d items to review, more than %d; narrow the target", len(c.Items), maxReviewItems)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO access_review_campaigns (id, scope, target, reviewer_group,
				default_decision, deadline, status, created_at, created_by)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			c.ID, c.Scope, c.Target, c.Reviewer, c.Default, store.Micros(c.Deadline), c.Status, us, c.CreatedBy); err != nil {
			return fmt.Errorf("access: store review: %w", err)
		}
		for i := range c.Items {
			it := &c.Items[i]
			it.ID, it.Reviewer = strconv.Itoa(i+1), c.Reviewer
			if _, err := tx.ExecContext(ctx, `INSERT INTO access_review_items (campaign_id, seq, kind, subject, role,
					group_name, grant_id, detail)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
				c.ID, i+1, it.Kind, it.Subject, it.Role, it.Group, it.GrantID, it.Detail); err != nil {
				return fmt.Errorf("access: store review item: %w", err)
			}
		}
		return a.appendTx(ctx, tx, o.Event("access.review.start", c.ID, audit.OutcomeSuccess, map[string]string{
			"scope": c.Scope, "target": c.Target, "reviewer": c.Reviewer, "default": c.Default,
			"deadline": c.Deadline.Format(time.RFC3339), "items": strconv.Itoa(len(c.Items)),
		}))
	})
	if err != nil {
		return Campaign{}, err
	}
	return c, nil
}

// roleItems lists the eligibilities and live grants of role, or of every
// role for "".
func roleItems(ctx context.Context, tx *txn, role string, now time.Time) ([]ReviewItem, error) {
	if role != "" {
		if _, err := roleTx(ctx, tx, role); err != nil {
			return nil, err
		}
	}
	es, err := listEligibility(ctx, tx, role)
	if err != nil {
		return nil, err
	}
	items := []ReviewItem{}
	for _, e := range es {
		d := fmt.Sprintf("approvals %d", e.Approvals)
		if e.ApproverGroup != "" {
			d += " from group " + e.ApproverGroup
		}
		d += "; max TTL " + e.MaxTTL.String()
		if e.RequireTicket != "" {
			d += "; ticket " + e.RequireTicket
		}
		if e.RequireMFA {
			d += "; MFA"
		}
		if e.AllowEmergency {
			d += "; emergency use allowed"
		}
		items = append(items, ReviewItem{Kind: ItemEligibility, Subject: e.Subject.String(), Role: e.Role, Detail: d})
	}
	where, args := `WHERE ended_at = 0 AND expires_at > $1`, []any{store.Micros(now)}
	if role != "" {
		where, args = where+` AND role = $2`, append(args, role)
	}
	gs, err := queryGrants(ctx, tx, now, where+` ORDER BY role, principal, starts_at`, args...)
	if err != nil {
		return nil, err
	}
	for _, g := range gs {
		d := "until " + g.ExpiresAt.UTC().Format(time.RFC3339) + "; request " + g.RequestID
		if g.Emergency {
			d += "; emergency"
		}
		items = append(items, ReviewItem{Kind: ItemGrant, Subject: g.Principal.Actor(), Role: g.Role, GrantID: g.ID, Detail: d})
	}
	return items, nil
}

// membershipItems lists the direct memberships of group, or of every
// group for "".
func (a *Access) membershipItems(ctx context.Context, group string) ([]ReviewItem, error) {
	var gs []identity.Group
	if group != "" {
		g, err := a.identity.Group(ctx, group)
		if err != nil {
			return nil, fmt.Errorf("access: review group: %w", err)
		}
		gs = []identity.Group{g}
	} else {
		var err error
		if gs, err = a.identity.Groups(ctx); err != nil {
			return nil, fmt.Errorf("access: review groups: %w", err)
		}
	}
	sort.Slice(gs, func(i, j int) bool { return gs[i].Name < gs[j].Name })
	items := []ReviewItem{}
	for _, g := range gs {
		ms := append([]identity.Member(nil), g.Members...)
		sort.Slice(ms, func(i, j int) bool {
			if ms[i].Kind != ms[j].Kind {
				return ms[i].Kind > ms[j].Kind // users, machines, groups
			}
			return ms[i].Name < ms[j].Name
		})
		for _, m := range ms {
			items = append(items, ReviewItem{Kind: ItemMembership, Subject: m.Kind + ":" + m.Name, Group: g.Name,
				Detail: "direct member of group " + g.Name})
		}
	}
	return items, nil
}

// DecideReview records reviewer's decision (DecisionKeep or
// DecisionRevoke) on item itemID of campaign campaignID, with an optional
// comment, audited "access.review.decide"; a revocation applies at once,
// as the file comment says. Refused: a decision by someone outside the
// reviewer group (errkind.Denied, ErrNotReviewer) or on their own access
// (Denied, ErrSelfReview); on a closed campaign or past its deadline
// (errkind.Conflict, ErrReviewClosed); on a decided item (Conflict,
// ErrAlreadyDecided).
func (a *Access) DecideReview(ctx context.Context, o audit.Origin, reviewer identity.Principal, campaignID, itemID, decision, comment string) (ReviewItem, error) {
	if decision != DecisionKeep && decision != DecisionRevoke {
		return ReviewItem{}, errkind.New(errkind.Invalid, "access: a decision is %s or %s", DecisionKeep, DecisionRevoke)
	}
	if err := checkText("a comment", comment); err != nil {
		return ReviewItem{}, err
	}
	groups, err := a.approverGroups(ctx, reviewer)
	if err != nil {
		return ReviewItem{}, err
	}
	var c Campaign
	var it ReviewItem
	var ended []Grant
	err = a.inTx(ctx, func(tx *txn) error {
		now, _ := a.nowMicros()
		if c, err = campaignIn(ctx, tx, campaignID, false); err != nil {
			return err
		}
		if c.Status != ReviewOpen || !now.Before(c.Deadline) {
			return errkind.New(errkind.Conflict, "%w: campaign %s (deadline %s)", ErrReviewClosed, c.ID, c.Deadline.Format(time.RFC3339))
		}
		if !groups[c.Reviewer] {
			return errkind.New(errkind.Denied, "%w %q (campaign %s)", ErrNotReviewer, c.Reviewer, c.ID)
		}
		if it, err = itemIn(ctx, tx, c, itemID); err != nil {
			return err
		}
		if it.Decision != "" {
			return errkind.New(errkind.Conflict, "%w: item %s of campaign %s: %s by %s", ErrAlreadyDecided, it.ID, c.ID, it.Decision, it.DecidedBy)
		}
		if kind, name, _ := strings.Cut(it.Subject, ":"); it.Subject == reviewer.Actor() || kind == SubjectGroup && groups[name] {
			return errkind.New(errkind.Denied, "%w (item %s of campaign %s: %s)", ErrSelfReview, it.ID, c.ID, it.Subject)
		}
		g, err := a.decideTx(ctx, tx, o, c, &it, decision, reviewer.Actor(), false, comment, now)
		if g != nil {
			ended = append(ended, *g)
		}
		return err
	})
	if err != nil {
		return ReviewItem{}, err
	}
	items := []ReviewItem{it}
	a.applied(ctx, o, c, ended, items)
	return items[0], nil
}

// decideTx records decision on it in tx, by by at now, and applies a
// revocation of an eligibility or a grant (returning the grant it ended,
// for ended); a membership's is left to applyMembership.
func (a *Access) decideTx(ctx context.Context, tx *txn, o audit.Origin, c Campaign, it *ReviewItem, decision, by string, defaulted bool, comment string, now time.Time) (*Grant, error) {
	us := store.Micros(now)
	var ended *Grant
	applied := decision == DecisionKeep
	if decision == DecisionRevoke && it.Kind != ItemMembership {
		var err error
		if ended, err = a.revokeItemTx(ctx, tx, o, c, *it, us, now); err != nil {
			return nil, err
		}
		applied = true
	}
	res, err := tx.ExecContext(ctx, `UPDATE access_review_items SET decision = $1, defaulted = $2, decided_by = $3,
			decided_at = $4, comment = $5, applied = $6
		WHERE campaign_id = $7 AND seq = $8 AND decision = ''`, decision, defaulted, by, us, comment, applied, c.ID, seqOf(it.ID))
	if err != nil {
		return nil, fmt.Errorf("access: record review decision: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return nil, errkind.New(errkind.Conflict, "%w: item %s of campaign %s", ErrAlreadyDecided, it.ID, c.ID)
	}
	it.Decision, it.Defaulted, it.DecidedBy, it.DecidedAt, it.Comment, it.Applied = decision, defaulted, by, now, comment, applied
	details := map[string]string{"item": it.ID, "kind": it.Kind, "subject": it.Subject, "decision": decision,
		"defaulted": strconv.FormatBool(defaulted)}
	for k, v := range map[string]string{"role": it.Role, "group": it.Group, "grant": it.GrantID, "comment": comment} {
		if v != "" {
			details[k] = v
		}
	}
	return ended, a.appendTx(ctx, tx, o.Event("access.review.decide", c.ID, audit.OutcomeSuccess, details))
}

// revokeItemTx revokes the eligibility or grant of it in tx; one already
// gone is left alone.
func (a *Access) revokeItemTx(ctx context.Context, tx *txn, o audit.Origin, c Campaign, it ReviewItem, us int64, now time.Time) (*Grant, error) {
	details := map[string]string{"review": c.ID, "item": it.ID}
	switch it.Kind {
	case ItemEligibility:
		kind, name, _ := strings.Cut(it.Subject, ":")
		err := a.removeEligibilityTx(ctx, tx, o, it.Role, Subject{Kind: kind, Name: name}, details)
		if errkind.Is(err, errkind.NotFound) {
			return nil, nil
		}
		return nil, err
	case ItemGrant:
		g, err := grantIn(ctx, tx, it.GrantID, now)
		if errkind.Is(err, errkind.NotFound) {
			return nil, nil
		}
		if err != nil || !g.Active(now) {
			return nil, err
		}
		details["reason"] = "access review " + c.ID
		if err := a.endGrantTx(ctx, tx, o, &g, GrantRevoked, o.Actor, us, "access.grant.revoke", details); err != nil {
			return nil, err
		}
		return &g, nil
	}
	return nil, nil
}

// applied finishes committed decisions: the ends of grants, and the
// removal of memberships revoked in items, which it updates.
func (a *Access) applied(ctx context.Context, o audit.Origin, c Campaign, ended []Grant, items []ReviewItem) {
	for _, g := range ended {
		a.ended(ctx, o, EventRevoked, g, "access review "+c.ID)
	}
	for i := range items {
		it := &items[i]
		if it.Kind == ItemMembership && it.Decision == DecisionRevoke && !it.Applied {
			if err := a.applyMembership(ctx, o, c.ID, it); err != nil {
				a.log.WarnContext(ctx, "access: membership revoked by a review not removed yet; Run retries",
					"review", c.ID, "item", it.ID, "err", err)
			}
		}
	}
}

// applyMembership removes the membership of revoked item it of campaign
// cid and marks it applied, audited "access.review.apply"; a membership
// gone already counts as removed. A failure is recorded on the item.
func (a *Access) applyMembership(ctx context.Context, o audit.Origin, cid string, it *ReviewItem) error {
	kind, name, _ := strings.Cut(it.Subject, ":")
	err := a.identity.RemoveMember(ctx, o, it.Group, identity.Member{Kind: kind, Name: name})
	if err != nil && !errkind.Is(err, errkind.NotFound) {
		if _, uerr := a.db.ExecContext(ctx, `UPDATE access_review_items SET apply_error = $1 WHERE campaign_id = $2 AND seq = $3`,
			clip(err.Error()), cid, seqOf(it.ID)); uerr != nil {
			a.log.WarnContext(ctx, "access: record review failure", "review", cid, "item", it.ID, "err", uerr)
		}
		it.Error = clip(err.Error())
		return fmt.Errorf("access: remove %s from group %s: %w", it.Subject, it.Group, err)
	}
	it.Applied, it.Error = true, ""
	return a.inTx(ctx, func(tx *txn) error {
		res, err := tx.ExecContext(ctx, `UPDATE access_review_items SET applied = TRUE, apply_error = ''
			WHERE campaign_id = $1 AND seq = $2 AND NOT applied`, cid, seqOf(it.ID))
		if err != nil {
			return fmt.Errorf("access: record review item applied: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		return a.appendTx(ctx, tx, o.Event("access.review.apply", cid, audit.OutcomeSuccess, map[string]string{
			"item": it.ID, "kind": it.Kind, "subject": it.Subject, "group": it.Group}))
	})
}

// CloseDueReviews closes the open campaigns past their deadline, audited
// "access.review.close": each undecided item gets the campaign's default
// decision (audited "access.review.decide", decided by "system:access",
// Defaulted) and a revocation is applied. It also retries the membership
// removals that failed before. It returns how many campaigns it closed.
func (a *Access) CloseDueReviews(ctx context.Context) (int, error) {
	_, us := a.nowMicros()
	ids, err := a.column(ctx, `SELECT id FROM access_review_campaigns WHERE status = 'open' AND deadline <= $1
		ORDER BY deadline LIMIT 100`, us)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, id := range ids {
		var c Campaign
		var ended []Grant
		var decided []ReviewItem
		err := a.inTx(ctx, func(tx *txn) error {
			now, us := a.nowMicros()
			var err error
			if c, err = campaignIn(ctx, tx, id, true); err != nil {
				return err
			}
			if c.Status != ReviewOpen || now.Before(c.Deadline) {
				return errkind.New(errkind.Conflict, "%w: campaign %s", ErrReviewClosed, c.ID) // another server did it
			}
			defaulted := 0
			for i := range c.Items {
				it := &c.Items[i]
				if it.Decision != "" {
					continue
				}
				g, err := a.decideTx(ctx, tx, system, c, it, c.Default, system.Actor, true, "", now)
				if err != nil {
					return err
				}
				if g != nil {
					ended = append(ended, *g)
				}
				decided = append(decided, *it)
				defaulted++
			}
			if _, err := tx.ExecContext(ctx, `UPDATE access_review_campaigns SET status = 'closed', closed_at = $1 WHERE id = $2`,
				us, c.ID); err != nil {
				return fmt.Errorf("access: close review %s: %w", c.ID, err)
			}
			c.Status, c.ClosedAt = ReviewClosed, now
			counts := countItems(c.Items)
			return a.appendTx(ctx, tx, system.Event("access.review.close", c.ID, audit.OutcomeSuccess, map[string]string{
				"default": c.Default, "items": strconv.Itoa(counts.Total), "kept": strconv.Itoa(counts.Kept),
				"revoked": strconv.Itoa(counts.Revoked), "defaulted": strconv.Itoa(defaulted),
			}))
		})
		if errors.Is(err, ErrReviewClosed) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n++
		a.applied(ctx, system, c, ended, decided)
	}
	return n, errors.Join(append(errs, a.retryMemberships(ctx))...)
}

// retryMemberships applies the membership revocations not applied yet.
func (a *Access) retryMemberships(ctx context.Context) error {
	rows, err := a.db.QueryContext(ctx, `SELECT campaign_id, seq, kind, subject, group_name FROM access_review_items
		WHERE decision = 'revoke' AND NOT applied AND kind = 'membership' ORDER BY campaign_id, seq LIMIT 500`)
	if err != nil {
		return fmt.Errorf("access: read unapplied review items: %w", err)
	}
	type pending struct {
		cid string
		it  ReviewItem
	}
	var ps []pending
	for rows.Next() {
		var p pending
		var seq int
		if err := rows.Scan(&p.cid, &seq, &p.it.Kind, &p.it.Subject, &p.it.Group); err != nil {
			rows.Close()
			return fmt.Errorf("access: read unapplied review items: %w", err)
		}
		p.it.ID = strconv.Itoa(seq)
		ps = append(ps, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("access: read unapplied review items: %w", err)
	}
	var errs []error
	for _, p := range ps {
		errs = append(errs, a.applyMembership(ctx, system, p.cid, &p.it))
	}
	return errors.Join(errs...)
}

// Review returns campaign id with its items, or errkind.NotFound.
func (a *Access) Review(ctx context.Context, id string) (Campaign, error) {
	return campaignIn(ctx, a.db, id, true)
}

// Reviews returns the campaigns with their items, newest first (at most
// 100).
func (a *Access) Reviews(ctx context.Context) ([]Campaign, error) {
	ids, err := a.column(ctx, `SELECT id FROM access_review_campaigns ORDER BY created_at DESC, id LIMIT 100`)
	if err != nil {
		return nil, err
	}
	out := []Campaign{}
	for _, id := range ids {
		c, err := campaignIn(ctx, a.db, id, true)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// ReviewCounts sums up a campaign's items.
type ReviewCounts struct {
	Total     int `json:"total"`
	Kept      int `json:"kept"`      // decided keep, by a reviewer or the default
	Revoked   int `json:"revoked"`   // decided revoke, by a reviewer or the default
	Defaulted int `json:"defaulted"` // of those, decided by the default
	Undecided int `json:"undecided"`
}

// Report is a campaign's outcome.
type Report struct {
	Campaign Campaign     `json:"campaign"` // with its items
	Counts   ReviewCounts `json:"counts"`
}

// ReviewReport returns the report of campaign id, or errkind.NotFound.
func (a *Access) ReviewReport(ctx context.Context, id string) (Report, error) {
	c, err := a.Review(ctx, id)
	if err != nil {
		return Report{}, err
	}
	return Report{Campaign: c, Counts: countItems(c.Items)}, nil
}

func countItems(items []ReviewItem) ReviewCounts {
	n := ReviewCounts{Total: len(items)}
	for _, it := range items {
		switch it.Decision {
		case DecisionKeep:
			n.Kept++
		case DecisionRevoke:
			n.Revoked++
		default:
			n.Undecided++
		}
		if it.Defaulted {
			n.Defaulted++
		}
	}
	return n
}

// csvHeader names WriteCSV's columns.
var csvHeader = []string{"campaign", "item", "kind", "subject", "role", "group", "grant", "detail", "reviewer",
	"decision", "defaulted", "decided_by", "decided_at", "comment", "applied", "error"}

// WriteCSV writes r as CSV: a header row, then one row per item. Free
// text (detail, comment, error) that a spreadsheet would take for a
// formula (a leading =, +, -, @, tab or CR) is prefixed with a quote.
func WriteCSV(w io.Writer, r Report) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(csvHeader); err != nil {
		return fmt.Errorf("access: write CSV: %w", err)
	}
	for _, it := range r.Campaign.Items {
		at := ""
		if !it.DecidedAt.IsZero() {
			at = it.DecidedAt.UTC().Format(time.RFC3339)
		}
		if err := cw.Write([]string{r.Campaign.ID, it.ID, it.Kind, it.Subject, it.Role, it.Group, it.GrantID,
			inert(it.Detail), it.Reviewer, it.Decision, strconv.FormatBool(it.Defaulted), it.DecidedBy, at,
			inert(it.Comment), strconv.FormatBool(it.Applied), inert(it.Error)}); err != nil {
			return fmt.Errorf("access: write CSV: %w", err)
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("access: write CSV: %w", err)
	}
	return nil
}

// inert keeps a spreadsheet from evaluating s as a formula.
func inert(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// campaignIn reads campaign id, with its items if items.
func campaignIn(ctx context.Context, q querier, id string, items bool) (Campaign, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, scope, target, reviewer_group, default_decision, deadline, status,
		created_at, created_by, closed_at FROM access_review_campaigns WHERE id = $1`, id)
	if err != nil {
		return Campaign{}, fmt.Errorf("access: read review: %w", err)
	}
	var c Campaign
	found := false
	for rows.Next() {
		var deadline, created, closed int64
		if err := rows.Scan(&c.ID, &c.Scope, &c.Target, &c.Reviewer, &c.Default, &deadline, &c.Status, &created,
			&c.CreatedBy, &closed); err != nil {
			rows.Close()
			return Campaign{}, fmt.Errorf("access: read review: %w", err)
		}
		c.Deadline, c.CreatedAt, c.ClosedAt = store.FromMicros(deadline), store.FromMicros(created), fromMicros(closed)
		found = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return Campaign{}, fmt.Errorf("access: read review: %w", err)
	}
	if !found {
		return Campaign{}, errkind.New(errkind.NotFound, "access: no review %q", clip(id))
	}
	c.Items = []ReviewItem{}
	if items {
		if c.Items, err = queryItems(ctx, q, c, `WHERE campaign_id = $1 ORDER BY seq`, c.ID); err != nil {
			return Campaign{}, err
		}
	}
	return c, nil
}

// seqOf is the number of item id (as itemIn read it).
func seqOf(id string) int {
	n, _ := strconv.Atoi(id)
	return n
}

// itemIn reads item id of c, or errkind.NotFound.
func itemIn(ctx context.Context, q querier, c Campaign, id string) (ReviewItem, error) {
	seq, err := strconv.Atoi(id)
	if err == nil {
		var its []ReviewItem
		if its, err = queryItems(ctx, q, c, `WHERE campaign_id = $1 AND seq = $2`, c.ID, seq); err != nil {
			return ReviewItem{}, err
		}
		if len(its) == 1 {
			return its[0], nil
		}
	}
	return ReviewItem{}, errkind.New(errkind.NotFound, "access: no item %q in review %s", clip(id), c.ID)
}

func queryItems(ctx context.Context, q querier, c Campaign, where string, args ...any) ([]ReviewItem, error) {
	rows, err := q.QueryContext(ctx, `SELECT seq, kind, subject, role, group_name, grant_id, detail, decision, defaulted,
		decided_by, decided_at, comment, applied, apply_error FROM access_review_items `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("access: read review items: %w", err)
	}
	defer rows.Close()
	out := []ReviewItem{}
	for rows.Next() {
		var it ReviewItem
		var seq int
		var decided int64
		if err := rows.Scan(&seq, &it.Kind, &it.Subject, &it.Role, &it.Group, &it.GrantID, &it.Detail, &it.Decision,
			&it.Defaulted, &it.DecidedBy, &decided, &it.Comment, &it.Applied, &it.Error); err != nil {
			return nil, fmt.Errorf("access: read review item: %w", err)
		}
		it.ID, it.Reviewer, it.DecidedAt = strconv.Itoa(seq), c.Reviewer, fromMicros(decided)
		out = append(out, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("access: read review items: %w", err)
	}
	return out, nil
}
