package access

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/store"
)

// Approve records approver's approval of request id, audited
// "access.request.approve". mfaAt is when the approver presented a second
// factor (from their token; zero: never), needed within Config.MFAMaxAge
// when the request's eligibility requires MFA. The approval that reaches
// the required count fulfils the request: the grant is created (valid
// from now for the request's TTL) or extended, in the same transaction.
//
// Refused: by the requester (errkind.Denied, ErrSelfApproval); by a
// principal outside the approver group (Denied, ErrNotApprover); without
// recent MFA where required (Denied, ErrMFARequired); a second time by the
// same approver (Conflict, ErrAlreadyApproved; it still counts once);
// once the request is no longer pending (Conflict, ErrNotPending) or its
// window has passed (Conflict, ErrWindowPassed).
func (a *Access) Approve(ctx context.Context, o audit.Origin, approver identity.Principal, id, comment string, mfaAt time.Time) (Request, error) {
	if err := checkText("a comment", comment); err != nil {
		return Request{}, err
	}
	groups, err := a.approverGroups(ctx, approver)
	if err != nil {
		return Request{}, err
	}
	var r Request
	var after afterCommit
	err = a.inTx(ctx, func(tx *txn) error {
		now, us := a.nowMicros()
		if r, err = a.decidable(ctx, tx, approver, groups, id, now); err != nil {
			return err
		}
		mfa := a.freshMFA(!mfaAt.IsZero(), mfaAt, now)
		if r.RequireMFA && !mfa {
			return errkind.New(errkind.Denied, "%w to approve request %s (within %s)", ErrMFARequired, r.ID, a.mfaAge)
		}
		for _, ap := range r.Approvals {
			if ap.Approver == approver.Actor() {
				return errkind.New(errkind.Conflict, "%w: %s approved request %s at %s", ErrAlreadyApproved, ap.Approver, r.ID, ap.At.Format(time.RFC3339))
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO access_approvals (request_id, approver, comment, mfa, created_at)
			VALUES ($1, $2, $3, $4, $5)`, r.ID, approver.Actor(), comment, mfa, us)
		if store.IsUniqueViolation(err) {
			return errkind.New(errkind.Conflict, "%w: %s, request %s", ErrAlreadyApproved, approver.Actor(), r.ID)
		}
		if err != nil {
			return fmt.Errorf("access: store approval: %w", err)
		}
		r.Approvals = append(r.Approvals, Approval{Approver: approver.Actor(), Comment: comment, MFA: mfa, At: now})
		details := map[string]string{"role": r.Role, "requester": r.Requester.Actor(), "mfa": fmt.Sprint(mfa),
			"approvals": fmt.Sprintf("%d/%d", len(r.Approvals), r.ApprovalsRequired)}
		if comment != "" {
			details["comment"] = comment
		}
		if err := a.appendTx(ctx, tx, o.Event("access.request.approve", r.ID, audit.OutcomeSuccess, details)); err != nil {
			return err
		}
		if len(r.Approvals) >= r.ApprovalsRequired {
			after, err = a.fulfilTx(ctx, tx, o, &r, approver.Actor(), now)
		}
		return err
	})
	if err != nil {
		return Request{}, err
	}
	a.finish(ctx, o, r, after)
	return r, nil
}

// Deny rejects request id, audited "access.request.deny". comment, the
// reason, is required. The same rules as for Approve apply to who may
// deny, except MFA.
func (a *Access) Deny(ctx context.Context, o audit.Origin, approver identity.Principal, id, comment string) (Request, error) {
	if strings.TrimSpace(comment) == "" {
		return Request{}, errkind.New(errkind.Invalid, "access: a denial needs a comment")
	}
	if err := checkText("a comment", comment); err != nil {
		return Request{}, err
	}
	groups, err := a.approverGroups(ctx, approver)
	if err != nil {
		return Request{}, err
	}
	var r Request
	err = a.inTx(ctx, func(tx *txn) error {
		now, us := a.nowMicros()
		if r, err = a.decidable(ctx, tx, approver, groups, id, now); err != nil {
			return err
		}
		return a.closeTx(ctx, tx, o, &r, StatusDenied, approver.Actor(), comment, us, "access.request.deny")
	})
	if err != nil {
		return Request{}, err
	}
	a.notify(EventDenied, o, r, nil)
	return r, nil
}

// InApproverGroup reports whether p is a member (directly or through
// nested groups) of r's approver group, whatever r's state: such a member
// may view r, before and after it is decided. A request without an
// approver group has no members.
func (a *Access) InApproverGroup(ctx context.Context, p identity.Principal, r Request) (bool, error) {
	if r.ApproverGroup == "" {
		return false, nil
	}
	groups, err := a.approverGroups(ctx, p)
	if err != nil {
		return false, err
	}
	return groups[r.ApproverGroup], nil
}

// approverGroups returns the groups approver is in.
func (a *Access) approverGroups(ctx context.Context, approver identity.Principal) (map[string]bool, error) {
	if _, err := principalUID(approver); err != nil {
		return nil, err
	}
	return a.groupsOf(ctx, string(approver.Kind), approver.Name)
}

// decidable reads request id in tx and checks that approver, in groups,
// may decide it at now.
func (a *Access) decidable(ctx context.Context, tx *txn, approver identity.Principal, groups map[string]bool, id string, now time.Time) (Request, error) {
	r, err := requestIn(ctx, tx, id)
	switch {
	case err != nil:
		return Request{}, err
	case r.Status != StatusPending:
		return Request{}, errkind.New(errkind.Conflict, "%w: request %s is %s", ErrNotPending, r.ID, r.Status)
	case !now.Before(r.ExpiresAt):
		return Request{}, errkind.New(errkind.Conflict, "%w: request %s could be decided until %s", ErrWindowPassed, r.ID, r.ExpiresAt.Format(time.RFC3339))
	case r.Requester == approver:
		return Request{}, errkind.New(errkind.Denied, "%w (request %s)", ErrSelfApproval, r.ID)
	case r.ApproverGroup == "" || !groups[r.ApproverGroup]:
		return Request{}, errkind.New(errkind.Denied, "%w %q (request %s)", ErrNotApprover, r.ApproverGroup, r.ID)
	}
	return r, nil
}

// afterCommit is what is left to do once a fulfilling transaction has
// committed.
type afterCommit struct {
	grant *Grant // created or extended; nil: nothing
}

// fulfilTx approves r, decided by by at now: it creates its grant (an
// activation) or extends its grant (an extension).
func (a *Access) fulfilTx(ctx context.Context, tx *txn, o audit.Origin, r *Request, by string, now time.Time) (afterCommit, error) {
	var g Grant
	var err error
	if r.Kind == KindExtension {
		g, err = a.extendGrantTx(ctx, tx, o, r.GrantID, r.ID, now.Add(r.TTL), now)
	} else {
		g, err = a.createGrantTx(ctx, tx, o, r, now)
	}
	if err != nil {
		return afterCommit{}, err
	}
	us := store.Micros(now)
	if _, err := tx.ExecContext(ctx, `UPDATE access_requests SET status = 'approved', decided_at = $1, decided_by = $2, grant_id = $3
		WHERE id = $4 AND status = 'pending'`, us, by, g.ID, r.ID); err != nil {
		return afterCommit{}, fmt.Errorf("access: update request %s: %w", r.ID, err)
	}
	r.Status, r.DecidedAt, r.DecidedBy, r.GrantID = StatusApproved, now, by, g.ID
	return afterCommit{grant: &g}, nil
}

// finish applies a committed fulfilment: the grant policy at once in this
// server, the ephemeral user on its target, and the notification.
func (a *Access) finish(ctx context.Context, o audit.Origin, r Request, after afterCommit) {
	if after.grant == nil {
		return
	}
	a.authz.Refresh(ctx)
	if after.grant.Ephemeral != nil {
		if err := a.ensureEphemeral(ctx, o, after.grant.ID); err != nil {
			a.log.WarnContext(ctx, "access: ephemeral user not ready; Run retries", "grant", after.grant.ID, "err", err)
		}
	}
	a.notify(EventApproved, o, r, after.grant)
}
