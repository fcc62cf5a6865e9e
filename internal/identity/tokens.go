package identity

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// Token is an issued API token, without its secret.
type Token struct {
	ID        string    `json:"id"`
	Principal Principal `json:"principal"`
	// MFA is true when the login that issued the token verified a second
	// factor, at MFAAt.
	MFA          bool      `json:"mfa"`
	MFAAt        time.Time `json:"mfa_at,omitzero"`
	CreatedAt    time.Time `json:"created_at"`
	ExpiresAt    time.Time `json:"expires_at,omitzero"`     // zero: does not expire (bootstrap token only)
	MaxExpiresAt time.Time `json:"max_expires_at,omitzero"` // Renew never extends beyond it
	Bootstrap    bool      `json:"bootstrap,omitempty"`     // the token made by operator init
	// Scope, when set, limits the token to one use outside the API: the
	// API refuses it, and the component it is scoped to checks it (see
	// DBScope). "": an API token.
	Scope string `json:"scope,omitempty"`
}

// Actor is how the token's holder is named in audit events.
func (t Token) Actor() string { return t.Principal.Actor() }

// TokenSpec says what a new token is for.
type TokenSpec struct {
	Principal Principal
	// TTL is the token's lifetime, and what Renew extends it by. Zero: no
	// expiry, allowed only with Bootstrap.
	TTL time.Duration
	// MaxTTL caps renewals, counted from issue. Zero: TTL (not renewable).
	MaxTTL time.Duration
	// MFAAt is when a second factor was verified; zero if none was.
	MFAAt     time.Time
	Bootstrap bool
	// Scope limits the token (see Token.Scope). "": an API token.
	Scope string
	// Parent is the id of the token that asked for this one: revoking the
	// parent revokes it. "": none.
	Parent string
	// NotAfter caps the token's expiry and maximum expiry. Zero: no cap.
	NotAfter time.Time
}

// Secret forms: "<prefix>.<18 hex id>.<43 base64url secret>".
const (
	tokenPrefix    = "wt1"
	secretIDPrefix = "wsi1"
	idBytes        = 9
	secretBytes    = 32
)

// newSecret returns a fresh id, its secret form with prefix, and the
// SHA-256 of the secret part.
func newSecret(prefix string) (id, presented string, hash []byte) {
	idb := make([]byte, idBytes)
	secret := make([]byte, secretBytes)
	rand.Read(idb)
	rand.Read(secret)
	id = hex.EncodeToString(idb)
	enc := base64.RawURLEncoding.EncodeToString(secret)
	h := sha256.Sum256([]byte(enc))
	return id, prefix + "." + id + "." + enc, h[:]
}

