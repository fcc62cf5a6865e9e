package client

import (
	"context"
	"net/http"

	"github.com/warderhq/warder/internal/barrier"
)

// HealthResponse answers GET /v1/sys/health.
type HealthResponse struct {
	Initialized bool   `json:"initialized"`
	Sealed      bool   `json:"sealed"`
	Version     string `json:"version"`
}

// InitRequest is the body of POST /v1/sys/init.
type InitRequest struct {
	Shares    int  `json:"shares"`
	Threshold int  `json:"threshold"`
	KeyFile   bool `json:"key_file"` // also return the whole unseal key
}

// InitResponse holds the secrets of a new server, shown only once.
type InitResponse struct {
	Shares     []string `json:"shares"`
	AdminToken string   `json:"admin_token"`
	UnsealKey  string   `json:"unseal_key,omitempty"`
}

// unsealRequest is the body of POST /v1/sys/unseal.
type unsealRequest struct {
	Share string `json:"share,omitempty"`
	Reset bool   `json:"reset,omitempty"`
}

// RotateKeyResponse answers POST /v1/sys/rotate-key.
type RotateKeyResponse struct {
	KeyVersion uint32 `json:"key_version"`
}

// SealStatus reports whether the server is initialised and sealed, and the
// unseal progress.
func (c *Client) SealStatus(ctx context.Context) (barrier.Status, error) {
	var st barrier.Status
	err := c.do(ctx, http.MethodGet, "/v1/sys/seal-status", nil, nil, &st)
	return st, err
}

// Health reports the server's health; a sealed or uninitialised server is
// not an error here.
func (c *Client) Health(ctx context.Context) (HealthResponse, error) {
	var h HealthResponse
	err := c.do(ctx, http.MethodGet, "/v1/sys/health", nil, nil, &h, http.StatusServiceUnavailable, http.StatusNotImplemented)
	return h, err
}

// Init initialises the server. The answer holds secrets shown only once.
func (c *Client) Init(ctx context.Context, req InitRequest) (InitResponse, error) {
	var res InitResponse
	err := c.do(ctx, http.MethodPost, "/v1/sys/init", nil, req, &res)
	return res, err
}

// Unseal submits one share.
func (c *Client) Unseal(ctx context.Context, share string) (barrier.Status, error) {
	var st barrier.Status
	err := c.do(ctx, http.MethodPost, "/v1/sys/unseal", nil, unsealRequest{Share: share}, &st)
	return st, err
}

// ResetUnseal discards the shares submitted so far.
func (c *Client) ResetUnseal(ctx context.Context) (barrier.Status, error) {
	var st barrier.Status
	err := c.do(ctx, http.MethodPost, "/v1/sys/unseal", nil, unsealRequest{Reset: true}, &st)
	return st, err
}

// Seal seals the server.
func (c *Client) Seal(ctx context.Context) (barrier.Status, error) {
	var st barrier.Status
	err := c.do(ctx, http.MethodPost, "/v1/sys/seal", nil, nil, &st)
	return st, err
}

// RotateKey adds a new data-encryption key version.
func (c *Client) RotateKey(ctx context.Context) (RotateKeyResponse, error) {
	var res RotateKeyResponse
	err := c.do(ctx, http.MethodPost, "/v1/sys/rotate-key", nil, nil, &res)
	return res, err
}
