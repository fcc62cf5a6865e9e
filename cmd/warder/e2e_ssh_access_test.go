package main

// The SSH gateway's controls end to end, through `warder ssh` and the
// system's OpenSSH: command rules from the target, sessions that end when
// access ends, and port forwarding decided by policy.

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/testenv"
)

// sshFixture is a dev server with the SSH gateway in front of a real sshd,
// target web1 and its account user (logged in to by password from the
// vault), re-checking live sessions every second.
type sshFixture struct {
	p     *proc
	dir   string
	admin []string // the CLI environment of the admin
	sshd  *testenv.SSHDServer
	user  *user.User
}

func newSSHFixture(t *testing.T, opts testenv.SSHDOptions) *sshFixture {
	t.Helper()
	sshd := testenv.SSHDWith(t, opts) // skips unless root
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("no OpenSSH client")
	}
	const password = "Correct-Horse-9-battery"
	f := &sshFixture{sshd: sshd, user: testenv.LinuxUser(t, password), dir: filepath.Join(t.TempDir(), "dev")}
	f.p = start(t, "dev", "--data-dir", f.dir, "--listen", "127.0.0.1:0", "--ssh-listen", "127.0.0.1:0",
		"--session-recheck-interval", "1s")
	for deadline := time.Now().Add(10 * time.Second); !sshAddrPattern.MatchString(f.p.stderr.String()); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the dev server did not report its SSH gateway address\nstderr:\n%s", f.p.stderr)
		}
	}
	token, _ := os.ReadFile(filepath.Join(f.dir, "admin.token"))
	f.admin = append(f.base(), "WARDER_TOKEN="+strings.TrimSpace(string(token)), "WARDER_CONFIG_DIR="+filepath.Join(t.TempDir(), "admin"))
	mustOK(t, run(t, f.admin, "", "target", "add", "linux", "web1", "--host", sshd.Host, "--port", fmt.Sprint(sshd.Port),
		"--option", "host_key="+sshd.HostKey), "target add")
	mustOK(t, run(t, f.admin, password+"\n", "account", "add", "web1/"+f.user.Username, "--password-stdin", "--no-rotate-on-checkin"), "account add")
	return f
}

func (f *sshFixture) base() []string {
	return []string{"WARDER_ADDR=" + f.p.url, "WARDER_CACERT=" + filepath.Join(f.dir, "ca.pem")}
}

// login creates user name and returns a CLI environment logged in as it.
func (f *sshFixture) login(t *testing.T, name string) []string {
	t.Helper()
	pw := name + "-long-passphrase-9"
	mustOK(t, run(t, f.admin, pw+"\n", "user", "create", name, "--password-stdin"), "create "+name)
	env := append(f.base(), "WARDER_CONFIG_DIR="+filepath.Join(t.TempDir(), name))
	mustOK(t, run(t, env, pw+"\n", "login", "--user", name, "--password-stdin"), name+" login")
	return env
}

// policy stores a policy as the admin.
func (f *sshFixture) policy(t *testing.T, name, text string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".cedar")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	mustOK(t, run(t, f.admin, "", "policy", "put", name, path), "policy put "+name)
}

// runInBackground runs `warder args...` with env until it exits or the test
// ends; done receives its exit error.
func runInBackground(t *testing.T, env []string, args ...string) (stderr *syncBuffer, done chan error) {
	t.Helper()
	cmd := exec.Command(warderBin, args...)
	cmd.Env = append(cleanEnv(), env...)
	stderr, done = &syncBuffer{}, make(chan error, 1)
	cmd.Stdout, cmd.Stderr = io.Discard, stderr
	if _, err := cmd.StdinPipe(); err != nil { // open and silent
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	return stderr, done
}

// interactive runs `warder ssh dest` under a pseudo-terminal (script(1)),
// so that ssh asks for a pty as it does for a person at a terminal.
func interactive(t *testing.T, env []string, dest string) (in io.Writer, out *syncBuffer, done chan error) {
	t.Helper()
	if _, err := exec.LookPath("script"); err != nil {
		t.Skip("no script(1) to give ssh a terminal")
	}
	cmd := exec.Command("script", "-qfec", warderBin+" ssh "+dest, "/dev/null")
	cmd.Env = append(cleanEnv(), append(env, "TERM=xterm")...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, done = &syncBuffer{}, make(chan error, 1)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	return stdin, out, done
}

func waitOutput(t *testing.T, out *syncBuffer, re *regexp.Regexp) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !re.MatchString(out.String()); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("output never matched %s:\n%q", re, out.String())
		}
	}
}

