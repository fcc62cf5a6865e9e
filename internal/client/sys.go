package client

import (
	"context"
	"net/http"

	"github.com/warderhq/warder/internal/api"
	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/identity"
)

// SealStatus reports whether the server is initialised and sealed, and the
// unseal progress.
func (c *Client) SealStatus(ctx context.Context) (barrier.Status, error) {
	var st barrier.Status
	err := c.do(ctx, http.MethodGet, "/v1/sys/seal-status", nil, nil, &st)
	return st, err
}

// Health reports the server's health; a sealed or uninitialised server is
// not an error here.
func (c *Client) Health(ctx context.Context) (api.HealthResponse, error) {
	var h api.HealthResponse
	err := c.do(ctx, http.MethodGet, "/v1/sys/health", nil, nil, &h, http.StatusServiceUnavailable, http.StatusNotImplemented)
	return h, err
}

// Init initialises the server. The answer holds secrets shown only once.
func (c *Client) Init(ctx context.Context, req api.InitRequest) (api.InitResponse, error) {
	var res api.InitResponse
	err := c.do(ctx, http.MethodPost, "/v1/sys/init", nil, req, &res)
	return res, err
}

// Unseal submits one share.
func (c *Client) Unseal(ctx context.Context, share string) (barrier.Status, error) {
	var st barrier.Status
	err := c.do(ctx, http.MethodPost, "/v1/sys/unseal", nil, api.UnsealRequest{Share: share}, &st)
	return st, err
}

// ResetUnseal discards the shares submitted so far.
func (c *Client) ResetUnseal(ctx context.Context) (barrier.Status, error) {
	var st barrier.Status
	err := c.do(ctx, http.MethodPost, "/v1/sys/unseal", nil, api.UnsealRequest{Reset: true}, &st)
	return st, err
}

// Seal seals the server.
func (c *Client) Seal(ctx context.Context) (barrier.Status, error) {
	var st barrier.Status
	err := c.do(ctx, http.MethodPost, "/v1/sys/seal", nil, nil, &st)
	return st, err
}

// RotateKey adds a new data-encryption key version.
func (c *Client) RotateKey(ctx context.Context) (api.RotateKeyResponse, error) {
	var res api.RotateKeyResponse
	err := c.do(ctx, http.MethodPost, "/v1/sys/rotate-key", nil, nil, &res)
	return res, err
}

// TokenSelf describes the token the client presents.
func (c *Client) TokenSelf(ctx context.Context) (identity.Token, error) {
	var t identity.Token
	err := c.do(ctx, http.MethodGet, "/v1/auth/token/self", nil, nil, &t)
	return t, err
}
