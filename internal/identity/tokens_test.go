package identity

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/testenv"
)

func TestTokens(t *testing.T) {
	for _, be := range testenv.Backends() {
		t.Run(be.Name, func(t *testing.T) {
			ctx := context.Background()
			now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
			d, err := New(ctx, Config{DB: be.Open(t), Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			secret, tok, err := d.Issue(ctx, TokenSpec{Subject: "admin", Root: true})
			if err != nil {
				t.Fatal(err)
			}
			got, err := d.Authenticate(ctx, secret)
			if err != nil {
				t.Fatalf("Authenticate(issued) = %v", err)
			}
			if got.ID != tok.ID || !got.Root || got.Subject != "admin" {
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
			}
			for _, b := range bad {
				if _, err := d.Authenticate(ctx, b); err != ErrBadToken {
					t.Errorf("Authenticate(%.12q…) = %v, want ErrBadToken", b, err)
				}
			}

			// Expiry.
			short, _, err := d.Issue(ctx, TokenSpec{Subject: "s", TTL: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := d.Authenticate(ctx, short); err != nil {
				t.Fatalf("fresh short token: %v", err)
			}
			now = now.Add(time.Minute)
			if _, err := d.Authenticate(ctx, short); err != ErrBadToken {
				t.Errorf("expired token: %v, want ErrBadToken", err)
			}

			// Revocation takes effect on the next request.
			if err := d.Revoke(ctx, tok.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := d.Authenticate(ctx, secret); err != ErrBadToken {
				t.Errorf("revoked token: %v, want ErrBadToken", err)
			}
			if err := d.Revoke(ctx, tok.ID); !errkind.Is(err, errkind.NotFound) {
				t.Errorf("second revoke: %v, want NotFound", err)
			}
		})
	}
}

func FuzzParseToken(f *testing.F) {
	f.Add("wt1.0123456789abcdef01.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("wt1..")
	f.Fuzz(func(t *testing.T, s string) {
		id, secret, ok := parseToken(s)
		if ok && s != tokenPrefix+"."+id+"."+secret {
			t.Errorf("parseToken(%q) accepted with parts %q %q", s, id, secret)
		}
	})
}
