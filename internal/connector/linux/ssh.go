package linux

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/hostkey"
)

// client is an authenticated SSH connection. Close ends it and releases
// the context watch that closes it when the caller's ctx ends.
type client struct {
	*ssh.Client
	stop func() bool // stops the context.AfterFunc that closes the conn
}

func (c *client) Close() error {
	c.stop()
	err := c.Client.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// dial connects to t and logs in as username with cred. The TCP dial and
// the SSH handshake, including authentication, are bounded by
// t.DialTimeout; ctx bounds the whole life of the connection: when it ends,
// the connection is closed.
func dial(ctx context.Context, t *target, username string, cred connector.Credential) (*client, error) {
	auth, err := authMethods(cred)
	if err != nil {
		return nil, fmt.Errorf("linux: target %q: login as %q: %w", t.Name, username, err)
	}
	cfg := &ssh.ClientConfig{
		User:              username,
		Auth:              auth,
		HostKeyCallback:   t.checkHostKey,
		HostKeyAlgorithms: t.hostKeys.Algorithms(),
	}
	d := net.Dialer{Timeout: t.DialTimeout()}
	conn, err := d.DialContext(ctx, "tcp", t.Addr())
	if err != nil {
		return nil, fmt.Errorf("linux: target %q: %w", t.Name, err)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(t.DialTimeout()))
	sc, chans, reqs, err := ssh.NewClientConn(conn, t.Addr(), cfg)
	if err != nil {
		stop()
		conn.Close()
		var hkErr *hostKeyError
		switch {
		case ctx.Err() != nil:
			return nil, fmt.Errorf("linux: target %q: login as %q: %w", t.Name, username, ctx.Err())
		case errors.As(err, &hkErr):
			return nil, fmt.Errorf("linux: target %q: %w", t.Name, hkErr)
		case strings.Contains(err.Error(), "ssh: unable to authenticate"):
			// x/crypto/ssh has no typed error for a refused login; this
			// message is the one it returns when every method failed.
			return nil, connector.Rejected("linux: target %q: login as %q", t.Name, username)
		default:
			return nil, fmt.Errorf("linux: target %q: login as %q: %w", t.Name, username, err)
		}
	}
	conn.SetDeadline(time.Time{})
	return &client{Client: ssh.NewClient(sc, chans, reqs), stop: stop}, nil
}

func authMethods(cred connector.Credential) ([]ssh.AuthMethod, error) {
	switch cred.Kind {
	case connector.Password:
		pw := string(cred.Secret)
		answer := func(name, instruction string, questions []string, echos []bool) ([]string, error) {
			// Answer every hidden prompt with the password: that is what
			// PAM's password prompt looks like over keyboard-interactive.
			answers := make([]string, len(questions))
			for i := range questions {
				if !echos[i] {
					answers[i] = pw
				}
			}
			return answers, nil
		}
		return []ssh.AuthMethod{ssh.Password(pw), ssh.KeyboardInteractive(answer)}, nil
	case connector.SSHKey:
		signer, err := ssh.ParsePrivateKey(cred.Secret)
		if err != nil {
			return nil, fmt.Errorf("parse private key: %v", err)
		}
		return []ssh.AuthMethod{ssh.PublicKeys(signer)}, nil
	default:
		return nil, fmt.Errorf("cannot log in with a %s credential", cred.Kind)
	}
}

// checkHostKey is the HostKeyCallback: the server's key must be the pinned
// one or a host certificate of the target's host CA.
func (t *target) checkHostKey(addr string, remote net.Addr, key ssh.PublicKey) error {
	err := t.hostKeys.Check(addr, remote, key)
	var me *hostkey.MismatchError
	if errors.As(err, &me) {
		return &hostKeyError{me}
	}
	return err
}

// hostKeyError is a host key mismatch, with the keys' fingerprints.
type hostKeyError struct{ m *hostkey.MismatchError }

func (e *hostKeyError) Error() string {
	return strings.TrimPrefix(e.m.Error(), "hostkey: ")
}

func (e *hostKeyError) Unwrap() []error { return []error{ErrHostKeyMismatch, e.m} }

// maxOutput bounds what a command may print: dependents are small files.
const maxOutput = 1 << 20

// run runs cmd in a new session with stdin and returns its standard output.
// A failing command's error holds its exit status and the start of its
// standard error, which the scripts keep free of secrets.
func (c *Connector) run(ctx context.Context, cl *client, cmd string, stdin []byte) ([]byte, error) {
	if c.sent != nil {
		c.sent(cmd)
	}
	s, err := cl.NewSession()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("open session: %w", err)
	}
	defer s.Close()
	stdout := &limitedBuffer{max: maxOutput}
	stderr := &limitedBuffer{max: 4096}
	s.Stdin = bytes.NewReader(stdin)
	s.Stdout = stdout
	s.Stderr = stderr
	err = s.Run(cmd)
	if ctx.Err() != nil {
		stdout.wipe()
		return nil, ctx.Err()
	}
	if stdout.overflow {
		stdout.wipe()
		return nil, fmt.Errorf("output exceeds %d bytes", maxOutput)
	}
	if err != nil {
		stdout.wipe()
		var exit *ssh.ExitError
		if errors.As(err, &exit) {
			return nil, fmt.Errorf("exit status %d: %s", exit.ExitStatus(), firstLines(stderr.String()))
		}
		return nil, err
	}
	return stdout.Bytes(), nil
}

// limitedBuffer keeps at most max bytes and notes whether more came.
type limitedBuffer struct {
	bytes.Buffer
	max      int
	overflow bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); len(p) > room {
		b.overflow = true
		p = p[:max(room, 0)]
	}
	b.Buffer.Write(p)
	return len(p), nil // never fail the session for our limit
}

// wipe zeroes what the buffer holds (it may be a secret file).
func (b *limitedBuffer) wipe() {
	clear(b.Buffer.Bytes())
	b.Reset()
}

// firstLines shortens a command's standard error for an error message.
func firstLines(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return strings.ReplaceAll(s, "\n", "; ")
}

// prelude starts every script: strict mode and a PATH that holds the
// administrative commands whatever the login's PATH.
const prelude = "set -eu\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nexport PATH\n"

// needRoot refuses to run a privileged script as anyone but root.
const needRoot = `if [ "$(id -u)" != 0 ]; then echo "the management account is not root; log in as root or set the target option become=sudo" >&2; exit 125; fi
`

// command returns the command line that runs script with args under
// /bin/sh for a login as user. A privileged script runs with `sudo -n`
// when the target says become=sudo and the login is not root, and
// otherwise checks that it runs as root. Every argument is quoted; none may
// be a secret.
func (t *target) command(user string, privileged bool, script string, args ...string) string {
	var b strings.Builder
	full := prelude
	if privileged {
		if t.sudo && user != "root" {
			b.WriteString("sudo -n ")
		} else {
			full += needRoot
		}
	}
	full += script
	b.WriteString("/bin/sh -c ")
	b.WriteString(shellQuote(full))
	b.WriteString(" sh")
	for _, a := range args {
		b.WriteByte(' ')
		b.WriteString(shellQuote(a))
	}
	return b.String()
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
