package client

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// User is a person who logs in with a password and, optionally, TOTP.
type User struct {
	Name        string    `json:"name"`
	DisplayName string    `json:"display_name"`
	Email       string    `json:"email"`
	Status      string    `json:"status"` // "active" or "disabled"
	HasPassword bool      `json:"has_password"`
	MFAEnrolled bool      `json:"mfa_enrolled"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	// FailedLogins and LockedUntil are the login lockout of the user's
	// name: recent consecutive failures, and when a lock ends (zero: not
	// locked). Only the routes about one user fill them in.
	FailedLogins int       `json:"failed_logins,omitempty"`
	LockedUntil  time.Time `json:"locked_until,omitzero"`
}

// NewUser is the body of POST /v1/users. Password "" creates a user who
// cannot log in until one is set.
type NewUser struct {
	Name        string `json:"name"`
	DisplayName string `json:"display_name,omitempty"`
	Email       string `json:"email,omitempty"`
	Password    string `json:"password,omitempty"`
}

// CreateUser creates a user.
func (c *Client) CreateUser(ctx context.Context, u NewUser) (User, error) {
	var res User
	err := c.do(ctx, http.MethodPost, "/v1/users", nil, u, &res)
	return res, err
}

// Users lists all users, by name.
func (c *Client) Users(ctx context.Context) ([]User, error) {
	var res struct {
		Users []User `json:"users"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/users", nil, nil, &res)
	return res.Users, err
}

// User describes one user.
func (c *Client) User(ctx context.Context, name string) (User, error) {
	var res User
	err := c.do(ctx, http.MethodGet, "/v1/users/"+url.PathEscape(name), nil, nil, &res)
	return res, err
}

// DisableUser disables a user and revokes all of their tokens.
func (c *Client) DisableUser(ctx context.Context, name string) (User, error) {
	var res User
	err := c.do(ctx, http.MethodPost, "/v1/users/"+url.PathEscape(name)+"/disable", nil, nil, &res)
	return res, err
}

// EnableUser lets a disabled user log in again.
func (c *Client) EnableUser(ctx context.Context, name string) (User, error) {
	var res User
	err := c.do(ctx, http.MethodPost, "/v1/users/"+url.PathEscape(name)+"/enable", nil, nil, &res)
	return res, err
}

// DeleteUser deletes a user and revokes all of their tokens.
func (c *Client) DeleteUser(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/users/"+url.PathEscape(name), nil, nil, nil)
}

// UnlockUser clears the login lockout of a user's name.
func (c *Client) UnlockUser(ctx context.Context, name string) (User, error) {
	var res User
	err := c.do(ctx, http.MethodPost, "/v1/users/"+url.PathEscape(name)+"/unlock", nil, nil, &res)
	return res, err
}

// SetUserPassword sets a user's password; the server revokes their tokens
// but the caller's own.
func (c *Client) SetUserPassword(ctx context.Context, name, password string) (User, error) {
	var res User
	err := c.do(ctx, http.MethodPost, "/v1/users/"+url.PathEscape(name)+"/password", nil, struct {
		Password string `json:"password"`
	}{password}, &res)
	return res, err
}
