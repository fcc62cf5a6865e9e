package server

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
	sshgw "github.com/warderhq/warder/internal/gateway/ssh"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/vault"
)

// sshResolver is the SSH gateway's Resolver over the vault: a connection
// checks the account out for its duration and checks it in at the end,
// which rotates the credential if the account rotates on check-in.
type sshResolver struct {
	vault *vault.Vault
	log   *slog.Logger
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
// credential as the upstream login.
func (r sshResolver) Resolve(ctx context.Context, p identity.Principal, target, account string) (sshgw.Upstream, error) {
	t, err := r.linuxTarget(ctx, target)
	if err != nil {
		return sshgw.Upstream{}, err
	}
	hostKey, _, _, _, err := gossh.ParseAuthorizedKey([]byte(strings.TrimSpace(t.Options["host_key"])))
	if err != nil {
		return sshgw.Upstream{}, fmt.Errorf("server: target %q: option host_key: %w", target, err)
	}
	id := target + "/" + account
	o := audit.Origin{Actor: p.Actor()}
	l, err := r.vault.Checkout(ctx, o, vault.CheckoutRequest{
		Account: id, Principal: p, Reason: "ssh session through the gateway",
		Context: authz.Context{Via: authz.ViaSSH}, Action: authz.ActionConnect,
	})
	if err != nil {
		return sshgw.Upstream{}, err
	}
	release := func(status string) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, err := r.vault.Checkin(ctx, o, p, id); err != nil && !errkind.Is(err, errkind.NotFound) {
			r.log.Warn("ssh: check-in after session", "account", id, "status", status, "err", err)
		}
	}
	auth, err := authMethod(l.Credential)
	if err != nil {
		release(sshgw.StatusFailed)
		return sshgw.Upstream{}, fmt.Errorf("server: account %s: %w", id, err)
	}
	return sshgw.Upstream{
		Addr:    t.Connector().Addr(),
		HostKey: hostKey,
		User:    account,
		Auth:    []gossh.AuthMethod{auth},
		Expires: l.ExpiresAt,
		LeaseID: l.ID,
		Release: release,
	}, nil
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
