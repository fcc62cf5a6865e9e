package mysql

import (
	"context"
	"errors"
	"fmt"
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

func target(s *testenv.MariaDBServer, accountHost string) connector.Target {
	return connector.Target{Kind: Kind, Name: "mariadb", Host: s.Host, Port: s.Port, Timeout: 10 * time.Second,
		Options: map[string]string{OptAccountHost: accountHost}}
}

func mustRefuse(t *testing.T, tgt connector.Target, user, password string) {
	t.Helper()
	err := New().Verify(context.Background(), tgt, user, pw(password))
	if !errors.Is(err, connector.ErrRejected) {
		t.Fatalf("Verify(%s) with a wrong password = %v, want ErrRejected", user, err)
	}
	if password != "" && strings.Contains(err.Error(), password) {
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
	ok := connector.Target{Kind: Kind, Name: "db", Host: "db.example", Port: 3306}
	tests := []struct {
		name    string
		options map[string]string
		port    int
		wantErr bool
	}{
		{"defaults", nil, 3306, false},
		{"all options", map[string]string{OptAccountHost: "10.0.0.%", OptTLS: "true"}, 3306, false},
		{"empty account_host", map[string]string{OptAccountHost: ""}, 3306, true},
		{"bad tls", map[string]string{OptTLS: "required"}, 3306, true},
		{"unknown option", map[string]string{"database": "x"}, 3306, true},
		{"port zero", nil, 0, true},
		{"port too big", nil, 65536, true},
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

// TestVerify is the precondition of the rotation tests: the server really
// checks passwords, and an unreachable target is not a rejection.
func TestVerify(t *testing.T) {
	s := testenv.MariaDB(t)
	tgt := target(s, "%")
	user := s.CreateUser(t, "right-password", "%")

	t.Run("right password", func(t *testing.T) { mustLogIn(t, tgt, user, "right-password") })
	t.Run("wrong password", func(t *testing.T) { mustRefuse(t, tgt, user, "wrong-password") })
	t.Run("empty password", func(t *testing.T) { mustRefuse(t, tgt, user, "") })
	t.Run("unknown user", func(t *testing.T) { mustRefuse(t, tgt, "wt_nobody", "right-password") })
	t.Run("tls false", func(t *testing.T) {
		tgt := tgt
		tgt.Options = map[string]string{OptTLS: "false"}
		mustLogIn(t, tgt, user, "right-password")
		mustRefuse(t, tgt, user, "wrong-password")
	})
	t.Run("unreachable", func(t *testing.T) {
		tgt := tgt
		tgt.Port = testenv.UnusedPort(t)
		err := New().Verify(context.Background(), tgt, user, pw("right-password"))
		if err == nil || errors.Is(err, connector.ErrRejected) {
			t.Fatalf("Verify on a closed port = %v, want a non-rejection error", err)
		}
	})
}

var hardPasswords = []struct{ name, password string }{
	{"plain", "n3w-Pa55word"},
	{"quotes", `it's "quoted" '' ?`},
	{"backslashes", `back\slash\\ \' \n \0 \%`},
	{"sql", "'; DROP USER 'warder_test'@'127.0.0.1'; -- ?"},
	{"unicode", "pässwörd-日本語-Ω-🔑"},
	{"long", strings.Repeat("0123456789abcdef", 8) + "-128+"},
	{"control", "tab\tnewline\ncr\r^Z\x1a"},
}

func TestChange(t *testing.T) {
	s := testenv.MariaDB(t)
	tgt := target(s, "%")
	mgmt := s.CreateUser(t, "mgmt-password", "%", "CREATE USER")
	mustRefuse(t, tgt, mgmt, "not-mgmt-password")

	for _, as := range []string{"self", "management"} {
		for _, p := range hardPasswords {
			t.Run(as+"/"+p.name, func(t *testing.T) {
				const old = "old-password"
				user := s.CreateUser(t, old, "%")
				mustRefuse(t, tgt, user, p.password)
				mustLogIn(t, tgt, user, old)

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
			})
		}
	}
	s.Exec(t, "SELECT 1") // the "sql" password did not drop the admin user
}

// TestChangeHostAccount manages 'user'@'127.0.0.1' rather than '%'.
func TestChangeHostAccount(t *testing.T) {
	s := testenv.MariaDB(t)
	tgt := target(s, "127.0.0.1")
	mgmt := s.CreateUser(t, "mgmt", "%", "CREATE USER")
	for _, as := range []string{"self", "management"} {
		t.Run(as, func(t *testing.T) {
			user := s.CreateUser(t, "old", "127.0.0.1")
			mustRefuse(t, tgt, user, "new")
			req := connector.ChangeRequest{Username: user, Next: pw("new")}
			if as == "self" {
				cur := pw("old")
				req.Current = &cur
			} else {
				req.As = &connector.Login{Username: mgmt, Credential: pw("mgmt")}
			}
			if err := New().Change(context.Background(), tgt, req); err != nil {
				t.Fatalf("Change: %v", err)
			}
			mustRefuse(t, tgt, user, "old")
			mustLogIn(t, tgt, user, "new")
		})
	}
}

// TestChangeSelfWrongAccount: when the login matches another account of
// the same user ('u'@'127.0.0.1' shadows 'u'@'%'), a change as self must
// not touch the wrong one.
func TestChangeSelfWrongAccount(t *testing.T) {
	s := testenv.MariaDB(t)
	tgt := target(s, "%")
	user := s.CreateUser(t, "wide", "%")
	s.CreateNamedUser(t, user, "narrow", "127.0.0.1")
	mustLogIn(t, tgt, user, "narrow")
	mustRefuse(t, tgt, user, "wide") // the narrow account matches first

	cur := pw("narrow")
	err := New().Change(context.Background(), tgt, connector.ChangeRequest{Username: user, Current: &cur, Next: pw("next-secret")})
	if !errkind.Is(err, errkind.Conflict) {
		t.Fatalf("Change = %v, want Conflict", err)
	}
	mustLogIn(t, tgt, user, "narrow")
}

func TestChangeFailures(t *testing.T) {
	s := testenv.MariaDB(t)
	tgt := target(s, "%")
	user := s.CreateUser(t, "current", "%")
	weak := s.CreateUser(t, "weak", "%") // no CREATE USER
	admin := &connector.Login{Username: s.CreateUser(t, "admin", "%", "CREATE USER"), Credential: pw("admin")}

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
	t.Run("missing account", func(t *testing.T) {
		err := New().Change(context.Background(), tgt, connector.ChangeRequest{Username: "wt_ghost_" + user, Next: pw("next-secret"), As: admin})
		if !errkind.Is(err, errkind.NotFound) || strings.Contains(err.Error(), "next-secret") {
			t.Fatalf("Change = %v, want NotFound without the password", err)
		}
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
	s := testenv.MariaDB(t)
	tgt := target(s, "%")
	mgmt := &connector.Login{Username: s.CreateUser(t, "mgmt", "%", "CREATE USER"), Credential: pw("mgmt")}
	const n = 12
	users := make([]string, n)
	for i := range users {
		users[i] = s.CreateUser(t, "before", "%")
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

// TestChangeNoBackslashEscapes: with NO_BACKSLASH_ESCAPES a backslash is an
// ordinary character in string literals, and quoting must follow. New
// sessions take the global sql_mode, which this test changes for its
// duration (no other test in this package runs in parallel).
func TestChangeNoBackslashEscapes(t *testing.T) {
	s := testenv.MariaDB(t)
	tgt := target(s, "%")
	var mode string
	s.QueryRow(t, "SELECT @@GLOBAL.sql_mode", &mode)
	s.Exec(t, "SET GLOBAL sql_mode = CONCAT(@@GLOBAL.sql_mode, ',NO_BACKSLASH_ESCAPES')")
	t.Cleanup(func() { s.Exec(t, "SET GLOBAL sql_mode = "+testenv.QuoteLiteral(mode)) })

	mgmt := &connector.Login{Username: s.CreateUser(t, "mgmt", "%", "CREATE USER"), Credential: pw("mgmt")}
	for _, p := range []string{`back\slash\\ \' \n`, `it's ''quoted'' \`} {
		for _, as := range []string{"self", "management"} {
			user := s.CreateUser(t, "old", "%")
			req := connector.ChangeRequest{Username: user, Next: pw(p)}
			if as == "self" {
				cur := pw("old")
				req.Current = &cur
			} else {
				req.As = mgmt
			}
			if err := New().Change(context.Background(), tgt, req); err != nil {
				t.Fatalf("Change (%s) to %q: %v", as, p, err)
			}
			mustRefuse(t, tgt, user, "old")
			mustLogIn(t, tgt, user, p)
		}
	}
}