// IssueTx creates a token inside tx and returns its secret form, which is
// never stored and cannot be recovered. The principal must exist and be
// active (checked in tx). IssueTx writes no audit event: the caller audits
// the operation the token is part of (login, init).
func (d *Directory) IssueTx(ctx context.Context, tx *sql.Tx, spec TokenSpec) (string, Token, error) {
	switch {
	case !spec.Principal.valid():
		return "", Token{}, errkind.New(errkind.Invalid, "identity: token needs a user or machine principal")
	case spec.TTL < 0 || spec.MaxTTL < 0:
		return "", Token{}, errkind.New(errkind.Invalid, "identity: negative token TTL")
	case spec.TTL == 0 && !spec.Bootstrap:
		return "", Token{}, errkind.New(errkind.Invalid, "identity: only the bootstrap token may live forever")
	case spec.TTL == 0 && spec.MaxTTL != 0:
		return "", Token{}, errkind.New(errkind.Invalid, "identity: a max TTL needs a TTL")
	case spec.MaxTTL != 0 && spec.MaxTTL < spec.TTL:
		return "", Token{}, errkind.New(errkind.Invalid, "identity: token max TTL is less than its TTL")
	case spec.Scope != "" && spec.Bootstrap:
		return "", Token{}, errkind.New(errkind.Invalid, "identity: the bootstrap token cannot be scoped")
	case len(spec.Scope) > maxScopeLen:
		return "", Token{}, errkind.New(errkind.Invalid, "identity: token scope is longer than %d bytes", maxScopeLen)
	}
	if err := activeTx(ctx, tx, spec.Principal); err != nil {
		return "", Token{}, err
	}
	now, nowUS := d.nowMicros()
	id, presented, hash := newSecret(tokenPrefix)
	t := Token{ID: id, Principal: spec.Principal, CreatedAt: now, Bootstrap: spec.Bootstrap, Scope: spec.Scope}
	var mfaUS, expUS, maxUS int64
	if !spec.MFAAt.IsZero() {
		t.MFA, t.MFAAt = true, store.FromMicros(store.Micros(spec.MFAAt))
		mfaUS = store.Micros(t.MFAAt)
	}
	if spec.TTL > 0 {
		maxTTL := max(spec.MaxTTL, spec.TTL)
		t.ExpiresAt, t.MaxExpiresAt = now.Add(spec.TTL), now.Add(maxTTL)
		if !spec.NotAfter.IsZero() {
			limit := store.FromMicros(store.Micros(spec.NotAfter)) // rounded down: never beyond
			if !limit.After(now) {
				return "", Token{}, errkind.New(errkind.Invalid, "identity: the token would expire before it is issued")
			}
			t.ExpiresAt, t.MaxExpiresAt = minTime(t.ExpiresAt, limit), minTime(t.MaxExpiresAt, limit)
		}
		expUS, maxUS = store.Micros(t.ExpiresAt), store.Micros(t.MaxExpiresAt)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO identity_tokens
		(id, secret_hash, principal_kind, principal_name, mfa_at, ttl, created_at, expires_at, max_expires_at, bootstrap, scope, parent_id)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
		t.ID, hash, string(t.Principal.Kind), t.Principal.Name, mfaUS, spec.TTL.Microseconds(), nowUS, expUS, maxUS, t.Bootstrap, t.Scope, spec.Parent)
	if err != nil {
		return "", Token{}, fmt.Errorf("identity: store token: %w", err)
	}
	return presented, t, nil
}

// activeTx returns nil if p exists and is active, read in tx.
func activeTx(ctx context.Context, tx *sql.Tx, p Principal) error {
	var n int
	var err error
	switch p.Kind {
	case KindUser:
		err = tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM identity_users WHERE name = $1 AND status = 'active'`, p.Name).Scan(&n)
	case KindMachine:
		err = tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM identity_machines WHERE name = $1 AND status = 'active'`, p.Name).Scan(&n)
	}
	if err != nil {
		return fmt.Errorf("identity: look up %s: %w", p.Kind, err)
	}
	if n == 0 {
		return errkind.New(errkind.NotFound, "identity: no active %s %q", p.Kind, p.Name)
	}
	return nil
}

// ErrBadToken is returned for a token that is malformed, unknown, wrong,
// expired or revoked, or whose principal is disabled or deleted: the caller
// learns no more than that.
var ErrBadToken = errkind.New(errkind.Unauthenticated, "identity: invalid or expired token")

// tokenColumns are scanned by scanToken, in this order, from identity_tokens t.
const tokenColumns = `t.id, t.principal_kind, t.principal_name, t.mfa_at, t.ttl, t.created_at, t.expires_at, t.max_expires_at, t.bootstrap, t.revoked_at, t.scope`

// tokenRow is a stored token.
type tokenRow struct {
	Token
	ttl     time.Duration
	revoked bool
}

func scanToken(sc interface{ Scan(...any) error }, extra ...any) (tokenRow, error) {
	var (
		r                                   tokenRow
		kind                                string
		mfa, ttl, created, exp, maxExp, rev int64
	)
	err := sc.Scan(append([]any{&r.ID, &kind, &r.Principal.Name, &mfa, &ttl, &created, &exp, &maxExp, &r.Bootstrap, &rev, &r.Scope}, extra...)...)
	if err != nil {
		return tokenRow{}, err
	}
	r.Principal.Kind = PrincipalKind(kind)
	if mfa != 0 {
		r.MFA, r.MFAAt = true, store.FromMicros(mfa)
	}
	r.ttl = time.Duration(ttl) * time.Microsecond
	r.CreatedAt = store.FromMicros(created)
	if exp != 0 {
		r.ExpiresAt = store.FromMicros(exp)
	}
	if maxExp != 0 {
		r.MaxExpiresAt = store.FromMicros(maxExp)
	}
	r.revoked = rev != 0
	return r, nil
}

// live reports whether r is neither revoked nor expired at now.
func (r tokenRow) live(now time.Time) bool {
	return !r.revoked && (r.ExpiresAt.IsZero() || now.Before(r.ExpiresAt))
}

