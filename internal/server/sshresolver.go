package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"time"

	gossh "golang.org/x/crypto/ssh"

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

// sshResolver is the SSH gateway's Resolver over the vault: a connection
// checks the account out for its duration and checks it in at the end,
// which rotates the credential if the account rotates on check-in. On a
// target with the option ssh_auth=certificate, it checks nothing out: it
// logs in with a fresh key and a certificate of the host-access CA, and
// the account need not be in the vault.
type sshResolver struct {
	vault *vault.Vault
	log   *slog.Logger
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

// DefaultAccount is the target's management account, else root.
func (r sshResolver) DefaultAccount(ctx context.Context, target string) (string, error) {
	t, err := r.linuxTarget(ctx, target)
	if err != nil {
		return "", err
	}
	if t.ManagementAccount != "" {
		return t.ManagementAccount, nil
	}
	return "root", nil
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
	o := audit.Origin{Actor: p.Actor()}
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
	o := audit.Origin{Actor: p.Actor()}
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
