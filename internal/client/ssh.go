package client

import (
	"context"
	"net/http"
	"time"
)

// SSHInfo describes Warder's SSH keys and gateway.
type SSHInfo struct {
	UserCA  string `json:"user_ca"`  // authorized_keys line
	HostKey string `json:"host_key"` // authorized_keys line of the gateway's host key
	// HostCAKey certifies the gateway's host key under target names for
	// ProxyJump ("@cert-authority *.warder KEY" in known_hosts). "": a
	// server that predates it.
	HostCAKey string `json:"host_ca_key"`
	// AccessCAKey is the host-access CA, for sshd's TrustedUserCAKeys on
	// targets with ssh_auth=certificate. "": a server that predates it.
	AccessCAKey string `json:"access_ca_key"`
	Listen      string `json:"listen"` // the gateway's address; "": no gateway
}

// SSHCertificate is a user certificate for the caller.
type SSHCertificate struct {
	Certificate string    `json:"certificate"` // authorized_keys format
	ValidBefore time.Time `json:"valid_before"`
}

// SSHInfo returns the SSH keys and the gateway's address. The keys exist
// only while the server is unsealed.
func (c *Client) SSHInfo(ctx context.Context) (SSHInfo, error) {
	var info SSHInfo
	err := c.do(ctx, http.MethodGet, "/v1/sys/ssh", nil, nil, &info)
	return info, err
}

// SSHCertificate asks for a user certificate for publicKey (authorized_keys
// format), valid no longer than the token.
func (c *Client) SSHCertificate(ctx context.Context, publicKey string) (SSHCertificate, error) {
	var cert SSHCertificate
	err := c.do(ctx, http.MethodPost, "/v1/auth/ssh/certificate", nil, map[string]string{"public_key": publicKey}, &cert)
	return cert, err
}
