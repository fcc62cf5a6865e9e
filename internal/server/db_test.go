package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"database/sql"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/dbca"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/testenv"
)

// TestDBCertAuth follows a client certificate from issue to the gateway's
// check, on each store: good while its token is live and its user
// active, refused after a logout or when the user is disabled.
func TestDBCertAuth(t *testing.T) {
	for _, be := range testenv.Backends() {
		t.Run(be.Name, func(t *testing.T) {
			ctx := context.Background()
			db := be.Open(t)
			b, err := barrier.New(ctx, barrier.Config{DB: db})
			if err != nil {
				t.Fatal(err)
			}
			res, err := b.Init(ctx, barrier.InitOptions{Shares: 1, Threshold: 1})
			if err != nil {
				t.Fatal(err)
			}
			if err := b.UnsealWithKeyFile(ctx, res.UnsealKey); err != nil {
				t.Fatal(err)
			}
			lg, err := audit.New(ctx, audit.Config{DB: db})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { lg.Close() })
			dir, err := identity.New(ctx, identity.Config{DB: db, Audit: lg, Barrier: b})
			if err != nil {
				t.Fatal(err)
			}
			o := audit.Origin{Actor: "test"}
			for _, name := range []string{"alice", "bob"} {
				if _, err := dir.CreateUser(ctx, o, identity.UserSpec{Name: name}); err != nil {
					t.Fatal(err)
				}
			}
			issue := func(p identity.Principal) identity.Token {
				var tok identity.Token
				err := db.InTx(ctx, func(tx *sql.Tx) error {
					var err error
					_, tok, err = dir.IssueTx(ctx, tx, identity.TokenSpec{Principal: p, TTL: time.Hour})
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
				return tok
			}
			ca, err := dbca.New(ctx, b)
			if err != nil {
				t.Fatal(err)
			}
			key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			cert := func(user string, tok identity.Token) []*x509.Certificate {
				c, err := ca.Issue(dbca.ClientCert{PublicKey: &key.PublicKey, User: user, TokenID: tok.ID, Now: time.Now(), NotAfter: tok.ExpiresAt})
				if err != nil {
					t.Fatal(err)
				}
				return []*x509.Certificate{c, ca.Certificate()}
			}
			auth := dbCertAuth{identity: dir}
			alice := identity.Principal{Kind: identity.KindUser, Name: "alice"}
			bob := identity.Principal{Kind: identity.KindUser, Name: "bob"}

			ta := issue(alice)
			got, err := auth.AuthenticateCert(ctx, cert("alice", ta))
			if err != nil || got.ID != ta.ID || got.Principal != alice {
				t.Fatalf("AuthenticateCert = %+v, %v; want alice's token", got, err)
			}
			// A certificate naming someone else than its token's holder.
			if _, err := auth.AuthenticateCert(ctx, cert("bob", ta)); err == nil {
				t.Error("a certificate for bob bound to alice's token was accepted")
			}
			// A database token cannot stand behind a certificate.
			_, scoped, err := dir.IssueDBToken(ctx, o, ta, identity.DBTokenSpec{Target: "pg"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := auth.AuthenticateCert(ctx, cert("alice", scoped)); err == nil {
				t.Error("a certificate bound to a scoped token was accepted")
			}
			// Logging out ends the certificate.
			if err := dir.Revoke(ctx, o, ta.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := auth.AuthenticateCert(ctx, cert("alice", ta)); err != identity.ErrBadToken {
				t.Errorf("after logout: %v, want ErrBadToken", err)
			}
			// So does disabling the user.
			tb := issue(bob)
			if _, err := auth.AuthenticateCert(ctx, cert("bob", tb)); err != nil {
				t.Fatalf("bob: %v", err)
			}
			if err := dir.DisableUser(ctx, o, "bob"); err != nil {
				t.Fatal(err)
			}
			if _, err := auth.AuthenticateCert(ctx, cert("bob", tb)); err != identity.ErrBadToken {
				t.Errorf("disabled user: %v, want ErrBadToken", err)
			}
		})
	}
}
