package testenv

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// sshdPath is where Debian's openssh-server puts sshd; sshd must be started
// by absolute path (it re-executes itself).
const sshdPath = "/usr/sbin/sshd"

// SSHDServer is a real OpenSSH sshd started for one test on 127.0.0.1, with
// its own configuration and host key in a temporary directory. It accepts
// logins only for root and for users whose names start with "wt_" (see
// LinuxUser): password authentication for those users (checked against
// /etc/shadow, UsePAM no), public-key authentication for everyone, and root
// by key only, with RootKey.
type SSHDServer struct {
	Host string // "127.0.0.1"
	Port int
	// HostKey is the server's host public key as an authorized_keys line,
	// for pinning.
	HostKey string
	// RootKey is an OpenSSH PEM private key that logs in as root. It is
	// authorized in the test directory (AuthorizedKeysFile), not in
	// /root/.ssh, which is never touched.
	RootKey []byte
	// RootPublicKey is RootKey's authorized_keys line.
	RootPublicKey string
	// LogPath is sshd's log file (LogLevel DEBUG3), for tests that check
	// what the server saw.
	LogPath string
	// HostCert is the server's host certificate as an authorized_keys
	// line when SSHDOptions.HostCA was set, else "".
	HostCert string
}

// SSHDOptions are settings of an SSHD beyond the defaults. The zero value
// is what SSHD uses.
type SSHDOptions struct {
	// TrustedUserCAKeys are CA public keys (authorized_keys lines) whose
	// user certificates log in (sshd's TrustedUserCAKeys): a
	// certificate's principals must include the login name. Empty: none.
	TrustedUserCAKeys []string
	// HostCA, if set, certifies the host key: sshd also presents a host
	// certificate signed by it (HostCertificate), valid for an hour.
	// Nil: no host certificate.
	HostCA ssh.Signer
	// HostCertPrincipals are the host certificate's principals. Empty:
	// the server's Host, "127.0.0.1".
	HostCertPrincipals []string
	// AllowTCPForwarding lets clients forward ports (ssh -L, -R) through
	// the server. False: AllowTcpForwarding no.
	AllowTCPForwarding bool
}

// Addr is host:port.
func (s *SSHDServer) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// Log returns the content of sshd's log so far.
func (s *SSHDServer) Log(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(s.LogPath)
	if err != nil {
		t.Fatalf("testenv: read sshd log: %v", err)
	}
	return string(b)
}

// requireRoot skips t unless the test runs as root: starting sshd on its
// own port and creating local users need root. `make test` runs as root in
// CI.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("testenv: the sshd tests need root (they create local users and start sshd); run `make test` as root")
	}
}

// SSHD starts a real OpenSSH sshd on 127.0.0.1 and a free port and stops it
// when t ends. It serves the SFTP subsystem (internal-sftp). It skips t
// when not running as root and fails it when sshd is not installed
// (scripts/services.sh installs openssh-server).
func SSHD(t testing.TB) *SSHDServer {
	t.Helper()
	return SSHDWith(t, SSHDOptions{})
}

