package client

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Role is a just-in-time access role: what a grant of it permits, as a
// Cedar template with the slot ?principal.
type Role struct {
	Name        string         `json:"name"`
	Description string         `json:"description"`
	Template    string         `json:"template"`
	Ephemeral   *EphemeralRole `json:"ephemeral,omitempty"` // nil: no database user
	BreakGlass  bool           `json:"break_glass"`
	// RotateAccounts are vault accounts ("target/username") rotated when a
	// grant of the role ends.
	RotateAccounts []string  `json:"rotate_accounts,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
}

// EphemeralRole is the database user a grant of a role creates on Target
// (a postgres or mysql target), made a member of the database roles Roles.
type EphemeralRole struct {
	Target string   `json:"target"`
	Roles  []string `json:"roles"`
}

// NewRole is the body of POST /v1/roles.
type NewRole struct {
	Name        string         `json:"name"`
	Description string         `json:"description,omitempty"`
	Template    string         `json:"template"`            // Cedar with ?principal
	Ephemeral   *EphemeralRole `json:"ephemeral,omitempty"` // nil: none
	BreakGlass  bool           `json:"break_glass,omitempty"`
	// RotateAccounts are vault accounts ("target/username") to rotate when
	// a grant of the role ends. nil: none.
	RotateAccounts []string `json:"rotate_accounts,omitempty"`
}

// Subject is who an eligibility is for: Kind is "user" or "group".
type Subject struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

func (s Subject) String() string { return s.Kind + ":" + s.Name }

// Eligibility lets a subject request a role, on terms.
type Eligibility struct {
	Role           string    `json:"role"`
	Subject        Subject   `json:"subject"`
	Approvals      int       `json:"approvals"`                // 0: self-activation
	ApproverGroup  string    `json:"approver_group,omitempty"` // "" when Approvals is 0
	MaxTTL         Duration  `json:"max_ttl"`
	RequireTicket  string    `json:"require_ticket,omitempty"` // RE2 a whole ticket id must match; "": none
	ReasonOptional bool      `json:"reason_optional"`
	RequireMFA     bool      `json:"require_mfa"`
	AllowEmergency bool      `json:"allow_emergency"` // may open a break-glass role at once
	CreatedAt      time.Time `json:"created_at"`
}

// NewEligibility is the body of POST /v1/roles/{name}/eligibility. Set
// exactly one of User and Group. Zero optional fields mean the server's
// defaults.
type NewEligibility struct {
	User           string   `json:"user,omitempty"`
	Group          string   `json:"group,omitempty"`
	Approvals      int      `json:"approvals,omitempty"`
	ApproverGroup  string   `json:"approver_group,omitempty"`
	MaxTTL         Duration `json:"max_ttl,omitempty"`
	RequireTicket  string   `json:"require_ticket,omitempty"`
	RequireMFA     bool     `json:"require_mfa,omitempty"`
	ReasonOptional bool     `json:"reason_optional,omitempty"`
	AllowEmergency bool     `json:"allow_emergency,omitempty"` // break-glass roles only
}

// Request is a request to activate a role, or to extend a grant of one.
type Request struct {
	ID                string     `json:"id"`
	Kind              string     `json:"kind"`   // activation or extension
	Status            string     `json:"status"` // pending, approved, denied, cancelled, expired
	Role              string     `json:"role"`
	Requester         Principal  `json:"requester"`
	TTL               Duration   `json:"ttl"`
	Reason            string     `json:"reason,omitempty"`
	Ticket            string     `json:"ticket,omitempty"`
	ApprovalsRequired int        `json:"approvals_required"`
	ApproverGroup     string     `json:"approver_group,omitempty"`
	RequireMFA        bool       `json:"require_mfa"`
	EligibleAs        string     `json:"eligible_as,omitempty"` // the eligibility's subject, "group:dba"
	Emergency         bool       `json:"emergency,omitempty"`   // break-glass opened at once, without approvals
	Approvals         []Approval `json:"approvals"`
	CreatedAt         time.Time  `json:"created_at"`
	ExpiresAt         time.Time  `json:"expires_at"` // end of the window for approvals
	DecidedAt         time.Time  `json:"decided_at,omitzero"`
	DecidedBy         string     `json:"decided_by,omitempty"`
	Comment           string     `json:"comment,omitempty"`  // the denier's
	GrantID           string     `json:"grant_id,omitempty"` // created (activation) or extended (extension)
}

// Approval is one approver's approval of a request.
type Approval struct {
	Approver string    `json:"approver"` // actor: "user:bob"
	Comment  string    `json:"comment,omitempty"`
	MFA      bool      `json:"mfa"`
	At       time.Time `json:"at"`
}

// NewRequest asks for a role.
type NewRequest struct {
	Role   string
	TTL    time.Duration // required
	Reason string        // "": none, if the eligibility allows it
	Ticket string        // "": none
	// Emergency opens a break-glass role at once, without approvals, where
	// the eligibility allows it. It raises an alert, notifies every
	// approver and opens a post-incident review (Incident).
	Emergency bool
}

// RequestFilter selects requests. Zero fields select everything the caller
// may see.
type RequestFilter struct {
	Mine         bool   // only the caller's own
	PendingForMe bool   // only pending requests the caller may approve
	Status       string // "": any
	Role         string // "": any
}

// Grant is an activated role.
type Grant struct {
	ID        string          `json:"id"`
	Role      string          `json:"role"`
	Principal Principal       `json:"principal"`
	RequestID string          `json:"request_id"`
	Policy    string          `json:"policy,omitempty"` // id of the template-linked policy
	StartsAt  time.Time       `json:"starts_at"`
	ExpiresAt time.Time       `json:"expires_at"`
	Status    string          `json:"status"` // active, expired, revoked
	EndedAt   time.Time       `json:"ended_at,omitzero"`
	EndedBy   string          `json:"ended_by,omitempty"`
	Ephemeral *EphemeralGrant `json:"ephemeral,omitempty"`
	Emergency bool            `json:"emergency,omitempty"` // opened without approvals; an Incident tracks it
	// RotateAccounts, copied from the role, are rotated when the grant ends.
	RotateAccounts []string `json:"rotate_accounts,omitempty"`
}

// EphemeralGrant is a grant's database user, without its password.
type EphemeralGrant struct {
	Target   string   `json:"target"`
	Username string   `json:"username"`
	Roles    []string `json:"roles"`
	State    string   `json:"state"` // pending, created, dropped
	Error    string   `json:"error,omitempty"`
}

// GrantFilter selects grants. Zero fields select everything the caller
// may see.
type GrantFilter struct {
	Mine   bool   // only the caller's own
	Active bool   // only active grants
	Role   string // "": any
}

// Extension asks for more time on a grant.
type Extension struct {
	TTL    time.Duration // required: the grant then ends TTL from approval
	Reason string
	Ticket string
}

// EphemeralCredential is the credential of a grant's database user.
type EphemeralCredential struct {
	Target     string    `json:"target"`
	Host       string    `json:"host"`
	Port       int       `json:"port"`
	Username   string    `json:"username"`
	Password   string    `json:"password"`
	ValidUntil time.Time `json:"valid_until"`
}

func rolePath(name string) string { return "/v1/roles/" + url.PathEscape(name) }

func requestPath(id string) string { return "/v1/requests/" + url.PathEscape(id) }

func grantPath(id string) string { return "/v1/grants/" + url.PathEscape(id) }

// CreateRole adds a role.
func (c *Client) CreateRole(ctx context.Context, r NewRole) (Role, error) {
	var res Role
	err := c.do(ctx, http.MethodPost, "/v1/roles", nil, r, &res)
	return res, err
}

// Roles lists the roles.
func (c *Client) Roles(ctx context.Context) ([]Role, error) {
	var res struct {
		Roles []Role `json:"roles"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/roles", nil, nil, &res)
	return res.Roles, err
}

// Role describes one role.
func (c *Client) Role(ctx context.Context, name string) (Role, error) {
	var res Role
	err := c.do(ctx, http.MethodGet, rolePath(name), nil, nil, &res)
	return res, err
}

// DeleteRole removes a role that has no live grant or request.
func (c *Client) DeleteRole(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, rolePath(name), nil, nil, nil)
}

// SetEligibility makes a user or group eligible for role, replacing the
// terms it had.
func (c *Client) SetEligibility(ctx context.Context, role string, e NewEligibility) (Eligibility, error) {
	var res Eligibility
	err := c.do(ctx, http.MethodPost, rolePath(role)+"/eligibility", nil, e, &res)
	return res, err
}

// Eligibility lists who is eligible for role.
func (c *Client) Eligibility(ctx context.Context, role string) ([]Eligibility, error) {
	var res struct {
		Eligibility []Eligibility `json:"eligibility"`
	}
	err := c.do(ctx, http.MethodGet, rolePath(role)+"/eligibility", nil, nil, &res)
	return res.Eligibility, err
}

// DeleteEligibility ends a subject's eligibility for role.
func (c *Client) DeleteEligibility(ctx context.Context, role string, s Subject) error {
	p := rolePath(role) + "/eligibility/" + url.PathEscape(s.Kind) + "/" + url.PathEscape(s.Name)
	return c.do(ctx, http.MethodDelete, p, nil, nil, nil)
}

