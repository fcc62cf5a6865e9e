package vault

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/store"
)

func TestCheckoutPolicy(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{fixedClock: true})
		v := e.vault
		e.addTarget(t, "db1")
		e.addTarget(t, "db2")
		e.addAccount(t, "db1", "app", "pw-db1-app", 3)
		e.addAccount(t, "db2", "app", "pw-db2-app", 3)
		req := func(account, who, reason, ticket string) CheckoutRequest {
			return CheckoutRequest{Account: account, Principal: user(who), Reason: reason, Ticket: ticket}
		}
		o := audit.Origin{Actor: "user:alice"}
		for _, tc := range []struct {
			name string
			req  CheckoutRequest
			want errkind.Kind
		}{
			{"no reason", req("db1/app", "alice", " ", "CHG-1"), errkind.Invalid},
			{"no ticket", req("db1/app", "alice", "fix", ""), errkind.Denied},
			{"other target", req("db2/app", "alice", "fix", "CHG-1"), errkind.Denied},
			{"not in group", req("db1/app", "ci", "fix", "CHG-1"), errkind.Denied},
			{"ttl too long", CheckoutRequest{Account: "db1/app", Principal: user("alice"), Reason: "x", TTL: 9 * time.Hour}, errkind.Invalid},
			{"bad principal", CheckoutRequest{Account: "db1/app", Principal: identity.Principal{Kind: "robot", Name: "r"}, Reason: "x"}, errkind.Invalid},
			{"bad account", req("db1", "alice", "fix", "CHG-1"), errkind.Invalid},
			{"unknown account", req("db1/nope", "alice", "fix", "CHG-1"), errkind.NotFound},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := v.Checkout(e.ctx, o, tc.req)
				wantKind(t, "Checkout", err, tc.want)
				if err != nil && strings.Contains(err.Error(), "pw-") {
					t.Errorf("error names the credential: %v", err)
				}
			})
		}
		l, err := v.Checkout(e.ctx, o, req("db1/app", "alice", "fix", "CHG-1"))
		if err != nil {
			t.Fatal(err)
		}
		if string(l.Credential.Secret) != "pw-db1-app" || l.Holder != "user:alice" || l.Ticket != "CHG-1" ||
			!l.ExpiresAt.Equal(e.clock.Now().Add(time.Hour)) || l.CredentialVersion != 1 {
			t.Errorf("Lease = %+v", l)
		}
		// The admin may check out anything, without a ticket.
		if _, err := v.Checkout(e.ctx, admin, req("db2/app", "admin", "audit", "")); err != nil {
			t.Errorf("admin checkout: %v", err)
		}
		// Decisions are audited by authz, check-outs by the vault.
		var allow, deny int
		for _, ev := range e.eventsOf(t, "authz.decide") {
			if ev.Details["action"] == "checkout" {
				if ev.Outcome == audit.OutcomeAllow {
					allow++
				} else {
					deny++
				}
			}
		}
		if allow != 3 || deny != 3 { // unknown account: allowed, then NotFound
			t.Errorf("authz.decide checkout: %d allow, %d deny; want 3, 3", allow, deny)
		}
		evs := e.eventsWith(t, "account.checkout", audit.OutcomeSuccess)
		if len(evs) != 2 || evs[0].Details["reason"] != "fix" || evs[0].Details["ticket"] != "CHG-1" || evs[0].Details["lease_id"] != l.ID {
			t.Errorf("checkout events = %+v", evs)
		}
		// Allowed, then refused (the unknown account): audited as a
		// failure; denials are authz's alone.
		evs = e.eventsWith(t, "account.checkout", audit.OutcomeFailure)
		if len(evs) != 1 || evs[0].Resource != "account:db1/nope" || evs[0].Details["error"] != "not_found" || evs[0].Actor != "user:alice" {
			t.Errorf("refused checkout events = %+v", evs)
		}
		// A holder cannot take a second slot of the same account.
		_, err = v.Checkout(e.ctx, o, req("db1/app", "alice", "fix", "CHG-1"))
		wantKind(t, "second checkout by the holder", err, errkind.Conflict)
		if evs := e.eventsWith(t, "account.checkout", audit.OutcomeFailure); len(evs) != 2 || evs[1].Details["error"] != RefusedHeldAlready {
			t.Errorf("refused checkout events = %+v", evs)
		}

		// A gateway session's check-out is authorised by connect, which
		// does not let the person check the credential out themselves.
		sess := req("db2/app", "alice", "ssh session", "")
		sess.Action = authz.ActionConnect
		if _, err := v.Checkout(e.ctx, o, sess); err != nil {
			t.Errorf("session check-out authorised by connect: %v", err)
		}
		sess.Action = authz.ActionCheckout
		_, err = v.Checkout(e.ctx, o, sess)
		wantKind(t, "connect on db2 is not checkout", err, errkind.Denied)
		sess.Action = authz.ActionRotate
		_, err = v.Checkout(e.ctx, o, sess)
		wantKind(t, "check-out authorised by rotate", err, errkind.Invalid)
	})
}

