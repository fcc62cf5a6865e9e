package identity

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// Machine is a non-human principal that logs in AppRole-style with its role
// id (not secret, like a username) and a secret id.
type Machine struct {
	Name        string        `json:"name"`
	Status      string        `json:"status"` // StatusActive or StatusDisabled
	RoleID      string        `json:"role_id"`
	TokenTTL    time.Duration `json:"token_ttl"`
	TokenMaxTTL time.Duration `json:"token_max_ttl"`
	CreatedAt   time.Time     `json:"created_at"`
}

// MarshalJSON writes the TTLs as Go durations ("20m0s"), as the API
// documents, rather than nanoseconds.
func (m Machine) MarshalJSON() ([]byte, error) {
	type plain Machine
	return json.Marshal(struct {
		plain
		TokenTTL    string `json:"token_ttl"`
		TokenMaxTTL string `json:"token_max_ttl"`
	}{plain(m), m.TokenTTL.String(), m.TokenMaxTTL.String()})
}

// MachineSpec describes a new machine.
type MachineSpec struct {
	Name string
	// TokenTTL is the lifetime of the machine's tokens, 1m to 24h. Zero: 20m.
	TokenTTL time.Duration
	// TokenMaxTTL caps their renewal, TokenTTL to 24h. Zero: 24h.
	TokenMaxTTL time.Duration
}

// Machine limits and defaults.
const (
	DefaultMachineTokenTTL = 20 * time.Minute
	MaxMachineTokenTTL     = 24 * time.Hour
	DefaultSecretIDTTL     = 24 * time.Hour
	MaxSecretIDTTL         = 365 * 24 * time.Hour
	maxSecretIDCIDRs       = 32
)

// CreateMachine creates a machine with a fresh random role id; an existing
// one of that name is Conflict.
func (d *Directory) CreateMachine(ctx context.Context, o audit.Origin, spec MachineSpec) (Machine, error) {
	if err := checkName("machine", spec.Name); err != nil {
		return Machine{}, err
	}
	if spec.TokenTTL == 0 {
		spec.TokenTTL = DefaultMachineTokenTTL
	}
	if spec.TokenMaxTTL == 0 {
		spec.TokenMaxTTL = max(MaxMachineTokenTTL, spec.TokenTTL)
	}
	if spec.TokenTTL < time.Minute || spec.TokenTTL > MaxMachineTokenTTL || spec.TokenMaxTTL < spec.TokenTTL || spec.TokenMaxTTL > MaxMachineTokenTTL {
		return Machine{}, errkind.New(errkind.Invalid, "identity: machine token TTL must be 1m to 24h, and its max TTL at least the TTL and at most 24h")
	}
	now, nowUS := d.nowMicros()
	m := Machine{Name: spec.Name, Status: StatusActive, RoleID: newRoleID(), TokenTTL: spec.TokenTTL, TokenMaxTTL: spec.TokenMaxTTL, CreatedAt: now}
	err := d.db.InTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO identity_machines (name, status, role_id, token_ttl, token_max_ttl, created_at) VALUES ($1, $2, $3, $4, $5, $6)`,
			m.Name, m.Status, m.RoleID, m.TokenTTL.Microseconds(), m.TokenMaxTTL.Microseconds(), nowUS)
		if store.IsUniqueViolation(err) {
			return errkind.New(errkind.Conflict, "identity: machine %q already exists", m.Name)
		}
		if err != nil {
			return fmt.Errorf("identity: create machine: %w", err)
		}
		return d.appendTx(ctx, tx, o.Event("identity.machine.create", "machine:"+m.Name, audit.OutcomeSuccess,
			map[string]string{"role_id": m.RoleID, "token_ttl": m.TokenTTL.String()}))
	})
	if err != nil {
		return Machine{}, err
	}
	return m, nil
}

// newRoleID returns a random UUID (version 4) string.
func newRoleID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

var roleIDRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

const machineColumns = `name, status, role_id, token_ttl, token_max_ttl, created_at`

func scanMachine(sc interface{ Scan(...any) error }) (Machine, error) {
	var m Machine
	var ttl, maxTTL, created int64
	if err := sc.Scan(&m.Name, &m.Status, &m.RoleID, &ttl, &maxTTL, &created); err != nil {
		return Machine{}, err
	}
	m.TokenTTL, m.TokenMaxTTL = time.Duration(ttl)*time.Microsecond, time.Duration(maxTTL)*time.Microsecond
	m.CreatedAt = store.FromMicros(created)
	return m, nil
}

// Machine returns the named machine, or NotFound.
func (d *Directory) Machine(ctx context.Context, name string) (Machine, error) {
	m, err := scanMachine(d.db.QueryRowContext(ctx, `SELECT `+machineColumns+` FROM identity_machines WHERE name = $1`, name))
	if err != nil {
		return Machine{}, notFound(fmt.Errorf("identity: read machine: %w", err), "identity: no machine %q", name)
	}
	return m, nil
}

// Machines returns every machine, by name.
func (d *Directory) Machines(ctx context.Context) ([]Machine, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT `+machineColumns+` FROM identity_machines ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("identity: list machines: %w", err)
	}
	defer rows.Close()
	out := []Machine{}
	for rows.Next() {
		m, err := scanMachine(rows)
		if err != nil {
			return nil, fmt.Errorf("identity: list machines: %w", err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("identity: list machines: %w", err)
	}
	return out, nil
}

// DeleteMachine deletes the machine with its secret ids and group
// memberships, and revokes its tokens, in one transaction. After commit it
// fires a "machine.deleted" LifecycleEvent.
func (d *Directory) DeleteMachine(ctx context.Context, o audit.Origin, name string) error {
	p := Principal{KindMachine, name}
	now, _ := d.nowMicros()
	err := d.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM identity_machines WHERE name = $1`, name)
		if err != nil {
			return fmt.Errorf("identity: delete machine: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errkind.New(errkind.NotFound, "identity: no machine %q", name)
		}
		n, err := d.revokeAllTx(ctx, tx, p)
		if err != nil {
			return err
		}
		if err := d.dropMembershipsTx(ctx, tx, "machine", name); err != nil {
			return err
		}
		return d.appendTx(ctx, tx, o.Event("identity.machine.delete", p.Actor(), audit.OutcomeSuccess,
			map[string]string{"tokens_revoked": fmt.Sprint(n)}))
	})
	if err != nil {
		return err
	}
	d.parents.invalidate()
	d.fire(ctx, LifecycleEvent{Kind: EventMachineDeleted, Principal: p, At: now})
	return nil
}

