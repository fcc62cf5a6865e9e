package identity

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// Statuses of users and machines.
const (
	StatusActive   = "active"
	StatusDisabled = "disabled"
)

// User is a person who logs in with a password (and TOTP once enrolled).
type User struct {
	Name        string    `json:"name"`
	DisplayName string    `json:"display_name"`
	Email       string    `json:"email"`
	Status      string    `json:"status"` // StatusActive or StatusDisabled
	HasPassword bool      `json:"has_password"`
	MFAEnrolled bool      `json:"mfa_enrolled"` // a TOTP enrollment is confirmed
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// UserSpec describes a new user.
type UserSpec struct {
	Name        string // ^[a-z0-9][a-z0-9._-]{0,63}$
	DisplayName string // at most 256 bytes of printable UTF-8
	Email       string // "" or a bare address
	Password    []byte // nil: none (the user cannot log in until SetPassword); see MinPasswordChars
}

// CreateUser creates an active user. A user of that name already existing
// is Conflict.
func (d *Directory) CreateUser(ctx context.Context, o audit.Origin, spec UserSpec) (User, error) {
	if err := checkUserSpec(spec); err != nil {
		return User{}, err
	}
	hash, err := d.passwordHash(ctx, spec.Password)
	if err != nil {
		return User{}, err
	}
	var u User
	err = d.db.InTx(ctx, func(tx *sql.Tx) error {
		u, err = d.createUserTx(ctx, tx, o, spec, hash)
		return err
	})
	return u, err
}

// CreateUserTx is CreateUser inside the caller's transaction (operator
// init creates the first admin this way). It uses only tx.
func (d *Directory) CreateUserTx(ctx context.Context, tx *sql.Tx, o audit.Origin, spec UserSpec) (User, error) {
	if err := checkUserSpec(spec); err != nil {
		return User{}, err
	}
	hash, err := d.passwordHash(ctx, spec.Password)
	if err != nil {
		return User{}, err
	}
	return d.createUserTx(ctx, tx, o, spec, hash)
}

func checkUserSpec(spec UserSpec) error {
	if err := checkName("user", spec.Name); err != nil {
		return err
	}
	if err := checkText("display name", spec.DisplayName, 256); err != nil {
		return err
	}
	if err := checkEmail(spec.Email); err != nil {
		return err
	}
	if spec.Password != nil {
		return checkPassword(spec.Password)
	}
	return nil
}

// passwordHash hashes pw, or returns "" for nil.
func (d *Directory) passwordHash(ctx context.Context, pw []byte) (string, error) {
	if pw == nil {
		return "", nil
	}
	return d.hash(ctx, pw)
}

func (d *Directory) createUserTx(ctx context.Context, tx *sql.Tx, o audit.Origin, spec UserSpec, hash string) (User, error) {
	now, nowUS := d.nowMicros()
	_, err := tx.ExecContext(ctx, `INSERT INTO identity_users (name, display_name, email, status, password_hash, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $6)`, spec.Name, spec.DisplayName, spec.Email, StatusActive, hash, nowUS)
	if store.IsUniqueViolation(err) {
		return User{}, errkind.New(errkind.Conflict, "identity: user %q already exists", spec.Name)
	}
	if err != nil {
		return User{}, fmt.Errorf("identity: create user: %w", err)
	}
	u := User{Name: spec.Name, DisplayName: spec.DisplayName, Email: spec.Email, Status: StatusActive,
		HasPassword: hash != "", CreatedAt: now, UpdatedAt: now}
	err = d.appendTx(ctx, tx, o.Event("identity.user.create", "user:"+u.Name, audit.OutcomeSuccess,
		map[string]string{"has_password": fmt.Sprint(u.HasPassword)}))
	return u, err
}

const userColumns = `u.name, u.display_name, u.email, u.status, u.password_hash <> '', COALESCE(t.confirmed, FALSE), u.created_at, u.updated_at`
const userFrom = ` FROM identity_users u LEFT JOIN identity_totp t ON t.user_name = u.name`

func scanUser(sc interface{ Scan(...any) error }) (User, error) {
	var u User
	var created, updated int64
	if err := sc.Scan(&u.Name, &u.DisplayName, &u.Email, &u.Status, &u.HasPassword, &u.MFAEnrolled, &created, &updated); err != nil {
		return User{}, err
	}
	u.CreatedAt, u.UpdatedAt = store.FromMicros(created), store.FromMicros(updated)
	return u, nil
}

// User returns the named user, or NotFound.
func (d *Directory) User(ctx context.Context, name string) (User, error) {
	u, err := scanUser(d.db.QueryRowContext(ctx, `SELECT `+userColumns+userFrom+` WHERE u.name = $1`, name))
	if err != nil {
		return User{}, notFound(fmt.Errorf("identity: read user: %w", err), "identity: no user %q", name)
	}
	return u, nil
}

// Users returns every user, by name.
func (d *Directory) Users(ctx context.Context) ([]User, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT `+userColumns+userFrom+` ORDER BY u.name`)
	if err != nil {
		return nil, fmt.Errorf("identity: list users: %w", err)
	}
	defer rows.Close()
	out := []User{}
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("identity: list users: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("identity: list users: %w", err)
	}
	return out, nil
}

// SetPassword replaces the user's password (checked against the policy,
// see MinPasswordChars), clears any lockout of their name and revokes all
// their tokens but keep, in one transaction: whoever got a token with the
// old password loses it. keep is the id of the token that asks, when it
// is the user's own ("" for none): it stays valid, with the tokens it
// issued, so that a user setting their own password is not logged out.
// It returns how many tokens it revoked. It needs the barrier unsealed.
func (d *Directory) SetPassword(ctx context.Context, o audit.Origin, name string, password []byte, keep string) (int, error) {
	if err := checkPassword(password); err != nil {
		return 0, err
	}
	key, err := d.lockKey(ctx, name)
	if err != nil {
		return 0, err
	}
	hash, err := d.hash(ctx, password)
	if err != nil {
		return 0, err
	}
	var n int
	err = d.db.InTx(ctx, func(tx *sql.Tx) error {
		_, nowUS := d.nowMicros()
		if err := d.updateUser(ctx, tx, name, `password_hash = $3`, nowUS, hash); err != nil {
			return err
		}
		if err := d.unlockTx(ctx, tx, key); err != nil {
			return err
		}
		var err error
		if n, err = d.revokeAllExceptTx(ctx, tx, Principal{KindUser, name}, keep); err != nil {
			return err
		}
		return d.appendTx(ctx, tx, o.Event("identity.user.password", "user:"+name, audit.OutcomeSuccess,
			map[string]string{"tokens_revoked": fmt.Sprint(n)}))
	})
	return n, err
}

// Lockout is the failed-login state of a user name (see the package doc).
type Lockout struct {
	// FailedLogins counts the recent consecutive failed logins that count
	// towards a lock (or that locked the name).
	FailedLogins int `json:"failed_logins"`
	// LockedUntil is when the lock ends; zero when the name is not locked.
	LockedUntil time.Time `json:"locked_until,omitzero"`
}

// Lockout returns the failed-login state of the name user, which need not
// name a user. It needs the barrier unsealed.
func (d *Directory) Lockout(ctx context.Context, user string) (Lockout, error) {
	key, err := d.lockKey(ctx, user)
	if err != nil {
		return Lockout{}, err
	}
	var failures int
	var last, until int64
	err = d.db.QueryRowContext(ctx, `SELECT failures, last_failure_at, locked_until FROM identity_login_failures WHERE name_mac = $1`,
		[]byte(key)).Scan(&failures, &last, &until)
	if errNoRows(err) {
		return Lockout{}, nil
	}
	if err != nil {
		return Lockout{}, fmt.Errorf("identity: read lockout: %w", err)
	}
	now := d.now()
	switch {
	case until != 0 && store.FromMicros(until).After(now):
		return Lockout{FailedLogins: failures, LockedUntil: store.FromMicros(until)}, nil
	case until != 0 || store.FromMicros(last).Before(now.Add(-d.cfg.LockoutDuration)):
		return Lockout{}, nil // the lock ended, or the failures are too old to count
	}
	return Lockout{FailedLogins: failures}, nil
}

// UnlockUser clears the failed-login count and any lock of the user's
// name, so that they can log in at once. Unlocking a name that is not
// locked is not an error (the audit event says whether it was). No such
// user is NotFound. It needs the barrier unsealed.
func (d *Directory) UnlockUser(ctx context.Context, o audit.Origin, name string) error {
	key, err := d.lockKey(ctx, name)
	if err != nil {
		return err
	}
	return d.db.InTx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM identity_users WHERE name = $1`, name).Scan(&n); err != nil {
			return fmt.Errorf("identity: read user: %w", err)
		}
		if n == 0 {
			return errkind.New(errkind.NotFound, "identity: no user %q", name)
		}
		_, nowUS := d.nowMicros()
		var locked int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM identity_login_failures WHERE name_mac = $1 AND locked_until > $2`,
			[]byte(key), nowUS).Scan(&locked); err != nil {
			return fmt.Errorf("identity: read lockout: %w", err)
		}
		if err := d.unlockTx(ctx, tx, key); err != nil {
			return err
		}
		return d.appendTx(ctx, tx, o.Event("identity.user.unlock", "user:"+name, audit.OutcomeSuccess,
			map[string]string{"was_locked": fmt.Sprint(locked > 0)}))
	})
}

// updateUser runs UPDATE identity_users SET <set>, updated_at = $1 WHERE
// name = $2, with args from $3 on; no such user is NotFound.
func (d *Directory) updateUser(ctx context.Context, tx *sql.Tx, name, set string, nowUS int64, args ...any) error {
	res, err := tx.ExecContext(ctx, `UPDATE identity_users SET `+set+`, updated_at = $1 WHERE name = $2`,
		append([]any{nowUS, name}, args...)...)
	if err != nil {
		return fmt.Errorf("identity: update user: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errkind.New(errkind.NotFound, "identity: no user %q", name)
	}
	return nil
}

// DisableUser disables the user and revokes all their tokens in one
// transaction: the very next request with any of them is refused. After
// commit it fires a "user.disabled" LifecycleEvent. Disabling a disabled
// user does all of this again.
func (d *Directory) DisableUser(ctx context.Context, o audit.Origin, name string) error {
	p := Principal{KindUser, name}
	now, nowUS := d.nowMicros()
	err := d.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := d.updateUser(ctx, tx, name, `status = $3`, nowUS, StatusDisabled); err != nil {
			return err
		}
		n, err := d.revokeAllTx(ctx, tx, p)
		if err != nil {
			return err
		}
		return d.appendTx(ctx, tx, o.Event("identity.user.disable", p.Actor(), audit.OutcomeSuccess,
			map[string]string{"tokens_revoked": fmt.Sprint(n)}))
	})
	if err != nil {
		return err
	}
	d.fire(ctx, LifecycleEvent{Kind: EventUserDisabled, Principal: p, At: now})
	return nil
}

// EnableUser makes a disabled user active again and clears any lockout of
// their name. Tokens revoked when the user was disabled stay revoked. It
// needs the barrier unsealed.
func (d *Directory) EnableUser(ctx context.Context, o audit.Origin, name string) error {
	key, err := d.lockKey(ctx, name)
	if err != nil {
		return err
	}
	return d.db.InTx(ctx, func(tx *sql.Tx) error {
		_, nowUS := d.nowMicros()
		if err := d.updateUser(ctx, tx, name, `status = $3`, nowUS, StatusActive); err != nil {
			return err
		}
		if err := d.unlockTx(ctx, tx, key); err != nil {
			return err
		}
		return d.appendTx(ctx, tx, o.Event("identity.user.enable", "user:"+name, audit.OutcomeSuccess, nil))
	})
}

// DeleteUser deletes the user with their TOTP enrollment, recovery codes
// and group memberships, and revokes all their tokens, in one transaction.
// After commit it fires a "user.deleted" LifecycleEvent.
func (d *Directory) DeleteUser(ctx context.Context, o audit.Origin, name string) error {
	p := Principal{KindUser, name}
	now, _ := d.nowMicros()
	err := d.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM identity_users WHERE name = $1`, name)
		if err != nil {
			return fmt.Errorf("identity: delete user: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errkind.New(errkind.NotFound, "identity: no user %q", name)
		}
		n, err := d.revokeAllTx(ctx, tx, p)
		if err != nil {
			return err
		}
		if err := d.dropMembershipsTx(ctx, tx, "user", name); err != nil {
			return err
		}
		return d.appendTx(ctx, tx, o.Event("identity.user.delete", p.Actor(), audit.OutcomeSuccess,
			map[string]string{"tokens_revoked": fmt.Sprint(n)}))
	})
	if err != nil {
		return err
	}
	d.parents.invalidate()
	d.fire(ctx, LifecycleEvent{Kind: EventUserDeleted, Principal: p, At: now})
	return nil
}

// errNoRows reports whether err is sql.ErrNoRows.
func errNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }
