package authz

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// Policy is a stored, named policy text.
type Policy struct {
	Name      string    `json:"name"`
	Text      string    `json:"text"`
	Builtin   bool      `json:"builtin"` // installed by Warder; cannot be changed or deleted
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// IDs are the ids of the statements in Text, as Decision.Policies
	// names them: an @id annotation's value; else Name for a text of one
	// statement, Name.1, Name.2... for a text of several.
	IDs []string `json:"ids"`
}

// builtins returns the policies installed in an empty database.
func builtins() []struct{ name, text string } {
	return []struct{ name, text string }{{
		name: "admins",
		text: "// Members of Group::\"admins\" administer everything.\n" +
			"permit(principal in Group::\"admins\", action, resource);\n",
	}}
}

//go:embed migrations
var migrationFiles embed.FS

// lockName serialises policy changes across servers.
const lockName = "authz"

func (a *Authorizer) migrate(ctx context.Context) error {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return fmt.Errorf("authz: migrations: %w", err)
	}
	if err := a.db.Migrate(ctx, "authz", sub); err != nil {
		return fmt.Errorf("authz: %w", err)
	}
	return nil
}

// installDefaults stores the built-in policies if no policy is stored.
func (a *Authorizer) installDefaults(ctx context.Context) error {
	o := audit.Origin{Actor: "system:authz"}
	return a.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := a.db.Lock(ctx, tx, lockName); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM authz_policies`).Scan(&n); err != nil {
			return fmt.Errorf("authz: count policies: %w", err)
		}
		if n > 0 {
			return nil
		}
		for _, b := range builtins() {
			ps, err := a.model.compile(b.name, b.text, true)
			if err != nil {
				return fmt.Errorf("authz: built-in policy: %w", err)
			}
			if _, err := a.write(ctx, tx, o, b.name, b.text, ids(ps), true, false); err != nil {
				return err
			}
		}
		return nil
	})
}

// Put stores text under name, replacing what name held. The text is
// validated as by Validate; name must match ^[a-z0-9][a-z0-9_.-]{0,63}$
// (errkind.Invalid). The ids of its statements must not be used by another
// stored policy, and a built-in policy cannot be replaced (errkind.Conflict).
// The change and its audit event ("policy.put") are committed together;
// this Authorizer applies it before Put returns, other servers within their
// ReloadInterval.
func (a *Authorizer) Put(ctx context.Context, o audit.Origin, name, text string) (Policy, error) {
	if !namePattern.MatchString(name) {
		return Policy{}, errkind.New(errkind.Invalid, "authz: policy name %q does not match %s", clip(name), namePattern)
	}
	ps, err := a.model.compile(name, text, true)
	if err != nil {
		return Policy{}, err
	}
	var p Policy
	err = a.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := a.db.Lock(ctx, tx, lockName); err != nil {
			return err
		}
		var builtin bool
		err := tx.QueryRowContext(ctx, `SELECT builtin FROM authz_policies WHERE name = $1`, name).Scan(&builtin)
		exists := err == nil
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return fmt.Errorf("authz: read policy %q: %w", name, err)
		case builtin:
			return errkind.New(errkind.Conflict, "authz: policy %q is built in and cannot be changed", name)
		}
		if err := checkIDs(ctx, tx, name, ids(ps)); err != nil {
			return err
		}
		p, err = a.write(ctx, tx, o, name, text, ids(ps), false, exists)
		return err
	})
	if err != nil {
		return Policy{}, err
	}
	a.reloadAfterChange(ctx)
	return p, nil
}

// write bumps the version and upserts one policy, auditing it in tx.
func (a *Authorizer) write(ctx context.Context, tx *sql.Tx, o audit.Origin, name, text string, ids []string, builtin, exists bool) (Policy, error) {
	v, err := bumpVersion(ctx, tx)
	if err != nil {
		return Policy{}, err
	}
	now := store.Micros(a.now())
	var created int64
	err = tx.QueryRowContext(ctx, `INSERT INTO authz_policies (name, text, ids, builtin, created_at, updated_at, version)
		VALUES ($1, $2, $3, $4, $5, $5, $6)
		ON CONFLICT (name) DO UPDATE SET text = excluded.text, ids = excluded.ids, updated_at = excluded.updated_at, version = excluded.version
		RETURNING created_at`, name, text, strings.Join(ids, " "), builtin, now, v).Scan(&created)
	if err != nil {
		return Policy{}, fmt.Errorf("authz: store policy %q: %w", name, err)
	}
	sum := sha256.Sum256([]byte(text))
	details := map[string]string{"ids": joinClipped(ids, audit.MaxFieldBytes), "sha256": hex.EncodeToString(sum[:]), "replaced": fmt.Sprint(exists)}
	if _, err := a.audit.AppendTx(ctx, tx, o.Event("policy.put", name, audit.OutcomeSuccess, details)); err != nil {
		return Policy{}, fmt.Errorf("authz: audit policy %q: %w", name, err)
	}
	return Policy{Name: name, Text: text, Builtin: builtin, CreatedAt: store.FromMicros(created), UpdatedAt: store.FromMicros(now), IDs: ids}, nil
}

// checkIDs refuses ids that another stored policy than name uses.
func checkIDs(ctx context.Context, tx *sql.Tx, name string, ids []string) error {
	want := map[string]bool{}
	for _, id := range ids {
		if strings.HasPrefix(id, GrantPrefix) {
			return errkind.New(errkind.Invalid, "authz: policy id %q: the prefix %q is reserved for grants", clip(id), GrantPrefix)
		}
		want[id] = true
	}
	rows, err := tx.QueryContext(ctx, `SELECT name, ids FROM authz_policies WHERE name <> $1`, name)
	if err != nil {
		return fmt.Errorf("authz: read policy ids: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var other, list string
		if err := rows.Scan(&other, &list); err != nil {
			return fmt.Errorf("authz: read policy ids: %w", err)
		}
		for _, id := range strings.Fields(list) {
			if want[id] {
				return errkind.New(errkind.Conflict, "authz: policy id %q is already used by policy %q", id, other)
			}
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("authz: read policy ids: %w", err)
	}
	return nil
}

func bumpVersion(ctx context.Context, tx *sql.Tx) (int64, error) {
	var v int64
	if err := tx.QueryRowContext(ctx, `UPDATE authz_version SET version = version + 1 WHERE id = 1 RETURNING version`).Scan(&v); err != nil {
		return 0, fmt.Errorf("authz: bump policy version: %w", err)
	}
	return v, nil
}

// Get returns the policy stored under name, or an errkind.NotFound error.
func (a *Authorizer) Get(ctx context.Context, name string) (Policy, error) {
	ps, err := a.query(ctx, `WHERE name = $1`, name)
	if err != nil {
		return Policy{}, err
	}
	if len(ps) == 0 {
		return Policy{}, errkind.New(errkind.NotFound, "authz: no policy %q", clip(name))
	}
	return ps[0], nil
}

// List returns every stored policy, ordered by name.
func (a *Authorizer) List(ctx context.Context) ([]Policy, error) {
	return a.query(ctx, ``)
}

func (a *Authorizer) query(ctx context.Context, where string, args ...any) ([]Policy, error) {
	rows, err := a.db.QueryContext(ctx, `SELECT name, text, ids, builtin, created_at, updated_at FROM authz_policies `+where+` ORDER BY name`, args...)
	if err != nil {
		return nil, fmt.Errorf("authz: read policies: %w", err)
	}
	defer rows.Close()
	ps := []Policy{}
	for rows.Next() {
		var p Policy
		var list string
		var created, updated int64
		if err := rows.Scan(&p.Name, &p.Text, &list, &p.Builtin, &created, &updated); err != nil {
			return nil, fmt.Errorf("authz: read policy: %w", err)
		}
		p.IDs, p.CreatedAt, p.UpdatedAt = strings.Fields(list), store.FromMicros(created), store.FromMicros(updated)
		ps = append(ps, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("authz: read policies: %w", err)
	}
	return ps, nil
}

// Delete removes the policy stored under name: errkind.NotFound if there is
// none, errkind.Conflict if it is built in. The change and its audit event
// ("policy.delete") are committed together.
func (a *Authorizer) Delete(ctx context.Context, o audit.Origin, name string) error {
	err := a.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := a.db.Lock(ctx, tx, lockName); err != nil {
			return err
		}
		var builtin bool
		err := tx.QueryRowContext(ctx, `SELECT builtin FROM authz_policies WHERE name = $1`, name).Scan(&builtin)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return errkind.New(errkind.NotFound, "authz: no policy %q", clip(name))
		case err != nil:
			return fmt.Errorf("authz: read policy %q: %w", name, err)
		case builtin:
			return errkind.New(errkind.Conflict, "authz: policy %q is built in and cannot be deleted", name)
		}
		if _, err := bumpVersion(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM authz_policies WHERE name = $1`, name); err != nil {
			return fmt.Errorf("authz: delete policy %q: %w", name, err)
		}
		if _, err := a.audit.AppendTx(ctx, tx, o.Event("policy.delete", name, audit.OutcomeSuccess, nil)); err != nil {
			return fmt.Errorf("authz: audit policy %q: %w", name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	a.reloadAfterChange(ctx)
	return nil
}

// reloadAfterChange applies a committed change to this Authorizer. Should
// the reload fail, the change is applied by a later periodic check.
func (a *Authorizer) reloadAfterChange(ctx context.Context) {
	if err := a.Reload(ctx); err != nil {
		a.logger.Warn("authz: reload after a policy change failed; retrying later", "err", err)
		a.lastCheck.Store(0)
	}
}

// Reload loads the stored policies if their version differs from the one
// in force. Calling it is never needed (Check and Authorize check
// periodically); it serves tests and an operator's reload. It records when
// reloads started failing, for Config.FailClosedAfter.
func (a *Authorizer) Reload(ctx context.Context) error {
	a.loadMu.Lock()
	defer a.loadMu.Unlock()
	if err := a.reloadLocked(ctx); err != nil {
		a.failingSince.CompareAndSwap(0, a.now().UnixNano())
		return err
	}
	a.failingSince.Store(0)
	return nil
}

// reloadLocked is Reload; a.loadMu is held.
func (a *Authorizer) reloadLocked(ctx context.Context) error {
	cur := a.set.Load()
	// The version is read before the rows, so the rows are at least as new
	// as it: a change racing the read is reloaded again on the next check.
	var v int64
	if err := a.db.QueryRowContext(ctx, `SELECT version FROM authz_version WHERE id = 1`).Scan(&v); err != nil {
		return fmt.Errorf("authz: read policy version: %w", err)
	}
	if cur != nil && cur.version == v {
		return nil
	}
	rows, err := a.db.QueryContext(ctx, `SELECT name, text, version FROM authz_policies ORDER BY name`)
	if err != nil {
		return fmt.Errorf("authz: read policies: %w", err)
	}
	defer rows.Close()
	next := &policySet{version: v, files: map[string]storedSet{}}
	for rows.Next() {
		var name, text string
		var rv int64
		if err := rows.Scan(&name, &text, &rv); err != nil {
			return fmt.Errorf("authz: read policy: %w", err)
		}
		f, ok := storedSet{}, false
		if cur != nil {
			f, ok = cur.files[name]
		}
		if !ok || f.version != rv {
			// Not re-validated: see compile. A stored policy that no longer
			// parses fails the load rather than being dropped, since a
			// dropped forbid would widen access.
			ps, err := a.model.compile(name, text, false)
			if err != nil {
				return fmt.Errorf("authz: stored policy: %w", err)
			}
			f = storedSet{version: rv, policies: ps}
		}
		next.files[name] = f
		next.all = append(next.all, f.policies...)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("authz: read policies: %w", err)
	}
	if err := a.loadGrants(ctx, cur, next); err != nil {
		return err
	}
	next.index = newIndex(next.all, a.model.actions)
	a.set.Store(next)
	a.logger.Debug("authz: policies loaded", "version", v, "policies", len(next.all))
	return nil
}

// ids returns the ids of ps.
func ids(ps []compiled) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = string(p.id)
	}
	return out
}
