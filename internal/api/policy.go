package api

import (
	"net/http"

	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/errkind"
)

// PutPolicyRequest is the body of PUT /v1/policies/{name}.
type PutPolicyRequest struct {
	Text string `json:"text"`
}

func (s *Server) policyPut(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decode[PutPolicyRequest](r)
	if err != nil {
		return err
	}
	p, err := s.cfg.Authz.Put(r.Context(), c.origin(), r.PathValue("name"), req.Text)
	if err != nil {
		return err
	}
	return writeJSON(w, p)
}

// PolicyList answers GET /v1/policies.
type PolicyList struct {
	Policies []authz.Policy `json:"policies"`
}

func (s *Server) policyList(w http.ResponseWriter, r *http.Request, c *call) error {
	ps, err := s.cfg.Authz.List(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, PolicyList{Policies: nonNil(ps)})
}

func (s *Server) policyShow(w http.ResponseWriter, r *http.Request, c *call) error {
	p, err := s.cfg.Authz.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeJSON(w, p)
}

func (s *Server) policyDelete(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := s.cfg.Authz.Delete(r.Context(), c.origin(), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// PolicyCheckRequest is the body of POST /v1/policies/check.
type PolicyCheckRequest struct {
	Principal string         `json:"principal"` // User::"alice"
	Action    string         `json:"action"`    // checkout
	Resource  string         `json:"resource"`  // Account::"prod-pg/postgres"
	Context   map[string]any `json:"context,omitempty"`
}

// policyCheck evaluates a hypothetical request without acting on it. The
// API call itself is audited by the authorization that guards this route.
func (s *Server) policyCheck(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decode[PolicyCheckRequest](r)
	if err != nil {
		return err
	}
	p, err := authz.ParseUID(req.Principal)
	if err != nil {
		return errkind.New(errkind.Invalid, "api: principal: %w", err)
	}
	res, err := authz.ParseUID(req.Resource)
	if err != nil {
		return errkind.New(errkind.Invalid, "api: resource: %w", err)
	}
	if req.Action == "" {
		return errkind.New(errkind.Invalid, "api: action is required")
	}
	d, err := s.cfg.Authz.Check(r.Context(), authz.Request{Principal: p, Action: req.Action, Resource: res, Context: authz.Context{Extra: req.Context}})
	if err != nil {
		return err
	}
	return writeJSON(w, d)
}
