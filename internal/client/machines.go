package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// Machine is a workload that logs in with a role id and a secret id.
type Machine struct {
	Name        string    `json:"name"`
	Status      string    `json:"status"`        // "active" or "disabled"
	RoleID      string    `json:"role_id"`       // not secret: it names the machine's login role
	TokenTTL    Duration  `json:"token_ttl"`     // lifetime of its tokens
	TokenMaxTTL Duration  `json:"token_max_ttl"` // renewals stop this long after login
	CreatedAt   time.Time `json:"created_at"`
}

// Duration is a time.Duration that travels in JSON as a Go duration
// string ("20m0s"). It also decodes a number of nanoseconds.
type Duration time.Duration

// MarshalJSON writes d as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a Go duration string or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("client: duration %q: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("client: duration %s is neither a string nor a number", b)
	}
	*d = Duration(n)
	return nil
}

func (d Duration) String() string { return time.Duration(d).String() }

// SecretIDSpec limits a new secret id. Zero fields mean the server's
// defaults.
type SecretIDSpec struct {
	Uses  int           // number of logins it allows; 0: unlimited
	TTL   time.Duration // how long it stays valid; 0: the server's default
	CIDRs []string      // client addresses allowed to log in with it; nil: any
}

// SecretIDInfo describes a secret id without revealing it. ID is the
// accessor: it names the secret id in listings and audit events.
type SecretIDInfo struct {
	ID        string    `json:"id"`
	Uses      int       `json:"uses"`      // logins it allows; 0: unlimited
	UsesLeft  int       `json:"uses_left"` // logins left of Uses
	CreatedAt time.Time `json:"created_at,omitzero"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	CIDRs     []string  `json:"cidrs"`
}

// IssuedSecretID is a new secret id, shown only in this answer.
type IssuedSecretID struct {
	SecretID string       `json:"secret_id"`
	Info     SecretIDInfo `json:"info"`
}

// CreateMachine creates a machine. tokenTTL 0 means the server's default
// lifetime for its tokens.
func (c *Client) CreateMachine(ctx context.Context, name string, tokenTTL time.Duration) (Machine, error) {
	req := struct {
		Name     string `json:"name"`
		TokenTTL string `json:"token_ttl,omitempty"`
	}{Name: name}
	if tokenTTL != 0 {
		req.TokenTTL = tokenTTL.String()
	}
	var res Machine
	err := c.do(ctx, http.MethodPost, "/v1/machines", nil, req, &res)
	return res, err
}

// Machines lists all machines, by name.
func (c *Client) Machines(ctx context.Context) ([]Machine, error) {
	var res struct {
		Machines []Machine `json:"machines"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/machines", nil, nil, &res)
	return res.Machines, err
}

// IssueSecretID creates a secret id for the machine.
func (c *Client) IssueSecretID(ctx context.Context, machine string, spec SecretIDSpec) (IssuedSecretID, error) {
	req := struct {
		Uses  int      `json:"uses,omitempty"`
		TTL   string   `json:"ttl,omitempty"`
		CIDRs []string `json:"cidrs,omitempty"`
	}{Uses: spec.Uses, CIDRs: spec.CIDRs}
	if spec.TTL != 0 {
		req.TTL = spec.TTL.String()
	}
	var res IssuedSecretID
	err := c.do(ctx, http.MethodPost, "/v1/machines/"+url.PathEscape(machine)+"/secret-ids", nil, req, &res)
	return res, err
}

// Machine describes one machine.
func (c *Client) Machine(ctx context.Context, name string) (Machine, error) {
	var res Machine
	err := c.do(ctx, http.MethodGet, "/v1/machines/"+url.PathEscape(name), nil, nil, &res)
	return res, err
}

// DisableMachine disables a machine and revokes all of its tokens.
func (c *Client) DisableMachine(ctx context.Context, name string) (Machine, error) {
	var res Machine
	err := c.do(ctx, http.MethodPost, "/v1/machines/"+url.PathEscape(name)+"/disable", nil, nil, &res)
	return res, err
}

// EnableMachine lets a disabled machine log in again.
func (c *Client) EnableMachine(ctx context.Context, name string) (Machine, error) {
	var res Machine
	err := c.do(ctx, http.MethodPost, "/v1/machines/"+url.PathEscape(name)+"/enable", nil, nil, &res)
	return res, err
}

// DeleteMachine deletes a machine with its secret ids and revokes its
// tokens.
func (c *Client) DeleteMachine(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/machines/"+url.PathEscape(name), nil, nil, nil)
}

// SecretIDs describes a machine's secret ids, never their secrets.
func (c *Client) SecretIDs(ctx context.Context, machine string) ([]SecretIDInfo, error) {
	var res struct {
		SecretIDs []SecretIDInfo `json:"secret_ids"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/machines/"+url.PathEscape(machine)+"/secret-ids", nil, nil, &res)
	return res.SecretIDs, err
}

// RevokeSecretID revokes the machine's secret id named by its accessor.
func (c *Client) RevokeSecretID(ctx context.Context, machine, accessor string) error {
	return c.do(ctx, http.MethodDelete, "/v1/machines/"+url.PathEscape(machine)+"/secret-ids/"+url.PathEscape(accessor), nil, nil, nil)
}

// RevokeSecretIDs revokes every secret id of the machine and returns their
// accessors.
func (c *Client) RevokeSecretIDs(ctx context.Context, machine string) ([]string, error) {
	var res struct {
		Revoked []string `json:"revoked"`
	}
	err := c.do(ctx, http.MethodDelete, "/v1/machines/"+url.PathEscape(machine)+"/secret-ids", nil, nil, &res)
	return res.Revoked, err
}
