package identity

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/warderhq/warder/internal/store"
)

// nameMACPurpose is the barrier MAC purpose that keys lockouts by user name.
const nameMACPurpose = "identity.login_name"

// pruneBatch is how many stale rows of identity_login_failures a failed
// login deletes at most. Each failure adds at most one row, so stale rows
// do not pile up while failures keep coming.
const pruneBatch = 8

// nameKey is the key of a user name in identity_login_failures: the
// barrier's MAC of the name exactly as given. Valid names are already in
// their one canonical form (lower case); an invalid name names no user and
// is locked like any other unknown name.
type nameKey []byte

// lockKey returns the nameKey of user. It needs the barrier unsealed.
func (d *Directory) lockKey(ctx context.Context, user string) (nameKey, error) {
	mac, err := d.cipher.MAC(ctx, nameMACPurpose, []byte(user))
	if err != nil {
		return nil, fmt.Errorf("identity: key user name: %w", err)
	}
	return mac, nil
}

// reserveName takes a place in the failure count of the name k at now,
// before a password is checked, in a statement of its own that commits at
// once, so that concurrent attempts see each other: at most MaxFailures
// attempts with one name can be checked within LockoutDuration, however
// many run at once. It reports false, taking nothing, while the name is
// locked or its count is full. A failed attempt keeps its place (it is its
// failure; see lockIfFullTx); any other result gives it back
// (refundName), and a success clears the count (resetFailuresTx).
//
// A count whose last attempt is more than LockoutDuration old, or whose
// lock has ended, starts again at 1. The statement is atomic on both
// backends: PostgreSQL locks the row for the upsert, SQLite has one
// writer.
func (d *Directory) reserveName(ctx context.Context, k nameKey, now time.Time) (bool, error) {
	nowUS := store.Micros(now)
	stale := store.Micros(now.Add(-d.cfg.LockoutDuration))
	var failures int
	err := d.db.QueryRowContext(ctx, `INSERT INTO identity_login_failures (name_mac, failures, last_failure_at, locked_until)
		VALUES ($1, 1, $2, 0)
		ON CONFLICT (name_mac) DO UPDATE SET
			failures = CASE WHEN identity_login_failures.locked_until > 0 OR identity_login_failures.last_failure_at < $3
				THEN 1 ELSE identity_login_failures.failures + 1 END,
			locked_until = 0,
			last_failure_at = excluded.last_failure_at
		WHERE identity_login_failures.locked_until <= $2 AND (identity_login_failures.failures < $4
			OR identity_login_failures.locked_until > 0 OR identity_login_failures.last_failure_at < $3)
		RETURNING failures`, []byte(k), nowUS, stale, d.cfg.MaxFailures).Scan(&failures)
	if errNoRows(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("identity: count login attempt: %w", err)
	}
	return true, nil
}

// refundName gives back the place an attempt took in the count of the
// name k, unless the name got locked meanwhile (then the count no longer
// matters). It runs in a statement of its own; an error is only logged.
func (d *Directory) refundName(ctx context.Context, k nameKey) {
	_, err := d.db.ExecContext(ctx, `UPDATE identity_login_failures SET failures = failures - 1
		WHERE name_mac = $1 AND failures > 0 AND locked_until = 0`, []byte(k))
	if err != nil {
		d.logger.WarnContext(ctx, "identity: give back a login attempt", "err", err)
	}
}

// lockIfFullTx, for a failed attempt that reserved its place in the count
// of the name k, locks the name until now+LockoutDuration once the count
// reaches MaxFailures, in tx: it returns the count and that time, or the
// zero time when this failure locked nothing (not full, or locked already).
// The count holds attempts still being checked too, so concurrent attempts
// lock the name as soon as the first of MaxFailures fails.
func (d *Directory) lockIfFullTx(ctx context.Context, tx *sql.Tx, k nameKey, now time.Time) (failures int, lockedUntil time.Time, err error) {
	until := now.Add(d.cfg.LockoutDuration)
	err = tx.QueryRowContext(ctx, `UPDATE identity_login_failures SET locked_until = $1
		WHERE name_mac = $2 AND locked_until = 0 AND failures >= $3 RETURNING failures`,
		store.Micros(until), []byte(k), d.cfg.MaxFailures).Scan(&failures)
	if errNoRows(err) {
		return 0, time.Time{}, nil
	}
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("identity: lock user name: %w", err)
	}
	return failures, until, nil
}

// resetFailuresTx clears the failure count of the name k after a
// successful login at now, in tx, unless the name is locked (perhaps by a
// concurrent failure since Login read it); it reports whether it is. The
// conditional delete and the check after it see such a concurrent lock on
// either backend, so a locked name never logs in.
func (d *Directory) resetFailuresTx(ctx context.Context, tx *sql.Tx, k nameKey, now time.Time) (locked bool, err error) {
	nowUS := store.Micros(now)
	if _, err := tx.ExecContext(ctx, `DELETE FROM identity_login_failures WHERE name_mac = $1 AND locked_until <= $2`, []byte(k), nowUS); err != nil {
		return false, fmt.Errorf("identity: reset failed logins: %w", err)
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM identity_login_failures WHERE name_mac = $1 AND locked_until > $2`, []byte(k), nowUS).Scan(&n); err != nil {
		return false, fmt.Errorf("identity: read lockout: %w", err)
	}
	return n > 0, nil
}

// unlockTx clears the failure count and any lockout of the name k in tx
// (an admin's SetPassword, EnableUser or UnlockUser).
func (d *Directory) unlockTx(ctx context.Context, tx *sql.Tx, k nameKey) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM identity_login_failures WHERE name_mac = $1`, []byte(k)); err != nil {
		return fmt.Errorf("identity: clear lockout: %w", err)
	}
	return nil
}

// pruneFailures deletes up to pruneBatch rows of identity_login_failures
// that no longer count at now: their lock has ended and their last attempt
// is older than LockoutDuration (reserveName would start them again at 1). It runs after a failed login commits, in a statement of its own, so
// that it never holds a row lock while waiting for another; an error is
// only logged.
func (d *Directory) pruneFailures(ctx context.Context, now time.Time) {
	_, err := d.db.ExecContext(ctx, `DELETE FROM identity_login_failures WHERE name_mac IN (
		SELECT name_mac FROM identity_login_failures WHERE last_failure_at < $1 AND locked_until <= $2
		ORDER BY last_failure_at LIMIT $3)`,
		store.Micros(now.Add(-d.cfg.LockoutDuration)), store.Micros(now), pruneBatch)
	if err != nil {
		d.logger.WarnContext(ctx, "identity: prune failed-login counts", "err", err)
	}
}