// TestExpiredLeaseNotHeld: a lease past its expiry is not held, though no
// job has ended it.
func TestExpiredLeaseNotHeld(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{fixedClock: true})
		v := e.vault
		e.addTarget(t, "db1")
		e.addAccount(t, "db1", "app", "pw-1", 1)
		e.addAccount(t, "db1", "ops", "pw-2", 1)
		if _, err := v.Checkout(e.ctx, admin, CheckoutRequest{Account: "db1/app", Principal: user("alice"), Reason: "r", Ticket: "T", TTL: time.Minute}); err != nil {
			t.Fatal(err)
		}
		if _, err := v.Checkout(e.ctx, admin, CheckoutRequest{Account: "db1/ops", Principal: user("alice"), Reason: "r", Ticket: "T", TTL: time.Minute}); err != nil {
			t.Fatal(err)
		}
		_, err := e.checkout(e.ctx, "db1/app", "bob", false)
		wantKind(t, "checkout while held", err, errkind.Conflict)
		if !strings.Contains(err.Error(), "user:alice until 2026-03-04T10:01:00Z") {
			t.Errorf("conflict message %q does not name the holder and expiry", err)
		}
		e.clock.Advance(time.Minute)
		list, err := v.Leases(e.ctx, "")
		if err != nil || len(list.Leases) != 0 {
			t.Fatalf("Leases after expiry = %+v, %v", list, err)
		}
		_, err = v.Checkin(e.ctx, admin, user("alice"), "db1/app")
		wantKind(t, "Checkin expired", err, errkind.NotFound)
		_, err = v.Extend(e.ctx, admin, user("alice"), "x", time.Minute)
		wantKind(t, "Extend unknown", err, errkind.NotFound)
		// Bob gets it although the expired lease was never ended.
		l, err := e.checkout(e.ctx, "db1/app", "bob", false)
		if err != nil {
			t.Fatalf("checkout after expiry: %v", err)
		}
		list, _ = v.Leases(e.ctx, "db1/app")
		if len(list.Leases) != 1 || list.Leases[0].ID != l.ID {
			t.Errorf("Leases = %+v", list)
		}
		// The background job ends the other one.
		if n, err := v.ExpireLeases(e.ctx); err != nil || n != 1 {
			t.Errorf("ExpireLeases = %d, %v; want 1", n, err)
		}
		if n := len(e.eventsOf(t, "account.lease_expired")); n != 2 {
			t.Errorf("%d lease_expired events, want 2", n)
		}
	})
}

