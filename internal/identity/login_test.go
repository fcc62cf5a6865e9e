package identity

import (
	"net/netip"
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

func TestSourceLimiterBounded(t *testing.T) {
	l := newSourceLimiter(1, 2)
	now := time.Unix(0, 0)
	for i := range maxBuckets + 10 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.fail(a, now)
	}
	if len(l.buckets) > maxBuckets {
		t.Errorf("%d buckets, more than %d", len(l.buckets), maxBuckets)
	}
	// Later, refilled buckets are pruned to make room.
	l.fail(netip.MustParseAddr("192.0.2.1"), now.Add(time.Hour))
	if len(l.buckets) != 1 {
		t.Errorf("%d buckets after pruning, want 1", len(l.buckets))
	}
}
