package access

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/vault"
)

// EphemeralPrefix begins the name of every ephemeral user Warder creates
// ("wjit_" and 12 hex digits of the grant id). Run drops users with this
// prefix that no live grant accounts for.
const EphemeralPrefix = "wjit_"

// EphemeralCredential is how a grantee logs in as their ephemeral user.
// Password is secret: show it to the grantee, never log it.
type EphemeralCredential struct {
	Target     string    `json:"target"`
	Host       string    `json:"host"`
	Port       int       `json:"port"`
	Username   string    `json:"username"`
	Password   string    `json:"password"`
	ValidUntil time.Time `json:"valid_until"` // the grant's expiry
}

// manager is what it takes to manage ephemeral users on one target.
type manager struct {
	target vault.Target
	conn   connector.Ephemeral
	as     connector.Login
}

// manage returns the management login for ephemeral users on target.
func (a *Access) manage(ctx context.Context, target string) (manager, error) {
	if a.vault == nil || a.conns == nil {
		return manager{}, errkind.New(errkind.Invalid, "access: ephemeral users are not configured on this server")
	}
	t, err := a.vault.Target(ctx, target)
	if err != nil {
		return manager{}, err
	}
	c, err := a.conns.For(t.Kind)
	if err != nil {
		return manager{}, err
	}
	e, ok := c.(connector.Ephemeral)
	if !ok {
		return manager{}, errkind.New(errkind.Invalid, "access: targets of kind %q cannot have ephemeral users", t.Kind)
	}
	if t.ManagementAccount == "" {
		return manager{}, errkind.New(errkind.Invalid, "access: target %q has no management account", t.Name)
	}
	_, cred, err := a.vault.CurrentCredential(ctx, t.Name+"/"+t.ManagementAccount)
	if err != nil {
		return manager{}, fmt.Errorf("access: management credential of %q: %w", t.Name, err)
	}
	return manager{target: t, conn: e, as: connector.Login{Username: t.ManagementAccount, Credential: cred}}, nil
}

// ensureEphemeral creates (or updates the expiry of) the ephemeral user
// of grant id, if its state is pending and the grant is live, and marks it
// created. A failure is recorded on the grant for RevealEphemeral and
// returned; Run retries.
func (a *Access) ensureEphemeral(ctx context.Context, o audit.Origin, id string) error {
	var ct []byte
	var target, username, roles, state string
	var exp, ended int64
	err := a.db.QueryRowContext(ctx, `SELECT eph_target, eph_username, eph_roles, eph_state, eph_password_ct, expires_at, ended_at
		FROM access_grants WHERE id = $1`, id).Scan(&target, &username, &roles, &state, &ct, &exp, &ended)
	if err != nil {
		return fmt.Errorf("access: read grant %s: %w", id, err)
	}
	if state != ephPending || ended != 0 || store.Micros(a.now()) >= exp {
		return nil
	}
	err = a.createOnTarget(ctx, id, target, username, roles, ct, store.FromMicros(exp))
	details := map[string]string{"grant": id, "target": target, "valid_until": store.FromMicros(exp).Add(a.skew).Format(time.RFC3339)}
	if err != nil {
		msg := clip(err.Error())
		if _, uerr := a.db.ExecContext(ctx, `UPDATE access_grants SET eph_error = $1 WHERE id = $2`, msg, id); uerr != nil {
			a.log.WarnContext(ctx, "access: record ephemeral failure", "grant", id, "err", uerr)
		}
		details["error"] = msg
		a.appendEvent(ctx, o.Event("access.ephemeral.create", username, audit.OutcomeFailure, details))
		return err
	}
	res, err := a.db.ExecContext(ctx, `UPDATE access_grants SET eph_state = 'created', eph_error = ''
		WHERE id = $1 AND eph_state = 'pending' AND ended_at = 0`, id)
	if err != nil {
		return fmt.Errorf("access: record ephemeral user of %s: %w", id, err)
	}
	a.appendEvent(ctx, o.Event("access.ephemeral.create", username, audit.OutcomeSuccess, details))
	if n, _ := res.RowsAffected(); n == 0 {
		// The grant ended while the user was being created: drop it again.
		return a.dropEphemeral(ctx, id)
	}
	return nil
}

// createOnTarget decrypts the password and creates or updates the user.
func (a *Access) createOnTarget(ctx context.Context, id, target, username, roles string, ct []byte, exp time.Time) error {
	m, err := a.manage(ctx, target)
	if err != nil {
		return err
	}
	if a.cipher == nil {
		return errkind.New(errkind.Invalid, "access: ephemeral users are not configured on this server")
	}
	pw, err := a.cipher.Decrypt(ctx, ephemeralAAD(id), ct)
	if err != nil {
		return fmt.Errorf("access: decrypt the ephemeral password of %s: %w", id, err)
	}
	defer clear(pw)
	return m.conn.CreateEphemeral(ctx, m.target.Connector(), m.as, connector.EphemeralSpec{
		Username: username, Password: pw, ValidUntil: exp.Add(a.skew), Roles: strings.Fields(roles)})
}

