package authz

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"

	cedar "github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// Grant policies.
//
// A just-in-time role is written as a policy template: one Cedar statement
// whose principal scope is `principal == ?principal` (or `principal in
// ?principal`), with the slot nowhere else. Cedar-go has no template
// linking, so Warder links a template itself: LinkTx replaces the slot by
// the principal's UID in Cedar syntax, validates the result against the
// schema like any policy, and stores it as a grant policy with an expiry.
// Grant policies are loaded, indexed and evaluated with the stored
// policies; every decision skips a grant policy whose expiry is not after
// the Authorizer's clock, so an expired grant stops applying at once, even
// before anyone unlinks it. Linking and unlinking bump the same version
// counter as policy changes, so other servers apply them within their
// ReloadInterval (and fail closed as for policies).
//
// Grant policy ids start with GrantPrefix, which Put refuses for stored
// policies; Decision.Policies names the grant policy that allowed.

// GrantPrefix begins the id of every grant policy: "grant.<id>".
const GrantPrefix = "grant."

// templateSlot is the one slot a template may use.
const templateSlot = "?principal"

// templateProbe is the principal a template is linked to for validation.
var templateProbe = UID{Type: TypeUser, ID: "warder-template-probe"}

// Link asks LinkTx to link a template to a principal.
type Link struct {
	// ID is the grant policy's id: GrantPrefix followed by the grant's id,
	// matching ^[a-z0-9][a-z0-9_.-]{0,63}$.
	ID string
	// Template is the role's policy template (see ValidateTemplate).
	Template string
	// Principal is the User or Machine the grant is for.
	Principal UID
	// ExpiresAt is the first instant at which the grant no longer applies.
	// Required.
	ExpiresAt time.Time
}

// ValidateTemplate reports whether text is a valid role template: at most
// MaxPolicyBytes holding exactly one Cedar statement, without an @id
// annotation, whose principal scope is `principal == ?principal` or
// `principal in ?principal`, with ?principal used nowhere else, and which,
// linked to a User, is valid against the schema. The error is
// errkind.Invalid (TooLarge for the size) with Cedar's messages.
func ValidateTemplate(text string) error {
	m, err := newModel()
	if err != nil {
		return err
	}
	_, _, err = m.link("template", text, templateProbe)
	return err
}

// link returns the statement of template linked to p, with the id id,
// validated against the schema, and its text.
func (m *model) link(id, template string, p UID) (compiled, string, error) {
	if len(template) > MaxPolicyBytes {
		return compiled{}, "", errkind.New(errkind.TooLarge, "authz: template is %d bytes, more than %d", len(template), MaxPolicyBytes)
	}
	if n := strings.Count(template, templateSlot); n != 1 {
		return compiled{}, "", errkind.New(errkind.Invalid, "authz: a template uses %s exactly once, in its principal scope (found %d)", templateSlot, n)
	}
	if err := p.check("principal"); err != nil {
		return compiled{}, "", err
	}
	if p.Type != TypeUser && p.Type != TypeMachine {
		return compiled{}, "", errkind.New(errkind.Invalid, "authz: a template is linked to a User or Machine, not %s", p.Type)
	}
	text := strings.Replace(template, templateSlot, p.String(), 1)
	ps, err := m.compile(id, text, true)
	if err != nil {
		return compiled{}, "", err
	}
	if len(ps) != 1 {
		return compiled{}, "", errkind.New(errkind.Invalid, "authz: a template holds one policy statement, not %d", len(ps))
	}
	c := ps[0]
	if _, ok := c.policy.Annotations()["id"]; ok {
		return compiled{}, "", errkind.New(errkind.Invalid, "authz: a template has no @id annotation: its grants are named by Warder")
	}
	want := p.cedar()
	switch s := (*xast.Policy)(c.policy.AST()).Principal.(type) {
	case xast.ScopeTypeEq:
		if s.Entity == want {
			return c, text, nil
		}
	case xast.ScopeTypeIn:
		if s.Entity == want {
			return c, text, nil
		}
	}
	return compiled{}, "", errkind.New(errkind.Invalid, "authz: a template's principal scope is `principal == %s` (or `in`), and %s appears nowhere else", templateSlot, templateSlot)
}

