package postgres

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopPostgresSCRAM()
	os.Exit(code)
}

func pw(s string) connector.Credential {
	return connector.Credential{Kind: connector.Password, Secret: []byte(s)}
}

func scramTarget(c *testenv.SCRAMCluster) connector.Target {
	return connector.Target{Kind: Kind, Name: "scram", Host: c.Host, Port: c.Port,
		Options: map[string]string{OptSSLMode: "disable"}, Timeout: 10 * time.Second}
}

// mustRefuse asserts that the target refuses username with password.
func mustRefuse(t *testing.T, tgt connector.Target, username, password string) {
	t.Helper()
	err := New().Verify(context.Background(), tgt, username, pw(password))
	if !errors.Is(err, connector.ErrRejected) {
		t.Fatalf("Verify(%s) with a wrong password = %v, want ErrRejected", username, err)
	}
	if password != "" && strings.Contains(err.Error(), password) {
		t.Fatalf("error repeats the password: %v", err)
	}
}

func mustLogIn(t *testing.T, tgt connector.Target, username, password string) {
	t.Helper()
	if err := New().Verify(context.Background(), tgt, username, pw(password)); err != nil {
		t.Fatalf("Verify(%s) with the right password: %v", username, err)
	}
}

func TestCheckTarget(t *testing.T) {
	ok := connector.Target{Kind: Kind, Name: "db", Host: "db.example", Port: 5432}
	tests := []struct {
		name    string
		mutate  func(*connector.Target)
		wantErr bool
	}{
		{"defaults", func(*connector.Target) {}, false},
		{"all options", func(t *connector.Target) {
			t.Options = map[string]string{OptDatabase: "app", OptSSLMode: "verify-full", OptDefaultAccount: "app_ro"}
		}, false},
		{"empty default account", func(t *connector.Target) { t.Options = map[string]string{OptDefaultAccount: ""} }, true},
		{"default account with a slash", func(t *connector.Target) { t.Options = map[string]string{OptDefaultAccount: "a/b"} }, true},
		{"wrong kind", func(t *connector.Target) { t.Kind = "mysql" }, true},
		{"no host", func(t *connector.Target) { t.Host = "" }, true},
		{"port zero", func(t *connector.Target) { t.Port = 0 }, true},
		{"port too big", func(t *connector.Target) { t.Port = 65536 }, true},
		{"bad sslmode", func(t *connector.Target) { t.Options = map[string]string{OptSSLMode: "maybe"} }, true},
		{"empty database", func(t *connector.Target) { t.Options = map[string]string{OptDatabase: ""} }, true},
		{"unknown option", func(t *connector.Target) { t.Options = map[string]string{"dbname": "x"} }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tgt := ok
			tt.mutate(&tgt)
			if err := New().CheckTarget(tgt); (err != nil) != tt.wantErr {
				t.Fatalf("CheckTarget = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

// TestVerify is the precondition of every other test here: the cluster
// really checks passwords, and an unreachable target is not a rejection.
func TestVerify(t *testing.T) {
	c := testenv.PostgresSCRAM(t)
	tgt := scramTarget(c)
	role := c.CreateRole(t, "right-password", "")

	t.Run("right password", func(t *testing.T) { mustLogIn(t, tgt, role, "right-password") })
	t.Run("wrong password", func(t *testing.T) { mustRefuse(t, tgt, role, "wrong-password") })
	t.Run("empty password", func(t *testing.T) { mustRefuse(t, tgt, role, "") })
	t.Run("unknown role", func(t *testing.T) { mustRefuse(t, tgt, "wt_nobody_"+role, "right-password") })
	t.Run("nologin role", func(t *testing.T) {
		nologin := c.CreateRole(t, "pw", "")
		c.Exec(t, "ALTER ROLE "+nologin+" NOLOGIN")
		mustRefuse(t, tgt, nologin, "pw")
	})
	t.Run("sslmode prefer falls back", func(t *testing.T) {
		tgt := tgt
		tgt.Options = nil // prefer; the cluster has ssl=off
		mustLogIn(t, tgt, role, "right-password")
	})
	t.Run("unreachable", func(t *testing.T) {
		tgt := tgt
		tgt.Port = testenv.UnusedPort(t)
		err := New().Verify(context.Background(), tgt, role, pw("right-password"))
		if err == nil || errors.Is(err, connector.ErrRejected) {
			t.Fatalf("Verify on a closed port = %v, want a non-rejection error", err)
		}
	})
	t.Run("unknown database", func(t *testing.T) {
		tgt := tgt
		tgt.Options = map[string]string{OptDatabase: "no_such_db", OptSSLMode: "disable"}
		err := New().Verify(context.Background(), tgt, role, pw("right-password"))
		if err == nil || errors.Is(err, connector.ErrRejected) {
			t.Fatalf("Verify on a missing database = %v, want a non-rejection error", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := New().Verify(ctx, tgt, role, pw("right-password"))
		if err == nil || errors.Is(err, connector.ErrRejected) {
			t.Fatalf("Verify with a cancelled context = %v, want a non-rejection error", err)
		}
	})
}

// TestVerifierMatchesServer checks scramVerifier against the verifier the
// server computed itself for the same password and salt.
func TestVerifierMatchesServer(t *testing.T) {
	c := testenv.PostgresSCRAM(t)
	for _, password := range []string{"simple", `q'uo"te\back`, "pässwörd-日本語-🔑"} {
		role := c.CreateRole(t, password, "")
		var stored string
		if err := c.QueryRow(context.Background(), "SELECT rolpassword FROM pg_authid WHERE rolname = $1", role).Scan(&stored); err != nil {
			t.Fatal(err)
		}
		// SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>
		salt64 := strings.SplitN(strings.SplitN(stored, ":", 2)[1], "$", 2)[0]
		salt, err := base64.StdEncoding.DecodeString(salt64)
		if err != nil {
			t.Fatalf("salt of %q: %v", stored, err)
		}
		got, err := scramVerifier(password, salt, scramIterations)
		if err != nil {
			t.Fatal(err)
		}
		if got != stored {
			t.Errorf("verifier of %q:\n got %s\nwant %s", password, got, stored)
		}
	}
}

func TestCheckSASLprepStable(t *testing.T) {
	tests := []struct {
		password string
		ok       bool
	}{
		{"ascii ~!@#$%^&*()_+`-={}|[]\\:\";'<>?,./", true},
		{"pässwörd-日本語", true},
		{"emoji-🔑", true},
		{"\xff\xfeinvalid-utf8", true},
		{"soft\u00adhyphen", false},
		{"no\u00a0break space", false},
		{"ligature-\ufb01", false}, // NFKC: fi
		{"decomposed-a\u0308", false},
		{"nul\x00byte", false},
	}
	for _, tt := range tests {
		if err := checkSASLprepStable(tt.password); (err == nil) != tt.ok {
			t.Errorf("checkSASLprepStable(%q) = %v, want ok %v", tt.password, err, tt.ok)
		}
	}
}

var hardPasswords = []struct{ name, password string }{
	{"plain", "n3w-Pa55word"},
	{"quotes", `it's "quoted" ''`},
	{"backslashes", `back\slash\\ \' \n`},
	{"dollar quotes", "$$; DROP ROLE warder_admin; $$ $tag$"},
	{"unicode", "pässwörd-日本語-Ω-🔑"},
	{"long", strings.Repeat("0123456789abcdef", 8) + "-128+"},
	{"spaces", "  leading and trailing  "},
}

func TestChange(t *testing.T) {
	c := testenv.PostgresSCRAM(t)
	tgt := scramTarget(c)
	mgmtPassword := "mgmt-" + t.Name()
	mgmt := c.CreateRole(t, mgmtPassword, "CREATEROLE")
	mustRefuse(t, tgt, mgmt, "not-"+mgmtPassword)

	for _, as := range []string{"self", "management"} {
		for _, p := range hardPasswords {
			t.Run(as+"/"+p.name, func(t *testing.T) {
				const old = "old-password"
				role := c.CreateRole(t, old, "")
				mustRefuse(t, tgt, role, p.password)
				mustLogIn(t, tgt, role, old)

				req := connector.ChangeRequest{Username: role, Next: pw(p.password)}
				if as == "self" {
					cur := pw(old)
					req.Current = &cur
				} else {
					req.As = &connector.Login{Username: mgmt, Credential: pw(mgmtPassword)}
				}
				if err := New().Change(context.Background(), tgt, req); err != nil {
					t.Fatalf("Change: %v", err)
				}
				mustRefuse(t, tgt, role, old)
				mustLogIn(t, tgt, role, p.password)

				var stored string
				if err := c.QueryRow(context.Background(), "SELECT rolpassword FROM pg_authid WHERE rolname = $1", role).Scan(&stored); err != nil {
					t.Fatal(err)
				}
				if !strings.HasPrefix(stored, "SCRAM-SHA-256$4096:") {
					t.Fatalf("stored password %q is not a SCRAM verifier", stored)
				}
			})
		}
	}
}

func TestChangeQuotedRoleName(t *testing.T) {
	c := testenv.PostgresSCRAM(t)
	tgt := scramTarget(c)
	name := `wt_Odd "Name"; ` + fmt.Sprint(time.Now().UnixNano())
	ident := pgx.Identifier{name}.Sanitize()
	c.Exec(t, "CREATE ROLE "+ident+" LOGIN PASSWORD 'old'")
	t.Cleanup(func() { c.Exec(t, "DROP ROLE IF EXISTS "+ident) })

	cur := pw("old")
	if err := New().Change(context.Background(), tgt, connector.ChangeRequest{Username: name, Current: &cur, Next: pw("new")}); err != nil {
		t.Fatalf("Change: %v", err)
	}
	mustRefuse(t, tgt, name, "old")
	mustLogIn(t, tgt, name, "new")
}

func TestChangeFailures(t *testing.T) {
	c := testenv.PostgresSCRAM(t)
	tgt := scramTarget(c)
	role := c.CreateRole(t, "current", "")
	weak := c.CreateRole(t, "weak", "") // no CREATEROLE

	t.Run("wrong current password is a rejection", func(t *testing.T) {
		cur := pw("not-current")
		err := New().Change(context.Background(), tgt, connector.ChangeRequest{Username: role, Current: &cur, Next: pw("next-secret")})
		if !errors.Is(err, connector.ErrRejected) {
			t.Fatalf("Change = %v, want ErrRejected", err)
		}
	})
	t.Run("unprivileged management login is not a rejection", func(t *testing.T) {
		err := New().Change(context.Background(), tgt, connector.ChangeRequest{Username: role, Next: pw("next-secret"),
			As: &connector.Login{Username: weak, Credential: pw("weak")}})
		if err == nil || errors.Is(err, connector.ErrRejected) {
			t.Fatalf("Change = %v, want a non-rejection error", err)
		}
		if strings.Contains(err.Error(), "next-secret") {
			t.Fatalf("error repeats the password: %v", err)
		}
		mustLogIn(t, tgt, role, "current")
	})
	t.Run("unreachable", func(t *testing.T) {
		tgt := tgt
		tgt.Port = testenv.UnusedPort(t)
		cur := pw("current")
		err := New().Change(context.Background(), tgt, connector.ChangeRequest{Username: role, Current: &cur, Next: pw("next-secret")})
		if err == nil || errors.Is(err, connector.ErrRejected) {
			t.Fatalf("Change = %v, want a non-rejection error", err)
		}
	})
	t.Run("no login", func(t *testing.T) {
		err := New().Change(context.Background(), tgt, connector.ChangeRequest{Username: role, Next: pw("next-secret")})
		if err == nil || errors.Is(err, connector.ErrRejected) {
			t.Fatalf("Change = %v, want an invalid-request error", err)
		}
	})
	t.Run("unstable unicode refused before login", func(t *testing.T) {
		cur := pw("current")
		err := New().Change(context.Background(), tgt, connector.ChangeRequest{Username: role, Current: &cur, Next: pw("soft\u00adhyphen")})
		if err == nil {
			t.Fatal("Change accepted a password SASLprep would change")
		}
		mustLogIn(t, tgt, role, "current")
	})
}

func TestChangeConcurrent(t *testing.T) {
	c := testenv.PostgresSCRAM(t)
	tgt := scramTarget(c)
	const n = 12
	roles := make([]string, n)
	for i := range roles {
		roles[i] = c.CreateRole(t, "before", "")
	}
	mgmt := c.CreateRole(t, "mgmt", "CREATEROLE")
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, role := range roles {
		wg.Go(func() {
			req := connector.ChangeRequest{Username: role, Next: pw(fmt.Sprintf("after-%d", i))}
			if i%2 == 0 {
				cur := pw("before")
				req.Current = &cur
			} else {
				req.As = &connector.Login{Username: mgmt, Credential: pw("mgmt")}
			}
			errs[i] = New().Change(context.Background(), tgt, req)
		})
	}
	wg.Wait()
	for i, role := range roles {
		if errs[i] != nil {
			t.Errorf("Change %s: %v", role, errs[i])
			continue
		}
		mustRefuse(t, tgt, role, "before")
		mustLogIn(t, tgt, role, fmt.Sprintf("after-%d", i))
	}
}
