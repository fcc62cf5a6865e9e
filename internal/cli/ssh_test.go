package cli

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// sshFake serves the SSH parts of the API: login (alice), the SSH keys
// and user certificates signed by a real CA, valid for certTTL.
type sshFake struct {
	userCA, host, hostCA, accessCA gossh.Signer
	certTTL                        time.Duration

	mu     sync.Mutex // protects issued
	issued int
}

func newSSHFake(t *testing.T) *sshFake {
	t.Helper()
	sg := func() gossh.Signer {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		s, err := gossh.NewSignerFromKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	return &sshFake{userCA: sg(), host: sg(), hostCA: sg(), accessCA: sg(), certTTL: time.Hour}
}

func authorizedLine(k gossh.PublicKey) string {
	return strings.TrimSpace(string(gossh.MarshalAuthorizedKey(k)))
}

func (f *sshFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body map[string]string
	json.NewDecoder(r.Body).Decode(&body)
	switch r.Method + " " + r.URL.Path {
	case "POST /v1/auth/login":
		json.NewEncoder(w).Encode(map[string]any{"token": "wt1.alice.secret", "token_info": map[string]any{
			"id": "alice", "principal": map[string]string{"kind": "user", "name": "alice"}}})
	case "GET /v1/sys/ssh":
		json.NewEncoder(w).Encode(map[string]string{
			"user_ca": authorizedLine(f.userCA.PublicKey()), "host_key": authorizedLine(f.host.PublicKey()),
			"host_ca_key": authorizedLine(f.hostCA.PublicKey()), "access_ca_key": authorizedLine(f.accessCA.PublicKey()),
			"listen": "0.0.0.0:2222",
		})
	case "POST /v1/auth/ssh/certificate":
		key, _, _, _, err := gossh.ParseAuthorizedKey([]byte(body["public_key"]))
		if err != nil {
			w.WriteHeader(400)
			return
		}
		now := time.Now()
		c := &gossh.Certificate{Key: key, CertType: gossh.UserCert, KeyId: "user:alice", ValidPrincipals: []string{"user:alice"},
			ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(f.certTTL).Unix())}
		c.SignCert(rand.Reader, f.userCA)
		f.mu.Lock()
		f.issued++
		f.mu.Unlock()
		json.NewEncoder(w).Encode(map[string]any{"certificate": authorizedLine(c), "valid_before": time.Unix(int64(c.ValidBefore), 0).UTC()})
	default:
		w.WriteHeader(404)
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": "not_found", "message": "no such endpoint"}})
	}
}

// setupSSH starts f and points the CLI at it, with a fresh configuration
// directory and no ssh-agent.
func setupSSH(t *testing.T, f *sshFake) string {
	t.Helper()
	cfg := serveCLI(t, f, "wt1.alice.secret")
	t.Setenv("SSH_AUTH_SOCK", "")
	return cfg
}

