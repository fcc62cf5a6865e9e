package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Account is a privileged account on a target. It never carries a
// credential.
type Account struct {
	ID                string          `json:"id"` // "target/username"
	Target            string          `json:"target"`
	Username          string          `json:"username"`
	Kind              string          `json:"kind"` // password, ssh_key, api_key
	MaxCheckouts      int             `json:"max_checkouts"`
	RotateOnCheckin   bool            `json:"rotate_on_checkin"`
	RotateEvery       Duration        `json:"rotate_every,omitempty"` // 0: no scheduled rotation
	PasswordPolicy    *PasswordPolicy `json:"password_policy,omitempty"`
	Dependents        []Dependent     `json:"dependents,omitempty"`
	Status            string          `json:"status"`             // ok, unverified, out_of_sync
	CredentialVersion int64           `json:"credential_version"` // 0: none yet
	HasPending        bool            `json:"has_pending"`
	RotationDue       bool            `json:"rotation_due"`
	LastRotatedAt     time.Time       `json:"last_rotated_at,omitzero"`
	LastVerifiedAt    time.Time       `json:"last_verified_at,omitzero"`
	NextRotationAt    time.Time       `json:"next_rotation_at,omitzero"`
	CreatedAt         time.Time       `json:"created_at"`
}

// Dependent is a file on a (linux) target holding a copy of an account's
// credential, rewritten by each rotation: the line matching Match becomes
// Template with "{{password}}" replaced by the new credential.
type Dependent struct {
	Target   string `json:"target"`
	Path     string `json:"path"`
	Match    string `json:"match"`
	Template string `json:"template"`
	Restart  string `json:"restart,omitempty"` // command run after the file changed
}

// NewAccount is the body of POST /v1/accounts. Give the initial
// credential in Password or PrivateKey, or set Generate
// to have the server set a fresh one on the target. Zero optional fields
// mean the server's defaults.
type NewAccount struct {
	Target     string `json:"target"`
	Username   string `json:"username"`
	Kind       string `json:"kind,omitempty"`
	Password   string `json:"password,omitempty"`
	PrivateKey string `json:"private_key,omitempty"` // the server derives the public key
	Generate   bool   `json:"generate,omitempty"`

	MaxCheckouts    int             `json:"max_checkouts,omitempty"`
	RotateEvery     Duration        `json:"rotate_every,omitempty"`
	RotateOnCheckin *bool           `json:"rotate_on_checkin,omitempty"` // nil: true
	PasswordPolicy  *PasswordPolicy `json:"password_policy,omitempty"`
	Dependents      []Dependent     `json:"dependents,omitempty"`
}

// AccountVerification is the answer of a verification (heartbeat).
type AccountVerification struct {
	Account string `json:"account"`
	OK      bool   `json:"ok"` // the stored credential logged in
	Status  string `json:"status"`
}

// CredentialVersion describes one stored version of a credential, without
// the credential.
type CredentialVersion struct {
	Version   int64     `json:"version"`
	State     string    `json:"state"` // current, pending, previous...
	PublicKey string    `json:"public_key,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// accountPath is the escaped API path of account id "target/username".
func accountPath(id string) (string, error) {
	t, u, ok := strings.Cut(id, "/")
	if !ok || t == "" || u == "" {
		return "", fmt.Errorf("client: account %q is not TARGET/USERNAME", id)
	}
	return "/v1/accounts/" + url.PathEscape(t) + "/" + url.PathEscape(u), nil
}

// CreateAccount adds an account.
func (c *Client) CreateAccount(ctx context.Context, a NewAccount) (Account, error) {
	var res Account
	err := c.do(ctx, http.MethodPost, "/v1/accounts", nil, a, &res)
	return res, err
}

// Accounts lists the accounts of a target, or of all targets for "".
func (c *Client) Accounts(ctx context.Context, target string) ([]Account, error) {
	q := url.Values{}
	if target != "" {
		q.Set("target", target)
	}
	var res struct {
		Accounts []Account `json:"accounts"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/accounts", q, nil, &res)
	return res.Accounts, err
}

// Account describes one account, "target/username".
func (c *Client) Account(ctx context.Context, id string) (Account, error) {
	p, err := accountPath(id)
	if err != nil {
		return Account{}, err
	}
	var res Account
	err = c.do(ctx, http.MethodGet, p, nil, nil, &res)
	return res, err
}

// DeleteAccount removes an account that is not checked out.
func (c *Client) DeleteAccount(ctx context.Context, id string) error {
	p, err := accountPath(id)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodDelete, p, nil, nil, nil)
}

// RotateAccount rotates an account's credential now.
func (c *Client) RotateAccount(ctx context.Context, id string) (RotationResult, error) {
	p, err := accountPath(id)
	if err != nil {
		return RotationResult{}, err
	}
	var res RotationResult
	err = c.do(ctx, http.MethodPost, p+"/rotate", nil, nil, &res)
	return res, err
}

// VerifyAccount logs in to the target with the stored credential.
func (c *Client) VerifyAccount(ctx context.Context, id string) (AccountVerification, error) {
	p, err := accountPath(id)
	if err != nil {
		return AccountVerification{}, err
	}
	var res AccountVerification
	err = c.do(ctx, http.MethodPost, p+"/verify", nil, nil, &res)
	return res, err
}

// AccountVersions lists the stored versions of an account's credential.
func (c *Client) AccountVersions(ctx context.Context, id string) ([]CredentialVersion, error) {
	p, err := accountPath(id)
	if err != nil {
		return nil, err
	}
	var res struct {
		Versions []CredentialVersion `json:"versions"`
	}
	err = c.do(ctx, http.MethodGet, p+"/versions", nil, nil, &res)
	return res.Versions, err
}
