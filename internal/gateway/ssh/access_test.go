package ssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/gateway"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/testenv"
)

// A connection applies the rules its target had when it started; a rule
// the gateway cannot apply refuses the connection.
func TestRulesFromTarget(t *testing.T) {
	e := newEnv(t, nil)
	session := func(c *gossh.Client) *gossh.Session {
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// The first channel connects upstream (a name without "@" may be a
	// ProxyJump login): from then on the connection has its rules.
	before := session(e.mustDial("web1")) // no rules yet
	e.setRules(Rule{Pattern: regexp.MustCompile(`^echo forbidden`), Action: ActionBlock, Message: "use the runbook"})
	after := session(e.mustDial("web1"))

	if out, err := before.CombinedOutput("echo forbidden"); err != nil || string(out) != "forbidden\n" {
		t.Errorf("connection from before the rule: %q, %v; want it to run", out, err)
	}
	outb, err := after.CombinedOutput("echo forbidden")
	out := string(outb)
	var exit *gossh.ExitError
	if !errors.As(err, &exit) || exit.ExitStatus() != 126 || !strings.Contains(out, `blocked by rule "^echo forbidden": use the runbook`) {
		t.Errorf("connection after the rule: %q, %v; want blocked with the rule's message", out, err)
	}

	e.setRules(Rule{Pattern: nil, Action: ActionBlock})
	c := e.mustDial("web1")
	if _, err := c.NewSession(); err == nil {
		t.Error("a connection with a rule it cannot apply opened a session")
	}
	e.setRules(Rule{Pattern: regexp.MustCompile(`x`), Action: "kill"})
	c = e.mustDial("web1")
	if _, err := c.NewSession(); err == nil {
		t.Error("a connection with an unknown rule action opened a session")
	}
}

func TestCleanMessage(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"ask the lead", "ask the lead"},
		{"red\x1b[31m alert\r\nnext", "red [31m alert  next"},
		{"\u009b2J", "2J"},
		{"bad \xff byte", "bad ? byte"},
		{strings.Repeat("é", 150), strings.Repeat("é", 100) + "…"},
	} {
		if got := cleanMessage(tc.in); got != tc.want {
			t.Errorf("cleanMessage(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// waitEnded waits up to within for s to end.
func waitEnded(t *testing.T, s *gossh.Session, within time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Wait() }()
	select {
	case <-done:
	case <-time.After(within):
		t.Fatalf("the session did not end within %s", within)
	}
}

// A policy removed (or a grant revoked) ends the live sessions it allowed
// at the next re-check, with a message, an audit event and a note.
func TestAccessWithdrawn(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RecheckInterval = 50 * time.Millisecond })
	c := e.mustDial("web1")
	s, in, out := shell(t, c)
	io.WriteString(in, "echo ready\r")
	out.waitFor(t, regexp.MustCompile(`[\r\n]ready\r`))
	time.Sleep(200 * time.Millisecond) // re-checks that allow change nothing
	io.WriteString(in, "echo still-here\r")
	out.waitFor(t, regexp.MustCompile(`[\r\n]still-here\r`))

	e.authz.set(func(a *fakeAuthz) { a.deny = map[string]bool{`Account::"web1/` + e.user.Username + `"`: true} })
	out.waitFor(t, regexp.MustCompile(regexp.QuoteMeta("warder: "+gateway.MsgWithdrawn)))
	waitEnded(t, s, 5*time.Second)
	rec := e.rec.wait(t, 0)
	if st := rec.waitClosed(t); st != StatusKilled {
		t.Errorf("status %q, want %q", st, StatusKilled)
	}
	if notes := strings.Join(rec.all(Note), "\n"); !strings.Contains(notes, `"event":"ended","status":"killed","message":"`+gateway.MsgWithdrawn) {
		t.Errorf("notes lack the end:\n%s", notes)
	}
	if evs := e.audit.find("ssh.access_ended"); len(evs) != 1 || evs[0].Details["reason"] != gateway.MsgWithdrawn || evs[0].Actor != "user:alice" {
		t.Errorf("audit %+v", evs)
	}
	if got := e.res.waitReleased(t, 1); got[0] != StatusKilled {
		t.Errorf("released %q", got)
	}
}