// CreateRequest asks for a role. The answer's Status is "approved", with a
// GrantID, when the eligibility needs no approval or r is an emergency.
func (c *Client) CreateRequest(ctx context.Context, r NewRequest) (Request, error) {
	req := struct {
		Role      string `json:"role"`
		TTL       string `json:"ttl"`
		Reason    string `json:"reason,omitempty"`
		Ticket    string `json:"ticket,omitempty"`
		Emergency bool   `json:"emergency,omitempty"`
	}{r.Role, r.TTL.String(), r.Reason, r.Ticket, r.Emergency}
	var res Request
	err := c.do(ctx, http.MethodPost, "/v1/requests", nil, req, &res)
	return res, err
}

// Requests lists the requests f selects.
func (c *Client) Requests(ctx context.Context, f RequestFilter) ([]Request, error) {
	q := url.Values{}
	if f.Mine {
		q.Set("mine", "1")
	}
	if f.PendingForMe {
		q.Set("pending_for_me", "1")
	}
	if f.Status != "" {
		q.Set("status", f.Status)
	}
	if f.Role != "" {
		q.Set("role", f.Role)
	}
	var res struct {
		Requests []Request `json:"requests"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/requests", q, nil, &res)
	return res.Requests, err
}

// Request describes one request.
func (c *Client) Request(ctx context.Context, id string) (Request, error) {
	var res Request
	err := c.do(ctx, http.MethodGet, requestPath(id), nil, nil, &res)
	return res, err
}

// ApproveRequest approves a request; comment may be "".
func (c *Client) ApproveRequest(ctx context.Context, id, comment string) (Request, error) {
	return c.decide(ctx, id, "/approve", comment)
}

// DenyRequest denies a request, saying why in comment.
func (c *Client) DenyRequest(ctx context.Context, id, comment string) (Request, error) {
	return c.decide(ctx, id, "/deny", comment)
}

func (c *Client) decide(ctx context.Context, id, verb, comment string) (Request, error) {
	req := struct {
		Comment string `json:"comment,omitempty"`
	}{comment}
	var res Request
	err := c.do(ctx, http.MethodPost, requestPath(id)+verb, nil, req, &res)
	return res, err
}

// CancelRequest withdraws the caller's own pending request.
func (c *Client) CancelRequest(ctx context.Context, id string) (Request, error) {
	var res Request
	err := c.do(ctx, http.MethodPost, requestPath(id)+"/cancel", nil, nil, &res)
	return res, err
}

// Grants lists the grants f selects.
func (c *Client) Grants(ctx context.Context, f GrantFilter) ([]Grant, error) {
	q := url.Values{}
	if f.Mine {
		q.Set("mine", "1")
	}
	if f.Active {
		q.Set("active", "1")
	}
	if f.Role != "" {
		q.Set("role", f.Role)
	}
	var res struct {
		Grants []Grant `json:"grants"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/grants", q, nil, &res)
	return res.Grants, err
}

// RevokeGrant ends a grant now (administrators); reason may be "".
func (c *Client) RevokeGrant(ctx context.Context, id, reason string) (Grant, error) {
	req := struct {
		Reason string `json:"reason,omitempty"`
	}{reason}
	var res Grant
	err := c.do(ctx, http.MethodPost, grantPath(id)+"/revoke", nil, req, &res)
	return res, err
}

// ExtendGrant asks for more time on the caller's grant. The answer is the
// extension request, approved like an activation.
func (c *Client) ExtendGrant(ctx context.Context, id string, x Extension) (Request, error) {
	req := struct {
		TTL    string `json:"ttl"`
		Reason string `json:"reason,omitempty"`
		Ticket string `json:"ticket,omitempty"`
	}{x.TTL.String(), x.Reason, x.Ticket}
	var res Request
	err := c.do(ctx, http.MethodPost, grantPath(id)+"/extend", nil, req, &res)
	return res, err
}

// GrantCredential returns the credential of the database user of the
// caller's active grant.
func (c *Client) GrantCredential(ctx context.Context, id string) (EphemeralCredential, error) {
	var res EphemeralCredential
	err := c.do(ctx, http.MethodGet, grantPath(id)+"/credential", nil, nil, &res)
	return res, err
}
