// Package postgres is the connector for PostgreSQL roles: it verifies a
// password by logging in (SCRAM or whatever the server's pg_hba.conf asks
// for) and changes it with ALTER ROLE … PASSWORD, sending a SCRAM-SHA-256
// verifier computed here rather than the password itself.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
)

// Kind is the target kind this package serves.
const Kind = "postgres"

// Target options.
const (
	// OptDatabase is the database to connect to. Default "postgres".
	OptDatabase = "database"
	// OptSSLMode is libpq's sslmode: disable, allow, prefer, require,
	// verify-ca or verify-full. Default "prefer". The database gateway
	// talks to the server with the same mode.
	OptSSLMode = "sslmode"
	// OptDefaultAccount is the account the database gateway logs in as
	// when a client names only the target and holds no just-in-time grant
	// with a database user on it. Default: none (the client must name an
	// account).
	OptDefaultAccount = "default_account"
)

var sslModes = []string{"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}

// SQLSTATEs that mean the server refused the login itself.
const (
	codeInvalidPassword      = "28P01" // invalid_password: wrong password, unknown role, expired VALID UNTIL
	codeInvalidAuthorization = "28000" // invalid_authorization_specification: no pg_hba.conf entry, NOLOGIN
)

// Connector manages the passwords of PostgreSQL roles. The zero value is
// ready to use; it holds no state and is safe for concurrent use.
type Connector struct{}

var _ connector.Connector = (*Connector)(nil)

// New returns a Connector.
func New() *Connector { return &Connector{} }

// Kind returns "postgres".
func (*Connector) Kind() string { return Kind }

// Kinds returns the credential kinds a PostgreSQL role can have: password.
func (*Connector) Kinds() []connector.CredentialKind {
	return []connector.CredentialKind{connector.Password}
}

// CheckTarget validates t's address and its options (database, sslmode,
// default_account).
func (*Connector) CheckTarget(t connector.Target) error {
	if t.Kind != "" && t.Kind != Kind {
		return errkind.New(errkind.Invalid, "postgres: target %q has kind %q", t.Name, t.Kind)
	}
	if t.Host == "" {
		return errkind.New(errkind.Invalid, "postgres: target %q has no host", t.Name)
	}
	if t.Port < 1 || t.Port > 65535 {
		return errkind.New(errkind.Invalid, "postgres: target %q: port %d out of range 1-65535", t.Name, t.Port)
	}
	for k, v := range t.Options {
		switch k {
		case OptDatabase:
			if v == "" {
				return errkind.New(errkind.Invalid, "postgres: target %q: option %s is empty", t.Name, k)
			}
		case OptSSLMode:
			if !slices.Contains(sslModes, v) {
				return errkind.New(errkind.Invalid, "postgres: target %q: sslmode %q is not one of %s", t.Name, v, strings.Join(sslModes, ", "))
			}
		case OptDefaultAccount:
			if v == "" || strings.ContainsAny(v, "/ \t\r\n") {
				return errkind.New(errkind.Invalid, "postgres: target %q: option %s must name an account", t.Name, k)
			}
		default:
			return errkind.New(errkind.Invalid, "postgres: target %q: unknown option %q (known: %s, %s, %s)", t.Name, k, OptDatabase, OptSSLMode, OptDefaultAccount)
		}
	}
	return nil
}

// Verify logs in to t as username with cred's password.
func (c *Connector) Verify(ctx context.Context, t connector.Target, username string, cred connector.Credential) error {
	if err := c.CheckTarget(t); err != nil {
		return err
	}
	if cred.Kind != connector.Password {
		return errkind.New(errkind.Invalid, "postgres: cannot verify a %s credential", cred.Kind)
	}
	conn, err := connect(ctx, t, username, string(cred.Secret))
	if err != nil {
		return err
	}
	closeConn(conn, t)
	return nil
}

// Change sets req.Username's password to req.Next with
// ALTER ROLE … WITH PASSWORD '<SCRAM-SHA-256 verifier>', logged in as
// req.As or, when it is nil, as the role itself with req.Current. A role may
// always change its own password; a management role needs CREATEROLE (and
// SUPERUSER to change a superuser's password).
func (c *Connector) Change(ctx context.Context, t connector.Target, req connector.ChangeRequest) error {
	if err := c.CheckTarget(t); err != nil {
		return err
	}
	if req.Username == "" {
		return errkind.New(errkind.Invalid, "postgres: change: no username")
	}
	if req.Next.Kind != connector.Password || len(req.Next.Secret) == 0 {
		return errkind.New(errkind.Invalid, "postgres: change of %q: the new credential must be a non-empty password", req.Username)
	}
	verifier, err := newVerifier(string(req.Next.Secret))
	if err != nil {
		return errkind.Wrap(errkind.Invalid, err)
	}
	login, err := loginFor(req)
	if err != nil {
		return err
	}
	conn, err := connect(ctx, t, login.Username, string(login.Credential.Secret))
	if err != nil {
		return err
	}
	defer closeConn(conn, t)

	ctx, cancel := context.WithTimeout(ctx, t.DialTimeout())
	defer cancel()
	// The verifier is base64 plus '$' and ':', so it needs no escaping.
	stmt := "ALTER ROLE " + pgx.Identifier{req.Username}.Sanitize() + " WITH PASSWORD '" + verifier + "'"
	if _, err := conn.Exec(ctx, stmt); err != nil {
		return fmt.Errorf("postgres: %s: change password of %q as %q: %w", t.Name, req.Username, login.Username, err)
	}
	return nil
}

// loginFor returns who performs req: req.As, or the account with Current.
func loginFor(req connector.ChangeRequest) (connector.Login, error) {
	if req.As != nil {
		if req.As.Credential.Kind != connector.Password {
			return connector.Login{}, errkind.New(errkind.Invalid, "postgres: management login %q has a %s credential, not a password", req.As.Username, req.As.Credential.Kind)
		}
		return *req.As, nil
	}
	if req.Current == nil {
		return connector.Login{}, errkind.New(errkind.Invalid, "postgres: change of %q: neither the current password nor a management login is known", req.Username)
	}
	if req.Current.Kind != connector.Password {
		return connector.Login{}, errkind.New(errkind.Invalid, "postgres: change of %q: current credential is a %s, not a password", req.Username, req.Current.Kind)
	}
	return connector.Login{Username: req.Username, Credential: *req.Current}, nil
}

// connect opens one connection to t as user, bounded by t.DialTimeout.
func connect(ctx context.Context, t connector.Target, user, password string) (*pgx.Conn, error) {
	cfg, err := connConfig(t)
	if err != nil {
		return nil, err
	}
	cfg.User = user
	cfg.Password = password
	ctx, cancel := context.WithTimeout(ctx, t.DialTimeout())
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == codeInvalidPassword || pgErr.Code == codeInvalidAuthorization) {
			return nil, connector.Rejected("postgres: %s refused the login of %q (SQLSTATE %s)", t.Name, user, pgErr.Code)
		}
		return nil, errkind.New(errkind.Unavailable, "postgres: %s: connect to %s as %q: %w", t.Name, t.Addr(), user, err)
	}
	return conn, nil
}

// connConfig is t's connection configuration without user and password.
// Host, port, database and sslmode are always set explicitly, so PG*
// environment variables of the server process cannot redirect them.
func connConfig(t connector.Target) (*pgx.ConnConfig, error) {
	db := t.Options[OptDatabase]
	if db == "" {
		db = "postgres"
	}
	mode := t.Options[OptSSLMode]
	if mode == "" {
		mode = "prefer"
	}
	dsn := fmt.Sprintf("host=%s port=%d dbname=%s sslmode=%s", quoteDSN(t.Host), t.Port, quoteDSN(db), mode)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, errkind.New(errkind.Invalid, "postgres: target %q: %w", t.Name, err)
	}
	cfg.ConnectTimeout = t.DialTimeout()
	cfg.RuntimeParams["application_name"] = "warder"
	return cfg, nil
}

// quoteDSN quotes v as a libpq keyword/value connection string value.
func quoteDSN(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

func closeConn(conn *pgx.Conn, t connector.Target) {
	ctx, cancel := context.WithTimeout(context.Background(), t.DialTimeout())
	defer cancel()
	conn.Close(ctx)
}
