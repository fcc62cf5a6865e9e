package vault

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

func TestCredentialStateMachine(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{fixedClock: true})
		v := e.vault
		e.addTarget(t, "db1")
		if _, err := v.AddAccount(e.ctx, admin, AccountSpec{Target: "db1", Username: "app", Credential: password("pw-v1"), RotateEvery: time.Hour}); err != nil {
			t.Fatal(err)
		}
		wantCurrent := func(ver int64, secret string) {
			t.Helper()
			got, c, err := v.CurrentCredential(e.ctx, "db1/app")
			if err != nil || got != ver || string(c.Secret) != secret || c.Kind != connector.Password {
				t.Fatalf("CurrentCredential = %d %q %v, want %d %q", got, c.Secret, err, ver, secret)
			}
		}
		wantCurrent(1, "pw-v1")
		if _, _, ok, err := v.PendingCredential(e.ctx, "db1/app"); ok || err != nil {
			t.Fatalf("PendingCredential before staging = %v, %v", ok, err)
		}

		// Stage v2; a second stage is a Conflict.
		ver, err := v.StagePending(e.ctx, admin, "db1/app", connector.Credential{Secret: []byte("pw-v2")})
		if err != nil || ver != 2 {
			t.Fatalf("StagePending = %d, %v", ver, err)
		}
		_, err = v.StagePending(e.ctx, admin, "db1/app", connector.Credential{Secret: []byte("pw-x")})
		wantKind(t, "second StagePending", err, errkind.Conflict)
		pv, pc, ok, err := v.PendingCredential(e.ctx, "db1/app")
		if !ok || err != nil || pv != 2 || string(pc.Secret) != "pw-v2" {
			t.Fatalf("PendingCredential = %d %q %v %v", pv, pc.Secret, ok, err)
		}
		wantCurrent(1, "pw-v1")
		if p, _ := v.AccountsWithPending(e.ctx); len(p) != 1 || !p[0].HasPending {
			t.Errorf("AccountsWithPending = %v", p)
		}
		// A pending version gates check-out: which credential is live is unknown.
		_, err = e.checkout(e.ctx, "db1/app", "alice", false)
		wantKind(t, "checkout while pending", err, errkind.Conflict)

		wantKind(t, "Promote wrong version", v.PromotePending(e.ctx, admin, "db1/app", 1), errkind.Conflict)
		wantKind(t, "Promote unknown version", v.PromotePending(e.ctx, admin, "db1/app", 9), errkind.NotFound)
		e.clock.Advance(10 * time.Minute)
		if err := v.PromotePending(e.ctx, admin, "db1/app", 2); err != nil {
			t.Fatal(err)
		}
		wantCurrent(2, "pw-v2")
		a := mustAccount(t, e, "db1/app")
		now := e.clock.Now()
		if a.Status != StatusOK || a.HasPending || a.CredentialVersion != 2 || !a.LastRotatedAt.Equal(now) || !a.NextRotationAt.Equal(now.Add(time.Hour)) {
			t.Errorf("after promote: %+v", a)
		}

		// Stage v3 and drop it: v2 stays current.
		if ver, err = v.StagePending(e.ctx, admin, "db1/app", connector.Credential{Secret: []byte("pw-v3")}); err != nil || ver != 3 {
			t.Fatalf("StagePending = %d, %v", ver, err)
		}
		if err := v.DropPending(e.ctx, admin, "db1/app", 3, "target refused"); err != nil {
			t.Fatal(err)
		}
		wantKind(t, "Drop twice", v.DropPending(e.ctx, admin, "db1/app", 3, "again"), errkind.Conflict)
		wantCurrent(2, "pw-v2")
		// v4 promoted: v2 previous, v1 retired, v3 retired (dropped).
		if ver, err = v.StagePending(e.ctx, admin, "db1/app", connector.Credential{Secret: []byte("pw-v4")}); err != nil || ver != 4 {
			t.Fatalf("StagePending = %d, %v", ver, err)
		}
		if err := v.PromotePending(e.ctx, admin, "db1/app", 4); err != nil {
			t.Fatal(err)
		}
		hist, err := v.Versions(e.ctx, "db1/app")
		if err != nil {
			t.Fatal(err)
		}
		var states []string
		for _, h := range hist {
			states = append(states, h.State)
		}
		if got := strings.Join(states, ","); got != "current,retired,previous,retired" {
			t.Errorf("history states (v4..v1) = %s", got)
		}

		// Due: one hour after the last rotation.
		if due, _ := v.AccountsDue(e.ctx, e.clock.Now().Add(59*time.Minute)); len(due) != 0 {
			t.Errorf("AccountsDue early = %v", due)
		}
		if due, _ := v.AccountsDue(e.ctx, e.clock.Now().Add(time.Hour)); len(due) != 1 {
			t.Errorf("AccountsDue = %v", due)
		}

		// Status changes; out_of_sync raises an alert event.
		if err := v.SetStatus(e.ctx, admin, "db1/app", StatusOutOfSync, "login refused"); err != nil {
			t.Fatal(err)
		}
		wantKind(t, "SetStatus bad", v.SetStatus(e.ctx, admin, "db1/app", "weird", ""), errkind.Invalid)
		if evs := e.eventsOf(t, "account.out_of_sync"); len(evs) != 1 || evs[0].Outcome != audit.OutcomeFailure {
			t.Errorf("out_of_sync events = %v", evs)
		}
		at := e.clock.Now().Add(time.Minute)
		if err := v.MarkVerified(e.ctx, "db1/app", true, at); err != nil {
			t.Fatal(err)
		}
		if a := mustAccount(t, e, "db1/app"); a.Status != StatusOK || !a.LastVerifiedAt.Equal(at) {
			t.Errorf("after MarkVerified(true): %+v", a)
		}
		if err := v.MarkVerified(e.ctx, "db1/app", false, at.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if a := mustAccount(t, e, "db1/app"); a.Status != StatusOutOfSync || !a.LastVerifiedAt.Equal(at) {
			t.Errorf("after MarkVerified(false): %+v", a)
		}
		if n := len(e.eventsOf(t, "account.out_of_sync")); n != 2 {
			t.Errorf("%d out_of_sync events, want 2", n)
		}
		for _, ev := range e.eventsOf(t, "account.rotate") {
			if ev.Resource != "account:db1/app" {
				t.Errorf("rotate event %+v", ev)
			}
		}
	})
}

