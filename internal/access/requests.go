package access

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/store"
)

// RequestSpec asks for a role (CreateRequest) or more time (ExtendGrant).
type RequestSpec struct {
	// Role is the role asked for; ExtendGrant ignores it.
	Role string
	// TTL is how long the grant lasts from its approval. Required.
	TTL time.Duration
	// Reason is the justification, at most 1024 bytes; required unless
	// the eligibility makes it optional.
	Reason string
	// Ticket is a ticket id, at most 128 bytes; required when the
	// eligibility has a ticket pattern.
	Ticket string
	// MFA and MFAAt say whether and when the requester presented a second
	// factor (from their token).
	MFA   bool
	MFAAt time.Time
	// Emergency opens a break-glass role at once, without approvals, where
	// the eligibility allows it (Eligibility.AllowEmergency): see
	// breakglass.go. A reason is then required. CreateRequest only.
	Emergency bool
}

// The request kinds.
const (
	KindActivation = "activation" // a grant of a role
	KindExtension  = "extension"  // more time for a live grant
)

// The request statuses.
const (
	StatusPending   = "pending"   // gathering approvals
	StatusApproved  = "approved"  // fulfilled: the grant was created or extended
	StatusDenied    = "denied"    // an approver denied it
	StatusCancelled = "cancelled" // the requester withdrew it, or its grant ended first
	StatusExpired   = "expired"   // its window passed while pending
)