// Authenticate checks a presented token. Every failure to authenticate is
// ErrBadToken; other errors mean the store failed. The token's secret,
// expiry, revocation and its principal's status are read in one query.
// A scoped token authenticates like any other: the caller checks Scope.
func (d *Directory) Authenticate(ctx context.Context, presented string) (Token, error) {
	id, secret, ok := parseSecret(tokenPrefix, presented)
	if !ok {
		return Token{}, ErrBadToken
	}
	r, hash, active, err := d.lookupToken(ctx, id)
	want := sha256.Sum256([]byte(secret))
	if errors.Is(err, sql.ErrNoRows) {
		subtle.ConstantTimeCompare(want[:], want[:]) // same work as a found row
		return Token{}, ErrBadToken
	}
	if err != nil {
		return Token{}, err
	}
	if subtle.ConstantTimeCompare(want[:], hash) != 1 {
		return Token{}, ErrBadToken
	}
	if !r.live(d.now()) || !active {
		return Token{}, ErrBadToken
	}
	return r.Token, nil
}

// LiveToken returns the token with id if it is neither revoked nor
// expired and its principal is active, else ErrBadToken; other errors mean
// the store failed. It is for credentials bound to a token whose secret is
// not presented, such as the database gateway's client certificates: the
// caller must have authenticated the binding itself.
func (d *Directory) LiveToken(ctx context.Context, id string) (Token, error) {
	r, _, active, err := d.lookupToken(ctx, id)
	if errors.Is(err, sql.ErrNoRows) {
		return Token{}, ErrBadToken
	}
	if err != nil {
		return Token{}, err
	}
	if !r.live(d.now()) || !active {
		return Token{}, ErrBadToken
	}
	return r.Token, nil
}

// lookupToken reads token id, its secret's hash and whether its principal
// is active, in one query. A missing token is sql.ErrNoRows.
func (d *Directory) lookupToken(ctx context.Context, id string) (tokenRow, []byte, bool, error) {
	var hash []byte
	var status sql.NullString // the principal's status; NULL when it is gone
	row := d.db.QueryRowContext(ctx, `SELECT `+tokenColumns+`, t.secret_hash,
		CASE t.principal_kind
			WHEN 'user' THEN (SELECT u.status FROM identity_users u WHERE u.name = t.principal_name)
			WHEN 'machine' THEN (SELECT m.status FROM identity_machines m WHERE m.name = t.principal_name)
		END
		FROM identity_tokens t WHERE t.id = $1`, id)
	r, err := scanToken(row, &hash, &status)
	if errors.Is(err, sql.ErrNoRows) {
		return tokenRow{}, nil, false, err
	}
	if err != nil {
		return tokenRow{}, nil, false, fmt.Errorf("identity: look up token: %w", err)
	}
	return r, hash, status.String == StatusActive, nil
}

