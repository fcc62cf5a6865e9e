package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	gossh "golang.org/x/crypto/ssh"

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

// sshSetup prepares what an SSH client needs to reach the gateway: a
// certificate valid for at least a minute, and the gateway's host key
// pinned in the known-hosts file. It returns the gateway's host and port.
func (e *env) sshSetup(ctx context.Context) (f sshFiles, host, port string, err error) {
	c, err := e.client()
	if err != nil {
		return f, "", "", err
	}
	if f, err = e.sshFiles(); err != nil {
		return f, "", "", err
	}
	info, err := c.SSHInfo(ctx)
	if err != nil {
		return f, "", "", err
	}
	if info.Listen == "" {
		return f, "", "", errors.New("the server runs no SSH gateway (set ssh_listen)")
	}
	host, port, err = net.SplitHostPort(info.Listen)
	if err != nil {
		return f, "", "", fmt.Errorf("gateway address %q: %w", info.Listen, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = e.serverHost() // listening on every interface: reach it where the API is
	}
	if !f.certValidFor(time.Minute) {
		if _, err := e.refreshSSHCert(ctx, c); err != nil {
			return f, "", "", fmt.Errorf("SSH certificate: %w", err)
		}
	}
	hostPattern := host
	if port != "22" {
		hostPattern = "[" + host + "]:" + port
	}
	known := hostPattern + " " + strings.TrimSpace(info.HostKey) + "\n"
	if err := writeFileAtomic(f.knownHosts, []byte(known), 0o644); err != nil {
		return f, "", "", err
	}
	return f, host, port, nil
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
in the configuration directory is missing or expiring, and pins the
gateway's host key in <config dir>/known_hosts: no trust on first use.

The SSH user name selects the account: "ssh root@web1@warder" logs in to
account root of target web1 (or "ssh -l root@web1 warder").`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, host, port, err := e.sshSetup(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, `Host %s
    HostName %s
    Port %s
    IdentityFile %s
    CertificateFile %s
    IdentitiesOnly yes
    UserKnownHostsFile %s
    StrictHostKeyChecking yes
`, alias, host, port, f.key, f.cert, f.knownHosts)
			return nil
		},
	}
	cmd.Flags().StringVar(&alias, "host-alias", "warder", "the Host name of the block")
	return cmd
}

func (e *env) sshCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "ssh [ACCOUNT@]TARGET [-- COMMAND...]",
		Short: "Connect to a target through the SSH gateway",
		Long: `Connect to a target's account through Warder's SSH gateway with the
system's ssh, which must be on the PATH. Without ACCOUNT, the target's
default account is used (its management account, else root). The exit
status is the remote command's, or 255 when ssh itself fails.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dash := cmd.ArgsLenAtDash(); dash > 1 || dash == -1 && len(args) > 1 {
				return usageError{errors.New("give the remote command after --")}
			}
			dest, command := args[0], args[1:]
			f, host, port, err := e.sshSetup(cmd.Context())
			if err != nil {
				return err
			}
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
	c := exec.Command(path, argv...)
	c.Stdin, c.Stdout, c.Stderr = e.stdin, e.stdout, e.stderr
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := c.Start(); err != nil {
		return fmt.Errorf("ssh: %w", err)
	}
	done := make(chan struct{}) // closed when ssh has ended; ends the forwarder
	go func() {
		for {
			select {
			case s := <-sigs:
				c.Process.Signal(s)
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
