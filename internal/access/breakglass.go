package access

// Break-glass.
//
// A role marked break-glass (RoleSpec.BreakGlass) is sealed in normal
// operation. It opens in one of two ways:
//
//   - Dual control: a request under an eligibility needing at least two
//     approvals (SetEligibility refuses fewer, ErrDualControl), through the
//     normal approval path: distinct approvers from the approver group,
//     never the requester.
//   - Emergency: CreateRequest with RequestSpec.Emergency, under an
//     eligibility with AllowEmergency. The grant is created at once, in a
//     transaction that also audits "access.breakglass.emergency" (details
//     "severity": "high") and opens an Incident, the mandatory
//     post-incident review. After commit the Logger gets an error-level
//     alert and the Notifier an EventEmergency naming the approver group.
//     The incident stays open until a member of the approver group other
//     than the grantee reviews it (ReviewIncident), once the grant ended.
//
// An account is made break-glass by giving no standing policy access to
// it and writing a break-glass role whose template is the only one that
// permits its check-out; the vault's Checkout still asks the policy
// engine, so the account stays sealed outside a grant. The role's
// RotateAccounts lists the account (and any other the grant exposes):
// when a grant of the role ends, by expiry or revocation, emergency or
// not, each is rotated through Config.Rotator. The end of the grant marks
// the rotation pending in its transaction; the trigger follows the commit,
// and Run repeats it after a crash, so a rotation may be triggered twice,
// never skipped.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/store"
)

// Incident is the post-incident review of an emergency grant.
type Incident struct {
	ID            string             `json:"id"`
	GrantID       string             `json:"grant_id"`
	RequestID     string             `json:"request_id"`
	Role          string             `json:"role"`
	Principal     identity.Principal `json:"principal"`      // the grantee
	ApproverGroup string             `json:"approver_group"` // whose members review it
	Reason        string             `json:"reason"`
	Ticket        string             `json:"ticket,omitempty"`
	// Status is IncidentOpen or IncidentReviewed.
	Status     string    `json:"status"`
	OpenedAt   time.Time `json:"opened_at"`
	ReviewedAt time.Time `json:"reviewed_at,omitzero"`
	Reviewer   string    `json:"reviewer,omitempty"` // "user:bob"
	Notes      string    `json:"notes,omitempty"`
}

// The incident statuses.
const (
	IncidentOpen     = "open"
	IncidentReviewed = "reviewed"
)