// Renew extends a live, renewable token to now plus its TTL, but not beyond
// its MaxExpiresAt. A token unknown, revoked or expired is NotFound; the
// bootstrap token (no expiry) and a token at its cap are Invalid.
func (d *Directory) Renew(ctx context.Context, o audit.Origin, tokenID string) (Token, error) {
	var t Token
	err := d.db.InTx(ctx, func(tx *sql.Tx) error {
		r, err := scanToken(tx.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM identity_tokens t WHERE t.id = $1`, tokenID))
		if err != nil {
			return notFound(err, "identity: no token %q", tokenID)
		}
		now, _ := d.nowMicros()
		switch {
		case !r.live(now):
			return errkind.New(errkind.NotFound, "identity: no live token %q", tokenID)
		case r.ExpiresAt.IsZero() || r.ttl == 0:
			return errkind.New(errkind.Invalid, "identity: token %s does not expire and cannot be renewed", tokenID)
		case !r.ExpiresAt.Before(r.MaxExpiresAt):
			return errkind.New(errkind.Invalid, "identity: token %s has reached its maximum lifetime; log in again", tokenID)
		}
		exp := now.Add(r.ttl)
		if exp.After(r.MaxExpiresAt) {
			exp = r.MaxExpiresAt
		}
		if exp.After(r.ExpiresAt) {
			if _, err := tx.ExecContext(ctx, `UPDATE identity_tokens SET expires_at = $1 WHERE id = $2`, store.Micros(exp), tokenID); err != nil {
				return fmt.Errorf("identity: renew token: %w", err)
			}
			r.ExpiresAt = exp
		}
		t = r.Token
		return d.appendTx(ctx, tx, o.Event("auth.token.renew", "token:"+tokenID, audit.OutcomeSuccess,
			map[string]string{"principal": r.Principal.Actor(), "expires_at": r.ExpiresAt.Format(time.RFC3339)}))
	})
	return t, err
}

// Revoke makes a token, and the scoped tokens it issued, unusable from the
// next request on. A token unknown or already revoked is NotFound.
func (d *Directory) Revoke(ctx context.Context, o audit.Origin, tokenID string) error {
	return d.db.InTx(ctx, func(tx *sql.Tx) error {
		_, nowUS := d.nowMicros()
		res, err := tx.ExecContext(ctx, `UPDATE identity_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at = 0`, nowUS, tokenID)
		if err != nil {
			return fmt.Errorf("identity: revoke token: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errkind.New(errkind.NotFound, "identity: no active token %q", tokenID)
		}
		res, err = tx.ExecContext(ctx, `UPDATE identity_tokens SET revoked_at = $1 WHERE parent_id = $2 AND revoked_at = 0`, nowUS, tokenID)
		if err != nil {
			return fmt.Errorf("identity: revoke the tokens issued by a token: %w", err)
		}
		var details map[string]string
		if n, _ := res.RowsAffected(); n > 0 {
			details = map[string]string{"issued_revoked": strconv.FormatInt(n, 10)}
		}
		return d.appendTx(ctx, tx, o.Event("auth.token.revoke", "token:"+tokenID, audit.OutcomeSuccess, details))
	})
}

// RevokeAll revokes every live token of p and returns how many it revoked.
func (d *Directory) RevokeAll(ctx context.Context, o audit.Origin, p Principal) (int, error) {
	if !p.valid() {
		return 0, errkind.New(errkind.Invalid, "identity: not a user or machine principal")
	}
	var n int
	err := d.db.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		if n, err = d.revokeAllTx(ctx, tx, p); err != nil {
			return err
		}
		return d.appendTx(ctx, tx, o.Event("auth.token.revoke_all", p.Actor(), audit.OutcomeSuccess,
			map[string]string{"revoked": strconv.Itoa(n)}))
	})
	return n, err
}

// revokeAllTx revokes every live token of p in tx and returns how many.
func (d *Directory) revokeAllTx(ctx context.Context, tx *sql.Tx, p Principal) (int, error) {
	return d.revokeAllExceptTx(ctx, tx, p, "")
}

// revokeAllExceptTx is revokeAllTx, except that it leaves alone the token
// with id keep and the tokens it issued ("": none).
func (d *Directory) revokeAllExceptTx(ctx context.Context, tx *sql.Tx, p Principal, keep string) (int, error) {
	_, nowUS := d.nowMicros()
	q := `UPDATE identity_tokens SET revoked_at = $1
		WHERE principal_kind = $2 AND principal_name = $3 AND revoked_at = 0 AND (expires_at = 0 OR expires_at > $1)`
	args := []any{nowUS, string(p.Kind), p.Name}
	if keep != "" {
		q += ` AND id <> $4 AND parent_id <> $4`
		args = append(args, keep)
	}
	res, err := tx.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, fmt.Errorf("identity: revoke tokens of %s: %w", p.Actor(), err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// parseToken splits "wt1.<id>.<secret>" after checking its shape.
func parseToken(s string) (id, secret string, ok bool) { return parseSecret(tokenPrefix, s) }

// parseSecret splits "<prefix>.<id>.<secret>" after checking its shape: an
// 18-digit lowercase hex id and a 43-character unpadded base64url secret.
func parseSecret(prefix, s string) (id, secret string, ok bool) {
	if len(s) > 256 {
		return "", "", false
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 || parts[0] != prefix || len(parts[1]) != 2*idBytes || len(parts[2]) != 43 {
		return "", "", false
	}
	if b, err := hex.DecodeString(parts[1]); err != nil || hex.EncodeToString(b) != parts[1] {
		return "", "", false
	}
	// The decoder skips \r and \n; re-encoding refuses them.
	if b, err := base64.RawURLEncoding.Strict().DecodeString(parts[2]); err != nil || base64.RawURLEncoding.EncodeToString(b) != parts[2] {
		return "", "", false
	}
	return parts[1], parts[2], true
}
