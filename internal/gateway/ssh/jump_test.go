package ssh

import (
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/sshca"
	"github.com/warderhq/warder/internal/testenv"
)

func TestProxyJump(t *testing.T) {
	e := newEnv(t, nil)
	alice, _ := e.cert(certSpec{principals: []string{"user:alice"}})

	// The outer login name may be anything without "@", even a target's.
	for _, outerUser := range []string{"alice", "web1"} {
		t.Run("login "+outerUser, func(t *testing.T) {
			oc, c, err := e.jumpDial(outerUser, alice, "web1.warder:22", e.user.Username, alice)
			if err != nil {
				t.Fatal(err)
			}
			defer oc.Close()
			defer c.Close()
			s, err := c.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			out, err := s.Output("id -un")
			if err != nil || strings.TrimSpace(string(out)) != e.user.Username {
				t.Fatalf("id -un: %q, %v", out, err)
			}
			// The jump connection itself carries no session.
			if s, err := oc.NewSession(); err == nil {
				s.Close()
				t.Error("a session on the ProxyJump connection")
			}
		})
	}
	rec := e.rec.wait(t, 0)
	rec.waitClosed(t)
	if rec.meta.Principal != "user:alice" || rec.meta.Target != "web1" || rec.meta.Account != e.user.Username || rec.meta.Command != "id -un" {
		t.Errorf("meta %+v", rec.meta)
	}
	if rec.origin.Source != "127.0.0.1" {
		t.Errorf("source %q, want the client's address", rec.origin.Source)
	}
	e.authz.mu.Lock()
	reqs := slices.Clone(e.authz.reqs)
	e.authz.mu.Unlock()
	if len(reqs) != 2 || reqs[0].Action != authz.ActionConnect || reqs[0].Resource.String() != `Account::"web1/`+e.user.Username+`"` || reqs[0].Context.Via != authz.ViaSSH {
		t.Errorf("authz requests %+v", reqs)
	}
	if got := e.res.waitReleased(t, 2); got[0] != StatusClosed {
		t.Errorf("released %q", got)
	}
}

func TestProxyJumpHostCert(t *testing.T) {
	e := newEnv(t, nil)
	alice, _ := e.cert(certSpec{principals: []string{"user:alice"}})
	oc, err := e.dialWith("alice", alice)
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	for _, host := range []string{"web1.warder", "web1"} {
		nc, err := oc.Dial("tcp", net.JoinHostPort(host, "22"))
		if err != nil {
			t.Fatal(err)
		}
		var got *gossh.Certificate
		_, _, _, err = gossh.NewClientConn(nc, host+":22", &gossh.ClientConfig{
			User: "x",
			HostKeyCallback: func(_ string, _ net.Addr, key gossh.PublicKey) error {
				got, _ = key.(*gossh.Certificate)
				return errors.New("stop here")
			},
			HostKeyAlgorithms: []string{gossh.CertAlgoED25519v01},
		})
		nc.Close()
		if got == nil {
			t.Fatalf("%s: no host certificate: %v", host, err)
		}
		if !keysEqual(got.SignatureKey, e.hostCA.PublicKey()) || !keysEqual(got.Key, e.host.PublicKey()) || got.CertType != gossh.HostCert {
			t.Errorf("%s: certificate by %s for %s", host, gossh.FingerprintSHA256(got.SignatureKey), gossh.FingerprintSHA256(got.Key))
		}
		if want := []string{"web1", "web1.warder"}; !slices.Equal(slices.Sorted(slices.Values(got.ValidPrincipals)), want) {
			t.Errorf("%s: principals %q, want %q", host, got.ValidPrincipals, want)
		}
		if d := time.Until(time.Unix(int64(got.ValidBefore), 0)); d > 6*time.Minute {
			t.Errorf("%s: valid for %v more", host, d)
		}
	}
}

