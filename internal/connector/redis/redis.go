// Package redis is the connector for Redis ACL users (Redis 6 and later):
// it verifies a password with AUTH username password and changes it with
// ACL SETUSER username resetpass >password, keeping the user's other
// rules. It speaks RESP2 itself (resp.go): the connector needs three
// commands, not a client library.
package redis

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
)

// Kind is the target kind this package serves.
const Kind = "redis"

// Target options.
const (
	// OptTLS is "false" (default), "true" (TLS, server certificate checked
	// against the system roots and the target's host) or "skip-verify".
	OptTLS = "tls"
	// OptPersist says how a changed password is made to survive a server
	// restart: "none" (default: the server's ACLs are not persisted, or
	// something else persists them), "acl_save" (ACL SAVE, for servers
	// with an aclfile) or "config_rewrite" (CONFIG REWRITE, for users
	// defined in redis.conf).
	OptPersist = "persist"
)

var (
	tlsModes     = []string{"false", "true", "skip-verify"}
	persistModes = []string{"none", "acl_save", "config_rewrite"}
)

// Connector manages the passwords of Redis ACL users. The zero value is
// ready to use; it holds no state and is safe for concurrent use.
type Connector struct{}

var _ connector.Connector = (*Connector)(nil)

// New returns a Connector.
func New() *Connector { return &Connector{} }

// Kind returns "redis".
func (*Connector) Kind() string { return Kind }

// Kinds returns the credential kinds a Redis user can have: password.
func (*Connector) Kinds() []connector.CredentialKind {
	return []connector.CredentialKind{connector.Password}
}

// CheckTarget validates t's address and its options (tls, persist).
func (*Connector) CheckTarget(t connector.Target) error {
	if t.Kind != "" && t.Kind != Kind {
		return errkind.New(errkind.Invalid, "redis: target %q has kind %q", t.Name, t.Kind)
	}
	if t.Host == "" {
		return errkind.New(errkind.Invalid, "redis: target %q has no host", t.Name)
	}
	if t.Port < 1 || t.Port > 65535 {
		return errkind.New(errkind.Invalid, "redis: target %q: port %d out of range 1-65535", t.Name, t.Port)
	}
	for k, v := range t.Options {
		var allowed []string
		switch k {
		case OptTLS:
			allowed = tlsModes
		case OptPersist:
			allowed = persistModes
		default:
			return errkind.New(errkind.Invalid, "redis: target %q: unknown option %q (known: %s, %s)", t.Name, k, OptTLS, OptPersist)
		}
		if !slices.Contains(allowed, v) {
			return errkind.New(errkind.Invalid, "redis: target %q: option %s=%q is not one of %s", t.Name, k, v, strings.Join(allowed, ", "))
		}
	}
	return nil
}

// Verify sends AUTH username password. WRONGPASS is a rejection.
func (c *Connector) Verify(ctx context.Context, t connector.Target, username string, cred connector.Credential) error {
	if err := c.CheckTarget(t); err != nil {
		return err
	}
	if cred.Kind != connector.Password {
		return errkind.New(errkind.Invalid, "redis: cannot verify a %s credential", cred.Kind)
	}
	cl, err := login(ctx, t, username, cred.Secret)
	if err != nil {
		return err
	}
	cl.close()
	return nil
}

