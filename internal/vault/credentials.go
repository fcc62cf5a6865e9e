package vault

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// Credential version states. An account has at most one current and one
// pending version; the version current before the last promotion is
// previous, older ones and dropped pendings are retired.
const (
	StateCurrent  = "current"
	StatePending  = "pending"
	StatePrevious = "previous"
	StateRetired  = "retired"
)

// maxReason bounds free-text reasons recorded in audit events.
const maxReason = 512

// credentialAAD binds a credential ciphertext to its account and version.
func credentialAAD(accountID string, version int64) barrier.AAD {
	return barrier.AAD{Kind: "vault.credential", ID: accountID, Version: version}
}

// CredentialVersion describes one stored version of an account's
// credential, without the credential.
type CredentialVersion struct {
	Version   int64     `json:"version"`
	State     string    `json:"state"`
	PublicKey string    `json:"public_key,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Versions lists the credential versions of an account, newest first: its
// version history.
func (v *Vault) Versions(ctx context.Context, accountID string) ([]CredentialVersion, error) {
	if _, err := v.Account(ctx, accountID); err != nil {
		return nil, err
	}
	rows, err := v.db.QueryContext(ctx, `SELECT version, state, public_key, created_at FROM vault_credentials
		WHERE account_id = $1 ORDER BY version DESC`, accountID)
	if err != nil {
		return nil, fmt.Errorf("vault: list versions of %q: %w", accountID, err)
	}
	defer rows.Close()
	out := []CredentialVersion{}
	for rows.Next() {
		var c CredentialVersion
		var created int64
		if err := rows.Scan(&c.Version, &c.State, &c.PublicKey, &created); err != nil {
			return nil, fmt.Errorf("vault: list versions of %q: %w", accountID, err)
		}
		c.CreatedAt = store.FromMicros(created)
		out = append(out, c)
	}
	return out, rows.Err()
}

// credentialIn reads and decrypts the credential of accountID in state,
// through q (the DB or a transaction). found is false when there is none.
func (v *Vault) credentialIn(ctx context.Context, q querier, accountID, state string) (version int64, c connector.Credential, found bool, err error) {
	var kind string
	var ct []byte
	err = q.QueryRowContext(ctx, `SELECT version, kind, credential_ct, public_key FROM vault_credentials
		WHERE account_id = $1 AND state = $2`, accountID, state).Scan(&version, &kind, &ct, &c.PublicKey)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, connector.Credential{}, false, nil
	}
	if err != nil {
		return 0, connector.Credential{}, false, fmt.Errorf("vault: read %s credential of %q: %w", state, accountID, err)
	}
	c.Kind = connector.CredentialKind(kind)
	if c.Secret, err = v.cipher.Decrypt(ctx, credentialAAD(accountID, version), ct); err != nil {
		return 0, connector.Credential{}, false, fmt.Errorf("vault: decrypt credential %d of %q: %w", version, accountID, err)
	}
	return version, c, true, nil
}

// CurrentCredential returns the current credential of an account and its
// version. An account without one is NotFound.
func (v *Vault) CurrentCredential(ctx context.Context, accountID string) (int64, connector.Credential, error) {
	ver, c, ok, err := v.credentialIn(ctx, v.db, accountID, StateCurrent)
	if err == nil && !ok {
		if _, err := v.Account(ctx, accountID); err != nil {
			return 0, c, err
		}
		return 0, c, errkind.New(errkind.NotFound, "vault: %s has no credential yet", accountID)
	}
	return ver, c, err
}

// PendingCredential returns the pending credential of an account, if any.
func (v *Vault) PendingCredential(ctx context.Context, accountID string) (int64, connector.Credential, bool, error) {
	return v.credentialIn(ctx, v.db, accountID, StatePending)
}

// StagePending stores cred as the account's pending version, encrypted,
// and returns its version number. Call it before touching the target, so
// that a crash leaves the new credential recoverable. An account with a
// pending version already is a Conflict.
func (v *Vault) StagePending(ctx context.Context, o audit.Origin, accountID string, cred connector.Credential) (int64, error) {
	var version int64
	_, now := v.nowMicros()
	err := v.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := v.db.Lock(ctx, tx, "vault.account:"+accountID); err != nil {
			return err
		}
		a, err := accountTx(ctx, tx, accountID)
		if err != nil {
			return err
		}
		if a.HasPending {
			return errkind.New(errkind.Conflict, "vault: %s has a pending credential already; promote or drop it first", accountID)
		}
		if err := checkCredential(&cred, a.Kind); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) + 1 FROM vault_credentials WHERE account_id = $1`,
			accountID).Scan(&version); err != nil {
			return fmt.Errorf("vault: stage credential of %q: %w", accountID, err)
		}
		ct, err := v.cipher.Encrypt(ctx, credentialAAD(accountID, version), cred.Secret)
		if err != nil {
			return fmt.Errorf("vault: encrypt credential of %q: %w", accountID, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO vault_credentials (account_id, version, state, kind, credential_ct, public_key, created_at)
			VALUES ($1, $2, 'pending', $3, $4, $5, $6)`, accountID, version, string(a.Kind), ct, cred.PublicKey, now); err != nil {
			return fmt.Errorf("vault: stage credential of %q: %w", accountID, err)
		}
		_, err = v.audit.AppendTx(ctx, tx, o.Event("account.rotate_stage", "account:"+accountID, audit.OutcomeSuccess,
			map[string]string{"version": strconv.FormatInt(version, 10)}))
		return err
	})
	if err != nil {
		return 0, err
	}
	return version, nil
}

// pendingTx checks that version is the pending version of accountID.
func pendingTx(ctx context.Context, tx *sql.Tx, accountID string, version int64) error {
	var state string
	err := tx.QueryRowContext(ctx, `SELECT state FROM vault_credentials WHERE account_id = $1 AND version = $2`,
		accountID, version).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return errkind.New(errkind.NotFound, "vault: %s has no credential version %d", clip(accountID), version)
	}
	if err != nil {
		return fmt.Errorf("vault: read credential %d of %q: %w", version, clip(accountID), err)
	}
	if state != StatePending {
		return errkind.New(errkind.Conflict, "vault: credential %d of %s is %s, not pending", version, accountID, state)
	}
	return nil
}

// PromotePending makes the pending version the current one, after it was
// set on the target and logged in: the old current becomes previous, the
// account's status ok, its rotation no longer due, and its next scheduled
// rotation one period from now.
func (v *Vault) PromotePending(ctx context.Context, o audit.Origin, accountID string, version int64) error {
	_, now := v.nowMicros()
	err := v.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := v.db.Lock(ctx, tx, "vault.account:"+accountID); err != nil {
			return err
		}
		if err := pendingTx(ctx, tx, accountID, version); err != nil {
			return err
		}
		for _, q := range []string{
			`UPDATE vault_credentials SET state = 'retired' WHERE account_id = $1 AND state = 'previous'`,
			`UPDATE vault_credentials SET state = 'previous' WHERE account_id = $1 AND state = 'current'`,
			`UPDATE vault_credentials SET state = 'current' WHERE account_id = $1 AND state = 'pending'`,
		} {
			if _, err := tx.ExecContext(ctx, q, accountID); err != nil {
				return fmt.Errorf("vault: promote credential %d of %q: %w", version, accountID, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE vault_accounts SET status = 'ok', last_rotated_at = $2, last_verified_at = $2,
			rotation_due_at = 0, next_rotation_at = CASE WHEN rotate_every > 0 THEN $2 + rotate_every ELSE 0 END
			WHERE id = $1`, accountID, now); err != nil {
			return fmt.Errorf("vault: promote credential %d of %q: %w", version, accountID, err)
		}
		_, err := v.audit.AppendTx(ctx, tx, o.Event("account.rotate", "account:"+accountID, audit.OutcomeSuccess,
			map[string]string{"version": strconv.FormatInt(version, 10)}))
		return err
	})
	if err == nil {
		v.wake()
	}
	return err
}