// dropEphemeral drops the ephemeral user of grant id unless it is
// dropped already, then marks it dropped and erases its password.
func (a *Access) dropEphemeral(ctx context.Context, id string) error {
	var target, username, state string
	err := a.db.QueryRowContext(ctx, `SELECT eph_target, eph_username, eph_state FROM access_grants WHERE id = $1`, id).
		Scan(&target, &username, &state)
	if err != nil {
		return fmt.Errorf("access: read grant %s: %w", id, err)
	}
	if target == "" || state == ephDropped {
		return nil
	}
	if err := a.dropUser(ctx, target, username, map[string]string{"grant": id}); err != nil {
		return err
	}
	if _, err := a.db.ExecContext(ctx, `UPDATE access_grants SET eph_state = 'dropped', eph_password_ct = NULL, eph_error = ''
		WHERE id = $1 AND ended_at <> 0`, id); err != nil {
		return fmt.Errorf("access: record drop of %s: %w", username, err)
	}
	return nil
}

// dropUser drops username on target, audited "access.ephemeral.drop".
func (a *Access) dropUser(ctx context.Context, target, username string, details map[string]string) error {
	m, err := a.manage(ctx, target)
	if err == nil {
		err = m.conn.DropEphemeral(ctx, m.target.Connector(), m.as, username)
	}
	details["target"] = target
	outcome := audit.OutcomeSuccess
	if err != nil {
		outcome, details["error"] = audit.OutcomeFailure, clip(err.Error())
	}
	a.appendEvent(ctx, system.Event("access.ephemeral.drop", username, outcome, details))
	if err != nil {
		return fmt.Errorf("access: drop %s on %s: %w", username, target, err)
	}
	return nil
}

// RevealEphemeral returns the credential of the ephemeral user of grant
// id to its grantee p, audited "access.ephemeral.reveal" before it is
// returned. Someone else's grant, or one without an ephemeral user, is
// errkind.NotFound; an ended grant errkind.Conflict (ErrGrantEnded); a
// user not created yet errkind.Unavailable, with the last error.
func (a *Access) RevealEphemeral(ctx context.Context, o audit.Origin, p identity.Principal, id string) (EphemeralCredential, error) {
	now := a.now()
	g, err := a.Grant(ctx, id)
	if err != nil {
		return EphemeralCredential{}, err
	}
	if g.Principal != p || g.Ephemeral == nil {
		return EphemeralCredential{}, errkind.New(errkind.NotFound, "access: no grant %q with an ephemeral user of %s", clip(id), p.Actor())
	}
	if !g.Active(now) {
		return EphemeralCredential{}, errkind.New(errkind.Conflict, "%w: %s is %s", ErrGrantEnded, g.ID, g.Status)
	}
	if a.vault == nil || a.cipher == nil {
		return EphemeralCredential{}, errkind.New(errkind.Invalid, "access: ephemeral users are not configured on this server")
	}
	if g.Ephemeral.State != ephCreated {
		msg := "not created yet"
		if g.Ephemeral.Error != "" {
			msg = "not created: " + g.Ephemeral.Error
		}
		return EphemeralCredential{}, errkind.New(errkind.Unavailable, "access: ephemeral user of grant %s is %s", g.ID, msg)
	}
	t, err := a.vault.Target(ctx, g.Ephemeral.Target)
	if err != nil {
		return EphemeralCredential{}, err
	}
	var ct []byte
	if err := a.db.QueryRowContext(ctx, `SELECT eph_password_ct FROM access_grants WHERE id = $1`, id).Scan(&ct); err != nil {
		return EphemeralCredential{}, fmt.Errorf("access: read grant %s: %w", id, err)
	}
	pw, err := a.cipher.Decrypt(ctx, ephemeralAAD(id), ct)
	if err != nil {
		return EphemeralCredential{}, fmt.Errorf("access: decrypt the ephemeral password of %s: %w", id, err)
	}
	if _, err := a.audit.Append(ctx, o.Event("access.ephemeral.reveal", g.Ephemeral.Username, audit.OutcomeSuccess,
		map[string]string{"grant": id, "target": t.Name})); err != nil {
		return EphemeralCredential{}, errkind.New(errkind.Unavailable, "access: audit: %w", err)
	}
	return EphemeralCredential{Target: t.Name, Host: t.Host, Port: t.Port, Username: g.Ephemeral.Username,
		Password: string(pw), ValidUntil: g.ExpiresAt}, nil
}

