package ssh

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/gateway"
)

func TestCertAuth(t *testing.T) {
	e := newEnv(t, nil)
	otherCA := newSigner(t)
	tests := []struct {
		name string
		spec certSpec
		ok   bool
	}{
		{"valid principal", certSpec{principals: []string{"user:alice"}}, true},
		{"key id without principals", certSpec{keyID: "user:alice"}, true},
		{"machine", certSpec{principals: []string{"machine:ci"}}, true},
		{"other CA", certSpec{principals: []string{"user:alice"}, ca: otherCA}, false},
		{"expired", certSpec{principals: []string{"user:alice"}, after: time.Now().Add(-2 * time.Hour), before: time.Now().Add(-time.Hour)}, false},
		{"not yet valid", certSpec{principals: []string{"user:alice"}, after: time.Now().Add(time.Hour)}, false},
		{"host certificate", certSpec{principals: []string{"user:alice"}, certType: gossh.HostCert}, false},
		{"no warder principal", certSpec{principals: []string{"alice"}, keyID: "user:alice"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			signer, _ := e.cert(tt.spec)
			c, err := e.dialWith("web1", signer)
			if c != nil {
				c.Close()
			}
			if (err == nil) != tt.ok {
				t.Fatalf("dial: %v, want ok=%v", err, tt.ok)
			}
		})
	}
	t.Run("plain key", func(t *testing.T) {
		c, err := e.dialWith("web1", newSigner(t))
		if err == nil {
			c.Close()
			t.Fatal("a plain key was accepted")
		}
	})
}

func TestExec(t *testing.T) {
	e := newEnv(t, nil)
	c := e.mustDial("web1")

	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Output("echo hi")
	if err != nil || string(out) != "hi\n" {
		t.Fatalf("echo hi: %q, %v", out, err)
	}
	rec := e.rec.wait(t, 0)
	if st := rec.waitClosed(t); st != StatusClosed {
		t.Errorf("status %q", st)
	}
	if rec.meta.Command != "echo hi" || rec.meta.Principal != "user:alice" || rec.meta.Target != "web1" || rec.meta.Account != e.user.Username || rec.meta.PTY {
		t.Errorf("meta %+v", rec.meta)
	}
	if rec.out != 3 {
		t.Errorf("out bytes %d, want 3", rec.out)
	}
	if notes := rec.all(Note); !slices.Contains(notes, `{"event":"exit","status":0}`) {
		t.Errorf("notes %q", notes)
	}

	s, err = c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	err = s.Run("echo oops >&2; exit 3")
	var exit *gossh.ExitError
	if !errors.As(err, &exit) || exit.ExitStatus() != 3 {
		t.Fatalf("exit 3: %v", err)
	}

	// Authorization asked for connect on the account, via ssh.
	e.authz.mu.Lock()
	req := e.authz.reqs[0]
	e.authz.mu.Unlock()
	if req.Action != authz.ActionConnect || req.Resource.String() != `Account::"web1/`+e.user.Username+`"` || req.Context.Via != authz.ViaSSH || req.Principal.String() != `User::"alice"` {
		t.Errorf("authz request %+v", req)
	}
	c.Close()
	if got := e.res.waitReleased(t, 1); got[0] != StatusClosed {
		t.Errorf("released %q", got)
	}
}

func TestExplicitAccount(t *testing.T) {
	e := newEnv(t, nil)
	c := e.mustDial(e.user.Username + "@web1")
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Output("id -un")
	if err != nil || strings.TrimSpace(string(out)) != e.user.Username {
		t.Fatalf("id -un: %q, %v", out, err)
	}
}

