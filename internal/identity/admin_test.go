package identity

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// TestDisableEnableMachine: disabling a machine revokes its tokens and
// refuses its logins and new secret ids until it is enabled again; its
// secret ids survive.
func TestDisableEnableMachine(t *testing.T) {
	forBackends(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, func(c *Config) { c.SourceBurst = 100 })
		ctx, d := e.ctx, e.dir
		m, err := d.CreateMachine(ctx, admin, MachineSpec{Name: "ci"})
		if err != nil {
			t.Fatal(err)
		}
		if m.Status != StatusActive {
			t.Errorf("new machine status %q, want active", m.Status)
		}
		sid, _, err := d.IssueSecretID(ctx, admin, "ci", SecretIDSpec{})
		if err != nil {
			t.Fatal(err)
		}
		src := netip.MustParseAddr("10.1.2.3")
		presented, _, err := d.LoginMachine(ctx, ciOrigin, m.RoleID, sid, src)
		if err != nil {
			t.Fatal(err)
		}

		if err := d.DisableMachine(ctx, admin, "ci"); err != nil {
			t.Fatal(err)
		}
		if got, err := d.Machine(ctx, "ci"); err != nil || got.Status != StatusDisabled {
			t.Errorf("Machine after disable = %+v, %v", got, err)
		}
		if _, err := d.Authenticate(ctx, presented); err != ErrBadToken {
			t.Errorf("Authenticate after disable = %v, want ErrBadToken", err)
		}
		if _, _, err := d.LoginMachine(ctx, ciOrigin, m.RoleID, sid, src); err != ErrMachineCredentials {
			t.Errorf("LoginMachine while disabled = %v, want ErrMachineCredentials", err)
		}
		if n := e.countEvents(t, "auth.login", "deny", "disabled"); n != 1 {
			t.Errorf("%d auth.login denials for a disabled machine, want 1", n)
		}
		if _, _, err := d.IssueSecretID(ctx, admin, "ci", SecretIDSpec{}); !errkind.Is(err, errkind.NotFound) {
			t.Errorf("IssueSecretID while disabled = %v, want NotFound", err)
		}
		evs := e.lifecycle()
		if len(evs) != 1 || evs[0] != (LifecycleEvent{Kind: EventMachineDisabled, Principal: Principal{KindMachine, "ci"}, At: e.clock.Now()}) {
			t.Errorf("lifecycle events = %+v", evs)
		}

		if err := d.EnableMachine(ctx, admin, "ci"); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Authenticate(ctx, presented); err != ErrBadToken {
			t.Errorf("a token revoked by disable works after enable: %v", err)
		}
		if _, _, err := d.LoginMachine(ctx, ciOrigin, m.RoleID, sid, src); err != nil {
			t.Errorf("LoginMachine after enable = %v", err)
		}
		for _, op := range []func() error{
			func() error { return d.DisableMachine(ctx, admin, "nobody") },
			func() error { return d.EnableMachine(ctx, admin, "nobody") },
		} {
			wantKind(t, "operation on an unknown machine", op(), errkind.NotFound)
		}
		if n := e.countEvents(t, "identity.machine.disable", "success", ""); n != 1 {
			t.Errorf("%d identity.machine.disable events, want 1", n)
		}
		if n := e.countEvents(t, "identity.machine.enable", "success", ""); n != 1 {
			t.Errorf("%d identity.machine.enable events, want 1", n)
		}
	})
}

