package redis

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/testenv"
)

func pw(s string) connector.Credential {
	return connector.Credential{Kind: connector.Password, Secret: []byte(s)}
}

func target(s *testenv.RedisServer) connector.Target {
	return connector.Target{Kind: Kind, Name: "redis", Host: s.Host, Port: s.Port, Timeout: 5 * time.Second}
}

func mustRefuse(t *testing.T, tgt connector.Target, user, password string) {
	t.Helper()
	err := New().Verify(context.Background(), tgt, user, pw(password))
	if !errors.Is(err, connector.ErrRejected) {
		t.Fatalf("Verify(%s) with a wrong password = %v, want ErrRejected", user, err)
	}
	if strings.Contains(err.Error(), password) {
		t.Fatalf("error repeats the password: %v", err)
	}
}

func mustLogIn(t *testing.T, tgt connector.Target, user, password string) {
	t.Helper()
	if err := New().Verify(context.Background(), tgt, user, pw(password)); err != nil {
		t.Fatalf("Verify(%s) with the right password: %v", user, err)
	}
}

func TestCheckTarget(t *testing.T) {
	ok := connector.Target{Kind: Kind, Name: "r", Host: "cache.example", Port: 6379}
	tests := []struct {
		name    string
		options map[string]string
		port    int
		wantErr bool
	}{
		{"defaults", nil, 6379, false},
		{"all options", map[string]string{OptTLS: "true", OptPersist: "acl_save"}, 6379, false},
		{"bad tls", map[string]string{OptTLS: "yes"}, 6379, true},
		{"bad persist", map[string]string{OptPersist: "always"}, 6379, true},
		{"unknown option", map[string]string{"db": "0"}, 6379, true},
		{"port zero", nil, 0, true},
		{"port too big", nil, 70000, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tgt := ok
			tgt.Options, tgt.Port = tt.options, tt.port
			if err := New().CheckTarget(tgt); (err != nil) != tt.wantErr {
				t.Fatalf("CheckTarget = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

// TestVerify is the precondition of the rotation tests: AUTH really
// checks the test users' passwords, and an unreachable or broken server is
// not a rejection.
func TestVerify(t *testing.T) {
	s := testenv.Redis(t)
	tgt := target(s)
	user := s.CreateUser(t, "right-password")

	t.Run("right password", func(t *testing.T) { mustLogIn(t, tgt, user, "right-password") })
	t.Run("wrong password", func(t *testing.T) { mustRefuse(t, tgt, user, "wrong-password") })
	t.Run("unknown user", func(t *testing.T) { mustRefuse(t, tgt, "wt_nobody_"+user, "right-password") })
	t.Run("disabled user", func(t *testing.T) {
		off := s.CreateUser(t, "pw")
		s.Do(t, "ACL", "SETUSER", off, "off")
		mustRefuse(t, tgt, off, "pw")
	})
	t.Run("unreachable", func(t *testing.T) {
		tgt := tgt
		tgt.Port = testenv.UnusedPort(t)
		err := New().Verify(context.Background(), tgt, user, pw("right-password"))
		if err == nil || errors.Is(err, connector.ErrRejected) {
			t.Fatalf("Verify on a closed port = %v, want a non-rejection error", err)
		}
	})
	t.Run("not redis", func(t *testing.T) {
		tgt := tgt
		tgt.Port = fakeServer(t, "HTTP/1.1 400 Bad Request\r\n\r\n")
		err := New().Verify(context.Background(), tgt, user, pw("right-password"))
		if err == nil || errors.Is(err, connector.ErrRejected) {
			t.Fatalf("Verify on a non-Redis server = %v, want a non-rejection error", err)
		}
	})
	t.Run("silent server times out", func(t *testing.T) {
		tgt := tgt
		tgt.Port = fakeServer(t, "")
		tgt.Timeout = 200 * time.Millisecond
		start := time.Now()
		err := New().Verify(context.Background(), tgt, user, pw("right-password"))
		if err == nil || errors.Is(err, connector.ErrRejected) {
			t.Fatalf("Verify on a silent server = %v, want a non-rejection error", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("Verify took %v with a 200ms timeout", d)
		}
	})
}

// fakeServer accepts connections on a loopback port, writes answer and
// keeps them open until the test ends.
func fakeServer(t *testing.T, answer string) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.Write([]byte(answer))
				<-done
			})
		}
	})
	t.Cleanup(func() { close(done); l.Close(); wg.Wait() })
	return l.Addr().(*net.TCPAddr).Port
}

var hardPasswords = []struct{ name, password string }{
	{"plain", "n3w-Pa55word"},
	{"quotes", `it's "quoted" ''`},
	{"backslashes", `back\slash\\ \' \n`},
	{"resp framing", "a\r\n$3\r\n*1\r\nb"},
	{"spaces and rule syntax", " >other <x nopass resetpass "},
	{"unicode", "pässwörd-日本語-Ω-🔑"},
	{"long", strings.Repeat("0123456789abcdef", 8) + "-128+"},
}

