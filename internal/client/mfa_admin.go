package client

import (
	"context"
	"net/http"
	"net/url"
)

// ResetUserMFA removes a user's TOTP enrollment and recovery codes, for a
// user who lost their authenticator: they log in with their password alone
// until they enroll again. A user without an enrollment is a NotFound
// error.
func (c *Client) ResetUserMFA(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/users/"+url.PathEscape(name)+"/mfa", nil, nil, nil)
}
