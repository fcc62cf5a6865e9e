package api

import (
	"context"
	"net/http"
	"time"

	"github.com/warderhq/warder/internal/access"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/identity"
)

// inGroup reports whether p belongs to group, directly or through nested
// groups.
func (s *Server) inGroup(ctx context.Context, p identity.Principal, group string) (bool, error) {
	seen := map[string]bool{}
	queue := []string{}
	parents, err := s.cfg.Identity.Parents(ctx, string(p.Kind), p.Name)
	if err != nil {
		return false, err
	}
	queue = append(queue, parents...)
	for len(queue) > 0 && len(seen) < 1024 {
		g := queue[0]
		queue = queue[1:]
		if g == group {
			return true, nil
		}
		if seen[g] {
			continue
		}
		seen[g] = true
		up, err := s.cfg.Identity.Parents(ctx, "group", g)
		if err != nil {
			return false, err
		}
		queue = append(queue, up...)
	}
	return false, nil
}

// IncidentList answers GET /v1/incidents.
type IncidentList struct {
	Incidents []access.Incident `json:"incidents"`
}

// incidentList shows administrators every incident, and others those
// their approver groups must review.
func (s *Server) incidentList(w http.ResponseWriter, r *http.Request, c *call) error {
	all, err := s.cfg.Access.Incidents(r.Context(), r.URL.Query().Get("open") != "")
	if err != nil {
		return err
	}
	out := []access.Incident{}
	admin := s.requireAdminQuiet(r, c)
	for _, in := range all {
		if admin {
			out = append(out, in)
			continue
		}
		if ok, err := s.inGroup(r.Context(), c.token.Principal, in.ApproverGroup); err != nil {
			return err
		} else if ok {
			out = append(out, in)
		}
	}
	return writeJSON(w, IncidentList{Incidents: out})
}

// requireAdminQuiet reports whether the caller may administer, without
// failing the request when not (the decision is still audited).
func (s *Server) requireAdminQuiet(r *http.Request, c *call) bool {
	return s.requireAdmin(r, c) == nil
}

// IncidentReviewRequest is the body of POST /v1/incidents/{id}/review.
type IncidentReviewRequest struct {
	Notes string `json:"notes"`
}

func (s *Server) incidentReview(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decode[IncidentReviewRequest](r)
	if err != nil {
		return err
	}
	in, err := s.cfg.Access.ReviewIncident(r.Context(), c.origin(), c.token.Principal, r.PathValue("id"), req.Notes)
	if err != nil {
		return err
	}
	return writeJSON(w, in)
}

// ReviewStartRequest is the body of POST /v1/reviews: a deadline, or a
// period from now.
type ReviewStartRequest struct {
	Scope    string    `json:"scope"`
	Target   string    `json:"target,omitempty"`
	Deadline time.Time `json:"deadline,omitzero"`
	Period   string    `json:"period,omitempty"`
	Default  string    `json:"default,omitempty"`
	Reviewer string    `json:"reviewer,omitempty"`
}

func (s *Server) reviewStart(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decode[ReviewStartRequest](r)
	if err != nil {
		return err
	}
	deadline := req.Deadline
	if req.Period != "" {
		if !deadline.IsZero() {
			return errkind.New(errkind.Invalid, "api: give a deadline or a period, not both")
		}
		p, err := parseDuration(req.Period, "period")
		if err != nil {
			return err
		}
		deadline = time.Now().Add(p)
	}
	camp, err := s.cfg.Access.StartReview(r.Context(), c.origin(), access.ReviewSpec{
		Scope: req.Scope, Target: req.Target, Deadline: deadline, Default: req.Default, Reviewer: req.Reviewer,
	})
	if err != nil {
		return err
	}
	return writeJSON(w, camp)
}

// ReviewList answers GET /v1/reviews.
type ReviewList struct {
	Reviews []access.Campaign `json:"reviews"`
}

// mayReview lets administrators and members of the campaign's reviewer
// group see it.
func (s *Server) mayReview(r *http.Request, c *call, camp access.Campaign) (bool, error) {
	if ok, err := s.inGroup(r.Context(), c.token.Principal, camp.Reviewer); err != nil || ok {
		return ok, err
	}
	return s.requireAdminQuiet(r, c), nil
}

func (s *Server) reviewList(w http.ResponseWriter, r *http.Request, c *call) error {
	all, err := s.cfg.Access.Reviews(r.Context())
	if err != nil {
		return err
	}
	out := []access.Campaign{}
	for _, camp := range all {
		ok, err := s.mayReview(r, c, camp)
		if err != nil {
			return err
		}
		if ok {
			out = append(out, camp)
		}
	}
	return writeJSON(w, ReviewList{Reviews: out})
}

// campaign loads a campaign the caller may see.
func (s *Server) campaign(r *http.Request, c *call) (access.Campaign, error) {
	camp, err := s.cfg.Access.Review(r.Context(), r.PathValue("id"))
	if err != nil {
		return camp, err
	}
	ok, err := s.mayReview(r, c, camp)
	if err != nil {
		return camp, err
	}
	if !ok {
		return camp, errkind.New(errkind.Denied, "api: only the reviewers of a campaign and administrators see it")
	}
	return camp, nil
}

func (s *Server) reviewShow(w http.ResponseWriter, r *http.Request, c *call) error {
	camp, err := s.campaign(r, c)
	if err != nil {
		return err
	}
	return writeJSON(w, camp)
}

// ReviewDecision is the body of POST /v1/reviews/{id}/items/{item}/decide.
type ReviewDecision struct {
	Decision string `json:"decision"`
	Comment  string `json:"comment,omitempty"`
}

func (s *Server) reviewDecide(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decode[ReviewDecision](r)
	if err != nil {
		return err
	}
	item, err := s.cfg.Access.DecideReview(r.Context(), c.origin(), c.token.Principal, r.PathValue("id"), r.PathValue("item"), req.Decision, req.Comment)
	if err != nil {
		return err
	}
	return writeJSON(w, item)
}

func (s *Server) reviewReport(w http.ResponseWriter, r *http.Request, c *call) error {
	if _, err := s.campaign(r, c); err != nil {
		return err
	}
	rep, err := s.cfg.Access.ReviewReport(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	switch r.URL.Query().Get("format") {
	case "", "json":
		return writeJSON(w, rep)
	case "csv":
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		return access.WriteCSV(w, rep)
	}
	return errkind.New(errkind.Invalid, "api: format must be json or csv")
}