func waitExit(t *testing.T, done chan error, within time.Duration) error {
	t.Helper()
	select {
	case err := <-done:
		done <- err // for the cleanup
		return err
	case <-time.After(within):
		t.Fatalf("the ssh client did not exit within %s", within)
		return nil
	}
}

type auditEvent struct {
	Actor    string            `json:"actor"`
	Action   string            `json:"action"`
	Resource string            `json:"resource"`
	Outcome  string            `json:"outcome"`
	Details  map[string]string `json:"details"`
}

func (f *sshFixture) audit(t *testing.T, action string) []auditEvent {
	t.Helper()
	return decodeJSON[[]auditEvent](t, mustOK(t, run(t, f.admin, "", "audit", "ls", "--action", action, "--format", "json"), "audit ls").stdout)
}

type sessionInfo struct {
	ID        string `json:"id"`
	Principal string `json:"principal"`
	Command   string `json:"command"`
	Status    string `json:"status"`
}

// waitSession waits until principal has an active session and returns it.
func (f *sshFixture) waitSession(t *testing.T, principal string) sessionInfo {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		ss := decodeJSON[[]sessionInfo](t, mustOK(t, run(t, f.admin, "", "session", "ls", "--active", "--principal", principal, "--format", "json"), "session ls").stdout)
		if len(ss) > 0 {
			return ss[0]
		}
	}
	t.Fatalf("no active session of %s", principal)
	return sessionInfo{}
}

// sessionStatus returns the status of session id.
func (f *sshFixture) sessionStatus(t *testing.T, id string) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		ss := decodeJSON[[]sessionInfo](t, mustOK(t, run(t, f.admin, "", "session", "ls", "--format", "json"), "session ls").stdout)
		for _, s := range ss {
			if s.ID == id && (s.Status != "active" || time.Now().After(deadline)) {
				return s.Status
			}
		}
		if time.Now().After(deadline) {
			return ""
		}
	}
}

// Rules set on the target with `warder target rule add` apply to new
// sessions: a blocked exec command and a blocked interactive line are not
// run and the user is told the rule and its message; an alert rule lets
// the command run and is audited; the interactive session goes on.
func TestSSHTargetRules(t *testing.T) {
	f := newSSHFixture(t, testenv.SSHDOptions{})
	u := f.user
	mustOK(t, run(t, f.admin, "", "target", "rule", "add", "web1", "--pattern", "^rm -rf /", "--action", "block",
		"--message", "not on web1, ask the lead"), "rule add block")
	mustOK(t, run(t, f.admin, "", "target", "rule", "add", "web1", "--pattern", "^touch ", "--action", "alert"), "rule add alert")
	marker := filepath.Join(u.HomeDir, "marker")
	if err := os.WriteFile(marker, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}

	r := run(t, f.admin, "", "ssh", u.Username+"@web1", "--", "rm", "-rf", marker)
	if r.code != 126 || !strings.Contains(r.stderr, `warder: command blocked by rule "^rm -rf /": not on web1, ask the lead`) {
		t.Errorf("blocked exec: exit %d, stderr %q; want 126 and the rule's message", r.code, r.stderr)
	}

	in, out, done := interactive(t, f.admin, u.Username+"@web1")
	io.WriteString(in, "echo ready-$((1+1))\r")
	waitOutput(t, out, regexp.MustCompile(`ready-2`))
	io.WriteString(in, "rm -rf "+marker+"\r")
	waitOutput(t, out, regexp.MustCompile(`warder: command blocked by rule "\^rm -rf /": not on web1, ask the lead`))
	io.WriteString(in, "touch ~/alerted; echo done-$((6*7))\r")
	waitOutput(t, out, regexp.MustCompile(`done-42`))
	io.WriteString(in, "exit\r")
	if err := waitExit(t, done, 15*time.Second); err != nil {
		t.Errorf("interactive session: %v\n%s", err, out)
	}

	if _, err := os.Stat(marker); err != nil {
		t.Errorf("a blocked command ran: %v", err)
	}
	if _, err := os.Stat(filepath.Join(u.HomeDir, "alerted")); err != nil {
		t.Errorf("the alerted command did not run: %v", err)
	}
	var deny, allow int
	for _, ev := range f.audit(t, "ssh.command_rule") {
		switch {
		case ev.Outcome == "deny" && ev.Details["rule"] == "^rm -rf /" && strings.HasPrefix(ev.Details["command"], "rm -rf "+marker):
			deny++
		case ev.Outcome == "allow" && ev.Details["rule"] == "^touch " && ev.Details["rule_action"] == "alert":
			allow++
		}
		if ev.Actor != "user:admin" {
			t.Errorf("rule event of %s, want user:admin", ev.Actor)
		}
	}
	if deny != 2 || allow != 1 {
		t.Errorf("ssh.command_rule events: %d blocks (want 2: exec and interactive), %d alerts (want 1)", deny, allow)
	}
}