// DropPending retires the pending version: the rotation did not take and
// the current version is still the live one. The ciphertext is kept in the
// history.
func (v *Vault) DropPending(ctx context.Context, o audit.Origin, accountID string, version int64, reason string) error {
	reason = clipText(reason, maxReason)
	err := v.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := v.db.Lock(ctx, tx, "vault.account:"+accountID); err != nil {
			return err
		}
		if err := pendingTx(ctx, tx, accountID, version); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE vault_credentials SET state = 'retired' WHERE account_id = $1 AND version = $2`,
			accountID, version); err != nil {
			return fmt.Errorf("vault: drop credential %d of %q: %w", version, accountID, err)
		}
		_, err := v.audit.AppendTx(ctx, tx, o.Event("account.rotate", "account:"+accountID, audit.OutcomeFailure,
			map[string]string{"version": strconv.FormatInt(version, 10), "dropped": "true", "reason": reason}))
		return err
	})
	if err == nil {
		v.wake()
	}
	return err
}

// SetStatus sets an account's status. Setting out_of_sync writes the
// audit event "account.out_of_sync" (outcome failure) for alerting;
// other statuses write "account.status".
func (v *Vault) SetStatus(ctx context.Context, o audit.Origin, accountID, status, reason string) error {
	switch status {
	case StatusOK, StatusOutOfSync, StatusUnverified:
	default:
		return errkind.New(errkind.Invalid, "vault: status %q is not ok, out_of_sync or unverified", clip(status))
	}
	return v.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE vault_accounts SET status = $1 WHERE id = $2`, status, accountID)
		if err != nil {
			return fmt.Errorf("vault: set status of %q: %w", clip(accountID), err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errkind.New(errkind.NotFound, "vault: no account %q", clip(accountID))
		}
		return v.auditStatus(ctx, tx, o, accountID, status, reason)
	})
}

