package linux

import (
	"context"
	"errors"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/testenv"
)

// noLeaks fails t when goroutines started during t outlive it. Call it
// first, so that its check runs after every other cleanup (sshd's too).
func noLeaks(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Errorf("goroutines: %d before the test, %d after:\n%s", before, runtime.NumGoroutine(), buf[:n])
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func linuxTarget(s *testenv.SSHDServer, become string) connector.Target {
	opts := map[string]string{"host_key": s.HostKey}
	if become != "" {
		opts["become"] = become
	}
	return connector.Target{Kind: "linux", Name: "test", Host: s.Host, Port: s.Port, Options: opts, Timeout: 5 * time.Second}
}

func pw(s string) connector.Credential {
	return connector.Credential{Kind: connector.Password, Secret: []byte(s)}
}

func key(private []byte, public string) connector.Credential {
	return connector.Credential{Kind: connector.SSHKey, Secret: private, PublicKey: public}
}

func rootLogin(s *testenv.SSHDServer) *connector.Login {
	return &connector.Login{Username: "root", Credential: key(s.RootKey, s.RootPublicKey)}
}

// newConnector returns a connector that fails t if a command line it sends
// holds one of secrets.
func newConnector(t *testing.T, secrets ...string) *Connector {
	c := New()
	var mu sync.Mutex // guards secrets against concurrent commands
	c.sent = func(cmd string) {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range secrets {
			if strings.Contains(cmd, s) {
				t.Errorf("a command line holds a secret: %q", cmd)
			}
		}
	}
	return c
}

func wantRejected(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, connector.ErrRejected) {
		t.Fatalf("got %v, want ErrRejected", err)
	}
}