// A live session ends, with a message, when its user is disabled, and when
// the just-in-time grant that allowed it is revoked.
func TestSSHSessionsEndWithAccess(t *testing.T) {
	f := newSSHFixture(t, testenv.SSHDOptions{})
	dest := f.user.Username + "@web1"

	t.Run("user disabled", func(t *testing.T) {
		alice := f.login(t, "alice")
		f.policy(t, "alice-web1", `permit(principal == User::"alice", action == Action::"connect", resource in Target::"web1");`)
		stderr, done := runInBackground(t, alice, "ssh", dest, "--", "sleep 120")
		s := f.waitSession(t, "user:alice")
		start := time.Now()
		mustOK(t, run(t, f.admin, "", "user", "disable", "alice"), "user disable")
		waitExit(t, done, 10*time.Second)
		if !strings.Contains(stderr.String(), "warder: your Warder account was disabled") {
			t.Errorf("ssh stderr %q; want the reason", stderr)
		}
		t.Logf("the session ended %s after the user was disabled", time.Since(start).Round(time.Millisecond))
		if st := f.sessionStatus(t, s.ID); st != "killed" {
			t.Errorf("session status %q, want killed", st)
		}
		kills := f.audit(t, "session.kill")
		if len(kills) != 1 || kills[0].Resource != "session:"+s.ID || kills[0].Actor != "system:lifecycle" {
			t.Errorf("session.kill events %+v", kills)
		}
	})

	t.Run("grant revoked", func(t *testing.T) {
		bob := f.login(t, "bob")
		tmpl := filepath.Join(t.TempDir(), "jit.cedar")
		os.WriteFile(tmpl, []byte(`permit(principal == ?principal, action == Action::"connect", resource in Target::"web1");`), 0o600)
		mustOK(t, run(t, f.admin, "", "role", "create", "web1-jit", "--policy", tmpl), "role create")
		mustOK(t, run(t, f.admin, "", "role", "eligible", "web1-jit", "--user", "bob", "--approvals", "0", "--max-ttl", "1h"), "eligible")
		if r := run(t, bob, "", "ssh", dest, "--", "true"); r.code == 0 {
			t.Fatal("bob connected without a grant")
		}
		type request struct {
			Status  string `json:"status"`
			GrantID string `json:"grant_id"`
		}
		req := decodeJSON[request](t, mustOK(t, run(t, bob, "", "request", "create", "--role", "web1-jit", "--ttl", "30m",
			"--reason", "maintenance", "--format", "json"), "request").stdout)
		if req.GrantID == "" {
			t.Fatalf("self-activated request %+v has no grant", req)
		}
		stderr, done := runInBackground(t, bob, "ssh", dest, "--", "sleep 120")
		s := f.waitSession(t, "user:bob")
		start := time.Now()
		mustOK(t, run(t, f.admin, "", "grant", "revoke", req.GrantID, "--reason", "done early"), "grant revoke")
		waitExit(t, done, 15*time.Second)
		if !strings.Contains(stderr.String(), "warder: your access to this target was withdrawn") {
			t.Errorf("ssh stderr %q; want the reason", stderr)
		}
		t.Logf("the session ended %s after the grant was revoked (re-check every 1s)", time.Since(start).Round(time.Millisecond))
		if st := f.sessionStatus(t, s.ID); st != "killed" {
			t.Errorf("session status %q, want killed", st)
		}
		if evs := f.audit(t, "ssh.access_ended"); len(evs) != 1 || evs[0].Actor != "user:bob" {
			t.Errorf("ssh.access_ended events %+v", evs)
		}
	})
}