// TestRevokeSecretIDs: secret ids are listed without their secrets and
// revoked by accessor, one or all.
func TestRevokeSecretIDs(t *testing.T) {
	forBackends(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, func(c *Config) { c.SourceBurst = 100 })
		ctx, d := e.ctx, e.dir
		m, err := d.CreateMachine(ctx, admin, MachineSpec{Name: "ci"})
		if err != nil {
			t.Fatal(err)
		}
		src := netip.MustParseAddr("10.1.2.3")
		var sids []string
		var accessors []string
		for i := range 3 {
			sid, info, err := d.IssueSecretID(ctx, admin, "ci", SecretIDSpec{Uses: i, CIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
			if err != nil {
				t.Fatal(err)
			}
			sids, accessors = append(sids, sid), append(accessors, info.ID)
			e.clock.Advance(time.Second)
		}
		if _, _, err := d.LoginMachine(ctx, ciOrigin, m.RoleID, sids[2], src); err != nil {
			t.Fatal(err)
		}
		list, err := d.SecretIDs(ctx, "ci")
		if err != nil || len(list) != 3 {
			t.Fatalf("SecretIDs = %+v, %v", list, err)
		}
		for i, in := range list {
			if in.ID != accessors[i] || in.Uses != i || len(in.CIDRs) != 1 || in.CreatedAt.IsZero() || in.ExpiresAt.IsZero() {
				t.Errorf("SecretIDs[%d] = %+v", i, in)
			}
		}
		if list[2].UsesLeft != 1 {
			t.Errorf("uses left after one of two logins = %d, want 1", list[2].UsesLeft)
		}
		if _, err := d.SecretIDs(ctx, "nobody"); !errkind.Is(err, errkind.NotFound) {
			t.Errorf("SecretIDs(nobody) = %v", err)
		}

		wantKind(t, "revoke a malformed accessor", d.RevokeSecretID(ctx, admin, "ci", sids[0]), errkind.Invalid)
		wantKind(t, "revoke an unknown accessor", d.RevokeSecretID(ctx, admin, "ci", "0123456789abcdef01"), errkind.NotFound)
		wantKind(t, "revoke on another machine", d.RevokeSecretID(ctx, admin, "other", accessors[0]), errkind.NotFound)
		if err := d.RevokeSecretID(ctx, admin, "ci", accessors[0]); err != nil {
			t.Fatal(err)
		}
		if _, _, err := d.LoginMachine(ctx, ciOrigin, m.RoleID, sids[0], src); err != ErrMachineCredentials {
			t.Errorf("login with a revoked secret id = %v", err)
		}
		if _, _, err := d.LoginMachine(ctx, ciOrigin, m.RoleID, sids[1], src); err != nil {
			t.Errorf("login with another secret id = %v", err)
		}

		got, err := d.RevokeSecretIDs(ctx, admin, "ci")
		if want := slices.Sorted(slices.Values(accessors[1:])); err != nil || !slices.Equal(got, want) {
			t.Errorf("RevokeSecretIDs = %v, %v; want %v", got, err, want)
		}
		for _, sid := range sids {
			if _, _, err := d.LoginMachine(ctx, ciOrigin, m.RoleID, sid, src); err != ErrMachineCredentials {
				t.Errorf("login after revoking all = %v", err)
			}
		}
		if got, err := d.RevokeSecretIDs(ctx, admin, "ci"); err != nil || len(got) != 0 {
			t.Errorf("RevokeSecretIDs with none left = %v, %v", got, err)
		}
		if _, err := d.RevokeSecretIDs(ctx, admin, "nobody"); !errkind.Is(err, errkind.NotFound) {
			t.Errorf("RevokeSecretIDs(nobody) = %v", err)
		}
		var revokes int
		for _, ev := range e.auditEvents(t) {
			if ev.Action != "identity.machine.secret_id.revoke" {
				continue
			}
			revokes++
			for _, sid := range sids {
				if js := jsonString(t, ev); strings.Contains(js, sid[len("wsi1.")+2*idBytes+1:]) {
					t.Errorf("audit event holds a secret id: %s", js)
				}
			}
		}
		if revokes != 3 {
			t.Errorf("%d identity.machine.secret_id.revoke events, want 3", revokes)
		}
	})
}