// TestAADSwap: a credential ciphertext copied to another account's row, or
// to another version of the same account, does not decrypt there.
func TestAADSwap(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{})
		e.addTarget(t, "db1")
		e.addAccount(t, "db1", "a", "secret-of-a", 1)
		e.addAccount(t, "db1", "b", "secret-of-b", 1)
		if _, err := e.vault.StagePending(e.ctx, admin, "db1/a", connector.Credential{Secret: []byte("a-v2")}); err != nil {
			t.Fatal(err)
		}
		var ct []byte
		if err := e.db.QueryRowContext(e.ctx, `SELECT credential_ct FROM vault_credentials WHERE account_id = 'db1/a' AND version = 1`).Scan(&ct); err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{
			`UPDATE vault_credentials SET credential_ct = $1 WHERE account_id = 'db1/b' AND version = 1`,
			`UPDATE vault_credentials SET credential_ct = $1 WHERE account_id = 'db1/a' AND version = 2`,
		} {
			if _, err := e.db.ExecContext(e.ctx, q, ct); err != nil {
				t.Fatal(err)
			}
		}
		_, c, err := e.vault.CurrentCredential(e.ctx, "db1/b")
		if !errors.Is(err, barrier.ErrDecrypt) || c.Secret != nil {
			t.Errorf("swapped account: %q, %v; want ErrDecrypt", c.Secret, err)
		}
		_, c, _, err = e.vault.PendingCredential(e.ctx, "db1/a")
		if !errors.Is(err, barrier.ErrDecrypt) || c.Secret != nil {
			t.Errorf("swapped version: %q, %v; want ErrDecrypt", c.Secret, err)
		}
		if _, c, err := e.vault.CurrentCredential(e.ctx, "db1/a"); err != nil || string(c.Secret) != "secret-of-a" {
			t.Errorf("original: %q, %v", c.Secret, err)
		}
	})
}

// TestNoCredentialLeaks runs every operation touching a credential or
// secret and scans what leaves the vault for it: audit events, account,
// lease and secret JSON, error messages.
func TestNoCredentialLeaks(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{})
		v := e.vault
		secrets := []string{"Leak-Initial-7f3a", "Leak-Staged-91bc", "Leak-Dropped-44de", "Leak-AppValue-0c1d"}
		e.addTarget(t, "db1")
		e.addTarget(t, "app")
		e.addAccount(t, "db1", "app", secrets[0], 1)
		var out []any
		l, err := e.checkout(e.ctx, "db1/app", "alice", false)
		if err != nil || l.Credential == nil || string(l.Credential.Secret) != secrets[0] {
			t.Fatalf("Checkout = %+v, %v", l, err)
		}
		out = append(out, l)
		_, err = e.checkout(e.ctx, "db1/app", "bob", false)
		out = append(out, err.Error())
		if _, err := v.Checkin(e.ctx, admin, user("alice"), "db1/app"); err != nil {
			t.Fatal(err)
		}
		ver, _ := v.StagePending(e.ctx, admin, "db1/app", connector.Credential{Secret: []byte(secrets[1])})
		if err := v.PromotePending(e.ctx, admin, "db1/app", ver); err != nil {
			t.Fatal(err)
		}
		ver, _ = v.StagePending(e.ctx, admin, "db1/app", connector.Credential{Secret: []byte(secrets[2])})
		if err := v.DropPending(e.ctx, admin, "db1/app", ver, "refused"); err != nil {
			t.Fatal(err)
		}
		if _, err := v.PutSecret(e.ctx, admin, "app/db", map[string]string{"DB_PASSWORD": secrets[3]}); err != nil {
			t.Fatal(err)
		}
		data, meta, err := v.GetSecret(e.ctx, admin, user("ci"), "app/db", 0, authz.Context{})
		if err != nil || data["DB_PASSWORD"] != secrets[3] {
			t.Fatalf("GetSecret = %v, %v", data, err)
		}
		a, _ := v.Account(e.ctx, "db1/app")
		list, _ := v.Leases(e.ctx, "")
		hist, _ := v.Versions(e.ctx, "db1/app")
		out = append(out, meta, a, list, hist, e.events(t))
		b, err := json.Marshal(out)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range secrets {
			if strings.Contains(string(b), s) {
				t.Errorf("%q leaked into %s", s, b)
			}
		}
		if len(e.eventsWith(t, "account.checkout", audit.OutcomeSuccess)) != 1 || len(e.eventsOf(t, "secret.read")) != 1 {
			t.Error("missing checkout or secret.read event")
		}
	})
}

