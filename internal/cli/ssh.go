package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/warderhq/warder/internal/cli/tokenfile"
	"github.com/warderhq/warder/internal/client"
)

// Files of the SSH client setup, in the configuration directory.
const (
	sshKeyFile        = "id_ed25519_warder"
	sshCertFile       = "id_ed25519_warder-cert.pub"
	sshKnownHostsFile = "known_hosts"
)

// sshFiles are the paths of the SSH client files.
type sshFiles struct{ dir, key, cert, knownHosts string }

func (e *env) sshFiles() (sshFiles, error) {
	dir, err := tokenfile.DefaultDir(e.getenv)
	if err != nil {
		return sshFiles{}, err
	}
	return sshFiles{
		dir:        dir,
		key:        filepath.Join(dir, sshKeyFile),
		cert:       filepath.Join(dir, sshCertFile),
		knownHosts: filepath.Join(dir, sshKnownHostsFile),
	}, nil
}

// ensureKey returns the authorized_keys line of the SSH key, generating
// the key (mode 0600) if there is none.
func (f sshFiles) ensureKey() (string, error) {
	if data, err := os.ReadFile(f.key); err == nil {
		s, err := gossh.ParsePrivateKey(data)
		if err != nil {
			return "", fmt.Errorf("ssh key %s: %w", f.key, err)
		}
		return string(gossh.MarshalAuthorizedKey(s.PublicKey())), nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return "", err
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	block, err := gossh.MarshalPrivateKey(priv, "warder")
	if err != nil {
		return "", err
	}
	if err := writeFileAtomic(f.key, pem.EncodeToMemory(block), 0o600); err != nil {
		return "", err
	}
	spub, err := gossh.NewPublicKey(pub)
	if err != nil {
		return "", err
	}
	line := string(gossh.MarshalAuthorizedKey(spub))
	return line, writeFileAtomic(f.key+".pub", []byte(line), 0o644)
}

// certValidFor reports whether the stored certificate is for the current
// key and valid for at least d more.
func (f sshFiles) certValidFor(d time.Duration) bool {
	data, err := os.ReadFile(f.cert)
	if err != nil {
		return false
	}
	k, _, _, _, err := gossh.ParseAuthorizedKey(data)
	if err != nil {
		return false
	}
	cert, ok := k.(*gossh.Certificate)
	if !ok {
		return false
	}
	line, err := f.ensureKey()
	if err != nil || strings.TrimSpace(line) != strings.TrimSpace(string(gossh.MarshalAuthorizedKey(cert.Key))) {
		return false
	}
	return time.Now().Add(d).Before(time.Unix(int64(cert.ValidBefore), 0))
}

// refreshSSHCert gets a certificate for the SSH key (generated if
// missing) and writes it beside the key.
func (e *env) refreshSSHCert(ctx context.Context, c *client.Client) (client.SSHCertificate, error) {
	f, err := e.sshFiles()
	if err != nil {
		return client.SSHCertificate{}, err
	}
	line, err := f.ensureKey()
	if err != nil {
		return client.SSHCertificate{}, err
	}
	cert, err := c.SSHCertificate(ctx, strings.TrimSpace(line))
	if err != nil {
		return client.SSHCertificate{}, err
	}
	return cert, writeFileAtomic(f.cert, []byte(cert.Certificate+"\n"), 0o644)
}

// agentTimeout bounds the exchange with ssh-agent.
const agentTimeout = 5 * time.Second

// addToAgent loads the SSH key with certLine (its certificate, in
// authorized_keys format) into the ssh-agent listening on sock. The agent
// drops them when the certificate expires (a lifetime constraint). The
// private key goes only to the agent.
func (e *env) addToAgent(sock, certLine string) error {
	f, err := e.sshFiles()
	if err != nil {
		return err
	}
	data, err := os.ReadFile(f.key)
	if err != nil {
		return err
	}
	priv, err := gossh.ParseRawPrivateKey(data)
	if err != nil {
		return fmt.Errorf("ssh key %s: %w", f.key, err)
	}
	k, _, _, _, err := gossh.ParseAuthorizedKey([]byte(certLine))
	if err != nil {
		return fmt.Errorf("certificate: %w", err)
	}
	cert, ok := k.(*gossh.Certificate)
	if !ok {
		return errors.New("certificate: not a certificate")
	}
	left := time.Until(time.Unix(int64(cert.ValidBefore), 0))
	if left < time.Second {
		return errors.New("the certificate has expired")
	}
	conn, err := net.DialTimeout("unix", sock, agentTimeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(agentTimeout))
	return agent.NewClient(conn).Add(agent.AddedKey{
		PrivateKey:   priv,
		Certificate:  cert,
		Comment:      "warder " + cert.KeyId,
		LifetimeSecs: uint32(min(left, time.Duration(math.MaxUint32)*time.Second) / time.Second),
	})
}

// sshJumpSuffix is the domain suffix under which the gateway serves
// targets to ProxyJump clients ("web1.warder"); the gateway's default.
const sshJumpSuffix = ".warder"

// sshGateway is what an SSH client needs to reach the gateway.
type sshGateway struct {
	files      sshFiles
	host, port string
	info       client.SSHInfo
}

// sshSetup prepares what an SSH client needs to reach the gateway: a
// certificate valid for at least a minute, and a known-hosts file that
// pins the gateway's host key and trusts its host CA for
// "*.warder" names (ProxyJump), nothing else.
func (e *env) sshSetup(ctx context.Context) (sshGateway, error) {
	var g sshGateway
	c, err := e.client()
	if err != nil {
		return g, err
	}
	if g.files, err = e.sshFiles(); err != nil {
		return g, err
	}
	f := g.files
	if g.info, err = c.SSHInfo(ctx); err != nil {
		return g, err
	}
	if g.info.Listen == "" {
		return g, errors.New("the server runs no SSH gateway (set ssh_listen)")
	}
	if g.host, g.port, err = net.SplitHostPort(g.info.Listen); err != nil {
		return g, fmt.Errorf("gateway address %q: %w", g.info.Listen, err)
	}
	if ip := net.ParseIP(g.host); g.host == "" || ip != nil && ip.IsUnspecified() {
		g.host = e.serverHost() // listening on every interface: reach it where the API is
	}
	if !f.certValidFor(time.Minute) {
		if _, err := e.refreshSSHCert(ctx, c); err != nil {
			return g, fmt.Errorf("SSH certificate: %w", err)
		}
	}
	hostPattern := g.host
	if g.port != "22" {
		hostPattern = "[" + g.host + "]:" + g.port
	}
	known := hostPattern + " " + strings.TrimSpace(g.info.HostKey) + "\n"
	if g.info.HostCAKey != "" {
		known += "@cert-authority *" + sshJumpSuffix + " " + strings.TrimSpace(g.info.HostCAKey) + "\n"
	}
	if err := writeFileAtomic(f.knownHosts, []byte(known), 0o644); err != nil {
		return g, err
	}
	return g, nil
}

// jumpLogin is the user name to log in to the gateway with for
// ProxyJump: the name of the Warder principal the certificate is for (any
// name without "@" would do; this one reads well in the gateway's logs),
// or "" when the certificate cannot be read.
func (f sshFiles) jumpLogin() string {
	data, err := os.ReadFile(f.cert)
	if err != nil {
		return ""
	}
	k, _, _, _, err := gossh.ParseAuthorizedKey(data)
	if err != nil {
		return ""
	}
	cert, ok := k.(*gossh.Certificate)
	if !ok || len(cert.ValidPrincipals) == 0 {
		return ""
	}
	_, name, ok := strings.Cut(cert.ValidPrincipals[0], ":")
	if !ok || name == "" || strings.ContainsAny(name, "@ \t\r\n\"'\\") {
		return ""
	}
	return name
}

// serverHost is the host of the API address.
func (e *env) serverHost() string {
	addr := e.addr
	if addr == "" {
		addr = e.getenv("WARDER_ADDR")
	}
	if addr == "" {
		addr = client.DefaultAddr
	}
	if u, err := url.Parse(addr); err == nil && u.Hostname() != "" {
		return u.Hostname()
	}
	return "127.0.0.1"
}

func (e *env) sshConfigCommand() *cobra.Command {
	var alias string
	cmd := &cobra.Command{
		Use:   "ssh-config",
		Short: "Print an ~/.ssh/config block for the SSH gateway",
		Long: `Print an ~/.ssh/config block that reaches Warder's SSH gateway with plain
OpenSSH (ssh, scp, sftp, rsync). It also gets an SSH certificate if the one
in the configuration directory is missing or expiring, and writes
<config dir>/known_hosts, which pins the gateway's host key and trusts the
gateway's host CA for *.warder names only: no trust on first use.

Targets are reached as TARGET.warder through ProxyJump to the gateway,
with the account as the user name:

    ssh root@web1.warder
    scp file root@web1.warder:/tmp/
    sftp root@web1.warder
    rsync -a dir/ root@web1.warder:dir/

The first block also allows logging in to the gateway directly, the SSH
user name selecting the account: "ssh root@web1@warder" (or
"ssh -l root@web1 warder"). "ssh web1@warder" logs in as the account
your live just-in-time grant on web1 names, else as the target's
default_account option; without either the gateway refuses it and asks
you to name the account. It never picks the management account.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if alias == "" || strings.ContainsAny(alias, " \t\r\n*?!@,") {
				return usageError{fmt.Errorf("--host-alias %q is not a host name", alias)}
			}
			g, err := e.sshSetup(cmd.Context())
			if err != nil {
				return err
			}
			f := g.files
			common := fmt.Sprintf(`    IdentityFile %s
    CertificateFile %s
    IdentitiesOnly yes
    UserKnownHostsFile %s
    StrictHostKeyChecking yes
`, sshConfigQuote(f.key), sshConfigQuote(f.cert), sshConfigQuote(f.knownHosts))
			fmt.Fprintf(e.stdout, "Host %s\n    HostName %s\n    Port %s\n%s", alias, g.host, g.port, common)
			if g.info.HostCAKey == "" {
				fmt.Fprintln(e.stderr, "Note: the server has no SSH host CA: ProxyJump (TARGET.warder) is not available; upgrade the server.")
				return nil
			}
			jump := alias
			if u := f.jumpLogin(); u != "" {
				jump = u + "@" + alias
			}
			fmt.Fprintf(e.stdout, "\nHost *%s !%s\n    ProxyJump %s\n%s", sshJumpSuffix, alias, jump, common)
			return nil
		},
	}
	cmd.Flags().StringVar(&alias, "host-alias", "warder", "the Host name of the gateway's block")
	return cmd
}

// sshConfigQuote quotes a path for ssh_config when it holds a space.
func sshConfigQuote(path string) string {
	if strings.ContainsAny(path, " \t") {
		return `"` + path + `"`
	}
	return path
}

func (e *env) sshCACommand() *cobra.Command {
	return &cobra.Command{
		Use:   "ssh-ca",
		Short: "Print the host-access CA key, for sshd's TrustedUserCAKeys on targets",
		Long: `Print Warder's host-access CA public key, one line in authorized_keys
format ("ssh-ed25519 AAAA… warder-access-ca"), on standard output, and how
to install it on standard error. Linux targets with the option
ssh_auth=certificate are logged in to by the SSH gateway with an ephemeral
certificate of this CA (principal: the account; key id
"warder:PRINCIPAL:ID"; valid one hour), so their sshd must trust it: put
the line in a file that sshd_config's TrustedUserCAKeys names, and reload
sshd:

    warder ssh-ca > warder_access_ca.pub     # then, on the target, as root:
    install -m 644 warder_access_ca.pub /etc/ssh/warder_access_ca.pub
    echo 'TrustedUserCAKeys /etc/ssh/warder_access_ca.pub' >> /etc/ssh/sshd_config
    systemctl reload sshd

With --format json the key is {"access_ca_key": "ssh-ed25519 AAAA…"}. The
key is derived from the root key: it stays the same for the life of the
installation.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			info, err := c.SSHInfo(cmd.Context())
			if err != nil {
				return err
			}
			if info.AccessCAKey == "" {
				return errors.New("the server has no host-access CA; upgrade it")
			}
			out := struct {
				AccessCAKey string `json:"access_ca_key"`
			}{strings.TrimSpace(info.AccessCAKey)}
			line := out.AccessCAKey + " warder-access-ca"
			if err := e.print(out, func(w *tabwriter.Writer) { fmt.Fprintln(w, line) }); err != nil {
				return err
			}
			if e.format == "table" {
				fmt.Fprintf(e.stderr, sshCAInstall, line)
			}
			return nil
		},
	}
}

