package api

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"net/http"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/dbca"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/identity"
)

// dbTargetKind is the target kind the database gateway serves.
const dbTargetKind = "postgres"

// DBInfo is the answer of GET /v1/sys/db: where the database gateway
// listens and the CA of its client certificates.
type DBInfo struct {
	Listen   string `json:"listen"`    // the gateway's address; "": no gateway
	ClientCA string `json:"client_ca"` // PEM; derived from the root key
}

// DBTokenRequest is the body of POST /v1/db/token.
type DBTokenRequest struct {
	Target  string `json:"target"`
	Account string `json:"account,omitempty"` // "": the gateway chooses (JIT grant, default account)
	TTL     string `json:"ttl,omitempty"`     // Go duration; "": 1h; at most 8h and the caller's token's expiry
}

// DBTokenResponse holds a database token: a password for the database
// gateway, valid only for the target and account asked for.
type DBTokenResponse struct {
	Token     string    `json:"token"` // secret, shown once
	TokenID   string    `json:"token_id"`
	ExpiresAt time.Time `json:"expires_at"`
	// User is the PostgreSQL user name to connect as: ACCOUNT@TARGET, or
	// TARGET when no account was named.
	User string `json:"user"`
	// Database is the target's database, the default when the client
	// names none.
	Database string `json:"database"`
	// Listen is the gateway's address; "": the server runs no gateway.
	Listen string `json:"listen"`
}

// DBCertificateRequest is the body of POST /v1/auth/db/certificate.
type DBCertificateRequest struct {
	PublicKey string `json:"public_key"` // PEM "PUBLIC KEY", ECDSA P-256
}

// DBCertificateResponse holds a client certificate for the database
// gateway, bound to the caller's token.
type DBCertificateResponse struct {
	Certificate string    `json:"certificate"` // PEM
	NotAfter    time.Time `json:"not_after"`
	ClientCA    string    `json:"client_ca"` // PEM of the issuing CA
}

// dbUser is the gateway user name for account of target.
func dbUser(target, account string) string {
	if account == "" {
		return target
	}
	return account + "@" + target
}

// dbToken issues the caller a database token for a PostgreSQL target it
// may connect to (the connect decision is asked, with via "db", and
// audited). The token expires with the caller's own at the latest and
// cannot be renewed; the API refuses it.
func (s *Server) dbToken(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decode[DBTokenRequest](r)
	if err != nil {
		return err
	}
	if req.Target == "" {
		return errkind.New(errkind.Invalid, "api: target is required")
	}
	ttl, err := parseDuration(req.TTL, "ttl")
	if err != nil {
		return err
	}
	res := authz.UID{Type: authz.TypeTarget, ID: req.Target}
	if req.Account != "" {
		res = authz.UID{Type: authz.TypeAccount, ID: req.Target + "/" + req.Account}
	}
	actx := c.authzContext()
	actx.Via = authz.ViaDB
	d, err := s.cfg.Authz.Authorize(r.Context(), c.origin(), authz.Request{
		Principal: principalUID(c.token.Principal), Action: authz.ActionConnect, Resource: res,
		Context: actx, Details: map[string]string{"route": c.route},
	})
	if err != nil {
		return err
	}
	if !d.Allow {
		return errkind.New(errkind.Denied, "api: %s may not connect to %s", c.token.Actor(), res)
	}
	t, err := s.cfg.Vault.Target(r.Context(), req.Target)
	if err != nil {
		return err
	}
	if t.Kind != dbTargetKind {
		return errkind.New(errkind.Invalid, "api: target %q is a %s target; the database gateway serves postgres targets", t.Name, t.Kind)
	}
	secret, tok, err := s.cfg.Identity.IssueDBToken(r.Context(), c.origin(), c.token,
		identity.DBTokenSpec{Target: req.Target, Account: req.Account, TTL: ttl})
	if err != nil {
		return err
	}
	db := t.Options["database"]
	if db == "" {
		db = "postgres"
	}
	out := DBTokenResponse{Token: secret, TokenID: tok.ID, ExpiresAt: tok.ExpiresAt, User: dbUser(req.Target, req.Account), Database: db}
	if s.cfg.DBListen != nil {
		out.Listen = s.cfg.DBListen()
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, out)
}

// dbCertificate issues the caller a client certificate for the database
// gateway, for its ECDSA P-256 key: common name the principal's name,
// bound to the caller's token, valid no longer than it (and at most
// dbca.MaxClientCertTTL). Audited "db.certificate.issue".
func (s *Server) dbCertificate(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decode[DBCertificateRequest](r)
	if err != nil {
		return err
	}
	pub, err := dbca.ParsePublicKey(req.PublicKey)
	if err != nil {
		return errkind.New(errkind.Invalid, "api: public_key: %w", err)
	}
	ca, err := dbca.New(r.Context(), s.cfg.Barrier)
	if err != nil {
		return err
	}
	cert, err := ca.Issue(dbca.ClientCert{PublicKey: pub, User: c.token.Principal.Name, TokenID: c.token.ID,
		Now: time.Now(), NotAfter: c.token.ExpiresAt})
	if err != nil {
		return errkind.New(errkind.Invalid, "api: %w", err)
	}
	spki, _ := x509.MarshalPKIXPublicKey(pub)
	fp := sha256.Sum256(spki)
	ev := c.origin().Event("db.certificate.issue", c.token.Actor(), audit.OutcomeSuccess, map[string]string{
		"serial":      cert.SerialNumber.Text(16),
		"fingerprint": "SHA256:" + hex.EncodeToString(fp[:]),
		"token":       c.token.ID,
		"not_after":   cert.NotAfter.UTC().Format(time.RFC3339),
	})
	if _, err := s.cfg.Audit.Append(r.Context(), ev); err != nil {
		return err
	}
	return writeJSON(w, DBCertificateResponse{
		Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})),
		NotAfter:    cert.NotAfter.UTC(),
		ClientCA:    string(ca.PEM()),
	})
}

// dbInfo reports the database gateway's address and client CA; the CA
// derives from the root key, so it answers 503 sealed.
func (s *Server) dbInfo(w http.ResponseWriter, r *http.Request, c *call) error {
	ca, err := dbca.New(r.Context(), s.cfg.Barrier)
	if err != nil {
		return err
	}
	info := DBInfo{ClientCA: string(ca.PEM())}
	if s.cfg.DBListen != nil {
		info.Listen = s.cfg.DBListen()
	}
	return writeJSON(w, info)
}
