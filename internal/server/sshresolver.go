package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/access"
	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/connector/linux"
	"github.com/warderhq/warder/internal/errkind"
	sshgw "github.com/warderhq/warder/internal/gateway/ssh"
	"github.com/warderhq/warder/internal/hostkey"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/sshca"
	"github.com/warderhq/warder/internal/vault"
)

// sshVault is what the SSH gateway's resolver needs of the vault;
// *vault.Vault implements it.
type sshVault interface {
	Target(ctx context.Context, name string) (vault.Target, error)
	checkouter
}

// sshGrants is what the SSH gateway's resolver needs of just-in-time
// access; *access.Access implements it.
type sshGrants interface {
	Grants(ctx context.Context, f access.GrantFilter) ([]access.Grant, error)
	Role(ctx context.Context, name string) (access.Role, error)
}

// sshResolver is the SSH gateway's Resolver over the vault: a connection
// checks the account out for its duration and checks it in at the end,
// which rotates the credential if the account rotates on check-in. On a
// target with the option ssh_auth=certificate, it checks nothing out: it
// logs in with a fresh key and a certificate of the host-access CA, and
// the account need not be in the vault.
//
// A user name naming only the target (TARGET, not ACCOUNT@TARGET) logs
// in, as the database gateway's does, as: the account that the role of
// the principal's live just-in-time grant names on the target (the grant
// that expires last), else the target's default_account option, else
// nobody: the user is told to name the account. Never the management
// account, unless default_account names it.
type sshResolver struct {
	vault sshVault
	// grants finds the principal's live grants. Nil: grants are not
	// consulted for TARGET alone.
	grants sshGrants
	log    *slog.Logger
	// leases shares a principal's check-out among their concurrent
	// sessions on an account. Nil: each session checks out alone.
	leases *sessionLeases
	// accessCA signs access certificates (sshca.PurposeAccessCA). Nil:
	// ssh_auth=certificate targets are refused.
	accessCA gossh.Signer
	// audit records each access certificate issued. Nil: ssh_auth=certificate targets are refused.
	audit sshgw.Auditor
	now   func() time.Time // nil: time.Now
}

var _ sshgw.Resolver = sshResolver{}

// linuxTarget returns the named target if it is a linux target.
func (r sshResolver) linuxTarget(ctx context.Context, name string) (vault.Target, error) {
	t, err := r.vault.Target(ctx, name)
	if err != nil {
		return vault.Target{}, err
	}
	if t.Kind != "linux" {
		return vault.Target{}, errkind.New(errkind.Invalid, "server: target %q is a %s target, not linux", name, t.Kind)
	}
	return t, nil
}

// DefaultAccount returns the account p logs in as on target when naming
// none: the account named by p's live grant on target (grantAccount),
// else the target's default_account option, else "".
func (r sshResolver) DefaultAccount(ctx context.Context, p identity.Principal, target string) (string, error) {
	t, err := r.linuxTarget(ctx, target)
	if err != nil {
		return "", err
	}
	account, err := r.grantAccount(ctx, p, target)
	if err != nil || account != "" {
		return account, err
	}
	return t.Options[linux.OptDefaultAccount], nil
}

// grantAccount returns the account on target that the role of p's live
// grant names (see authz.TemplateAccount), of the grant that expires last; ""
// when no live grant of p names one.
func (r sshResolver) grantAccount(ctx context.Context, p identity.Principal, target string) (string, error) {
	if r.grants == nil {
		return "", nil
	}
	gs, err := r.grants.Grants(ctx, access.GrantFilter{Principal: &p, Active: true})
	if err != nil {
		return "", fmt.Errorf("server: grants of %s: %w", p.Actor(), err)
	}
	gs = slices.DeleteFunc(gs, func(g access.Grant) bool { return g.Principal != p })
	slices.SortStableFunc(gs, func(a, b access.Grant) int { return b.ExpiresAt.Compare(a.ExpiresAt) })
	templates := map[string]string{} // by role
	for _, g := range gs {
		tmpl, ok := templates[g.Role]
		if !ok {
			role, err := r.grants.Role(ctx, g.Role)
			switch {
			case errkind.Is(err, errkind.NotFound):
			case err != nil:
				return "", fmt.Errorf("server: role %q: %w", g.Role, err)
			}
			tmpl, templates[g.Role] = role.Template, role.Template
		}
		if account := authz.TemplateAccount(tmpl, target); account != "" {
			return account, nil
		}
	}
	return "", nil
}

