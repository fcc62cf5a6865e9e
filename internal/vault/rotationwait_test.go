package vault

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

// fakeRotation does what the rotation engine does to an account, slowly:
// claims it, stages a new credential, promotes it and releases the claim,
// through v (which may be another process's vault than the waiter's).
// It returns when the claim is held; done receives the outcome.
func fakeRotation(t *testing.T, v *Vault, id, next string, hold time.Duration) (done <-chan error) {
	t.Helper()
	ctx := context.Background()
	if ok, err := v.ClaimRotation(ctx, id, "fake-engine", time.Minute); err != nil || !ok {
		t.Fatalf("ClaimRotation = %v, %v", ok, err)
	}
	ch := make(chan error, 1)
	go func() {
		ver, err := v.StagePending(ctx, system, id, *password(next))
		if err == nil {
			time.Sleep(hold) // the target is slow to change
			err = v.PromotePending(ctx, system, id, ver)
		}
		if rerr := v.ReleaseRotation(ctx, id, "fake-engine"); err == nil {
			err = rerr
		}
		ch <- err
	}()
	return ch
}

// checkinRotates checks alice's lease of id in on a vault whose lease ends
// mark rotation due (a rotation engine listens), as `warder checkin` does.
func checkinRotates(t *testing.T, e *env, id string) {
	t.Helper()
	if _, err := e.checkout(e.ctx, id, "alice", false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.vault.Checkin(e.ctx, admin, user("alice"), id); err != nil {
		t.Fatal(err)
	}
	if a := mustAccount(t, e, id); !a.RotationDue {
		t.Fatalf("%s not rotation due after the check-in", id)
	}
}

// TestCheckoutWaitsForRotation: a check-out right after a check-in that
// rotates the account waits for the rotation and gets the new credential,
// whether the rotation runs in its process (woken at once) or another
// (seen by polling), instead of failing with "is being rotated".
func TestCheckoutWaitsForRotation(t *testing.T) {
	run := func(t *testing.T, waiter, rotator *env) {
		waiter.vault.OnRelease(func(context.Context, string, string) {})
		rotator.vault.OnRelease(func(context.Context, string, string) {})
		waiter.addTarget(t, "db1")
		waiter.addAccount(t, "db1", "app", "pw-old", 1)
		checkinRotates(t, waiter, "db1/app")

		// The rotation the check-in triggered is still running.
		const hold = 700 * time.Millisecond
		start := time.Now()
		done := fakeRotation(t, rotator.vault, "db1/app", "pw-new", hold)
		l, err := waiter.checkout(waiter.ctx, "db1/app", "bob", false)
		if err != nil {
			t.Fatalf("checkout during the rotation: %v", err)
		}
		if string(l.Credential.Secret) != "pw-new" || l.CredentialVersion != 2 {
			t.Errorf("checkout got version %d, want the rotated credential (2)", l.CredentialVersion)
		}
		if took := time.Since(start); took < hold {
			t.Errorf("checkout returned after %v, before the rotation ended (%v)", took, hold)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if evs := waiter.eventsWith(t, "account.checkout", audit.OutcomeFailure); len(evs) != 0 {
			t.Errorf("a check-out that waited was audited as refused: %+v", evs)
		}
	}
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{})
		run(t, e, e)
	})
	t.Run("two processes", func(t *testing.T) {
		url := testenv.PostgresURL(t)
		open := func() *store.DB {
			db, err := store.Open(context.Background(), store.Config{PostgresURL: url})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		}
		e1 := newEnv(t, open(), envOpts{tweak: func(c *Config) { c.WaitPoll = 50 * time.Millisecond }})
		e2 := newEnv(t, open(), envOpts{unsealKey: e1.key})
		run(t, e1, e2)
	})
}