// TestNoDefaultAccount: a user name naming only a target for which the
// resolver has no account is refused before authorization, and the user
// is told to name the account.
func TestNoDefaultAccount(t *testing.T) {
	e := newEnv(t, nil)
	e.res.mu.Lock()
	e.res.defaultAccount = ""
	e.res.mu.Unlock()
	c := e.mustDial("web1")
	_, err := c.NewSession()
	var oce *gossh.OpenChannelError
	if !errors.As(err, &oce) || oce.Reason != gossh.Prohibited || !strings.Contains(oce.Message, "name an account: ACCOUNT@web1") {
		t.Fatalf("session: %v", err)
	}
	if reqs := e.authz.requests(authz.ActionConnect); len(reqs) != 0 {
		t.Errorf("authorized %+v", reqs)
	}
	e.res.mu.Lock()
	n := len(e.res.released)
	e.res.mu.Unlock()
	if n != 0 {
		t.Error("the connection was resolved")
	}
	// Naming the account still works.
	c = e.mustDial(e.user.Username + "@web1")
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := s.Output("id -un"); err != nil || strings.TrimSpace(string(out)) != e.user.Username {
		t.Fatalf("id -un: %q, %v", out, err)
	}
}

// shell starts an interactive shell with a pty and returns its input and
// collected output.
func shell(t *testing.T, c *gossh.Client) (*gossh.Session, io.WriteCloser, *syncBuffer) {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RequestPty("xterm", 40, 120, gossh.TerminalModes{gossh.ECHO: 1}); err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	s.Stdout, s.Stderr = out, out
	in, err := s.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Shell(); err != nil {
		t.Fatal(err)
	}
	return s, in, out
}

