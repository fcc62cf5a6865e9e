// Package hostkey decides whether an SSH server's host key is the one a
// target's settings accept: a pinned public key, a host certificate signed
// by the target's host CA, or either. Nothing is trusted on first use.
//
// A host certificate is accepted when it is of host type, signed by the
// CA, valid now, carries no critical option, and lists the host name the
// connection was made to among its principals; a certificate without
// principals (which OpenSSH would take as valid for any host) is refused.
package hostkey

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// ErrMismatch means a server presented a host key the target's settings
// do not accept. Check's errors wrap it.
var ErrMismatch = errors.New("hostkey: host key mismatch")

// Verifier accepts the host keys of one target. Its zero value accepts
// nothing. Fields are not modified by its methods.
type Verifier struct {
	// Pinned is the pinned host key. Nil: none.
	Pinned gossh.PublicKey
	// CA is the host CA. Nil: none.
	CA gossh.PublicKey
	// Now is the clock for certificate validity. Nil: time.Now.
	Now func() time.Time
}

// Parse returns the Verifier of a target's host_key and host_ca settings,
// each an authorized_keys line ("" for none). At least one is required;
// each must hold exactly one plain key (not a certificate).
func Parse(hostKey, hostCA string) (Verifier, error) {
	var v Verifier
	var err error
	if v.Pinned, err = parseOne("host_key", hostKey); err != nil {
		return Verifier{}, err
	}
	if v.CA, err = parseOne("host_ca", hostCA); err != nil {
		return Verifier{}, err
	}
	if v.Pinned == nil && v.CA == nil {
		return Verifier{}, errors.New("hostkey: a pinned host_key or a host_ca is required")
	}
	return v, nil
}

func parseOne(name, line string) (gossh.PublicKey, error) {
	line = strings.TrimSpace(line)
	if line == "" {
		return nil, nil
	}
	key, _, _, rest, err := gossh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return nil, fmt.Errorf("hostkey: %s: %w", name, err)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("hostkey: %s holds more than one key", name)
	}
	if _, ok := key.(*gossh.Certificate); ok {
		return nil, fmt.Errorf("hostkey: %s is a certificate, not a public key", name)
	}
	return key, nil
}

// Check is an ssh.HostKeyCallback: addr is the "host:port" the connection
// was made to (the address passed to ssh.Dial or ssh.NewClientConn), whose
// host a certificate must name. A refusal is a *MismatchError.
func (v Verifier) Check(addr string, _ net.Addr, key gossh.PublicKey) error {
	if v.Pinned != nil && equal(key, v.Pinned) {
		return nil
	}
	cert, isCert := key.(*gossh.Certificate)
	if v.CA == nil || !isCert {
		reason := "not the pinned host key"
		if v.Pinned == nil {
			reason = "not a host certificate"
		}
		return &MismatchError{Got: key, Pinned: v.Pinned, CA: v.CA, Reason: reason}
	}
	now := v.Now
	if now == nil {
		now = time.Now
	}
	checker := gossh.CertChecker{
		IsHostAuthority: func(k gossh.PublicKey, _ string) bool { return equal(k, v.CA) },
		Clock:           now,
	}
	err := checker.CheckHostKey(addr, nil, cert)
	if err == nil && len(cert.ValidPrincipals) == 0 {
		err = errors.New("the certificate names no host")
	}
	if err != nil {
		return &MismatchError{Got: key, Pinned: v.Pinned, CA: v.CA, Reason: strings.TrimPrefix(err.Error(), "ssh: ")}
	}
	return nil
}

// Certificate host key algorithms, then plain ones, in order of preference.
var (
	certAlgorithms = []string{
		gossh.CertAlgoED25519v01, gossh.CertAlgoECDSA256v01, gossh.CertAlgoECDSA384v01,
		gossh.CertAlgoECDSA521v01, gossh.CertAlgoRSASHA512v01, gossh.CertAlgoRSASHA256v01,
	}
	plainAlgorithms = []string{
		gossh.KeyAlgoED25519, gossh.KeyAlgoECDSA256, gossh.KeyAlgoECDSA384,
		gossh.KeyAlgoECDSA521, gossh.KeyAlgoRSASHA512, gossh.KeyAlgoRSASHA256,
	}
)

// Algorithms returns the host key algorithms to ask the server for
// (ssh.ClientConfig.HostKeyAlgorithms): with a CA, certificates first;
// with a pinned key, the pinned key's type, so that a server with several
// host keys presents that one; with a CA only, the plain types after the
// certificates, so that a server without a certificate is refused by Check
// (and reported as a mismatch) rather than failing the key exchange.
func (v Verifier) Algorithms() []string {
	var out []string
	if v.CA != nil {
		out = append(out, certAlgorithms...)
	}
	switch {
	case v.Pinned != nil && v.Pinned.Type() == gossh.KeyAlgoRSA:
		out = append(out, gossh.KeyAlgoRSASHA512, gossh.KeyAlgoRSASHA256, gossh.KeyAlgoRSA)
	case v.Pinned != nil:
		out = append(out, v.Pinned.Type())
	default:
		out = append(out, plainAlgorithms...)
	}
	return out
}

// MismatchError is a refused host key. It holds public keys only.
type MismatchError struct {
	Got    gossh.PublicKey // what the server presented
	Pinned gossh.PublicKey // the pinned key, or nil
	CA     gossh.PublicKey // the host CA, or nil
	Reason string
}

func (e *MismatchError) Error() string {
	var want []string
	if e.Pinned != nil {
		want = append(want, "the pinned host key "+e.Pinned.Type()+" "+gossh.FingerprintSHA256(e.Pinned))
	}
	if e.CA != nil {
		want = append(want, "a certificate of host CA "+gossh.FingerprintSHA256(e.CA))
	}
	return fmt.Sprintf("hostkey: host key mismatch: the server presented %s, want %s: %s",
		Describe(e.Got), strings.Join(want, " or "), e.Reason)
}

func (e *MismatchError) Unwrap() error { return ErrMismatch }

// Describe names a host key for logs: its type and fingerprint, and for a
// certificate the fingerprints of the certified key and of its signer.
func Describe(key gossh.PublicKey) string {
	if c, ok := key.(*gossh.Certificate); ok {
		return fmt.Sprintf("%s %s signed by %s", c.Type(), gossh.FingerprintSHA256(c.Key), gossh.FingerprintSHA256(c.SignatureKey))
	}
	return key.Type() + " " + gossh.FingerprintSHA256(key)
}

// Fingerprint is the SHA-256 fingerprint of key, or of the key a
// certificate certifies.
func Fingerprint(key gossh.PublicKey) string {
	if c, ok := key.(*gossh.Certificate); ok {
		return gossh.FingerprintSHA256(c.Key)
	}
	return gossh.FingerprintSHA256(key)
}

func equal(a, b gossh.PublicKey) bool { return bytes.Equal(a.Marshal(), b.Marshal()) }
