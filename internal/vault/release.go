package vault

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/store"
)

// endLeaseTx ends lease l of account a at now for reason, audits it as
// action by o, and marks a rotation due when gate is set and a rotates on
// check-in.
func (v *Vault) endLeaseTx(ctx context.Context, tx *sql.Tx, o audit.Origin, a Account, l *Lease, now int64, reason, action string, gate bool) (release, error) {
	if _, err := tx.ExecContext(ctx, `UPDATE vault_leases SET ended_at = $1, end_reason = $2 WHERE id = $3`, now, reason, l.ID); err != nil {
		return release{}, fmt.Errorf("vault: end lease on %q: %w", a.ID, err)
	}
	l.EndedAt, l.EndReason = store.FromMicros(now), reason
	if gate && a.RotateOnCheckin {
		if _, err := tx.ExecContext(ctx, `UPDATE vault_accounts SET rotation_due_at = $1 WHERE id = $2 AND rotation_due_at = 0`, now, a.ID); err != nil {
			return release{}, fmt.Errorf("vault: mark %q for rotation: %w", a.ID, err)
		}
	}
	_, err := v.audit.AppendTx(ctx, tx, o.Event(action, "account:"+a.ID, audit.OutcomeSuccess,
		map[string]string{"lease_id": l.ID, "holder": l.Holder, "reason": reason}))
	return release{account: a.ID, reason: reason, rotate: a.RotateOnCheckin}, err
}

// endExpiredTx ends the leases of a that expired by now.
func (v *Vault) endExpiredTx(ctx context.Context, tx *sql.Tx, a Account, now int64, gate bool) ([]release, error) {
	ls, err := queryLeases(ctx, tx, `account_id = $1 AND ended_at IS NULL AND expires_at <= $2`, a.ID, now)
	if err != nil {
		return nil, err
	}
	var out []release
	for i := range ls {
		r, err := v.endLeaseTx(ctx, tx, system, a, &ls[i], now, EndExpired, "account.lease_expired", gate)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// endWhere ends, in one transaction per account, the open leases of the
// given accounts that match where (args follow account id), and fires the
// hooks.
func (v *Vault) endWhere(ctx context.Context, o audit.Origin, accounts []string, where string, args []any, reason, action string) ([]Lease, error) {
	gate := v.rotationGate()
	var ended []Lease
	var rs []release
	var errs []error
	for _, id := range accounts {
		_, now := v.nowMicros()
		var ls []Lease
		var r []release
		err := v.db.InTx(ctx, func(tx *sql.Tx) error {
			ls, r = nil, nil
			if err := v.db.Lock(ctx, tx, "vault.account:"+id); err != nil {
				return err
			}
			a, err := accountTx(ctx, tx, id)
			if err != nil {
				return err
			}
			if ls, err = queryLeases(ctx, tx, `account_id = $1 AND ended_at IS NULL AND `+where, append([]any{id}, args...)...); err != nil {
				return err
			}
			for i := range ls {
				rel, err := v.endLeaseTx(ctx, tx, o, a, &ls[i], now, reason, action, gate)
				if err != nil {
					return err
				}
				r = append(r, rel)
			}
			return nil
		})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ended, rs = append(ended, ls...), append(rs, r...)
	}
	v.fireReleases(ctx, rs)
	return ended, errors.Join(errs...)
}

// Checkin ends principal's active lease on account. NotFound if it holds
// none (an expired lease is not held).
func (v *Vault) Checkin(ctx context.Context, o audit.Origin, principal identity.Principal, account string) (Lease, error) {
	_, now := v.nowMicros()
	ls, err := v.endWhere(ctx, o, []string{account}, `holder = $2 AND expires_at > $3`, []any{principal.Actor(), now}, EndCheckin, "account.checkin")
	if err != nil {
		return Lease{}, err
	}
	if len(ls) == 0 {
		return Lease{}, errkind.New(errkind.NotFound, "vault: %s holds no lease on %s", principal.Actor(), clip(account))
	}
	return ls[0], nil
}

// CheckinLease ends the lease leaseID if principal holds it and it has not
// ended or expired: a gateway checks in the very lease its sessions used,
// never a newer one. NotFound otherwise.
func (v *Vault) CheckinLease(ctx context.Context, o audit.Origin, principal identity.Principal, leaseID string) (Lease, error) {
	var account string
	err := v.db.QueryRowContext(ctx, `SELECT account_id FROM vault_leases WHERE id = $1 AND ended_at IS NULL`, leaseID).Scan(&account)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return Lease{}, fmt.Errorf("vault: read lease: %w", err)
	}
	if err == nil {
		_, now := v.nowMicros()
		ls, err := v.endWhere(ctx, o, []string{account}, `id = $2 AND holder = $3 AND expires_at > $4`,
			[]any{leaseID, principal.Actor(), now}, EndCheckin, "account.checkin")
		if err != nil {
			return Lease{}, err
		}
		if len(ls) == 1 {
			return ls[0], nil
		}
	}
	return Lease{}, errkind.New(errkind.NotFound, "vault: %s holds no open lease %q", principal.Actor(), clip(leaseID))
}

// ForceCheckin ends a lease whoever holds it. The caller checks that o may
// (an administrator).
func (v *Vault) ForceCheckin(ctx context.Context, o audit.Origin, leaseID string) (Lease, error) {
	var account string
	err := v.db.QueryRowContext(ctx, `SELECT account_id FROM vault_leases WHERE id = $1 AND ended_at IS NULL`, leaseID).Scan(&account)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return Lease{}, fmt.Errorf("vault: read lease: %w", err)
	}
	if err == nil {
		ls, err := v.endWhere(ctx, o, []string{account}, `id = $2`, []any{leaseID}, EndForced, "account.force_checkin")
		if err != nil {
			return Lease{}, err
		}
		if len(ls) == 1 {
			return ls[0], nil
		}
	}
	return Lease{}, errkind.New(errkind.NotFound, "vault: no open lease %q", clip(leaseID))
}

