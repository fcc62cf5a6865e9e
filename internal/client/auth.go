package client

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"
)

// Principal names who holds a token: Kind is "user" or "machine".
type Principal struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

func (p Principal) String() string {
	if p.Name == "" {
		return p.Kind
	}
	return p.Kind + ":" + p.Name
}

// TokenInfo describes a token; it never holds the token itself.
type TokenInfo struct {
	ID        string    `json:"id"`
	Principal Principal `json:"principal"`
	// MFA is true when the login that issued the token verified a second
	// factor, at MFAAt.
	MFA          bool      `json:"mfa"`
	MFAAt        time.Time `json:"mfa_at,omitzero"`
	CreatedAt    time.Time `json:"created_at"`
	ExpiresAt    time.Time `json:"expires_at,omitzero"`     // zero: does not expire
	MaxExpiresAt time.Time `json:"max_expires_at,omitzero"` // renewals stop here; zero: no cap
	Bootstrap    bool      `json:"bootstrap,omitempty"`     // the token made by operator init
	Scope        string    `json:"scope,omitempty"`         // "": an API token; "db:TARGET/ACCOUNT": a database token
}

// LoginRequest is the body of POST /v1/auth/login.
type LoginRequest struct {
	User     string `json:"user"`
	Password string `json:"password"`
	TOTP     string `json:"totp,omitempty"` // a TOTP code or a recovery code
}

// LoginResponse holds a new token, shown only in this answer.
type LoginResponse struct {
	Token     string    `json:"token"`
	TokenInfo TokenInfo `json:"token_info"`
}

// machineLoginRequest is the body of POST /v1/auth/machine/login.
type machineLoginRequest struct {
	RoleID   string `json:"role_id"`
	SecretID string `json:"secret_id"`
}

// TOTPEnrollment is a pending TOTP enrollment: the base32 secret and the
// otpauth:// URI that authenticator apps read from a QR code.
type TOTPEnrollment struct {
	Secret string `json:"secret"`
	URI    string `json:"uri"`
}

// Login exchanges a user's password (and TOTP code, when the user has
// enrolled one) for a token. It needs no token itself.
func (c *Client) Login(ctx context.Context, req LoginRequest) (LoginResponse, error) {
	var res LoginResponse
	err := c.do(ctx, http.MethodPost, "/v1/auth/login", nil, req, &res)
	return res, err
}

// IsTOTPRequired reports whether err is the server's answer to a login
// without a TOTP code by a user who has enrolled one: code
// "unauthenticated" with a message saying a TOTP code is required.
func IsTOTPRequired(err error) bool {
	var e *Error
	if !errors.As(err, &e) || e.Code != "unauthenticated" {
		return false
	}
	m := strings.ToLower(e.Message)
	return strings.Contains(m, "totp") && strings.Contains(m, "required")
}

// MachineLogin exchanges a machine's role id and secret id for a token.
func (c *Client) MachineLogin(ctx context.Context, roleID, secretID string) (LoginResponse, error) {
	var res LoginResponse
	err := c.do(ctx, http.MethodPost, "/v1/auth/machine/login", nil, machineLoginRequest{RoleID: roleID, SecretID: secretID}, &res)
	return res, err
}

// TokenSelf describes the token the client presents.
func (c *Client) TokenSelf(ctx context.Context) (TokenInfo, error) {
	var t TokenInfo
	err := c.do(ctx, http.MethodGet, "/v1/auth/token/self", nil, nil, &t)
	return t, err
}

// RenewToken extends the client's token by its lifetime again, up to its
// maximum, and describes it.
func (c *Client) RenewToken(ctx context.Context) (TokenInfo, error) {
	var t TokenInfo
	err := c.do(ctx, http.MethodPost, "/v1/auth/token/renew", nil, nil, &t)
	return t, err
}

// RevokeSelf revokes the client's token.
func (c *Client) RevokeSelf(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/auth/token/revoke-self", nil, nil, nil)
}

// EnrollTOTP starts (or restarts) the calling user's TOTP enrollment.
func (c *Client) EnrollTOTP(ctx context.Context) (TOTPEnrollment, error) {
	var res TOTPEnrollment
	err := c.do(ctx, http.MethodPost, "/v1/auth/mfa/totp/enroll", nil, nil, &res)
	return res, err
}

// ConfirmTOTP completes the enrollment with a first code from the
// authenticator and returns the recovery codes, shown only in this answer.
func (c *Client) ConfirmTOTP(ctx context.Context, code string) ([]string, error) {
	var res struct {
		RecoveryCodes []string `json:"recovery_codes"`
	}
	err := c.do(ctx, http.MethodPost, "/v1/auth/mfa/totp/confirm", nil, struct {
		Code string `json:"code"`
	}{code}, &res)
	return res.RecoveryCodes, err
}
