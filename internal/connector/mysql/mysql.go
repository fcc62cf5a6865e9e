// Package mysql is the connector for MariaDB (and MySQL) accounts: it
// verifies a password by logging in and changes it with ALTER USER …
// IDENTIFIED BY (through a management account) or SET PASSWORD (as the
// account itself), keeping the account's authentication plugin.
//
// Neither statement takes server-side placeholders, so the driver
// (go-sql-driver/mysql with interpolateParams) quotes the values into the
// statement, escaping according to the server's NO_BACKSLASH_ESCAPES
// status. The password therefore crosses the wire inside the statement:
// use tls=true for targets reached over an untrusted network.
package mysql

import (
	"context"
	"database/sql"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/go-sql-driver/mysql"

	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
)

// Kind is the target kind this package serves.
const Kind = "mysql"

// Target options.
const (
	// OptAccountHost is the host part of the managed accounts
	// ('user'@'host'). Default "%".
	OptAccountHost = "account_host"
	// OptTLS is the driver's tls setting: "preferred" (default: TLS when
	// the server offers it, certificate not checked), "true" (required,
	// certificate checked against the system roots and the target's
	// host), "skip-verify" (required, not checked) or "false".
	OptTLS = "tls"
)

var tlsModes = []string{"preferred", "true", "skip-verify", "false"}

// Server error numbers that mean the login itself was refused.
const (
	erAccessDenied         = 1045 // ER_ACCESS_DENIED_ERROR: wrong password or no such account
	erAccessDeniedNoPasswd = 1698 // ER_ACCESS_DENIED_NO_PASSWORD_ERROR: e.g. unix_socket account over TCP
	erCannotUser           = 1396 // ER_CANNOT_USER: ALTER USER on a missing account
	erParse                = 1064 // ER_PARSE_ERROR: quotes the statement, so never shown
)

// Connector manages the passwords of MariaDB/MySQL accounts. The zero
// value is ready to use; it holds no state and is safe for concurrent use.
type Connector struct{}

var _ connector.Connector = (*Connector)(nil)

// New returns a Connector.
func New() *Connector { return &Connector{} }

// Kind returns "mysql".
func (*Connector) Kind() string { return Kind }

// Kinds returns the credential kinds an account can have: password.
func (*Connector) Kinds() []connector.CredentialKind {
	return []connector.CredentialKind{connector.Password}
}

// CheckTarget validates t's address and its options (account_host, tls).
func (*Connector) CheckTarget(t connector.Target) error {
	if t.Kind != "" && t.Kind != Kind {
		return errkind.New(errkind.Invalid, "mysql: target %q has kind %q", t.Name, t.Kind)
	}
	if t.Host == "" {
		return errkind.New(errkind.Invalid, "mysql: target %q has no host", t.Name)
	}
	if t.Port < 1 || t.Port > 65535 {
		return errkind.New(errkind.Invalid, "mysql: target %q: port %d out of range 1-65535", t.Name, t.Port)
	}
	for k, v := range t.Options {
		switch k {
		case OptAccountHost:
			if v == "" || len(v) > 255 {
				return errkind.New(errkind.Invalid, "mysql: target %q: account_host must be 1-255 characters", t.Name)
			}
		case OptTLS:
			if !slices.Contains(tlsModes, v) {
				return errkind.New(errkind.Invalid, "mysql: target %q: tls %q is not one of %s", t.Name, v, strings.Join(tlsModes, ", "))
			}
		default:
			return errkind.New(errkind.Invalid, "mysql: target %q: unknown option %q (known: %s, %s)", t.Name, k, OptAccountHost, OptTLS)
		}
	}
	return nil
}

func accountHost(t connector.Target) string {
	if h := t.Options[OptAccountHost]; h != "" {
		return h
	}
	return "%"
}

// Verify logs in to t as username with cred's password.
func (c *Connector) Verify(ctx context.Context, t connector.Target, username string, cred connector.Credential) error {
	if err := c.CheckTarget(t); err != nil {
		return err
	}
	if cred.Kind != connector.Password {
		return errkind.New(errkind.Invalid, "mysql: cannot verify a %s credential", cred.Kind)
	}
	s, err := connect(ctx, t, username, string(cred.Secret))
	if err != nil {
		return err
	}
	s.close()
	return nil
}