// A connection allowed only by just-in-time grants ends when they expire
// (Decision.NotAfter), even when its lease lasts longer.
func TestGrantExpiry(t *testing.T) {
	e := newEnv(t, nil)
	e.authz.notAfter = time.Now().Add(1500 * time.Millisecond)
	up := e.res.targets["web1"]
	up.Expires = time.Now().Add(time.Hour)
	e.res.targets["web1"] = up
	c := e.mustDial("web1")
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	s.Stdout, s.Stderr = out, out
	start := time.Now()
	if err := s.Run("sleep 30"); err == nil || time.Since(start) > 10*time.Second {
		t.Fatalf("sleep 30 ended after %s: %v", time.Since(start), err)
	}
	if time.Since(start) < time.Second {
		t.Errorf("the session ended after %s, before the grant expired", time.Since(start))
	}
	if !strings.Contains(out.String(), "warder: "+gateway.MsgExpired) {
		t.Errorf("output %q", out)
	}
	if st := e.rec.wait(t, 0).waitClosed(t); st != StatusExpired {
		t.Errorf("status %q, want %q", st, StatusExpired)
	}
}

// A disabled principal is refused at connect, even with a valid
// certificate, and its live connections end at the next re-check.
func TestPrincipalDisabled(t *testing.T) {
	var disabled atomic.Bool
	e := newEnv(t, func(c *Config) {
		c.RecheckInterval = 50 * time.Millisecond
		c.PrincipalActive = func(_ context.Context, p identity.Principal) (bool, error) {
			return !(p.Name == "alice" && disabled.Load()), nil
		}
	})
	c := e.mustDial("web1")
	s, in, out := shell(t, c)
	io.WriteString(in, "echo ready\r")
	out.waitFor(t, regexp.MustCompile(`[\r\n]ready\r`))
	disabled.Store(true)
	out.waitFor(t, regexp.MustCompile(regexp.QuoteMeta("warder: "+gateway.MsgWithdrawn)))
	waitEnded(t, s, 5*time.Second)

	c = e.mustDial("web1")
	if _, err := c.NewSession(); err == nil {
		t.Error("a disabled principal opened a session")
	}
	if n := len(e.authz.requests(authz.ActionConnect)); n != 1 {
		t.Errorf("%d connect decisions; want 1 (a disabled principal is refused before authorization)", n)
	}
}

// A certificate bound to a login token works while the token is live;
// logout (revocation) refuses new connections and ends live ones; a
// certificate bound to no token is refused.
func TestCertificateTokenBound(t *testing.T) {
	var revoked atomic.Bool
	e := newEnv(t, func(c *Config) {
		c.RecheckInterval = 50 * time.Millisecond
		c.TokenLive = func(_ context.Context, id string) (identity.Token, error) {
			if id != "tok-1" || revoked.Load() {
				return identity.Token{}, fmt.Errorf("test: %w", identity.ErrBadToken)
			}
			return identity.Token{ID: id}, nil
		}
	})
	bound, _ := e.cert(certSpec{principals: []string{"user:alice"}, token: "tok-1"})
	unbound, _ := e.cert(certSpec{principals: []string{"user:alice"}})
	if c, err := e.dialWith("web1", unbound); err == nil {
		c.Close()
		t.Error("a certificate bound to no token was accepted")
	}
	c, err := e.dialWith("web1", bound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, in, out := shell(t, c)
	io.WriteString(in, "echo ready\r")
	out.waitFor(t, regexp.MustCompile(`[\r\n]ready\r`))
	revoked.Store(true)
	out.waitFor(t, regexp.MustCompile(regexp.QuoteMeta("warder: "+gateway.MsgWithdrawn)))
	waitEnded(t, s, 5*time.Second)
	c2, err := e.dialWith("web1", bound)
	if err == nil {
		defer c2.Close()
		if _, err := c2.NewSession(); err == nil {
			t.Error("a session opened after logout")
		}
	}
}

// Re-checks that keep failing end the session: access that cannot be
// confirmed is treated as withdrawn.
func TestRecheckFailsClosed(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RecheckInterval = 30 * time.Millisecond })
	c := e.mustDial("web1")
	s, in, out := shell(t, c)
	io.WriteString(in, "echo ready\r")
	out.waitFor(t, regexp.MustCompile(`[\r\n]ready\r`))
	e.authz.set(func(a *fakeAuthz) { a.checkErr = errors.New("authz: policies could not be reloaded") })
	out.waitFor(t, regexp.MustCompile(regexp.QuoteMeta("warder: "+gateway.MsgUnchecked)))
	waitEnded(t, s, 5*time.Second)
}

