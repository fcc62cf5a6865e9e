package access

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// RoleSpec describes a role to create.
type RoleSpec struct {
	// Name matches ^[a-z0-9][a-z0-9_.-]{0,63}$.
	Name string
	// Description is free text, at most 1024 bytes. "": none.
	Description string
	// Template is what a grant of the role permits: one Cedar statement
	// with the slot ?principal in its principal scope (see
	// authz.ValidateTemplate), e.g.
	// permit(principal == ?principal, action == Action::"checkout", resource in Target::"pg1");
	Template string
	// Ephemeral, if set, makes each grant also create a database user.
	// Nil: none.
	Ephemeral *EphemeralRole
	// BreakGlass marks the role as break-glass: every eligibility for it
	// needs at least two approvals (dual control), and one with
	// AllowEmergency lets its subject open it at once as an emergency.
	// Marking an account break-glass means: no standing policy lets anyone
	// check it out, and a break-glass role's template is the only thing
	// that does, e.g.
	// permit(principal == ?principal, action == Action::"checkout", resource == Account::"pg1/postgres");
	BreakGlass bool
	// RotateAccounts are vault account ids ("target/username") whose
	// credentials are rotated (Config.Rotator) when a grant of the role
	// ends, by expiry or revocation: typically the accounts a break-glass
	// template reaches. At most 16. Nil: none.
	RotateAccounts []string
}

// EphemeralRole is the database user a grant of a role creates.
type EphemeralRole struct {
	// Target is the vault target (kind postgres or mysql) the user is
	// created on, by its management account.
	Target string `json:"target"`
	// Roles are the database roles the user is made a member of; they must
	// exist on the target. At least one, at most 16.
	Roles []string `json:"roles"`
}

