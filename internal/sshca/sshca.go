// Package sshca holds Warder's SSH keys — the user certificate authority,
// the SSH gateway's host key, the host CA that certifies the gateway under
// target names (ProxyJump) and the host-access CA that targets trust for
// logins — and issues certificates with them. It never holds long-lived
// key material: the keys are Ed25519 keys the barrier derives from the
// root key for a purpose, and the barrier signs. So the keys exist only
// while the server is unsealed, and stay the same for the life of the
// initialization. The one private key it makes, the ephemeral key of an
// access login (NewAccessLogin), lives only in the returned signer.
package sshca

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// The barrier purposes of the SSH keys.
const (
	PurposeUserCA  = "ssh.user_ca"
	PurposeHostKey = "ssh.host"
	// PurposeHostCA signs the gateway's host certificates, presented to
	// clients that reach a target through the gateway with ProxyJump.
	PurposeHostCA = "ssh.host_ca"
	// PurposeAccessCA signs the ephemeral user certificates the gateway
	// logs in to targets with (sshd's TrustedUserCAKeys).
	PurposeAccessCA = "ssh.access_ca"
)

// Limits on certificate lifetimes.
const (
	// MaxUserCertTTL is the longest a user certificate is valid.
	MaxUserCertTTL = 8 * time.Hour
	// MaxHostCertTTL is the longest a gateway host certificate is valid:
	// clients check it only during the handshake.
	MaxHostCertTTL = time.Hour
	// MaxAccessCertTTL is the longest an access certificate is valid.
	MaxAccessCertTTL = time.Hour
)

// Barrier signs with keys derived per purpose. *barrier.Barrier
// implements it.
type Barrier interface {
	Sign(ctx context.Context, purpose string, msg []byte) ([]byte, error)
	PublicKey(ctx context.Context, purpose string) (ed25519.PublicKey, error)
}

// Signer returns an ssh.Signer for the barrier's key of purpose. It fails
// with the barrier's error when sealed; Sign on the returned signer fails
// if the barrier is sealed afterwards.
func Signer(ctx context.Context, b Barrier, purpose string) (gossh.Signer, error) {
	pub, err := b.PublicKey(ctx, purpose)
	if err != nil {
		return nil, err
	}
	sp, err := gossh.NewPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("sshca: %w", err)
	}
	return barrierSigner{b: b, purpose: purpose, pub: sp}, nil
}

// barrierSigner is an ssh.Signer whose private key stays in the barrier.
type barrierSigner struct {
	b       Barrier
	purpose string
	pub     gossh.PublicKey
}

func (s barrierSigner) PublicKey() gossh.PublicKey { return s.pub }

// Sign ignores rand: Ed25519 signatures are deterministic.
func (s barrierSigner) Sign(_ io.Reader, data []byte) (*gossh.Signature, error) {
	sig, err := s.b.Sign(context.Background(), s.purpose, data)
	if err != nil {
		return nil, err
	}
	return &gossh.Signature{Format: gossh.KeyAlgoED25519, Blob: sig}, nil
}

// ErrInvalidKey means a public key offered for certification is not one.
var ErrInvalidKey = errors.New("sshca: not an SSH public key")

// UserCert describes a user certificate to issue.
type UserCert struct {
	// Key is the user's public key, in authorized_keys format.
	Key string
	// Principal is the certificate's principal and key id, "user:NAME"
	// or "machine:NAME".
	Principal string
	// Now is the issue time; the certificate is valid from a minute
	// before, for clock skew.
	Now time.Time
	// ValidBefore ends the certificate's validity; it is capped at
	// Now+MaxUserCertTTL.
	ValidBefore time.Time
	// TokenID, if set, binds the certificate to the login token it was
	// issued to (extension TokenExt): the gateway refuses it, and ends its
	// sessions, once that token is revoked or expired (logout).
	TokenID string
}

// TokenExt is the user-certificate extension naming the login token the
// certificate is bound to. Only Warder's gateway reads it; OpenSSH ignores
// unknown extensions.
const TokenExt = "warder-token@warder"

// IssueUserCert signs a user certificate with ca. It permits a pty and
// the user's rc file only: no forwarding of any kind, no X11.
func IssueUserCert(ca gossh.Signer, req UserCert) (*gossh.Certificate, error) {
	key, _, _, rest, err := gossh.ParseAuthorizedKey([]byte(req.Key))
	if err != nil || len(rest) > 0 {
		return nil, ErrInvalidKey
	}
	if _, ok := key.(*gossh.Certificate); ok {
		return nil, ErrInvalidKey
	}
	if req.Principal == "" {
		return nil, errors.New("sshca: a certificate needs a principal")
	}
	before := req.ValidBefore
	if limit := req.Now.Add(MaxUserCertTTL); before.IsZero() || before.After(limit) {
		before = limit
	}
	if !before.After(req.Now) {
		return nil, errors.New("sshca: the certificate would already have expired")
	}
	cert := &gossh.Certificate{
		Key:             key,
		Serial:          randomSerial(),
		CertType:        gossh.UserCert,
		KeyId:           req.Principal,
		ValidPrincipals: []string{req.Principal},
		ValidAfter:      uint64(req.Now.Add(-time.Minute).Unix()),
		ValidBefore:     uint64(before.Unix()),
		Permissions: gossh.Permissions{Extensions: map[string]string{
			"permit-pty": "", "permit-user-rc": "",
		}},
	}
	if req.TokenID != "" {
		cert.Permissions.Extensions[TokenExt] = req.TokenID
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		return nil, fmt.Errorf("sshca: sign: %w", err)
	}
	return cert, nil
}

