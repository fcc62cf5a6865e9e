package mysql

import (
	"context"
	"errors"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/go-sql-driver/mysql"

	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
)

var _ connector.Ephemeral = (*Connector)(nil)

// Server error numbers the ephemeral statements branch on.
const (
	erDBAccessDenied = 1044 // ER_DBACCESS_DENIED_ERROR: SET DEFAULT ROLE … FOR without UPDATE on mysql
	erNoSuchThread   = 1094 // ER_NO_SUCH_THREAD: KILL of a connection that has ended
	erTableAccess    = 1142 // ER_TABLEACCESS_DENIED_ERROR
	erSpecificAccess = 1227 // ER_SPECIFIC_ACCESS_DENIED_ERROR: e.g. KILL without CONNECTION ADMIN
	erInvalidRole    = 1959 // ER_INVALID_ROLE: the role does not exist
)

var (
	ephemeralUserRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
	grantedRoleRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)
)

func checkEphemeralUser(name string) error {
	if !ephemeralUserRE.MatchString(name) {
		return errkind.New(errkind.Invalid, "mysql: ephemeral user name %q does not match %s", name, ephemeralUserRE)
	}
	return nil
}

func checkGrantedRole(name string) error {
	if !grantedRoleRE.MatchString(name) {
		return errkind.New(errkind.Invalid, "mysql: role name %q does not match %s", name, grantedRoleRE)
	}
	switch strings.ToLower(name) {
	case "none", "public", "current_user", "current_role":
		return errkind.New(errkind.Invalid, "mysql: %q cannot be granted", name)
	}
	return nil
}

// quoteRole quotes a role name checked by checkGrantedRole.
func quoteRole(name string) string { return "`" + name + "`" }

// CreateEphemeral creates (or, on a retry, updates) the account
// 'spec.Username'@'<account_host>' as the management account:
//
//  1. CREATE USER … ACCOUNT LOCK, unless it exists;
//  2. GRANT/REVOKE so that its only role is spec.Roles[0] (MariaDB
//     activates one role per session, so at most one role is accepted;
//     bundle several in one role with GRANT r1 TO bundle);
//  3. ALTER USER … IDENTIFIED BY … ACCOUNT UNLOCK;
//  4. SET DEFAULT ROLE … FOR the account, or, when the management account
//     may not (that needs UPDATE on the mysql schema), the same statement
//     logged in as the account itself.
//
// MariaDB has no account expiry, so spec.ValidUntil is ignored: Warder's
// DropEphemeral is the only expiry. If this call created the account and a
// later step fails, it drops the account again.
func (c *Connector) CreateEphemeral(ctx context.Context, t connector.Target, as connector.Login, spec connector.EphemeralSpec) error {
	if err := c.CheckTarget(t); err != nil {
		return err
	}
	if err := checkEphemeralUser(spec.Username); err != nil {
		return err
	}
	if spec.Username == as.Username {
		return errkind.New(errkind.Invalid, "mysql: ephemeral user %q is the management account", spec.Username)
	}
	if len(spec.Roles) > 1 {
		return errkind.New(errkind.Invalid, "mysql: ephemeral user %q: MariaDB activates one role per session; grant one role (bundle several with GRANT r1 TO bundle)", spec.Username)
	}
	for _, r := range spec.Roles {
		if err := checkGrantedRole(r); err != nil {
			return err
		}
	}
	if len(spec.Password) == 0 {
		return errkind.New(errkind.Invalid, "mysql: ephemeral user %q: empty password", spec.Username)
	}
	s, err := connectAs(ctx, t, as)
	if err != nil {
		return err
	}
	defer s.close()
	ctx, cancel := context.WithTimeout(ctx, 2*t.DialTimeout())
	defer cancel()

	host := accountHost(t)
	created, err := createEphemeral(ctx, s, t, spec, host)
	if err != nil {
		if created {
			// Best effort: a retry or the next cleanup removes it otherwise.
			s.conn.ExecContext(ctx, "DROP USER IF EXISTS ?@?", spec.Username, host)
		}
		return ephemeralErr(t, "create ephemeral user", spec.Username, host, as.Username, err, string(spec.Password))
	}
	return nil
}