// Request is a request for a role or an extension.
type Request struct {
	ID        string             `json:"id"`
	Kind      string             `json:"kind"`
	Role      string             `json:"role"`
	Requester identity.Principal `json:"requester"`
	TTL       time.Duration      `json:"ttl"`
	Reason    string             `json:"reason,omitempty"`
	Ticket    string             `json:"ticket,omitempty"`
	Status    string             `json:"status"`
	// The terms copied from the eligibility the request was made under.
	ApprovalsRequired int    `json:"approvals_required"`
	ApproverGroup     string `json:"approver_group,omitempty"`
	RequireMFA        bool   `json:"require_mfa"`
	EligibleAs        string `json:"eligible_as"` // the eligibility's subject, "group:dba"
	// Emergency: a break-glass role opened at once, without approvals.
	Emergency bool `json:"emergency,omitempty"`

	Approvals []Approval `json:"approvals"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt time.Time  `json:"expires_at"` // end of the window for approvals
	DecidedAt time.Time  `json:"decided_at,omitzero"`
	DecidedBy string     `json:"decided_by,omitempty"` // the last approver, the denier, the canceller
	Comment   string     `json:"comment,omitempty"`    // the denier's
	// GrantID is the grant created (activation, once approved) or to
	// extend (extension).
	GrantID string `json:"grant_id,omitempty"`
}

// MarshalJSON writes TTL as a duration string ("2h0m0s").
func (r Request) MarshalJSON() ([]byte, error) {
	type plain Request
	return json.Marshal(struct {
		plain
		TTL string `json:"ttl"`
	}{plain(r), r.TTL.String()})
}

// Approval is one approver's approval.
type Approval struct {
	Approver string    `json:"approver"` // "user:bob"
	Comment  string    `json:"comment,omitempty"`
	MFA      bool      `json:"mfa"`
	At       time.Time `json:"at"`
}

// checkSpec checks what CreateRequest and ExtendGrant check alike.
func checkSpec(spec RequestSpec) error {
	if spec.TTL <= 0 {
		return errkind.New(errkind.Invalid, "access: a request needs a positive TTL")
	}
	if err := checkText("a reason", spec.Reason); err != nil {
		return err
	}
	if len(spec.Ticket) > 128 || strings.ContainsFunc(spec.Ticket, func(r rune) bool { return r < 0x21 || r == 0x7f }) {
		return errkind.New(errkind.Invalid, "access: a ticket id is at most 128 printable characters without spaces")
	}
	return nil
}

// CreateRequest asks for role spec.Role on behalf of p, audited
// "access.request.create". The request is made under the eligibility
// chosen as the package documents (errkind.Denied wrapping ErrNotEligible
// when p has none; errkind.Invalid or Denied ErrMFARequired when the terms
// are not met). Under a self-activation eligibility the grant is created
// at once and the request returned approved, with its GrantID; so it is
// for an emergency (spec.Emergency), as breakglass.go describes.
func (a *Access) CreateRequest(ctx context.Context, o audit.Origin, p identity.Principal, spec RequestSpec) (Request, error) {
	if _, err := principalUID(p); err != nil {
		return Request{}, err
	}
	if err := checkSpec(spec); err != nil {
		return Request{}, err
	}
	role, err := a.Role(ctx, spec.Role)
	if err != nil {
		return Request{}, err
	}
	if spec.Emergency {
		if !role.BreakGlass {
			return Request{}, errkind.New(errkind.Invalid, "access: emergency access is for break-glass roles; %q is not one", role.Name)
		}
		if strings.TrimSpace(spec.Reason) == "" {
			return Request{}, errkind.New(errkind.Invalid, "access: emergency access needs a reason")
		}
	}
	return a.newRequest(ctx, o, p, KindActivation, role, spec, "")
}

// ExtendGrant asks for more time on grantID on behalf of its grantee p,
// audited "access.request.create" with kind extension. It goes through the
// same eligibility and approvals as an activation; once approved, the grant
// (and its policy, and its ephemeral user) expires spec.TTL after the
// approval, if that is later than before. A grant that is not p's is
// errkind.NotFound; one that ended, errkind.Conflict (ErrGrantEnded).
func (a *Access) ExtendGrant(ctx context.Context, o audit.Origin, p identity.Principal, grantID string, spec RequestSpec) (Request, error) {
	if err := checkSpec(spec); err != nil {
		return Request{}, err
	}
	if spec.Emergency {
		return Request{}, errkind.New(errkind.Invalid, "access: an extension cannot be an emergency; ask for approvals")
	}
	g, err := a.Grant(ctx, grantID)
	if err != nil {
		return Request{}, err
	}
	if g.Principal != p {
		return Request{}, errkind.New(errkind.NotFound, "access: no grant %q of %s", clip(grantID), p.Actor())
	}
	if !g.Active(a.now()) {
		return Request{}, errkind.New(errkind.Conflict, "%w: %s", ErrGrantEnded, g.ID)
	}
	role, err := a.Role(ctx, g.Role)
	if err != nil {
		return Request{}, err
	}
	spec.Role = g.Role
	return a.newRequest(ctx, o, p, KindExtension, role, spec, g.ID)
}

// newRequest stores a request and, under a self-activation eligibility or
// as an emergency, fulfils it.
func (a *Access) newRequest(ctx context.Context, o audit.Origin, p identity.Principal, kind string, role Role, spec RequestSpec, grantID string) (Request, error) {
	now, us := a.nowMicros()
	e, err := a.choose(ctx, p, role, spec, now)
	if err != nil {
		return Request{}, err
	}
	r := Request{
		ID: newID(10), Kind: kind, Role: spec.Role, Requester: p, TTL: spec.TTL, Reason: spec.Reason, Ticket: spec.Ticket,
		Status: StatusPending, ApprovalsRequired: e.Approvals, ApproverGroup: e.ApproverGroup, RequireMFA: e.RequireMFA,
		EligibleAs: e.Subject.String(), Emergency: spec.Emergency, Approvals: []Approval{}, CreatedAt: now,
		ExpiresAt: now.Add(a.window), GrantID: grantID,
	}
	var after afterCommit
	var inc Incident
	err = a.inTx(ctx, func(tx *txn) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO access_requests (id, kind, role, requester, ttl, reason, ticket, status,
				approvals_required, approver_group, require_mfa, eligible_as, grant_id, created_at, expires_at, emergency)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
			r.ID, r.Kind, r.Role, p.Actor(), r.TTL.Microseconds(), r.Reason, r.Ticket, r.Status, r.ApprovalsRequired,
			r.ApproverGroup, r.RequireMFA, r.EligibleAs, r.GrantID, us, store.Micros(r.ExpiresAt), r.Emergency)
		if err != nil {
			return fmt.Errorf("access: store request: %w", err)
		}
		details := map[string]string{"kind": r.Kind, "role": r.Role, "requester": p.Actor(), "ttl": r.TTL.String(),
			"reason": r.Reason, "ticket": r.Ticket, "eligible_as": r.EligibleAs, "approvals_required": fmt.Sprint(r.ApprovalsRequired)}
		if grantID != "" {
			details["grant"] = grantID
		}
		if r.Emergency {
			details["emergency"] = "true"
		}
		if err := a.appendTx(ctx, tx, o.Event("access.request.create", r.ID, audit.OutcomeSuccess, details)); err != nil {
			return err
		}
		if r.ApprovalsRequired == 0 || r.Emergency {
			after, err = a.fulfilTx(ctx, tx, o, &r, p.Actor(), now)
		}
		if err == nil && r.Emergency {
			inc, err = a.openIncidentTx(ctx, tx, o, r, *after.grant, now)
		}
		return err
	})
	if err != nil {
		return Request{}, err
	}
	if r.Emergency {
		a.emergency(ctx, o, r, after, inc)
		return r, nil
	}
	a.notify(EventRequested, o, r, nil)
	a.finish(ctx, o, r, after)
	return r, nil
}

// Cancel withdraws a pending request of requester, audited
// "access.request.cancel". Someone else's request is errkind.NotFound; a
// request no longer pending errkind.Conflict (ErrNotPending).
func (a *Access) Cancel(ctx context.Context, o audit.Origin, requester identity.Principal, id string) (Request, error) {
	var r Request
	err := a.inTx(ctx, func(tx *txn) error {
		var err error
		if r, err = requestIn(ctx, tx, id); err != nil {
			return err
		}
		if r.Requester != requester {
			return errkind.New(errkind.NotFound, "access: no request %q of %s", clip(id), requester.Actor())
		}
		if r.Status != StatusPending {
			return errkind.New(errkind.Conflict, "%w: %s is %s", ErrNotPending, r.ID, r.Status)
		}
		_, us := a.nowMicros()
		return a.closeTx(ctx, tx, o, &r, StatusCancelled, requester.Actor(), "", us, "access.request.cancel")
	})
	if err != nil {
		return Request{}, err
	}
	a.notify(EventCancelled, o, r, nil)
	return r, nil
}

// closeTx ends pending request r with status, recorded as decided by by
// at us, audited action.
func (a *Access) closeTx(ctx context.Context, tx *txn, o audit.Origin, r *Request, status, by, comment string, us int64, action string) error {
	res, err := tx.ExecContext(ctx, `UPDATE access_requests SET status = $1, decided_at = $2, decided_by = $3, comment = $4
		WHERE id = $5 AND status = 'pending'`, status, us, by, comment, r.ID)
	if err != nil {
		return fmt.Errorf("access: update request %s: %w", r.ID, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return errkind.New(errkind.Conflict, "%w: %s", ErrNotPending, r.ID)
	}
	r.Status, r.DecidedAt, r.DecidedBy, r.Comment = status, store.FromMicros(us), by, comment
	details := map[string]string{"role": r.Role, "requester": r.Requester.Actor(), "status": status}
	if comment != "" {
		details["comment"] = comment
	}
	return a.appendTx(ctx, tx, o.Event(action, r.ID, audit.OutcomeSuccess, details))
}

// RequestFilter selects requests. Zero fields select everything.
type RequestFilter struct {
	Requester *identity.Principal // made by this principal (--mine)
	Role      string
	Status    string
	// ApprovableBy selects pending requests, within their window, that
	// this principal may still approve (--pending-for-me).
	ApprovableBy *identity.Principal
	// Limit is the most returned, newest first. Zero: 500.
	Limit int
}

// Requests returns the requests f selects, newest first.
func (a *Access) Requests(ctx context.Context, f RequestFilter) ([]Request, error) {
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.Requester != nil {
		add("requester = $%d", f.Requester.Actor())
	}
	if f.Role != "" {
		add("role = $%d", f.Role)
	}
	if f.Status != "" {
		add("status = $%d", f.Status)
	}
	if f.ApprovableBy != nil {
		add("status = $%d", StatusPending)
		add("expires_at > $%d", store.Micros(a.now()))
		add("requester <> $%d", f.ApprovableBy.Actor())
	}
	q := `SELECT ` + requestColumns + ` FROM access_requests`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	limit := f.Limit
	if limit <= 0 || limit > 500 {
		limit = 500
	}
	rs, err := queryRequests(ctx, a.db, q+fmt.Sprintf(` ORDER BY created_at DESC, id LIMIT %d`, limit), args...)
	if err != nil || f.ApprovableBy == nil {
		return rs, err
	}
	groups, err := a.groupsOf(ctx, string(f.ApprovableBy.Kind), f.ApprovableBy.Name)
	if err != nil {
		return nil, err
	}
	me := f.ApprovableBy.Actor()
	return slices.DeleteFunc(rs, func(r Request) bool {
		return !groups[r.ApproverGroup] || slices.ContainsFunc(r.Approvals, func(ap Approval) bool { return ap.Approver == me })
	}), nil
}

// Request returns the request id, or errkind.NotFound.
func (a *Access) Request(ctx context.Context, id string) (Request, error) {
	return requestIn(ctx, a.db, id)
}

// querier is a *store.DB or a *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

const requestColumns = `id, kind, role, requester, ttl, reason, ticket, status, approvals_required, approver_group,
	require_mfa, eligible_as, grant_id, created_at, expires_at, decided_at, decided_by, comment, emergency`

func requestIn(ctx context.Context, q querier, id string) (Request, error) {
	rs, err := queryRequests(ctx, q, `SELECT `+requestColumns+` FROM access_requests WHERE id = $1`, id)
	if err != nil {
		return Request{}, err
	}
	if len(rs) == 0 {
		return Request{}, errkind.New(errkind.NotFound, "access: no request %q", clip(id))
	}
	return rs[0], nil
}

// queryRequests runs a query selecting requestColumns, with each
// request's approvals.
func queryRequests(ctx context.Context, q querier, query string, args ...any) ([]Request, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("access: read requests: %w", err)
	}
	out := []Request{}
	for rows.Next() {
		var r Request
		var requester string
		var ttl, created, exp, decided int64
		if err := rows.Scan(&r.ID, &r.Kind, &r.Role, &requester, &ttl, &r.Reason, &r.Ticket, &r.Status, &r.ApprovalsRequired,
			&r.ApproverGroup, &r.RequireMFA, &r.EligibleAs, &r.GrantID, &created, &exp, &decided, &r.DecidedBy, &r.Comment, &r.Emergency); err != nil {
			rows.Close()
			return nil, fmt.Errorf("access: read request: %w", err)
		}
		r.Requester, r.TTL = parseActor(requester), time.Duration(ttl)*time.Microsecond
		r.CreatedAt, r.ExpiresAt, r.DecidedAt = store.FromMicros(created), store.FromMicros(exp), fromMicros(decided)
		out = append(out, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("access: read requests: %w", err)
	}
	for i := range out {
		if out[i].Approvals, err = approvalsOf(ctx, q, out[i].ID); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func approvalsOf(ctx context.Context, q querier, id string) ([]Approval, error) {
	rows, err := q.QueryContext(ctx, `SELECT approver, comment, mfa, created_at FROM access_approvals
		WHERE request_id = $1 ORDER BY created_at, approver`, id)
	if err != nil {
		return nil, fmt.Errorf("access: read approvals: %w", err)
	}
	defer rows.Close()
	out := []Approval{}
	for rows.Next() {
		var ap Approval
		var at int64
		if err := rows.Scan(&ap.Approver, &ap.Comment, &ap.MFA, &at); err != nil {
			return nil, fmt.Errorf("access: read approval: %w", err)
		}
		ap.At = store.FromMicros(at)
		out = append(out, ap)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("access: read approvals: %w", err)
	}
	return out, nil
}