// EndLeasesOf ends every lease of p and removes p from every waitlist: for
// the identity lifecycle hook, when p is disabled or deleted. It returns
// how many leases it ended.
func (v *Vault) EndLeasesOf(ctx context.Context, o audit.Origin, p identity.Principal) (int, error) {
	actor := p.Actor()
	if _, err := v.db.ExecContext(ctx, `DELETE FROM vault_waitlist WHERE principal = $1`, actor); err != nil {
		return 0, fmt.Errorf("vault: remove %s from waitlists: %w", actor, err)
	}
	accounts, err := v.distinctAccounts(ctx, `SELECT DISTINCT account_id FROM vault_leases WHERE holder = $1 AND ended_at IS NULL`, actor)
	if err != nil {
		return 0, err
	}
	ls, err := v.endWhere(ctx, o, accounts, `holder = $2`, []any{actor}, EndHolderDisabled, "account.lease_revoked")
	return len(ls), err
}

// ExpireLeases ends the leases past their expiry, audited
// "account.lease_expired", and returns how many it ended.
func (v *Vault) ExpireLeases(ctx context.Context) (int, error) {
	_, now := v.nowMicros()
	accounts, err := v.distinctAccounts(ctx, `SELECT DISTINCT account_id FROM vault_leases WHERE ended_at IS NULL AND expires_at <= $1`, now)
	if err != nil {
		return 0, err
	}
	ls, err := v.endWhere(ctx, system, accounts, `expires_at <= $2`, []any{now}, EndExpired, "account.lease_expired")
	return len(ls), err
}

func (v *Vault) distinctAccounts(ctx context.Context, q string, args ...any) ([]string, error) {
	rows, err := v.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("vault: read leases: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("vault: read leases: %w", err)
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// Extend sets the expiry of principal's active lease leaseID to ttl from
// now, within MaxLeaseTTL of its check-out. A refusal is audited
// (auditExtendRefusal); someone else's lease is NotFound, as one that does
// not exist.
func (v *Vault) Extend(ctx context.Context, o audit.Origin, principal identity.Principal, leaseID string, ttl time.Duration) (_ Lease, err error) {
	defer func() {
		if err != nil && errkind.Of(err) != errkind.Other {
			v.auditExtendRefusal(ctx, o, principal, leaseID, err)
		}
	}()
	if ttl <= 0 {
		return Lease{}, errkind.New(errkind.Invalid, "vault: an extension needs a positive TTL")
	}
	_, now := v.nowMicros()
	var l Lease
	err = v.db.InTx(ctx, func(tx *sql.Tx) error {
		ls, err := queryLeases(ctx, tx, `id = $1 AND holder = $2 AND ended_at IS NULL AND expires_at > $3`, leaseID, principal.Actor(), now)
		if err != nil {
			return err
		}
		if len(ls) == 0 {
			return errkind.New(errkind.NotFound, "vault: %s holds no lease %q", principal.Actor(), clip(leaseID))
		}
		l = ls[0]
		limit := l.CheckedOutAt.Add(v.maxTTL)
		exp := store.FromMicros(now + ttl.Microseconds())
		if exp.After(limit) {
			return errkind.New(errkind.Invalid, "vault: a lease may last at most %v from its check-out, until %s", v.maxTTL, limit.Format(time.RFC3339))
		}
		res, err := tx.ExecContext(ctx, `UPDATE vault_leases SET expires_at = $1 WHERE id = $2 AND ended_at IS NULL`, store.Micros(exp), l.ID)
		if err != nil {
			return fmt.Errorf("vault: extend lease: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errkind.New(errkind.NotFound, "vault: lease %q ended", clip(leaseID))
		}
		l.ExpiresAt = exp
		_, err = v.audit.AppendTx(ctx, tx, o.Event("account.lease_extend", "account:"+l.Account, audit.OutcomeSuccess,
			map[string]string{"lease_id": l.ID, "expires_at": exp.Format(time.RFC3339)}))
		return err
	})
	return l, err
}

// auditExtendRefusal records a refused extension of lease leaseID by
// principal as "account.lease_extend" with outcome failure and the
// category in "error": not_holder (someone else's lease), ended (ended
// or expired), not_found (no such lease), or the error's kind (invalid:
// a bad TTL or beyond MaxLeaseTTL).
func (v *Vault) auditExtendRefusal(ctx context.Context, o audit.Origin, principal identity.Principal, leaseID string, cause error) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	resource, category := "lease:"+clip(leaseID), errkind.Of(cause).String()
	var account, holder string
	var ended sql.NullInt64
	var exp int64
	err := v.db.QueryRowContext(actx, `SELECT account_id, holder, ended_at, expires_at FROM vault_leases WHERE id = $1`, leaseID).
		Scan(&account, &holder, &ended, &exp)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		v.log.WarnContext(actx, "vault: read lease of a refused extension", "err", err)
	default:
		resource = "account:" + account
	}
	if errkind.Is(cause, errkind.NotFound) && err == nil {
		_, now := v.nowMicros()
		switch {
		case holder != principal.Actor():
			category = "not_holder"
		case ended.Valid || exp <= now:
			category = "ended"
		}
	}
	ev := o.Event("account.lease_extend", resource, audit.OutcomeFailure, map[string]string{"lease_id": clip(leaseID), "error": category})
	if _, err := v.audit.Append(actx, ev); err != nil {
		v.log.ErrorContext(actx, "vault: audit refused extension", "err", err)
	}
}
