// Package linux is Warder's connector for Linux hosts, reached over SSH:
// local account passwords (set with chpasswd through a management
// account), SSH keys in ~/.ssh/authorized_keys, and dependents (files on the
// host holding a copy of a credential).
//
// Target options:
//
//   - host_key: the host's public key in authorized_keys format, e.g. the
//     content of /etc/ssh/ssh_host_ed25519_key.pub. It is pinned: a server
//     presenting any other key fails the connection with
//     ErrHostKeyMismatch. The connector never trusts a key on first use.
//   - host_ca: a host CA's public key in authorized_keys format, as an
//     alternative (or in addition) to host_key: a host certificate signed
//     by it whose principals include the target's host is accepted (see
//     package hostkey). One of host_key and host_ca is required.
//   - ssh_auth: how Warder's SSH gateway logs in to the target: "" or
//     "vault" (default), with the account's vaulted credential; or
//     "certificate", with an ephemeral certificate of Warder's host-access
//     CA, which the host's sshd must trust (TrustedUserCAKeys). The
//     connector itself always uses vaulted credentials.
//   - become: "" (default), the management login must be root; or "sudo",
//     privileged commands run with `sudo -n`, so the management account
//     needs passwordless sudo for sh.
//
// Secrets travel only on a command's standard input, never in its
// arguments (visible to every user of the host) or environment. The
// commands sent are fixed shell scripts whose arguments are account names,
// paths and public keys.
//
// A linux password is set by root: Change needs a management account
// (ChangeRequest.As) unless the account is root itself, which then sets its
// own password with Current. An SSH key can be changed by the account itself
// with its Current credential or by the management account.
//
// The host needs /bin/sh, getent, mktemp, awk, chpasswd and GNU coreutils
// (chown and chmod --reference, readlink -f), and the management account a
// POSIX login shell.
package linux

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/hostkey"
)

// ErrHostKeyMismatch means the server presented a host key that the
// target's host_key and host_ca options do not accept.
var ErrHostKeyMismatch = errors.New("linux: host key mismatch")

// Connector manages accounts on Linux hosts over SSH. It is safe for
// concurrent use.
type Connector struct {
	now func() time.Time // the clock, for key comments
	// sent, if set, is called with every command line sent to a host
	// (tests check that none holds a secret).
	sent func(cmd string)
}

var (
	_ connector.Connector        = (*Connector)(nil)
	_ connector.Generator        = (*Connector)(nil)
	_ connector.DependentUpdater = (*Connector)(nil)
)

// New returns a linux connector.
func New() *Connector { return &Connector{now: time.Now} }

// Kind returns "linux".
func (c *Connector) Kind() string { return "linux" }

// Kinds returns password and ssh_key.
func (c *Connector) Kinds() []connector.CredentialKind {
	return []connector.CredentialKind{connector.Password, connector.SSHKey}
}

// target is a validated connector.Target.
type target struct {
	connector.Target
	hostKeys hostkey.Verifier
	sudo     bool
}

// OptDefaultAccount is the account the SSH gateway logs in as when a user
// names only the target ("warder ssh web1") and holds no just-in-time
// grant naming an account on it. Unset: such a user must name the
// account (ACCOUNT@TARGET); the management account is never used
// implicitly.
const OptDefaultAccount = "default_account"

// Target options.
var options = []string{"host_key", "host_ca", "become", "ssh_auth", OptDefaultAccount}

// SSH gateway login methods (the ssh_auth option).
const (
	SSHAuthVault       = "vault"
	SSHAuthCertificate = "certificate"
)

// CheckTarget validates t's host, port and options.
func (c *Connector) CheckTarget(t connector.Target) error {
	_, err := parseTarget(t)
	return err
}

func parseTarget(t connector.Target) (*target, error) {
	if t.Kind != "linux" {
		return nil, fmt.Errorf("linux: target %q is of kind %q", t.Name, t.Kind)
	}
	if t.Host == "" {
		return nil, fmt.Errorf("linux: target %q: no host", t.Name)
	}
	if t.Port <= 0 || t.Port > 65535 {
		return nil, fmt.Errorf("linux: target %q: invalid port %d", t.Name, t.Port)
	}
	for k := range t.Options {
		if !slices.Contains(options, k) {
			return nil, fmt.Errorf("linux: target %q: unknown option %q (want %s)", t.Name, k, strings.Join(options, ", "))
		}
	}
	hk, hca := strings.TrimSpace(t.Options["host_key"]), strings.TrimSpace(t.Options["host_ca"])
	if hk == "" && hca == "" {
		return nil, fmt.Errorf("linux: target %q: option host_key (the host's public key, authorized_keys format) or host_ca (its host CA's) is required", t.Name)
	}
	keys, err := hostkey.Parse(hk, hca)
	if err != nil {
		return nil, fmt.Errorf("linux: target %q: %w", t.Name, err)
	}
	tt := &target{Target: t, hostKeys: keys}
	switch a := t.Options["ssh_auth"]; a {
	case "", SSHAuthVault, SSHAuthCertificate:
	default:
		return nil, fmt.Errorf("linux: target %q: option ssh_auth is %q, want %q or %q", t.Name, a, SSHAuthVault, SSHAuthCertificate)
	}
	if a, ok := t.Options[OptDefaultAccount]; ok && !validUser.MatchString(a) {
		return nil, fmt.Errorf("linux: target %q: option %s is %q, not an account name (want %s)", t.Name, OptDefaultAccount, a, validUser)
	}
	switch b := t.Options["become"]; b {
	case "":
	case "sudo":
		tt.sudo = true
	default:
		return nil, fmt.Errorf("linux: target %q: option become is %q, want \"\" or \"sudo\"", t.Name, b)
	}
	return tt, nil
}

