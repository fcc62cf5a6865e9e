package identity

import (
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// issue issues a token in a transaction of its own.
func (e *env) issue(t testing.TB, spec TokenSpec) (string, Token) {
	t.Helper()
	var secret string
	var tok Token
	err := e.db.InTx(e.ctx, func(tx *sql.Tx) error {
		var err error
		secret, tok, err = e.dir.IssueTx(e.ctx, tx, spec)
		return err
	})
	if err != nil {
		t.Fatalf("IssueTx: %v", err)
	}
	return secret, tok
}

func TestTokens(t *testing.T) {
	forBackends(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, nil)
		ctx := e.ctx
		e.mustUser(t, "alice", nil)
		alice := Principal{KindUser, "alice"}
		secret, tok := e.issue(t, TokenSpec{Principal: alice, TTL: time.Hour, MaxTTL: 3 * time.Hour, MFAAt: e.clock.Now()})
		got, err := e.dir.Authenticate(ctx, secret)
		if err != nil {
			t.Fatalf("Authenticate(issued) = %v", err)
		}
		if got != tok || !got.MFA || got.ExpiresAt != e.clock.Now().Add(time.Hour) || got.MaxExpiresAt != e.clock.Now().Add(3*time.Hour) {
			t.Errorf("Authenticate = %+v, want %+v", got, tok)
		}

		// Every kind of bad token gets the same error.
		flip := []byte(secret)
		flip[len(flip)-1] ^= 'A' ^ 'B'
		if flip[len(flip)-1] == secret[len(secret)-1] {
			t.Fatal("flip did not change the token")
		}
		bad := []string{
			"", "garbage", string(flip),
			strings.Replace(secret, tok.ID, "000000000000000000", 1),
			secret + "x",
			"wt2" + secret[3:],
			strings.ToUpper(secret[:22]) + secret[22:],
		}
		for _, b := range bad {
			if _, err := e.dir.Authenticate(ctx, b); err != ErrBadToken {
				t.Errorf("Authenticate(%.12q…) = %v, want ErrBadToken", b, err)
			}
		}

		// IssueTx refuses bad specs.
		for _, spec := range []TokenSpec{
			{Principal: alice}, // no TTL, not bootstrap
			{Principal: Principal{"root", "alice"}, TTL: time.Hour},
			{Principal: Principal{KindUser, "Bad Name"}, TTL: time.Hour},
			{Principal: alice, TTL: time.Hour, MaxTTL: time.Minute},
			{Principal: alice, TTL: -time.Hour},
		} {
			err := db.InTx(ctx, func(tx *sql.Tx) error { _, _, err := e.dir.IssueTx(ctx, tx, spec); return err })
			wantKind(t, "IssueTx", err, errkind.Invalid)
		}
		err = db.InTx(ctx, func(tx *sql.Tx) error {
			_, _, err := e.dir.IssueTx(ctx, tx, TokenSpec{Principal: Principal{KindMachine, "ghost"}, TTL: time.Hour})
			return err
		})
		wantKind(t, "IssueTx for unknown machine", err, errkind.NotFound)

		// Renewal: by the TTL from now, capped at the max.
		e.clock.Advance(40 * time.Minute)
		r, err := e.dir.Renew(ctx, admin, tok.ID)
		if err != nil || r.ExpiresAt != e.clock.Now().Add(time.Hour) {
			t.Errorf("Renew = %+v, %v; want expiry %v", r, err, e.clock.Now().Add(time.Hour))
		}
		e.clock.Advance(50 * time.Minute)
		if _, err := e.dir.Authenticate(ctx, secret); err != nil {
			t.Errorf("renewed token refused: %v", err)
		}
		if _, err := e.dir.Renew(ctx, admin, tok.ID); err != nil {
			t.Errorf("second Renew: %v", err)
		}
		e.clock.Advance(50 * time.Minute) // 2h20m after issue
		r, err = e.dir.Renew(ctx, admin, tok.ID)
		if err != nil || r.ExpiresAt != tok.MaxExpiresAt {
			t.Errorf("Renew near the cap = %+v, %v; want expiry %v", r, err, tok.MaxExpiresAt)
		}
		if _, err := e.dir.Renew(ctx, admin, tok.ID); !errkind.Is(err, errkind.Invalid) {
			t.Errorf("Renew at the cap = %v, want Invalid", err)
		}
		e.clock.Advance(40 * time.Minute)
		if _, err := e.dir.Authenticate(ctx, secret); err != ErrBadToken {
			t.Errorf("token past its max: %v", err)
		}
		if _, err := e.dir.Renew(ctx, admin, tok.ID); !errkind.Is(err, errkind.NotFound) {
			t.Errorf("Renew expired = %v, want NotFound", err)
		}

		// Without MaxTTL a token is not renewable; expiry is exact.
		short, st := e.issue(t, TokenSpec{Principal: alice, TTL: time.Minute})
		if _, err := e.dir.Renew(ctx, admin, st.ID); !errkind.Is(err, errkind.Invalid) {
			t.Errorf("Renew non-renewable = %v, want Invalid", err)
		}
		e.clock.Advance(time.Minute - time.Microsecond)
		if _, err := e.dir.Authenticate(ctx, short); err != nil {
			t.Errorf("token a microsecond before expiry: %v", err)
		}
		e.clock.Advance(time.Microsecond)
		if _, err := e.dir.Authenticate(ctx, short); err != ErrBadToken {
			t.Errorf("expired token: %v, want ErrBadToken", err)
		}

		// Revocation takes effect on the next request.
		s1, t1 := e.issue(t, TokenSpec{Principal: alice, TTL: time.Hour})
		s2, _ := e.issue(t, TokenSpec{Principal: alice, TTL: time.Hour})
		if err := e.dir.Revoke(ctx, admin, t1.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := e.dir.Authenticate(ctx, s1); err != ErrBadToken {
			t.Errorf("revoked token: %v, want ErrBadToken", err)
		}
		if err := e.dir.Revoke(ctx, admin, t1.ID); !errkind.Is(err, errkind.NotFound) {
			t.Errorf("second revoke: %v, want NotFound", err)
		}
		if n, err := e.dir.RevokeAll(ctx, admin, alice); err != nil || n != 1 {
			t.Errorf("RevokeAll = %d, %v; want 1 (s2; the others are revoked or expired)", n, err)
		}
		if _, err := e.dir.Authenticate(ctx, s2); err != ErrBadToken {
			t.Errorf("token after RevokeAll: %v", err)
		}
		if n := e.countEvents(t, "auth.token.revoke", "success", ""); n != 1 {
			t.Errorf("%d auth.token.revoke events, want 1", n)
		}
	})
}

func FuzzParseToken(f *testing.F) {
	f.Add("wt1.0123456789abcdef01.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("wt1..")
	f.Add("wsi1.0123456789abcdef01.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Fuzz(func(t *testing.T, s string) {
		id, secret, ok := parseToken(s)
		if ok && s != tokenPrefix+"."+id+"."+secret {
			t.Errorf("parseToken(%q) accepted with parts %q %q", s, id, secret)
		}
		if _, _, ok := parseSecret(secretIDPrefix, s); ok && !strings.HasPrefix(s, secretIDPrefix+".") {
			t.Errorf("parseSecret(wsi1, %q) accepted another prefix", s)
		}
	})
}