// getUser returns the user's ACL rules without the password hashes.
func getUser(t *testing.T, s *testenv.RedisServer, user string) string {
	t.Helper()
	cl, err := dial(context.Background(), s.Addr(), 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.close()
	rep, err := cl.do([]byte("ACL"), []byte("GETUSER"), []byte(user))
	if err != nil || rep.typ != '*' {
		t.Fatalf("ACL GETUSER: %+v %v", rep, err)
	}
	var b strings.Builder
	for i := 0; i+1 < len(rep.elems); i += 2 {
		if string(rep.elems[i].str) == "passwords" {
			fmt.Fprintf(&b, "passwords:%d ", len(rep.elems[i+1].elems))
			continue
		}
		fmt.Fprintf(&b, "%s:%s ", rep.elems[i].str, encode(nil, rep.elems[i+1]))
	}
	return b.String()
}

func TestChange(t *testing.T) {
	s := testenv.Redis(t)
	tgt := target(s)
	// The least a management user needs.
	mgmt := s.CreateUser(t, "mgmt-password", "+acl|getuser", "+acl|setuser")
	mustRefuse(t, tgt, mgmt, "not-mgmt-password")

	for _, as := range []string{"self", "management"} {
		for _, p := range hardPasswords {
			t.Run(as+"/"+p.name, func(t *testing.T) {
				const old = "old-password"
				user := s.CreateUser(t, old, "~app:*", "+get", "+set", "+acl|setuser", "+acl|getuser")
				mustRefuse(t, tgt, user, p.password)
				mustLogIn(t, tgt, user, old)
				rulesBefore := getUser(t, s, user)

				req := connector.ChangeRequest{Username: user, Next: pw(p.password)}
				if as == "self" {
					cur := pw(old)
					req.Current = &cur
				} else {
					req.As = &connector.Login{Username: mgmt, Credential: pw("mgmt-password")}
				}
				if err := New().Change(context.Background(), tgt, req); err != nil {
					t.Fatalf("Change: %v", err)
				}
				mustRefuse(t, tgt, user, old)
				mustLogIn(t, tgt, user, p.password)
				if after := getUser(t, s, user); after != rulesBefore {
					t.Fatalf("rules changed:\nbefore %s\nafter  %s", rulesBefore, after)
				}
			})
		}
	}
}

func TestChangeFailures(t *testing.T) {
	s := testenv.Redis(t)
	tgt := target(s)
	user := s.CreateUser(t, "current")
	weak := s.CreateUser(t, "weak", "+get")
	admin := &connector.Login{Username: s.CreateUser(t, "admin"), Credential: pw("admin")}

	t.Run("wrong current password is a rejection", func(t *testing.T) {
		cur := pw("not-current")
		err := New().Change(context.Background(), tgt, connector.ChangeRequest{Username: user, Current: &cur, Next: pw("next-secret")})
		if !errors.Is(err, connector.ErrRejected) {
			t.Fatalf("Change = %v, want ErrRejected", err)
		}
	})
	t.Run("unprivileged management login is not a rejection", func(t *testing.T) {
		err := New().Change(context.Background(), tgt, connector.ChangeRequest{Username: user, Next: pw("next-secret"),
			As: &connector.Login{Username: weak, Credential: pw("weak")}})
		if err == nil || errors.Is(err, connector.ErrRejected) || strings.Contains(err.Error(), "next-secret") {
			t.Fatalf("Change = %v, want a non-rejection error without the password", err)
		}
		mustLogIn(t, tgt, user, "current")
	})
	t.Run("missing user is not created", func(t *testing.T) {
		ghost := "wt_ghost_" + user
		err := New().Change(context.Background(), tgt, connector.ChangeRequest{Username: ghost, Next: pw("next-secret"), As: admin})
		if !errkind.Is(err, errkind.NotFound) {
			t.Fatalf("Change = %v, want NotFound", err)
		}
		if rep := s.Do(t, "ACL", "DELUSER", ghost); rep != "0" {
			t.Fatalf("ACL DELUSER %s = %s: the user was created", ghost, rep)
		}
	})
	t.Run("persist failure is reported", func(t *testing.T) {
		// The test server has no aclfile, so ACL SAVE fails after the
		// password changed.
		tgt := tgt
		tgt.Options = map[string]string{OptPersist: "acl_save"}
		err := New().Change(context.Background(), tgt, connector.ChangeRequest{Username: user, Next: pw("persisted?"), As: admin})
		if err == nil || !strings.Contains(err.Error(), "not persisted") {
			t.Fatalf("Change = %v, want a persistence error", err)
		}
		mustLogIn(t, tgt, user, "persisted?")
	})
	t.Run("unreachable", func(t *testing.T) {
		tgt := tgt
		tgt.Port = testenv.UnusedPort(t)
		err := New().Change(context.Background(), tgt, connector.ChangeRequest{Username: user, Next: pw("x"), As: admin})
		if err == nil || errors.Is(err, connector.ErrRejected) {
			t.Fatalf("Change = %v, want a non-rejection error", err)
		}
	})
}

func TestChangeConcurrent(t *testing.T) {
	s := testenv.Redis(t)
	tgt := target(s)
	mgmt := &connector.Login{Username: s.CreateUser(t, "mgmt"), Credential: pw("mgmt")}
	const n = 16
	users := make([]string, n)
	for i := range users {
		users[i] = s.CreateUser(t, "before")
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, u := range users {
		wg.Go(func() {
			req := connector.ChangeRequest{Username: u, Next: pw(fmt.Sprintf("after-%d", i))}
			if i%2 == 0 {
				cur := pw("before")
				req.Current = &cur
			} else {
				req.As = mgmt
			}
			errs[i] = New().Change(context.Background(), tgt, req)
		})
	}
	wg.Wait()
	for i, u := range users {
		if errs[i] != nil {
			t.Errorf("Change %s: %v", u, errs[i])
			continue
		}
		mustRefuse(t, tgt, u, "before")
		mustLogIn(t, tgt, u, fmt.Sprintf("after-%d", i))
	}
}

func TestRedactsSecret(t *testing.T) {
	err := replyErr(connector.Target{Name: "r"}, "ACL SETUSER",
		reply{typ: '-', str: []byte("ERR Error in ACL SETUSER modifier '>hunter2': Syntax error")}, nil, []byte("hunter2"))
	if err == nil || bytes.Contains([]byte(err.Error()), []byte("hunter2")) {
		t.Fatalf("replyErr = %v", err)
	}
}
