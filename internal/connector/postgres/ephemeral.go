package postgres

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
)

var _ connector.Ephemeral = (*Connector)(nil)

// ephemeralMark is the comment (COMMENT ON ROLE) on every role
// CreateEphemeral makes. Create, Drop and List act only on roles that
// carry it, so a name collision can never take over or drop a role
// someone else made.
const ephemeralMark = "warder ephemeral account"

// SQLSTATEs the ephemeral statements branch on.
const (
	codeUndefinedObject       = "42704" // a granted role does not exist
	codeInsufficientPrivilege = "42501"
	codeDependentObjects      = "2BP01" // DROP ROLE: the role still owns objects or holds privileges
	codeDuplicateObject       = "42710" // CREATE ROLE lost a race with another creator
)

var (
	ephemeralUserRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
	grantedRoleRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)
)

// checkEphemeralUser validates the name of an ephemeral role.
func checkEphemeralUser(name string) error {
	if !ephemeralUserRE.MatchString(name) {
		return errkind.New(errkind.Invalid, "postgres: ephemeral user name %q does not match %s", name, ephemeralUserRE)
	}
	if strings.HasPrefix(name, "pg_") {
		return errkind.New(errkind.Invalid, "postgres: ephemeral user name %q: the prefix pg_ is reserved", name)
	}
	return nil
}

// checkGrantedRole validates the name of a role to grant. Names are quoted
// as identifiers, so case is kept.
func checkGrantedRole(name string) error {
	if !grantedRoleRE.MatchString(name) {
		return errkind.New(errkind.Invalid, "postgres: role name %q does not match %s", name, grantedRoleRE)
	}
	switch strings.ToLower(name) {
	case "public", "none", "current_user", "current_role", "session_user":
		return errkind.New(errkind.Invalid, "postgres: %q cannot be granted", name)
	}
	return nil
}

// CreateEphemeral creates (or, on a retry, updates) a LOGIN role with a
// SCRAM-SHA-256 verifier computed here, VALID UNTIL spec.ValidUntil and
// membership in exactly spec.Roles, in one transaction as the management
// account. The role is marked with a comment; an existing role without the
// mark is refused (errkind.Conflict). A missing granted role is
// errkind.NotFound and leaves nothing behind.
func (c *Connector) CreateEphemeral(ctx context.Context, t connector.Target, as connector.Login, spec connector.EphemeralSpec) error {
	if err := c.CheckTarget(t); err != nil {
		return err
	}
	if err := checkEphemeralUser(spec.Username); err != nil {
		return err
	}
	if spec.Username == as.Username {
		return errkind.New(errkind.Invalid, "postgres: ephemeral user %q is the management account", spec.Username)
	}
	for _, r := range spec.Roles {
		if err := checkGrantedRole(r); err != nil {
			return err
		}
		if r == spec.Username {
			return errkind.New(errkind.Invalid, "postgres: ephemeral user %q cannot be a member of itself", r)
		}
	}
	if len(spec.Password) == 0 {
		return errkind.New(errkind.Invalid, "postgres: ephemeral user %q: empty password", spec.Username)
	}
	if spec.ValidUntil.IsZero() {
		return errkind.New(errkind.Invalid, "postgres: ephemeral user %q: no ValidUntil", spec.Username)
	}
	verifier, err := newVerifier(string(spec.Password))
	if err != nil {
		return errkind.Wrap(errkind.Invalid, err)
	}
	conn, err := connectAs(ctx, t, as)
	if err != nil {
		return err
	}
	defer closeConn(conn, t)
	ctx, cancel := context.WithTimeout(ctx, 2*t.DialTimeout())
	defer cancel()

	// Two CREATEs racing for one name: the loser retries as an ALTER.
	for attempt := 0; ; attempt++ {
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			return createEphemeral(ctx, tx, spec, verifier)
		})
		var pgErr *pgconn.PgError
		if attempt == 0 && errors.As(err, &pgErr) && pgErr.Code == codeDuplicateObject {
			continue
		}
		break
	}
	if err != nil {
		return ephemeralErr(t, "create ephemeral user", spec.Username, as.Username, err)
	}
	return nil
}