// Port forwarding through the gateway needs a policy for action
// port_forward: a real `ssh -L` is refused without one and relays to a
// loopback listener on the target's side with one; a policy that names
// the destination (context.forward) lets only that destination through.
// Every decision is audited, and `policy check --context` takes the
// destination too.
func TestSSHPortForwardPolicy(t *testing.T) {
	f := newSSHFixture(t, testenv.SSHDOptions{AllowTCPForwarding: true})
	carol := f.login(t, "carol")
	f.policy(t, "carol-web1", `permit(principal == User::"carol", action == Action::"connect", resource in Target::"web1");`)
	conf := mustOK(t, run(t, carol, "", "ssh-config"), "ssh-config").stdout
	confPath := filepath.Join(t.TempDir(), "ssh_config")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}

	// Two services only the target's side reaches: db is allowed, other
	// is not.
	db, other := testenv.EchoServer(t), testenv.EchoServer(t)

	forward := func(dest string) bool {
		t.Helper()
		probe, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		local := probe.Addr().String()
		probe.Close()
		cmd := exec.Command("ssh", "-F", confPath, "-o", "BatchMode=yes", "-N", "-L", local+":"+dest,
			"-l", f.user.Username+"@web1", "warder")
		cmd.Env = cleanEnv()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		var c net.Conn
		for deadline := time.Now().Add(15 * time.Second); c == nil; time.Sleep(50 * time.Millisecond) {
			c, _ = net.Dial("tcp", local)
			if time.Now().After(deadline) {
				t.Fatal("ssh -L did not listen")
			}
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "ping\n")
		buf := make([]byte, 5)
		_, err = io.ReadFull(c, buf)
		return err == nil && string(buf) == "ping\n"
	}

	if forward(db) {
		t.Fatal("ssh -L relayed without a port_forward policy")
	}
	_, dbPort, _ := net.SplitHostPort(db)
	f.policy(t, "carol-forward", fmt.Sprintf(`permit(principal == User::"carol", action == Action::"port_forward", resource in Target::"web1")
when { context.via == "ssh" && context has forward && context.forward.direction == "local" &&
  context.forward.host == "127.0.0.1" && context.forward.port == %s };`, dbPort))
	if !forward(db) {
		t.Fatal("ssh -L to the allowed port did not relay")
	}
	if forward(other) {
		t.Fatal("ssh -L relayed to a port the policy does not allow")
	}
	got := map[string]int{} // "outcome destination": decisions
	for _, ev := range f.audit(t, "authz.decide") {
		if ev.Details["action"] != "port_forward" {
			continue
		}
		if ev.Actor != "user:carol" || ev.Details["forward"] != "local" || ev.Details["via"] != "ssh" {
			t.Errorf("port_forward decision %+v", ev)
		}
		got[ev.Outcome+" "+ev.Details["destination"]]++
	}
	if len(got) != 3 || got["deny "+db] == 0 || got["allow "+db] == 0 || got["deny "+other] == 0 {
		t.Errorf("port_forward decisions %v; want %s denied, then allowed, and %s denied", got, db, other)
	}

	check := func(dest string) string {
		t.Helper()
		host, port, _ := net.SplitHostPort(dest)
		r := mustOK(t, run(t, f.admin, "", "policy", "check", "--principal", `User::"carol"`, "--action", "port_forward",
			"--resource", `Account::"web1/`+f.user.Username+`"`, "--format", "json",
			"--context", fmt.Sprintf(`{"via":"ssh","forward":{"direction":"local","host":%q,"port":%s}}`, host, port)), "policy check")
		d, _ := decodeJSON[map[string]any](t, r.stdout)["decision"].(string)
		return d
	}
	if d := check(db); d != "allow" {
		t.Errorf("policy check to %s: %s, want allow", db, d)
	}
	if d := check(other); d != "deny" {
		t.Errorf("policy check to %s: %s, want deny", other, d)
	}
}