func (v *Vault) auditStatus(ctx context.Context, tx *sql.Tx, o audit.Origin, accountID, status, reason string) error {
	details := map[string]string{"status": status}
	if reason != "" {
		details["reason"] = clipText(reason, maxReason)
	}
	ev := o.Event("account.status", "account:"+accountID, audit.OutcomeSuccess, details)
	if status == StatusOutOfSync {
		ev = o.Event("account.out_of_sync", "account:"+accountID, audit.OutcomeFailure, details)
	}
	_, err := v.audit.AppendTx(ctx, tx, ev)
	return err
}

// MarkVerified records a verification of the account's current credential
// at at: ok sets the status ok and the last verification time; a failure
// sets it out_of_sync. A change of status is audited as by SetStatus.
func (v *Vault) MarkVerified(ctx context.Context, accountID string, ok bool, at time.Time) error {
	status := StatusOK
	if !ok {
		status = StatusOutOfSync
	}
	return v.db.InTx(ctx, func(tx *sql.Tx) error {
		var old string
		err := tx.QueryRowContext(ctx, `SELECT status FROM vault_accounts WHERE id = $1`, accountID).Scan(&old)
		if errors.Is(err, sql.ErrNoRows) {
			return errkind.New(errkind.NotFound, "vault: no account %q", clip(accountID))
		}
		if err != nil {
			return fmt.Errorf("vault: mark %q verified: %w", clip(accountID), err)
		}
		if ok {
			_, err = tx.ExecContext(ctx, `UPDATE vault_accounts SET status = 'ok', last_verified_at = $1 WHERE id = $2`, store.Micros(at), accountID)
		} else {
			_, err = tx.ExecContext(ctx, `UPDATE vault_accounts SET status = 'out_of_sync' WHERE id = $1`, accountID)
		}
		if err != nil {
			return fmt.Errorf("vault: mark %q verified: %w", accountID, err)
		}
		if old == status {
			return nil
		}
		return v.auditStatus(ctx, tx, system, accountID, status, "verification")
	})
}

