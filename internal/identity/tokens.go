// Package identity knows who is calling: it issues and checks the API
// tokens presented to the server.
//
// A token is shown once, when issued, as "wt1.<id>.<secret>". Only a SHA-256
// hash of the secret is stored; a lookup finds the row by id and compares
// hashes in constant time, so neither a database reader nor a timing
// observer learns a usable token.
package identity

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"time"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

//go:embed migrations
var migrations embed.FS

// Token is an issued API token, without its secret.
type Token struct {
	ID        string    `json:"id"`
	Subject   string    `json:"subject"` // who the token speaks for, e.g. "admin"
	Root      bool      `json:"root"`    // root tokens may do everything
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at,omitzero"` // zero: does not expire
}

// Actor is how the token's holder is named in audit events.
func (t Token) Actor() string { return "token:" + t.ID }

// Config configures a Directory.
type Config struct {
	DB     *store.DB        // required
	Logger *slog.Logger     // nil: discard
	Now    func() time.Time // nil: time.Now
}

// Directory issues and checks tokens.
type Directory struct {
	db     *store.DB
	logger *slog.Logger
	now    func() time.Time
}

// New migrates identity's tables and returns a Directory.
func New(ctx context.Context, cfg Config) (*Directory, error) {
	if cfg.DB == nil {
		return nil, errors.New("identity: no store")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if err := cfg.DB.Migrate(ctx, "identity", sub); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	return &Directory{db: cfg.DB, logger: cfg.Logger, now: cfg.Now}, nil
}

// TokenSpec says what a new token is for.
type TokenSpec struct {
	Subject string
	Root    bool
	TTL     time.Duration // 0: no expiry
}

const tokenPrefix = "wt1"

// IssueTx creates a token inside tx and returns its secret form, which is
// never stored and cannot be recovered.
func (d *Directory) IssueTx(ctx context.Context, tx *sql.Tx, spec TokenSpec) (string, Token, error) {
	if spec.Subject == "" {
		return "", Token{}, errkind.New(errkind.Invalid, "identity: token needs a subject")
	}
	idb := make([]byte, 9)
	secret := make([]byte, 32)
	rand.Read(idb)
	rand.Read(secret)
	now := d.now().UTC().Truncate(time.Microsecond)
	t := Token{ID: hex.EncodeToString(idb), Subject: spec.Subject, Root: spec.Root, CreatedAt: now}
	var exp int64
	if spec.TTL > 0 {
		t.ExpiresAt = now.Add(spec.TTL)
		exp = store.Micros(t.ExpiresAt)
	}
	enc := base64.RawURLEncoding.EncodeToString(secret)
	hash := sha256.Sum256([]byte(enc))
	_, err := tx.ExecContext(ctx, `INSERT INTO identity_tokens (id, secret_hash, subject, root, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)`,
		t.ID, hash[:], t.Subject, t.Root, store.Micros(now), exp)
	if err != nil {
		return "", Token{}, fmt.Errorf("identity: store token: %w", err)
	}
	return tokenPrefix + "." + t.ID + "." + enc, t, nil
}

// Issue creates a token in a transaction of its own.
func (d *Directory) Issue(ctx context.Context, spec TokenSpec) (secret string, t Token, err error) {
	err = d.db.InTx(ctx, func(tx *sql.Tx) error {
		secret, t, err = d.IssueTx(ctx, tx, spec)
		return err
	})
	return secret, t, err
}

// ErrBadToken is returned for a token that is malformed, unknown, wrong,
// expired or revoked: the caller learns no more than that.
var ErrBadToken = errkind.New(errkind.Unauthenticated, "identity: invalid or expired token")

// Authenticate checks a presented token. Every failure is ErrBadToken.
func (d *Directory) Authenticate(ctx context.Context, presented string) (Token, error) {
	id, secret, ok := parseToken(presented)
	if !ok {
		return Token{}, ErrBadToken
	}
	var (
		t                           Token
		hash                        []byte
		created, expires, revokedAt int64
	)
	err := d.db.QueryRowContext(ctx, `SELECT subject, root, secret_hash, created_at, expires_at, revoked_at FROM identity_tokens WHERE id = $1`, id).
		Scan(&t.Subject, &t.Root, &hash, &created, &expires, &revokedAt)
	want := sha256.Sum256([]byte(secret))
	if errors.Is(err, sql.ErrNoRows) {
		subtle.ConstantTimeCompare(want[:], want[:]) // same work as a found row
		return Token{}, ErrBadToken
	}
	if err != nil {
		return Token{}, fmt.Errorf("identity: look up token: %w", err)
	}
	if subtle.ConstantTimeCompare(want[:], hash) != 1 {
		return Token{}, ErrBadToken
	}
	now := d.now()
	if revokedAt != 0 || (expires != 0 && !now.Before(store.FromMicros(expires))) {
		return Token{}, ErrBadToken
	}
	t.ID = id
	t.CreatedAt = store.FromMicros(created)
	if expires != 0 {
		t.ExpiresAt = store.FromMicros(expires)
	}
	return t, nil
}

// Revoke makes a token unusable from the next request on.
func (d *Directory) Revoke(ctx context.Context, id string) error {
	res, err := d.db.ExecContext(ctx, `UPDATE identity_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at = 0`, store.Micros(d.now()), id)
	if err != nil {
		return fmt.Errorf("identity: revoke token: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errkind.New(errkind.NotFound, "identity: no active token %q", id)
	}
	return nil
}

// parseToken splits "wt1.<id>.<secret>" after checking its shape.
func parseToken(s string) (id, secret string, ok bool) {
	if len(s) > 256 {
		return "", "", false
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 || parts[0] != tokenPrefix || len(parts[1]) != 18 || len(parts[2]) != 43 {
		return "", "", false
	}
	if _, err := hex.DecodeString(parts[1]); err != nil {
		return "", "", false
	}
	if _, err := base64.RawURLEncoding.DecodeString(parts[2]); err != nil {
		return "", "", false
	}
	return parts[1], parts[2], true
}
