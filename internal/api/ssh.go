package api

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/sshca"
)

// SSHCertificateRequest is the body of POST /v1/auth/ssh/certificate.
type SSHCertificateRequest struct {
	PublicKey string `json:"public_key"` // authorized_keys format
}

// SSHCertificateResponse holds a user certificate for the caller.
type SSHCertificateResponse struct {
	Certificate string    `json:"certificate"` // authorized_keys format, "ssh-ed25519-cert-v01@openssh.com AAAA…"
	ValidBefore time.Time `json:"valid_before"`
}

// SSHInfo is the answer of GET /v1/sys/ssh: what an SSH client needs to
// trust the gateway and what the gateway trusts.
type SSHInfo struct {
	UserCA  string `json:"user_ca"`  // authorized_keys line
	HostKey string `json:"host_key"` // authorized_keys line of the gateway's host key
	// HostCAKey certifies the gateway's host key under target names
	// ("web1.warder") for ProxyJump: clients trust it with
	// "@cert-authority *.warder KEY" in known_hosts.
	HostCAKey string `json:"host_ca_key"`
	// AccessCAKey is the host-access CA: targets with ssh_auth=certificate
	// trust it in sshd's TrustedUserCAKeys.
	AccessCAKey string `json:"access_ca_key"`
	Listen      string `json:"listen"` // the gateway's address; "": no gateway
}

// sshCertificate issues the caller a user certificate valid no longer than
// its token, and at most sshca.MaxUserCertTTL.
func (s *Server) sshCertificate(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decode[SSHCertificateRequest](r)
	if err != nil {
		return err
	}
	ca, err := sshca.Signer(r.Context(), s.cfg.Barrier, sshca.PurposeUserCA)
	if err != nil {
		return err
	}
	now := time.Now()
	principal := c.token.Actor()
	cert, err := sshca.IssueUserCert(ca, sshca.UserCert{
		Key: req.PublicKey, Principal: principal, Now: now, ValidBefore: c.token.ExpiresAt, TokenID: c.token.ID,
	})
	if err != nil {
		return errkind.New(errkind.Invalid, "api: public_key: %w", err)
	}
	before := time.Unix(int64(cert.ValidBefore), 0).UTC()
	ev := c.origin().Event("ssh.certificate.issue", principal, audit.OutcomeSuccess, map[string]string{
		"serial":       strconv.FormatUint(cert.Serial, 10),
		"fingerprint":  gossh.FingerprintSHA256(cert.Key),
		"valid_before": before.Format(time.RFC3339),
	})
	if _, err := s.cfg.Audit.Append(r.Context(), ev); err != nil {
		return err
	}
	return writeJSON(w, SSHCertificateResponse{
		Certificate: strings.TrimSpace(string(gossh.MarshalAuthorizedKey(cert))),
		ValidBefore: before,
	})
}

// sshInfo reports the SSH keys; they are derived from the root key, so it
// answers 503 sealed.
func (s *Server) sshInfo(w http.ResponseWriter, r *http.Request, c *call) error {
	var info SSHInfo
	if s.cfg.SSHListen != nil {
		info.Listen = s.cfg.SSHListen()
	}
	for _, k := range []struct {
		purpose string
		dst     *string
	}{
		{sshca.PurposeUserCA, &info.UserCA}, {sshca.PurposeHostKey, &info.HostKey},
		{sshca.PurposeHostCA, &info.HostCAKey}, {sshca.PurposeAccessCA, &info.AccessCAKey},
	} {
		sg, err := sshca.Signer(r.Context(), s.cfg.Barrier, k.purpose)
		if err != nil {
			return err
		}
		*k.dst = strings.TrimSpace(string(gossh.MarshalAuthorizedKey(sg.PublicKey())))
	}
	return writeJSON(w, info)
}
