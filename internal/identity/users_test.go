package identity

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

var goodPW = []byte("correct horse battery")

func TestCreateUserValidation(t *testing.T) {
	e := newEnv(t, sqliteDB(t), nil)
	tests := []struct {
		name string
		spec UserSpec
		kind errkind.Kind
	}{
		{"empty name", UserSpec{Name: ""}, errkind.Invalid},
		{"upper case", UserSpec{Name: "Alice"}, errkind.Invalid},
		{"leading dot", UserSpec{Name: ".alice"}, errkind.Invalid},
		{"space", UserSpec{Name: "al ice"}, errkind.Invalid},
		{"65 chars", UserSpec{Name: strings.Repeat("a", 65)}, errkind.Invalid},
		{"bad email", UserSpec{Name: "a", Email: "not an address"}, errkind.Invalid},
		{"email with name", UserSpec{Name: "a", Email: "Alice <a@example.com>"}, errkind.Invalid},
		{"control in display name", UserSpec{Name: "a", DisplayName: "x\x00y"}, errkind.Invalid},
		{"short password", UserSpec{Name: "a", Password: []byte("elevenchars")}, errkind.Invalid},
		{"empty password", UserSpec{Name: "a", Password: []byte{}}, errkind.Invalid},
		{"huge password", UserSpec{Name: "a", Password: make([]byte, MaxPasswordBytes+1)}, errkind.Invalid},
		{"short in bytes, long in runes", UserSpec{Name: "a", Password: []byte("ééééééééééé")}, errkind.Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.dir.CreateUser(e.ctx, admin, tt.spec)
			wantKind(t, "CreateUser", err, tt.kind)
			if err != nil && tt.spec.Password != nil && len(tt.spec.Password) > 0 && strings.Contains(err.Error(), string(tt.spec.Password)) {
				t.Errorf("error repeats the password: %v", err)
			}
		})
	}
	for _, ok := range []UserSpec{
		{Name: "a"},
		{Name: "0.b_c-d", Email: "b@example.com", DisplayName: "Bé Ç"},
		{Name: strings.Repeat("z", 64), Password: []byte("twelve chars")},
	} {
		if _, err := e.dir.CreateUser(e.ctx, admin, ok); err != nil {
			t.Errorf("CreateUser(%+v) = %v", ok.Name, err)
		}
	}
}

// sqliteDB is a fresh SQLite store for tests of logic that does not
// depend on the backend.
func sqliteDB(t *testing.T) *store.DB { return testenv.SQLite(t) }

func TestUserCRUD(t *testing.T) {
	forBackends(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, nil)
		ctx := e.ctx
		u, err := e.dir.CreateUser(ctx, admin, UserSpec{Name: "alice", DisplayName: "Alice A.", Email: "alice@example.com", Password: goodPW})
		if err != nil {
			t.Fatal(err)
		}
		want := User{Name: "alice", DisplayName: "Alice A.", Email: "alice@example.com", Status: StatusActive, HasPassword: true,
			CreatedAt: e.clock.Now(), UpdatedAt: e.clock.Now()}
		if u != want {
			t.Errorf("CreateUser = %+v, want %+v", u, want)
		}
		if got, err := e.dir.User(ctx, "alice"); err != nil || got != want {
			t.Errorf("User = %+v, %v; want %+v", got, err, want)
		}
		if _, err := e.dir.CreateUser(ctx, admin, UserSpec{Name: "alice"}); !errkind.Is(err, errkind.Conflict) {
			t.Errorf("duplicate CreateUser = %v, want Conflict", err)
		}
		e.mustUser(t, "bob", nil)
		us, err := e.dir.Users(ctx)
		if err != nil || len(us) != 2 || us[0].Name != "alice" || us[1].Name != "bob" || us[1].HasPassword {
			t.Errorf("Users = %+v, %v", us, err)
		}
		if _, err := e.dir.User(ctx, "nobody"); !errkind.Is(err, errkind.NotFound) {
			t.Errorf("User(nobody) = %v, want NotFound", err)
		}
		got := jsonString(t, u)
		for _, k := range []string{`"name"`, `"display_name"`, `"email"`, `"status"`, `"has_password"`, `"mfa_enrolled"`, `"created_at"`, `"updated_at"`} {
			if !strings.Contains(got, k) {
				t.Errorf("JSON %s lacks %s", got, k)
			}
		}

		// SetPassword gives bob a password he can log in with.
		if _, _, err := e.login("bob", goodPW, ""); err != ErrBadCredentials {
			t.Errorf("login without password = %v", err)
		}
		setPW := func(name string, pw []byte) error {
			_, err := e.dir.SetPassword(ctx, admin, name, pw, "")
			return err
		}
		wantKind(t, "SetPassword short", setPW("bob", []byte("short")), errkind.Invalid)
		wantKind(t, "SetPassword unknown", setPW("nobody", goodPW), errkind.NotFound)
		if err := setPW("bob", goodPW); err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.login("bob", goodPW, ""); err != nil {
			t.Errorf("login after SetPassword = %v", err)
		}
		for _, op := range []func() error{
			func() error { return e.dir.DisableUser(ctx, admin, "nobody") },
			func() error { return e.dir.EnableUser(ctx, admin, "nobody") },
			func() error { return e.dir.DeleteUser(ctx, admin, "nobody") },
		} {
			wantKind(t, "operation on unknown user", op(), errkind.NotFound)
		}
		if n := len(e.lifecycle()); n != 0 {
			t.Errorf("%d lifecycle events after failed operations", n)
		}
		if n := e.countEvents(t, "identity.user.create", "success", ""); n != 2 {
			t.Errorf("%d identity.user.create events, want 2", n)
		}
	})
}

