package client

import (
	"context"
	"net/http"
	"time"
)

// DBInfo describes the database gateway.
type DBInfo struct {
	Listen   string `json:"listen"`    // the gateway's address; "": no gateway
	ClientCA string `json:"client_ca"` // PEM of the CA of client certificates
}

// DBTokenRequest asks for a database token.
type DBTokenRequest struct {
	Target  string `json:"target"`
	Account string `json:"account,omitempty"` // "": the gateway chooses
	TTL     string `json:"ttl,omitempty"`     // Go duration; "": the server's default (1h)
}

// DBToken is a database token: the password of one connection name at
// the database gateway. Token is secret.
type DBToken struct {
	Token     string    `json:"token"`
	TokenID   string    `json:"token_id"`
	ExpiresAt time.Time `json:"expires_at"`
	User      string    `json:"user"`     // ACCOUNT@TARGET or TARGET
	Database  string    `json:"database"` // the target's database
	Listen    string    `json:"listen"`   // the gateway's address; "": no gateway
}

// DBCertificate is a client certificate for the database gateway.
type DBCertificate struct {
	Certificate string    `json:"certificate"` // PEM
	NotAfter    time.Time `json:"not_after"`
	ClientCA    string    `json:"client_ca"` // PEM
}

// DBInfo returns the database gateway's address and client CA. The CA
// exists only while the server is unsealed.
func (c *Client) DBInfo(ctx context.Context) (DBInfo, error) {
	var info DBInfo
	err := c.do(ctx, http.MethodGet, "/v1/sys/db", nil, nil, &info)
	return info, err
}

// DBToken asks for a database token for req's target and account.
func (c *Client) DBToken(ctx context.Context, req DBTokenRequest) (DBToken, error) {
	var t DBToken
	err := c.do(ctx, http.MethodPost, "/v1/db/token", nil, req, &t)
	return t, err
}

// DBCertificate asks for a client certificate for publicKey (PEM "PUBLIC
// KEY", ECDSA P-256), bound to the client's token and valid no longer.
func (c *Client) DBCertificate(ctx context.Context, publicKey string) (DBCertificate, error) {
	var cert DBCertificate
	err := c.do(ctx, http.MethodPost, "/v1/auth/db/certificate", nil, map[string]string{"public_key": publicKey}, &cert)
	return cert, err
}