func TestProxyJumpRefused(t *testing.T) {
	e := newEnv(t, nil)
	alice, _ := e.cert(certSpec{principals: []string{"user:alice"}})
	bob, _ := e.cert(certSpec{principals: []string{"user:bob"}})
	tests := []struct {
		name      string
		outerUser string
		addr      string
		account   string
		inner     gossh.Signer
	}{
		{"another principal inside", "alice", "web1.warder:22", e.user.Username, bob},
		{"unknown target", "alice", "web9.warder:22", e.user.Username, alice},
		{"other port", "alice", "web1.warder:80", e.user.Username, alice},
		{"other host", "alice", "127.0.0.1:22", e.user.Username, alice},
		{"account@target outside", e.user.Username + "@web1", "web1.warder:22", e.user.Username, alice},
		{"empty account", "alice", "web1.warder:22", "", alice},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			oc, c, err := e.jumpDial(tt.outerUser, alice, tt.addr, tt.account, tt.inner)
			if err == nil {
				s, serr := c.NewSession()
				if serr == nil {
					s.Close()
				}
				c.Close()
				oc.Close()
				if serr == nil {
					t.Fatal("connected")
				}
			}
		})
	}
	// Nothing was recorded.
	e.rec.mu.Lock()
	n := len(e.rec.sessions)
	e.rec.mu.Unlock()
	if n != 0 {
		t.Errorf("%d recordings", n)
	}
}

func TestProxyJumpDisabled(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.HostCA = nil })
	alice, _ := e.cert(certSpec{principals: []string{"user:alice"}})
	if oc, c, err := e.jumpDial("web1", alice, "web1.warder:22", e.user.Username, alice); err == nil {
		c.Close()
		oc.Close()
		t.Fatal("ProxyJump without a host CA")
	}
	// The direct form still works.
	c := e.mustDial("web1")
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := s.Output("echo ok"); err != nil || string(out) != "ok\n" {
		t.Fatalf("%q %v", out, err)
	}
}

func TestProxyJumpKill(t *testing.T) {
	e := newEnv(t, nil)
	alice, _ := e.cert(certSpec{principals: []string{"user:alice"}})
	oc, c, err := e.jumpDial("alice", alice, "web1.warder:22", e.user.Username, alice)
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	defer c.Close()
	s, in, out := shell(t, c)
	io.WriteString(in, "echo ready\r")
	out.waitFor(t, regexp.MustCompile(`[\r\n]ready\r`))
	rec := e.rec.wait(t, 0)
	rec.kill("killed by bob: policy violation")
	out.waitFor(t, regexp.MustCompile(`warder: killed by bob: policy violation`))
	done := make(chan error, 1)
	go func() { done <- s.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the session did not end")
	}
	if st := rec.waitClosed(t); st != StatusKilled {
		t.Errorf("status %q", st)
	}
	if got := e.res.waitReleased(t, 1); got[0] != StatusKilled {
		t.Errorf("released %q", got)
	}
}