func TestClaimRotation(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{fixedClock: true})
		v := e.vault
		e.addTarget(t, "db1")
		e.addAccount(t, "db1", "app", "pw-1", 1)
		claim := func(owner string, want bool) {
			t.Helper()
			got, err := v.ClaimRotation(e.ctx, "db1/app", owner, time.Minute)
			if err != nil || got != want {
				t.Fatalf("ClaimRotation(%s) = %v, %v; want %v", owner, got, err, want)
			}
		}
		claim("p1", true)
		claim("p2", false)
		claim("p1", true) // renewal
		if err := v.ReleaseRotation(e.ctx, "db1/app", "p2"); err != nil {
			t.Fatal(err)
		}
		claim("p2", false) // p2's release did not free p1's claim
		if err := v.ReleaseRotation(e.ctx, "db1/app", "p1"); err != nil {
			t.Fatal(err)
		}
		claim("p2", true)
		// p2 crashes: its claim expires.
		e.clock.Advance(59 * time.Second)
		claim("p3", false)
		e.clock.Advance(time.Second)
		claim("p3", true)
		_, err := v.ClaimRotation(e.ctx, "db1/nope", "p1", time.Minute)
		wantKind(t, "claim unknown", err, errkind.NotFound)
		_, err = v.ClaimRotation(e.ctx, "db1/app", "", time.Minute)
		wantKind(t, "claim no owner", err, errkind.Invalid)
	})
}

// TestClaimRotationTwoProcesses: two store.DBs on one PostgreSQL database
// race for claims; exactly one wins each round.
func TestClaimRotationTwoProcesses(t *testing.T) {
	url := testenv.PostgresURL(t)
	open := func() *store.DB {
		db, err := store.Open(context.Background(), store.Config{PostgresURL: url})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	e1 := newEnv(t, open(), envOpts{})
	e2 := newEnv(t, open(), envOpts{unsealKey: e1.key})
	e1.addTarget(t, "db1")
	e1.addAccount(t, "db1", "app", "pw-1", 1)
	for round := range 20 {
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i := range 16 {
			v := e1.vault
			if i%2 == 1 {
				v = e2.vault
			}
			owner := "r" + itoa(round) + "-o" + itoa(i)
			wg.Go(func() {
				ok, err := v.ClaimRotation(context.Background(), "db1/app", owner, time.Minute)
				if err != nil {
					t.Error(err)
				}
				if ok {
					wins.Add(1)
					if err := v.ReleaseRotation(context.Background(), "db1/app", owner); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		if n := wins.Load(); n < 1 {
			t.Fatalf("round %d: no claim won", round)
		}
	}
	// Held claims are exclusive across the two processes.
	ok1, _ := e1.vault.ClaimRotation(e1.ctx, "db1/app", "one", time.Minute)
	ok2, _ := e2.vault.ClaimRotation(e2.ctx, "db1/app", "two", time.Minute)
	if !ok1 || ok2 {
		t.Errorf("claims across processes: %v, %v; want true, false", ok1, ok2)
	}
}

func TestRewrap(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{})
		v := e.vault
		e.addTarget(t, "db1")
		e.addAccount(t, "db1", "a", "pw-a", 1)
		e.addAccount(t, "db1", "b", "pw-b", 1)
		if _, err := v.PutSecret(e.ctx, admin, "app/x", map[string]string{"K": "v1"}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.barrier.Rotate(e.ctx); err != nil {
			t.Fatal(err)
		}
		e.barrier.Register("vault", v)
		n, err := e.barrier.RewrapAll(e.ctx)
		if err != nil || n != 3 {
			t.Fatalf("RewrapAll = %d, %v; want 3", n, err)
		}
		if n, err := v.Rewrap(e.ctx, e.barrier); err != nil || n != 0 {
			t.Errorf("second Rewrap = %d, %v; want 0", n, err)
		}
		if _, c, err := v.CurrentCredential(e.ctx, "db1/b"); err != nil || string(c.Secret) != "pw-b" {
			t.Errorf("after rewrap: %q, %v", c.Secret, err)
		}
		data, _, err := v.GetSecret(e.ctx, admin, user("admin"), "app/x", 0, authz.Context{})
		if err != nil || data["K"] != "v1" {
			t.Errorf("secret after rewrap: %v, %v", data, err)
		}
	})
}
