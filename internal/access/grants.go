package access

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/vault"
)

// Grant is an activated role.
type Grant struct {
	ID        string             `json:"id"`
	Role      string             `json:"role"`
	Principal identity.Principal `json:"principal"`
	RequestID string             `json:"request_id"`
	// Policy is the id of the grant policy (authz.GrantPrefix + ID), as
	// decisions name it.
	Policy    string    `json:"policy"`
	StartsAt  time.Time `json:"starts_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// Status is GrantActive, GrantExpired or GrantRevoked, as of the read.
	Status string `json:"status"`
	// EndedAt is when the grant was revoked, or found expired and cleaned
	// up; zero before.
	EndedAt   time.Time       `json:"ended_at,omitzero"`
	EndedBy   string          `json:"ended_by,omitempty"`
	Ephemeral *EphemeralGrant `json:"ephemeral,omitempty"`
	// Emergency: a break-glass role opened at once, without approvals; an
	// Incident tracks its review.
	Emergency bool `json:"emergency,omitempty"`
	// RotateAccounts, copied from the role, are rotated when the grant
	// ends.
	RotateAccounts []string `json:"rotate_accounts,omitempty"`
}

// EphemeralGrant is a grant's database user. Its password is given only
// by RevealEphemeral.
type EphemeralGrant struct {
	Target   string   `json:"target"`
	Username string   `json:"username"`
	Roles    []string `json:"roles"`
	// State is "pending" (to be created, or its expiry to be updated, on
	// the target), "created" or "dropped".
	State string `json:"state"`
	// Error is why the last attempt to create it failed; "" if none.
	Error string `json:"error,omitempty"`
}

// The grant statuses.
const (
	GrantActive  = "active"
	GrantExpired = "expired"
	GrantRevoked = "revoked"
)

// The ephemeral user states.
const (
	ephPending = "pending"
	ephCreated = "created"
	ephDropped = "dropped"
)

// Active reports whether g is in force at now.
func (g Grant) Active(now time.Time) bool { return g.EndedAt.IsZero() && now.Before(g.ExpiresAt) }

// ephemeralAAD binds an ephemeral password's ciphertext to its grant.
func ephemeralAAD(grantID string) barrier.AAD {
	return barrier.AAD{Kind: "access.ephemeral", ID: grantID}
}

// createGrantTx creates the grant of activation request r, approved at
// now: its row, its grant policy and its audit event.
func (a *Access) createGrantTx(ctx context.Context, tx *txn, o audit.Origin, r *Request, now time.Time) (Grant, error) {
	role, err := roleTx(ctx, tx, r.Role)
	if err != nil {
		return Grant{}, err
	}
	uid, err := principalUID(r.Requester)
	if err != nil {
		return Grant{}, err
	}
	id := newID(10)
	g := Grant{ID: id, Role: role.Name, Principal: r.Requester, RequestID: r.ID, Policy: authz.GrantPrefix + id,
		StartsAt: now, ExpiresAt: now.Add(r.TTL), Status: GrantActive, Emergency: r.Emergency, RotateAccounts: role.RotateAccounts}
	var ct []byte
	var target, username, roles, state string
	if e := role.Ephemeral; e != nil {
		if a.cipher == nil {
			return Grant{}, errkind.New(errkind.Invalid, "access: ephemeral users are not configured on this server")
		}
		pw, err := vault.PasswordPolicy{Length: 32, Lower: true, Upper: true, Digits: true}.Generate()
		if err != nil {
			return Grant{}, fmt.Errorf("access: generate a password: %w", err)
		}
		ct, err = a.cipher.Encrypt(ctx, ephemeralAAD(id), pw)
		clear(pw)
		if err != nil {
			return Grant{}, fmt.Errorf("access: encrypt the ephemeral password: %w", err)
		}
		target, username, roles, state = e.Target, EphemeralPrefix+id[:12], strings.Join(e.Roles, " "), ephPending
		g.Ephemeral = &EphemeralGrant{Target: target, Username: username, Roles: append([]string(nil), e.Roles...), State: state}
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO access_grants (id, role, principal, request_id, starts_at, expires_at,
			eph_target, eph_username, eph_roles, eph_state, eph_password_ct, emergency, rotate_accounts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
		g.ID, g.Role, g.Principal.Actor(), g.RequestID, store.Micros(g.StartsAt), store.Micros(g.ExpiresAt),
		target, username, roles, state, ct, g.Emergency, strings.Join(g.RotateAccounts, " "))
	if err != nil {
		return Grant{}, fmt.Errorf("access: store grant: %w", err)
	}
	if err := a.authz.LinkTx(ctx, tx.Tx, authz.Link{ID: g.Policy, Template: role.Template, Principal: uid, ExpiresAt: g.ExpiresAt}); err != nil {
		return Grant{}, fmt.Errorf("access: link role %q: %w", role.Name, err)
	}
	details := map[string]string{"role": g.Role, "principal": g.Principal.Actor(), "request": g.RequestID,
		"policy": g.Policy, "expires_at": g.ExpiresAt.Format(time.RFC3339)}
	if username != "" {
		details["ephemeral_target"], details["ephemeral_user"] = target, username
	}
	if g.Emergency {
		details["emergency"] = "true"
	}
	return g, a.appendTx(ctx, tx, o.Event("access.grant.create", g.ID, audit.OutcomeSuccess, details))
}

// extendGrantTx moves the expiry of grant id to exp if that is later, for
// extension request requestID approved at now.
func (a *Access) extendGrantTx(ctx context.Context, tx *txn, o audit.Origin, id, requestID string, exp, now time.Time) (Grant, error) {
	g, err := grantIn(ctx, tx, id, now)
	if err != nil {
		return Grant{}, err
	}
	if !g.Active(now) {
		return Grant{}, errkind.New(errkind.Conflict, "%w: %s; it cannot be extended", ErrGrantEnded, g.ID)
	}
	if !exp.After(g.ExpiresAt) {
		exp = g.ExpiresAt
	}
	role, err := roleTx(ctx, tx, g.Role)
	if err != nil {
		return Grant{}, err
	}
	uid, err := principalUID(g.Principal)
	if err != nil {
		return Grant{}, err
	}
	state := ""
	if g.Ephemeral != nil && g.Ephemeral.State != ephDropped {
		state = ephPending // its expiry on the target moves too
		g.Ephemeral.State = state
	}
	if _, err := tx.ExecContext(ctx, `UPDATE access_grants SET expires_at = $1,
			eph_state = CASE WHEN $2 = '' THEN eph_state ELSE $2 END WHERE id = $3`,
		store.Micros(exp), state, g.ID); err != nil {
		return Grant{}, fmt.Errorf("access: extend grant %s: %w", g.ID, err)
	}
	if err := a.authz.LinkTx(ctx, tx.Tx, authz.Link{ID: g.Policy, Template: role.Template, Principal: uid, ExpiresAt: exp}); err != nil {
		return Grant{}, fmt.Errorf("access: link role %q: %w", role.Name, err)
	}
	details := map[string]string{"role": g.Role, "principal": g.Principal.Actor(), "request": requestID,
		"previous_expires_at": g.ExpiresAt.Format(time.RFC3339), "expires_at": exp.Format(time.RFC3339)}
	g.ExpiresAt = exp
	return g, a.appendTx(ctx, tx, o.Event("access.grant.extend", g.ID, audit.OutcomeSuccess, details))
}

// endGrantTx ends live grant g at us for reason (GrantExpired or
// GrantRevoked), decided by by, audited action with details: it unlinks
// its policy, cancels its pending extension requests and, if it has
// RotateAccounts, marks their rotation pending (ended triggers it). A
// grant that ended meanwhile is errkind.Conflict (ErrGrantEnded).
func (a *Access) endGrantTx(ctx context.Context, tx *txn, o audit.Origin, g *Grant, reason, by string, us int64, action string, details map[string]string) error {
	res, err := tx.ExecContext(ctx, `UPDATE access_grants SET ended_at = $1, end_reason = $2, ended_by = $3,
			rotate_pending = rotate_accounts <> ''
		WHERE id = $4 AND ended_at = 0`, us, reason, by, g.ID)
	if err != nil {
		return fmt.Errorf("access: end grant %s: %w", g.ID, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return errkind.New(errkind.Conflict, "%w: %s", ErrGrantEnded, g.ID)
	}
	if err := a.authz.UnlinkTx(ctx, tx.Tx, g.Policy); err != nil {
		return fmt.Errorf("access: unlink grant %s: %w", g.ID, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE access_requests SET status = 'cancelled', decided_at = $1, decided_by = $2,
			comment = 'the grant ended' WHERE grant_id = $3 AND kind = 'extension' AND status = 'pending'`, us, by, g.ID); err != nil {
		return fmt.Errorf("access: cancel extensions of grant %s: %w", g.ID, err)
	}
	g.Status, g.EndedAt, g.EndedBy = reason, store.FromMicros(us), by
	if details == nil {
		details = map[string]string{}
	}
	details["role"], details["principal"], details["policy"] = g.Role, g.Principal.Actor(), g.Policy
	if g.Emergency {
		details["emergency"] = "true"
	}
	if len(g.RotateAccounts) > 0 {
		details["rotate_accounts"] = strings.Join(g.RotateAccounts, " ")
	}
	return a.appendTx(ctx, tx, o.Event(action, g.ID, audit.OutcomeSuccess, details))
}