// Role is a stored role.
type Role struct {
	Name        string         `json:"name"`
	Description string         `json:"description"`
	Template    string         `json:"template"`
	Ephemeral   *EphemeralRole `json:"ephemeral,omitempty"`
	BreakGlass  bool           `json:"break_glass"`
	// RotateAccounts are rotated when a grant of the role ends.
	RotateAccounts []string  `json:"rotate_accounts,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
}

var (
	namePattern   = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)
	dbRolePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)
)

const (
	maxText        = 1024 // description, reason, comment
	maxDBRoles     = 16
	maxRotateAccts = 16
)

// checkText refuses s unless it is at most maxText bytes of UTF-8 without
// control characters other than newline and tab.
func checkText(what, s string) error {
	if len(s) > maxText || !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool {
		return r < 0x20 && r != '\n' && r != '\t' || r == 0x7f
	}) {
		return errkind.New(errkind.Invalid, "access: %s must be at most %d bytes of printable UTF-8", what, maxText)
	}
	return nil
}

// CreateRole validates and stores a role, audited "access.role.create".
// An existing role of that name is errkind.Conflict; an invalid template
// or ephemeral definition errkind.Invalid.
func (a *Access) CreateRole(ctx context.Context, o audit.Origin, spec RoleSpec) (Role, error) {
	if !namePattern.MatchString(spec.Name) {
		return Role{}, errkind.New(errkind.Invalid, "access: role name %q does not match %s", clip(spec.Name), namePattern)
	}
	if err := checkText("a role description", spec.Description); err != nil {
		return Role{}, err
	}
	if err := authz.ValidateTemplate(spec.Template); err != nil {
		return Role{}, fmt.Errorf("access: role %q: %w", spec.Name, err)
	}
	if spec.Ephemeral != nil {
		if err := a.checkEphemeralRole(ctx, *spec.Ephemeral); err != nil {
			return Role{}, err
		}
	}
	if err := a.checkRotateAccounts(ctx, spec.RotateAccounts); err != nil {
		return Role{}, err
	}
	now, us := a.nowMicros()
	r := Role{Name: spec.Name, Description: spec.Description, Template: spec.Template, BreakGlass: spec.BreakGlass,
		RotateAccounts: slices.Clone(spec.RotateAccounts), CreatedAt: now}
	var target, roles string
	if e := spec.Ephemeral; e != nil {
		r.Ephemeral = &EphemeralRole{Target: e.Target, Roles: append([]string(nil), e.Roles...)}
		target, roles = e.Target, strings.Join(e.Roles, " ")
	}
	err := a.inTx(ctx, func(tx *txn) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO access_roles (name, description, template, eph_target, eph_roles, break_glass,
				rotate_accounts, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, r.Name, r.Description, r.Template, target, roles, r.BreakGlass,
			strings.Join(r.RotateAccounts, " "), us)
		if store.IsUniqueViolation(err) {
			return errkind.New(errkind.Conflict, "access: role %q exists", r.Name)
		}
		if err != nil {
			return fmt.Errorf("access: store role %q: %w", r.Name, err)
		}
		details := map[string]string{"break_glass": fmt.Sprint(r.BreakGlass)}
		if target != "" {
			details["ephemeral_target"], details["ephemeral_roles"] = target, roles
		}
		if len(r.RotateAccounts) > 0 {
			details["rotate_accounts"] = strings.Join(r.RotateAccounts, " ")
		}
		return a.appendTx(ctx, tx, o.Event("access.role.create", r.Name, audit.OutcomeSuccess, details))
	})
	if err != nil {
		return Role{}, err
	}
	return r, nil
}

// checkEphemeralRole checks that e's target exists, has a management
// account and a connector that creates ephemeral users.
func (a *Access) checkEphemeralRole(ctx context.Context, e EphemeralRole) error {
	if a.vault == nil || a.conns == nil || a.cipher == nil {
		return errkind.New(errkind.Invalid, "access: ephemeral users are not configured on this server")
	}
	if len(e.Roles) == 0 || len(e.Roles) > maxDBRoles {
		return errkind.New(errkind.Invalid, "access: an ephemeral user has 1 to %d database roles", maxDBRoles)
	}
	for _, r := range e.Roles {
		if !dbRolePattern.MatchString(r) {
			return errkind.New(errkind.Invalid, "access: database role %q does not match %s", clip(r), dbRolePattern)
		}
	}
	t, err := a.vault.Target(ctx, e.Target)
	if err != nil {
		return fmt.Errorf("access: ephemeral target: %w", err)
	}
	if t.ManagementAccount == "" {
		return errkind.New(errkind.Invalid, "access: target %q has no management account to create ephemeral users with", t.Name)
	}
	c, err := a.conns.For(t.Kind)
	if err != nil {
		return errkind.Wrap(errkind.Invalid, err)
	}
	if _, ok := c.(connector.Ephemeral); !ok {
		return errkind.New(errkind.Invalid, "access: targets of kind %q cannot have ephemeral users", t.Kind)
	}
	return nil
}

// checkRotateAccounts checks a role's RotateAccounts: account ids of
// existing targets (when the vault is configured), and a Rotator to
// rotate them.
func (a *Access) checkRotateAccounts(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	if a.rotator == nil {
		return errkind.New(errkind.Invalid, "access: rotation after a grant is not configured on this server")
	}
	if len(ids) > maxRotateAccts {
		return errkind.New(errkind.Invalid, "access: a role rotates at most %d accounts", maxRotateAccts)
	}
	seen := map[string]bool{}
	for _, id := range ids {
		t, u, ok := strings.Cut(id, "/")
		if !ok || t == "" || u == "" || len(id) > 256 || strings.ContainsFunc(id, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return errkind.New(errkind.Invalid, "access: account %q is not target/username", clip(id))
		}
		if seen[id] {
			return errkind.New(errkind.Invalid, "access: account %q is named twice", clip(id))
		}
		seen[id] = true
		if a.vault != nil {
			if _, err := a.vault.Target(ctx, t); err != nil {
				return fmt.Errorf("access: account %q: %w", clip(id), err)
			}
		}
	}
	return nil
}

const roleColumns = `name, description, template, eph_target, eph_roles, break_glass, rotate_accounts, created_at`

func scanRole(s interface{ Scan(...any) error }) (Role, error) {
	var r Role
	var target, roles, rotate string
	var created int64
	if err := s.Scan(&r.Name, &r.Description, &r.Template, &target, &roles, &r.BreakGlass, &rotate, &created); err != nil {
		return Role{}, err
	}
	r.RotateAccounts = strings.Fields(rotate)
	if target != "" {
		r.Ephemeral = &EphemeralRole{Target: target, Roles: strings.Fields(roles)}
	}
	r.CreatedAt = store.FromMicros(created)
	return r, nil
}

// Roles returns every role, by name.
func (a *Access) Roles(ctx context.Context) ([]Role, error) {
	rows, err := a.db.QueryContext(ctx, `SELECT `+roleColumns+` FROM access_roles ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("access: read roles: %w", err)
	}
	defer rows.Close()
	out := []Role{}
	for rows.Next() {
		r, err := scanRole(rows)
		if err != nil {
			return nil, fmt.Errorf("access: read role: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("access: read roles: %w", err)
	}
	return out, nil
}

// Role returns the role name, or errkind.NotFound.
func (a *Access) Role(ctx context.Context, name string) (Role, error) {
	return roleIn(ctx, a.db.QueryRowContext(ctx, `SELECT `+roleColumns+` FROM access_roles WHERE name = $1`, name), name)
}

func roleTx(ctx context.Context, tx *txn, name string) (Role, error) {
	return roleIn(ctx, tx.QueryRowContext(ctx, `SELECT `+roleColumns+` FROM access_roles WHERE name = $1`, name), name)
}

func roleIn(_ context.Context, row *sql.Row, name string) (Role, error) {
	r, err := scanRole(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Role{}, errkind.New(errkind.NotFound, "access: no role %q", clip(name))
	}
	if err != nil {
		return Role{}, fmt.Errorf("access: read role %q: %w", clip(name), err)
	}
	return r, nil
}

// DeleteRole deletes a role and its eligibilities, audited
// "access.role.delete": errkind.NotFound if there is none, errkind.Conflict
// while it has a live grant or a pending request.
func (a *Access) DeleteRole(ctx context.Context, o audit.Origin, name string) error {
	return a.inTx(ctx, func(tx *txn) error {
		if _, err := roleTx(ctx, tx, name); err != nil {
			return err
		}
		_, now := a.nowMicros()
		var grants, pending int
		if err := tx.QueryRowContext(ctx, `SELECT
				(SELECT COUNT(*) FROM access_grants WHERE role = $1 AND ended_at = 0 AND expires_at > $2),
				(SELECT COUNT(*) FROM access_requests WHERE role = $1 AND status = 'pending')`, name, now).Scan(&grants, &pending); err != nil {
			return fmt.Errorf("access: count grants of %q: %w", name, err)
		}
		if grants > 0 || pending > 0 {
			return errkind.New(errkind.Conflict, "access: role %q has %d live grants and %d pending requests; revoke or decide them first", name, grants, pending)
		}
		for _, q := range []string{`DELETE FROM access_eligibility WHERE role = $1`, `DELETE FROM access_roles WHERE name = $1`} {
			if _, err := tx.ExecContext(ctx, q, name); err != nil {
				return fmt.Errorf("access: delete role %q: %w", name, err)
			}
		}
		return a.appendTx(ctx, tx, o.Event("access.role.delete", name, audit.OutcomeSuccess, nil))
	})
}
