package identity

import (
	"strings"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

func TestDBToken(t *testing.T) {
	forBackends(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, nil)
		ctx := e.ctx
		e.mustUser(t, "alice", nil)
		alice := Principal{KindUser, "alice"}
		_, parent := e.issue(t, TokenSpec{Principal: alice, TTL: 8 * time.Hour, MaxTTL: 24 * time.Hour, MFAAt: e.clock.Now()})

		secret, tok, err := e.dir.IssueDBToken(ctx, admin, parent, DBTokenSpec{Target: "pg", Account: "app"})
		if err != nil {
			t.Fatalf("IssueDBToken: %v", err)
		}
		got, err := e.dir.Authenticate(ctx, secret)
		if err != nil {
			t.Fatalf("Authenticate(db token) = %v", err)
		}
		if got != tok || got.Scope != "db:pg/app" || got.Scope != DBScope("pg", "app") || got.Principal != alice || !got.MFA {
			t.Errorf("db token = %+v", got)
		}
		if want := e.clock.Now().Add(DefaultDBTokenTTL); !got.ExpiresAt.Equal(want) || !got.MaxExpiresAt.Equal(want) {
			t.Errorf("expiry %v / max %v, want %v (default TTL, not renewable)", got.ExpiresAt, got.MaxExpiresAt, want)
		}
		if _, err := e.dir.Renew(ctx, admin, tok.ID); !errkind.Is(err, errkind.Invalid) {
			t.Errorf("Renew(db token) = %v, want Invalid", err)
		}
		if n := e.countEvents(t, "auth.db_token.issue", "success", ""); n != 1 {
			t.Errorf("%d auth.db_token.issue events, want 1", n)
		}
		for _, ev := range e.auditEvents(t) {
			if strings.Contains(jsonString(t, ev), secret[len(secret)-43:]) {
				t.Errorf("audit event %s holds the token's secret", ev.Action)
			}
		}

		// Never beyond the parent's expiry.
		_, short := e.issue(t, TokenSpec{Principal: alice, TTL: 10 * time.Minute})
		_, capped, err := e.dir.IssueDBToken(ctx, admin, short, DBTokenSpec{Target: "pg", TTL: 2 * time.Hour})
		if err != nil || !capped.ExpiresAt.Equal(short.ExpiresAt) || capped.Scope != "db:pg/" {
			t.Errorf("capped db token = %+v, %v; want expiry %v", capped, err, short.ExpiresAt)
		}

		// Refused specs and parents.
		for name, spec := range map[string]DBTokenSpec{
			"no target":       {},
			"slash in target": {Target: "a/b"},
			"slash in acct":   {Target: "pg", Account: "x/y"},
			"control char":    {Target: "pg", Account: "x\n"},
			"TTL too long":    {Target: "pg", TTL: MaxDBTokenTTL + time.Second},
			"negative TTL":    {Target: "pg", TTL: -time.Second},
		} {
			if _, _, err := e.dir.IssueDBToken(ctx, admin, parent, spec); !errkind.Is(err, errkind.Invalid) {
				t.Errorf("%s: err = %v, want Invalid", name, err)
			}
		}
		if _, _, err := e.dir.IssueDBToken(ctx, admin, got, DBTokenSpec{Target: "pg"}); !errkind.Is(err, errkind.Invalid) {
			t.Errorf("a db token issuing a db token: %v, want Invalid", err)
		}

		// Revoking the parent revokes what it issued, and a revoked parent
		// issues nothing.
		if err := e.dir.Revoke(ctx, admin, parent.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := e.dir.Authenticate(ctx, secret); err != ErrBadToken {
			t.Errorf("db token after its parent was revoked: %v, want ErrBadToken", err)
		}
		if _, _, err := e.dir.IssueDBToken(ctx, admin, parent, DBTokenSpec{Target: "pg"}); err != ErrBadToken {
			t.Errorf("IssueDBToken from a revoked parent: %v, want ErrBadToken", err)
		}
		if _, err := e.dir.Authenticate(ctx, "wt1."+capped.ID+"."+strings.Repeat("A", 43)); err != ErrBadToken {
			t.Errorf("wrong secret for a db token: %v", err)
		}
	})
}

func TestLiveToken(t *testing.T) {
	forBackends(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, nil)
		ctx := e.ctx
		e.mustUser(t, "alice", nil)
		e.mustUser(t, "bob", nil)
		alice := Principal{KindUser, "alice"}
		_, tok := e.issue(t, TokenSpec{Principal: alice, TTL: time.Hour})
		got, err := e.dir.LiveToken(ctx, tok.ID)
		if err != nil || got != tok {
			t.Fatalf("LiveToken = %+v, %v; want %+v", got, err, tok)
		}
		if _, err := e.dir.LiveToken(ctx, "000000000000000000"); err != ErrBadToken {
			t.Errorf("unknown id: %v, want ErrBadToken", err)
		}
		e.clock.Advance(time.Hour)
		if _, err := e.dir.LiveToken(ctx, tok.ID); err != ErrBadToken {
			t.Errorf("expired: %v, want ErrBadToken", err)
		}
		_, t2 := e.issue(t, TokenSpec{Principal: alice, TTL: time.Hour})
		if err := e.dir.Revoke(ctx, admin, t2.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := e.dir.LiveToken(ctx, t2.ID); err != ErrBadToken {
			t.Errorf("revoked: %v, want ErrBadToken", err)
		}
		_, t3 := e.issue(t, TokenSpec{Principal: Principal{KindUser, "bob"}, TTL: time.Hour})
		if _, err := e.dir.LiveToken(ctx, t3.ID); err != nil {
			t.Fatalf("bob's token: %v", err)
		}
		if err := e.dir.DisableUser(ctx, admin, "bob"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.dir.LiveToken(ctx, t3.ID); err != ErrBadToken {
			t.Errorf("token of a disabled user: %v, want ErrBadToken", err)
		}
	})
}