// HostCert describes a host certificate to issue.
type HostCert struct {
	// Key is the host's public key (the gateway's host key).
	Key gossh.PublicKey
	// Principals are the host names the certificate is valid for; at
	// least one.
	Principals []string
	// Now is the issue time; the certificate is valid from a minute
	// before, for clock skew.
	Now time.Time
	// TTL is how long the certificate is valid after Now; zero or more
	// than MaxHostCertTTL: MaxHostCertTTL.
	TTL time.Duration
}

// IssueHostCert signs a host certificate with ca. It carries no critical
// options or extensions.
func IssueHostCert(ca gossh.Signer, req HostCert) (*gossh.Certificate, error) {
	if req.Key == nil {
		return nil, ErrInvalidKey
	}
	if _, ok := req.Key.(*gossh.Certificate); ok {
		return nil, ErrInvalidKey
	}
	if len(req.Principals) == 0 {
		return nil, errors.New("sshca: a host certificate needs a principal")
	}
	for _, p := range req.Principals {
		if p == "" || strings.ContainsAny(p, " \t\r\n,*?") {
			return nil, fmt.Errorf("sshca: invalid host principal %q", p)
		}
	}
	ttl := req.TTL
	if ttl <= 0 || ttl > MaxHostCertTTL {
		ttl = MaxHostCertTTL
	}
	cert := &gossh.Certificate{
		Key:             req.Key,
		Serial:          randomSerial(),
		CertType:        gossh.HostCert,
		KeyId:           "warder-gateway",
		ValidPrincipals: append([]string(nil), req.Principals...),
		ValidAfter:      uint64(req.Now.Add(-time.Minute).Unix()),
		ValidBefore:     uint64(req.Now.Add(ttl).Unix()),
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		return nil, fmt.Errorf("sshca: sign: %w", err)
	}
	return cert, nil
}

// AccessCert describes the certificate of an access login: Warder logging
// in to a target account for a person.
type AccessCert struct {
	// Account is the login name on the target: the certificate's only
	// principal.
	Account string
	// KeyID names who the login is for and which one, e.g.
	// "warder:user:alice:3f2a…"; sshd logs it with every login.
	KeyID string
	// Now is the issue time; the certificate is valid from a minute
	// before, for clock skew.
	Now time.Time
	// ValidBefore ends the validity; zero or later than
	// Now+MaxAccessCertTTL: Now+MaxAccessCertTTL.
	ValidBefore time.Time
}

// AccessLogin is a fresh key with its access certificate.
type AccessLogin struct {
	// Signer signs with the ephemeral private key and presents the
	// certificate: pass it to gossh.PublicKeys. The private key exists
	// only inside it.
	Signer gossh.Signer
	// Cert is the certificate (public).
	Cert *gossh.Certificate
}

// NewAccessLogin generates an Ed25519 key and signs a user certificate for
// it with ca (the host-access CA). The certificate permits a pty only: no
// port, agent or X11 forwarding, no user rc file.
func NewAccessLogin(ca gossh.Signer, req AccessCert) (AccessLogin, error) {
	if req.Account == "" || strings.ContainsAny(req.Account, " \t\r\n,") {
		return AccessLogin{}, fmt.Errorf("sshca: invalid account name %q", req.Account)
	}
	if req.KeyID == "" {
		return AccessLogin{}, errors.New("sshca: an access certificate needs a key id")
	}
	before := req.ValidBefore
	if limit := req.Now.Add(MaxAccessCertTTL); before.IsZero() || before.After(limit) {
		before = limit
	}
	if !before.After(req.Now) {
		return AccessLogin{}, errors.New("sshca: the certificate would already have expired")
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return AccessLogin{}, fmt.Errorf("sshca: %w", err)
	}
	key, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		return AccessLogin{}, fmt.Errorf("sshca: %w", err)
	}
	spub, err := gossh.NewPublicKey(pub)
	if err != nil {
		return AccessLogin{}, fmt.Errorf("sshca: %w", err)
	}
	cert := &gossh.Certificate{
		Key:             spub,
		Serial:          randomSerial(),
		CertType:        gossh.UserCert,
		KeyId:           req.KeyID,
		ValidPrincipals: []string{req.Account},
		ValidAfter:      uint64(req.Now.Add(-time.Minute).Unix()),
		ValidBefore:     uint64(before.Unix()),
		Permissions:     gossh.Permissions{Extensions: map[string]string{"permit-pty": ""}},
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		return AccessLogin{}, fmt.Errorf("sshca: sign: %w", err)
	}
	signer, err := gossh.NewCertSigner(cert, key)
	if err != nil {
		return AccessLogin{}, fmt.Errorf("sshca: %w", err)
	}
	return AccessLogin{Signer: signer, Cert: cert}, nil
}

// randomSerial returns a random certificate serial number.
func randomSerial() uint64 {
	var b [8]byte
	rand.Read(b[:]) // crypto/rand.Read does not fail
	return binary.BigEndian.Uint64(b[:])
}