// echoes reports whether conn echoes a line.
func echoes(conn net.Conn) bool {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, "ping\n"); err != nil {
		return false
	}
	buf := make([]byte, 5)
	_, err := io.ReadFull(conn, buf)
	return err == nil && string(buf) == "ping\n"
}

// Port forwarding is decided per request by the policy engine (action
// port_forward, audited with direction and destination): refused when no
// policy permits it, relayed through the target when one does.
func TestPortForwardPolicy(t *testing.T) {
	e := newEnvSSHD(t, testenv.SSHDOptions{AllowTCPForwarding: true}, nil)
	echo := testenv.EchoServer(t)
	_, p, _ := net.SplitHostPort(echo)
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		t.Fatal(err)
	}
	echoPort := uint16(n)
	account := `Account::"web1/` + e.user.Username + `"`

	t.Run("refused", func(t *testing.T) {
		e.authz.set(func(a *fakeAuthz) { a.denyAction = map[string]bool{authz.ActionPortForward: true} })
		c := e.mustDial("web1")
		if conn, err := c.Dial("tcp", echo); err == nil {
			conn.Close()
			t.Error("direct-tcpip was allowed")
		}
		if ln, err := c.Listen("tcp", "127.0.0.1:0"); err == nil {
			ln.Close()
			t.Error("tcpip-forward was allowed")
		}
		reqs := e.authz.requests(authz.ActionPortForward)
		if len(reqs) != 2 || reqs[0].Resource.String() != account || reqs[0].Context.Via != authz.ViaSSH ||
			reqs[0].Details["forward"] != "local" || reqs[0].Details["destination"] != echo ||
			reqs[1].Details["forward"] != "remote" || reqs[1].Details["destination"] != "127.0.0.1:0" {
			t.Errorf("port_forward requests %+v", reqs)
		}
		// The policies see the destination as context.forward.
		for i, want := range []authz.Forward{
			{Direction: authz.ForwardLocal, Host: "127.0.0.1", Port: echoPort},
			{Direction: authz.ForwardRemote, Host: "127.0.0.1", Port: 0},
		} {
			if i < len(reqs) && (reqs[i].Context.Forward == nil || *reqs[i].Context.Forward != want) {
				t.Errorf("request %d: context forward %+v, want %+v", i, reqs[i].Context.Forward, want)
			}
		}
		if f := e.authz.requests(authz.ActionConnect)[0].Context.Forward; f != nil {
			t.Errorf("connect request with a forward %+v", f)
		}
		// The connection still works.
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		if out, err := s.Output("echo ok"); err != nil || string(out) != "ok\n" {
			t.Fatalf("%q %v", out, err)
		}
	})
	t.Run("allowed", func(t *testing.T) {
		e.authz.set(func(a *fakeAuthz) { a.denyAction = nil })
		c := e.mustDial("web1")
		conn, err := c.Dial("tcp", echo)
		if err != nil {
			t.Fatalf("direct-tcpip: %v", err)
		}
		if !echoes(conn) {
			t.Error("no echo through a local forward")
		}
		ln, err := c.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("tcpip-forward: %v", err)
		}
		defer ln.Close()
		go func() {
			if fc, err := ln.Accept(); err == nil {
				io.Copy(fc, fc)
				fc.Close()
			}
		}()
		// The target listens on the same loopback as the test.
		back, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("dial the remote forward: %v", err)
		}
		if !echoes(back) {
			t.Error("no echo through a remote forward")
		}
	})
	t.Run("no such port", func(t *testing.T) {
		e.authz.set(func(a *fakeAuthz) { a.denyAction = nil })
		c := e.mustDial("web1")
		before := len(e.authz.requests(authz.ActionPortForward))
		local := gossh.Marshal(struct {
			Host     string
			Port     uint32
			OrigHost string
			OrigPort uint32
		}{"127.0.0.1", 1<<16 + uint32(echoPort), "127.0.0.1", 1})
		if ch, _, err := c.OpenChannel("direct-tcpip", local); err == nil {
			ch.Close()
			t.Error("direct-tcpip to a port above 65535 was allowed")
		}
		remote := gossh.Marshal(struct {
			Addr string
			Port uint32
		}{"127.0.0.1", 1 << 16})
		if ok, _, err := c.SendRequest("tcpip-forward", true, remote); ok || err != nil {
			t.Errorf("tcpip-forward on a port above 65535: %v %v", ok, err)
		}
		if after := len(e.authz.requests(authz.ActionPortForward)); after != before {
			t.Errorf("%d port_forward requests for ports above 65535, want none", after-before)
		}
		// A host the policy could not see as the target would dial it is
		// refused without a decision too; every such refusal is audited.
		for _, host := range []string{strings.Repeat("a", 256), "127.0.0.1\x00.evil", "db\xff", "db\n"} {
			local := gossh.Marshal(struct {
				Host     string
				Port     uint32
				OrigHost string
				OrigPort uint32
			}{host, uint32(echoPort), "127.0.0.1", 1})
			if ch, _, err := c.OpenChannel("direct-tcpip", local); err == nil {
				ch.Close()
				t.Errorf("direct-tcpip to %q was allowed", host)
			}
		}
		if after := len(e.authz.requests(authz.ActionPortForward)); after != before {
			t.Errorf("%d port_forward requests for malformed destinations, want none", after-before)
		}
		if n := len(e.audit.find("ssh.port_forward_refused")); n != 6 {
			t.Errorf("%d ssh.port_forward_refused events, want 6 (2 ports, 4 hosts)", n)
		}
	})
	t.Run("openssh -L", func(t *testing.T) {
		args, port := e.opensshArgs()
		for _, allow := range []bool{false, true} {
			e.authz.set(func(a *fakeAuthz) { a.denyAction = map[string]bool{authz.ActionPortForward: !allow} })
			local := freePort(t)
			cmd := exec.Command("ssh", append(args, "-N", "-L", fmt.Sprintf("127.0.0.1:%d:%s", local, echo), "-p", port, "web1@127.0.0.1")...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var conn net.Conn
			for deadline := time.Now().Add(10 * time.Second); conn == nil; time.Sleep(20 * time.Millisecond) {
				conn, _ = net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", local))
				if time.Now().After(deadline) {
					t.Fatal("ssh -L did not listen")
				}
			}
			if got := echoes(conn); got != allow {
				t.Errorf("policy allows: %v; echo through ssh -L: %v", allow, got)
			}
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// A client that sends garbage, or nothing, instead of an SSH handshake is
// dropped: garbage is audited (without repeating it), a bare connect only
// logged; the gateway keeps serving.
func TestGarbageHandshake(t *testing.T) {
	e := newEnv(t, nil)
	c := e.mustDial("web1")
	s, in, out := shell(t, c)
	io.WriteString(in, "echo ready\r")
	out.waitFor(t, regexp.MustCompile(`[\r\n]ready\r`))

	for _, garbage := range []string{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "SSH-2.0-x\r\n" + strings.Repeat("\x00\xff", 3000), ""} {
		nc, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(nc, garbage)
		if tc, ok := nc.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, nc) // until the gateway closes it
		nc.Close()
	}
	var evs []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		evs = evs[:0]
		for _, ev := range e.audit.find("ssh.handshake_failed") {
			evs = append(evs, ev.Outcome+" "+ev.Details["reason"]+" "+ev.Details["bytes"])
			if strings.Contains(fmt.Sprint(ev.Details), "HTTP") || strings.Contains(fmt.Sprint(ev.Details), "\x00") {
				t.Errorf("the audit event repeats what the client sent: %+v", ev)
			}
		}
		if len(evs) == 2 {
			break
		}
	}
	if len(evs) != 2 || !strings.HasPrefix(evs[0], "failure ") || strings.HasSuffix(evs[0], " 0") {
		t.Errorf("handshake_failed events %q; want 2 (none for the bare connect)", evs)
	}

	io.WriteString(in, "echo still-serving\r")
	out.waitFor(t, regexp.MustCompile(`[\r\n]still-serving\r`))
	io.WriteString(in, "exit\r")
	waitEnded(t, s, 5*time.Second)
	if c2, err := e.dial("web1"); err != nil {
		t.Errorf("a new connection after the garbage: %v", err)
	} else {
		c2.Close()
	}
}

func TestHandshakeAuditLimit(t *testing.T) {
	var h handshakeAudit
	now := time.Unix(1000, 0)
	for i := range gateway.AuditBurst {
		if ok, _ := h.Admit(now); !ok {
			t.Fatalf("event %d refused within the burst", i)
		}
	}
	for range 5 {
		if ok, _ := h.Admit(now.Add(time.Second)); ok {
			t.Fatal("an event past the burst was admitted")
		}
	}
	if ok, suppressed := h.Admit(now.Add(handshakeAuditWindow)); !ok || suppressed != 5 {
		t.Errorf("next window: ok=%v suppressed=%d; want true, 5", ok, suppressed)
	}
}