// LinkTx links l.Template to l.Principal and stores the result as the grant
// policy l.ID, in force until l.ExpiresAt, replacing a grant policy of that
// id (so linking again moves an expiry). It runs in the caller's
// transaction, which should also record the grant and its audit event;
// this Authorizer applies it at its next version check after the commit,
// at once if the caller then calls Refresh, and other servers within their
// ReloadInterval. An invalid template or principal is errkind.Invalid.
//
// LinkTx and UnlinkTx take the lock that policy changes take; Put takes it
// before the audit chain's lock, so a transaction that also appends audit
// events must link or unlink before its first AppendTx, or two
// transactions can deadlock on PostgreSQL.
func (a *Authorizer) LinkTx(ctx context.Context, tx *sql.Tx, l Link) error {
	if !strings.HasPrefix(l.ID, GrantPrefix) || !namePattern.MatchString(l.ID) {
		return errkind.New(errkind.Invalid, "authz: grant policy id %q is not %s followed by a name", clip(l.ID), GrantPrefix)
	}
	if l.ExpiresAt.IsZero() {
		return errkind.New(errkind.Invalid, "authz: grant policy %q has no expiry", l.ID)
	}
	_, text, err := a.model.link(l.ID, l.Template, l.Principal)
	if err != nil {
		return err
	}
	if err := a.db.Lock(ctx, tx, lockName); err != nil {
		return err
	}
	v, err := bumpVersion(ctx, tx)
	if err != nil {
		return err
	}
	now := store.Micros(a.now())
	_, err = tx.ExecContext(ctx, `INSERT INTO authz_grants (id, principal, text, expires_at, created_at, version)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (id) DO UPDATE SET principal = excluded.principal, text = excluded.text,
			expires_at = excluded.expires_at, version = excluded.version`,
		l.ID, l.Principal.String(), text, store.Micros(l.ExpiresAt), now, v)
	if err != nil {
		return fmt.Errorf("authz: store grant policy %q: %w", l.ID, err)
	}
	return nil
}

// UnlinkTx removes the grant policy id in the caller's transaction; see
// LinkTx for when servers apply it. Removing a grant policy that does not
// exist does nothing.
func (a *Authorizer) UnlinkTx(ctx context.Context, tx *sql.Tx, id string) error {
	if err := a.db.Lock(ctx, tx, lockName); err != nil {
		return err
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM authz_grants WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("authz: remove grant policy %q: %w", clip(id), err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return nil
	}
	_, err = bumpVersion(ctx, tx)
	return err
}

// Refresh applies changes committed through LinkTx and UnlinkTx to this
// Authorizer now, rather than at its next periodic check. Should loading
// fail, the next check retries (and the fail-closed rule applies).
func (a *Authorizer) Refresh(ctx context.Context) { a.reloadAfterChange(ctx) }

// loadGrants adds the grant policies not yet expired to next, reusing
// those of cur that did not change.
func (a *Authorizer) loadGrants(ctx context.Context, cur, next *policySet) error {
	rows, err := a.db.QueryContext(ctx, `SELECT id, text, expires_at, version FROM authz_grants WHERE expires_at > $1 ORDER BY id`,
		store.Micros(a.now()))
	if err != nil {
		return fmt.Errorf("authz: read grant policies: %w", err)
	}
	defer rows.Close()
	next.grants = map[string]storedSet{}
	for rows.Next() {
		var id, text string
		var exp, rv int64
		if err := rows.Scan(&id, &text, &exp, &rv); err != nil {
			return fmt.Errorf("authz: read grant policy: %w", err)
		}
		g, ok := storedSet{}, false
		if cur != nil {
			g, ok = cur.grants[id]
		}
		if !ok || g.version != rv {
			// Stored already linked and validated; not re-validated, as
			// for stored policies.
			ps, err := a.model.compile(id, text, false)
			if err != nil || len(ps) != 1 {
				return fmt.Errorf("authz: stored grant policy %q does not parse: %v", id, err)
			}
			c := ps[0]
			c.id, c.expires = cedar.PolicyID(id), exp
			g = storedSet{version: rv, policies: []compiled{c}}
		}
		next.grants[id] = g
		next.all = append(next.all, g.policies...)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("authz: read grant policies: %w", err)
	}
	return nil
}

// TemplateAccount returns the account on target that a role template
// assigns: the template permits connect (alone, among others, or every
// action) on exactly `resource == Account::"TARGET/ACCOUNT"`. Any other
// template ("" included), such as one on `resource in Target::"TARGET"`,
// assigns none: "".
func TemplateAccount(template, target string) string {
	// The slot does not parse; any principal does, and only the action
	// and resource scopes are read.
	text := strings.Replace(template, templateSlot, `User::"template"`, 1)
	ps, err := cedar.NewPolicyListFromBytes("template", []byte(text))
	if err != nil || len(ps) != 1 {
		return ""
	}
	p := (*xast.Policy)(ps[0].AST())
	if p.Effect != xast.EffectPermit {
		return ""
	}
	connect := types.NewEntityUID("Action", ActionConnect)
	switch a := p.Action.(type) {
	case xast.ScopeTypeAll:
	case xast.ScopeTypeEq:
		if a.Entity != connect {
			return ""
		}
	case xast.ScopeTypeInSet:
		if !slices.Contains(a.Entities, connect) {
			return ""
		}
	default:
		return ""
	}
	res, ok := p.Resource.(xast.ScopeTypeEq)
	if !ok || res.Entity.Type != TypeAccount {
		return ""
	}
	account, ok := strings.CutPrefix(string(res.Entity.ID), target+"/")
	if !ok || account == "" || strings.Contains(account, "/") {
		return ""
	}
	return account
}