func createEphemeral(ctx context.Context, tx pgx.Tx, spec connector.EphemeralSpec, verifier string) error {
	exists, marked, err := lookupRole(ctx, tx, spec.Username)
	if err != nil {
		return err
	}
	if exists && !marked {
		return errkind.New(errkind.Conflict, "role %q exists and was not created by Warder", spec.Username)
	}
	ident := pgx.Identifier{spec.Username}.Sanitize()
	// Utility statements take no parameters. The verifier is base64 plus
	// '$' and ':' and the timestamp digits, so neither needs escaping.
	until := spec.ValidUntil.UTC().Format("2006-01-02 15:04:05.999999") + "+00"
	attrs := " LOGIN PASSWORD '" + verifier + "' VALID UNTIL '" + until + "'"
	if exists {
		_, err = tx.Exec(ctx, "ALTER ROLE "+ident+attrs)
	} else {
		_, err = tx.Exec(ctx, "CREATE ROLE "+ident+attrs)
	}
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "COMMENT ON ROLE "+ident+" IS '"+ephemeralMark+"'"); err != nil {
		return err
	}
	rows, err := tx.Query(ctx, `SELECT r.rolname FROM pg_auth_members m
		JOIN pg_roles r ON r.oid = m.roleid
		JOIN pg_roles u ON u.oid = m.member
		WHERE u.rolname = $1`, spec.Username)
	if err != nil {
		return err
	}
	current, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, r := range current {
		if !slices.Contains(spec.Roles, r) {
			if _, err := tx.Exec(ctx, "REVOKE "+pgx.Identifier{r}.Sanitize()+" FROM "+ident); err != nil {
				return err
			}
		}
	}
	for _, r := range spec.Roles {
		if !slices.Contains(current, r) {
			if _, err := tx.Exec(ctx, "GRANT "+pgx.Identifier{r}.Sanitize()+" TO "+ident); err != nil {
				return err
			}
		}
	}
	return nil
}

// lookupRole reports whether role exists and carries ephemeralMark.
func lookupRole(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, role string) (exists, marked bool, err error) {
	var comment *string
	err = q.QueryRow(ctx, "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1", role).Scan(&comment)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, false, nil
	}
	if err != nil {
		return false, false, err
	}
	return true, comment != nil && *comment == ephemeralMark, nil
}

// DropEphemeral drops the ephemeral role username:
//
//  1. ALTER ROLE … NOLOGIN, so no new session starts;
//  2. GRANT username TO CURRENT_USER, unless the management account already
//     has its privileges (needed to signal its sessions and reassign its
//     objects; the membership goes with the role);
//  3. pg_terminate_backend on each of its sessions, waiting up to
//     t.DialTimeout for them to end;
//  4. REASSIGN OWNED BY username TO CURRENT_USER; DROP OWNED BY username;
//     DROP ROLE, in one transaction.
//
// REASSIGN/DROP OWNED act on the connection's database only: if the role
// owns objects or holds privileges in another database, DROP ROLE fails
// with an errkind.Conflict error. A missing role is not an error; a role
// without Warder's mark is refused (errkind.Conflict).
func (c *Connector) DropEphemeral(ctx context.Context, t connector.Target, as connector.Login, username string) error {
	if err := c.CheckTarget(t); err != nil {
		return err
	}
	if err := checkEphemeralUser(username); err != nil {
		return err
	}
	if username == as.Username {
		return errkind.New(errkind.Invalid, "postgres: ephemeral user %q is the management account", username)
	}
	conn, err := connectAs(ctx, t, as)
	if err != nil {
		return err
	}
	defer closeConn(conn, t)
	ctx, cancel := context.WithTimeout(ctx, 3*t.DialTimeout())
	defer cancel()
	if err := dropEphemeral(ctx, conn, t, username); err != nil {
		return ephemeralErr(t, "drop ephemeral user", username, as.Username, err)
	}
	return nil
}