// TestProxyJumpOpenSSH runs the real ssh, scp and sftp through the gateway
// with ProxyJump, configured as `warder ssh-config` does.
func TestProxyJumpOpenSSH(t *testing.T) {
	e := newEnv(t, nil)
	up := e.res.targets["web1"]
	up.Rules = []Rule{{Pattern: regexp.MustCompile(`rm -rf`), Action: ActionBlock}}
	e.res.targets["web1"] = up
	cfg := e.opensshConfig("alice")
	dest := e.user.Username + "@web1.warder"
	dir := t.TempDir()

	t.Run("exec", func(t *testing.T) {
		out, err := exec.Command("ssh", "-F", cfg, dest, "echo hi; id -un; exit 3").Output()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 3 || string(out) != "hi\n"+e.user.Username+"\n" {
			t.Fatalf("ssh: %q, %v", out, err)
		}
	})
	t.Run("blocked", func(t *testing.T) {
		out, err := exec.Command("ssh", "-F", cfg, dest, "rm -rf /tmp/nothing").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "command blocked") {
			t.Fatalf("ssh: %q, %v", out, err)
		}
	})
	t.Run("scp", func(t *testing.T) {
		src, sum := randomFile(t, dir, 2<<20+3)
		back := filepath.Join(dir, "scp-back.bin")
		if out, err := exec.Command("scp", "-F", cfg, src, dest+":up.bin").CombinedOutput(); err != nil {
			t.Fatalf("scp up: %v\n%s", err, out)
		}
		if got := fileSum(t, filepath.Join(e.user.HomeDir, "up.bin")); got != sum {
			t.Fatal("uploaded file differs")
		}
		if out, err := exec.Command("scp", "-F", cfg, dest+":up.bin", back).CombinedOutput(); err != nil {
			t.Fatalf("scp down: %v\n%s", err, out)
		}
		if got := fileSum(t, back); got != sum {
			t.Fatal("downloaded file differs")
		}
	})
	t.Run("sftp", func(t *testing.T) {
		src, sum := randomFile(t, dir, 1<<20+9)
		back := filepath.Join(dir, "sftp-back.bin")
		batch := filepath.Join(dir, "batch")
		writeFile(t, batch, []byte("put "+src+" s.bin\nget s.bin "+back+"\n"), 0o644)
		if out, err := exec.Command("sftp", "-F", cfg, "-b", batch, dest).CombinedOutput(); err != nil {
			t.Fatalf("sftp: %v\n%s", err, out)
		}
		if got := fileSum(t, back); got != sum {
			t.Fatal("downloaded file differs")
		}
	})
	t.Run("host CA not trusted", func(t *testing.T) {
		// Without the @cert-authority line, the nested host key is
		// unknown: strict checking refuses it (no trust on first use).
		known := strings.Replace(cfg, "ssh_config", "known_hosts", 1)
		data, err := os.ReadFile(known)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, known, []byte(strings.SplitAfter(string(data), "\n")[0]), 0o644)
		out, err := exec.Command("ssh", "-F", cfg, dest, "echo hi").CombinedOutput()
		if err == nil || strings.Contains(string(out), "hi") {
			t.Fatalf("ssh: %q, %v", out, err)
		}
	})

	var cmds []string
	e.rec.mu.Lock()
	for _, r := range e.rec.sessions {
		cmds = append(cmds, r.meta.Command)
	}
	e.rec.mu.Unlock()
	for _, want := range []string{"echo hi; id -un; exit 3", "rm -rf /tmp/nothing", "subsystem:sftp"} {
		if !slices.Contains(cmds, want) {
			t.Errorf("no recording of %q in %q", want, cmds)
		}
	}
}

// TestUpstreamHostCA reaches a target whose sshd presents a host
// certificate, verified by the target's host CA instead of a pinned key.
func TestUpstreamHostCA(t *testing.T) {
	ca := newSigner(t)
	e := newEnvSSHD(t, testenv.SSHDOptions{HostCA: ca}, nil)
	up := e.res.targets["web1"]
	up.HostKey, up.HostCA = nil, ca.PublicKey()
	e.res.targets["web1"] = up
	c := e.mustDial("web1")
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := s.Output("echo ok"); err != nil || string(out) != "ok\n" {
		t.Fatalf("%q %v", out, err)
	}
	if evs := e.audit.find("ssh.host_key_mismatch"); len(evs) != 0 {
		t.Errorf("audit %+v", evs)
	}
	c.Close()
	if got := e.res.waitReleased(t, 1); got[0] != StatusClosed {
		t.Errorf("released %q", got)
	}

	// Another CA: refused and audited like a pinned-key mismatch.
	other := newSigner(t)
	up.HostCA = other.PublicKey()
	e.res.targets["web1"] = up
	c2 := e.mustDial("web1")
	_, err = c2.NewSession()
	var oce *gossh.OpenChannelError
	if !errors.As(err, &oce) || oce.Reason != gossh.Prohibited || strings.Contains(oce.Message, "host") {
		t.Fatalf("session: %v", err)
	}
	evs := e.audit.find("ssh.host_key_mismatch")
	if len(evs) != 1 || evs[0].Resource != `Target::"web1"` || evs[0].Outcome != "failure" ||
		evs[0].Details["host_ca"] != gossh.FingerprintSHA256(other.PublicKey()) || evs[0].Details["got_signer"] != gossh.FingerprintSHA256(ca.PublicKey()) {
		t.Errorf("audit %+v", evs)
	}
	if got := e.res.waitReleased(t, 2); got[1] != StatusFailed {
		t.Errorf("released %q", got)
	}
}