func TestMaxCheckouts(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{})
		e.addTarget(t, "db1")
		e.addAccount(t, "db1", "shared", "pw-shared", 3)
		for _, who := range []string{"u1", "u2", "u3"} {
			if _, err := e.checkout(e.ctx, "db1/shared", who, false); err != nil {
				t.Fatalf("%s: %v", who, err)
			}
		}
		_, err := e.checkout(e.ctx, "db1/shared", "u4", false)
		wantKind(t, "fourth", err, errkind.Conflict)
		for _, who := range []string{"user:u1", "user:u2", "user:u3"} {
			if !strings.Contains(err.Error(), who) {
				t.Errorf("%q does not name %s", err, who)
			}
		}
		if _, err := e.vault.Checkin(e.ctx, admin, user("u2"), "db1/shared"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.checkout(e.ctx, "db1/shared", "u4", false); err != nil {
			t.Errorf("after a check-in: %v", err)
		}
		if list, _ := e.vault.Leases(e.ctx, "db1/shared"); len(list.Leases) != 3 {
			t.Errorf("Leases = %d, want 3", len(list.Leases))
		}
	})
}

func TestExtend(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{fixedClock: true, tweak: func(c *Config) { c.MaxLeaseTTL = 4 * time.Hour }})
		v := e.vault
		e.addTarget(t, "db1")
		e.addAccount(t, "db1", "app", "pw-1", 1)
		l, err := e.checkout(e.ctx, "db1/app", "alice", false)
		if err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(30 * time.Minute)
		x, err := v.Extend(e.ctx, admin, user("alice"), l.ID, 3*time.Hour)
		if err != nil || !x.ExpiresAt.Equal(l.CheckedOutAt.Add(210*time.Minute)) {
			t.Fatalf("Extend = %+v, %v", x, err)
		}
		_, err = v.Extend(e.ctx, admin, user("alice"), l.ID, 3*time.Hour+31*time.Minute)
		wantKind(t, "beyond max", err, errkind.Invalid)
		_, err = v.Extend(e.ctx, admin, user("bob"), l.ID, time.Hour)
		wantKind(t, "someone else's", err, errkind.NotFound)
		_, err = v.Extend(e.ctx, admin, user("alice"), l.ID, 0)
		wantKind(t, "zero", err, errkind.Invalid)
		e.clock.Advance(3*time.Hour - time.Second) // just before the new expiry
		if list, _ := v.Leases(e.ctx, ""); len(list.Leases) != 1 {
			t.Errorf("extended lease not held")
		}
		if n := len(e.eventsWith(t, "account.lease_extend", audit.OutcomeSuccess)); n != 1 {
			t.Errorf("%d lease_extend events", n)
		}
		// The refusals are audited, with the lease's account and why.
		var got []string
		for _, ev := range e.eventsWith(t, "account.lease_extend", audit.OutcomeFailure) {
			got = append(got, ev.Actor+" "+ev.Resource+" "+ev.Details["error"]+" "+ev.Details["lease_id"])
		}
		want := []string{
			"user:admin account:db1/app invalid " + l.ID,
			"user:admin account:db1/app not_holder " + l.ID,
			"user:admin account:db1/app invalid " + l.ID,
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("refused extensions audited as\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		_, err = v.Extend(e.ctx, audit.Origin{Actor: "user:bob"}, user("bob"), "no-such-lease", time.Hour)
		wantKind(t, "unknown lease", err, errkind.NotFound)
		if evs := e.eventsWith(t, "account.lease_extend", audit.OutcomeFailure); len(evs) != 4 ||
			evs[3].Resource != "lease:no-such-lease" || evs[3].Details["error"] != "not_found" {
			t.Errorf("refused extension of an unknown lease: %+v", evs)
		}
	})
}