// DisableMachine disables the machine and revokes all its tokens in one
// transaction: the very next request with any of them is refused, it
// cannot log in, and no secret id can be issued for it. Its secret ids are
// kept, for EnableMachine. After commit it fires a "machine.disabled"
// LifecycleEvent. Disabling a disabled machine does all of this again.
func (d *Directory) DisableMachine(ctx context.Context, o audit.Origin, name string) error {
	p := Principal{KindMachine, name}
	now, _ := d.nowMicros()
	err := d.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := setMachineStatusTx(ctx, tx, name, StatusDisabled); err != nil {
			return err
		}
		n, err := d.revokeAllTx(ctx, tx, p)
		if err != nil {
			return err
		}
		return d.appendTx(ctx, tx, o.Event("identity.machine.disable", p.Actor(), audit.OutcomeSuccess,
			map[string]string{"tokens_revoked": fmt.Sprint(n)}))
	})
	if err != nil {
		return err
	}
	d.fire(ctx, LifecycleEvent{Kind: EventMachineDisabled, Principal: p, At: now})
	return nil
}

// EnableMachine lets a disabled machine log in again with its secret ids
// that are still valid. Tokens revoked when it was disabled stay revoked.
func (d *Directory) EnableMachine(ctx context.Context, o audit.Origin, name string) error {
	return d.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := setMachineStatusTx(ctx, tx, name, StatusActive); err != nil {
			return err
		}
		return d.appendTx(ctx, tx, o.Event("identity.machine.enable", "machine:"+name, audit.OutcomeSuccess, nil))
	})
}