func dropEphemeral(ctx context.Context, conn *pgx.Conn, t connector.Target, username string) error {
	exists, marked, err := lookupRole(ctx, conn, username)
	if err != nil {
		return err
	}
	if !exists {
		return nil
	}
	if !marked {
		return errkind.New(errkind.Conflict, "role %q was not created by Warder; not dropping it", username)
	}
	ident := pgx.Identifier{username}.Sanitize()
	if _, err := conn.Exec(ctx, "ALTER ROLE "+ident+" NOLOGIN"); err != nil {
		return err
	}
	var hasPrivs bool
	if err := conn.QueryRow(ctx, "SELECT pg_has_role(current_user, $1, 'USAGE')", username).Scan(&hasPrivs); err != nil {
		return err
	}
	if !hasPrivs {
		if _, err := conn.Exec(ctx, "GRANT "+ident+" TO CURRENT_USER"); err != nil {
			return err
		}
	}
	var lingering int
	err = conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE NOT pg_terminate_backend(pid, $2))
		FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()`,
		username, t.DialTimeout().Milliseconds()).Scan(&lingering)
	if err != nil {
		return err
	}
	if lingering > 0 {
		return errkind.New(errkind.Unavailable, "%d session(s) of %q did not end within %s", lingering, username, t.DialTimeout())
	}
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, stmt := range []string{
			"REASSIGN OWNED BY " + ident + " TO CURRENT_USER",
			"DROP OWNED BY " + ident,
			"DROP ROLE IF EXISTS " + ident,
		} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	})
}

// ListEphemeral lists the roles carrying Warder's mark whose names start
// with prefix. LIKE wildcards in prefix are escaped, so it matches
// literally. An empty prefix is refused.
func (c *Connector) ListEphemeral(ctx context.Context, t connector.Target, as connector.Login, prefix string) ([]string, error) {
	if err := c.CheckTarget(t); err != nil {
		return nil, err
	}
	if prefix == "" || len(prefix) > 63 || strings.IndexByte(prefix, 0) >= 0 {
		return nil, errkind.New(errkind.Invalid, "postgres: ephemeral prefix must be 1-63 bytes without NUL")
	}
	conn, err := connectAs(ctx, t, as)
	if err != nil {
		return nil, err
	}
	defer closeConn(conn, t)
	ctx, cancel := context.WithTimeout(ctx, t.DialTimeout())
	defer cancel()
	rows, err := conn.Query(ctx, `SELECT rolname FROM pg_roles
		WHERE rolname LIKE $1 || '%' ESCAPE '\'
		AND shobj_description(oid, 'pg_authid') = $2
		ORDER BY rolname`, escapeLike(prefix), ephemeralMark)
	if err != nil {
		return nil, ephemeralErr(t, "list ephemeral users", prefix, as.Username, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, ephemeralErr(t, "list ephemeral users", prefix, as.Username, err)
	}
	return names, nil
}

// escapeLike escapes LIKE's wildcards and its escape character '\'.
func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// connectAs logs in as the management account.
func connectAs(ctx context.Context, t connector.Target, as connector.Login) (*pgx.Conn, error) {
	if as.Username == "" {
		return nil, errkind.New(errkind.Invalid, "postgres: no management login")
	}
	if as.Credential.Kind != connector.Password {
		return nil, errkind.New(errkind.Invalid, "postgres: management login %q has a %s credential, not a password", as.Username, as.Credential.Kind)
	}
	return connect(ctx, t, as.Username, string(as.Credential.Secret))
}

// ephemeralErr describes a failed ephemeral statement with an errkind:
// NotFound for a missing granted role, Denied for missing privileges,
// Conflict for objects still owned, Unavailable for a connection failure.
// PostgreSQL's messages do not quote the statement, so the verifier is
// never repeated.
func ephemeralErr(t connector.Target, op, name, as string, err error) error {
	msg := fmt.Sprintf("postgres: %s: %s %q as %q", t.Name, op, name, as)
	if k := errkind.Of(err); k != errkind.Other {
		return errkind.New(k, "%s: %w", msg, err)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		kind := errkind.Other
		switch pgErr.Code {
		case codeUndefinedObject:
			kind = errkind.NotFound
		case codeInsufficientPrivilege:
			kind = errkind.Denied
		case codeDependentObjects:
			kind = errkind.Conflict
			msg += " (it owns objects or holds privileges in another database; only the connection database is cleaned up)"
		}
		return errkind.New(kind, "%s: %w", msg, err)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || pgconn.SafeToRetry(err) || isConnErr(err) {
		return errkind.New(errkind.Unavailable, "%s: %w", msg, err)
	}
	return errkind.New(errkind.Other, "%s: %w", msg, err)
}

func isConnErr(err error) bool {
	var ce *pgconn.ConnectError
	return errors.As(err, &ce) || pgconn.Timeout(err)
}
