package identity

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// LoginRequest is a user's login attempt.
type LoginRequest struct {
	User     string
	Password []byte
	TOTP     string     // a TOTP code, or a recovery code; needed once TOTP is enrolled
	Source   netip.Addr // the client's address, for the per-source rate limit
}

// Errors of Login and LoginMachine.
var (
	// ErrBadCredentials is the one answer for an unknown user, a wrong
	// password, a disabled user and a user without a password.
	ErrBadCredentials = errkind.New(errkind.Unauthenticated, "identity: invalid username or password")
	// ErrMFARequired is returned, only after the password was verified,
	// when the user has TOTP enrolled and no code was given.
	ErrMFARequired = errkind.New(errkind.Unauthenticated, "identity: a TOTP code is required")
	// ErrBadMFACode is returned, only after the password was verified, for
	// a wrong or expired TOTP code or a wrong or used recovery code.
	ErrBadMFACode = errkind.New(errkind.Unauthenticated, "identity: invalid TOTP code or recovery code")
	// ErrMFACodeReused is returned, only after the password was verified,
	// for the TOTP code of a time step that was already used (or passed
	// by a later one): the code was right, but is accepted once only. It
	// counts as a failure like ErrBadMFACode; it tells only who knows the
	// password that a code of a spent step was given, which cannot be used
	// again.
	ErrMFACodeReused = errkind.New(errkind.Unauthenticated, "identity: this TOTP code was already used; wait for the next one")
	// ErrRateLimited is returned while the user name (whether or not it
	// names a user) is locked out after too many consecutive failures, or
	// the source address has failed too often.
	ErrRateLimited = errkind.New(errkind.RateLimited, "identity: too many failed attempts; try again later")
)

// loginUser is what Login reads of a user before verifying the password.
type loginUser struct {
	exists bool
	status string
	hash   string
}