// validUser matches the account names the connector accepts: the portable
// subset of what useradd allows.
var validUser = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

func checkUsername(t *target, name string) error {
	if !validUser.MatchString(name) {
		return fmt.Errorf("linux: target %q: invalid account name %q (want %s)", t.Name, name, validUser)
	}
	return nil
}

// Verify logs in to t over SSH as username: with the password (password
// and keyboard-interactive authentication) or the private key. A refused
// login wraps connector.ErrRejected; a failed dial, a timeout or a host key
// mismatch does not.
func (c *Connector) Verify(ctx context.Context, t connector.Target, username string, cred connector.Credential) error {
	tt, err := parseTarget(t)
	if err != nil {
		return err
	}
	if err := checkUsername(tt, username); err != nil {
		return err
	}
	cl, err := dial(ctx, tt, username, cred)
	if err != nil {
		return err
	}
	return cl.Close()
}

// Generate returns a new Ed25519 key pair: Secret is the private key as
// OpenSSH PEM, PublicKey its authorized_keys line with the comment
// "warder DATE". Change writes the line with the comment "warder ACCOUNT
// DATE". Passwords come from the rotation engine, not from here.
func (c *Connector) Generate(ctx context.Context, kind connector.CredentialKind) (connector.Credential, error) {
	if kind != connector.SSHKey {
		return connector.Credential{}, fmt.Errorf("linux: cannot generate %s credentials", kind)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return connector.Credential{}, fmt.Errorf("linux: generate key: %w", err)
	}
	defer clear(priv)
	comment := "warder " + c.now().UTC().Format(time.DateOnly)
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return connector.Credential{}, fmt.Errorf("linux: marshal key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return connector.Credential{}, fmt.Errorf("linux: marshal key: %w", err)
	}
	return connector.Credential{
		Kind:      connector.SSHKey,
		Secret:    pem.EncodeToMemory(block),
		PublicKey: authorizedLine(nil, sshPub, comment),
	}, nil
}

// Change sets req.Username's password or SSH key on t; see the package
// comment for who may change what.
func (c *Connector) Change(ctx context.Context, t connector.Target, req connector.ChangeRequest) error {
	tt, err := parseTarget(t)
	if err != nil {
		return err
	}
	if err := checkUsername(tt, req.Username); err != nil {
		return err
	}
	switch req.Next.Kind {
	case connector.Password:
		return c.changePassword(ctx, tt, req)
	case connector.SSHKey:
		return c.changeKey(ctx, tt, req)
	default:
		return fmt.Errorf("linux: target %q: cannot manage %s credentials", tt.Name, req.Next.Kind)
	}
}

// chpasswdScript sets the password read from stdin as "user:password".
// chpasswd takes everything after the first colon as the password, so a
// password may contain colons.
const chpasswdScript = `exec chpasswd`

func (c *Connector) changePassword(ctx context.Context, t *target, req connector.ChangeRequest) error {
	pw := req.Next.Secret
	if len(pw) == 0 {
		return fmt.Errorf("linux: target %q: empty password for %q", t.Name, req.Username)
	}
	if strings.ContainsAny(string(pw), "\n\r\x00") {
		return fmt.Errorf("linux: target %q: the new password for %q contains a line break or NUL, which chpasswd cannot take", t.Name, req.Username)
	}
	var login connector.Login
	switch {
	case req.As != nil:
		login = *req.As
	case req.Username == "root" && req.Current != nil:
		login = connector.Login{Username: "root", Credential: *req.Current}
	default:
		return fmt.Errorf("linux: target %q: setting the password of %q needs the target's management account (passwords are set by root with chpasswd)", t.Name, req.Username)
	}
	cl, err := dial(ctx, t, login.Username, login.Credential)
	if err != nil {
		return err
	}
	defer cl.Close()

	stdin := make([]byte, 0, len(req.Username)+len(pw)+2)
	stdin = append(stdin, req.Username...)
	stdin = append(stdin, ':')
	stdin = append(stdin, pw...)
	stdin = append(stdin, '\n')
	defer clear(stdin)
	if _, err := c.run(ctx, cl, t.command(login.Username, true, chpasswdScript), stdin); err != nil {
		return fmt.Errorf("linux: target %q: set the password of %q: %w", t.Name, req.Username, err)
	}
	return nil
}