// SSHDWith is SSHD with opts.
func SSHDWith(t testing.TB, opts SSHDOptions) *SSHDServer {
	t.Helper()
	requireRoot(t)
	if _, err := os.Stat(sshdPath); err != nil {
		t.Fatalf("testenv: %s not found (run `make test` as root, which installs openssh-server): %v", sshdPath, err)
	}
	// sshd refuses to start without its privilege separation directory,
	// which lives on a tmpfs and may be missing after a reboot.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}

	dir := t.TempDir()
	s := &SSHDServer{Host: "127.0.0.1", LogPath: filepath.Join(dir, "sshd.log")}

	hostPEM, hostPub := newEd25519(t, "warder-test-host")
	s.HostKey = hostPub
	hostKeyPath := filepath.Join(dir, "host_ed25519")
	writeFileMode(t, hostKeyPath, hostPEM, 0o600)

	s.RootKey, s.RootPublicKey = newEd25519(t, "warder-test-root")
	keysDir := filepath.Join(dir, "keys")
	if err := os.Mkdir(keysDir, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	writeFileMode(t, filepath.Join(keysDir, "root"), []byte(s.RootPublicKey+"\n"), 0o644)

	var extra strings.Builder
	if len(opts.TrustedUserCAKeys) > 0 {
		path := filepath.Join(dir, "trusted_user_ca_keys")
		writeFileMode(t, path, []byte(strings.Join(opts.TrustedUserCAKeys, "\n")+"\n"), 0o644)
		fmt.Fprintf(&extra, "TrustedUserCAKeys %s\n", path)
	}
	if opts.HostCA != nil {
		s.HostCert = hostCert(t, hostPub, opts.HostCA, opts.HostCertPrincipals, s.Host)
		path := hostKeyPath + "-cert.pub"
		writeFileMode(t, path, []byte(s.HostCert+"\n"), 0o644)
		fmt.Fprintf(&extra, "HostCertificate %s\n", path)
	}

	forwarding := "no"
	if opts.AllowTCPForwarding {
		forwarding = "yes"
	}

	// Picking a free port and then starting sshd on it races with other
	// processes; retry a few times when sshd cannot bind.
	var lastErr error
	for range 5 {
		port, err := freeLoopbackPort()
		if err != nil {
			t.Fatalf("testenv: %v", err)
		}
		cfg := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
PidFile none
UsePAM no
PasswordAuthentication yes
PermitEmptyPasswords no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AllowUsers root wt_*
AuthorizedKeysFile %s/%%u .ssh/authorized_keys
StrictModes no
UseDNS no
X11Forwarding no
AllowTcpForwarding %s
MaxStartups 100:30:200
MaxSessions 20
LogLevel DEBUG3
Subsystem sftp internal-sftp
%s`, port, hostKeyPath, keysDir, forwarding, extra.String())
		// StrictModes no: the test directory lives under /tmp, which is
		// world-writable, so the root key's file would fail the check.
		cfgPath := filepath.Join(dir, "sshd_config")
		writeFileMode(t, cfgPath, []byte(cfg), 0o600)
		if err := s.start(t, cfgPath, port); err != nil {
			lastErr = err
			continue
		}
		s.Port = port
		return s
	}
	t.Fatalf("testenv: start sshd: %v", lastErr)
	return nil
}

// hostCert signs a host certificate for the host key hostPub with ca,
// valid for principals (default: host) from a minute ago for an hour, and
// returns it as an authorized_keys line.
func hostCert(t testing.TB, hostPub string, ca ssh.Signer, principals []string, host string) string {
	t.Helper()
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(hostPub))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if len(principals) == 0 {
		principals = []string{host}
	}
	now := time.Now()
	cert := &ssh.Certificate{
		Key: key, CertType: ssh.HostCert, KeyId: "warder-test-host", ValidPrincipals: principals,
		ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(time.Hour).Unix()),
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatalf("testenv: sign host certificate: %v", err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(cert)))
}

// start runs sshd with cfgPath and waits until it answers with an SSH
// banner on port.
func (s *SSHDServer) start(t testing.TB, cfgPath string, port int) error {
	cmd := exec.Command(sshdPath, "-D", "-f", cfgPath, "-E", s.LogPath)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1) // written once by the waiter goroutine
	go func() { exited <- cmd.Wait() }()

	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	addr := net.JoinHostPort(s.Host, strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-exited:
			log, _ := os.ReadFile(s.LogPath)
			return fmt.Errorf("sshd exited (%v): %s%s", err, stderr.String(), logTail(string(log), 2000))
		default:
		}
		if sshBanner(addr) {
			break
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("sshd did not answer on %s within 10s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			if log, err := os.ReadFile(s.LogPath); err == nil {
				t.Logf("testenv: sshd log (tail):\n%s", logTail(string(log), 1500))
			}
		}
	})
	return nil
}

// sshBanner reports whether an SSH server answers on addr.
func sshBanner(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "SSH-2.0-")
}

func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// newEd25519 returns a new key pair: the private key as OpenSSH PEM and the
// public key as an authorized_keys line with comment.
func newEd25519(t testing.TB, comment string) ([]byte, string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " " + comment
	return pem.EncodeToMemory(block), line
}

// NewSSHKey returns a new Ed25519 key pair: an OpenSSH PEM private key and
// its authorized_keys line.
func NewSSHKey(t testing.TB) (private []byte, authorizedKey string) {
	t.Helper()
	return newEd25519(t, "warder-test")
}

// LinuxUser creates a local user with a unique name ("wt_" and 8 hex
// digits), a home directory, /bin/bash as shell and the given password,
// and removes it with its home directory when t ends. An empty password
// leaves the account without one ("*": key logins only, not locked). It
// skips t when not running as root.
func LinuxUser(t testing.TB, password string) *user.User {
	t.Helper()
	requireRoot(t)
	name := "wt_" + randomHex(4)
	runRoot(t, nil, "useradd", "-m", "-s", "/bin/bash", name)
	t.Cleanup(func() {
		// -f: a session of the user may still be closing.
		out, err := exec.Command("userdel", "-f", "-r", name).CombinedOutput()
		if err != nil && !strings.Contains(string(out), "mail spool") {
			t.Logf("testenv: userdel %s: %v: %s", name, err, out)
		}
	})
	if password == "" {
		runRoot(t, nil, "usermod", "-p", "*", name)
	} else {
		// chpasswd reads "user:password" on stdin, so the password never
		// appears in a process's arguments.
		runRoot(t, strings.NewReader(name+":"+password+"\n"), "chpasswd")
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return u
}

// SudoUser is LinuxUser with a sudoers.d entry that lets the user run any
// command as root without a password (sudo -n), removed when t ends. It
// skips t when sudo is not installed.
func SudoUser(t testing.TB, password string) *user.User {
	t.Helper()
	requireRoot(t)
	if _, err := exec.LookPath("sudo"); err != nil {
		t.Skip("testenv: sudo is not installed (scripts/services.sh installs it)")
	}
	u := LinuxUser(t, password)
	path := "/etc/sudoers.d/warder-test-" + u.Username
	writeFileMode(t, path, []byte(u.Username+" ALL=(ALL) NOPASSWD: ALL\n"), 0o440)
	t.Cleanup(func() { os.Remove(path) })
	return u
}

// AuthorizeKeys writes lines as u's ~/.ssh/authorized_keys (owned by u,
// mode 0600), replacing the file.
func AuthorizeKeys(t testing.TB, u *user.User, lines ...string) {
	t.Helper()
	dir := filepath.Join(u.HomeDir, ".ssh")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	path := filepath.Join(dir, "authorized_keys")
	writeFileMode(t, path, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	for _, p := range []string{dir, path} {
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
}

func runRoot(t testing.TB, stdin *strings.Reader, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testenv: %s: %v: %s", name, err, out)
	}
}

func writeFileMode(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := os.Chmod(path, mode); err != nil { // WriteFile's mode is filtered by the umask
		t.Fatalf("testenv: %v", err)
	}
}

func logTail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
