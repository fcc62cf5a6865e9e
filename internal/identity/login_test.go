package identity

import (
	"bytes"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/store"
)

func TestLoginFailuresLookAlike(t *testing.T) {
	forBackends(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, func(c *Config) { c.SourceBurst = 100 })
		e.mustUser(t, "alice", goodPW)
		e.mustUser(t, "nopw", nil)
		e.mustUser(t, "gone", goodPW)
		if err := e.dir.DisableUser(e.ctx, admin, "gone"); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name, user string
			pw         []byte
			reason     string
		}{
			{"unknown user", "mallory", goodPW, "unknown_user"},
			{"invalid name", "Not A Name!", goodPW, "unknown_user"},
			{"wrong password", "alice", []byte("wrong password!!"), "bad_password"},
			{"empty password", "alice", nil, "bad_password"},
			{"disabled user", "gone", goodPW, "disabled"},
			{"user without password", "nopw", goodPW, "no_password"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				before := e.countEvents(t, "auth.login", audit.OutcomeDeny, tt.reason)
				tok, got, err := e.login(tt.user, tt.pw, "")
				if err != ErrBadCredentials || tok != "" || got.ID != "" {
					t.Errorf("Login = %q, %v, want ErrBadCredentials", tok, err)
				}
				if after := e.countEvents(t, "auth.login", audit.OutcomeDeny, tt.reason); after != before+1 {
					t.Errorf("deny events with reason %s: %d -> %d", tt.reason, before, after)
				}
			})
		}
		// The unknown name is not recorded (it may be a mistyped password).
		for _, ev := range e.auditEvents(t) {
			if ev.Action == "auth.login" && ev.Details["reason"] == "unknown_user" && ev.Resource != "user" {
				t.Errorf("unknown user recorded as %q", ev.Resource)
			}
		}
		tok, got, err := e.login("alice", goodPW, "")
		if err != nil || tok == "" || got.Principal != (Principal{KindUser, "alice"}) || got.MFA {
			t.Fatalf("good login = %+v, %v", got, err)
		}
		if got.ExpiresAt != e.clock.Now().Add(8*time.Hour) || got.MaxExpiresAt != e.clock.Now().Add(24*time.Hour) {
			t.Errorf("login token expires %v (max %v), want defaults 8h (24h)", got.ExpiresAt, got.MaxExpiresAt)
		}
		evs, _ := e.audit.List(e.ctx, audit.Filter{Action: "auth.login", Actor: "user:alice"})
		if len(evs) != 1 || evs[0].Outcome != audit.OutcomeAllow || evs[0].Details["token"] != got.ID {
			t.Errorf("allowed login events = %+v", evs)
		}
	})
}

func TestLockout(t *testing.T) {
	forBackends(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, func(c *Config) {
			c.MaxFailures = 3
			c.LockoutDuration = 10 * time.Minute
			c.SourceBurst = 100
		})
		e.mustUser(t, "alice", goodPW)
		e.mustUser(t, "bob", goodPW)
		wrong := []byte("wrong password!!")
		fail := func(n int) {
			t.Helper()
			for range n {
				if _, _, err := e.login("alice", wrong, ""); err != ErrBadCredentials {
					t.Fatalf("wrong password: %v", err)
				}
			}
		}
		// A success clears the count.
		fail(2)
		if _, _, err := e.login("alice", goodPW, ""); err != nil {
			t.Fatal(err)
		}
		fail(2)
		if _, _, err := e.login("alice", goodPW, ""); err != nil {
			t.Fatalf("after 2+2 failures with a success between: %v", err)
		}
		if n := e.countEvents(t, "auth.lockout", audit.OutcomeDeny, ""); n != 0 {
			t.Errorf("%d lockouts too early", n)
		}
		fail(3)
		if n := e.countEvents(t, "auth.lockout", audit.OutcomeDeny, "user"); n != 1 {
			t.Errorf("%d user lockout events, want 1", n)
		}
		if _, _, err := e.login("alice", goodPW, ""); err != ErrRateLimited {
			t.Errorf("locked user with the right password: %v, want ErrRateLimited", err)
		}
		if _, _, err := e.login("bob", goodPW, ""); err != nil {
			t.Errorf("another user is not locked: %v", err)
		}
		if n := e.countEvents(t, "auth.login", audit.OutcomeDeny, "locked"); n != 1 {
			t.Errorf("%d 'locked' login events, want 1", n)
		}
		e.clock.Advance(10*time.Minute - time.Second)
		if _, _, err := e.login("alice", goodPW, ""); err != ErrRateLimited {
			t.Errorf("a second before the lock ends: %v", err)
		}
		e.clock.Advance(time.Second)
		if _, _, err := e.login("alice", goodPW, ""); err != nil {
			t.Errorf("after the lockout: %v", err)
		}
		// EnableUser (an admin's unlock) clears a lockout too.
		fail(3)
		if err := e.dir.EnableUser(e.ctx, admin, "alice"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.login("alice", goodPW, ""); err != nil {
			t.Errorf("after EnableUser: %v", err)
		}
	})
}