// TestCheckoutRotationRefusals: a check-out does not wait when waiting
// could not help, and every refusal is audited with its category.
func TestCheckoutRotationRefusals(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{tweak: func(c *Config) { c.RotationWait = 20 * time.Second }})
		v := e.vault
		v.OnRelease(func(context.Context, string, string) {})
		e.addTarget(t, "db1")
		e.addAccount(t, "db1", "a", "pw-a", 1)
		e.addAccount(t, "db1", "b", "pw-b", 2)

		// A rotation that gave up: pending kept, out of sync, no claim.
		if _, err := v.StagePending(e.ctx, system, "db1/a", *password("pw-a2")); err != nil {
			t.Fatal(err)
		}
		if err := v.SetStatus(e.ctx, system, "db1/a", StatusOutOfSync, "neither logs in"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err := e.checkout(e.ctx, "db1/a", "bob", false)
		wantKind(t, "out of sync", err, errkind.Conflict)
		if Refusal(err) != RefusedOutOfSync || !strings.Contains(err.Error(), "account show db1/a") {
			t.Errorf("out of sync: %v (refusal %q)", err, Refusal(err))
		}
		// Still held by others (max_checkouts 2): its rotation cannot run yet.
		if _, err := e.checkout(e.ctx, "db1/b", "u1", false); err != nil {
			t.Fatal(err)
		}
		checkinRotates(t, e, "db1/b")
		_, err = e.checkout(e.ctx, "db1/b", "bob", false)
		wantKind(t, "rotation due while held", err, errkind.Conflict)
		if Refusal(err) != RefusedRotationDue {
			t.Errorf("refusal %q, want %q", Refusal(err), RefusedRotationDue)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("refusals took %v: they waited", took)
		}
		// The request's context bounds the wait.
		if _, err := e.vault.Checkin(e.ctx, admin, user("u1"), "db1/b"); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(e.ctx, 200*time.Millisecond)
		defer cancel()
		_, err = e.checkout(ctx, "db1/b", "bob", false)
		wantKind(t, "context ends", err, errkind.Unavailable)

		var got []string
		for _, ev := range e.eventsWith(t, "account.checkout", audit.OutcomeFailure) {
			if ev.Details["lease_id"] != "" || ev.Details["reason"] != "maintenance" || ev.Details["ticket"] != "CHG-1" {
				t.Errorf("refusal event details %v", ev.Details)
			}
			got = append(got, ev.Actor+" "+ev.Resource+" "+ev.Details["error"])
		}
		want := []string{
			"user:bob account:db1/a " + RefusedOutOfSync,
			"user:bob account:db1/b " + RefusedRotationDue,
			"user:bob account:db1/b " + RefusedWaitEnded,
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("refusals audited:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
}

// TestWaitlistAudited: joining a waitlist is audited, and so is a check-out
// refused because the account is checked out or the wait ended.
func TestWaitlistAudited(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{})
		e.addTarget(t, "db1")
		e.addAccount(t, "db1", "app", "pw-1", 1)
		if _, err := e.checkout(e.ctx, "db1/app", "alice", false); err != nil {
			t.Fatal(err)
		}
		_, err := e.checkout(e.ctx, "db1/app", "bob", false)
		wantKind(t, "busy", err, errkind.Conflict)
		ctx, cancel := context.WithTimeout(e.ctx, 300*time.Millisecond)
		defer cancel()
		_, err = e.checkout(ctx, "db1/app", "bob", true)
		wantKind(t, "wait ended", err, errkind.Unavailable)

		joins := e.eventsOf(t, "account.waitlist_join")
		if len(joins) != 1 || joins[0].Actor != "user:bob" || joins[0].Resource != "account:db1/app" ||
			joins[0].Outcome != audit.OutcomeSuccess || joins[0].Details["position"] != "1" || joins[0].Details["reason"] != "maintenance" {
			t.Errorf("waitlist_join events %+v", joins)
		}
		var got []string
		for _, ev := range e.eventsWith(t, "account.checkout", audit.OutcomeFailure) {
			got = append(got, ev.Details["error"]+" wait="+ev.Details["wait"])
		}
		if want := RefusedCheckedOut + " wait=," + RefusedWaitEnded + " wait=true"; strings.Join(got, ",") != want {
			t.Errorf("refusals audited %q, want %q", strings.Join(got, ","), want)
		}
	})
}

// TestClaimRotationWait: a second claimant waits for the first claim's
// release (woken at once in-process), for at most its wait, or until its
// context ends.
func TestClaimRotationWait(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{tweak: func(c *Config) { c.WaitPoll = 10 * time.Second }})
		v := e.vault
		e.addTarget(t, "db1")
		e.addAccount(t, "db1", "app", "pw-1", 1)
		if ok, err := v.ClaimRotation(e.ctx, "db1/app", "p1", time.Minute); err != nil || !ok {
			t.Fatalf("claim p1 = %v, %v", ok, err)
		}
		start := time.Now()
		if ok, err := v.ClaimRotationWait(e.ctx, "db1/app", "p2", time.Minute, 100*time.Millisecond); err != nil || ok {
			t.Fatalf("claim p2 while p1 holds = %v, %v; want false after the wait", ok, err)
		}
		if took := time.Since(start); took < 100*time.Millisecond {
			t.Errorf("gave up after %v, before its wait", took)
		}
		ctx, cancel := context.WithTimeout(e.ctx, 50*time.Millisecond)
		defer cancel()
		if _, err := v.ClaimRotationWait(ctx, "db1/app", "p2", time.Minute, time.Minute); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("claim with an ending context: %v", err)
		}
		go func() {
			time.Sleep(200 * time.Millisecond)
			v.ReleaseRotation(context.Background(), "db1/app", "p1")
		}()
		start = time.Now()
		if ok, err := v.ClaimRotationWait(e.ctx, "db1/app", "p2", time.Minute, time.Minute); err != nil || !ok {
			t.Fatalf("claim p2 after p1's release = %v, %v", ok, err)
		}
		// Woken by the release, not the (10 s) poll.
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("claimed %v after the release", took)
		}
	})
}

