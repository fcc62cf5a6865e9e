package vault

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/store"
)

// Limits on a check-out's free text.
const (
	maxCheckoutReason = 512
	maxTicket         = 128
)

// Why a lease ended (Lease.EndReason, and the reason given to OnRelease).
const (
	EndCheckin        = "checkin"
	EndExpired        = "expired"
	EndForced         = "forced"
	EndHolderDisabled = "holder_disabled"
)

// CheckoutRequest asks for an account's credential.
type CheckoutRequest struct {
	Account   string // "target/username"
	Principal identity.Principal
	Reason    string // required
	Ticket    string
	// TTL of the lease. Zero: Config.DefaultLeaseTTL; at most MaxLeaseTTL.
	TTL time.Duration
	// Wait joins the account's waitlist when it is fully checked out,
	// until a slot is free or ctx ends.
	Wait bool
	// Context is the policy context; Checkout sets its Ticket and Reason.
	Context authz.Context
	// Action is the permission the check-out needs: zero or
	// authz.ActionCheckout for a person's check-out (the credential is
	// handed to them), authz.ActionConnect for a gateway session's implicit
	// check-out (the credential stays in the gateway). Others are refused.
	Action string
}

// Lease is a check-out of an account.
type Lease struct {
	ID                string    `json:"lease_id"`
	Account           string    `json:"account"`
	Holder            string    `json:"holder"` // the principal's actor: "user:alice"
	Reason            string    `json:"reason"`
	Ticket            string    `json:"ticket,omitempty"`
	CheckedOutAt      time.Time `json:"checked_out_at"`
	ExpiresAt         time.Time `json:"expires_at"`
	EndedAt           time.Time `json:"ended_at,omitzero"`
	EndReason         string    `json:"end_reason,omitempty"`
	CredentialVersion int64     `json:"credential_version,omitempty"`
	// Credential is set only in Checkout's answer, once; it is never
	// stored with the lease nor encoded with it.
	Credential *connector.Credential `json:"-"`
}

const leaseColumns = `id, account_id, holder, reason, ticket, checked_out_at, expires_at, ended_at, end_reason`

func scanLease(s scanner) (Lease, error) {
	var l Lease
	var out, exp int64
	var ended sql.NullInt64
	if err := s.Scan(&l.ID, &l.Account, &l.Holder, &l.Reason, &l.Ticket, &out, &exp, &ended, &l.EndReason); err != nil {
		return Lease{}, err
	}
	l.CheckedOutAt, l.ExpiresAt = store.FromMicros(out), store.FromMicros(exp)
	if ended.Valid {
		l.EndedAt = store.FromMicros(ended.Int64)
	}
	return l, nil
}

