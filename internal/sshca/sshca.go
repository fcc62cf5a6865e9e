// Package sshca holds Warder's SSH keys — the user certificate authority
// and the SSH gateway's host key — and issues user certificates. It never
// holds key material: the keys are Ed25519 keys the barrier derives from
// the root key for a purpose, and the barrier signs. So the keys exist
// only while the server is unsealed, and stay the same for the life of
// the initialization.
package sshca

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// The barrier purposes of the SSH keys.
const (
	PurposeUserCA  = "ssh.user_ca"
	PurposeHostKey = "ssh.host"
)

// MaxUserCertTTL is the longest a user certificate is valid.
const MaxUserCertTTL = 8 * time.Hour

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
}

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
	var serial [8]byte
	if _, err := rand.Read(serial[:]); err != nil {
		return nil, fmt.Errorf("sshca: %w", err)
	}
	cert := &gossh.Certificate{
		Key:             key,
		Serial:          binary.BigEndian.Uint64(serial[:]),
		CertType:        gossh.UserCert,
		KeyId:           req.Principal,
		ValidPrincipals: []string{req.Principal},
		ValidAfter:      uint64(req.Now.Add(-time.Minute).Unix()),
		ValidBefore:     uint64(before.Unix()),
		Permissions: gossh.Permissions{Extensions: map[string]string{
			"permit-pty": "", "permit-user-rc": "",
		}},
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		return nil, fmt.Errorf("sshca: sign: %w", err)
	}
	return cert, nil
}