// setMachineStatusTx sets the status of machine name in tx; no such
// machine is NotFound.
func setMachineStatusTx(ctx context.Context, tx *sql.Tx, name, status string) error {
	res, err := tx.ExecContext(ctx, `UPDATE identity_machines SET status = $1 WHERE name = $2`, status, name)
	if err != nil {
		return fmt.Errorf("identity: update machine: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errkind.New(errkind.NotFound, "identity: no machine %q", name)
	}
	return nil
}

// SecretIDSpec limits a secret id.
type SecretIDSpec struct {
	Uses  int            // logins it allows; 0: unlimited
	TTL   time.Duration  // lifetime, up to MaxSecretIDTTL; 0: DefaultSecretIDTTL (24h)
	CIDRs []netip.Prefix // source addresses it may be used from (at most 32); empty: any
}

// SecretIDInfo describes a secret id without its secret.
type SecretIDInfo struct {
	ID        string    `json:"id"`        // the accessor: names the secret id, grants nothing
	Uses      int       `json:"uses"`      // logins allowed; 0: unlimited
	UsesLeft  int       `json:"uses_left"` // logins left of Uses; 0 with Uses 0: unlimited
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	CIDRs     []string  `json:"cidrs"`
}

// IssueSecretID creates a secret id for machine and returns it, shown
// once as "wsi1.<accessor>.<secret>"; only its SHA-256 is stored.
func (d *Directory) IssueSecretID(ctx context.Context, o audit.Origin, machine string, spec SecretIDSpec) (string, SecretIDInfo, error) {
	if spec.TTL == 0 {
		spec.TTL = DefaultSecretIDTTL
	}
	switch {
	case spec.Uses < 0:
		return "", SecretIDInfo{}, errkind.New(errkind.Invalid, "identity: negative secret id uses")
	case spec.TTL < 0 || spec.TTL > MaxSecretIDTTL:
		return "", SecretIDInfo{}, errkind.New(errkind.Invalid, "identity: secret id TTL must be positive and at most %v", MaxSecretIDTTL)
	case len(spec.CIDRs) > maxSecretIDCIDRs:
		return "", SecretIDInfo{}, errkind.New(errkind.Invalid, "identity: more than %d CIDRs", maxSecretIDCIDRs)
	}
	cidrs := []string{}
	for _, p := range spec.CIDRs {
		if !p.IsValid() {
			return "", SecretIDInfo{}, errkind.New(errkind.Invalid, "identity: invalid CIDR")
		}
		cidrs = append(cidrs, p.Masked().String())
	}
	now, nowUS := d.nowMicros()
	accessor, secret, hash := newSecret(secretIDPrefix)
	info := SecretIDInfo{ID: accessor, Uses: spec.Uses, UsesLeft: spec.Uses, CreatedAt: now, ExpiresAt: now.Add(spec.TTL), CIDRs: cidrs}
	err := d.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := activeTx(ctx, tx, Principal{KindMachine, machine}); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO identity_secret_ids
			(accessor, machine_name, secret_hash, uses, uses_left, cidrs, created_at, expires_at) VALUES ($1, $2, $3, $4, $4, $5, $6, $7)`,
			accessor, machine, hash, spec.Uses, strings.Join(cidrs, ","), nowUS, store.Micros(info.ExpiresAt)); err != nil {
			return fmt.Errorf("identity: store secret id: %w", err)
		}
		return d.appendTx(ctx, tx, o.Event("identity.machine.secret_id.issue", "machine:"+machine, audit.OutcomeSuccess,
			map[string]string{"accessor": accessor, "uses": fmt.Sprint(spec.Uses), "ttl": spec.TTL.String(), "cidrs": strings.Join(cidrs, ",")}))
	})
	if err != nil {
		return "", SecretIDInfo{}, err
	}
	return secret, info, nil
}

// SecretIDs describes the machine's stored secret ids, oldest first,
// including those expired or used up; never their secrets. No such
// machine is NotFound.
func (d *Directory) SecretIDs(ctx context.Context, machine string) ([]SecretIDInfo, error) {
	if _, err := d.Machine(ctx, machine); err != nil {
		return nil, err
	}
	rows, err := d.db.QueryContext(ctx, `SELECT accessor, uses, uses_left, cidrs, created_at, expires_at
		FROM identity_secret_ids WHERE machine_name = $1 ORDER BY created_at, accessor`, machine)
	if err != nil {
		return nil, fmt.Errorf("identity: list secret ids: %w", err)
	}
	defer rows.Close()
	out := []SecretIDInfo{}
	for rows.Next() {
		var (
			in               SecretIDInfo
			cidrs            string
			created, expires int64
		)
		if err := rows.Scan(&in.ID, &in.Uses, &in.UsesLeft, &cidrs, &created, &expires); err != nil {
			return nil, fmt.Errorf("identity: list secret ids: %w", err)
		}
		in.CreatedAt, in.ExpiresAt = store.FromMicros(created), store.FromMicros(expires)
		in.CIDRs = []string{}
		if cidrs != "" {
			in.CIDRs = strings.Split(cidrs, ",")
		}
		out = append(out, in)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("identity: list secret ids: %w", err)
	}
	return out, nil
}

// ValidAccessor reports whether s has the form of a secret id's accessor
// (its ID): 18 lowercase hexadecimal digits.
func ValidAccessor(s string) bool {
	if len(s) != 2*idBytes {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !('0' <= s[i] && s[i] <= '9' || 'a' <= s[i] && s[i] <= 'f') {
			return false
		}
	}
	return true
}

// RevokeSecretID deletes the machine's secret id named by accessor: no
// login succeeds with it from then on. Tokens it was used to get stay
// valid until they expire (DisableMachine revokes them). A malformed
// accessor is Invalid; no such machine or secret id is NotFound.
func (d *Directory) RevokeSecretID(ctx context.Context, o audit.Origin, machine, accessor string) error {
	if !ValidAccessor(accessor) {
		return errkind.New(errkind.Invalid, "identity: a secret id accessor is %d hexadecimal digits", 2*idBytes)
	}
	return d.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM identity_secret_ids WHERE accessor = $1 AND machine_name = $2`, accessor, machine)
		if err != nil {
			return fmt.Errorf("identity: revoke secret id: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errkind.New(errkind.NotFound, "identity: machine %q has no secret id %s", machine, accessor)
		}
		return d.appendTx(ctx, tx, o.Event("identity.machine.secret_id.revoke", "machine:"+machine, audit.OutcomeSuccess,
			map[string]string{"accessor": accessor}))
	})
}

