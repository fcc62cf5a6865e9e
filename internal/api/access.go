package api

import (
	"net/http"
	"time"

	"github.com/warderhq/warder/internal/access"
	"github.com/warderhq/warder/internal/errkind"
)

// RoleRequest is the body of POST /v1/roles.
type RoleRequest struct {
	Name        string                `json:"name"`
	Description string                `json:"description,omitempty"`
	Template    string                `json:"template"`
	Ephemeral   *access.EphemeralRole `json:"ephemeral,omitempty"`
	BreakGlass  bool                  `json:"break_glass,omitempty"`
	// RotateAccounts are vault accounts rotated when a grant of the role
	// ends.
	RotateAccounts []string `json:"rotate_accounts,omitempty"`
}

func (s *Server) roleCreate(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decode[RoleRequest](r)
	if err != nil {
		return err
	}
	role, err := s.cfg.Access.CreateRole(r.Context(), c.origin(), access.RoleSpec{
		Name: req.Name, Description: req.Description, Template: req.Template, Ephemeral: req.Ephemeral, BreakGlass: req.BreakGlass,
		RotateAccounts: req.RotateAccounts,
	})
	if err != nil {
		return err
	}
	return writeJSON(w, role)
}

// RoleList answers GET /v1/roles.
type RoleList struct {
	Roles []access.Role `json:"roles"`
}

func (s *Server) roleList(w http.ResponseWriter, r *http.Request, c *call) error {
	rs, err := s.cfg.Access.Roles(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, RoleList{Roles: nonNil(rs)})
}