func wantOK(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestVerifyPassword(t *testing.T) {
	noLeaks(t)
	s := testenv.SSHD(t)
	u := testenv.LinuxUser(t, "right horse")
	c, tg, ctx := New(), linuxTarget(s, ""), context.Background()

	// A refusal first: without it, a success below would prove nothing.
	wantRejected(t, c.Verify(ctx, tg, u.Username, pw("wrong horse")))
	wantRejected(t, c.Verify(ctx, tg, u.Username, pw("")))
	wantRejected(t, c.Verify(ctx, tg, "wt_nosuchuser", pw("right horse")))
	other, _ := testenv.NewSSHKey(t)
	wantRejected(t, c.Verify(ctx, tg, u.Username, key(other, "")))
	wantOK(t, c.Verify(ctx, tg, u.Username, pw("right horse")))
}

func TestVerifyCannotTell(t *testing.T) {
	noLeaks(t)
	s := testenv.SSHD(t)
	u := testenv.LinuxUser(t, "pw")
	c := New()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := l.Addr().(*net.TCPAddr).Port
	l.Close()

	// A server that accepts and never speaks: the login must time out.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	var wg sync.WaitGroup // the acceptor; it ends when silent is closed
	wg.Add(1)
	go func() {
		defer wg.Done()
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	defer wg.Wait()
	defer silent.Close()

	_, otherHostKey := testenv.NewSSHKey(t)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()

	for _, tc := range []struct {
		name   string
		ctx    context.Context
		modify func(*connector.Target)
		want   error
	}{
		{"unreachable port", context.Background(), func(tg *connector.Target) { tg.Port = closedPort }, syscall.ECONNREFUSED},
		{"host key mismatch", context.Background(), func(tg *connector.Target) { tg.Options["host_key"] = otherHostKey }, ErrHostKeyMismatch},
		{"silent server", context.Background(), func(tg *connector.Target) {
			tg.Port = silent.Addr().(*net.TCPAddr).Port
			tg.Timeout = 300 * time.Millisecond
		}, nil},
		{"canceled", canceled, func(*connector.Target) {}, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := linuxTarget(s, "")
			tc.modify(&tg)
			start := time.Now()
			err := c.Verify(tc.ctx, tg, u.Username, pw("pw"))
			if err == nil || errors.Is(err, connector.ErrRejected) {
				t.Fatalf("got %v, want an error other than ErrRejected", err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %v", d)
			}
			t.Logf("%v", err)
		})
	}
}

func TestCheckTarget(t *testing.T) {
	_, hostKey := testenv.NewSSHKey(t)
	good := func() connector.Target {
		return connector.Target{Kind: "linux", Name: "n", Host: "127.0.0.1", Port: 22, Options: map[string]string{"host_key": hostKey}}
	}
	c := New()
	if err := c.CheckTarget(good()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		modify func(*connector.Target)
	}{
		{"kind", func(tg *connector.Target) { tg.Kind = "postgres" }},
		{"no host", func(tg *connector.Target) { tg.Host = "" }},
		{"port", func(tg *connector.Target) { tg.Port = 0 }},
		{"no host key", func(tg *connector.Target) { delete(tg.Options, "host_key") }},
		{"bad host key", func(tg *connector.Target) { tg.Options["host_key"] = "ssh-ed25519 AAAA" }},
		{"two host keys", func(tg *connector.Target) { tg.Options["host_key"] = hostKey + "\n" + hostKey }},
		{"become", func(tg *connector.Target) { tg.Options["become"] = "su" }},
		{"unknown option", func(tg *connector.Target) { tg.Options["hostkey"] = hostKey }},
		{"bad host CA", func(tg *connector.Target) { delete(tg.Options, "host_key"); tg.Options["host_ca"] = "ssh-ed25519 AAAA" }},
		{"empty host CA only", func(tg *connector.Target) { delete(tg.Options, "host_key"); tg.Options["host_ca"] = " " }},
		{"ssh_auth", func(tg *connector.Target) { tg.Options["ssh_auth"] = "cert" }},
		{"empty default account", func(tg *connector.Target) { tg.Options[OptDefaultAccount] = "" }},
		{"default account not a name", func(tg *connector.Target) { tg.Options[OptDefaultAccount] = "a b" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := good()
			tc.modify(&tg)
			if err := c.CheckTarget(tg); err == nil {
				t.Error("accepted")
			}
		})
	}
}

func TestCheckTargetOptions(t *testing.T) {
	_, hostKey := testenv.NewSSHKey(t)
	_, caKey := testenv.NewSSHKey(t)
	c := New()
	for name, opts := range map[string]map[string]string{
		"host CA only":         {"host_ca": caKey},
		"host key and host CA": {"host_key": hostKey, "host_ca": caKey},
		"ssh_auth vault":       {"host_key": hostKey, "ssh_auth": SSHAuthVault},
		"ssh_auth certificate": {"host_key": hostKey, "ssh_auth": SSHAuthCertificate},
		"default account":      {"host_key": hostKey, OptDefaultAccount: "deploy"},
	} {
		if err := c.CheckTarget(connector.Target{Kind: "linux", Name: "n", Host: "127.0.0.1", Port: 22, Options: opts}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestVerifyHostCA reaches an sshd whose host key is certified by the
// target's host_ca, with no host_key pinned.
func TestVerifyHostCA(t *testing.T) {
	noLeaks(t)
	caPriv, caPub := testenv.NewSSHKey(t)
	ca, err := ssh.ParsePrivateKey(caPriv)
	if err != nil {
		t.Fatal(err)
	}
	s := testenv.SSHDWith(t, testenv.SSHDOptions{HostCA: ca})
	u := testenv.LinuxUser(t, "pw")
	c, ctx := New(), context.Background()
	tg := connector.Target{Kind: "linux", Name: "n", Host: s.Host, Port: s.Port, Options: map[string]string{"host_ca": caPub}, Timeout: 5 * time.Second}
	wantOK(t, c.Verify(ctx, tg, u.Username, pw("pw")))

	_, otherCA := testenv.NewSSHKey(t)
	tg.Options["host_ca"] = otherCA
	if err := c.Verify(ctx, tg, u.Username, pw("pw")); !errors.Is(err, ErrHostKeyMismatch) {
		t.Errorf("other host CA: %v, want ErrHostKeyMismatch", err)
	}
}

func TestChangePassword(t *testing.T) {
	noLeaks(t)
	s := testenv.SSHD(t)
	ctx := context.Background()
	passwords := []struct{ name, pw string }{
		{"plain", "Plain-password-1"},
		{"quotes and spaces", `it's a "quoted" pass phrase `},
		{"shell characters", `$HOME $(id) ` + "`id`" + ` \back\slash; | & > *`},
		{"colons", "a:b::c:"},
		{"unicode", "pässwörd €"},
	}
	var secrets []string
	for _, p := range passwords {
		secrets = append(secrets, p.pw)
	}
	sudoer := testenv.SudoUser(t, "sudoer password")
	for _, m := range []struct {
		name   string
		become string
		as     *connector.Login
	}{
		{"root", "", rootLogin(s)},
		{"sudo", "sudo", &connector.Login{Username: sudoer.Username, Credential: pw("sudoer password")}},
	} {
		t.Run(m.name, func(t *testing.T) {
			c, tg := newConnector(t, secrets...), linuxTarget(s, m.become)
			u := testenv.LinuxUser(t, "initial password")
			current := "initial password"
			for _, p := range passwords {
				t.Run(p.name, func(t *testing.T) {
					wantRejected(t, c.Verify(ctx, tg, u.Username, pw(p.pw)))
					wantOK(t, c.Change(ctx, tg, connector.ChangeRequest{Username: u.Username, Next: pw(p.pw), As: m.as}))
					wantRejected(t, c.Verify(ctx, tg, u.Username, pw(current)))
					wantOK(t, c.Verify(ctx, tg, u.Username, pw(p.pw)))
					current = p.pw
				})
			}
		})
	}
	if !t.Failed() {
		log := s.Log(t)
		for _, secret := range secrets {
			if strings.Contains(log, secret) {
				t.Errorf("sshd's log holds the password %q", secret)
			}
		}
	}
}

func TestChangePasswordRefused(t *testing.T) {
	noLeaks(t)
	s := testenv.SSHD(t)
	c, ctx := New(), context.Background()
	u := testenv.LinuxUser(t, "initial")
	plain := testenv.LinuxUser(t, "plain user")
	for _, tc := range []struct {
		name         string
		username     string
		become       string
		req          connector.ChangeRequest
		wantRejected bool
		wantInError  string
	}{
		{"no management account", u.Username, "", connector.ChangeRequest{Current: ptr(pw("initial"))}, false, "management account"},
		{"wrong management password", u.Username, "", connector.ChangeRequest{As: &connector.Login{Username: plain.Username, Credential: pw("wrong")}}, true, ""},
		{"management account not root", u.Username, "", connector.ChangeRequest{As: &connector.Login{Username: plain.Username, Credential: pw("plain user")}}, false, "not root"},
		{"no sudo rights", u.Username, "sudo", connector.ChangeRequest{As: &connector.Login{Username: plain.Username, Credential: pw("plain user")}}, false, "sudo"},
		{"invalid name", "x;reboot", "", connector.ChangeRequest{As: rootLogin(s)}, false, "invalid account name"},
		{"line break", u.Username, "", connector.ChangeRequest{As: rootLogin(s), Next: pw("a\nroot:x")}, false, "line break"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := tc.req
			req.Username = tc.username
			if req.Next.Kind == "" {
				req.Next = pw("next password")
			}
			err := c.Change(ctx, linuxTarget(s, tc.become), req)
			if err == nil {
				t.Fatal("no error")
			}
			if errors.Is(err, connector.ErrRejected) != tc.wantRejected {
				t.Errorf("got %v, want rejected: %v", err, tc.wantRejected)
			}
			if !strings.Contains(err.Error(), tc.wantInError) {
				t.Errorf("got %v, want it to mention %q", err, tc.wantInError)
			}
			t.Logf("%v", err)
		})
	}
	wantOK(t, c.Verify(ctx, linuxTarget(s, ""), u.Username, pw("initial")))
}

func ptr[T any](v T) *T { return &v }

// authorizedKeys returns u's authorized_keys file, failing t unless it is
// owned by u with mode 0600.
func authorizedKeys(t *testing.T, u *user.User) string {
	t.Helper()
	path := filepath.Join(u.HomeDir, ".ssh", "authorized_keys")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if strconv.Itoa(int(st.Uid)) != u.Uid || strconv.Itoa(int(st.Gid)) != u.Gid || fi.Mode().Perm() != 0o600 {
		t.Errorf("authorized_keys: owner %d:%d mode %v, want %s:%s 0600", st.Uid, st.Gid, fi.Mode().Perm(), u.Uid, u.Gid)
	}
	return string(b)
}

func TestChangeKey(t *testing.T) {
	noLeaks(t)
	s := testenv.SSHD(t)
	ctx := context.Background()
	sudoer := testenv.SudoUser(t, "sudoer password")
	for _, m := range []struct {
		name   string
		become string
		as     func(current connector.Credential) *connector.Login
	}{
		{"root", "", func(connector.Credential) *connector.Login { return rootLogin(s) }},
		{"sudo", "sudo", func(connector.Credential) *connector.Login {
			return &connector.Login{Username: sudoer.Username, Credential: pw("sudoer password")}
		}},
		{"self", "", func(connector.Credential) *connector.Login { return nil }},
	} {
		t.Run(m.name, func(t *testing.T) {
			c, tg := New(), linuxTarget(s, m.become)
			c.now = func() time.Time { return time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC) }
			u := testenv.LinuxUser(t, "")
			oldPriv, oldPub := testenv.NewSSHKey(t)
			_, other1 := testenv.NewSSHKey(t)
			_, other2 := testenv.NewSSHKey(t)
			before := []string{other1, "# keep this comment", oldPub, `from="127.0.0.1",no-pty ` + other2, ""}
			testenv.AuthorizeKeys(t, u, before...)
			old := key(oldPriv, oldPub)

			next, err := c.Generate(ctx, connector.SSHKey)
			wantOK(t, err)
			wantRejected(t, c.Verify(ctx, tg, u.Username, next))
			wantOK(t, c.Verify(ctx, tg, u.Username, old))

			wantOK(t, c.Change(ctx, tg, connector.ChangeRequest{Username: u.Username, Current: &old, Next: next, As: m.as(old)}))

			wantOK(t, c.Verify(ctx, tg, u.Username, next))
			wantRejected(t, c.Verify(ctx, tg, u.Username, old))
			nextKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(next.PublicKey))
			wantOK(t, err)
			want := strings.Join([]string{other1, "# keep this comment", `from="127.0.0.1",no-pty ` + other2, "",
				strings.TrimSpace(string(ssh.MarshalAuthorizedKey(nextKey))) + " warder " + u.Username + " 2026-03-04"}, "\n") + "\n"
			if got := authorizedKeys(t, u); got != want {
				t.Errorf("authorized_keys:\n%s\nwant:\n%s", got, want)
			}

			// A retried rotation does not add the key twice.
			wantOK(t, c.Change(ctx, tg, connector.ChangeRequest{Username: u.Username, Next: next, As: orSelf(m.as(next), u.Username, next)}))
			if got := authorizedKeys(t, u); got != want {
				t.Errorf("after a retry, authorized_keys:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func orSelf(as *connector.Login, username string, cred connector.Credential) *connector.Login {
	if as != nil {
		return as
	}
	return &connector.Login{Username: username, Credential: cred}
}

func TestChangeKeyNewKeyFails(t *testing.T) {
	noLeaks(t)
	s := testenv.SSHD(t)
	c, tg, ctx := New(), linuxTarget(s, ""), context.Background()
	u := testenv.LinuxUser(t, "")
	oldPriv, oldPub := testenv.NewSSHKey(t)
	_, other := testenv.NewSSHKey(t)
	testenv.AuthorizeKeys(t, u, other, oldPub)
	before := authorizedKeys(t, u)
	old := key(oldPriv, oldPub)

	next, err := c.Generate(ctx, connector.SSHKey)
	wantOK(t, err)
	// sshd refuses the new key from 127.0.0.1: its line only admits logins
	// from elsewhere.
	next.PublicKey = `from="192.0.2.1" ` + next.PublicKey
	err = c.Change(ctx, tg, connector.ChangeRequest{Username: u.Username, Current: &old, Next: next, As: rootLogin(s)})
	if err == nil || errors.Is(err, connector.ErrRejected) {
		t.Fatalf("got %v, want an error other than ErrRejected", err)
	}
	t.Logf("%v", err)
	wantOK(t, c.Verify(ctx, tg, u.Username, old))
	if got := authorizedKeys(t, u); got != before {
		t.Errorf("authorized_keys:\n%s\nwant it unchanged:\n%s", got, before)
	}

	// A mismatched pair never reaches the file.
	other2, _ := testenv.NewSSHKey(t)
	next.Secret = other2
	if err := c.Change(ctx, tg, connector.ChangeRequest{Username: u.Username, Current: &old, Next: next, As: rootLogin(s)}); err == nil {
		t.Error("a mismatched key pair was accepted")
	}
}

func TestChangeKeyRefusesSymlink(t *testing.T) {
	noLeaks(t)
	s := testenv.SSHD(t)
	c, tg, ctx := New(), linuxTarget(s, ""), context.Background()
	u := testenv.LinuxUser(t, "")
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("root only\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(u.HomeDir, ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(u.HomeDir, ".ssh", "authorized_keys")); err != nil {
		t.Fatal(err)
	}
	next, err := c.Generate(ctx, connector.SSHKey)
	wantOK(t, err)
	err = c.Change(ctx, tg, connector.ChangeRequest{Username: u.Username, Next: next, As: rootLogin(s)})
	if err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("got %v, want a refusal of the symbolic link", err)
	}
	if b, _ := os.ReadFile(secret); string(b) != "root only\n" {
		t.Errorf("the link's target changed: %q", b)
	}
}

func TestGenerate(t *testing.T) {
	c := New()
	c.now = func() time.Time { return time.Date(2026, 3, 4, 23, 0, 0, 0, time.UTC) }
	cred, err := c.Generate(context.Background(), connector.SSHKey)
	wantOK(t, err)
	if _, err := parseKeyPair(cred); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(cred.PublicKey, "ssh-ed25519 ") || !strings.HasSuffix(cred.PublicKey, " warder 2026-03-04") {
		t.Errorf("public key %q", cred.PublicKey)
	}
	if !strings.HasPrefix(string(cred.Secret), "-----BEGIN OPENSSH PRIVATE KEY-----") {
		t.Error("not an OpenSSH private key")
	}
	if _, err := c.Generate(context.Background(), connector.Password); err == nil {
		t.Error("generated a password")
	}
}

// dependentFile creates a file owned by u with mode 0640.
func dependentFile(t *testing.T, u *user.User, content string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "app.env")
	if err := os.WriteFile(path, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestUpdateDependent(t *testing.T) {
	noLeaks(t)
	s := testenv.SSHD(t)
	ctx := context.Background()
	owner := testenv.LinuxUser(t, "")
	sudoer := testenv.SudoUser(t, "sudoer password")
	const secretLine = `DATABASE_PASSWORD=n3w 'secret' "$x" \ :`
	for _, m := range []struct {
		name   string
		become string
		as     connector.Login
	}{
		{"root", "", *rootLogin(s)},
		{"sudo", "sudo", connector.Login{Username: sudoer.Username, Credential: pw("sudoer password")}},
	} {
		t.Run(m.name, func(t *testing.T) {
			c, tg := newConnector(t, "n3w"), linuxTarget(s, m.become)
			for _, tc := range []struct {
				name, before, match, want string
			}{
				{"replace", "A=1\nDATABASE_PASSWORD=old\nB=2\nDATABASE_PASSWORD=second\n", `^DATABASE_PASSWORD=`,
					"A=1\n" + secretLine + "\nB=2\nDATABASE_PASSWORD=second\n"},
				{"append", "A=1\nB=2\n", `^DATABASE_PASSWORD=`, "A=1\nB=2\n" + secretLine + "\n"},
				{"append without final newline", "A=1", `^DATABASE_PASSWORD=`, "A=1\n" + secretLine + "\n"},
				{"crlf", "A=1\r\nDATABASE_PASSWORD=old\r\n", `^DATABASE_PASSWORD=`, "A=1\r\n" + secretLine + "\r\n"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					path := dependentFile(t, owner, tc.before)
					restarted := filepath.Join(filepath.Dir(path), "restarted")
					wantOK(t, c.UpdateDependent(ctx, tg, m.as, connector.Dependent{
						Path: path, Match: tc.match, Line: secretLine, Restart: "touch " + restarted,
					}))
					b, err := os.ReadFile(path)
					wantOK(t, err)
					if string(b) != tc.want {
						t.Errorf("file:\n%q\nwant:\n%q", b, tc.want)
					}
					fi, err := os.Stat(path)
					wantOK(t, err)
					st := fi.Sys().(*syscall.Stat_t)
					if strconv.Itoa(int(st.Uid)) != owner.Uid || strconv.Itoa(int(st.Gid)) != owner.Gid || fi.Mode().Perm() != 0o640 {
						t.Errorf("owner %d:%d mode %v, want %s:%s 0640", st.Uid, st.Gid, fi.Mode().Perm(), owner.Uid, owner.Gid)
					}
					if _, err := os.Stat(restarted); err != nil {
						t.Errorf("restart command did not run: %v", err)
					}
					entries, _ := os.ReadDir(filepath.Dir(path))
					if len(entries) != 2 {
						t.Errorf("directory holds %d entries, want the file and the restart marker (a temporary file left?)", len(entries))
					}
				})
			}
		})
	}

	t.Run("symlink", func(t *testing.T) {
		c, tg := New(), linuxTarget(s, "")
		path := dependentFile(t, owner, "X=1\n")
		link := filepath.Join(t.TempDir(), "link.env")
		wantOK(t, os.Symlink(path, link))
		wantOK(t, c.UpdateDependent(ctx, tg, *rootLogin(s), connector.Dependent{Path: link, Match: "^X=", Line: "X=2"}))
		if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("the link was replaced: %v", err)
		}
		if b, _ := os.ReadFile(path); string(b) != "X=2\n" {
			t.Errorf("file %q", b)
		}
	})

	t.Run("errors", func(t *testing.T) {
		c, tg := newConnector(t, "n3w"), linuxTarget(s, "")
		path := dependentFile(t, owner, "DATABASE_PASSWORD=old\n")
		plain := testenv.LinuxUser(t, "plain")
		for _, tc := range []struct {
			name        string
			as          connector.Login
			d           connector.Dependent
			wantInError string
		}{
			{"missing file", *rootLogin(s), connector.Dependent{Path: path + ".missing", Match: "^X=", Line: secretLine}, path + ".missing"},
			{"relative path", *rootLogin(s), connector.Dependent{Path: "app.env", Match: "^X=", Line: secretLine}, "absolute"},
			{"bad match", *rootLogin(s), connector.Dependent{Path: path, Match: "(", Line: secretLine}, "match"},
			{"line break", *rootLogin(s), connector.Dependent{Path: path, Match: "^X=", Line: secretLine + "\nY=1"}, "line break"},
			{"not root", connector.Login{Username: plain.Username, Credential: pw("plain")}, connector.Dependent{Path: path, Match: "^X=", Line: secretLine}, "not root"},
			{"restart fails", *rootLogin(s), connector.Dependent{Path: path, Match: "^DATABASE_PASSWORD=", Line: secretLine, Restart: "cat " + path + "; cat " + path + " >&2; exit 7"}, "status 7"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				err := c.UpdateDependent(ctx, tg, tc.as, tc.d)
				if err == nil {
					t.Fatal("no error")
				}
				if !strings.Contains(err.Error(), tc.wantInError) {
					t.Errorf("got %v, want it to mention %q", err, tc.wantInError)
				}
				if strings.Contains(err.Error(), "n3w") || strings.Contains(err.Error(), "old") {
					t.Errorf("the error holds the file's content: %v", err)
				}
				t.Logf("%v", err)
			})
		}
	})

	if log := s.Log(t); strings.Contains(log, "n3w") {
		t.Error("sshd's log holds the secret")
	}
}

func TestContextEndsCommand(t *testing.T) {
	noLeaks(t)
	s := testenv.SSHD(t)
	owner := testenv.LinuxUser(t, "")
	c, tg := New(), linuxTarget(s, "")
	path := dependentFile(t, owner, "X=1\n")
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.UpdateDependent(ctx, tg, *rootLogin(s), connector.Dependent{Path: path, Match: "^X=", Line: "X=2", Restart: "sleep 30"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
}

// TestNoSecretInProcesses watches every process's arguments and
// environment on this host (the target) while passwords and dependents
// change, and fails if a secret shows up.
func TestNoSecretInProcesses(t *testing.T) {
	noLeaks(t)
	s := testenv.SSHD(t)
	u := testenv.LinuxUser(t, "initial")
	sudoer := testenv.SudoUser(t, "sudoer password")
	ctx := context.Background()

	const marker = "Zq7-secret-marker"
	// probe is in the restart command, which runs for 0.2s: seeing it
	// shows that the watcher does see the commands run on the target.
	const probe = "Zq7-not-a-secret"
	var sawProbe atomic.Bool
	found := make(chan string, 1)
	done := make(chan struct{})
	var wg sync.WaitGroup // the watcher; it ends when done is closed
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			procs, _ := filepath.Glob("/proc/[0-9]*")
			for _, p := range procs {
				for _, f := range []string{"cmdline", "environ"} {
					b, _ := os.ReadFile(filepath.Join(p, f))
					if strings.Contains(string(b), probe) {
						sawProbe.Store(true)
					}
					if strings.Contains(string(b), marker) {
						select {
						case found <- p + "/" + f + ": " + strings.ReplaceAll(string(b), "\x00", " "):
						default:
						}
					}
				}
			}
		}
	}()

	c := newConnector(t, marker)
	path := dependentFile(t, u, "P=old\n")
	for i, m := range []struct {
		become string
		as     *connector.Login
	}{
		{"", rootLogin(s)},
		{"sudo", &connector.Login{Username: sudoer.Username, Credential: pw("sudoer password")}},
	} {
		tg := linuxTarget(s, m.become)
		for j := range 5 {
			secret := marker + strconv.Itoa(i*10+j)
			wantOK(t, c.Change(ctx, tg, connector.ChangeRequest{Username: u.Username, Next: pw(secret), As: m.as}))
			wantOK(t, c.Verify(ctx, tg, u.Username, pw(secret)))
			wantOK(t, c.UpdateDependent(ctx, tg, *m.as, connector.Dependent{Path: path, Match: "^P=", Line: "P=" + secret, Restart: "sleep 0.2; : " + probe}))
		}
	}
	close(done)
	wg.Wait()
	select {
	case p := <-found:
		t.Errorf("a process showed a secret: %s", p)
	default:
	}
	if !sawProbe.Load() {
		t.Error("the watcher never saw the restart command: it proves nothing")
	}
	if strings.Contains(s.Log(t), marker) {
		t.Error("sshd's log holds a secret")
	}
}

func TestReplaceLine(t *testing.T) {
	for _, tc := range []struct {
		name, in, match, line, want string
	}{
		{"empty file", "", "^A=", "A=1", "A=1\n"},
		{"first match only", "A=0\nA=9\n", "^A=", "A=1", "A=1\nA=9\n"},
		{"keeps missing final newline", "B=2\nA=0", "^A=", "A=1", "B=2\nA=1"},
		{"append", "B=2\n", "^A=", "A=1", "B=2\nA=1\n"},
		{"crlf", "A=0\r\nB=2\r\n", "^A=$|^A=0$", "A=1", "A=1\r\nB=2\r\n"},
		{"blank lines kept", "\n\nA=0\n\n", "^A=", "A=1", "\n\nA=1\n\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := string(replaceLine([]byte(tc.in), regexpMust(t, tc.match), tc.line))
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
