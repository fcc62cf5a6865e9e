package vault

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// The waitlist of an account is a table of rows ordered by an increasing
// sequence number: the oldest row is the head, and only the head may take
// a free slot. Each waiting Checkout refreshes its row's last_seen every
// WaitPoll; a row not refreshed for the stale period (its process died,
// or its request was abandoned without cleanup) is deleted by the next
// attempt on the account and by Run. Rows are added and served under the
// account's lock, so their order is the order in which waiters joined.

// Waiter is a request waiting for an account.
type Waiter struct {
	Account    string    `json:"account"`
	Principal  string    `json:"principal"` // actor: "user:alice"
	EnqueuedAt time.Time `json:"enqueued_at"`
	Position   int       `json:"position"` // 1: next to be served
}

// LeaseList is who holds and who waits for accounts.
type LeaseList struct {
	Leases  []Lease  `json:"leases"`
	Waiting []Waiter `json:"waiting"`
}

// queueTx deletes the account's stale waiters and, when waiting, refreshes
// row wid. It reports whether wid is queued and how many waiters are ahead
// of it (all of them, when it is not queued).
func (v *Vault) queueTx(ctx context.Context, tx *sql.Tx, account, wid string, now int64, wait bool) (queued bool, ahead int, err error) {
	if _, err := tx.ExecContext(ctx, `DELETE FROM vault_waitlist WHERE account_id = $1 AND last_seen < $2`,
		account, now-v.stale.Microseconds()); err != nil {
		return false, 0, fmt.Errorf("vault: drop stale waiters of %q: %w", account, err)
	}
	if wait {
		res, err := tx.ExecContext(ctx, `UPDATE vault_waitlist SET last_seen = $1 WHERE id = $2`, now, wid)
		if err != nil {
			return false, 0, fmt.Errorf("vault: refresh waiter of %q: %w", account, err)
		}
		n, _ := res.RowsAffected()
		queued = n == 1
	}
	q, args := `SELECT COUNT(*) FROM vault_waitlist WHERE account_id = $1`, []any{account}
	if queued {
		q += ` AND seq < (SELECT seq FROM vault_waitlist WHERE id = $2)`
		args = append(args, wid)
	}
	if err := tx.QueryRowContext(ctx, q, args...).Scan(&ahead); err != nil {
		return false, 0, fmt.Errorf("vault: read waitlist of %q: %w", account, err)
	}
	return queued, ahead, nil
}

// enqueueTx adds wid at the end of the account's waitlist.
func (v *Vault) enqueueTx(ctx context.Context, tx *sql.Tx, account, wid, actor string, now int64) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO vault_waitlist (id, account_id, principal, enqueued_at, last_seen)
		VALUES ($1, $2, $3, $4, $4)`, wid, account, actor, now); err != nil {
		return fmt.Errorf("vault: join waitlist of %q: %w", account, err)
	}
	return nil
}

// ahead reports, reading only, whether waitlist row wid exists and how
// many live waiters are ahead of it.
func (v *Vault) ahead(ctx context.Context, account, wid string) (n int, queued bool, err error) {
	_, now := v.nowMicros()
	err = v.db.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM vault_waitlist w
		WHERE w.account_id = $1 AND w.last_seen >= $2 AND w.seq < m.seq) FROM vault_waitlist m WHERE m.id = $3`,
		account, now-v.stale.Microseconds(), wid).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("vault: read waitlist of %q: %w", account, err)
	}
	return n, true, nil
}

// dropStaleWaiters deletes the waiters of every account not heard from
// for the stale period.
func (v *Vault) dropStaleWaiters(ctx context.Context) error {
	_, now := v.nowMicros()
	if _, err := v.db.ExecContext(ctx, `DELETE FROM vault_waitlist WHERE last_seen < $1`, now-v.stale.Microseconds()); err != nil {
		return fmt.Errorf("vault: drop stale waiters: %w", err)
	}
	return nil
}

// Leases lists the active leases of account, or of every account when
// account is "", and the requests waiting, in the order they will be
// served. An expired lease is not listed, whether or not it was ended.
func (v *Vault) Leases(ctx context.Context, account string) (LeaseList, error) {
	return v.leases(ctx, account, "")
}

// LeasesHeldBy is Leases restricted to the leases held and the requests
// waiting by one principal (its actor, "user:alice"): what a caller who
// may not see everyone's is shown. A waiter's Position still counts the
// others ahead of it.
func (v *Vault) LeasesHeldBy(ctx context.Context, account, actor string) (LeaseList, error) {
	if actor == "" {
		return LeaseList{}, errkind.New(errkind.Invalid, "vault: no principal to list the leases of")
	}
	return v.leases(ctx, account, actor)
}

// leases lists the leases and waiters of account ("": all), held by actor
// ("": anyone).
func (v *Vault) leases(ctx context.Context, account, actor string) (LeaseList, error) {
	_, now := v.nowMicros()
	where, args := `ended_at IS NULL AND expires_at > $1`, []any{now}
	wwhere, wargs := `last_seen >= $1`, []any{now - v.stale.Microseconds()}
	if account != "" {
		where, args = where+` AND account_id = $2`, append(args, account)
		wwhere, wargs = wwhere+` AND account_id = $2`, append(wargs, account)
	}
	if actor != "" {
		args = append(args, actor)
		where += fmt.Sprintf(` AND holder = $%d`, len(args))
	}
	out := LeaseList{Leases: []Lease{}, Waiting: []Waiter{}}
	ls, err := queryLeases(ctx, v.db, where, args...)
	if err != nil {
		return LeaseList{}, err
	}
	out.Leases = append(out.Leases, ls...)
	rows, err := v.db.QueryContext(ctx, `SELECT account_id, principal, enqueued_at FROM vault_waitlist WHERE `+wwhere+
		` ORDER BY account_id, seq`, wargs...)
	if err != nil {
		return LeaseList{}, fmt.Errorf("vault: read waitlist: %w", err)
	}
	defer rows.Close()
	pos := map[string]int{}
	for rows.Next() {
		var w Waiter
		var at int64
		if err := rows.Scan(&w.Account, &w.Principal, &at); err != nil {
			return LeaseList{}, fmt.Errorf("vault: read waitlist: %w", err)
		}
		w.EnqueuedAt = store.FromMicros(at)
		pos[w.Account]++
		w.Position = pos[w.Account]
		if actor == "" || w.Principal == actor {
			out.Waiting = append(out.Waiting, w)
		}
	}
	return out, rows.Err()
}