// sshCAInstall tells, on standard error, how to install the host-access
// CA key line (%s) on a target.
const sshCAInstall = `# The line above is the host-access CA key. On each target with
# ssh_auth=certificate, as root:
#   echo '%s' > /etc/ssh/warder_access_ca.pub
#   echo 'TrustedUserCAKeys /etc/ssh/warder_access_ca.pub' >> /etc/ssh/sshd_config
#   systemctl reload sshd    # or: service ssh reload
`

func (e *env) sshCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "ssh [ACCOUNT@]TARGET [-- COMMAND...]",
		Short: "Connect to a target through the SSH gateway",
		Long: `Connect to a target's account through Warder's SSH gateway with the
system's ssh, which must be on the PATH. Without ACCOUNT, the gateway logs
in as the account that the role of your live just-in-time grant on the
target names (resource == Account::"TARGET/ACCOUNT"), else as the target's
default_account option; with neither it refuses and asks you to name the
account (ACCOUNT@TARGET). The management account is never used unless
named. The exit status is the remote command's, or 255 when ssh itself
fails.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dash := cmd.ArgsLenAtDash(); dash > 1 || dash == -1 && len(args) > 1 {
				return usageError{errors.New("give the remote command after --")}
			}
			dest, command := args[0], args[1:]
			g, err := e.sshSetup(cmd.Context())
			if err != nil {
				return err
			}
			f, host, port := g.files, g.host, g.port
			path, err := exec.LookPath("ssh")
			if err != nil {
				return errors.New("ssh: the OpenSSH client is not installed (no ssh on the PATH)")
			}
			argv := []string{"-i", f.key, "-o", "CertificateFile=" + f.cert, "-o", "IdentitiesOnly=yes",
				"-o", "UserKnownHostsFile=" + f.knownHosts, "-o", "StrictHostKeyChecking=yes",
				"-p", port, "-l", dest, host}
			if len(command) > 0 {
				argv = append(argv, "--")
				argv = append(argv, command...)
			}
			return e.runSSH(path, argv)
		},
	}
}

// runSSH runs ssh with stdio passed through, forwarding signals, and
// ends with its exit status.
func (e *env) runSSH(path string, argv []string) error {
	return e.runChild("ssh", exec.Command(path, argv...), true)
}

// runChild runs c with stdio passed through and ends with its exit status
// (128+N when a signal N ended it). SIGTERM and SIGHUP are forwarded to
// it, and SIGINT too when forwardInt (otherwise the terminal already
// delivers Ctrl-C to it and warder only survives it).
func (e *env) runChild(name string, c *exec.Cmd, forwardInt bool) error {
	c.Stdin, c.Stdout, c.Stderr = e.stdin, e.stdout, e.stderr
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := c.Start(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	done := make(chan struct{}) // closed when the child has ended; ends the forwarder
	go func() {
		for {
			select {
			case s := <-sigs:
				if s != syscall.SIGINT || forwardInt {
					c.Process.Signal(s)
				}
			case <-done:
				return
			}
		}
	}()
	err := c.Wait()
	close(done)
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return err
	}
	if ws, ok := c.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return exitError{128 + int(ws.Signal())}
	}
	if code := c.ProcessState.ExitCode(); code != 0 {
		return exitError{code}
	}
	return nil
}

// writeFileAtomic writes data to path with mode perm through a temporary
// file and a rename.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