func TestSourceRateLimit(t *testing.T) {
	forBackends(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, func(c *Config) {
			c.SourceBurst = 3
			c.SourceRate = 1.0 / 60
			c.MaxFailures = 100
		})
		e.mustUser(t, "alice", goodPW)
		from := func(src, user string, pw []byte) error {
			_, _, err := e.dir.Login(e.ctx, audit.Origin{Source: src}, LoginRequest{User: user, Password: pw, Source: netip.MustParseAddr(src)})
			return err
		}
		for i := range 3 {
			if err := from("203.0.113.9", "mallory", goodPW); err != ErrBadCredentials {
				t.Fatalf("failure %d: %v", i, err)
			}
		}
		if n := e.countEvents(t, "auth.lockout", audit.OutcomeDeny, "source"); n != 1 {
			t.Errorf("%d source lockout events, want 1", n)
		}
		if err := from("203.0.113.9", "alice", goodPW); err != ErrRateLimited {
			t.Errorf("4th attempt, right password: %v, want ErrRateLimited", err)
		}
		if err := from("::ffff:203.0.113.9", "alice", goodPW); err != ErrRateLimited {
			t.Errorf("same source as an IPv4-mapped address: %v, want ErrRateLimited", err)
		}
		if err := from("203.0.113.10", "alice", goodPW); err != nil {
			t.Errorf("another source: %v", err)
		}
		e.clock.Advance(time.Minute)
		if err := from("203.0.113.9", "alice", goodPW); err != nil {
			t.Errorf("a minute later: %v", err)
		}
		if n := e.countEvents(t, "auth.login", audit.OutcomeDeny, "rate_limited"); n != 2 {
			t.Errorf("%d rate_limited events, want 2", n)
		}

		// IPv6: one /64 is one source.
		for i := range 3 {
			if err := from("2001:db8:1:2::"+string(rune('a'+i)), "mallory", goodPW); err != ErrBadCredentials {
				t.Fatalf("v6 failure %d: %v", i, err)
			}
		}
		if err := from("2001:db8:1:2:ffff::1", "alice", goodPW); err != ErrRateLimited {
			t.Errorf("same /64: %v, want ErrRateLimited", err)
		}
		if err := from("2001:db8:1:3::1", "alice", goodPW); err != nil {
			t.Errorf("other /64: %v", err)
		}
	})
}

