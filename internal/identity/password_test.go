package identity

import (
	"strings"
	"testing"

	"github.com/warderhq/warder/internal/store"
)

// refPHC is the example of the Argon2 reference implementation's README:
// password "password", salt "somesalt", -id -t 2 -m 16 -p 1.
const refPHC = "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc"

func TestParsePHC(t *testing.T) {
	h, err := parsePHC(refPHC)
	if err != nil {
		t.Fatal(err)
	}
	if h.params != (PasswordParams{Time: 2, Memory: 65536, Threads: 1}) || string(h.salt) != "somesalt" || len(h.hash) != 32 {
		t.Errorf("parsePHC = %+v", h)
	}
	if h.String() != refPHC {
		t.Errorf("String = %q", h.String())
	}
	ok, p, err := verifyPassword(refPHC, []byte("password"))
	if err != nil || !ok || p != h.params {
		t.Errorf("verify reference vector = %v, %+v, %v", ok, p, err)
	}
	if ok, _, _ := verifyPassword(refPHC, []byte("Password")); ok {
		t.Error("wrong password verified")
	}

	bad := []string{
		"",
		"$argon2i$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
		"$argon2id$v=16$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
		"$argon2id$v=19$t=2,m=65536,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
		"$argon2id$v=19$m=065536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
		"$argon2id$v=19$m=65536,t=0,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
		"$argon2id$v=19$m=65536,t=2,p=0$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
		"$argon2id$v=19$m=4294967295,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
		"$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ=$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
		"$argon2id$v=19$m=65536,t=2,p=1$c2$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
		"$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFh",
		"$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc$",
		"$argon2id$v=19$m=65536,t=+2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
		"argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
	}
	for _, s := range bad {
		if _, err := parsePHC(s); err == nil {
			t.Errorf("parsePHC(%q) accepted", s)
		} else if !strings.HasPrefix(err.Error(), "identity: ") || (s != "" && strings.Contains(err.Error(), s)) {
			t.Errorf("parsePHC(%q) error %q", s, err)
		}
	}

	// Our own hashes round-trip.
	phc, err := hashPassword(goodPW, testParams)
	if err != nil {
		t.Fatal(err)
	}
	h, err = parsePHC(phc)
	if err != nil || h.String() != phc || h.params != testParams || len(h.salt) != saltLen || len(h.hash) != keyLen {
		t.Errorf("hashPassword = %q, parsed %+v, %v", phc, h, err)
	}
}

var phcReasons = map[string]bool{
	"too long": true, "not an $argon2id$ PHC string": true, "unsupported version": true, "want parameters m, t, p": true,
	"bad parameter m": true, "bad parameter t": true, "bad parameter p": true, "parameters out of range": true,
	"bad salt": true, "bad hash": true,
}

func FuzzParsePHC(f *testing.F) {
	f.Add(refPHC)
	f.Add("$argon2id$v=19$m=64,t=1,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("$argon2id$v=19$m=,t=,p=$$")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := parsePHC(s)
		if err != nil {
			// The message is one of a fixed set: it never repeats the input.
			why, ok := strings.CutPrefix(err.Error(), "identity: malformed password hash: ")
			if !ok || !phcReasons[why] {
				t.Errorf("unexpected error %q", err)
			}
			return
		}
		if h.String() != s {
			t.Errorf("parsePHC(%q) accepted a non-canonical form of %q", s, h.String())
		}
		if h.params.check() != nil {
			t.Errorf("parsePHC(%q) accepted out-of-range parameters %+v", s, h.params)
		}
	})
}

func TestUpgradeOnLogin(t *testing.T) {
	forBackends(t, func(t *testing.T, db *store.DB) {
		old := PasswordParams{Time: 1, Memory: 32, Threads: 1}
		e1 := newEnv(t, db, func(c *Config) { c.Password = old })
		e1.mustUser(t, "alice", goodPW)
		stored := func() phc {
			t.Helper()
			var s string
			if err := db.QueryRowContext(e1.ctx, `SELECT password_hash FROM identity_users WHERE name = 'alice'`).Scan(&s); err != nil {
				t.Fatal(err)
			}
			h, err := parsePHC(s)
			if err != nil {
				t.Fatal(err)
			}
			return h
		}
		if got := stored().params; got != old {
			t.Fatalf("stored params %+v, want %+v", got, old)
		}

		// The same database, a Directory with stronger parameters.
		e2 := newEnvWith(t, db, e1.barrier, nil)
		if _, _, err := e2.login("alice", []byte("wrong password!"), ""); err != ErrBadCredentials {
			t.Fatalf("wrong password: %v", err)
		}
		if got := stored().params; got != old {
			t.Errorf("failed login changed the hash to %+v", got)
		}
		if _, _, err := e2.login("alice", goodPW, ""); err != nil {
			t.Fatal(err)
		}
		if got := stored().params; got != testParams {
			t.Errorf("after login, stored params %+v, want %+v", got, testParams)
		}
		if _, _, err := e2.login("alice", goodPW, ""); err != nil {
			t.Errorf("login after upgrade: %v", err)
		}
		if n := e2.countEvents(t, "auth.login", "allow", ""); n != 2 {
			t.Errorf("%d allowed logins audited, want 2", n)
		}
		rehashed := 0
		for _, ev := range e2.auditEvents(t) {
			if ev.Details["password_rehashed"] == "true" {
				rehashed++
			}
		}
		if rehashed != 1 {
			t.Errorf("%d events say the password was rehashed, want 1", rehashed)
		}
	})
}