func createEphemeral(ctx context.Context, s *session, t connector.Target, spec connector.EphemeralSpec, host string) (created bool, err error) {
	var n int
	if err := s.conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM mysql.user WHERE User = ? AND Host = ? AND is_role = 'N'", spec.Username, host).Scan(&n); err != nil {
		return false, err
	}
	if n == 0 {
		if _, err := s.conn.ExecContext(ctx, "CREATE USER ?@? ACCOUNT LOCK", spec.Username, host); err != nil {
			var me *mysql.MySQLError
			if !errors.As(err, &me) || me.Number != erCannotUser { // not a lost race with another creator
				return false, err
			}
		} else {
			created = true
		}
	}

	rows, err := s.conn.QueryContext(ctx, "SELECT Role FROM mysql.roles_mapping WHERE User = ? AND Host = ?", spec.Username, host)
	if err != nil {
		return created, err
	}
	var current []string
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			rows.Close()
			return created, err
		}
		current = append(current, r)
	}
	if err := rows.Close(); err != nil {
		return created, err
	}
	for _, r := range current {
		if !slices.Contains(spec.Roles, r) {
			if !grantedRoleRE.MatchString(r) {
				return created, errkind.New(errkind.Conflict, "the account holds the role %q, whose name Warder does not quote", r)
			}
			if _, err := s.conn.ExecContext(ctx, "REVOKE "+quoteRole(r)+" FROM ?@?", spec.Username, host); err != nil {
				return created, err
			}
		}
	}
	for _, r := range spec.Roles {
		if !slices.Contains(current, r) {
			if _, err := s.conn.ExecContext(ctx, "GRANT "+quoteRole(r)+" TO ?@?", spec.Username, host); err != nil {
				return created, err
			}
		}
	}

	if _, err := s.conn.ExecContext(ctx, "ALTER USER ?@? IDENTIFIED BY ? ACCOUNT UNLOCK", spec.Username, host, string(spec.Password)); err != nil {
		return created, err
	}

	def := "NONE"
	if len(spec.Roles) == 1 {
		def = quoteRole(spec.Roles[0])
	}
	_, err = s.conn.ExecContext(ctx, "SET DEFAULT ROLE "+def+" FOR ?@?", spec.Username, host)
	var me *mysql.MySQLError
	if errors.As(err, &me) && me.Number == erDBAccessDenied {
		err = setOwnDefaultRole(ctx, t, spec, host, def)
	}
	return created, err
}

// setOwnDefaultRole logs in as the ephemeral account and sets its default
// role itself, which needs no privilege.
func setOwnDefaultRole(ctx context.Context, t connector.Target, spec connector.EphemeralSpec, host, role string) error {
	s, err := connect(ctx, t, spec.Username, string(spec.Password))
	if errors.Is(err, connector.ErrRejected) {
		// Not the management login's rejection, so not wrapped as one.
		return errkind.New(errkind.Conflict, "the management account may not SET DEFAULT ROLE for others (needs UPDATE on mysql) and the new account could not log in from here to set it itself (account_host %q)", host)
	}
	if err != nil {
		return err
	}
	defer s.close()
	var cur string
	if err := s.conn.QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&cur); err != nil {
		return err
	}
	if want := spec.Username + "@" + host; cur != want {
		return errkind.New(errkind.Conflict, "the login as %q matched the account %s, not %s (check account_host)", spec.Username, cur, want)
	}
	_, err = s.conn.ExecContext(ctx, "SET DEFAULT ROLE "+role)
	return err
}

// DropEphemeral locks the account 'username'@'<account_host>' (no new
// logins), kills every connection of the user name
// (information_schema.PROCESSLIST, KILL CONNECTION), drops the account and
// kills again whatever connected in between. A missing account is not an
// error. MariaDB cannot mark accounts, so any account of that name is
// dropped: the caller's unique prefix is the only guard.
func (c *Connector) DropEphemeral(ctx context.Context, t connector.Target, as connector.Login, username string) error {
	if err := c.CheckTarget(t); err != nil {
		return err
	}
	if err := checkEphemeralUser(username); err != nil {
		return err
	}
	if username == as.Username {
		return errkind.New(errkind.Invalid, "mysql: ephemeral user %q is the management account", username)
	}
	s, err := connectAs(ctx, t, as)
	if err != nil {
		return err
	}
	defer s.close()
	ctx, cancel := context.WithTimeout(ctx, 2*t.DialTimeout())
	defer cancel()

	host := accountHost(t)
	err = func() error {
		if _, err := s.conn.ExecContext(ctx, "ALTER USER IF EXISTS ?@? ACCOUNT LOCK", username, host); err != nil {
			return err
		}
		if err := killSessions(ctx, s, username); err != nil {
			return err
		}
		if _, err := s.conn.ExecContext(ctx, "DROP USER IF EXISTS ?@?", username, host); err != nil {
			return err
		}
		return killSessions(ctx, s, username)
	}()
	if err != nil {
		return ephemeralErr(t, "drop ephemeral user", username, host, as.Username, err, "")
	}
	return nil
}

