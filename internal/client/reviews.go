package client

import (
	"context"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"time"
)

// Incident is the post-incident review of an emergency (break-glass)
// grant. It stays open until an approver other than the grantee reviews
// it, after the grant ended.
type Incident struct {
	ID            string    `json:"id"`
	GrantID       string    `json:"grant_id"`
	RequestID     string    `json:"request_id"`
	Role          string    `json:"role"`
	Principal     Principal `json:"principal"`      // the grantee
	ApproverGroup string    `json:"approver_group"` // whose members review it
	Reason        string    `json:"reason"`
	Ticket        string    `json:"ticket,omitempty"`
	Status        string    `json:"status"` // open or reviewed
	OpenedAt      time.Time `json:"opened_at"`
	ReviewedAt    time.Time `json:"reviewed_at,omitzero"`
	Reviewer      string    `json:"reviewer,omitempty"` // "user:bob"
	Notes         string    `json:"notes,omitempty"`
}

// NewReview is the body of POST /v1/reviews. Set exactly one of Deadline
// and Period.
type NewReview struct {
	Scope    string        // "role" or "group"
	Target   string        // the role or group reviewed; "": every one in scope
	Deadline time.Time     // when undecided items get Default; zero: Period from now
	Period   time.Duration // how long the review runs; 0: until Deadline
	Default  string        // "revoke" or "keep"; "": the server's (revoke)
	Reviewer string        // group whose members decide; "": the server's (admins)
}

// Campaign is an access review: every standing assignment in scope, each
// kept or revoked by a member of the reviewer group until the deadline.
type Campaign struct {
	ID        string       `json:"id"`
	Scope     string       `json:"scope"`
	Target    string       `json:"target"` // "": every role or group
	Reviewer  string       `json:"reviewer"`
	Default   string       `json:"default"`
	Deadline  time.Time    `json:"deadline"`
	Status    string       `json:"status"` // open or closed
	CreatedAt time.Time    `json:"created_at"`
	CreatedBy string       `json:"created_by"`
	ClosedAt  time.Time    `json:"closed_at,omitzero"`
	Items     []ReviewItem `json:"items"` // may be absent from lists
}

// ReviewItem is one assignment under review.
type ReviewItem struct {
	ID        string    `json:"id"`      // "1", "2", ... within the campaign
	Kind      string    `json:"kind"`    // eligibility, grant or membership
	Subject   string    `json:"subject"` // who holds it: "user:alice", "group:dba"
	Role      string    `json:"role,omitempty"`
	Group     string    `json:"group,omitempty"`
	GrantID   string    `json:"grant_id,omitempty"`
	Detail    string    `json:"detail"`
	Reviewer  string    `json:"reviewer"`
	Decision  string    `json:"decision"`  // keep, revoke, or "" (undecided)
	Defaulted bool      `json:"defaulted"` // the deadline decided, not a reviewer
	DecidedBy string    `json:"decided_by,omitempty"`
	DecidedAt time.Time `json:"decided_at,omitzero"`
	Comment   string    `json:"comment,omitempty"`
	Applied   bool      `json:"applied"`         // the decision took effect
	Error     string    `json:"error,omitempty"` // why applying a revocation last failed
}

// ReviewCounts sums up a campaign's items.
type ReviewCounts struct {
	Total     int `json:"total"`
	Kept      int `json:"kept"`
	Revoked   int `json:"revoked"`
	Defaulted int `json:"defaulted"` // of the kept and revoked, decided by the deadline
	Undecided int `json:"undecided"`
}

// ReviewReport is a campaign's outcome.
type ReviewReport struct {
	Campaign Campaign     `json:"campaign"` // with its items
	Counts   ReviewCounts `json:"counts"`
}

func incidentPath(id string) string { return "/v1/incidents/" + url.PathEscape(id) }

func reviewPath(id string) string { return "/v1/reviews/" + url.PathEscape(id) }

// Incidents lists the post-incident reviews the caller may see: only open
// ones if open.
func (c *Client) Incidents(ctx context.Context, open bool) ([]Incident, error) {
	q := url.Values{}
	if open {
		q.Set("open", "1")
	}
	var res struct {
		Incidents []Incident `json:"incidents"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/incidents", q, nil, &res)
	return res.Incidents, err
}

// ReviewIncident closes the post-incident review id with the reviewer's
// notes.
func (c *Client) ReviewIncident(ctx context.Context, id, notes string) (Incident, error) {
	req := struct {
		Notes string `json:"notes"`
	}{notes}
	var res Incident
	err := c.do(ctx, http.MethodPost, incidentPath(id)+"/review", nil, req, &res)
	return res, err
}

// StartReview starts an access review campaign (administrators). The
// answer lists its items.
func (c *Client) StartReview(ctx context.Context, r NewReview) (Campaign, error) {
	req := struct {
		Scope    string `json:"scope"`
		Target   string `json:"target,omitempty"`
		Deadline string `json:"deadline,omitempty"`
		Period   string `json:"period,omitempty"`
		Default  string `json:"default,omitempty"`
		Reviewer string `json:"reviewer,omitempty"`
	}{Scope: r.Scope, Target: r.Target, Default: r.Default, Reviewer: r.Reviewer}
	if !r.Deadline.IsZero() {
		req.Deadline = r.Deadline.Format(time.RFC3339Nano)
	}
	if r.Period != 0 {
		req.Period = r.Period.String()
	}
	var res Campaign
	err := c.do(ctx, http.MethodPost, "/v1/reviews", nil, req, &res)
	return res, err
}

// Reviews lists the campaigns the caller reviews (all, for administrators).
func (c *Client) Reviews(ctx context.Context) ([]Campaign, error) {
	var res struct {
		Reviews []Campaign `json:"reviews"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/reviews", nil, nil, &res)
	return res.Reviews, err
}

// Review describes campaign id with its items.
func (c *Client) Review(ctx context.Context, id string) (Campaign, error) {
	var res Campaign
	err := c.do(ctx, http.MethodGet, reviewPath(id), nil, nil, &res)
	return res, err
}

// DecideReview keeps or revokes (decision "keep" or "revoke") item of
// campaign id; comment may be "". A revocation applies at once.
func (c *Client) DecideReview(ctx context.Context, id, item, decision, comment string) (ReviewItem, error) {
	req := struct {
		Decision string `json:"decision"`
		Comment  string `json:"comment,omitempty"`
	}{decision, comment}
	var res ReviewItem
	err := c.do(ctx, http.MethodPost, reviewPath(id)+"/items/"+url.PathEscape(item)+"/decide", nil, req, &res)
	return res, err
}

// ReviewReport returns the outcome of campaign id.
func (c *Client) ReviewReport(ctx context.Context, id string) (ReviewReport, error) {
	var res ReviewReport
	err := c.do(ctx, http.MethodGet, reviewPath(id)+"/report", url.Values{"format": {"json"}}, nil, &res)
	return res, err
}

// ReviewReportCSV copies the server's CSV report of campaign id to w as it
// arrives, byte for byte. On an error after the copy began, w holds part
// of the report.
func (c *Client) ReviewReportCSV(ctx context.Context, id string, w io.Writer) error {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	path := reviewPath(id) + "/report"
	resp, err := c.send(ctx, http.MethodGet, path, url.Values{"format": {"csv"}}, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return decodeError(resp)
	}
	// A server that ignored format=csv answers JSON: refuse to pass that
	// off as CSV.
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "application/json" {
		return fmt.Errorf("client: GET %s: the server answered JSON, not CSV", path)
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("client: GET %s: %w", path, err)
	}
	return nil
}