// TestLockoutSameForEveryName checks that lockout does not tell which names
// exist: an unknown name, a disabled user, a user without a password and an
// active user are locked after the same failures, with the same answers,
// for the same time.
func TestLockoutSameForEveryName(t *testing.T) {
	forBackends(t, func(t *testing.T, db *store.DB) {
		const maxFailures, lockout = 3, 10 * time.Minute
		e := newEnv(t, db, func(c *Config) {
			c.MaxFailures = maxFailures
			c.LockoutDuration = lockout
			c.SourceBurst = 1000
		})
		e.mustUser(t, "alice", goodPW)
		e.mustUser(t, "nopw", nil)
		e.mustUser(t, "gone", goodPW)
		if err := e.dir.DisableUser(e.ctx, admin, "gone"); err != nil {
			t.Fatal(err)
		}
		const unknown = "mallory-s3cret" // an unknown name, perhaps a mistyped password
		wrong := []byte("wrong password!!")
		names := []string{unknown, "Not A Name!", "gone", "nopw", "alice"}

		// Every name answers the same, attempt by attempt.
		want := []error{ErrBadCredentials, ErrBadCredentials, ErrBadCredentials, ErrRateLimited, ErrRateLimited}
		got := map[string][]error{}
		for range want {
			for _, name := range names {
				_, _, err := e.login(name, wrong, "")
				got[name] = append(got[name], err)
			}
		}
		for _, name := range names {
			if fmt.Sprint(got[name]) != fmt.Sprint(want) {
				t.Errorf("%q: errors %v, want %v", name, got[name], want)
			}
		}
		if n := e.countEvents(t, "auth.lockout", audit.OutcomeDeny, "user"); n != len(names) {
			t.Errorf("%d user lockout events, want %d", n, len(names))
		}
		if n := e.countEvents(t, "auth.login", audit.OutcomeDeny, "locked"); n != 2*len(names) {
			t.Errorf("%d 'locked' login events, want %d", n, 2*len(names))
		}

		// The right password is refused while locked, and does not reset
		// or extend the lock; nor does a commit that finds the name locked.
		e.clock.Advance(lockout / 2)
		if _, _, err := e.login("alice", goodPW, ""); err != ErrRateLimited {
			t.Errorf("locked user with the right password: %v, want ErrRateLimited", err)
		}
		key, err := e.dir.lockKey(e.ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		err = db.InTx(e.ctx, func(tx *sql.Tx) error {
			locked, err := e.dir.resetFailuresTx(e.ctx, tx, key, e.clock.Now())
			if !locked {
				t.Errorf("resetFailuresTx of a locked name: not locked")
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(lockout/2 - time.Second)
		for _, name := range names {
			if _, _, err := e.login(name, goodPW, ""); err != ErrRateLimited {
				t.Errorf("%q a second before the lock ends: %v, want ErrRateLimited", name, err)
			}
		}

		// When the lock ends, every name may try again, and the count
		// starts from zero.
		e.clock.Advance(time.Second)
		if _, _, err := e.login("alice", goodPW, ""); err != nil {
			t.Errorf("alice after the lock: %v", err)
		}
		for _, name := range names[:len(names)-1] {
			for i := range maxFailures {
				if _, _, err := e.login(name, goodPW, ""); err != ErrBadCredentials {
					t.Errorf("%q, attempt %d after the lock: %v, want ErrBadCredentials", name, i+1, err)
				}
			}
			if _, _, err := e.login(name, goodPW, ""); err != ErrRateLimited {
				t.Errorf("%q locked again: %v, want ErrRateLimited", name, err)
			}
		}

		// An admin's EnableUser and SetPassword clear the lock.
		if err := e.dir.EnableUser(e.ctx, admin, "gone"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.login("gone", goodPW, ""); err != nil {
			t.Errorf("after EnableUser: %v", err)
		}
		if _, err := e.dir.SetPassword(e.ctx, admin, "nopw", goodPW, ""); err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.login("nopw", goodPW, ""); err != nil {
			t.Errorf("after SetPassword: %v", err)
		}

		// The unknown name is in no audit event, log or row.
		for where, text := range map[string]string{"audit events": jsonString(t, e.auditEvents(t)), "logs": e.logs.String()} {
			if strings.Contains(text, unknown) {
				t.Errorf("%s contain the unknown name", where)
			}
		}
		plain := sha256.Sum256([]byte(unknown))
		for _, k := range e.failureKeys(t) {
			if bytes.Contains(k, []byte(unknown)) || bytes.Equal(k, plain[:]) {
				t.Errorf("identity_login_failures holds the unknown name or its plain hash")
			}
		}
	})
}

// TestLockoutCountExpires checks that failures further apart than the
// lockout duration do not add up, and that rows which no longer count are
// pruned.
func TestLockoutCountExpires(t *testing.T) {
	forBackends(t, func(t *testing.T, db *store.DB) {
		const lockout = 10 * time.Minute
		e := newEnv(t, db, func(c *Config) {
			c.MaxFailures = 3
			c.LockoutDuration = lockout
			c.SourceBurst = 1000
		})
		fail := func(name string, n int) {
			t.Helper()
			for range n {
				if _, _, err := e.login(name, goodPW, ""); err != ErrBadCredentials {
					t.Fatalf("%s: %v, want ErrBadCredentials", name, err)
				}
			}
		}
		fail("u1", 2)
		e.clock.Advance(lockout - time.Second)
		fail("u1", 1) // 3 within the duration, each of the previous: locked
		if _, _, err := e.login("u1", goodPW, ""); err != ErrRateLimited {
			t.Errorf("3 failures close together: %v, want ErrRateLimited", err)
		}
		fail("u2", 2)
		e.clock.Advance(lockout + time.Second)
		fail("u2", 2) // the count started again
		for i := range 2 * pruneBatch {
			fail(fmt.Sprint("spray", i), 1)
		}
		if n := len(e.failureKeys(t)); n != 2*pruneBatch+1 {
			t.Errorf("%d rows, want %d (u2 and the sprayed names)", n, 2*pruneBatch+1)
		}

		// Once nothing counts any more, failures prune the table.
		e.clock.Advance(lockout + time.Second)
		fail("u3", 3)
		if n := len(e.failureKeys(t)); n != 1 {
			t.Errorf("%d rows after pruning, want 1 (u3)", n)
		}
		if _, _, err := e.login("u3", goodPW, ""); err != ErrRateLimited {
			t.Errorf("u3: %v, want ErrRateLimited", err)
		}
	})
}

// failureKeys returns the keys of identity_login_failures.
func (e *env) failureKeys(t testing.TB) [][]byte {
	t.Helper()
	rows, err := e.db.QueryContext(e.ctx, `SELECT name_mac FROM identity_login_failures`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var keys [][]byte
	for rows.Next() {
		var k []byte
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}
