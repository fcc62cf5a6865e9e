// Package dbca is the certificate authority of the database gateway's
// client certificates: `warder login` sends the public half of a key the
// CLI generated, and gets an X.509 certificate that authenticates
// PostgreSQL clients to the gateway without a password.
//
// Like package sshca it holds no long-lived key material: the CA key is
// the Ed25519 key the barrier derives from the root key for
// PurposeClientCA, and the barrier signs. The CA certificate is built
// deterministically from that key (fixed subject, serial, validity and key
// identifiers, and Ed25519 signatures are deterministic), so every server
// process sharing a database derives the same certificate, byte for byte,
// for the life of the initialization.
//
// A client certificate names its user in the subject's common name and is
// bound to the login token it was issued for by a URI SAN
// "urn:warder:token:<token id>"; it expires with that token. The gateway
// accepts it only while the token is live and its user active, so logging
// out or disabling the user ends it at once.
package dbca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/url"
	"strings"
	"time"
)

// PurposeClientCA is the barrier purpose of the CA key.
const PurposeClientCA = "db.client_ca"

// MaxClientCertTTL is the longest a client certificate is valid, whatever
// its token's expiry (a login token lives at most 24 hours).
const MaxClientCertTTL = 24 * time.Hour

// tokenURIPrefix begins the URI SAN that binds a certificate to a token.
const tokenURIPrefix = "urn:warder:token:"

// caNotBefore and caNotAfter are the CA certificate's fixed validity: the
// CA lives as long as the initialization, whose root key it derives from.
var (
	caNotBefore = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	caNotAfter  = time.Date(2125, 1, 1, 0, 0, 0, 0, time.UTC)
)

// Errors callers branch on.
var (
	// ErrInvalidKey means a public key offered for certification is not a
	// PEM "PUBLIC KEY" block holding an ECDSA P-256 key.
	ErrInvalidKey = errors.New("dbca: not a PEM ECDSA P-256 public key")
	// ErrNotClientCert means a certificate does not name a user and a
	// token as this CA issues them.
	ErrNotClientCert = errors.New("dbca: not a Warder database client certificate")
)

// Barrier signs with keys derived per purpose; *barrier.Barrier
// implements it.
type Barrier interface {
	Sign(ctx context.Context, purpose string, msg []byte) ([]byte, error)
	PublicKey(ctx context.Context, purpose string) (ed25519.PublicKey, error)
}

// Authority is the client CA of one initialization.
type Authority struct {
	cert   *x509.Certificate
	signer barrierSigner
}

// New derives the CA from b. It fails with the barrier's error when
// sealed; Issue fails if the barrier is sealed afterwards.
func New(ctx context.Context, b Barrier) (*Authority, error) {
	pub, err := b.PublicKey(ctx, PurposeClientCA)
	if err != nil {
		return nil, err
	}
	s := barrierSigner{b: b, pub: pub}
	der, err := x509.CreateCertificate(rand.Reader, caTemplate(pub), caTemplate(pub), pub, s)
	if err != nil {
		return nil, fmt.Errorf("dbca: CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("dbca: CA certificate: %w", err)
	}
	return &Authority{cert: cert, signer: s}, nil
}

// caTemplate is the CA certificate of pub: every field fixed or derived
// from pub, so that it is the same in every process.
func caTemplate(pub ed25519.PublicKey) *x509.Certificate {
	sum := sha256.Sum256(pub)
	serial := new(big.Int).SetBytes(sum[:16]) // positive: SetBytes is unsigned
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Warder"}, CommonName: "Warder database client CA"},
		NotBefore:             caNotBefore,
		NotAfter:              caNotAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          sum[:20], // set, so no Go version derives another
	}
}

// Certificate returns the CA certificate.
func (a *Authority) Certificate() *x509.Certificate { return a.cert }

// PEM returns the CA certificate in PEM.
func (a *Authority) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.cert.Raw})
}

// Pool returns a pool holding only the CA certificate, for
// tls.Config.ClientCAs.
func (a *Authority) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(a.cert)
	return p
}