// TestUnlockUser: Lockout shows a lock and UnlockUser ends it.
func TestUnlockUser(t *testing.T) {
	forBackends(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, func(c *Config) {
			c.MaxFailures = 3
			c.LockoutDuration = 10 * time.Minute
			c.SourceBurst = 100
		})
		e.mustUser(t, "alice", goodPW)
		if l, err := e.dir.Lockout(e.ctx, "alice"); err != nil || l != (Lockout{}) {
			t.Errorf("Lockout before failures = %+v, %v", l, err)
		}
		wrong := []byte("wrong password!!")
		e.login("alice", wrong, "")
		if l, err := e.dir.Lockout(e.ctx, "alice"); err != nil || l != (Lockout{FailedLogins: 1}) {
			t.Errorf("Lockout after a failure = %+v, %v", l, err)
		}
		e.login("alice", wrong, "")
		e.login("alice", wrong, "")
		l, err := e.dir.Lockout(e.ctx, "alice")
		if want := e.clock.Now().Add(10 * time.Minute); err != nil || l.FailedLogins != 3 || !l.LockedUntil.Equal(want) {
			t.Errorf("Lockout when locked = %+v, %v; want locked until %v", l, err, want)
		}
		if _, _, err := e.login("alice", goodPW, ""); err != ErrRateLimited {
			t.Fatalf("locked login = %v", err)
		}
		if err := e.dir.UnlockUser(e.ctx, admin, "alice"); err != nil {
			t.Fatal(err)
		}
		if l, err := e.dir.Lockout(e.ctx, "alice"); err != nil || l != (Lockout{}) {
			t.Errorf("Lockout after unlock = %+v, %v", l, err)
		}
		if _, _, err := e.login("alice", goodPW, ""); err != nil {
			t.Errorf("login after unlock = %v", err)
		}
		// Unlocking a name that is not locked is fine; an unknown user is not.
		if err := e.dir.UnlockUser(e.ctx, admin, "alice"); err != nil {
			t.Errorf("second unlock = %v", err)
		}
		wantKind(t, "UnlockUser(nobody)", e.dir.UnlockUser(e.ctx, admin, "nobody"), errkind.NotFound)
		var was []string
		for _, ev := range e.auditEvents(t) {
			if ev.Action == "identity.user.unlock" {
				was = append(was, ev.Details["was_locked"])
			}
		}
		if !slices.Equal(was, []string{"true", "false"}) {
			t.Errorf("identity.user.unlock was_locked = %v, want [true false]", was)
		}

		// A lock that ended, and failures too old to count, show as none.
		e.login("alice", wrong, "")
		e.clock.Advance(11 * time.Minute)
		if l, err := e.dir.Lockout(e.ctx, "alice"); err != nil || l != (Lockout{}) {
			t.Errorf("Lockout of an old failure = %+v, %v", l, err)
		}
	})
}

// TestSetPasswordRevokesTokens: an admin's password reset revokes the
// user's tokens, but the one that asked when it is theirs.
func TestSetPasswordRevokesTokens(t *testing.T) {
	forBackends(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, nil)
		ctx := e.ctx
		e.mustUser(t, "alice", goodPW)
		e.mustUser(t, "bob", goodPW)
		own, ownTok, err := e.login("alice", goodPW, "")
		if err != nil {
			t.Fatal(err)
		}
		other, _, err := e.login("alice", goodPW, "")
		if err != nil {
			t.Fatal(err)
		}
		child, _, err := e.dir.IssueDBToken(ctx, admin, ownTok, DBTokenSpec{Target: "pg"})
		if err != nil {
			t.Fatal(err)
		}
		bobs, _, err := e.login("bob", goodPW, "")
		if err != nil {
			t.Fatal(err)
		}
		newPW := []byte("another good passphrase")
		n, err := e.dir.SetPassword(ctx, admin, "alice", newPW, ownTok.ID)
		if err != nil || n != 1 {
			t.Fatalf("SetPassword = %d, %v; want 1 token revoked", n, err)
		}
		for name, tc := range map[string]struct {
			tok  string
			live bool
		}{"kept": {own, true}, "issued by the kept": {child, true}, "other": {other, false}, "another user's": {bobs, true}} {
			if _, err := e.dir.Authenticate(ctx, tc.tok); (err == nil) != tc.live {
				t.Errorf("%s token: Authenticate = %v, want live %v", name, err, tc.live)
			}
		}
		if _, _, err := e.login("alice", goodPW, ""); err != ErrBadCredentials {
			t.Errorf("login with the old password = %v", err)
		}
		// Without a token to keep, every one goes.
		if n, err := e.dir.SetPassword(ctx, admin, "alice", goodPW, ""); err != nil || n != 2 {
			t.Errorf("SetPassword without keep = %d, %v; want 2 revoked", n, err)
		}
		if _, err := e.dir.Authenticate(ctx, own); err != ErrBadToken {
			t.Errorf("kept token after a reset without keep = %v", err)
		}
		for _, ev := range e.auditEvents(t) {
			if ev.Action == "identity.user.password" && ev.Details["tokens_revoked"] == "" {
				t.Errorf("identity.user.password event without tokens_revoked: %+v", ev)
			}
		}
	})
}