// TestUpstreamHostCAPrincipal refuses a certificate of the right CA for
// another host.
func TestUpstreamHostCAPrincipal(t *testing.T) {
	ca := newSigner(t)
	e := newEnvSSHD(t, testenv.SSHDOptions{HostCA: ca, HostCertPrincipals: []string{"web2.internal"}}, nil)
	up := e.res.targets["web1"]
	up.HostKey, up.HostCA = nil, ca.PublicKey()
	e.res.targets["web1"] = up
	c := e.mustDial("web1")
	if _, err := c.NewSession(); err == nil {
		t.Fatal("a certificate for another host was accepted")
	}
	evs := e.audit.find("ssh.host_key_mismatch")
	if len(evs) != 1 || !strings.Contains(evs[0].Details["reason"], "principal") {
		t.Errorf("audit %+v", evs)
	}
}

// FuzzJumpTarget feeds direct-tcpip channel data to the ProxyJump host
// parsing: whatever it accepts must be a target name a host certificate
// can name.
func FuzzJumpTarget(f *testing.F) {
	for _, d := range []directTCPIP{
		{"web1.warder", 22, "127.0.0.1", 40000}, // what ssh -J sends
		{"web1", 22, "::1", 1},
		{"db.prod.warder", 22, "", 0},
		{".warder", 22, "", 0},
		{"web1.warder", 80, "", 0},
		{"WEB1.warder", 22, "", 0},
		{"web 1", 22, "", 0},
	} {
		f.Add(gossh.Marshal(d))
	}
	f.Add([]byte{0, 0, 0, 9})
	s := &Server{cfg: Config{JumpSuffix: ".warder"}}
	ca, host := newSigner(f), newSigner(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var d directTCPIP
		if gossh.Unmarshal(data, &d) != nil {
			return
		}
		target, ok := s.jumpTarget(d.Host, d.Port)
		if !ok {
			return
		}
		if d.Port != 22 || target == "" || (d.Host != target && d.Host != target+".warder") {
			t.Fatalf("jumpTarget(%q, %d) = %q", d.Host, d.Port, target)
		}
		if _, err := sshca.IssueHostCert(ca, sshca.HostCert{Key: host.PublicKey(), Principals: []string{d.Host, target}, Now: time.Now()}); err != nil {
			t.Fatalf("jumpTarget(%q) = %q, which a certificate cannot name: %v", d.Host, target, err)
		}
	})
}

// TestProxyJumpOuterIdle: the ProxyJump connection, which carries no
// session of its own, is closed once no nested connection has been open
// on it for the idle timeout, and not while one is.
func TestProxyJumpOuterIdle(t *testing.T) {
	const idle = 400 * time.Millisecond
	e := newEnv(t, func(c *Config) { c.IdleTimeout = idle })
	alice, _ := e.cert(certSpec{principals: []string{"user:alice"}})
	oc, c, err := e.jumpDial("alice", alice, "web1.warder:22", e.user.Username, alice)
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	outerDone := make(chan error, 1)
	go func() { outerDone <- oc.Wait() }()

	// A nested connection kept busy for several idle periods keeps the
	// outer one open.
	for i := range 5 {
		s, err := c.NewSession()
		if err != nil {
			t.Fatalf("nested session %d: %v", i, err)
		}
		if out, err := s.Output("sleep 0.2; echo ok"); err != nil || strings.TrimSpace(string(out)) != "ok" {
			t.Fatalf("nested session %d: %q, %v", i, out, err)
		}
	}
	select {
	case err := <-outerDone:
		t.Fatalf("the ProxyJump connection ended while a nested one was open: %v", err)
	default:
	}

	// Once the nested connection has ended, the outer one is closed.
	c.Close()
	select {
	case <-outerDone:
	case <-time.After(20 * idle):
		t.Fatal("the ProxyJump connection stayed open with no nested connection")
	}
}