// Change logs in as req.As (or as the user with req.Current) and sends
// ACL SETUSER user resetpass >next, then persists it as OptPersist says.
// It refuses to create a user that does not exist (ACL SETUSER would).
// The login needs the acl|getuser and acl|setuser commands (and acl|save
// or config|rewrite for OptPersist).
func (c *Connector) Change(ctx context.Context, t connector.Target, req connector.ChangeRequest) error {
	if err := c.CheckTarget(t); err != nil {
		return err
	}
	if req.Username == "" {
		return errkind.New(errkind.Invalid, "redis: change: no username")
	}
	if req.Next.Kind != connector.Password || len(req.Next.Secret) == 0 {
		return errkind.New(errkind.Invalid, "redis: change of %q: the new credential must be a non-empty password", req.Username)
	}
	who, secret, err := loginFor(req)
	if err != nil {
		return err
	}
	cl, err := login(ctx, t, who, secret)
	if err != nil {
		return err
	}
	defer cl.close()

	rep, err := cl.do([]byte("ACL"), []byte("GETUSER"), []byte(req.Username))
	if err = replyErr(t, "ACL GETUSER", rep, err, nil); err != nil {
		return err
	}
	if rep.null {
		return errkind.New(errkind.NotFound, "redis: %s has no user %q", t.Name, req.Username)
	}
	rule := append([]byte{'>'}, req.Next.Secret...)
	rep, err = cl.do([]byte("ACL"), []byte("SETUSER"), []byte(req.Username), []byte("resetpass"), rule)
	if err = replyErr(t, "ACL SETUSER", rep, err, req.Next.Secret); err != nil {
		return err
	}
	switch t.Options[OptPersist] {
	case "acl_save":
		rep, err = cl.do([]byte("ACL"), []byte("SAVE"))
		err = replyErr(t, "ACL SAVE", rep, err, nil)
	case "config_rewrite":
		rep, err = cl.do([]byte("CONFIG"), []byte("REWRITE"))
		err = replyErr(t, "CONFIG REWRITE", rep, err, nil)
	}
	if err != nil {
		return fmt.Errorf("redis: %s: password of %q changed in memory but not persisted: %w", t.Name, req.Username, err)
	}
	return nil
}

// loginFor returns who performs req: req.As, or the user with Current.
func loginFor(req connector.ChangeRequest) (string, []byte, error) {
	if req.As != nil {
		if req.As.Credential.Kind != connector.Password {
			return "", nil, errkind.New(errkind.Invalid, "redis: management login %q has a %s credential, not a password", req.As.Username, req.As.Credential.Kind)
		}
		return req.As.Username, req.As.Credential.Secret, nil
	}
	if req.Current == nil {
		return "", nil, errkind.New(errkind.Invalid, "redis: change of %q: neither the current password nor a management login is known", req.Username)
	}
	if req.Current.Kind != connector.Password {
		return "", nil, errkind.New(errkind.Invalid, "redis: change of %q: current credential is a %s, not a password", req.Username, req.Current.Kind)
	}
	return req.Username, req.Current.Secret, nil
}

// login dials t and authenticates as username.
func login(ctx context.Context, t connector.Target, username string, password []byte) (*client, error) {
	addr := net.JoinHostPort(t.Host, strconv.Itoa(t.Port))
	var tc *tls.Config
	switch t.Options[OptTLS] {
	case "true":
		tc = &tls.Config{ServerName: t.Host, MinVersion: tls.VersionTLS12}
	case "skip-verify":
		tc = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
	}
	cl, err := dial(ctx, addr, t.DialTimeout(), tc)
	if err != nil {
		return nil, errkind.New(errkind.Unavailable, "redis: %s: connect to %s: %w", t.Name, addr, err)
	}
	rep, err := cl.do([]byte("AUTH"), []byte(username), password)
	if err == nil && rep.typ == '-' && bytes.HasPrefix(rep.str, []byte("WRONGPASS")) {
		cl.close()
		return nil, connector.Rejected("redis: %s refused the login of %q", t.Name, username)
	}
	if err = replyErr(t, "AUTH", rep, err, password); err != nil {
		cl.close()
		return nil, err
	}
	return cl, nil
}

// replyErr turns a failed exchange or an error reply into an error. Server
// messages may quote arguments, so secret is cut out of them.
func replyErr(t connector.Target, cmd string, rep reply, err error, secret []byte) error {
	if err != nil {
		return errkind.New(errkind.Unavailable, "redis: %s: %s: %w", t.Name, cmd, err)
	}
	if rep.typ == '-' {
		msg := rep.str
		if len(secret) > 0 {
			msg = bytes.ReplaceAll(msg, secret, []byte("[redacted]"))
		}
		return fmt.Errorf("redis: %s: %s: server said %q", t.Name, cmd, msg)
	}
	return nil
}