func TestSSHConfig(t *testing.T) {
	f := newSSHFake(t)
	cfg := setupSSH(t, f)
	r := runCLI("", "ssh-config")
	if r.code != 0 {
		t.Fatalf("ssh-config: exit %d, stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{
		"Host warder\n    HostName 127.0.0.1\n    Port 2222\n",
		"\nHost *.warder !warder\n    ProxyJump alice@warder\n",
		"CertificateFile " + filepath.Join(cfg, "id_ed25519_warder-cert.pub"),
		"UserKnownHostsFile " + filepath.Join(cfg, "known_hosts"),
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("ssh-config lacks %q:\n%s", want, r.stdout)
		}
	}
	if n := strings.Count(r.stdout, "StrictHostKeyChecking yes"); n != 2 {
		t.Errorf("StrictHostKeyChecking yes %d times, want 2", n)
	}
	known, err := os.ReadFile(filepath.Join(cfg, "known_hosts"))
	if err != nil {
		t.Fatal(err)
	}
	want := "[127.0.0.1]:2222 " + authorizedLine(f.host.PublicKey()) + "\n@cert-authority *.warder " + authorizedLine(f.hostCA.PublicKey()) + "\n"
	if string(known) != want {
		t.Errorf("known_hosts:\n%s\nwant:\n%s", known, want)
	}

	// What OpenSSH makes of it, for a ProxyJump destination and for the
	// gateway itself.
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("no OpenSSH client")
	}
	path := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(path, []byte(r.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	g := func(dest string) string {
		out, err := exec.Command("ssh", "-G", "-F", path, dest).Output()
		if err != nil {
			t.Fatalf("ssh -G %s: %v", dest, err)
		}
		return string(out)
	}
	web := g("root@web1.warder")
	for _, want := range []string{"\nuser root\n", "\nhostname web1.warder\n", "\nport 22\n", "\nproxyjump alice@warder\n", "\nstricthostkeychecking true\n", "\nidentitiesonly yes\n"} {
		if !strings.Contains(web, want) {
			t.Errorf("ssh -G root@web1.warder lacks %q", want)
		}
	}
	if gw := g("warder"); strings.Contains(gw, "proxyjump") || !strings.Contains(gw, "\nport 2222\n") {
		t.Errorf("ssh -G warder:\n%s", gw)
	}

	if r := runCLI("", "ssh-config", "--host-alias", "a b"); r.code != 2 {
		t.Errorf("bad alias: exit %d", r.code)
	}
}

func TestSSHCA(t *testing.T) {
	f := newSSHFake(t)
	setupSSH(t, f)
	r := runCLI("", "ssh-ca")
	if want := authorizedLine(f.accessCA.PublicKey()) + " warder-access-ca\n"; r.code != 0 || r.stdout != want {
		t.Fatalf("ssh-ca: exit %d, %q, want %q; stderr %q", r.code, r.stdout, want, r.stderr)
	}
	// The line is what sshd's TrustedUserCAKeys takes.
	if _, comment, _, _, err := gossh.ParseAuthorizedKey([]byte(r.stdout)); err != nil || comment != "warder-access-ca" {
		t.Errorf("parse: %v, comment %q", err, comment)
	}
	// Standard error says how to install it: the line into a file, and
	// the TrustedUserCAKeys directive naming that file.
	for _, want := range []string{
		"echo '" + strings.TrimSpace(r.stdout) + "' > /etc/ssh/warder_access_ca.pub\n",
		"echo 'TrustedUserCAKeys /etc/ssh/warder_access_ca.pub' >> /etc/ssh/sshd_config\n",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("ssh-ca: stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	r = runCLI("", "ssh-ca", "--format", "json")
	var got struct {
		AccessCAKey string `json:"access_ca_key"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got.AccessCAKey != authorizedLine(f.accessCA.PublicKey()) {
		t.Errorf("json: %q, %v", r.stdout, err)
	}
	if r.stderr != "" {
		t.Errorf("json: stderr %q", r.stderr)
	}
}

// startAgent starts a real ssh-agent on a socket in a temporary directory
// and stops it when t ends.
func startAgent(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("ssh-agent"); err != nil {
		t.Skip("no ssh-agent")
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	cmd := exec.Command("ssh-agent", "-D", "-a", sock)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return sock
		}
		if time.Now().After(deadline) {
			t.Fatal("ssh-agent did not start")
		}
	}
}

func agentKeys(t *testing.T, sock string) []*agent.Key {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	keys, err := agent.NewClient(c).List()
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestLoginAgent(t *testing.T) {
	f := newSSHFake(t)
	f.certTTL = 3 * time.Second
	cfg := setupSSH(t, f)
	sock := startAgent(t)
	t.Setenv("SSH_AUTH_SOCK", sock)

	r := runCLI("pw\n", "login", "--user", "alice", "--password-stdin")
	if r.code != 0 || strings.Contains(r.stderr, "Warning") {
		t.Fatalf("login: exit %d, stderr %q", r.code, r.stderr)
	}
	// The certificate is beside the key, and in the agent with its key.
	certLine, err := os.ReadFile(filepath.Join(cfg, "id_ed25519_warder-cert.pub"))
	if err != nil {
		t.Fatal(err)
	}
	keys := agentKeys(t, sock)
	if len(keys) != 1 || keys[0].Type() != gossh.CertAlgoED25519v01 || authorizedLine(keys[0]) != strings.TrimSpace(string(certLine)) {
		t.Fatalf("agent holds %v, want the certificate", keys)
	}
	// The agent signs with it: the private key is there too.
	ac, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	signers, err := agent.NewClient(ac).Signers()
	if err != nil || len(signers) != 1 {
		t.Fatalf("signers: %v, %v", signers, err)
	}
	sig, err := signers[0].Sign(rand.Reader, []byte("msg"))
	ac.Close()
	pk, perr := gossh.ParsePublicKey(signers[0].PublicKey().Marshal())
	cert, _ := pk.(*gossh.Certificate)
	if err != nil || perr != nil || cert == nil || cert.Key.Verify([]byte("msg"), sig) != nil {
		t.Fatalf("agent signature: %v", err)
	}
	// The real ssh-add sees it too.
	cmd := exec.Command("ssh-add", "-L")
	cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
	if out, err := cmd.Output(); err != nil || !strings.Contains(string(out), strings.Fields(string(certLine))[1]) {
		t.Errorf("ssh-add -L: %q, %v", out, err)
	}
	// It leaves the agent when the certificate expires.
	for deadline := time.Now().Add(10 * time.Second); len(agentKeys(t, sock)) > 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the certificate outlived its validity in the agent")
		}
	}

	// An agent that cannot be reached is a warning only.
	t.Setenv("SSH_AUTH_SOCK", filepath.Join(t.TempDir(), "nothing.sock"))
	r = runCLI("pw\n", "login", "--user", "alice", "--password-stdin")
	if r.code != 0 || !strings.Contains(r.stderr, "Warning: the SSH certificate was not loaded into ssh-agent") {
		t.Errorf("login without an agent: exit %d, stderr %q", r.code, r.stderr)
	}
	if strings.Contains(r.stderr, "PRIVATE KEY") {
		t.Error("the warning shows the key")
	}
}