// TestLeasesHeldBy lists one principal's leases and waits only.
func TestLeasesHeldBy(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{})
		e.addTarget(t, "db1")
		e.addAccount(t, "db1", "a", "pw-a", 1)
		e.addAccount(t, "db1", "b", "pw-b", 1)
		la, _ := e.checkout(e.ctx, "db1/a", "alice", false)
		if _, err := e.checkout(e.ctx, "db1/b", "bob", false); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(e.ctx)
		defer cancel()
		go e.checkout(ctx, "db1/b", "alice", true)
		waitFor(t, func() bool { l, _ := e.vault.Leases(e.ctx, ""); return len(l.Waiting) == 1 })

		l, err := e.vault.LeasesHeldBy(e.ctx, "", "user:alice")
		if err != nil || len(l.Leases) != 1 || l.Leases[0].ID != la.ID || len(l.Waiting) != 1 || l.Waiting[0].Principal != "user:alice" {
			t.Errorf("alice's leases = %+v, %v", l, err)
		}
		if l, _ := e.vault.LeasesHeldBy(e.ctx, "db1/b", "user:alice"); len(l.Leases) != 0 || len(l.Waiting) != 1 {
			t.Errorf("alice's leases of db1/b = %+v", l)
		}
		if l, _ := e.vault.LeasesHeldBy(e.ctx, "", "user:carol"); len(l.Leases) != 0 || len(l.Waiting) != 0 {
			t.Errorf("carol's leases = %+v", l)
		}
		_, err = e.vault.LeasesHeldBy(e.ctx, "", "")
		wantKind(t, "no principal", err, errkind.Invalid)
	})
}

// TestDiscardAccount undoes the add of an account that never had a
// credential, and refuses to discard one that has.
func TestDiscardAccount(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{})
		v := e.vault
		e.addTarget(t, "db1")
		e.addAccount(t, "db1", "kept", "pw-1", 1)
		if _, err := v.AddAccount(e.ctx, admin, AccountSpec{Target: "db1", Username: "gen"}); err != nil {
			t.Fatal(err)
		}
		ver, err := v.StagePending(e.ctx, system, "db1/gen", connector.Credential{Secret: []byte("pw-never-set")})
		if err != nil {
			t.Fatal(err)
		}
		// Only the holder of the rotation claim, for the pending version
		// it checked.
		err = v.DiscardAccount(e.ctx, admin, "db1/gen", "owner-1", ver, "the target refused")
		wantKind(t, "discard without the claim", err, errkind.Conflict)
		if ok, err := v.ClaimRotation(e.ctx, "db1/gen", "owner-1", time.Minute); !ok || err != nil {
			t.Fatalf("ClaimRotation = %v, %v", ok, err)
		}
		err = v.DiscardAccount(e.ctx, admin, "db1/gen", "owner-2", ver, "the target refused")
		wantKind(t, "discard by another owner", err, errkind.Conflict)
		err = v.DiscardAccount(e.ctx, admin, "db1/gen", "owner-1", ver+1, "the target refused")
		wantKind(t, "discard of another pending version", err, errkind.Conflict)
		if _, err := v.Account(e.ctx, "db1/gen"); err != nil {
			t.Fatalf("refused discards removed the account: %v", err)
		}
		if err := v.DiscardAccount(e.ctx, admin, "db1/gen", "owner-1", ver, "the target refused"); err != nil {
			t.Fatal(err)
		}
		_, err = v.Account(e.ctx, "db1/gen")
		wantKind(t, "discarded account", err, errkind.NotFound)
		var n int
		if err := e.db.QueryRowContext(e.ctx, `SELECT COUNT(*) FROM vault_credentials WHERE account_id = 'db1/gen'`).Scan(&n); err != nil || n != 0 {
			t.Errorf("%d credential rows left, %v", n, err)
		}
		evs := e.eventsOf(t, "account.remove")
		if len(evs) != 1 || evs[0].Details["discarded"] != "true" || evs[0].Details["reason"] != "the target refused" {
			t.Errorf("account.remove events %+v", evs)
		}
		if ok, err := v.ClaimRotation(e.ctx, "db1/kept", "owner-1", time.Minute); !ok || err != nil {
			t.Fatalf("ClaimRotation = %v, %v", ok, err)
		}
		err = v.DiscardAccount(e.ctx, admin, "db1/kept", "owner-1", 0, "no")
		wantKind(t, "discard an account with a credential", err, errkind.Conflict)
	})
}