// killSessions kills every connection of user. Seeing other users'
// connections needs PROCESS; killing them CONNECTION ADMIN (or SUPER).
func killSessions(ctx context.Context, s *session, user string) error {
	rows, err := s.conn.QueryContext(ctx, "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ? AND ID <> CONNECTION_ID()", user)
	if err != nil {
		return err
	}
	var ids []uint64
	for rows.Next() {
		var id uint64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		ids = append(ids, id)
	}
	if err := rows.Close(); err != nil {
		return err
	}
	for _, id := range ids {
		_, err := s.conn.ExecContext(ctx, "KILL CONNECTION "+strconv.FormatUint(id, 10))
		var me *mysql.MySQLError
		if err != nil && !(errors.As(err, &me) && me.Number == erNoSuchThread) {
			return err
		}
	}
	return nil
}

// ListEphemeral lists the accounts on account_host (not roles) whose user
// names start with prefix, taken literally (LIKE wildcards are escaped).
// An empty prefix is refused. Reading mysql.user needs SELECT on it.
func (c *Connector) ListEphemeral(ctx context.Context, t connector.Target, as connector.Login, prefix string) ([]string, error) {
	if err := c.CheckTarget(t); err != nil {
		return nil, err
	}
	if prefix == "" || len(prefix) > 80 {
		return nil, errkind.New(errkind.Invalid, "mysql: ephemeral prefix must be 1-80 bytes")
	}
	s, err := connectAs(ctx, t, as)
	if err != nil {
		return nil, err
	}
	defer s.close()
	ctx, cancel := context.WithTimeout(ctx, t.DialTimeout())
	defer cancel()

	host := accountHost(t)
	names, err := func() ([]string, error) {
		// '!' rather than '\' as the escape: the meaning of '\' in a
		// literal depends on NO_BACKSLASH_ESCAPES.
		rows, err := s.conn.QueryContext(ctx, "SELECT User FROM mysql.user WHERE User LIKE ? ESCAPE '!' AND Host = ? AND is_role = 'N' ORDER BY User",
			escapeLike(prefix)+"%", host)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		var names []string
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				return nil, err
			}
			names = append(names, n)
		}
		return names, rows.Err()
	}()
	if err != nil {
		return nil, ephemeralErr(t, "list ephemeral users", prefix, host, as.Username, err, "")
	}
	return names, nil
}

// escapeLike escapes LIKE's wildcards for ESCAPE '!'.
func escapeLike(s string) string {
	return strings.NewReplacer("!", "!!", "%", "!%", "_", "!_").Replace(s)
}

func connectAs(ctx context.Context, t connector.Target, as connector.Login) (*session, error) {
	if as.Username == "" {
		return nil, errkind.New(errkind.Invalid, "mysql: no management login")
	}
	if as.Credential.Kind != connector.Password {
		return nil, errkind.New(errkind.Invalid, "mysql: management login %q has a %s credential, not a password", as.Username, as.Credential.Kind)
	}
	return connect(ctx, t, as.Username, string(as.Credential.Secret))
}

// ephemeralErr describes a failed ephemeral statement with an errkind
// (NotFound: a missing role; Denied: missing privileges), withholding
// server messages that may quote the password.
func ephemeralErr(t connector.Target, op, user, host, who string, err error, secret string) error {
	if errors.Is(err, connector.ErrRejected) || errkind.Of(err) != errkind.Other {
		// Already described by connect or here.
		return errkind.New(errkind.Of(err), "mysql: %s: %s '%s'@'%s' as %q: %w", t.Name, op, user, host, who, err)
	}
	var me *mysql.MySQLError
	if !errors.As(err, &me) {
		return errkind.New(errkind.Unavailable, "mysql: %s: %s '%s'@'%s' as %q: %w", t.Name, op, user, host, who, err)
	}
	msg := me.Message
	if me.Number == erParse || (secret != "" && strings.Contains(msg, secret)) {
		msg = "[message withheld: it may quote the password]"
	}
	kind := errkind.Other
	switch me.Number {
	case erInvalidRole:
		kind = errkind.NotFound
	case erDBAccessDenied, erAccessDenied, erTableAccess, erSpecificAccess:
		kind = errkind.Denied
	}
	return errkind.New(kind, "mysql: %s: %s '%s'@'%s' as %q: error %d (%s): %s", t.Name, op, user, host, who, me.Number, me.SQLState, msg)
}
