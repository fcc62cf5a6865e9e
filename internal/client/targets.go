package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"time"
)

// PasswordPolicy says what passwords the server generates for an account.
// The zero value is the server's default policy.
type PasswordPolicy struct {
	Length int `json:"length"` // characters; 0: the default (32)
	// The character classes used; all four false means all four.
	Lower   bool `json:"lower"`
	Upper   bool `json:"upper"`
	Digits  bool `json:"digits"`
	Symbols bool `json:"symbols"`
	// Forbidden lists characters the target cannot take.
	Forbidden string `json:"forbidden,omitempty"`
}

// Target is a system whose accounts Warder manages.
type Target struct {
	Name              string            `json:"name"`
	Kind              string            `json:"kind"` // postgres, mysql, linux, redis
	Host              string            `json:"host"`
	Port              int               `json:"port"`
	Options           map[string]string `json:"options,omitempty"`
	ManagementAccount string            `json:"management_account,omitempty"`
	PasswordPolicy    *PasswordPolicy   `json:"password_policy,omitempty"`
	// MaxConcurrentRotations bounds parallel rotations on the target.
	MaxConcurrentRotations int `json:"max_concurrent_rotations"`
	// Rules are the command (SSH) or statement (PostgreSQL) rules the
	// gateways apply to the target's sessions.
	Rules     []Rule    `json:"rules,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Rule is a target's command or statement rule: a regular expression
// (RE2 syntax) and what the gateway does on a match, "alert" or "block".
type Rule struct {
	Pattern string `json:"pattern"`
	Action  string `json:"action"`
	Message string `json:"message,omitempty"` // shown to the user when blocked
}

// NewTarget is the body of POST /v1/targets. Zero optional fields mean
// the server's defaults.
type NewTarget struct {
	Name                   string            `json:"name"`
	Kind                   string            `json:"kind"`
	Host                   string            `json:"host"`
	Port                   int               `json:"port"`
	Options                map[string]string `json:"options,omitempty"`
	ManagementAccount      string            `json:"management_account,omitempty"`
	PasswordPolicy         *PasswordPolicy   `json:"password_policy,omitempty"`
	MaxConcurrentRotations int               `json:"max_concurrent_rotations,omitempty"`
	Rules                  []Rule            `json:"rules,omitempty"`
}

// RotationResult reports the rotation of one account.
type RotationResult struct {
	Account string `json:"account"`
	// Outcome is rotated, reset (through the management account), kept
	// (the old credential stays), out_of_sync or undecided.
	Outcome string `json:"outcome"`
	Version int64  `json:"version"`
	// FailedDependents lists dependents that did not learn the new
	// credential, with why.
	FailedDependents []string `json:"failed_dependents,omitempty"`
	// Error says why the rotation of this account failed, when the server
	// tells.
	Error string `json:"error,omitempty"`
}

// Failed reports whether the rotation left something to fix: no new
// credential in place, or a dependent that did not learn it.
func (r RotationResult) Failed() bool {
	return (r.Outcome != "rotated" && r.Outcome != "reset") || len(r.FailedDependents) > 0 || r.Error != ""
}

// TargetRotation is the answer of a target-wide rotation.
type TargetRotation struct {
	Results []RotationResult `json:"results"`
	// Error summarises the failures, if any.
	Error string `json:"error,omitempty"`
}

// UnmarshalJSON accepts error as a string or as the API's error object.
func (tr *TargetRotation) UnmarshalJSON(b []byte) error {
	var w struct {
		Results []RotationResult `json:"results"`
		Error   json.RawMessage  `json:"error"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	tr.Results, tr.Error = w.Results, errorText(w.Error)
	return nil
}

// errorText reads an error given as a JSON string or {"message": ...}.
func errorText(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var o struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(raw, &o) == nil && o.Message != "" {
		return o.Message
	}
	return string(raw)
}

// CreateTarget adds a target.
func (c *Client) CreateTarget(ctx context.Context, t NewTarget) (Target, error) {
	var res Target
	err := c.do(ctx, http.MethodPost, "/v1/targets", nil, t, &res)
	return res, err
}

// Targets lists all targets.
func (c *Client) Targets(ctx context.Context) ([]Target, error) {
	var res struct {
		Targets []Target `json:"targets"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/targets", nil, nil, &res)
	return res.Targets, err
}

// Target describes one target.
func (c *Client) Target(ctx context.Context, name string) (Target, error) {
	var res Target
	err := c.do(ctx, http.MethodGet, "/v1/targets/"+url.PathEscape(name), nil, nil, &res)
	return res, err
}

// SetTargetRules replaces a target's rules (nil: none) and returns the
// target.
func (c *Client) SetTargetRules(ctx context.Context, name string, rules []Rule) (Target, error) {
	if rules == nil {
		rules = []Rule{}
	}
	var res Target
	err := c.do(ctx, http.MethodPut, "/v1/targets/"+url.PathEscape(name)+"/rules", nil,
		struct {
			Rules []Rule `json:"rules"`
		}{rules}, &res)
	return res, err
}

// DeleteTarget removes a target that has no accounts left.
func (c *Client) DeleteTarget(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/targets/"+url.PathEscape(name), nil, nil, nil)
}

// RotateTarget rotates every account of a target. A partial failure is
// not an error: it is reported in the results and Error.
func (c *Client) RotateTarget(ctx context.Context, name string) (TargetRotation, error) {
	var res TargetRotation
	err := c.do(ctx, http.MethodPost, "/v1/targets/"+url.PathEscape(name)+"/rotate", nil, nil, &res)
	return res, err
}