// Resolve checks the account out for p (without waiting) and returns its
// credential as the upstream login; on a target with ssh_auth=certificate
// it logs in with an access certificate instead (certificateLogin). The
// target's host key is its pinned host_key or a certificate of its
// host_ca.
func (r sshResolver) Resolve(ctx context.Context, p identity.Principal, target, account string) (sshgw.Upstream, error) {
	t, err := r.linuxTarget(ctx, target)
	if err != nil {
		return sshgw.Upstream{}, err
	}
	hostKeys, err := hostkey.Parse(t.Options["host_key"], t.Options["host_ca"])
	if err != nil {
		return sshgw.Upstream{}, fmt.Errorf("server: target %q: %w", target, err)
	}
	rules, err := sshRules(target, t.Rules)
	if err != nil {
		return sshgw.Upstream{}, err
	}
	up := sshgw.Upstream{Addr: t.Connector().Addr(), HostKey: hostKeys.Pinned, HostCA: hostKeys.CA, User: account, Rules: rules}
	if t.Options["ssh_auth"] == linux.SSHAuthCertificate {
		return r.certificateLogin(ctx, p, target, up)
	}
	id := target + "/" + account
	o := resolveOrigin(ctx, p)
	l, done, err := acquire(ctx, r.leases, r.vault, r.log, o, vault.CheckoutRequest{
		Account: id, Principal: p, Reason: "ssh session through the gateway",
		Context: authz.Context{Via: authz.ViaSSH}, Action: authz.ActionConnect,
	})
	if err != nil {
		return sshgw.Upstream{}, err
	}
	release := func(string) { done() }
	auth, err := authMethod(l.Credential)
	if err != nil {
		release(sshgw.StatusFailed)
		return sshgw.Upstream{}, fmt.Errorf("server: account %s: %w", id, err)
	}
	up.Auth = []gossh.AuthMethod{auth}
	up.Expires, up.LeaseID, up.Release = l.ExpiresAt, l.ID, release
	return up, nil
}

// resolveOrigin is the audit origin of the connection Resolve serves: the
// gateway's (with the client's address), else p alone.
func resolveOrigin(ctx context.Context, p identity.Principal) audit.Origin {
	if o, ok := sshgw.OriginFrom(ctx); ok {
		return o
	}
	return audit.Origin{Actor: p.Actor()}
}

// accessAccountRE matches the account names an access certificate may
// name: the vault's account name syntax.
var accessAccountRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,62}$`)

// certificateLogin completes up with a login by access certificate: a
// fresh Ed25519 key, certified by the host-access CA for the account
// (up.User) alone, with the key id "warder:PRINCIPAL:RANDOM" that sshd
// logs, valid from a minute ago until the session's deadline, an hour
// from now (sshca.MaxAccessCertTTL), which ends the session like a
// check-out lease's expiry. The issue is audited first; if the event
// cannot be written, the login is refused. The private key stays in the
// returned Upstream's signer and is never stored.
func (r sshResolver) certificateLogin(ctx context.Context, p identity.Principal, target string, up sshgw.Upstream) (sshgw.Upstream, error) {
	if r.accessCA == nil || r.audit == nil {
		return sshgw.Upstream{}, errkind.New(errkind.Unavailable, "server: target %q logs in by certificate, but no host-access CA is configured", target)
	}
	if !accessAccountRE.MatchString(up.User) {
		return sshgw.Upstream{}, errkind.New(errkind.Invalid, "server: %q is not a valid account name", up.User)
	}
	now := time.Now
	if r.now != nil {
		now = r.now
	}
	t := now()
	nonce := make([]byte, 8)
	rand.Read(nonce) // crypto/rand.Read does not fail
	deadline := t.Add(sshca.MaxAccessCertTTL)
	login, err := sshca.NewAccessLogin(r.accessCA, sshca.AccessCert{
		Account: up.User, KeyID: "warder:" + p.Actor() + ":" + hex.EncodeToString(nonce), Now: t, ValidBefore: deadline,
	})
	if err != nil {
		return sshgw.Upstream{}, fmt.Errorf("server: access certificate for %s/%s: %w", target, up.User, err)
	}
	o := resolveOrigin(ctx, p)
	ev := o.Event("ssh.access_certificate.issue", authz.UID{Type: authz.TypeAccount, ID: target + "/" + up.User}.String(), audit.OutcomeSuccess, map[string]string{
		"key_id":       login.Cert.KeyId,
		"serial":       strconv.FormatUint(login.Cert.Serial, 10),
		"fingerprint":  gossh.FingerprintSHA256(login.Cert.Key),
		"valid_before": deadline.UTC().Format(time.RFC3339),
	})
	if _, err := r.audit.Append(ctx, ev); err != nil {
		return sshgw.Upstream{}, fmt.Errorf("server: audit access certificate: %w", err)
	}
	up.Auth = []gossh.AuthMethod{gossh.PublicKeys(login.Signer)}
	up.Expires = deadline
	return up, nil
}

// authMethod turns a vaulted credential into an SSH login.
func authMethod(c *connector.Credential) (gossh.AuthMethod, error) {
	if c == nil {
		return nil, fmt.Errorf("no credential")
	}
	switch c.Kind {
	case connector.Password:
		pw := string(c.Secret)
		return gossh.Password(pw), nil
	case connector.SSHKey:
		s, err := gossh.ParsePrivateKey(c.Secret)
		if err != nil {
			return nil, fmt.Errorf("ssh key: %w", err)
		}
		return gossh.PublicKeys(s), nil
	}
	return nil, fmt.Errorf("a %s credential cannot log in over SSH", c.Kind)
}