// openIncidentTx records the incident of emergency grant g, made by
// request r at now, audited "access.breakglass.emergency".
func (a *Access) openIncidentTx(ctx context.Context, tx *txn, o audit.Origin, r Request, g Grant, now time.Time) (Incident, error) {
	inc := Incident{ID: newID(10), GrantID: g.ID, RequestID: r.ID, Role: r.Role, Principal: r.Requester,
		ApproverGroup: r.ApproverGroup, Reason: r.Reason, Ticket: r.Ticket, Status: IncidentOpen, OpenedAt: now}
	_, err := tx.ExecContext(ctx, `INSERT INTO access_incident_reviews (id, grant_id, request_id, role, principal,
			approver_group, reason, ticket, opened_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		inc.ID, inc.GrantID, inc.RequestID, inc.Role, inc.Principal.Actor(), inc.ApproverGroup, inc.Reason, inc.Ticket, store.Micros(now))
	if err != nil {
		return Incident{}, fmt.Errorf("access: store incident: %w", err)
	}
	return inc, a.appendTx(ctx, tx, o.Event("access.breakglass.emergency", g.ID, audit.OutcomeSuccess, map[string]string{
		"severity": "high", "role": r.Role, "principal": r.Requester.Actor(), "request": r.ID, "grant": g.ID,
		"incident": inc.ID, "approver_group": r.ApproverGroup, "reason": r.Reason, "ticket": r.Ticket,
		"expires_at": g.ExpiresAt.Format(time.RFC3339),
	}))
}

// emergency applies a committed emergency: the grant as finish does, the
// alert and the notification of the approvers.
func (a *Access) emergency(ctx context.Context, o audit.Origin, r Request, after afterCommit, inc Incident) {
	g := after.grant
	a.log.ErrorContext(ctx, "access: BREAK-GLASS EMERGENCY: role opened without approval",
		"role", r.Role, "principal", r.Requester.Actor(), "grant", g.ID, "expires_at", g.ExpiresAt,
		"incident", inc.ID, "approver_group", r.ApproverGroup, "ticket", r.Ticket)
	a.authz.Refresh(ctx)
	if g.Ephemeral != nil {
		if err := a.ensureEphemeral(ctx, o, g.ID); err != nil {
			a.log.WarnContext(ctx, "access: ephemeral user not ready; Run retries", "grant", g.ID, "err", err)
		}
	}
	a.notifier.Notify(Notification{
		Event: EventEmergency, Time: a.now().UTC(), Actor: actor(o), Role: r.Role, Principal: r.Requester.Actor(),
		RequestID: r.ID, Kind: r.Kind, GrantID: g.ID, TTL: r.TTL.String(), Reason: r.Reason, Ticket: r.Ticket,
		ApproverGroup: r.ApproverGroup, ExpiresAt: g.ExpiresAt, IncidentID: inc.ID, Severity: "high",
	})
}

// ReviewIncident closes incident id with reviewer's notes (required, at
// most 1024 bytes), audited "access.incident.review". The reviewer must be
// in the incident's approver group (errkind.Denied, ErrNotApprover) and
// not its grantee (Denied, ErrSelfReview); the grant must have ended
// (errkind.Conflict, ErrEmergencyActive: revoke it or wait for its
// expiry); an incident reviewed already is Conflict (ErrReviewClosed).
func (a *Access) ReviewIncident(ctx context.Context, o audit.Origin, reviewer identity.Principal, id, notes string) (Incident, error) {
	if strings.TrimSpace(notes) == "" {
		return Incident{}, errkind.New(errkind.Invalid, "access: a post-incident review needs notes")
	}
	if err := checkText("notes", notes); err != nil {
		return Incident{}, err
	}
	groups, err := a.approverGroups(ctx, reviewer)
	if err != nil {
		return Incident{}, err
	}
	var inc Incident
	err = a.inTx(ctx, func(tx *txn) error {
		now, us := a.nowMicros()
		if inc, err = incidentIn(ctx, tx, id); err != nil {
			return err
		}
		switch {
		case inc.Status != IncidentOpen:
			return errkind.New(errkind.Conflict, "%w: incident %s was reviewed by %s", ErrReviewClosed, inc.ID, inc.Reviewer)
		case inc.Principal == reviewer:
			return errkind.New(errkind.Denied, "%w (incident %s)", ErrSelfReview, inc.ID)
		case !groups[inc.ApproverGroup]:
			return errkind.New(errkind.Denied, "%w %q (incident %s)", ErrNotApprover, inc.ApproverGroup, inc.ID)
		}
		g, err := grantIn(ctx, tx, inc.GrantID, now)
		if err != nil {
			return err
		}
		if g.Active(now) {
			return errkind.New(errkind.Conflict, "%w: grant %s lasts until %s; revoke it first", ErrEmergencyActive, g.ID, g.ExpiresAt.Format(time.RFC3339))
		}
		res, err := tx.ExecContext(ctx, `UPDATE access_incident_reviews SET reviewed_at = $1, reviewer = $2, notes = $3
			WHERE id = $4 AND reviewed_at = 0`, us, reviewer.Actor(), notes, inc.ID)
		if err != nil {
			return fmt.Errorf("access: review incident %s: %w", inc.ID, err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return errkind.New(errkind.Conflict, "%w: incident %s", ErrReviewClosed, inc.ID)
		}
		inc.Status, inc.ReviewedAt, inc.Reviewer, inc.Notes = IncidentReviewed, now, reviewer.Actor(), notes
		return a.appendTx(ctx, tx, o.Event("access.incident.review", inc.ID, audit.OutcomeSuccess, map[string]string{
			"grant": inc.GrantID, "role": inc.Role, "principal": inc.Principal.Actor(), "notes": notes,
		}))
	})
	if err != nil {
		return Incident{}, err
	}
	return inc, nil
}

// Incidents returns the incidents, the open ones only if openOnly, newest
// first (at most 500).
func (a *Access) Incidents(ctx context.Context, openOnly bool) ([]Incident, error) {
	q := incidentQuery
	if openOnly {
		q += ` WHERE reviewed_at = 0`
	}
	return queryIncidents(ctx, a.db, q+` ORDER BY opened_at DESC, id LIMIT 500`)
}

// Incident returns incident id, or errkind.NotFound.
func (a *Access) Incident(ctx context.Context, id string) (Incident, error) {
	return incidentIn(ctx, a.db, id)
}

const incidentQuery = `SELECT id, grant_id, request_id, role, principal, approver_group, reason, ticket, opened_at,
	reviewed_at, reviewer, notes FROM access_incident_reviews`

func incidentIn(ctx context.Context, q querier, id string) (Incident, error) {
	is, err := queryIncidents(ctx, q, incidentQuery+` WHERE id = $1`, id)
	if err != nil {
		return Incident{}, err
	}
	if len(is) == 0 {
		return Incident{}, errkind.New(errkind.NotFound, "access: no incident %q", clip(id))
	}
	return is[0], nil
}

func queryIncidents(ctx context.Context, q querier, query string, args ...any) ([]Incident, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("access: read incidents: %w", err)
	}
	defer rows.Close()
	out := []Incident{}
	for rows.Next() {
		var inc Incident
		var principal string
		var opened, reviewed int64
		if err := rows.Scan(&inc.ID, &inc.GrantID, &inc.RequestID, &inc.Role, &principal, &inc.ApproverGroup, &inc.Reason,
			&inc.Ticket, &opened, &reviewed, &inc.Reviewer, &inc.Notes); err != nil {
			return nil, fmt.Errorf("access: read incident: %w", err)
		}
		inc.Principal, inc.OpenedAt, inc.ReviewedAt = parseActor(principal), store.FromMicros(opened), fromMicros(reviewed)
		inc.Status = IncidentOpen
		if reviewed != 0 {
			inc.Status = IncidentReviewed
		}
		out = append(out, inc)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("access: read incidents: %w", err)
	}
	return out, nil
}

// rotateAfter triggers the rotation of accounts after grant id ended,
// then clears the grant's pending mark, audited "access.grant.rotate".
func (a *Access) rotateAfter(ctx context.Context, id string, accounts []string) error {
	if a.rotator == nil {
		return errkind.New(errkind.Invalid, "access: rotation after a grant is not configured on this server")
	}
	for _, acct := range accounts {
		a.rotator.Trigger(ctx, acct, "access: grant "+id+" ended")
	}
	return a.inTx(ctx, func(tx *txn) error {
		res, err := tx.ExecContext(ctx, `UPDATE access_grants SET rotate_pending = FALSE WHERE id = $1 AND rotate_pending`, id)
		if err != nil {
			return fmt.Errorf("access: record rotation of grant %s: %w", id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil // another server recorded it
		}
		return a.appendTx(ctx, tx, system.Event("access.grant.rotate", id, audit.OutcomeSuccess,
			map[string]string{"accounts": strings.Join(accounts, " ")}))
	})
}

// retryRotations triggers the rotations that ended grants still have
// pending (after a crash, or a failure to record them).
func (a *Access) retryRotations(ctx context.Context) error {
	rows, err := a.db.QueryContext(ctx, `SELECT id, rotate_accounts FROM access_grants WHERE rotate_pending AND ended_at <> 0 LIMIT 500`)
	if err != nil {
		return fmt.Errorf("access: read pending rotations: %w", err)
	}
	type pending struct{ id, accounts string }
	var ps []pending
	for rows.Next() {
		var p pending
		if err := rows.Scan(&p.id, &p.accounts); err != nil {
			rows.Close()
			return fmt.Errorf("access: read pending rotations: %w", err)
		}
		ps = append(ps, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("access: read pending rotations: %w", err)
	}
	var errs []error
	for _, p := range ps {
		errs = append(errs, a.rotateAfter(ctx, p.id, strings.Fields(p.accounts)))
	}
	return errors.Join(errs...)
}