// ClientCert describes a client certificate to issue.
type ClientCert struct {
	// PublicKey is the client's key: an ECDSA P-256 public key.
	PublicKey crypto.PublicKey
	// User is the user's name: the subject's common name.
	User string
	// TokenID is the id of the login token the certificate is bound to.
	TokenID string
	// Now is the issue time; the certificate is valid from a minute
	// before, for clock skew.
	Now time.Time
	// NotAfter ends the certificate's validity (the token's expiry); it is
	// capped at Now+MaxClientCertTTL. Zero: the cap.
	NotAfter time.Time
}

// Issue signs a client certificate for req: usable only for TLS client
// authentication, with a random 128-bit serial.
func (a *Authority) Issue(req ClientCert) (*x509.Certificate, error) {
	k, ok := req.PublicKey.(*ecdsa.PublicKey)
	if !ok || k.Curve != elliptic.P256() {
		return nil, ErrInvalidKey
	}
	if req.User == "" || strings.ContainsFunc(req.User, func(c rune) bool { return c < ' ' || c == 0x7f }) {
		return nil, errors.New("dbca: a client certificate needs a printable user name")
	}
	u, err := url.Parse(tokenURIPrefix + req.TokenID)
	if err != nil || req.TokenID == "" || strings.ContainsAny(req.TokenID, ":/?#") {
		return nil, errors.New("dbca: a client certificate needs a token id")
	}
	before := req.NotAfter
	if limit := req.Now.Add(MaxClientCertTTL); before.IsZero() || before.After(limit) {
		before = limit
	}
	if !before.After(req.Now) {
		return nil, errors.New("dbca: the certificate would expire before it is issued")
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("dbca: serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"Warder"}, CommonName: req.User},
		URIs:         []*url.URL{u},
		NotBefore:    req.Now.Add(-time.Minute),
		NotAfter:     before,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, k, a.signer)
	if err != nil {
		return nil, fmt.Errorf("dbca: issue: %w", err)
	}
	return x509.ParseCertificate(der)
}

// Identify returns the user and token id a client certificate issued by
// Issue names. It does not verify the certificate: the caller verifies
// the chain to the CA (the gateway's TLS handshake does) first.
func Identify(cert *x509.Certificate) (user, tokenID string, err error) {
	user = cert.Subject.CommonName
	for _, u := range cert.URIs {
		if s := u.String(); strings.HasPrefix(s, tokenURIPrefix) {
			if tokenID != "" {
				return "", "", ErrNotClientCert // two bindings: not ours
			}
			tokenID = strings.TrimPrefix(s, tokenURIPrefix)
		}
	}
	if user == "" || tokenID == "" {
		return "", "", ErrNotClientCert
	}
	return user, tokenID, nil
}

// ParsePublicKey parses a PEM "PUBLIC KEY" block (PKIX) holding an ECDSA
// P-256 key, as the CLI sends it. Anything else is ErrInvalidKey.
func ParsePublicKey(data string) (*ecdsa.PublicKey, error) {
	block, rest := pem.Decode([]byte(data))
	if block == nil || block.Type != "PUBLIC KEY" || strings.TrimSpace(string(rest)) != "" {
		return nil, ErrInvalidKey
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, ErrInvalidKey
	}
	ek, ok := k.(*ecdsa.PublicKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, ErrInvalidKey
	}
	return ek, nil
}

// barrierSigner is a crypto.Signer whose Ed25519 key stays in the barrier.
type barrierSigner struct {
	b   Barrier
	pub ed25519.PublicKey
}

func (s barrierSigner) Public() crypto.PublicKey { return s.pub }

// Sign signs msg whole (Ed25519 hashes internally); rand is unused.
func (s barrierSigner) Sign(_ io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts.HashFunc() != 0 {
		return nil, errors.New("dbca: Ed25519 signs the message, not a digest")
	}
	return s.b.Sign(context.Background(), PurposeClientCA, msg)
}