func TestShellRules(t *testing.T) {
	e := newEnv(t, nil)
	e.setRules(
		Rule{Pattern: regexp.MustCompile(`^rm -rf`), Action: ActionBlock, Message: "ask the on-call lead\x1b[31m"},
		Rule{Pattern: regexp.MustCompile(`^touch`), Action: ActionAlert},
	)
	marker := filepath.Join(e.user.HomeDir, "x")
	if err := os.WriteFile(marker, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := e.mustDial("web1")
	s, in, out := shell(t, c)

	io.WriteString(in, "echo hel''lo\r")
	out.waitFor(t, regexp.MustCompile(`[\r\n]hello\r`))
	if err := s.WindowChange(50, 132); err != nil {
		t.Fatal(err)
	}
	// Typed with a correction, as a person would.
	io.WriteString(in, "rm -rf ~/xx\x7f\r")
	out.waitFor(t, regexp.MustCompile(`warder: command blocked by rule "\^rm -rf": ask the on-call lead \[31m\r`))
	io.WriteString(in, "touch ~/y; echo done-$((6*7))\r")
	out.waitFor(t, regexp.MustCompile(`done-42`))
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("the blocked command ran: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.user.HomeDir, "y")); err != nil {
		t.Errorf("the alerted command did not run: %v", err)
	}
	io.WriteString(in, "exit 7\r")
	var exit *gossh.ExitError
	if err := s.Wait(); !errors.As(err, &exit) || exit.ExitStatus() != 7 {
		t.Errorf("shell exit: %v", err)
	}

	rec := e.rec.wait(t, 0)
	rec.waitClosed(t)
	if !rec.meta.PTY || rec.meta.Width != 120 || rec.meta.Height != 40 {
		t.Errorf("meta %+v", rec.meta)
	}
	if !strings.Contains(rec.stream(Output), "hello") || !strings.Contains(rec.stream(Input), "echo hel''lo\r") {
		t.Errorf("output/input not recorded")
	}
	if got := rec.all(Resize); !slices.Equal(got, []string{"132x50"}) {
		t.Errorf("resizes %q", got)
	}
	notes := strings.Join(rec.all(Note), "\n")
	for _, want := range []string{`"action":"block","command":"rm -rf ~/x"`, `"action":"alert"`, `"status":7`} {
		if !strings.Contains(notes, want) {
			t.Errorf("notes lack %s:\n%s", want, notes)
		}
	}
	if evs := e.audit.find("ssh.command_rule"); len(evs) != 2 || evs[0].Outcome != "deny" || evs[0].Actor != "user:alice" {
		t.Errorf("audit events %+v", evs)
	}
	// The upstream password never reaches the client or the recording.
	for _, s := range []string{out.String(), rec.stream(Output), notes} {
		if strings.Contains(s, e.password) {
			t.Fatal("the upstream password was sent")
		}
	}
}

func TestExecRuleBlocked(t *testing.T) {
	e := newEnv(t, nil)
	e.setRules(Rule{Pattern: regexp.MustCompile(`rm -rf`), Action: ActionBlock, Message: "not on web1"})
	marker := filepath.Join(e.user.HomeDir, "x")
	os.WriteFile(marker, nil, 0o644)
	c := e.mustDial("web1")
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.CombinedOutput("rm -rf " + marker)
	var exit *gossh.ExitError
	if !errors.As(err, &exit) || exit.ExitStatus() != 126 || !strings.Contains(string(out), `command blocked by rule "rm -rf": not on web1`) {
		t.Fatalf("got %q, %v", out, err)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Error("the blocked command ran")
	}
	if st := e.rec.wait(t, 0).waitClosed(t); st != StatusBlocked {
		t.Errorf("status %q", st)
	}
}

func TestRealSSHClient(t *testing.T) {
	e := newEnv(t, nil)
	e.setRules(Rule{Pattern: regexp.MustCompile(`^rm -rf`), Action: ActionBlock})
	e.authz.denyAction = map[string]bool{authz.ActionPortForward: true}
	args, port := e.opensshArgs()
	marker := filepath.Join(e.user.HomeDir, "x")
	os.WriteFile(marker, nil, 0o644)

	t.Run("exec", func(t *testing.T) {
		cmd := exec.Command("ssh", append(args, "-p", port, "web1@127.0.0.1", "echo hi; exit 3")...)
		out, err := cmd.Output()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 3 || string(out) != "hi\n" {
			t.Fatalf("ssh: %q, %v", out, err)
		}
	})
	t.Run("pty", func(t *testing.T) {
		// -tt: a pty although stdin is a pipe; typed input goes through
		// the remote line discipline as from a terminal.
		cmd := exec.Command("ssh", append(args, "-tt", "-p", port, "web1@127.0.0.1")...)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		io.WriteString(stdin, "rm -rf ~/x\r")
		out.waitFor(t, regexp.MustCompile(`command blocked`))
		io.WriteString(stdin, "echo ok-$((1+1))\r")
		out.waitFor(t, regexp.MustCompile(`ok-2`))
		io.WriteString(stdin, "exit\r")
		if err := cmd.Wait(); err != nil {
			t.Errorf("ssh: %v\n%s", err, out)
		}
		if _, err := os.Stat(marker); err != nil {
			t.Error("the blocked command ran")
		}
	})
	t.Run("port forwarding refused", func(t *testing.T) {
		cmd := exec.Command("ssh", append(args, "-o", "ExitOnForwardFailure=yes", "-W", "127.0.0.1:"+strconv.Itoa(e.sshd.Port), "-p", port, "web1@127.0.0.1")...)
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "forwarding failed") {
			t.Errorf("ssh -W: %v: %s", err, out)
		}
	})
}

// randomFile writes n random bytes under dir and returns the path and
// the SHA-256.
func randomFile(t *testing.T, dir string, n int) (string, string) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	p := filepath.Join(dir, "src.bin")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return p, hex.EncodeToString(sum[:])
}