// RevokeGrant ends a live grant now, audited "access.grant.revoke" with
// reason (optional, at most 1024 bytes): its policy is unlinked at once
// (this server applies it before RevokeGrant returns, others within their
// reload interval) and its ephemeral user dropped. A grant that already
// ended is errkind.Conflict (ErrGrantEnded).
func (a *Access) RevokeGrant(ctx context.Context, o audit.Origin, id, reason string) (Grant, error) {
	if err := checkText("a reason", reason); err != nil {
		return Grant{}, err
	}
	var g Grant
	err := a.inTx(ctx, func(tx *txn) error {
		now, us := a.nowMicros()
		var err error
		if g, err = grantIn(ctx, tx, id, now); err != nil {
			return err
		}
		if !g.Active(now) {
			return errkind.New(errkind.Conflict, "%w: %s is %s", ErrGrantEnded, g.ID, g.Status)
		}
		return a.endGrantTx(ctx, tx, o, &g, GrantRevoked, o.Actor, us, "access.grant.revoke", map[string]string{"reason": reason})
	})
	if err != nil {
		return Grant{}, err
	}
	a.ended(ctx, o, EventRevoked, g, reason)
	return g, nil
}

// EndGrantsOf revokes every grant of p that has not ended and cancels
// p's pending requests: for the identity lifecycle hook, when p is
// disabled or deleted. It returns how many grants it revoked.
func (a *Access) EndGrantsOf(ctx context.Context, o audit.Origin, p identity.Principal) (int, error) {
	var ended []Grant
	var cancelled []Request
	err := a.inTx(ctx, func(tx *txn) error {
		now, us := a.nowMicros()
		gs, err := queryGrants(ctx, tx, now, `WHERE principal = $1 AND ended_at = 0`, p.Actor())
		if err != nil {
			return err
		}
		for i := range gs {
			if err := a.endGrantTx(ctx, tx, o, &gs[i], GrantRevoked, o.Actor, us, "access.grant.revoke",
				map[string]string{"reason": "principal disabled or deleted"}); err != nil {
				return err
			}
		}
		rs, err := queryRequests(ctx, tx, `SELECT `+requestColumns+` FROM access_requests WHERE requester = $1 AND status = 'pending'`, p.Actor())
		if err != nil {
			return err
		}
		for i := range rs {
			if err := a.closeTx(ctx, tx, o, &rs[i], StatusCancelled, o.Actor, "principal disabled or deleted", us, "access.request.cancel"); err != nil {
				return err
			}
		}
		ended, cancelled = gs, rs
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, g := range ended {
		a.ended(ctx, o, EventRevoked, g, "principal disabled or deleted")
	}
	for _, r := range cancelled {
		a.notify(EventCancelled, o, r, nil)
	}
	return len(ended), nil
}

// ended applies a committed end of g: the policy change in this server,
// the drop of its ephemeral user, the rotation of its accounts, the
// notification.
func (a *Access) ended(ctx context.Context, o audit.Origin, event string, g Grant, reason string) {
	a.authz.Refresh(ctx)
	if len(g.RotateAccounts) > 0 {
		if err := a.rotateAfter(ctx, g.ID, g.RotateAccounts); err != nil {
			a.log.WarnContext(ctx, "access: rotation after the grant not recorded; Run retries", "grant", g.ID, "err", err)
		}
	}
	if g.Ephemeral != nil {
		if err := a.dropEphemeral(ctx, g.ID); err != nil {
			a.log.WarnContext(ctx, "access: ephemeral user not dropped yet; Run retries", "grant", g.ID, "err", err)
		}
	}
	a.notifyGrant(event, o, g, reason)
}

// GrantFilter selects grants. Zero fields select everything.
type GrantFilter struct {
	Principal *identity.Principal
	Role      string
	Active    bool // only grants in force now
	// Limit is the most returned, newest first. Zero: 500.
	Limit int
}

// Grants returns the grants f selects, newest first.
func (a *Access) Grants(ctx context.Context, f GrantFilter) ([]Grant, error) {
	now, us := a.nowMicros()
	var where []string
	var args []any
	if f.Principal != nil {
		args = append(args, f.Principal.Actor())
		where = append(where, fmt.Sprintf("principal = $%d", len(args)))
	}
	if f.Role != "" {
		args = append(args, f.Role)
		where = append(where, fmt.Sprintf("role = $%d", len(args)))
	}
	if f.Active {
		args = append(args, us)
		where = append(where, fmt.Sprintf("ended_at = 0 AND expires_at > $%d", len(args)))
	}
	q := ""
	if len(where) > 0 {
		q = `WHERE ` + strings.Join(where, " AND ")
	}
	limit := f.Limit
	if limit <= 0 || limit > 500 {
		limit = 500
	}
	return queryGrants(ctx, a.db, now, q+fmt.Sprintf(` ORDER BY starts_at DESC, id LIMIT %d`, limit), args...)
}

// Grant returns the grant id, or errkind.NotFound.
func (a *Access) Grant(ctx context.Context, id string) (Grant, error) {
	return grantIn(ctx, a.db, id, a.now())
}

func grantIn(ctx context.Context, q querier, id string, now time.Time) (Grant, error) {
	gs, err := queryGrants(ctx, q, now, `WHERE id = $1`, id)
	if err != nil {
		return Grant{}, err
	}
	if len(gs) == 0 {
		return Grant{}, errkind.New(errkind.NotFound, "access: no grant %q", clip(id))
	}
	return gs[0], nil
}

// queryGrants reads the grants where selects; Status is as of now.
func queryGrants(ctx context.Context, q querier, now time.Time, where string, args ...any) ([]Grant, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, role, principal, request_id, starts_at, expires_at, ended_at, end_reason, ended_by,
		eph_target, eph_username, eph_roles, eph_state, eph_error, emergency, rotate_accounts FROM access_grants `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("access: read grants: %w", err)
	}
	defer rows.Close()
	out := []Grant{}
	for rows.Next() {
		var g Grant
		var principal, reason, target, username, roles, state, ephErr, rotate string
		var starts, exp, ended int64
		if err := rows.Scan(&g.ID, &g.Role, &principal, &g.RequestID, &starts, &exp, &ended, &reason, &g.EndedBy,
			&target, &username, &roles, &state, &ephErr, &g.Emergency, &rotate); err != nil {
			return nil, fmt.Errorf("access: read grant: %w", err)
		}
		g.Principal, g.Policy, g.RotateAccounts = parseActor(principal), authz.GrantPrefix+g.ID, strings.Fields(rotate)
		g.StartsAt, g.ExpiresAt, g.EndedAt = store.FromMicros(starts), store.FromMicros(exp), fromMicros(ended)
		switch {
		case reason != "":
			g.Status = reason
		case g.Active(now):
			g.Status = GrantActive
		default:
			g.Status = GrantExpired
		}
		if target != "" {
			g.Ephemeral = &EphemeralGrant{Target: target, Username: username, Roles: strings.Fields(roles), State: state, Error: ephErr}
		}
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("access: read grants: %w", err)
	}
	return out, nil
}