// Login checks a user's password (Argon2id) and, once TOTP is enrolled, a
// TOTP code or recovery code, and issues a token of UserTokenTTL,
// renewable up to UserTokenMaxTTL. Every attempt is audited ("auth.login",
// allow or deny, with a reason; never the password or code).
//
// Work, answer and lockout do not depend on whether the user exists: an
// unknown user's password is checked against a dummy hash, every failure
// before the password is verified is ErrBadCredentials, and MaxFailures
// consecutive failures with one name (unknown user, disabled user, user
// without a password, wrong password or code) lock that name out for
// LockoutDuration ("auth.lockout"; see the package doc). SourceBurst
// failures (of any kind) from one source make it wait (also "auth.lockout"
// when it happens). Both then return ErrRateLimited without checking the
// password.
//
// Both limits hold for concurrent attempts: an attempt takes its place in
// the source's bucket and in the name's count before the password is
// checked, keeps them if it fails, and gives them back if it succeeds or
// stops for a missing TOTP code. So no more than SourceBurst attempts from
// one source, and MaxFailures with one name, are ever checked at once or
// in a row.
//
// A TOTP code is accepted once: a code of the same or an earlier step than
// the last one accepted is refused, with ErrMFACodeReused. A successful login clears the name's
// failure count, and rehashes the password if its stored Argon2id
// parameters are not the current ones. Login needs the barrier unsealed.
func (d *Directory) Login(ctx context.Context, o audit.Origin, req LoginRequest) (string, Token, error) {
	now := d.now()
	at, ok := d.startAttempt(req.Source, now)
	if !ok {
		return "", Token{}, d.loginFailed(ctx, o, &attempt{}, "user", "rate_limited", ErrRateLimited)
	}
	defer d.release(ctx, at)
	key, err := d.lockKey(ctx, req.User)
	if err != nil {
		return "", Token{}, err
	}
	u, err := d.readLoginUser(ctx, req.User)
	if err != nil {
		return "", Token{}, err
	}
	resource := "user" // the name is recorded only if it exists: it may be a mistyped password
	if u.exists {
		resource = "user:" + req.User
	}
	reserved, err := d.reserveName(ctx, key, now)
	if err != nil {
		return "", Token{}, err
	}
	if !reserved {
		at.keep = true // counts against the source
		return "", Token{}, d.loginFailed(ctx, o, at, resource, "locked", ErrRateLimited)
	}
	at.key = key
	// From here on the attempt counts, whatever happens to the request,
	// unless it is shown not to be a failure.
	at.keep = true
	ok, rehash, err := d.verify(ctx, u.hash, req.Password)
	if err != nil {
		return "", Token{}, err
	}
	switch {
	case !u.exists:
		return "", Token{}, d.loginFailed(ctx, o, at, resource, "unknown_user", ErrBadCredentials)
	case u.status != StatusActive:
		return "", Token{}, d.loginFailed(ctx, o, at, resource, "disabled", ErrBadCredentials)
	case u.hash == "":
		return "", Token{}, d.loginFailed(ctx, o, at, resource, "no_password", ErrBadCredentials)
	case !ok:
		return "", Token{}, d.loginFailed(ctx, o, at, resource, "bad_password", ErrBadCredentials)
	}

	// The password is right.
	tr, err := d.readTOTP(ctx, d.db, req.User)
	if err != nil {
		return "", Token{}, err
	}
	defer clear(tr.secret)
	mfa := tr.secret != nil && tr.confirmed
	if mfa && strings.TrimSpace(req.TOTP) == "" {
		at.keep = false // not a failure: the password was right
		return "", Token{}, d.loginDenied(ctx, o, resource, "mfa_required", ErrMFARequired)
	}
	var step int64
	var totpOK bool
	if mfa {
		step, totpOK = matchTOTP(tr.secret, req.TOTP, now, tr.lastStep)
	}
	newHash := ""
	if rehash {
		if newHash, err = d.hash(ctx, req.Password); err != nil {
			return "", Token{}, err
		}
	}

	var (
		presented string
		tok       Token
		failure   error
	)
	p := Principal{KindUser, req.User}
	err = d.db.InTx(ctx, func(tx *sql.Tx) error {
		failure = nil
		// The user's row is locked first, as DeleteUser does, before the
		// rows that reference it (TOTP, recovery codes): two transactions
		// locking them in opposite orders would deadlock on PostgreSQL.
		if err := lockUserTx(ctx, d.db, tx, req.User); err != nil {
			return err
		}
		method := "password"
		var mfaAt time.Time
		if mfa {
			used, err := d.spendSecondFactor(ctx, tx, req.User, req.TOTP, tr.version, step, totpOK)
			if err != nil {
				return err
			}
			if !used {
				// A code that matched a step a concurrent login spent
				// meanwhile, or one of a step spent before, is a replay.
				if totpOK || spentTOTP(tr.secret, req.TOTP, now, tr.lastStep) {
					failure = ErrMFACodeReused
					return d.loginFailedTx(ctx, tx, o, at, resource, "reused_code", now)
				}
				failure = ErrBadMFACode
				return d.loginFailedTx(ctx, tx, o, at, resource, "bad_code", now)
			}
			method, mfaAt = "password+totp", now
			if !totpOK {
				method = "password+recovery_code"
			}
			if d.testAfterSecondFactor != nil {
				d.testAfterSecondFactor()
			}
		}
		// Check that the user is still active with this password (and
		// rehash it) with a conditional update.
		stored := u.hash
		if newHash != "" {
			stored = newHash
		}
		res, err := tx.ExecContext(ctx, `UPDATE identity_users SET password_hash = $3
			WHERE name = $1 AND status = 'active' AND password_hash = $2`, req.User, u.hash, stored)
		if err != nil {
			return fmt.Errorf("identity: record login: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 { // disabled or password changed meanwhile
			failure = ErrBadCredentials
			return d.loginFailedTx(ctx, tx, o, at, resource, "changed", now)
		}
		locked, err := d.resetFailuresTx(ctx, tx, key, now)
		if err != nil {
			return err
		}
		if locked { // by failures since the lock was read
			failure = ErrRateLimited
			return d.loginFailedTx(ctx, tx, o, at, resource, "locked", now)
		}
		presented, tok, err = d.IssueTx(ctx, tx, TokenSpec{Principal: p, TTL: d.cfg.UserTokenTTL, MaxTTL: d.cfg.UserTokenMaxTTL, MFAAt: mfaAt})
		if err != nil {
			return err
		}
		details := map[string]string{"method": method, "token": tok.ID}
		if newHash != "" {
			details["password_rehashed"] = "true"
		}
		oo := o
		oo.Actor = p.Actor()
		return d.appendTx(ctx, tx, oo.Event("auth.login", resource, audit.OutcomeAllow, details))
	})
	switch {
	case err != nil:
		return "", Token{}, err
	case failure == ErrBadMFACode || failure == ErrMFACodeReused:
		d.pruneFailures(ctx, now)
		fallthrough
	case failure != nil:
		return "", Token{}, failure
	}
	// The commit cleared the name's count; the source gets its token back.
	at.key, at.keep = nil, false
	return presented, tok, nil
}

// spendSecondFactor consumes the TOTP step matched before the transaction
// (totpOK), or else a recovery code, in tx; it reports whether one was
// spent. The conditional updates make a concurrent replay fail.
func (d *Directory) spendSecondFactor(ctx context.Context, tx *sql.Tx, user, code string, version, step int64, totpOK bool) (bool, error) {
	if !totpOK {
		return d.useRecoveryCodeTx(ctx, tx, user, code)
	}
	res, err := tx.ExecContext(ctx, `UPDATE identity_totp SET last_step = $1
		WHERE user_name = $2 AND version = $3 AND confirmed = $4 AND last_step < $1`, step, user, version, true)
	if err != nil {
		return false, fmt.Errorf("identity: record TOTP step: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// readLoginUser reads what Login needs of user; a name that is not valid
// reads as an unknown user.
func (d *Directory) readLoginUser(ctx context.Context, user string) (loginUser, error) {
	if !validName(user) {
		return loginUser{}, nil
	}
	var u loginUser
	err := d.db.QueryRowContext(ctx, `SELECT status, password_hash FROM identity_users WHERE name = $1`, user).
		Scan(&u.status, &u.hash)
	if errNoRows(err) {
		return loginUser{}, nil
	}
	if err != nil {
		return loginUser{}, fmt.Errorf("identity: read user: %w", err)
	}
	u.exists = true
	return u, nil
}

// loginDenied audits a denied attempt that is not a failure (a missing
// second factor) and returns ret.
func (d *Directory) loginDenied(ctx context.Context, o audit.Origin, resource, reason string, ret error) error {
	err := d.db.InTx(ctx, func(tx *sql.Tx) error {
		return d.appendTx(ctx, tx, o.Event("auth.login", resource, audit.OutcomeDeny, map[string]string{"reason": reason}))
	})
	if err != nil {
		return err
	}
	return ret
}

// attempt is what a login attempt holds of the limits: a token of its
// source's bucket and, for a user's login, a place in its name's failure
// count, both taken before any secret is checked. Unless keep is set (the
// attempt failed, or got as far as checking a secret), release gives them
// back.
type attempt struct {
	source    netip.Addr
	token     bool    // a token of source's bucket is held
	lastToken bool    // it was the source's last one
	key       nameKey // the name whose count holds a place, or nil
	keep      bool
}

// startAttempt takes a token of src's bucket at now; false if it has none
// left.
func (d *Directory) startAttempt(src netip.Addr, now time.Time) (*attempt, bool) {
	ok, last := d.limiter.take(src, now)
	if !ok {
		return nil, false
	}
	return &attempt{source: src, token: true, lastToken: last}, true
}

// release gives back what at holds unless at.keep is set. It does so even
// if ctx is cancelled.
func (d *Directory) release(ctx context.Context, at *attempt) {
	if at.keep {
		return
	}
	if at.token {
		d.limiter.refund(at.source, d.now())
	}
	if at.key != nil {
		d.refundName(context.WithoutCancel(ctx), at.key)
	}
}

// loginFailed records a failed attempt in a transaction of its own and
// returns ret (or the store's error). The record is written even if ctx is
// cancelled meanwhile: a client hanging up does not undo its failure. When
// it counted a failure of a name, it then prunes stale counts.
func (d *Directory) loginFailed(ctx context.Context, o audit.Origin, at *attempt, resource, reason string, ret error) error {
	ctx = context.WithoutCancel(ctx)
	now := d.now()
	err := d.db.InTx(ctx, func(tx *sql.Tx) error {
		return d.loginFailedTx(ctx, tx, o, at, resource, reason, now)
	})
	if err != nil {
		return err
	}
	if at.key != nil {
		d.pruneFailures(ctx, now)
	}
	return ret
}

// loginFailedTx records a failed attempt in tx: it keeps what the attempt
// holds of the limits (its place in the name's count, which may now lock
// the name; its source's token), and writes the audit events, all on
// resource, which names the user only if they exist. The audit chain lock
// is taken last, as in every transaction of this package, so that
// transactions on one user cannot deadlock.
func (d *Directory) loginFailedTx(ctx context.Context, tx *sql.Tx, o audit.Origin, at *attempt, resource, reason string, now time.Time) error {
	at.keep = true
	var events []audit.Event
	if at.key != nil {
		n, until, err := d.lockIfFullTx(ctx, tx, at.key, now)
		if err != nil {
			return err
		}
		if !until.IsZero() {
			events = append(events, o.Event("auth.lockout", resource, audit.OutcomeDeny,
				map[string]string{"scope": "user", "failures": fmt.Sprint(n), "until": until.UTC().Format(time.RFC3339)}))
		}
	}
	if at.lastToken {
		events = append(events, o.Event("auth.lockout", "source:"+sourceKey(at.source), audit.OutcomeDeny,
			map[string]string{"scope": "source"}))
	}
	events = append([]audit.Event{o.Event("auth.login", resource, audit.OutcomeDeny, map[string]string{"reason": reason})}, events...)
	for _, ev := range events {
		if err := d.appendTx(ctx, tx, ev); err != nil {
			return err
		}
	}
	return nil
}

// lockUserTx locks the row of user in identity_users for the rest of tx on
// PostgreSQL (SQLite serialises write transactions anyway). Transactions
// that change a user's TOTP enrollment or recovery codes, or log them in,
// call it before touching those rows, so that every transaction locks a
// user's rows in the order DeleteUser does: the user first.
func lockUserTx(ctx context.Context, db *store.DB, tx *sql.Tx, user string) error {
	if db.Kind() != store.Postgres {
		return nil
	}
	var name string
	err := tx.QueryRowContext(ctx, `SELECT name FROM identity_users WHERE name = $1 FOR UPDATE`, user).Scan(&name)
	if err != nil && !errNoRows(err) {
		return fmt.Errorf("identity: lock user: %w", err)
	}
	return nil
}