// appendEvent writes an event about something already done on a target;
// a failure is logged (the change cannot be undone).
func (a *Access) appendEvent(ctx context.Context, ev audit.Event) {
	if _, err := a.audit.Append(ctx, ev); err != nil {
		a.log.ErrorContext(ctx, "access: audit event lost", "action", ev.Action, "resource", ev.Resource, "err", err)
	}
}

// Rewrap implements barrier.Rewrapper for ephemeral passwords: the server
// registers it with barrier.Register("access", a).
func (a *Access) Rewrap(ctx context.Context, b *barrier.Barrier) (int, error) {
	rows, err := a.db.QueryContext(ctx, `SELECT id, eph_password_ct FROM access_grants WHERE eph_password_ct IS NOT NULL`)
	if err != nil {
		return 0, fmt.Errorf("access: rewrap: %w", err)
	}
	type row struct {
		id string
		ct []byte
	}
	var all []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.id, &r.ct); err != nil {
			rows.Close()
			return 0, fmt.Errorf("access: rewrap: %w", err)
		}
		all = append(all, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("access: rewrap: %w", err)
	}
	n := 0
	for _, r := range all {
		ct, changed, err := b.Rewrap(ctx, ephemeralAAD(r.id), r.ct)
		if err != nil {
			return n, fmt.Errorf("access: rewrap grant %s: %w", r.id, err)
		}
		if !changed {
			continue
		}
		res, err := a.db.ExecContext(ctx, `UPDATE access_grants SET eph_password_ct = $1 WHERE id = $2 AND eph_password_ct = $3`, ct, r.id, r.ct)
		if err != nil {
			return n, fmt.Errorf("access: rewrap grant %s: %w", r.id, err)
		}
		if k, _ := res.RowsAffected(); k == 1 {
			n++
		}
	}
	return n, nil
}

// reconcile makes the targets agree with the grants: it drops the users
// of ended or expired grants, creates those still pending, and drops users
// with EphemeralPrefix that no live grant accounts for (left by a crash).
func (a *Access) reconcile(ctx context.Context) error {
	var errs []error
	now := store.Micros(a.now())
	ids, err := a.column(ctx, `SELECT id FROM access_grants WHERE eph_target <> '' AND eph_state <> 'dropped' AND ended_at <> 0`)
	errs = append(errs, err)
	for _, id := range ids {
		errs = append(errs, a.dropEphemeral(ctx, id))
	}
	ids, err = a.column(ctx, `SELECT id FROM access_grants WHERE eph_state = 'pending' AND ended_at = 0 AND expires_at > $1`, now)
	errs = append(errs, err)
	for _, id := range ids {
		errs = append(errs, a.ensureEphemeral(ctx, system, id))
	}
	targets, err := a.column(ctx, `SELECT eph_target FROM access_roles WHERE eph_target <> ''
		UNION SELECT eph_target FROM access_grants WHERE eph_target <> '' AND eph_state <> 'dropped'`)
	errs = append(errs, err)
	for _, t := range targets {
		errs = append(errs, a.dropOrphans(ctx, t))
	}
	return errors.Join(errs...)
}

// dropOrphans drops the users with EphemeralPrefix on target that no live
// grant accounts for. The target is listed before the grants are read, so
// that a user created meanwhile (after its grant was committed) is kept.
func (a *Access) dropOrphans(ctx context.Context, target string) error {
	m, err := a.manage(ctx, target)
	if err != nil {
		return fmt.Errorf("access: reconcile %s: %w", target, err)
	}
	users, err := m.conn.ListEphemeral(ctx, m.target.Connector(), m.as, EphemeralPrefix)
	if err != nil {
		return fmt.Errorf("access: list ephemeral users on %s: %w", target, err)
	}
	live, err := a.column(ctx, `SELECT eph_username FROM access_grants WHERE eph_target = $1 AND eph_state <> 'dropped'
		AND ended_at = 0 AND expires_at > $2`, target, store.Micros(a.now()))
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, u := range live {
		keep[u] = true
	}
	var errs []error
	for _, u := range users {
		if !keep[u] {
			errs = append(errs, a.dropUser(ctx, target, u, map[string]string{"cause": "no live grant"}))
		}
	}
	return errors.Join(errs...)
}

// column runs a query selecting one text column.
func (a *Access) column(ctx context.Context, q string, args ...any) ([]string, error) {
	rows, err := a.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("access: read: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, fmt.Errorf("access: read: %w", err)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
