package rotation

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/testenv"
	"github.com/warderhq/warder/internal/vault"
)

// failures returns the audit events of action with outcome failure.
func (e *env) failures(t *testing.T, action string) []audit.Event {
	t.Helper()
	evs, err := e.audit.List(e.ctx, audit.Filter{Action: action, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Event
	for _, ev := range evs {
		if ev.Outcome == audit.OutcomeFailure {
			out = append(out, ev)
		}
	}
	return out
}

// TestRotateAndVerifyWaitForTriggered: right after a check-in starts a
// background rotation, `account rotate` and `account verify` wait for it
// instead of failing with ErrBusy; rotate then makes its own rotation.
func TestRotateAndVerifyWaitForTriggered(t *testing.T) {
	for _, be := range testenv.Backends() {
		t.Run(be.Name, func(t *testing.T) {
			e := newEnv(t, be.Open(t), nil)
			e.setup(t, true)
			e.mem.mu.Lock()
			e.mem.changeDelay = 500 * time.Millisecond
			e.mem.mu.Unlock()

			e.eng.Trigger(e.ctx, "t1/app", "checkin")
			waitClaimed(t, e, "t1/app")
			res, err := e.eng.Rotate(e.ctx, origin, "t1/app")
			if err != nil || res.Outcome != Rotated {
				t.Fatalf("Rotate during a triggered rotation = %+v, %v", res, err)
			}
			e.eng.wg.Wait()
			if res.Version != 3 || e.mem.changes != 2 {
				t.Errorf("Rotate made version %d after %d changes; want its own rotation (version 3, 2 changes)", res.Version, e.mem.changes)
			}
			e.consistent(t, "t1/app", "app")

			e.eng.Trigger(e.ctx, "t1/app", "checkin")
			waitClaimed(t, e, "t1/app")
			if ok, err := e.eng.Verify(e.ctx, origin, "t1/app"); err != nil || !ok {
				t.Fatalf("Verify during a triggered rotation = %v, %v", ok, err)
			}
			e.eng.wg.Wait()
			e.consistent(t, "t1/app", "app")
			if evs := e.failures(t, "account.rotate"); len(evs) != 0 {
				t.Errorf("failure events %+v", evs)
			}
		})
	}
}

// waitClaimed returns once a rotation holds id's claim.
func waitClaimed(t *testing.T, e *env, id string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		var by string
		if err := e.db.QueryRowContext(e.ctx, `SELECT rotating_by FROM vault_accounts WHERE id = $1`, id).Scan(&by); err != nil {
			t.Fatal(err)
		}
		if by != "" {
			return
		}
	}
	t.Fatal("no rotation claimed the account")
}

// TestRotateBusyTimeout: a rotation held past BusyWait fails with ErrBusy
// as an Unavailable error, audited.
func TestRotateBusyTimeout(t *testing.T) {
	e := newEnv(t, testenv.SQLite(t), nil)
	e.setup(t, true)
	eng, err := New(Config{Vault: e.vault, Connectors: connector.Registry{"mem": e.mem}, Audit: e.audit, BusyWait: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := e.vault.ClaimRotation(e.ctx, "t1/app", "other-process", time.Minute); err != nil || !ok {
		t.Fatal(ok, err)
	}
	start := time.Now()
	_, err = eng.Rotate(e.ctx, audit.Origin{Actor: "user:admin", RequestID: "r1"}, "t1/app")
	if !errors.Is(err, ErrBusy) || !errkind.Is(err, errkind.Unavailable) || !strings.Contains(err.Error(), "did not finish within 200ms") {
		t.Fatalf("Rotate while busy = %v (kind %v)", err, errkind.Of(err))
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("gave up after %v", took)
	}
	evs := e.failures(t, "account.rotate")
	if len(evs) != 1 || evs[0].Actor != "user:admin" || evs[0].RequestID != "r1" || evs[0].Details["error"] != "busy" {
		t.Errorf("failure events %+v", evs)
	}
	if _, err := eng.Verify(e.ctx, origin, "t1/app"); !errors.Is(err, ErrBusy) {
		t.Errorf("Verify while busy = %v", err)
	}
	if e.mem.changes != 0 {
		t.Errorf("%d changes while another rotation held the account", e.mem.changes)
	}
}

// TestInitializeRefused: the target's management account may not set the
// account's first password. The add is undone (nothing was set, so
// nothing is lost), the error names the cause's category without the
// server's words, and the failure is audited.
func TestInitializeRefused(t *testing.T) {
	for _, be := range testenv.Backends() {
		t.Run(be.Name, func(t *testing.T) {
			e := newEnv(t, be.Open(t), nil)
			e.setup(t, true)
			e.mem.set("root", "the-roots-own-password")
			e.mem.refuseChange = &sqlError{code: "42501", msg: `must be superuser to alter superuser roles in ALTER ROLE "root"`}
			if _, err := e.vault.AddAccount(e.ctx, origin, vault.AccountSpec{Target: "t1", Username: "root"}); err != nil {
				t.Fatal(err)
			}
			o := audit.Origin{Actor: "user:admin", RequestID: "req-7"}
			_, err := e.eng.Initialize(e.ctx, o, "t1/root")
			if err == nil {
				t.Fatal("Initialize succeeded")
			}
			msg := err.Error()
			var re *Error
			if !errors.As(err, &re) || !errkind.Is(err, errkind.Conflict) ||
				!strings.Contains(msg, "permission denied (SQLSTATE 42501)") || !strings.Contains(msg, "the account was not added") {
				t.Errorf("error %q (kind %v)", msg, errkind.Of(err))
			}
			if strings.Contains(msg, "superuser") || strings.Contains(msg, "ALTER") {
				t.Errorf("error %q quotes the server", msg)
			}
			_, err = e.vault.Account(e.ctx, "t1/root")
			if !errkind.Is(err, errkind.NotFound) {
				t.Errorf("account after the failed add: %v; want it removed", err)
			}
			if e.mem.password("root") != "the-roots-own-password" {
				t.Error("the target's password changed")
			}
			fails := e.failures(t, "account.rotate")
			if len(fails) != 1 || fails[0].RequestID != "req-7" || fails[0].Details["error"] != "permission denied (SQLSTATE 42501)" {
				t.Errorf("account.rotate failures %+v", fails)
			}
			removes, _ := e.audit.List(e.ctx, audit.Filter{Action: "account.remove", Limit: 10})
			if len(removes) != 1 || removes[0].Details["discarded"] != "true" || removes[0].RequestID != "req-7" {
				t.Errorf("account.remove events %+v", removes)
			}
		})
	}
}

// TestInitializeUnreachable: when the target cannot tell whether it took
// the new credential, the account stays with it pending, and the error
// says how to see or remove it.
func TestInitializeUnreachable(t *testing.T) {
	e := newEnv(t, testenv.SQLite(t), nil)
	e.setup(t, true)
	if _, err := e.vault.AddAccount(e.ctx, origin, vault.AccountSpec{Target: "t1", Username: "root"}); err != nil {
		t.Fatal(err)
	}
	e.mem.down = true
	_, err := e.eng.Initialize(e.ctx, origin, "t1/root")
	if !errkind.Is(err, errkind.Unavailable) || !strings.Contains(err.Error(), "warder account rm t1/root") {
		t.Fatalf("Initialize with the target down = %v (kind %v)", err, errkind.Of(err))
	}
	a, err := e.vault.Account(e.ctx, "t1/root")
	if err != nil || !a.HasPending || a.CredentialVersion != 0 {
		t.Errorf("account = %+v, %v; want it kept with its pending version", a, err)
	}
	// Once the target answers, recovery settles it.
	e.mem.down = false
	e.mem.set("root", "unknown")
	if res, err := e.eng.Recover(e.ctx, origin, "t1/root"); err != nil || res.Outcome != Reset {
		t.Fatalf("Recover = %+v, %v", res, err)
	}
	e.consistent(t, "t1/root", "root")
	if _, err := e.eng.Initialize(e.ctx, origin, "t1/root"); !errkind.Is(err, errkind.Conflict) {
		t.Errorf("Initialize of an account with a credential: %v", err)
	}
}

// TestInitializeTakenNotVerified: the target took the first password but
// refuses logins as the account (NOLOGIN), or the change's answer was
// lost: the target may hold the pending password and nothing else, so the
// add is not undone: the account stays with it pending.
func TestInitializeTakenNotVerified(t *testing.T) {
	for name, tweak := range map[string]func(m *memTarget){
		"no login":      func(m *memTarget) { m.noLogin = "svc" },
		"answer lost":   func(m *memTarget) { m.failChangeAfter = true; m.noLogin = "svc" },
		"lost, refused": func(m *memTarget) { m.failChangeAfter = true },
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, testenv.SQLite(t), nil)
			e.setup(t, true)
			e.mem.set("svc", "the-old-password")
			tweak(e.mem)
			if _, err := e.vault.AddAccount(e.ctx, origin, vault.AccountSpec{Target: "t1", Username: "svc"}); err != nil {
				t.Fatal(err)
			}
			res, err := e.eng.Initialize(e.ctx, origin, "t1/svc")
			if res.Outcome == Rotated {
				return // the pending password logs in: promoted, nothing to undo
			}
			if err == nil {
				t.Fatalf("Initialize = %+v, nil", res)
			}
			if e.mem.password("svc") == "the-old-password" {
				t.Fatal("the change was not applied: the test does not test what it says")
			}
			a, aerr := e.vault.Account(e.ctx, "t1/svc")
			if aerr != nil {
				t.Fatalf("the account was discarded although the target took its password: %v (Initialize: %v)", aerr, err)
			}
			if !a.HasPending {
				t.Errorf("account %+v: the password the target holds is not kept", a)
			}
			_, p, ok, perr := e.vault.PendingCredential(e.ctx, "t1/svc")
			if perr != nil || !ok || string(p.Secret) != e.mem.password("svc") {
				t.Errorf("pending credential %v, %v: not the password the target holds", ok, perr)
			}
			if strings.Contains(err.Error(), "was not added") {
				t.Errorf("error %q says the account was not added", err)
			}
		})
	}
}