// TestRelease: EndLeasesOf ends every lease of a principal and fires
// OnRelease; the account then awaits rotation until it is promoted.
func TestRelease(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{tweak: func(c *Config) { c.RotationWait = 100 * time.Millisecond }})
		v := e.vault
		var mu sync.Mutex
		var got []string
		v.OnRelease(func(_ context.Context, account, reason string) {
			mu.Lock()
			got = append(got, account+":"+reason)
			mu.Unlock()
		})
		e.addTarget(t, "db1")
		e.addAccount(t, "db1", "a", "pw-a", 1)
		e.addAccount(t, "db1", "b", "pw-b", 2)
		no := false
		if _, err := v.AddAccount(e.ctx, admin, AccountSpec{Target: "db1", Username: "c", Credential: password("pw-c"), RotateOnCheckin: &no}); err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"db1/a", "db1/b", "db1/c"} {
			if _, err := e.checkout(e.ctx, id, "alice", false); err != nil {
				t.Fatal(err)
			}
		}
		lb, err := e.checkout(e.ctx, "db1/b", "bob", false)
		if err != nil {
			t.Fatal(err)
		}
		n, err := v.EndLeasesOf(e.ctx, admin, user("alice"))
		if err != nil || n != 3 {
			t.Fatalf("EndLeasesOf = %d, %v; want 3", n, err)
		}
		mu.Lock()
		if strings.Join(got, ",") != "db1/a:holder_disabled,db1/b:holder_disabled" {
			t.Errorf("OnRelease calls = %v", got)
		}
		got = nil
		mu.Unlock()
		list, _ := v.Leases(e.ctx, "")
		if len(list.Leases) != 1 || list.Leases[0].ID != lb.ID {
			t.Errorf("Leases after EndLeasesOf = %+v", list.Leases)
		}
		if n := len(e.eventsOf(t, "account.lease_revoked")); n != 3 {
			t.Errorf("%d lease_revoked events, want 3", n)
		}

		// db1/a awaits rotation: not handed out until promoted.
		a := mustAccount(t, e, "db1/a")
		if !a.RotationDue {
			t.Fatalf("db1/a not rotation due: %+v", a)
		}
		if due, _ := v.AccountsDue(e.ctx, time.Now()); len(due) != 2 {
			t.Errorf("AccountsDue = %d, want 2 (a, b)", len(due))
		}
		// With no rotation to lift the gate within RotationWait, a
		// check-out waits for it, then fails Unavailable (audited).
		_, err = e.checkout(e.ctx, "db1/a", "bob", false)
		wantKind(t, "checkout awaiting rotation", err, errkind.Unavailable)
		if Refusal(err) != RefusedRotationTimeout {
			t.Errorf("refusal %q, want %q", Refusal(err), RefusedRotationTimeout)
		}
		if evs := e.eventsWith(t, "account.checkout", audit.OutcomeFailure); len(evs) != 1 || evs[0].Details["error"] != RefusedRotationTimeout {
			t.Errorf("refused checkout events = %+v", evs)
		}
		if _, err := e.checkout(e.ctx, "db1/c", "bob", false); err != nil {
			t.Errorf("db1/c does not rotate on check-in: %v", err)
		}
		ver, err := v.StagePending(e.ctx, admin, "db1/a", *password("pw-a2"))
		if err != nil {
			t.Fatal(err)
		}
		if err := v.PromotePending(e.ctx, admin, "db1/a", ver); err != nil {
			t.Fatal(err)
		}
		l, err := e.checkout(e.ctx, "db1/a", "bob", false)
		if err != nil || string(l.Credential.Secret) != "pw-a2" {
			t.Fatalf("checkout after rotation = %v, %v", l.Credential, err)
		}

		// Check-in and forced check-in fire it too; ClearRotationDue lifts the gate.
		if _, err := v.Checkin(e.ctx, admin, user("bob"), "db1/a"); err != nil {
			t.Fatal(err)
		}
		if _, err := v.ForceCheckin(e.ctx, admin, lb.ID); err != nil {
			t.Fatal(err)
		}
		_, err = v.ForceCheckin(e.ctx, admin, lb.ID)
		wantKind(t, "ForceCheckin twice", err, errkind.NotFound)
		mu.Lock()
		if strings.Join(got, ",") != "db1/a:checkin,db1/b:forced" {
			t.Errorf("OnRelease calls = %v", got)
		}
		mu.Unlock()
		if err := v.ClearRotationDue(e.ctx, admin, "db1/b", "target decommissioned"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.checkout(e.ctx, "db1/b", "bob", false); err != nil {
			t.Errorf("after ClearRotationDue: %v", err)
		}
	})
}