func queryLeases(ctx context.Context, tx querier, where string, args ...any) ([]Lease, error) {
	rows, err := tx.QueryContext(ctx, `SELECT `+leaseColumns+` FROM vault_leases WHERE `+where+` ORDER BY checked_out_at, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("vault: read leases: %w", err)
	}
	defer rows.Close()
	var out []Lease
	for rows.Next() {
		l, err := scanLease(rows)
		if err != nil {
			return nil, fmt.Errorf("vault: read leases: %w", err)
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// activeLeasesTx returns the leases of an account held at now: not ended
// and not expired.
func activeLeasesTx(ctx context.Context, tx *sql.Tx, accountID string, now int64) ([]Lease, error) {
	return queryLeases(ctx, tx, `account_id = $1 AND ended_at IS NULL AND expires_at > $2`, accountID, now)
}

// describeHolders names the holders of leases and their expiry.
func describeHolders(ls []Lease) string {
	parts := make([]string, len(ls))
	for i, l := range ls {
		parts[i] = l.Holder + " until " + l.ExpiresAt.Format(time.RFC3339)
	}
	return strings.Join(parts, ", ")
}

func principalUID(p identity.Principal) (authz.UID, error) {
	switch {
	case p.Name == "":
	case p.Kind == identity.KindUser:
		return authz.UID{Type: authz.TypeUser, ID: p.Name}, nil
	case p.Kind == identity.KindMachine:
		return authz.UID{Type: authz.TypeMachine, ID: p.Name}, nil
	}
	return authz.UID{}, errkind.New(errkind.Invalid, "vault: principal %q is not a user or machine", clip(p.Actor()))
}

// Checkout opens a lease on an account for req.Principal, if policy allows
// (action "checkout" on Account::"target/username"), and returns it with
// the current credential, decrypted once. When the account is fully
// checked out, it fails with a Conflict naming the holders and their
// expiry, or with req.Wait joins the waitlist and returns when served or
// when ctx ends (with ctx's error). When the account is free but gated by
// a rotation (see the package documentation), it waits for the rotation
// to finish, at most Config.RotationWait, then fails with an Unavailable
// error. A refusal after the policy allowed is audited (auditRefusal).
func (v *Vault) Checkout(ctx context.Context, o audit.Origin, req CheckoutRequest) (lease Lease, err error) {
	if _, _, err := SplitAccountID(req.Account); err != nil {
		return Lease{}, err
	}
	puid, err := principalUID(req.Principal)
	if err != nil {
		return Lease{}, err
	}
	switch {
	case strings.TrimSpace(req.Reason) == "":
		return Lease{}, errkind.New(errkind.Invalid, "vault: a check-out needs a reason")
	case len(req.Reason) > maxCheckoutReason:
		return Lease{}, errkind.New(errkind.Invalid, "vault: reason is longer than %d bytes", maxCheckoutReason)
	case len(req.Ticket) > maxTicket:
		return Lease{}, errkind.New(errkind.Invalid, "vault: ticket is longer than %d bytes", maxTicket)
	case req.TTL < 0 || req.TTL > v.maxTTL:
		return Lease{}, errkind.New(errkind.Invalid, "vault: lease TTL %v is not between 0 and the maximum %v", req.TTL, v.maxTTL)
	}
	if req.TTL == 0 {
		req.TTL = v.defaultTTL
	}
	switch req.Action {
	case "":
		req.Action = authz.ActionCheckout
	case authz.ActionCheckout, authz.ActionConnect:
	default:
		return Lease{}, errkind.New(errkind.Invalid, "vault: a check-out cannot be authorised by action %q", clip(req.Action))
	}
	actx := req.Context
	actx.Ticket, actx.Reason = req.Ticket, req.Reason
	d, err := v.authz.Authorize(ctx, o, authz.Request{Principal: puid, Action: req.Action,
		Resource: authz.UID{Type: authz.TypeAccount, ID: req.Account}, Context: actx})
	if err != nil {
		return Lease{}, err
	}
	if !d.Allow {
		return Lease{}, errkind.New(errkind.Denied, "vault: %s may not %s %s", req.Principal.Actor(), req.Action, req.Account)
	}
	// The policy allowed: from here on, a refusal is audited (the
	// decision alone would read as a check-out).
	defer func() {
		if err != nil {
			v.auditRefusal(ctx, o, req, err)
		}
	}()

	wid := newID() // this request's waitlist row, if it waits
	defer func() {
		if req.Wait {
			// The row is gone if served; otherwise leave the queue.
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if _, err := v.db.ExecContext(ctx, `DELETE FROM vault_waitlist WHERE id = $1`, wid); err != nil {
				v.log.WarnContext(ctx, "vault: leave waitlist", "account", req.Account, "err", err)
			}
		}
	}()
	tick := time.NewTicker(v.poll)
	defer tick.Stop()
	var rotDeadline *time.Timer // started when a rotation first holds the request up
	defer func() {
		if rotDeadline != nil {
			rotDeadline.Stop()
		}
	}()
	joined := false // wid has been added to the waitlist
	for {
		woken := v.wakeup()
		at, err := v.tryCheckout(ctx, o, req, wid, joined)
		v.fireReleases(ctx, at.released)
		if err != nil {
			if (req.Wait || rotDeadline != nil) && ctx.Err() != nil {
				return Lease{}, waitErr(ctx, req.Account)
			}
			return Lease{}, err
		}
		if at.won {
			if req.Wait {
				v.wake() // the next waiter is at the head now
			}
			return at.lease, nil
		}
		if !req.Wait {
			if !at.awaitsRotation() || v.rotWait <= 0 {
				return Lease{}, at.conflict(req.Account)
			}
			// Free but for a rotation in progress: wait for it to end
			// (a promotion or a released claim here wakes us; another
			// process's, the next tick), then try again.
			if rotDeadline == nil {
				rotDeadline = time.NewTimer(v.rotWait)
			}
			select {
			case <-ctx.Done():
				return Lease{}, waitErr(ctx, req.Account)
			case <-rotDeadline.C:
				return Lease{}, &refusal{category: RefusedRotationTimeout, err: errkind.New(errkind.Unavailable,
					"vault: %s %s, and the rotation did not finish within %v; try again later (`warder account show %s` tells its state)",
					req.Account, at.gated, v.rotWait, req.Account)}
			case <-woken:
			case <-tick.C:
			}
			continue
		}
		joined = true
		if err := v.await(ctx, req.Account, wid, at.ahead, woken, tick); err != nil {
			return Lease{}, err
		}
	}
}

func waitErr(ctx context.Context, account string) error {
	return &refusal{category: RefusedWaitEnded,
		err: fmt.Errorf("vault: waiting for %s: %w", account, errkind.Wrap(errkind.Unavailable, ctx.Err()))}
}

// await returns when waitlist row wid may head the account's queue (or is
// gone), for another attempt, or with an error when ctx ends. It reads the
// queue when woken by a release in this process, and on ticks, less often
// the more waiters are ahead (which only a release can change); it proves
// the row alive every quarter of the stale period.
func (v *Vault) await(ctx context.Context, account, wid string, ahead int, woken <-chan struct{}, tick *time.Ticker) error {
	lastBeat := time.Now() // tryCheckout refreshed the row
	skip := min(ahead, 9)
	for {
		look := false
		select {
		case <-ctx.Done():
			return waitErr(ctx, account)
		case <-tick.C:
			if skip > 0 {
				skip--
			} else {
				look = true
			}
		case <-woken:
			woken = v.wakeup()
			look = true
		}
		if time.Since(lastBeat) >= v.stale/4 {
			if ok, err := v.heartbeat(ctx, wid); err != nil || !ok {
				return nil // the next attempt fails if the row is gone
			}
			lastBeat = time.Now()
		}
		if !look {
			continue
		}
		n, queued, err := v.ahead(ctx, account, wid)
		if err != nil || !queued || n == 0 {
			return nil
		}
		skip = min(n, 9)
	}
}

// heartbeat refreshes waitlist row wid; false if it is gone.
func (v *Vault) heartbeat(ctx context.Context, wid string) (bool, error) {
	_, now := v.nowMicros()
	res, err := v.db.ExecContext(ctx, `UPDATE vault_waitlist SET last_seen = $1 WHERE id = $2`, now, wid)
	if err != nil {
		return false, fmt.Errorf("vault: refresh waiter: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// attempt is the outcome of one try at checking out.
type attempt struct {
	won      bool
	lease    Lease
	holders  []Lease   // active leases, when not won
	ahead    int       // waiters ahead, when not won
	gated    string    // why the account is not handed out now, if so
	gateKind string    // the refusal category of gated
	stuck    bool      // gated by a rotation that ended without settling: no use waiting
	engine   bool      // a rotation engine listens (OnRelease), which may lift the gate
	released []release // expired leases ended on the way
}

// awaitsRotation reports whether only a rotation keeps the account from
// the request: it is gated, no lease is held and no one waits ahead, and
// the gate may lift by itself.
func (at attempt) awaitsRotation() bool {
	return at.gated != "" && at.engine && !at.stuck && len(at.holders) == 0 && at.ahead == 0
}

// conflict is the error for a failed attempt without waiting.
func (at attempt) conflict(id string) error {
	switch {
	case at.gated != "":
		hint := "try again later or wait"
		if at.stuck {
			hint = "see `warder account show " + id + "`; an administrator must settle it"
		}
		return &refusal{category: at.gateKind, err: errkind.New(errkind.Conflict, "vault: %s %s; %s", id, at.gated, hint)}
	case at.ahead > 0 && len(at.holders) == 0:
		return &refusal{category: RefusedPromised, err: errkind.New(errkind.Conflict, "vault: %s is promised to %d waiting requests", id, at.ahead)}
	}
	return &refusal{category: RefusedCheckedOut, err: errkind.New(errkind.Conflict, "vault: %s is checked out by %s", id, describeHolders(at.holders))}
}

// tryCheckout makes one attempt, in one transaction holding the account's
// lock: it ends the account's expired leases, refreshes or (when waiting)
// adds the waitlist row wid, and opens a lease if a slot is free, the
// account is not gated, and no one waits ahead. A request that joined the
// waitlist and whose row is gone (EndLeasesOf removed its principal, or it
// went stale) fails rather than queue again at the end.
func (v *Vault) tryCheckout(ctx context.Context, o audit.Origin, req CheckoutRequest, wid string, joined bool) (attempt, error) {
	var at attempt
	gate := v.rotationGate()
	actor := req.Principal.Actor()
	err := v.db.InTx(ctx, func(tx *sql.Tx) error {
		at = attempt{engine: gate}
		if err := v.db.Lock(ctx, tx, "vault.account:"+req.Account); err != nil {
			return err
		}
		// Read the clock holding the lock, so that waiters' enqueued_at
		// follow their order.
		_, now := v.nowMicros()
		a, err := accountTx(ctx, tx, req.Account)
		if err != nil {
			return err
		}
		if at.released, err = v.endExpiredTx(ctx, tx, a, now, gate); err != nil {
			return err
		}
		if len(at.released) > 0 && gate && a.RotateOnCheckin {
			a.RotationDue = true
		}
		if at.holders, err = activeLeasesTx(ctx, tx, a.ID, now); err != nil {
			return err
		}
		for _, l := range at.holders {
			if l.Holder == actor {
				return &refusal{category: RefusedHeldAlready, err: errkind.New(errkind.Conflict,
					"vault: %s has %s checked out already, until %s", actor, a.ID, l.ExpiresAt.Format(time.RFC3339))}
			}
		}
		queued, ahead, err := v.queueTx(ctx, tx, a.ID, wid, now, req.Wait)
		if err != nil {
			return err
		}
		if joined && !queued {
			return &refusal{category: RefusedDroppedFromWaitlist, err: errkind.New(errkind.Conflict,
				"vault: the request for %s was removed from its waitlist (its principal was disabled, or it did not answer in time)", a.ID)}
		}
		at.ahead = ahead
		if a.HasPending || a.RotationDue {
			if err := at.gate(ctx, tx, a, now); err != nil {
				return err
			}
		}
		if at.gated != "" || ahead > 0 || len(at.holders) >= a.MaxCheckouts {
			if req.Wait && !queued {
				if err := v.enqueueTx(ctx, tx, a.ID, wid, actor, now); err != nil {
					return err
				}
				details := map[string]string{"position": strconv.Itoa(ahead + 1), "reason": req.Reason}
				if req.Ticket != "" {
					details["ticket"] = req.Ticket
				}
				_, err := v.audit.AppendTx(ctx, tx, o.Event("account.waitlist_join", "account:"+a.ID, audit.OutcomeSuccess, details))
				return err
			}
			return nil
		}
		version, cred, found, err := v.credentialIn(ctx, tx, a.ID, StateCurrent)
		if err != nil {
			return err
		}
		if !found {
			return &refusal{category: RefusedNoCredential, err: errkind.New(errkind.Conflict, "vault: %s has no credential yet", a.ID)}
		}
		l := Lease{ID: newID(), Account: a.ID, Holder: actor, Reason: req.Reason, Ticket: req.Ticket,
			CheckedOutAt: store.FromMicros(now), ExpiresAt: store.FromMicros(now + req.TTL.Microseconds()),
			CredentialVersion: version, Credential: &cred}
		if _, err := tx.ExecContext(ctx, `INSERT INTO vault_leases (id, account_id, holder, reason, ticket, checked_out_at, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, l.ID, l.Account, l.Holder, l.Reason, l.Ticket, now, store.Micros(l.ExpiresAt)); err != nil {
			clear(cred.Secret)
			return fmt.Errorf("vault: open lease on %q: %w", a.ID, err)
		}
		if queued {
			if _, err := tx.ExecContext(ctx, `DELETE FROM vault_waitlist WHERE id = $1`, wid); err != nil {
				clear(cred.Secret)
				return fmt.Errorf("vault: leave waitlist of %q: %w", a.ID, err)
			}
		}
		details := map[string]string{"lease_id": l.ID, "reason": l.Reason, "expires_at": l.ExpiresAt.Format(time.RFC3339),
			"credential_version": strconv.FormatInt(version, 10)}
		if l.Ticket != "" {
			details["ticket"] = l.Ticket
		}
		if _, err := v.audit.AppendTx(ctx, tx, o.Event("account.checkout", "account:"+a.ID, audit.OutcomeSuccess, details)); err != nil {
			clear(cred.Secret)
			return err
		}
		at.won, at.lease = true, l
		return nil
	})
	return at, err
}