func (s *Server) roleShow(w http.ResponseWriter, r *http.Request, c *call) error {
	role, err := s.cfg.Access.Role(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeJSON(w, role)
}

func (s *Server) roleDelete(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := s.cfg.Access.DeleteRole(r.Context(), c.origin(), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// EligibilityRequest is the body of POST /v1/roles/{name}/eligibility:
// exactly one of user or group.
type EligibilityRequest struct {
	User           string `json:"user,omitempty"`
	Group          string `json:"group,omitempty"`
	Approvals      int    `json:"approvals,omitempty"`
	ApproverGroup  string `json:"approver_group,omitempty"`
	MaxTTL         string `json:"max_ttl,omitempty"`
	RequireTicket  string `json:"require_ticket,omitempty"`
	RequireMFA     bool   `json:"require_mfa,omitempty"`
	ReasonOptional bool   `json:"reason_optional,omitempty"`
	AllowEmergency bool   `json:"allow_emergency,omitempty"`
}

func subjectOf(user, group string) (access.Subject, error) {
	switch {
	case (user == "") == (group == ""):
		return access.Subject{}, errkind.New(errkind.Invalid, "api: give exactly one of user or group")
	case user != "":
		return access.Subject{Kind: access.SubjectUser, Name: user}, nil
	}
	return access.Subject{Kind: access.SubjectGroup, Name: group}, nil
}

func (s *Server) eligibilitySet(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decode[EligibilityRequest](r)
	if err != nil {
		return err
	}
	subj, err := subjectOf(req.User, req.Group)
	if err != nil {
		return err
	}
	maxTTL, err := parseDuration(req.MaxTTL, "max_ttl")
	if err != nil {
		return err
	}
	e, err := s.cfg.Access.SetEligibility(r.Context(), c.origin(), access.Eligibility{
		Role: r.PathValue("name"), Subject: subj, Approvals: req.Approvals, ApproverGroup: req.ApproverGroup,
		MaxTTL: maxTTL, RequireTicket: req.RequireTicket, RequireMFA: req.RequireMFA, ReasonOptional: req.ReasonOptional,
		AllowEmergency: req.AllowEmergency,
	})
	if err != nil {
		return err
	}
	return writeJSON(w, e)
}

// EligibilityList answers GET /v1/roles/{name}/eligibility.
type EligibilityList struct {
	Eligibility []access.Eligibility `json:"eligibility"`
}

func (s *Server) eligibilityList(w http.ResponseWriter, r *http.Request, c *call) error {
	es, err := s.cfg.Access.ListEligibility(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeJSON(w, EligibilityList{Eligibility: nonNil(es)})
}

func (s *Server) eligibilityRemove(w http.ResponseWriter, r *http.Request, c *call) error {
	subj := access.Subject{Kind: r.PathValue("kind"), Name: r.PathValue("subject")}
	if err := s.cfg.Access.RemoveEligibility(r.Context(), c.origin(), r.PathValue("name"), subj); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// AccessRequest is the body of POST /v1/requests and of a grant extension.
type AccessRequest struct {
	Role   string `json:"role,omitempty"`
	TTL    string `json:"ttl"`
	Reason string `json:"reason,omitempty"`
	Ticket string `json:"ticket,omitempty"`
	// Emergency opens a break-glass role at once (where the eligibility
	// allows it), alerting its approvers.
	Emergency bool `json:"emergency,omitempty"`
}

func (c *call) requestSpec(req AccessRequest) (access.RequestSpec, error) {
	ttl, err := parseDuration(req.TTL, "ttl")
	if err != nil {
		return access.RequestSpec{}, err
	}
	spec := access.RequestSpec{Role: req.Role, TTL: ttl, Reason: req.Reason, Ticket: req.Ticket, MFA: c.token.MFA, Emergency: req.Emergency}
	if c.token.MFA {
		spec.MFAAt = c.token.MFAAt
	}
	return spec, nil
}

func (s *Server) requestCreate(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decode[AccessRequest](r)
	if err != nil {
		return err
	}
	spec, err := c.requestSpec(req)
	if err != nil {
		return err
	}
	out, err := s.cfg.Access.CreateRequest(r.Context(), c.origin(), c.token.Principal, spec)
	if err != nil {
		return err
	}
	return writeJSON(w, out)
}

// RequestList answers GET /v1/requests.
type RequestList struct {
	Requests []access.Request `json:"requests"`
}

// requireAdmin asks the policy engine whether the caller may administer;
// routes that show more than the caller's own things use it.
func (s *Server) requireAdmin(r *http.Request, c *call) error {
	return s.authorizeResource(r, c, "admin", SystemResource)
}

func (s *Server) requestList(w http.ResponseWriter, r *http.Request, c *call) error {
	q := r.URL.Query()
	self := c.token.Principal
	f := access.RequestFilter{Role: q.Get("role"), Status: q.Get("status")}
	switch {
	case q.Get("mine") != "":
		f.Requester = &self
	case q.Get("pending_for_me") != "":
		f.ApprovableBy = &self
	default:
		if err := s.requireAdmin(r, c); err != nil {
			return err
		}
	}
	rs, err := s.cfg.Access.Requests(r.Context(), f)
	if err != nil {
		return err
	}
	return writeJSON(w, RequestList{Requests: nonNil(rs)})
}

// requestShow shows a request to its requester, to the members of its
// approver group (whatever its state: before and after they decided it),
// and to administrators.
func (s *Server) requestShow(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := s.cfg.Access.Request(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if req.Requester == c.token.Principal {
		return writeJSON(w, req)
	}
	approver, err := s.cfg.Access.InApproverGroup(r.Context(), c.token.Principal, req)
	if err != nil {
		return err
	}
	if !approver {
		if err := s.requireAdmin(r, c); err != nil {
			return err
		}
	}
	return writeJSON(w, req)
}

// DecisionRequest is the body of approve and deny.
type DecisionRequest struct {
	Comment string `json:"comment,omitempty"`
}

func (s *Server) requestApprove(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decodeOptional[DecisionRequest](r)
	if err != nil {
		return err
	}
	var mfaAt time.Time
	if c.token.MFA {
		mfaAt = c.token.MFAAt
	}
	out, err := s.cfg.Access.Approve(r.Context(), c.origin(), c.token.Principal, r.PathValue("id"), req.Comment, mfaAt)
	if err != nil {
		return err
	}
	return writeJSON(w, out)
}

func (s *Server) requestDeny(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decode[DecisionRequest](r)
	if err != nil {
		return err
	}
	out, err := s.cfg.Access.Deny(r.Context(), c.origin(), c.token.Principal, r.PathValue("id"), req.Comment)
	if err != nil {
		return err
	}
	return writeJSON(w, out)
}

func (s *Server) requestCancel(w http.ResponseWriter, r *http.Request, c *call) error {
	out, err := s.cfg.Access.Cancel(r.Context(), c.origin(), c.token.Principal, r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, out)
}

// GrantList answers GET /v1/grants.
type GrantList struct {
	Grants []access.Grant `json:"grants"`
}

func (s *Server) grantList(w http.ResponseWriter, r *http.Request, c *call) error {
	q := r.URL.Query()
	f := access.GrantFilter{Role: q.Get("role"), Active: q.Get("active") != ""}
	if q.Get("mine") != "" {
		self := c.token.Principal
		f.Principal = &self
	} else if err := s.requireAdmin(r, c); err != nil {
		return err
	}
	gs, err := s.cfg.Access.Grants(r.Context(), f)
	if err != nil {
		return err
	}
	return writeJSON(w, GrantList{Grants: nonNil(gs)})
}

func (s *Server) grantExtend(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decode[AccessRequest](r)
	if err != nil {
		return err
	}
	spec, err := c.requestSpec(req)
	if err != nil {
		return err
	}
	out, err := s.cfg.Access.ExtendGrant(r.Context(), c.origin(), c.token.Principal, r.PathValue("id"), spec)
	if err != nil {
		return err
	}
	return writeJSON(w, out)
}

// RevokeRequest is the body of POST /v1/grants/{id}/revoke.
type RevokeRequest struct {
	Reason string `json:"reason,omitempty"`
}

func (s *Server) grantRevoke(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decodeOptional[RevokeRequest](r)
	if err != nil {
		return err
	}
	g, err := s.cfg.Access.RevokeGrant(r.Context(), c.origin(), r.PathValue("id"), req.Reason)
	if err != nil {
		return err
	}
	return writeJSON(w, g)
}

func (s *Server) grantCredential(w http.ResponseWriter, r *http.Request, c *call) error {
	cred, err := s.cfg.Access.RevealEphemeral(r.Context(), c.origin(), c.token.Principal, r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, cred)
}