// RevokeSecretIDs deletes every secret id of the machine and returns the
// accessors of those it deleted (none is not an error), in one
// transaction with one audit event naming them. Tokens they were used to
// get stay valid until they expire (DisableMachine revokes them). No such
// machine is NotFound.
func (d *Directory) RevokeSecretIDs(ctx context.Context, o audit.Origin, machine string) ([]string, error) {
	var revoked []string
	err := d.db.InTx(ctx, func(tx *sql.Tx) error {
		revoked = []string{}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM identity_machines WHERE name = $1`, machine).Scan(&n); err != nil {
			return fmt.Errorf("identity: look up machine: %w", err)
		}
		if n == 0 {
			return errkind.New(errkind.NotFound, "identity: no machine %q", machine)
		}
		rows, err := tx.QueryContext(ctx, `DELETE FROM identity_secret_ids WHERE machine_name = $1 RETURNING accessor`, machine)
		if err != nil {
			return fmt.Errorf("identity: revoke secret ids: %w", err)
		}
		for rows.Next() {
			var a string
			if err := rows.Scan(&a); err != nil {
				rows.Close()
				return fmt.Errorf("identity: revoke secret ids: %w", err)
			}
			revoked = append(revoked, a)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("identity: revoke secret ids: %w", err)
		}
		slices.Sort(revoked)
		return d.appendTx(ctx, tx, o.Event("identity.machine.secret_id.revoke", "machine:"+machine, audit.OutcomeSuccess,
			map[string]string{"all": "true", "accessors": strings.Join(revoked, ","), "revoked": fmt.Sprint(len(revoked))}))
	})
	if err != nil {
		return nil, err
	}
	return revoked, nil
}

// ErrMachineCredentials is LoginMachine's one answer for every bad
// credential: unknown role id, wrong, expired or used-up secret id, a
// source outside its CIDRs, or a disabled machine.
var ErrMachineCredentials = errkind.New(errkind.Unauthenticated, "identity: invalid machine credentials")

// LoginMachine checks a role id and secret id and issues a token for the
// machine, of its TokenTTL, renewable to its TokenMaxTTL. The secret is
// compared in constant time; a limited secret id's use is counted down in
// the transaction that issues the token, so concurrent logins never use it
// more often than allowed. Failures count towards the source's rate limit
// (then ErrRateLimited); as for Login, an attempt takes its token before
// the secret is checked and gives it back only if it succeeds, so that
// concurrent attempts cannot exceed the limit. Every attempt is audited
// ("auth.login", method "approle").
func (d *Directory) LoginMachine(ctx context.Context, o audit.Origin, roleID, secretID string, source netip.Addr) (string, Token, error) {
	now := d.now()
	at, ok := d.startAttempt(source, now)
	if !ok {
		return "", Token{}, d.loginFailed(ctx, o, &attempt{}, "machine", "rate_limited", ErrRateLimited)
	}
	at.keep = true // until it succeeds
	defer d.release(ctx, at)
	accessor, secret, wellFormed := parseSecret(secretIDPrefix, secretID)
	want := sha256.Sum256([]byte(secret))
	var (
		presented string
		tok       Token
		failure   error
	)
	err := d.db.InTx(ctx, func(tx *sql.Tx) error {
		failure = nil
		fail := func(resource, reason string) error {
			failure = ErrMachineCredentials
			return d.loginFailedTx(ctx, tx, o, at, resource, reason, now)
		}
		var (
			name, status, cidrs      string
			hash                     []byte
			uses, left               int
			expires, ttlUS, maxTTLUS int64
		)
		err := tx.QueryRowContext(ctx, `SELECT m.name, m.status, s.secret_hash, s.uses, s.uses_left, s.cidrs, s.expires_at, m.token_ttl, m.token_max_ttl
			FROM identity_secret_ids s JOIN identity_machines m ON m.name = s.machine_name
			WHERE s.accessor = $1 AND m.role_id = $2`, accessor, roleID).
			Scan(&name, &status, &hash, &uses, &left, &cidrs, &expires, &ttlUS, &maxTTLUS)
		if errNoRows(err) || !wellFormed || !roleIDRE.MatchString(roleID) {
			subtle.ConstantTimeCompare(want[:], want[:]) // same work as a found row
			return fail("machine", "unknown")
		}
		if err != nil {
			return fmt.Errorf("identity: look up secret id: %w", err)
		}
		resource := "machine:" + name
		switch {
		case subtle.ConstantTimeCompare(want[:], hash) != 1:
			return fail(resource, "bad_secret")
		case status != StatusActive:
			return fail(resource, "disabled")
		case !now.Before(store.FromMicros(expires)):
			return fail(resource, "expired")
		case uses > 0 && left <= 0:
			return fail(resource, "used_up")
		case !sourceAllowed(cidrs, source):
			return fail(resource, "source_not_allowed")
		}
		if uses > 0 {
			res, err := tx.ExecContext(ctx, `UPDATE identity_secret_ids SET uses_left = uses_left - 1 WHERE accessor = $1 AND uses_left > 0`, accessor)
			if err != nil {
				return fmt.Errorf("identity: count secret id use: %w", err)
			}
			if n, _ := res.RowsAffected(); n != 1 { // a concurrent login took the last use
				return fail(resource, "used_up")
			}
		}
		p := Principal{KindMachine, name}
		presented, tok, err = d.IssueTx(ctx, tx, TokenSpec{Principal: p,
			TTL: time.Duration(ttlUS) * time.Microsecond, MaxTTL: time.Duration(maxTTLUS) * time.Microsecond})
		if err != nil {
			return err
		}
		oo := o
		oo.Actor = p.Actor()
		return d.appendTx(ctx, tx, oo.Event("auth.login", resource, audit.OutcomeAllow,
			map[string]string{"method": "approle", "accessor": accessor, "token": tok.ID}))
	})
	switch {
	case err != nil:
		return "", Token{}, err
	case failure != nil:
		return "", Token{}, failure
	}
	at.keep = false
	return presented, tok, nil
}

// sourceAllowed reports whether src lies in one of the comma-separated
// prefixes of cidrs ("" allows any source, even an unknown one).
func sourceAllowed(cidrs string, src netip.Addr) bool {
	if cidrs == "" {
		return true
	}
	src = src.Unmap()
	for _, c := range strings.Split(cidrs, ",") {
		if p, err := netip.ParsePrefix(c); err == nil && p.Contains(src) {
			return true
		}
	}
	return false
}
