package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"time"
)

// Policy is a named Cedar policy text of one or more statements.
type Policy struct {
	Name      string    `json:"name"`
	Text      string    `json:"text"`
	Builtin   bool      `json:"builtin"` // installed by Warder; cannot be changed or deleted
	IDs       []string  `json:"ids"`     // the statements' ids, as decisions name them
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// CheckRequest asks what the policies decide for one request, without
// acting on it. Principal and Resource are Cedar entity uids such as
// User::"alice"; Action is an action name such as checkout.
type CheckRequest struct {
	Principal string          `json:"principal"`
	Action    string          `json:"action"`
	Resource  string          `json:"resource"`
	Context   json.RawMessage `json:"context,omitempty"` // a JSON object, or nil
}

// Decision is the policy engine's answer.
type Decision struct {
	Decision string   `json:"decision"` // "allow" or "deny"
	Policies []string `json:"policies"` // ids of the statements that decided it
	Errors   []string `json:"errors,omitempty"`
}

// Allowed reports whether the decision is allow.
func (d Decision) Allowed() bool { return d.Decision == "allow" }

// PutPolicy creates or replaces a policy. The server refuses a text that
// does not validate against its schema, with the Cedar error.
func (c *Client) PutPolicy(ctx context.Context, name, text string) (Policy, error) {
	var res Policy
	err := c.do(ctx, http.MethodPut, "/v1/policies/"+url.PathEscape(name), nil, struct {
		Text string `json:"text"`
	}{text}, &res)
	return res, err
}

// Policies lists all policies, by name.
func (c *Client) Policies(ctx context.Context) ([]Policy, error) {
	var res struct {
		Policies []Policy `json:"policies"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/policies", nil, nil, &res)
	return res.Policies, err
}

// Policy returns one policy.
func (c *Client) Policy(ctx context.Context, name string) (Policy, error) {
	var res Policy
	err := c.do(ctx, http.MethodGet, "/v1/policies/"+url.PathEscape(name), nil, nil, &res)
	return res, err
}

// DeletePolicy deletes a policy.
func (c *Client) DeletePolicy(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/policies/"+url.PathEscape(name), nil, nil, nil)
}

// CheckPolicy evaluates the policies for req. A deny is an answer, not an
// error. Policies is never nil in the result.
func (c *Client) CheckPolicy(ctx context.Context, req CheckRequest) (Decision, error) {
	var res Decision
	if err := c.do(ctx, http.MethodPost, "/v1/policies/check", nil, req, &res); err != nil {
		return Decision{}, err
	}
	if res.Policies == nil {
		res.Policies = []string{}
	}
	return res, nil
}