func TestDisableEnableDelete(t *testing.T) {
	forBackends(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, nil)
		ctx := e.ctx
		e.mustUser(t, "alice", goodPW)
		tok1, t1, err := e.login("alice", goodPW, "")
		if err != nil {
			t.Fatal(err)
		}
		tok2, _, err := e.login("alice", goodPW, "")
		if err != nil {
			t.Fatal(err)
		}
		if got, err := e.dir.Authenticate(ctx, tok1); err != nil || got.ID != t1.ID || got.Actor() != "user:alice" {
			t.Fatalf("Authenticate = %+v, %v", got, err)
		}

		// The hook sees the change committed: it reads through another connection.
		var sawStatus string
		e.dir.Subscribe(func(ctx context.Context, ev LifecycleEvent) {
			if ev.Kind == EventUserDisabled {
				u, err := e.dir.User(ctx, ev.Principal.Name)
				if err != nil {
					t.Errorf("hook: User: %v", err)
				}
				sawStatus = u.Status
			}
		})
		if err := e.dir.DisableUser(ctx, admin, "alice"); err != nil {
			t.Fatal(err)
		}
		if sawStatus != StatusDisabled {
			t.Errorf("hook saw status %q, want disabled (fired before commit?)", sawStatus)
		}
		for _, tok := range []string{tok1, tok2} {
			wantErr(t, "Authenticate after disable", func() error { _, err := e.dir.Authenticate(ctx, tok); return err }(), ErrBadToken)
		}
		wantErr(t, "login while disabled", func() error { _, _, err := e.login("alice", goodPW, ""); return err }(), ErrBadCredentials)
		evs := e.lifecycle()
		if len(evs) != 1 || evs[0] != (LifecycleEvent{Kind: EventUserDisabled, Principal: Principal{KindUser, "alice"}, At: e.clock.Now()}) {
			t.Errorf("lifecycle events = %+v", evs)
		}

		if err := e.dir.EnableUser(ctx, admin, "alice"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.dir.Authenticate(ctx, tok1); err != ErrBadToken {
			t.Errorf("Authenticate old token after enable = %v, want ErrBadToken", err)
		}
		tok3, _, err := e.login("alice", goodPW, "")
		if err != nil {
			t.Fatal(err)
		}

		// Defence in depth: a disabled status refuses even an unrevoked token.
		if _, err := db.ExecContext(ctx, `UPDATE identity_users SET status = 'disabled' WHERE name = 'alice'`); err != nil {
			t.Fatal(err)
		}
		if _, err := e.dir.Authenticate(ctx, tok3); err != ErrBadToken {
			t.Errorf("Authenticate with status disabled but token not revoked = %v", err)
		}
		if _, err := db.ExecContext(ctx, `UPDATE identity_users SET status = 'active' WHERE name = 'alice'`); err != nil {
			t.Fatal(err)
		}
		if _, err := e.dir.Authenticate(ctx, tok3); err != nil {
			t.Fatalf("Authenticate after status restored = %v", err)
		}

		if err := e.dir.DeleteUser(ctx, admin, "alice"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.dir.Authenticate(ctx, tok3); err != ErrBadToken {
			t.Errorf("Authenticate after delete = %v", err)
		}
		if _, err := e.dir.User(ctx, "alice"); !errkind.Is(err, errkind.NotFound) {
			t.Errorf("User after delete = %v", err)
		}
		var revoked int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM identity_tokens WHERE principal_name = 'alice' AND revoked_at <> 0`).Scan(&revoked); err != nil || revoked != 3 {
			t.Errorf("%d revoked tokens, %v; want 3", revoked, err)
		}
		evs = e.lifecycle()
		if len(evs) != 2 || evs[1].Kind != EventUserDeleted || evs[1].Principal != (Principal{KindUser, "alice"}) {
			t.Errorf("lifecycle events = %+v", evs)
		}
		// A new alice does not inherit the old one's tokens.
		e.mustUser(t, "alice", goodPW)
		if _, err := e.dir.Authenticate(ctx, tok3); err != ErrBadToken {
			t.Errorf("Authenticate after re-create = %v", err)
		}
	})
}

func TestBootstrapInOneTx(t *testing.T) {
	forBackends(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, nil)
		ctx := e.ctx
		var secret string
		err := db.InTx(ctx, func(tx *sql.Tx) error {
			if _, err := e.dir.CreateUserTx(ctx, tx, admin, UserSpec{Name: "admin"}); err != nil {
				return err
			}
			if _, err := e.dir.CreateGroupTx(ctx, tx, admin, "admins", "administrators"); err != nil {
				return err
			}
			if err := e.dir.AddMemberTx(ctx, tx, admin, "admins", Member{"user", "admin"}); err != nil {
				return err
			}
			var err error
			secret, _, err = e.dir.IssueTx(ctx, tx, TokenSpec{Principal: Principal{KindUser, "admin"}, Bootstrap: true})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		tok, err := e.dir.Authenticate(ctx, secret)
		if err != nil || !tok.Bootstrap || !tok.ExpiresAt.IsZero() || tok.Principal != (Principal{KindUser, "admin"}) {
			t.Fatalf("Authenticate(bootstrap) = %+v, %v", tok, err)
		}
		e.clock.Advance(10 * 365 * 24 * time.Hour)
		if _, err := e.dir.Authenticate(ctx, secret); err != nil {
			t.Errorf("bootstrap token expired: %v", err)
		}
		if ps, err := e.dir.Parents(ctx, "user", "admin"); err != nil || len(ps) != 1 || ps[0] != "admins" {
			t.Errorf("Parents(admin) = %v, %v", ps, err)
		}
		if _, err := e.dir.Renew(ctx, admin, tok.ID); !errkind.Is(err, errkind.Invalid) {
			t.Errorf("Renew(bootstrap) = %v, want Invalid", err)
		}
		if !strings.Contains(jsonString(t, tok), `"bootstrap":true`) {
			t.Errorf("JSON of bootstrap token: %s", jsonString(t, tok))
		}

		// A rolled-back transaction leaves nothing behind.
		err = db.InTx(ctx, func(tx *sql.Tx) error {
			if _, err := e.dir.CreateUserTx(ctx, tx, admin, UserSpec{Name: "ghost"}); err != nil {
				return err
			}
			return errkind.New(errkind.Other, "abort")
		})
		if err == nil {
			t.Fatal("aborted tx committed")
		}
		if _, err := e.dir.User(ctx, "ghost"); !errkind.Is(err, errkind.NotFound) {
			t.Errorf("User(ghost) after rollback = %v", err)
		}
	})
}