// TestRotateWaitHoldsNoSlot: a Rotate waiting for another rotation of its
// account holds no rotation slot: with one worker, a rotation of another
// account runs meanwhile; the waiting one goes on once the account is
// free.
func TestRotateWaitHoldsNoSlot(t *testing.T) {
	e := newEnv(t, testenv.SQLite(t), nil)
	e.setup(t, true)
	eng, err := New(Config{Vault: e.vault, Connectors: connector.Registry{"mem": e.mem}, Audit: e.audit,
		Workers: 1, BusyWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := e.vault.ClaimRotation(e.ctx, "t1/app", "other-process", time.Minute); err != nil || !ok {
		t.Fatal(ok, err)
	}
	waiting := make(chan error, 1)
	go func() {
		_, err := eng.Rotate(e.ctx, origin, "t1/app")
		waiting <- err
	}()
	// Let the first Rotate reach its wait (were it to hold the only
	// worker there, the next Rotate would wait for it: a minute).
	time.Sleep(200 * time.Millisecond)
	ctx, cancel := context.WithTimeout(e.ctx, 20*time.Second)
	defer cancel()
	if res, err := eng.Rotate(ctx, origin, "t1/mgmt"); err != nil || res.Outcome != Rotated {
		t.Fatalf("Rotate of another account while one waits = %+v, %v", res, err)
	}
	select {
	case err := <-waiting:
		t.Fatalf("the waiting Rotate ended while the account was claimed: %v", err)
	default:
	}
	if err := e.vault.ReleaseRotation(e.ctx, "t1/app", "other-process"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waiting:
		if err != nil {
			t.Fatalf("the waiting Rotate after the account was freed: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the waiting Rotate did not go on once the account was freed")
	}
}