// ClearRotationDue lets an account whose rotation after check-in is due be
// checked out again without that rotation (the rotation failed for good,
// or an administrator decided). Audited "account.rotation_due_cleared".
func (v *Vault) ClearRotationDue(ctx context.Context, o audit.Origin, accountID, reason string) error {
	err := v.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE vault_accounts SET rotation_due_at = 0 WHERE id = $1`, accountID)
		if err != nil {
			return fmt.Errorf("vault: clear rotation of %q: %w", clip(accountID), err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errkind.New(errkind.NotFound, "vault: no account %q", clip(accountID))
		}
		_, err = v.audit.AppendTx(ctx, tx, o.Event("account.rotation_due_cleared", "account:"+accountID, audit.OutcomeSuccess,
			map[string]string{"reason": clipText(reason, maxReason)}))
		return err
	})
	if err == nil {
		v.wake()
	}
	return err
}

// AccountsDue lists the accounts to rotate at now: their RotateEvery has
// elapsed since the last rotation, or a lease of theirs ended
// (RotationDue). The caller rotates an account with active leases only if
// it means to cut their holders off.
func (v *Vault) AccountsDue(ctx context.Context, now time.Time) ([]Account, error) {
	return v.queryAccounts(ctx, `WHERE (a.rotate_every > 0 AND a.next_rotation_at <= $1) OR a.rotation_due_at <> 0`, store.Micros(now))
}

// AccountsWithPending lists the accounts with a pending credential: on
// start, each is an interrupted rotation to recover.
func (v *Vault) AccountsWithPending(ctx context.Context) ([]Account, error) {
	return v.queryAccounts(ctx, `WHERE EXISTS (SELECT 1 FROM vault_credentials c WHERE c.account_id = a.id AND c.state = 'pending')`)
}

// ClaimRotation claims the right to rotate an account for ttl, for owner
// (unique per process and rotation, e.g. a random id). It returns false
// when another owner holds an unexpired claim. A claim expires after ttl,
// so that a crashed owner does not block the account forever; the owner
// renews it by claiming again. Claims are rows in the database, so they
// serialise rotations across processes on either backend.
func (v *Vault) ClaimRotation(ctx context.Context, accountID, owner string, ttl time.Duration) (bool, error) {
	if owner == "" || len(owner) > 256 || ttl <= 0 {
		return false, errkind.New(errkind.Invalid, "vault: a rotation claim needs an owner and a positive TTL")
	}
	_, now := v.nowMicros()
	res, err := v.db.ExecContext(ctx, `UPDATE vault_accounts SET rotating_by = $1, rotating_until = $2
		WHERE id = $3 AND (rotating_by = '' OR rotating_by = $1 OR rotating_until <= $4)`,
		owner, now+ttl.Microseconds(), accountID, now)
	if err != nil {
		return false, fmt.Errorf("vault: claim rotation of %q: %w", clip(accountID), err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return true, nil
	}
	if _, err := v.Account(ctx, accountID); err != nil {
		return false, err
	}
	return false, nil
}

// ClaimRotationWait is ClaimRotation, except that while another owner
// holds the claim it waits for that claim to be released or to expire, up
// to wait, then claims. It returns false when wait passed first (wait <= 0:
// it does not wait), and ctx's error when ctx ended first. A release in
// this process wakes it at once; one in another process is seen within
// Config.WaitPoll.
func (v *Vault) ClaimRotationWait(ctx context.Context, accountID, owner string, ttl, wait time.Duration) (bool, error) {
	if wait <= 0 {
		return v.ClaimRotation(ctx, accountID, owner, ttl)
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(v.poll)
	defer tick.Stop()
	for {
		woken := v.wakeup()
		ok, err := v.ClaimRotation(ctx, accountID, owner, ttl)
		if err != nil || ok {
			return ok, err
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-deadline.C:
			return false, nil
		case <-woken:
		case <-tick.C:
		}
	}
}

// ReleaseRotation gives up owner's claim on an account, if it holds one,
// and wakes this process's waiters for it.
func (v *Vault) ReleaseRotation(ctx context.Context, accountID, owner string) error {
	if _, err := v.db.ExecContext(ctx, `UPDATE vault_accounts SET rotating_by = '', rotating_until = 0
		WHERE id = $1 AND rotating_by = $2`, accountID, owner); err != nil {
		return fmt.Errorf("vault: release rotation of %q: %w", clip(accountID), err)
	}
	v.wake()
	return nil
}

// rotatingTx reports whether a live claim (ClaimRotation) holds the
// account at now: a rotation or recovery of it is in progress.
func rotatingTx(ctx context.Context, tx *sql.Tx, accountID string, now int64) (bool, error) {
	var by string
	var until int64
	if err := tx.QueryRowContext(ctx, `SELECT rotating_by, rotating_until FROM vault_accounts WHERE id = $1`,
		accountID).Scan(&by, &until); err != nil {
		return false, fmt.Errorf("vault: read rotation claim of %q: %w", clip(accountID), err)
	}
	return by != "" && until > now, nil
}

// ReleaseAbandonedClaims ends every rotation claim whose owner does not
// start with keep (the caller's own prefix), when the store is SQLite: only
// one process can open a SQLite store at a time (store.Open holds an
// exclusive lock on it), so such a claim was left by a process that died,
// and waiting for it to expire would only delay recovery. On PostgreSQL,
// which several live processes may share, claims end only by expiring, and
// this does nothing. Call it at start, before recovering. It returns how
// many claims it ended.
func (v *Vault) ReleaseAbandonedClaims(ctx context.Context, keep string) (int, error) {
	if v.db.Kind() != store.SQLite {
		return 0, nil
	}
	res, err := v.db.ExecContext(ctx, `UPDATE vault_accounts SET rotating_by = '', rotating_until = 0
		WHERE rotating_by <> '' AND substr(rotating_by, 1, $1) <> $2`, len(keep), keep)
	if err != nil {
		return 0, fmt.Errorf("vault: release abandoned rotation claims: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// clipText shortens s to at most n bytes without splitting a character.
func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
