package identity

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// Database tokens: short-lived tokens the database gateway accepts as a
// password for one target (and account), which the API refuses.

// Limits of database tokens.
const (
	// DefaultDBTokenTTL is the lifetime of a database token when none is
	// asked for.
	DefaultDBTokenTTL = time.Hour
	// MaxDBTokenTTL is the longest lifetime that may be asked for; a
	// database token never outlives the token that issued it either.
	MaxDBTokenTTL = 8 * time.Hour
	// maxScopeLen bounds Token.Scope.
	maxScopeLen = 300
	// maxScopeName bounds a target or account name in a scope.
	maxScopeName = 128
)

// scopeDB begins the scope of every database token.
const scopeDB = "db:"

// DBScope returns the scope of a database token for account of target:
// "db:TARGET/ACCOUNT". account "" is the scope of a token for the target
// alone (the gateway then chooses the account), which is valid only for
// connections that name the target alone. The gateway compares a token's
// Scope with DBScope of what the client asked for: a token is good for
// exactly one target and account.
func DBScope(target, account string) string { return scopeDB + target + "/" + account }

// DBTokenSpec says what a database token is for.
type DBTokenSpec struct {
	Target  string // required
	Account string // "": the target's account the gateway chooses
	// TTL is the token's lifetime, capped at the parent token's expiry.
	// Zero: DefaultDBTokenTTL; at most MaxDBTokenTTL.
	TTL time.Duration
}

// validScopeName reports whether s may appear in a scope: not empty
// (unless optional), at most 128 bytes, no "/", no control characters.
func validScopeName(s string, optional bool) bool {
	if s == "" {
		return optional
	}
	return len(s) <= maxScopeName && !strings.ContainsFunc(s, func(c rune) bool { return c < ' ' || c == 0x7f || c == '/' })
}

// IssueDBToken issues the holder of parent a token scoped to the database
// gateway for spec's target and account, and audits it
// ("auth.db_token.issue", with the new token's id, the parent's id, the
// scope and the expiry; never a secret) in the same transaction. It
// returns the token's secret form, shown once.
//
// The token is not renewable and expires after spec.TTL, but never after
// parent, which must be live and unscoped (a parent without expiry, the
// bootstrap token, caps nothing but MaxDBTokenTTL). It carries parent's
// MFA, so policies requiring MFA see the same login. Revoking parent
// revokes it; so does disabling its principal. A parent that is no longer
// live is ErrBadToken.
func (d *Directory) IssueDBToken(ctx context.Context, o audit.Origin, parent Token, spec DBTokenSpec) (string, Token, error) {
	switch {
	case parent.Scope != "":
		return "", Token{}, errkind.New(errkind.Invalid, "identity: a scoped token cannot issue tokens")
	case !validScopeName(spec.Target, false):
		return "", Token{}, errkind.New(errkind.Invalid, "identity: database token: target name is empty, longer than %d bytes or has a \"/\" or control character", maxScopeName)
	case !validScopeName(spec.Account, true):
		return "", Token{}, errkind.New(errkind.Invalid, "identity: database token: account name is longer than %d bytes or has a \"/\" or control character", maxScopeName)
	case spec.TTL < 0 || spec.TTL > MaxDBTokenTTL:
		return "", Token{}, errkind.New(errkind.Invalid, "identity: database token TTL %v is not between 0 and %v", spec.TTL, MaxDBTokenTTL)
	}
	if spec.TTL == 0 {
		spec.TTL = DefaultDBTokenTTL
	}
	var (
		presented string
		tok       Token
	)
	err := d.db.InTx(ctx, func(tx *sql.Tx) error {
		// The parent must still be live: it may have been revoked since
		// the request was authenticated.
		var exp, rev int64
		err := tx.QueryRowContext(ctx, `SELECT expires_at, revoked_at FROM identity_tokens WHERE id = $1`, parent.ID).Scan(&exp, &rev)
		if err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return ErrBadToken
			}
			return fmt.Errorf("identity: read the parent token: %w", err)
		}
		_, nowUS := d.nowMicros()
		if rev != 0 || exp != 0 && exp <= nowUS {
			return ErrBadToken
		}
		var notAfter time.Time
		if exp != 0 {
			notAfter = store.FromMicros(exp)
		}
		presented, tok, err = d.IssueTx(ctx, tx, TokenSpec{Principal: parent.Principal, TTL: spec.TTL, MFAAt: parent.MFAAt,
			Scope: DBScope(spec.Target, spec.Account), Parent: parent.ID, NotAfter: notAfter})
		if err != nil {
			return err
		}
		return d.appendTx(ctx, tx, o.Event("auth.db_token.issue", "token:"+tok.ID, audit.OutcomeSuccess, map[string]string{
			"principal": tok.Principal.Actor(), "parent": parent.ID, "scope": tok.Scope,
			"expires_at": tok.ExpiresAt.Format(time.RFC3339),
		}))
	})
	if err != nil {
		return "", Token{}, err
	}
	return presented, tok, nil
}

// minTime returns the earlier of a and b.
func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