// TestWaitCancel: a waiter whose context ends leaves the waitlist.
func TestWaitCancel(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{})
		e.addTarget(t, "db1")
		e.addAccount(t, "db1", "app", "pw-1", 1)
		if _, err := e.checkout(e.ctx, "db1/app", "alice", false); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(e.ctx, 300*time.Millisecond)
		defer cancel()
		_, err := e.checkout(ctx, "db1/app", "bob", true)
		wantKind(t, "wait cancelled", err, errkind.Unavailable)
		list, _ := e.vault.Leases(e.ctx, "db1/app")
		if len(list.Waiting) != 0 {
			t.Errorf("waitlist after cancel = %+v", list.Waiting)
		}
		// A waiter is served when the holder checks in.
		done := make(chan error, 1)
		go func() {
			_, err := e.checkout(e.ctx, "db1/app", "bob", true)
			done <- err
		}()
		waitFor(t, func() bool { l, _ := e.vault.Leases(e.ctx, "db1/app"); return len(l.Waiting) == 1 })
		if _, err := e.vault.Checkin(e.ctx, admin, user("alice"), "db1/app"); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("waiter: %v", err)
		}
		// A waiter whose principal is disabled is removed and fails.
		go func() {
			_, err := e.checkout(e.ctx, "db1/app", "alice", true)
			done <- err
		}()
		waitFor(t, func() bool { l, _ := e.vault.Leases(e.ctx, "db1/app"); return len(l.Waiting) == 1 })
		if n, err := e.vault.EndLeasesOf(e.ctx, admin, user("alice")); err != nil || n != 0 {
			t.Fatalf("EndLeasesOf = %d, %v", n, err)
		}
		wantKind(t, "disabled waiter", <-done, errkind.Conflict)
		if l, _ := e.vault.Leases(e.ctx, "db1/app"); len(l.Waiting) != 0 || len(l.Leases) != 1 {
			t.Errorf("after removal: %+v", l)
		}
	})
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWaitlistGate: a free slot is kept for the head of the waitlist, which
// may be a request of another process; a waiter not heard from for the
// stale period is dropped.
func TestWaitlistGate(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{fixedClock: true})
		e.addTarget(t, "db1")
		e.addAccount(t, "db1", "app", "pw-1", 1)
		now := store.Micros(e.clock.Now())
		if _, err := e.db.ExecContext(e.ctx, `INSERT INTO vault_waitlist (id, account_id, principal, enqueued_at, last_seen)
			VALUES ('other', 'db1/app', 'user:bob', $1, $1)`, now); err != nil {
			t.Fatal(err)
		}
		_, err := e.checkout(e.ctx, "db1/app", "alice", false)
		wantKind(t, "checkout with a waiter ahead", err, errkind.Conflict)
		if !strings.Contains(err.Error(), "promised to 1 waiting") {
			t.Errorf("message %q", err)
		}
		if l, _ := e.vault.Leases(e.ctx, "db1/app"); len(l.Waiting) != 1 || l.Waiting[0].Principal != "user:bob" || l.Waiting[0].Position != 1 {
			t.Errorf("Waiting = %+v", l.Waiting)
		}
		e.clock.Advance(e.vault.stale + time.Microsecond)
		if l, _ := e.vault.Leases(e.ctx, "db1/app"); len(l.Waiting) != 0 {
			t.Errorf("stale waiter listed: %+v", l.Waiting)
		}
		if _, err := e.checkout(e.ctx, "db1/app", "alice", false); err != nil {
			t.Errorf("checkout after the waiter went stale: %v", err)
		}
	})
}
