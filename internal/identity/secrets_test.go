package identity

import (
	"context"
	"database/sql"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/store"
)

// TestNoSecretsInAuditOrLogs runs every operation that handles a secret,
// including failures, and then scans every audit event, the operational
// log and the stored rows' text for each secret.
func TestNoSecretsInAuditOrLogs(t *testing.T) {
	forBackends(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, func(c *Config) { c.MaxFailures = 2; c.SourceBurst = 4 })
		ctx, d := e.ctx, e.dir
		var secrets []string
		keep := func(s ...string) {
			for _, x := range s {
				secrets = append(secrets, x)
				if parts := strings.Split(x, "."); len(parts) == 3 {
					secrets = append(secrets, parts[2]) // the secret part of a token or secret id
				}
			}
		}
		pw1, pw2 := "first password 1", "second password 2"
		typo := "mypassword-in-the-username-field"
		keep(pw1, pw2, typo)

		err := db.InTx(ctx, func(tx *sql.Tx) error {
			if _, err := d.CreateUserTx(ctx, tx, admin, UserSpec{Name: "admin"}); err != nil {
				return err
			}
			s, _, err := d.IssueTx(ctx, tx, TokenSpec{Principal: Principal{KindUser, "admin"}, Bootstrap: true})
			keep(s)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		e.mustUser(t, "alice", []byte(pw1))
		if _, err := d.SetPassword(ctx, admin, "alice", []byte(pw2), ""); err != nil {
			t.Fatal(err)
		}
		e.login(typo, []byte(pw2), "")
		e.login("alice", []byte(pw1), "")
		en, err := d.EnrollTOTP(ctx, admin, "alice")
		if err != nil {
			t.Fatal(err)
		}
		keep(en.Secret, en.URI)
		c0 := codeAt(t, en.Secret, e.clock.Now(), 0)
		d.ConfirmTOTP(ctx, admin, "alice", codeAt(t, en.Secret, e.clock.Now(), 5)) // wrong
		codes, err := d.ConfirmTOTP(ctx, admin, "alice", c0)
		if err != nil {
			t.Fatal(err)
		}
		keep(codes...)
		e.clock.Advance(30 * time.Second)
		c1 := codeAt(t, en.Secret, e.clock.Now(), 0)
		tok, _, err := e.login("alice", []byte(pw2), c1)
		if err != nil {
			t.Fatal(err)
		}
		keep(tok)
		e.login("alice", []byte(pw2), c1)       // replay
		e.login("alice", []byte(pw2), codes[0]) // recovery code
		e.login("alice", []byte(pw2), codes[0]) // reused
		e.login("alice", []byte(pw1), c1)       // old password: lockout
		e.login("alice", []byte(pw1), c1)
		d.Authenticate(ctx, tok)

		if _, err := d.CreateMachine(ctx, admin, MachineSpec{Name: "ci"}); err != nil {
			t.Fatal(err)
		}
		m, _ := d.Machine(ctx, "ci")
		sid, _, err := d.IssueSecretID(ctx, admin, "ci", SecretIDSpec{Uses: 1, CIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
		if err != nil {
			t.Fatal(err)
		}
		keep(sid)
		d.LoginMachine(ctx, audit.Origin{}, m.RoleID, sid, netip.MustParseAddr("192.0.2.1"))
		mt, _, err := d.LoginMachine(ctx, audit.Origin{}, m.RoleID, sid, netip.MustParseAddr("10.0.0.1"))
		if err != nil {
			t.Fatal(err)
		}
		keep(mt)
		d.LoginMachine(ctx, audit.Origin{}, m.RoleID, sid, netip.MustParseAddr("10.0.0.1"))
		for i := range 5 {
			e.dir.Login(ctx, audit.Origin{Source: "203.0.113.1"}, LoginRequest{User: "alice", Password: []byte(pw1 + string(rune('a'+i))), Source: netip.MustParseAddr("203.0.113.1")})
		}
		d.DisableUser(ctx, admin, "alice")
		d.DeleteMachine(ctx, admin, "ci")

		evs := e.auditEvents(t)
		if len(evs) < 25 {
			t.Fatalf("only %d audit events: the scenario did not run", len(evs))
		}
		for _, want := range []string{"auth.login", "auth.lockout", "identity.totp.confirm", "identity.machine.secret_id.issue"} {
			found := false
			for _, ev := range evs {
				found = found || ev.Action == want
			}
			if !found {
				t.Errorf("no %s event", want)
			}
		}
		texts := map[string]string{"audit events": jsonString(t, evs), "logs": e.logs.String()}
		for where, text := range texts {
			for _, s := range secrets {
				if strings.Contains(text, s) {
					t.Errorf("%s contain a secret (%.6s…)", where, s)
				}
			}
		}
		// Stored rows hold no secret in a text column.
		var rows []string
		for _, q := range []string{
			`SELECT name || display_name || email || password_hash FROM identity_users`,
			`SELECT id || principal_name FROM identity_tokens`,
			`SELECT accessor || cidrs FROM identity_secret_ids`,
		} {
			r, err := db.QueryContext(context.Background(), q)
			if err != nil {
				t.Fatal(err)
			}
			for r.Next() {
				var s string
				r.Scan(&s)
				rows = append(rows, s)
			}
			r.Close()
		}
		for _, s := range secrets {
			if strings.Contains(strings.Join(rows, "\n"), s) {
				t.Errorf("stored rows contain a secret (%.6s…)", s)
			}
		}
	})
}