func fileSum(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func TestSFTP(t *testing.T) {
	e := newEnv(t, nil)
	args, port := e.opensshArgs()
	dir := t.TempDir()
	src, sum := randomFile(t, dir, 3<<20+17)
	batch := filepath.Join(dir, "batch")
	back := filepath.Join(dir, "back.bin")
	os.WriteFile(batch, []byte("put "+src+" up.bin\nrename up.bin up2.bin\nget up2.bin "+back+"\nrm up2.bin\n"), 0o644)
	cmd := exec.Command("sftp", append(args, "-b", batch, "-P", port, "web1@127.0.0.1")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sftp: %v\n%s", err, out)
	}
	if got := fileSum(t, back); got != sum {
		t.Errorf("downloaded file differs")
	}
	if _, err := os.Stat(filepath.Join(e.user.HomeDir, "up2.bin")); !os.IsNotExist(err) {
		t.Errorf("rm through sftp: %v", err)
	}
	rec := e.rec.wait(t, 0)
	rec.waitClosed(t)
	if rec.meta.Command != "subsystem:sftp" {
		t.Errorf("meta %+v", rec.meta)
	}
	var ops []string
	for _, f := range rec.all(File) {
		var op sftpOp
		if err := json.Unmarshal([]byte(f), &op); err != nil {
			t.Fatal(err)
		}
		ops = append(ops, op.Op+" "+filepath.Base(op.Path)+" "+filepath.Base(op.To)+" "+strconv.FormatInt(op.Read, 10)+" "+strconv.FormatInt(op.Written, 10))
	}
	want := []string{
		"open up.bin . 0 0",
		"close up.bin . 0 " + strconv.Itoa(3<<20+17),
		"rename up.bin up2.bin 0 0",
		"open up2.bin . 0 0",
		"close up2.bin . " + strconv.Itoa(3<<20+17) + " 0",
		"remove up2.bin . 0 0",
	}
	// sftp may stat or setstat in between: compare the operations above.
	var got []string
	for _, op := range ops {
		if !strings.HasPrefix(op, "setstat") {
			got = append(got, op)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("file operations:\n%s\nwant:\n%s", strings.Join(ops, "\n"), strings.Join(want, "\n"))
	}
}

func TestSCP(t *testing.T) {
	e := newEnv(t, nil)
	args, port := e.opensshArgs()
	dir := t.TempDir()
	src, sum := randomFile(t, dir, 1<<20+5)
	for _, mode := range []string{"-s", "-O"} { // SFTP protocol; legacy scp over exec
		t.Run(mode, func(t *testing.T) {
			back := filepath.Join(dir, "back"+mode)
			up := exec.Command("scp", append(args, mode, "-P", port, src, "web1@127.0.0.1:up.bin")...)
			if out, err := up.CombinedOutput(); err != nil {
				t.Fatalf("scp up: %v\n%s", err, out)
			}
			if got := fileSum(t, filepath.Join(e.user.HomeDir, "up.bin")); got != sum {
				t.Fatal("uploaded file differs")
			}
			down := exec.Command("scp", append(args, mode, "-P", port, "web1@127.0.0.1:up.bin", back)...)
			if out, err := down.CombinedOutput(); err != nil {
				t.Fatalf("scp down: %v\n%s", err, out)
			}
			if got := fileSum(t, back); got != sum {
				t.Fatal("downloaded file differs")
			}
		})
	}
}

func TestHostKeyMismatch(t *testing.T) {
	e := newEnv(t, nil)
	up := e.res.targets["web1"]
	up.HostKey = newSigner(t).PublicKey()
	e.res.targets["web1"] = up

	c := e.mustDial("web1")
	_, err := c.NewSession()
	var oce *gossh.OpenChannelError
	if !errors.As(err, &oce) || oce.Reason != gossh.Prohibited || strings.Contains(oce.Message, "host key") {
		t.Fatalf("session: %v", err)
	}
	evs := e.audit.find("ssh.host_key_mismatch")
	if len(evs) != 1 || evs[0].Resource != `Target::"web1"` || evs[0].Details["pinned"] != gossh.FingerprintSHA256(up.HostKey) {
		t.Errorf("audit %+v", evs)
	}
	if got := e.res.waitReleased(t, 1); got[0] != StatusFailed {
		t.Errorf("released %q", got)
	}
}

func TestAuthzDenied(t *testing.T) {
	e := newEnv(t, nil)
	e.authz.deny = map[string]bool{`Account::"web1/` + e.user.Username + `"`: true}
	c := e.mustDial("web1")
	if _, err := c.NewSession(); err == nil {
		t.Fatal("a denied connection opened a session")
	}
	e.res.mu.Lock()
	n := len(e.res.released)
	e.res.mu.Unlock()
	if n != 0 {
		t.Error("a denied connection was resolved")
	}
}

func TestRecordingUnavailable(t *testing.T) {
	e := newEnv(t, nil)
	e.rec.fail = errors.New("recording: storage full")
	c := e.mustDial("web1")
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := s.CombinedOutput("echo hi"); err == nil || bytes.Contains(out, []byte("hi\n")) {
		t.Fatalf("ran without a recording: %q, %v", out, err)
	}
}

func TestKill(t *testing.T) {
	e := newEnv(t, nil)
	c := e.mustDial("web1")
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

func TestExpiry(t *testing.T) {
	e := newEnv(t, nil)
	up := e.res.targets["web1"]
	up.Expires = time.Now().Add(1500 * time.Millisecond)
	e.res.targets["web1"] = up
	c := e.mustDial("web1")
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	s.Stdout, s.Stderr = out, out
	start := time.Now()
	err = s.Run("sleep 30")
	if err == nil || time.Since(start) > 10*time.Second {
		t.Fatalf("sleep 30 ended after %s: %v", time.Since(start), err)
	}
	if !strings.Contains(out.String(), "warder: "+gateway.MsgExpired) {
		t.Errorf("output %q", out)
	}
	if st := e.rec.wait(t, 0).waitClosed(t); st != StatusExpired {
		t.Errorf("status %q, want %q", st, StatusExpired)
	}
}

func TestIdleTimeout(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.IdleTimeout = 700 * time.Millisecond })
	c := e.mustDial("web1")
	s, in, out := shell(t, c)
	// Activity keeps it open.
	for i := range 4 {
		io.WriteString(in, "echo tick"+strconv.Itoa(i)+"\r")
		time.Sleep(300 * time.Millisecond)
	}
	out.waitFor(t, regexp.MustCompile(`tick3`))
	out.waitFor(t, regexp.MustCompile(`closed after 700ms without activity`))
	s.Wait()
	if st := e.rec.wait(t, 0).waitClosed(t); st != StatusIdle {
		t.Errorf("status %q", st)
	}
}

func TestServerClose(t *testing.T) {
	e := newEnv(t, nil)
	c := e.mustDial("web1")
	s, in, out := shell(t, c)
	io.WriteString(in, "echo ready\r")
	out.waitFor(t, regexp.MustCompile(`[\r\n]ready\r`))
	e.srv.Close()
	s.Wait()
	if n := e.srv.Conns(); n != 0 {
		t.Errorf("%d connections after Close", n)
	}
	if _, err := e.dial("web1"); err == nil {
		t.Error("dial after Close succeeded")
	}
}

func TestParseDestination(t *testing.T) {
	tests := []struct {
		in, target, account string
		ok                  bool
	}{
		{"web1", "web1", "", true},
		{"root@web1", "web1", "root", true},
		{"a@b@web1", "web1", "a@b", true},
		{"@web1", "", "", false},
		{"root@", "", "", false},
		{"", "", "", false},
		{"root@web/1", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			target, account, err := parseDestination(tt.in)
			if (err == nil) != tt.ok || target != tt.target || account != tt.account {
				t.Errorf("parseDestination(%q) = %q, %q, %v", tt.in, target, account, err)
			}
		})
	}
}

// TestManyShortExecs runs short commands on many connections at once, as
// automation does: every one must succeed (a quick exit once raced the
// answer to the exec request).
func TestManyShortExecs(t *testing.T) {
	e := newEnv(t, nil)
	errs := make(chan error, 40)
	for range 8 {
		go func() {
			for range 5 {
				errs <- func() error {
					c, err := e.dial("web1")
					if err != nil {
						return err
					}
					defer c.Close()
					s, err := c.NewSession()
					if err != nil {
						return err
					}
					return s.Run("true")
				}()
			}
		}()
	}
	for range 40 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