// Change sets the password of 'req.Username'@'<account_host>'. As a
// management account (req.As) it runs ALTER USER, which needs the global
// CREATE USER privilege. As the account itself it first checks that the
// login matched that very account (CURRENT_USER()), then runs MariaDB's
// SET PASSWORD = PASSWORD(…) (MySQL: ALTER USER CURRENT_USER()), which
// needs no privilege.
func (c *Connector) Change(ctx context.Context, t connector.Target, req connector.ChangeRequest) error {
	if err := c.CheckTarget(t); err != nil {
		return err
	}
	if req.Username == "" {
		return errkind.New(errkind.Invalid, "mysql: change: no username")
	}
	if req.Next.Kind != connector.Password || len(req.Next.Secret) == 0 {
		return errkind.New(errkind.Invalid, "mysql: change of %q: the new credential must be a non-empty password", req.Username)
	}
	who, current, err := loginFor(req)
	if err != nil {
		return err
	}
	s, err := connect(ctx, t, who, current)
	if err != nil {
		return err
	}
	defer s.close()

	host := accountHost(t)
	next := string(req.Next.Secret)
	ctx, cancel := context.WithTimeout(ctx, t.DialTimeout())
	defer cancel()
	if req.As != nil {
		_, err = s.conn.ExecContext(ctx, "ALTER USER ?@? IDENTIFIED BY ?", req.Username, host, next)
	} else {
		var cur, version string
		if err := s.conn.QueryRowContext(ctx, "SELECT CURRENT_USER(), VERSION()").Scan(&cur, &version); err != nil {
			return errkind.New(errkind.Unavailable, "mysql: %s: %w", t.Name, err)
		}
		if want := req.Username + "@" + host; cur != want {
			return errkind.New(errkind.Conflict, "mysql: %s: the login as %q matched the account %s, not the managed %s (check account_host)", t.Name, req.Username, cur, want)
		}
		if strings.Contains(version, "MariaDB") {
			_, err = s.conn.ExecContext(ctx, "SET PASSWORD = PASSWORD(?)", next)
		} else {
			_, err = s.conn.ExecContext(ctx, "ALTER USER CURRENT_USER() IDENTIFIED BY ?", next)
		}
	}
	if err != nil {
		return changeErr(t, req.Username, host, who, err, next)
	}
	return nil
}

// changeErr describes a failed password statement without repeating the
// password, which a server message may quote (parse errors quote the
// statement from the error on).
func changeErr(t connector.Target, user, host, who string, err error, secret string) error {
	var me *mysql.MySQLError
	if !errors.As(err, &me) {
		return errkind.New(errkind.Unavailable, "mysql: %s: change password of '%s'@'%s' as %q: %w", t.Name, user, host, who, err)
	}
	msg := me.Message
	if me.Number == erParse || strings.Contains(msg, secret) {
		msg = "[message withheld: it may quote the password]"
	}
	kind := errkind.Other
	if me.Number == erCannotUser {
		kind = errkind.NotFound
	}
	return errkind.New(kind, "mysql: %s: change password of '%s'@'%s' as %q: error %d (%s): %s", t.Name, user, host, who, me.Number, me.SQLState, msg)
}

func loginFor(req connector.ChangeRequest) (string, string, error) {
	if req.As != nil {
		if req.As.Credential.Kind != connector.Password {
			return "", "", errkind.New(errkind.Invalid, "mysql: management login %q has a %s credential, not a password", req.As.Username, req.As.Credential.Kind)
		}
		return req.As.Username, string(req.As.Credential.Secret), nil
	}
	if req.Current == nil {
		return "", "", errkind.New(errkind.Invalid, "mysql: change of %q: neither the current password nor a management login is known", req.Username)
	}
	if req.Current.Kind != connector.Password {
		return "", "", errkind.New(errkind.Invalid, "mysql: change of %q: current credential is a %s, not a password", req.Username, req.Current.Kind)
	}
	return req.Username, string(req.Current.Secret), nil
}

// session is one connection.
type session struct {
	db   *sql.DB
	conn *sql.Conn
}

func (s *session) close() {
	s.conn.Close()
	s.db.Close()
}

// connect opens one connection to t as user, bounded by t.DialTimeout.
func connect(ctx context.Context, t connector.Target, user, password string) (*session, error) {
	cfg := mysql.NewConfig()
	cfg.Net = "tcp"
	cfg.Addr = net.JoinHostPort(t.Host, strconv.Itoa(t.Port))
	cfg.User, cfg.Passwd = user, password
	cfg.Timeout = t.DialTimeout()
	cfg.ReadTimeout, cfg.WriteTimeout = t.DialTimeout(), t.DialTimeout()
	cfg.TLSConfig = t.Options[OptTLS]
	if cfg.TLSConfig == "" {
		cfg.TLSConfig = "preferred"
	}
	cfg.InterpolateParams = true
	cfg.Logger = &mysql.NopLogger{} // failures are returned; nothing goes to stderr
	drv, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, errkind.New(errkind.Invalid, "mysql: target %q: %w", t.Name, err)
	}
	db := sql.OpenDB(drv)
	db.SetMaxOpenConns(1)
	ctx, cancel := context.WithTimeout(ctx, t.DialTimeout())
	defer cancel()
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		var me *mysql.MySQLError
		if errors.As(err, &me) && (me.Number == erAccessDenied || me.Number == erAccessDeniedNoPasswd) {
			return nil, connector.Rejected("mysql: %s refused the login of %q (error %d)", t.Name, user, me.Number)
		}
		return nil, errkind.New(errkind.Unavailable, "mysql: %s: connect to %s as %q: %w", t.Name, cfg.Addr, user, err)
	}
	return &session{db: db, conn: conn}, nil
}
